import NIOCore
import NIOHTTP1
import Testing

@testable import SpotifyProxy

/// The connection's decisions, without sockets: each test feeds events and reads the actions.
@Suite("Connection state machine")
struct ProxyConnectionStateMachineTests {
    typealias Machine = ProxyConnectionStateMachine
    typealias Action = Machine.Action

    /// One input to the machine.
    enum Step: Sendable, CustomStringConvertible {
        case head(HTTPRequestHead, RequestStages.Decision)
        case body(Int)
        case end
        case token(String, for: Int)
        case tokenFails(for: Int)
        case upstreamHead(status: Int, contentLength: Bool = true, verdict: UnauthorizedVerdict? = nil, holdWhole: Bool = false)
        case upstreamBody
        case upstreamDone
        case upstreamFails
        case endWritten(Int)
        case read
        case queueFull
        case wantsBody
        case idle
        case inactive
        case connectionFails
        case malformed

        var description: String { String(describing: self) }
    }

    static let configuration = Machine.Configuration(maxBodyBytes: 1000, replayBodyLimit: 100, pendingHighWater: 50)
    static let notFound = LocalAnswer(SpotifyError(status: 404, message: "no such path"))
    static let noToken = LocalAnswer(SpotifyError(status: 503, message: "no token", headers: [("Retry-After", "1")]))
    static let badGateway = LocalAnswer(SpotifyError(status: 502, message: "upstream failed"))
    static let malformed = LocalAnswer(SpotifyError(status: 400, message: "malformed request"))
    static let tooLarge = LocalAnswer(
        SpotifyError(status: 413, message: "request body too large: the limit is 1000 bytes (server.max_body_bytes)"))

    static func head(
        _ method: HTTPMethod = .GET, version: HTTPVersion = .http1_1, _ headers: [(String, String)] = []
    ) -> HTTPRequestHead {
        HTTPRequestHead(version: version, method: method, uri: "/v1/artists/x", headers: HTTPHeaders(headers))
    }

    static func forward(_ body: UpstreamRequest.Body = .none, expectContinue: Bool = false, headViaGET: Bool = false) -> RequestStages.Decision {
        .forward(ForwardPlan(method: headViaGET ? "GET" : "X", target: "/v1/artists/x", body: body, expectContinue: expectContinue, headViaGET: headViaGET))
    }

    static func bytes(_ count: Int) -> ByteBuffer { ByteBuffer(repeating: UInt8(ascii: "b"), count: count) }

    /// Feeds `steps`; returns the action of each.
    @discardableResult
    static func run(_ steps: [Step], on machine: inout Machine) -> [Action] {
        steps.map { step in
            switch step {
            case .head(let head, let decision): machine.requestHead(head, decision: decision)
            case .body(let count): machine.requestBodyPart(Self.bytes(count))
            case .end: machine.requestEnd()
            case .token(let token, let id): machine.tokenArrived(token, for: id)
            case .tokenFails(let id): machine.answerWithoutForwarding(Self.noToken, for: id)
            case .upstreamHead(let status, let contentLength, let verdict, let holdWhole):
                machine.upstreamHead(status: status, hasContentLength: contentLength, verdict: verdict, holdWhole: holdWhole)
            case .upstreamBody: machine.upstreamBodyPart()
            case .upstreamDone: machine.upstreamFinished(failure: nil)
            case .upstreamFails: machine.upstreamFinished(failure: Self.badGateway)
            case .endWritten(let id): machine.endWritten(id)
            case .read: machine.read()
            case .queueFull: { machine.upstreamBodyQueueFull(); return .none }()
            case .wantsBody: machine.upstreamWantsBody()
            case .idle: machine.idleTimeout()
            case .inactive: machine.channelInactive()
            case .connectionFails: machine.connectionFailed()
            case .malformed: machine.malformedRequest(Self.malformed)
            }
        }
    }

    static func keepAlive(_ version: HTTPVersion = .http1_1) -> Machine.LocalFraming {
        Machine.LocalFraming(version: version, keepAlive: true, headOnly: false)
    }

    static func closing(_ version: HTTPVersion = .http1_1) -> Machine.LocalFraming {
        Machine.LocalFraming(version: version, keepAlive: false, headOnly: false)
    }

    // MARK: - The ordinary exchange

    @Test("a forwarded GET: token, transfer, head, body, end, and the connection stays open")
    func forwardedGET() {
        var machine = Machine(configuration: Self.configuration)
        #expect(machine.state == .idle)
        let actions = Self.run(
            [
                .head(Self.head(), Self.forward()), .end, .token("T", for: 1), .upstreamHead(status: 200), .upstreamBody,
                .upstreamDone, .endWritten(1),
            ], on: &machine)
        #expect(
            actions == [
                .requestToken(1, sendContinue: false), .none, .startUpstream(token: "T", body: nil, endBody: true, read: false),
                .writeHead(keepAlive: true), .writeBody, .writeEnd(1, releaseHeldHead: false, read: false), .finish(read: false, close: false),
            ])
        #expect(machine.state == .idle)
        // The next request on the same connection is a new exchange.
        #expect(Self.run([.head(Self.head(), Self.forward())], on: &machine) == [.requestToken(2, sendContinue: false)])
    }

    @Test("a body that arrives before the token waits, then goes with the transfer's start")
    func bodyBeforeToken() {
        var machine = Machine(configuration: Self.configuration)
        let actions = Self.run(
            [.head(Self.head(.POST), Self.forward(.known(10))), .body(10), .end, .token("T", for: 1)], on: &machine)
        #expect(actions.last == .startUpstream(token: "T", body: Self.bytes(10), endBody: true, read: false))
    }

    @Test("body parts after the transfer started go to it, and its end too")
    func bodyAfterToken() {
        var machine = Machine(configuration: Self.configuration)
        let actions = Self.run(
            [.head(Self.head(.POST), Self.forward(.streamed)), .token("T", for: 1), .body(5), .end], on: &machine)
        #expect(
            actions == [
                .requestToken(1, sendContinue: false), .startUpstream(token: "T", body: nil, endBody: false, read: false),
                .forwardBody(Self.bytes(5)), .endUpstreamBody,
            ])
    }

    @Test("Expect: 100-continue is answered when the token is asked for")
    func expectContinue() {
        var machine = Machine(configuration: Self.configuration)
        #expect(
            Self.run([.head(Self.head(.PUT), Self.forward(.known(3), expectContinue: true))], on: &machine) == [
                .requestToken(1, sendContinue: true)
            ])
    }

    @Test("an early answer to a request that waits to be told to go on closes: the body it declared may never come", arguments: [
        ([("Content-Length", "5"), ("Expect", "100-continue")], HTTPVersion.http1_1, false),
        ([("Transfer-Encoding", "chunked"), ("Expect", "100-Continue")], .http1_1, false),
        // Nothing held back: no body declared, or an HTTP/1.0 client (its Expect is ignored), or no Expect.
        ([("Content-Length", "0"), ("Expect", "100-continue")], .http1_1, true),
        ([("Content-Length", "5"), ("Expect", "100-continue")], .http1_0, true),
        ([("Content-Length", "5")], .http1_1, true),
    ])
    func earlyAnswerToExpect(headers: [(String, String)], version: HTTPVersion, keepsAlive: Bool) {
        var machine = Machine(configuration: Self.configuration)
        var head = Self.head(.POST, version: version, headers)
        if version == .http1_0 { head.headers.add(name: "Connection", value: "keep-alive") }
        let framing = Machine.LocalFraming(version: version, keepAlive: keepsAlive, headOnly: false)
        #expect(Self.run([.head(head, .answer(Self.notFound))], on: &machine) == [.writeLocalAnswer(1, Self.notFound, framing, cancelTransfer: false)])
    }

    @Test("an HTTP/1.0 request with Transfer-Encoding is faulty framing: the connection closes after it, forwarded or answered (RFC 9112 §6.1)")
    func http10TransferEncoding() {
        let head = Self.head(.POST, version: .http1_0, [("Connection", "keep-alive"), ("Transfer-Encoding", "chunked")])
        var answered = Machine(configuration: Self.configuration)
        #expect(
            Self.run([.head(head, .answer(Self.notFound))], on: &answered) == [
                .writeLocalAnswer(1, Self.notFound, Machine.LocalFraming(version: .http1_0, keepAlive: false, headOnly: false), cancelTransfer: false)
            ])
        var forwarded = Machine(configuration: Self.configuration)
        let actions = Self.run(
            [.head(head, Self.forward(.streamed)), .token("T", for: 1), .end, .upstreamHead(status: 200)], on: &forwarded)
        #expect(actions.last == .writeHead(keepAlive: false))
    }

    @Test("a HEAD sent as GET holds its head, counts the body, and releases the head at the end")
    func headViaGET() {
        var machine = Machine(configuration: Self.configuration)
        let actions = Self.run(
            [
                .head(Self.head(.HEAD), Self.forward(headViaGET: true)), .end, .token("T", for: 1), .upstreamHead(status: 200),
                .upstreamBody, .upstreamDone, .endWritten(1),
            ], on: &machine)
        #expect(
            Array(actions.dropFirst(3)) == [
                .holdHead(keepAlive: true), .countBody, .writeEnd(1, releaseHeldHead: true, read: false), .finish(read: false, close: false),
            ])
    }

    @Test("an answer to transform is held like a HEAD sent as GET; one it does not transform streams", arguments: [true, false])
    func holdWhole(_ held: Bool) {
        var machine = Machine(configuration: Self.configuration)
        let actions = Self.run(
            [.head(Self.head(), Self.forward()), .end, .token("T", for: 1), .upstreamHead(status: 200, holdWhole: held), .upstreamBody, .upstreamDone, .endWritten(1)],
            on: &machine)
        #expect(
            Array(actions.dropFirst(3)) == [
                held ? .holdHead(keepAlive: true) : .writeHead(keepAlive: true), held ? .countBody : .writeBody,
                .writeEnd(1, releaseHeldHead: held, read: false), .finish(read: false, close: false),
            ])
    }

    @Test("an answer made by the proxy keeps the connection; a HEAD gets its headers only")
    func localAnswers() {
        var machine = Machine(configuration: Self.configuration)
        #expect(Self.run([.head(Self.head(), .answer(Self.notFound))], on: &machine) == [.writeLocalAnswer(1, Self.notFound, Self.keepAlive(), cancelTransfer: false)])
        #expect(Self.run([.end, .endWritten(1)], on: &machine) == [.none, .finish(read: false, close: false)])
        #expect(
            Self.run([.head(Self.head(.HEAD), .answer(Self.notFound))], on: &machine) == [
                .writeLocalAnswer(2, Self.notFound, Machine.LocalFraming(version: .http1_1, keepAlive: true, headOnly: true), cancelTransfer: false)
            ])
    }

    @Test("an upstream failure before the answer started becomes the proxy's answer; the connection stays")
    func upstreamFailureBeforeHead() {
        var machine = Machine(configuration: Self.configuration)
        let actions = Self.run([.head(Self.head(), Self.forward()), .end, .token("T", for: 1), .upstreamFails, .endWritten(1)], on: &machine)
        #expect(Array(actions.suffix(2)) == [.writeLocalAnswer(1, Self.badGateway, Self.keepAlive(), cancelTransfer: false), .finish(read: false, close: false)])
    }

    // MARK: - 401 replays

    @Test(
        "a 401 is replayed once when the token source says so and the body is at hand",
        arguments: [UnauthorizedVerdict.refreshAndReplay, .replay])
    func replayOnce(verdict: UnauthorizedVerdict) {
        var machine = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(), Self.forward()), .end, .token("T", for: 1)], on: &machine)
        #expect(machine.tokenToReportOn401 == "T")
        #expect(Self.run([.upstreamHead(status: 401, verdict: verdict)], on: &machine) == [.replay(1, verdict)])
        #expect(Self.run([.token("U", for: 1)], on: &machine) == [.startUpstream(token: "U", body: nil, endBody: true, read: false)])
        // The replay's own 401 goes to the client.
        #expect(machine.tokenToReportOn401 == nil)
        #expect(Self.run([.upstreamHead(status: 401)], on: &machine) == [.writeHead(keepAlive: true)])
    }

    @Test("a replayed request sends its kept body again")
    func replayWithBody() {
        var machine = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(.PUT), Self.forward(.known(40))), .token("T", for: 1), .body(40), .end], on: &machine)
        #expect(Self.run([.upstreamHead(status: 401, verdict: .refreshAndReplay), .token("U", for: 1)], on: &machine) == [
            .replay(1, .refreshAndReplay), .startUpstream(token: "U", body: Self.bytes(40), endBody: true, read: false),
        ])
    }

    @Test("a 401 goes to the client when the token source says pass it, or the body is too large to keep")
    func noReplay() {
        var passed = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(), Self.forward()), .end, .token("T", for: 1)], on: &passed)
        #expect(Self.run([.upstreamHead(status: 401, verdict: .passThrough)], on: &passed) == [.writeHead(keepAlive: true)])

        var large = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(.PUT), Self.forward(.known(200))), .token("T", for: 1), .body(200), .end], on: &large)
        #expect(Self.run([.upstreamHead(status: 401, verdict: .refreshAndReplay)], on: &large) == [.writeHead(keepAlive: true)])
    }

    // MARK: - A held answer replaced by sending the request again

    @Test("a held answer may be replaced, once, by sending the request again with its kept body (changed); a 401 on that is replayed with it")
    func resendHeld() {
        var machine = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(.DELETE), Self.forward(.known(40))), .token("T", for: 1), .body(40), .end], on: &machine)
        #expect(machine.bodyToResend == nil, "nothing is held yet")
        Self.run([.upstreamHead(status: 403, holdWhole: true), .upstreamBody], on: &machine)
        #expect(machine.bodyToResend == Self.bytes(40))
        let changed = ByteBuffer(repeating: UInt8(ascii: "c"), count: 40)
        #expect(machine.resendHeld(body: changed) == .requestToken(1, sendContinue: false))
        #expect(machine.bodyToResend == nil, "once")
        #expect(Self.run([.token("U", for: 1)], on: &machine) == [.startUpstream(token: "U", body: changed, endBody: true, read: false)])
        #expect(Self.run([.upstreamHead(status: 401, verdict: .refreshAndReplay), .token("V", for: 1)], on: &machine) == [
            .replay(1, .refreshAndReplay), .startUpstream(token: "V", body: changed, endBody: true, read: false),
        ])
        #expect(machine.resendHeld(body: changed) == .none)
        #expect(Self.run([.upstreamHead(status: 200), .upstreamDone, .endWritten(1)], on: &machine) == [
            .writeHead(keepAlive: true), .writeEnd(1, releaseHeldHead: false, read: false), .finish(read: false, close: false),
        ])
    }

    @Test("a held answer is not replaced when the body was too large to keep, or has not all come; a GET's is, with none")
    func noResend() {
        var large = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(.DELETE), Self.forward(.known(200))), .token("T", for: 1), .body(200), .end], on: &large)
        Self.run([.upstreamHead(status: 403, holdWhole: true)], on: &large)
        #expect(large.bodyToResend == nil)

        var partial = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(.DELETE), Self.forward(.known(40))), .token("T", for: 1), .body(20)], on: &partial)
        Self.run([.upstreamHead(status: 403, holdWhole: true)], on: &partial)
        #expect(partial.bodyToResend == nil)

        var read = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(), Self.forward()), .end, .token("T", for: 1), .upstreamHead(status: 403, holdWhole: true)], on: &read)
        #expect(read.bodyToResend == ByteBuffer())
        #expect(read.resendHeld(body: ByteBuffer()) == .requestToken(1, sendContinue: false))
        #expect(Self.run([.token("U", for: 1)], on: &read) == [.startUpstream(token: "U", body: nil, endBody: true, read: false)])

        var streaming = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(), Self.forward()), .end, .token("T", for: 1), .upstreamHead(status: 403)], on: &streaming)
        #expect(streaming.bodyToResend == nil, "its head is out")
    }

    // MARK: - Back-pressure

    @Test("a body waiting for the token stops the reads above the mark; the transfer's start resumes them")
    func pendingBodyHoldsReads() {
        var machine = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(.POST), Self.forward(.streamed)), .body(60)], on: &machine)
        #expect(machine.demand == .paused(readPending: false))
        #expect(Self.run([.read], on: &machine) == [.none])
        #expect(Self.run([.token("T", for: 1)], on: &machine) == [.startUpstream(token: "T", body: Self.bytes(60), endBody: false, read: true)])
        #expect(machine.demand == .producing)
        #expect(Self.run([.read], on: &machine) == [.read])
    }

    @Test("a full upstream queue holds reads until the transfer wants more")
    func upstreamQueueHoldsReads() {
        var machine = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(.POST), Self.forward(.streamed)), .token("T", for: 1), .body(10), .queueFull], on: &machine)
        #expect(Self.run([.read, .wantsBody, .read], on: &machine) == [.none, .read, .read])
        // Without a held read there is nothing to issue.
        Self.run([.queueFull], on: &machine)
        #expect(Self.run([.wantsBody], on: &machine) == [.none])
    }

    @Test("an upstream that answers before taking the whole body gets the client read again, to its end")
    func earlyAnswerResumesReads() {
        var machine = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(.POST), Self.forward(.streamed)), .token("T", for: 1), .body(10), .queueFull, .read], on: &machine)
        let actions = Self.run([.upstreamHead(status: 413), .upstreamDone, .endWritten(1), .body(10), .end], on: &machine)
        #expect(
            actions == [
                .writeHead(keepAlive: true), .writeEnd(1, releaseHeldHead: false, read: true), .none, .none,
                .finish(read: false, close: false),
            ])
    }

    // MARK: - Late and stray events

    @Test("events for an earlier exchange, or with none, change nothing")
    func strayEvents() {
        var machine = Machine(configuration: Self.configuration)
        #expect(Self.run([.token("T", for: 7), .tokenFails(for: 7), .upstreamHead(status: 200), .upstreamDone, .endWritten(7), .end], on: &machine).allSatisfy { $0 == .none })
        #expect(Self.run([.upstreamBody], on: &machine) == [.discardBody])
        #expect(machine.state == .idle)
        // A token that comes after the exchange was answered (here: refused) is ignored.
        Self.run([.head(Self.head(), Self.forward()), .end, .tokenFails(for: 1)], on: &machine)
        #expect(Self.run([.token("late", for: 1)], on: &machine) == [.none])
    }

    @Test("the idle timeout closes only an idle connection")
    func idleTimeoutDuringExchange() {
        var machine = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(), Self.forward())], on: &machine)
        #expect(Self.run([.idle], on: &machine) == [.none])
    }

    @Test("the idle timeout answers 408 when a body the proxy was reading stops coming; not when the proxy holds the client back, nor once the body is whole")
    func idleTimeoutBodyStalled() {
        let closing = Machine.LocalFraming(version: .http1_1, keepAlive: false, headOnly: false)
        let stopped = Machine.bodyStopped(for: "server.idle_timeout")
        // Waiting for its token, half the body sent.
        var waiting = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(.POST), Self.forward(.known(20))), .body(5)], on: &waiting)
        #expect(Self.run([.idle], on: &waiting) == [.writeLocalAnswer(1, stopped, closing, cancelTransfer: false)])
        // The transfer runs, waiting for the rest: it is cancelled.
        var running = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(.POST), Self.forward(.known(20))), .token("T", for: 1), .body(5)], on: &running)
        #expect(Self.run([.idle], on: &running) == [.writeLocalAnswer(1, stopped, closing, cancelTransfer: true)])
        // The proxy stopped reading (the upstream has enough queued): the stall is not the client's.
        var held = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(.POST), Self.forward(.known(20))), .token("T", for: 1), .body(5), .queueFull], on: &held)
        #expect(Self.run([.idle], on: &held) == [.none])
        // The body is whole and the answer awaited: the client owes nothing.
        var whole = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(.POST), Self.forward(.known(5))), .token("T", for: 1), .body(5), .end], on: &whole)
        #expect(Self.run([.idle], on: &whole) == [.none])
    }

    @Test("a pipelined request that comes while the previous answer's end is being written starts the next exchange")
    func pipelined() {
        var machine = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(), Self.forward()), .end, .token("T", for: 1), .upstreamHead(status: 200), .upstreamDone], on: &machine)
        #expect(Self.run([.head(Self.head(), Self.forward()), .endWritten(1)], on: &machine) == [.requestToken(2, sendContinue: false), .none])
        #expect(machine.currentExchange == 2)
    }

    @Test("a body that keeps coming after an early answer is dropped")
    func bodyAfterAnswer() {
        var machine = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(.POST), Self.forward(.streamed)), .tokenFails(for: 1)], on: &machine)
        #expect(Self.run([.body(10)], on: &machine) == [.none])
    }

    // MARK: - Every transition that closes

    struct Closing: Sendable, CustomTestStringConvertible {
        var testDescription: String
        var steps: [Step]
        var action: Action
    }

    static let closings: [Closing] = [
        Closing(
            testDescription: "the client said Connection: close",
            steps: [.head(head(.GET, [("Connection", "close")]), forward()), .end, .token("T", for: 1), .upstreamHead(status: 200), .upstreamDone, .endWritten(1)],
            action: .finish(read: false, close: true)),
        Closing(
            testDescription: "an HTTP/1.0 request without keep-alive",
            steps: [.head(head(.GET, version: .http1_0), forward()), .end, .token("T", for: 1), .upstreamHead(status: 200), .upstreamDone, .endWritten(1)],
            action: .finish(read: false, close: true)),
        Closing(
            testDescription: "HTTP/1.0 keep-alive, but the upstream answer has no length",
            steps: [
                .head(head(.GET, version: .http1_0, [("Connection", "keep-alive")]), forward()), .end, .token("T", for: 1),
                .upstreamHead(status: 200, contentLength: false), .upstreamDone, .endWritten(1),
            ],
            action: .finish(read: false, close: true)),
        Closing(
            testDescription: "a refused CONNECT",
            steps: [.head(head(.CONNECT), .answer(notFound)), .endWritten(1)],
            action: .finish(read: false, close: true)),
        Closing(
            testDescription: "no token while the request body still comes",
            steps: [.head(head(.POST), forward(.streamed)), .body(5), .tokenFails(for: 1), .endWritten(1)],
            action: .finish(read: false, close: true)),
        Closing(
            testDescription: "a body over the limit while waiting for the token: 413",
            steps: [.head(head(.POST), forward(.streamed)), .body(1001)],
            action: .writeLocalAnswer(1, tooLarge, closing(), cancelTransfer: false)),
        Closing(
            testDescription: "a body over the limit while the transfer runs: 413, transfer cancelled",
            steps: [.head(head(.POST), forward(.streamed)), .token("T", for: 1), .body(600), .body(600)],
            action: .writeLocalAnswer(1, tooLarge, closing(), cancelTransfer: true)),
        Closing(
            testDescription: "a body over the limit after the answer started: closed",
            steps: [.head(head(.POST), forward(.streamed)), .token("T", for: 1), .upstreamHead(status: 200), .body(1001)],
            action: .close(cancelTransfer: true)),
        Closing(
            testDescription: "the upstream failed mid-answer",
            steps: [.head(head(), forward()), .end, .token("T", for: 1), .upstreamHead(status: 200), .upstreamBody, .upstreamFails],
            action: .close(cancelTransfer: false)),
        Closing(
            testDescription: "the upstream failed before its head, the request body unfinished",
            steps: [.head(head(.POST), forward(.streamed)), .token("T", for: 1), .upstreamFails],
            action: .writeLocalAnswer(1, badGateway, closing(), cancelTransfer: false)),
        Closing(
            testDescription: "a malformed request on an idle connection",
            steps: [.malformed, .endWritten(1)],
            action: .finish(read: false, close: true)),
        Closing(
            testDescription: "a head answered locally, then the parser refuses the rest of it: that answer stands, then close",
            steps: [.head(head(.POST), .answer(notFound)), .malformed, .endWritten(1)],
            action: .finish(read: false, close: true)),
        Closing(
            testDescription: "a head answered and written, then the parser refuses the rest of it: closed, no second answer",
            steps: [.head(head(.POST), .answer(notFound)), .endWritten(1), .malformed],
            action: .close(cancelTransfer: false)),
        Closing(
            testDescription: "a malformed request pipelined behind one waiting for its answer",
            steps: [.head(head(), forward()), .end, .token("T", for: 1), .malformed],
            action: .writeLocalAnswer(2, malformed, closing(), cancelTransfer: true)),
        Closing(
            testDescription: "a malformed request while an answer streams",
            steps: [.head(head(), forward()), .end, .token("T", for: 1), .upstreamHead(status: 200), .malformed],
            action: .close(cancelTransfer: true)),
        Closing(
            testDescription: "a declared body over the limit: answered (413 by the framing stage), not read and dropped",
            steps: [.head(head(.POST, [("Content-Length", "5000")]), .answer(tooLarge))],
            action: .writeLocalAnswer(1, tooLarge, closing(), cancelTransfer: false)),
        Closing(
            testDescription: "the idle timeout after the answer, the request body stalled",
            steps: [
                .head(head(.POST), forward(.streamed)), .token("T", for: 1), .body(5), .upstreamHead(status: 200), .upstreamDone,
                .endWritten(1), .idle,
            ],
            action: .close(cancelTransfer: false)),
        Closing(
            testDescription: "the idle timeout between requests",
            steps: [.idle],
            action: .close(cancelTransfer: false)),
        Closing(
            testDescription: "the socket failed during a transfer",
            steps: [.head(head(), forward()), .end, .token("T", for: 1), .connectionFails],
            action: .close(cancelTransfer: true)),
        Closing(
            testDescription: "the client went away during a transfer",
            steps: [.head(head(), forward()), .end, .token("T", for: 1), .inactive],
            action: .cancelTransfer),
        Closing(
            testDescription: "a request head in the middle of an exchange",
            steps: [.head(head(), forward()), .end, .token("T", for: 1), .head(head(), forward())],
            action: .close(cancelTransfer: true)),
    ]

    @Test("every transition that closes the connection", arguments: closings)
    func closes(_ row: Closing) {
        var machine = Machine(configuration: Self.configuration)
        let actions = Self.run(row.steps, on: &machine)
        #expect(actions.last == row.action)
        if case .writeLocalAnswer = row.action {
            // Closed once the answer is written.
            #expect(machine.state != .closing)
        } else {
            #expect(machine.state == .closing)
        }
        // Once closing, nothing starts again.
        if machine.state == .closing {
            #expect(Self.run([.head(Self.head(), Self.forward()), .read], on: &machine) == [.none, .read])
        }
    }

    @Test("once closing, a pipelined request behind a closing answer is not started")
    func noRequestAfterClose() {
        var machine = Machine(configuration: Self.configuration)
        Self.run([.head(Self.head(.GET, [("Connection", "close")]), .answer(Self.notFound)), .end], on: &machine)
        #expect(Self.run([.head(Self.head(), Self.forward()), .endWritten(1)], on: &machine) == [.none, .finish(read: false, close: true)])
    }
}

@Suite("Upstream flow control")
struct UpstreamFlowControlTests {
    typealias Flow = UpstreamFlowControl

    static func send(_ flow: inout Flow, room: Int) -> Flow.Send {
        let destination = UnsafeMutableRawBufferPointer.allocate(byteCount: room, alignment: 1)
        defer { destination.deallocate() }
        return flow.sendRequestBody(into: destination)
    }

    @Test("curl pauses on an empty queue and is resumed by bytes or by the end")
    func sendPauses() {
        var flow = Flow()
        let empty = Self.send(&flow, room: 16)
        #expect(empty == .pause)
        let appended = flow.appendRequestBody(ByteBuffer(repeating: 1, count: 10))
        #expect(appended.keepReading && appended.resumeCurl)
        let copied = Self.send(&flow, room: 16)
        #expect(copied == .copied(count: 10, wakeClient: false))
        let drained = Self.send(&flow, room: 16)
        #expect(drained == .pause)
        let resumed = flow.endRequestBody()
        #expect(resumed)
        let ended = Self.send(&flow, room: 16)
        #expect(ended == .end)
    }

    @Test("the client is held at the high-water mark and woken below the low-water mark")
    func clientHeld() {
        var flow = Flow()
        let (keepReading, _) = flow.appendRequestBody(ByteBuffer(repeating: 1, count: Flow.requestHighWater))
        #expect(!keepReading)
        // Draining to just above the low-water mark does not wake it; below does, once.
        let aboveLow = Flow.requestHighWater - Flow.requestLowWater
        let first = Self.send(&flow, room: aboveLow)
        #expect(first == .copied(count: aboveLow, wakeClient: false))
        let second = Self.send(&flow, room: 1)
        #expect(second == .copied(count: 1, wakeClient: true))
        let third = Self.send(&flow, room: 1)
        #expect(third == .copied(count: 1, wakeClient: false))
    }

    @Test("a steady upload of 100 MB, the queue never drained to empty: its memory stays bounded")
    func steadyUploadBounded() {
        var flow = Flow()
        let piece = ByteBuffer(repeating: 7, count: 64 * 1024)
        var largest = 0
        var sent = 0
        // The client is read while it may; curl takes 48 KiB at a time (less than comes in while
        // the client is read), so the queue hovers between the marks and is never empty.
        var reading = true
        while sent < 100 << 20 {
            if reading { reading = flow.appendRequestBody(piece).keepReading }
            if case .copied(let count, let wake) = Self.send(&flow, room: 48 * 1024) {
                sent += count
                if wake { reading = true }
            }
            #expect(flow.queuedRequestBytes > 0)
            largest = max(largest, flow.queuedRequestCapacity)
        }
        #expect(largest <= 1 << 20, "the queue grew to \(largest) bytes")
    }

    @Test("curl is paused when the client's window is full and resumed at the low-water mark")
    func responseWindow() {
        var flow = Flow()
        let steps = [
            flow.responseArrived(Flow.responseHighWater),
            flow.responseArrived(1),
            flow.responseConsumed(Flow.responseHighWater - Flow.responseLowWater - 1),
            flow.responseConsumed(1),
            flow.responseConsumed(0),
            flow.responseArrived(1),
        ]
        // Accepted; paused (full); still above the low-water mark; at it: resume; nothing to resume; accepted.
        #expect(steps == [true, false, false, true, false, true])
    }
}
