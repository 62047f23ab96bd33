import NIOCore
import NIOHTTP1

/// One client connection's decisions, as a value: which exchange is current, how far its
/// request and its response have got, whether the client may be read, and — in one place —
/// whether the connection stays open after an answer. ``ProxyHandler`` feeds it every channel
/// event and performs the ``Action`` it returns; the machine itself touches no channel, no
/// transfer and no clock, so every transition is tested without sockets.
///
/// Requests come one at a time (NIO's pipelining handler holds pipelined ones back until the
/// answer before them has been written), so the machine has at most one exchange.
struct ProxyConnectionStateMachine {
    /// Identifies an exchange, so that late events for an earlier one (a token that arrives
    /// after the client gave up, the completion of a write) are recognised and ignored.
    typealias ExchangeID = Int

    struct Configuration: Equatable {
        /// `server.max_body_bytes`, enforced as the body streams (chunked bodies declare nothing).
        var maxBodyBytes: Int

        /// The 413 for a body found over ``maxBodyBytes`` as it comes (by its bytes, or its
        /// chunk sizes).
        var bodyTooLarge: SpotifyError {
            SpotifyError(status: 413, message: "request body too large: the limit is \(self.maxBodyBytes) bytes (server.max_body_bytes)")
        }
        /// Bodies up to this size are kept so the request can be replayed after a 401.
        var replayBodyLimit: Int
        /// Body bytes buffered while waiting for a token before the client stops being read.
        var pendingHighWater = UpstreamFlowControl.requestHighWater
    }

    /// How an answer made by the proxy is written.
    struct LocalFraming: Equatable {
        var version: HTTPVersion
        var keepAlive: Bool
        /// A HEAD: the headers only.
        var headOnly: Bool
    }

    /// What the handler does next.
    enum Action: Equatable {
        case none
        /// Pass a `read()` on to the channel.
        case read
        /// Ask for a token for the current exchange; first send `100 Continue` if asked.
        case requestToken(ExchangeID, sendContinue: Bool)
        /// Start the upstream transfer with `token`, hand it `body` (what came while waiting),
        /// end its body if `endBody`, and `read` the client if a read was held back.
        case startUpstream(token: String, body: ByteBuffer?, endBody: Bool, read: Bool)
        /// Hand request body bytes to the transfer (it says whether to keep reading).
        case forwardBody(ByteBuffer)
        case endUpstreamBody
        /// A 401 that the token source wants replayed: cancel the transfer and ask for a token again.
        case replay(ExchangeID, UnauthorizedVerdict)
        /// Write the upstream's head (with `Connection: close` unless `keepAlive`).
        case writeHead(keepAlive: Bool)
        /// A HEAD sent as GET: keep the head until the body is counted.
        case holdHead(keepAlive: Bool)
        /// Upstream body bytes: write them to the client.
        case writeBody
        /// Upstream body bytes of a HEAD sent as GET: count them only.
        case countBody
        /// Upstream body bytes nobody wants (the answer went another way): release them.
        case discardBody
        /// The upstream answer is complete: write the held head (if any) and the end; report
        /// the write's completion with ``endWritten(_:)``. `read`: a read held back while the
        /// body was queued upstream is issued now (the rest of the body is read and dropped).
        case writeEnd(ExchangeID, releaseHeldHead: Bool, read: Bool)
        /// Write an answer made by the proxy, after cancelling the transfer if `cancelTransfer`;
        /// report the write's completion with ``endWritten(_:)``.
        case writeLocalAnswer(ExchangeID, LocalAnswer, LocalFraming, cancelTransfer: Bool)
        /// The exchange is over: `read` if a read was held back, then `close` the connection if asked.
        case finish(read: Bool, close: Bool)
        /// Close the connection now (flushing what was written), cancelling the transfer if asked.
        case close(cancelTransfer: Bool)
        case cancelTransfer
    }

    /// How far the answer has got.
    enum Response: Equatable {
        /// The token lookup is under way (no transfer).
        case waitingForToken
        /// The transfer runs; its head has not come.
        case waitingForHead
        /// A HEAD sent as GET: the head is held while the body is counted.
        case headHeld
        /// The head is out; the body streams.
        case streaming
        /// The answer's end is written; `flushed` once the write completed. `needsRequestEnd`:
        /// the exchange ends only when the request's end has also been read.
        case ended(flushed: Bool, needsRequestEnd: Bool)
    }

    struct Exchange: Equatable {
        let id: ExchangeID
        let version: HTTPVersion
        let isHead: Bool
        var keepAlive: Bool
        var body: UpstreamRequest.Body
        var bodyEnded = false
        var bodyBytes = 0
        var headViaGET = false
        var response: Response
        /// The token the running transfer carries.
        var token: String?
        var replayed = false
        /// Sent again to another target after a held refusal (``resendHeld(body:)``).
        var resent = false
        /// The whole request body while it is small enough to replay after a 401.
        var retained: ByteBuffer? = ByteBuffer()
        /// Body received before the transfer existed (while waiting for a token).
        var pending: ByteBuffer?

        /// A transfer exists for this exchange (started and not finished).
        var transferRunning: Bool {
            switch self.response {
            case .waitingForHead, .headHeld, .streaming: true
            case .waitingForToken, .ended: false
            }
        }
    }

    enum State: Equatable {
        /// Between requests.
        case idle
        case exchange(Exchange)
        /// Closing: nothing more is read, written or started.
        case closing
        /// Only inside a method, while the exchange's buffers are changed: the enum must not hold
        /// a second reference to them, or every append would copy the whole buffer.
        case modifying
    }

    /// Whether the client may be read: reads are held while the upstream has enough body queued.
    enum ReadDemand: Equatable {
        case producing
        /// `readPending`: the channel asked to read meanwhile.
        case paused(readPending: Bool)
    }

    private(set) var state: State = .idle
    private(set) var demand: ReadDemand = .producing
    private var nextID: ExchangeID = 0
    let configuration: Configuration

    init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// Between requests: none under way, the connection open.
    var isIdle: Bool {
        if case .idle = self.state { return true }
        return false
    }

    /// The current exchange has a request body the client has not sent whole yet.
    var requestBodyPending: Bool {
        guard case .exchange(let exchange) = self.state else { return false }
        return exchange.body != .none && !exchange.bodyEnded
    }

    /// The current exchange's id, if one is under way.
    var currentExchange: ExchangeID? {
        if case .exchange(let exchange) = self.state { return exchange.id }
        return nil
    }

    // MARK: - Client side

    /// A request head, with what the request stages decided about it.
    mutating func requestHead(_ head: HTTPRequestHead, decision: RequestStages.Decision) -> Action {
        switch self.state {
        case .idle:
            break
        case .exchange(let previous):
            // The pipelining handler hands on the next request as soon as the previous answer's
            // end is written, before that write completes. A previous answer that closes the
            // connection wins; otherwise the previous exchange is over.
            guard case .ended = previous.response else {
                self.state = .closing
                return .close(cancelTransfer: previous.transferRunning)
            }
            guard previous.keepAlive else { return .none }
        case .closing, .modifying:
            return .none
        }
        self.nextID += 1
        // A refused CONNECT must not leave a half-open tunnel behind. An HTTP/1.0 request with
        // Transfer-Encoding is taken as faulty framing: the connection closes after it (RFC 9112
        // §6.1), as an HTTP/1.0 hop before the proxy may have framed it otherwise.
        let faultyFraming = head.version.major == 1 && head.version.minor == 0 && head.headers.contains(name: "transfer-encoding")
        var exchange = Exchange(
            id: self.nextID, version: head.version, isHead: head.method == .HEAD,
            keepAlive: head.isKeepAlive && head.method != .CONNECT && !faultyFraming, body: .none, response: .waitingForToken)
        switch decision {
        case .answer(let answer):
            // A declared body over the limit is not read and dropped: the connection closes.
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > self.configuration.maxBodyBytes {
                exchange.keepAlive = false
            }
            // Nor is a body whose framing the proxy does not know (a coding such as gzip): the
            // answer says `Connection: close`, as nginx's 501 does.
            if !BodyFramingStage.framingIsKnown(head.headers) { exchange.keepAlive = false }
            // Nor one the client holds back until told to go on (`Expect: 100-continue`): told
            // no, it may send it or not (RFC 9110 §10.1.1), and a body not sent would leave the
            // proxy reading the next request as its body.
            if BodyFramingStage.mayHoldBodyBack(head) { exchange.keepAlive = false }
            let action = self.answer(answer, in: &exchange, cancelTransfer: false)
            if exchange.keepAlive {
                // The parser still owes this request's end (it sends one for every request): a
                // connection kept open takes its next request only after it, so a body the parser
                // then refuses cannot draw a second answer.
                exchange.response = .ended(flushed: false, needsRequestEnd: true)
                self.state = .exchange(exchange)
            }
            return action
        case .forward(let plan):
            exchange.body = plan.body
            // A HEAD sent as GET: the head waits for the whole body (so does an answer to
            // transform, told at its head: ``upstreamHead(status:hasContentLength:verdict:holdWhole:)``).
            exchange.headViaGET = plan.headViaGET
            self.state = .exchange(exchange)
            return .requestToken(exchange.id, sendContinue: plan.expectContinue)
        }
    }

    mutating func requestBodyPart(_ buffer: ByteBuffer) -> Action {
        guard case .exchange(var exchange) = self.state else { return .none }
        // Answered already (an early error): the rest of the body is read and dropped.
        if case .ended = exchange.response { return .none }
        exchange.bodyBytes += buffer.readableBytes
        if exchange.bodyBytes > self.configuration.maxBodyBytes {
            if exchange.response == .streaming {
                // Part of an answer is out: only a broken connection can tell the client.
                self.state = .closing
                return .close(cancelTransfer: true)
            }
            exchange.keepAlive = false
            let running = exchange.transferRunning
            return self.answer(LocalAnswer(self.configuration.bodyTooLarge), in: &exchange, cancelTransfer: running)
        }
        self.state = .modifying
        if var retained = exchange.retained {
            exchange.retained = nil
            if retained.readableBytes + buffer.readableBytes <= self.configuration.replayBodyLimit {
                var copy = buffer
                retained.writeBuffer(&copy)
                exchange.retained = retained
            }
        }
        if exchange.transferRunning {
            self.state = .exchange(exchange)
            return .forwardBody(buffer)
        }
        var copy = buffer
        if exchange.pending == nil {
            exchange.pending = copy
        } else {
            exchange.pending!.writeBuffer(&copy)
        }
        if exchange.pending!.readableBytes >= self.configuration.pendingHighWater { self.pauseReads() }
        self.state = .exchange(exchange)
        return .none
    }

    mutating func requestEnd() -> Action {
        guard case .exchange(var exchange) = self.state else { return .none }
        exchange.bodyEnded = true
        self.state = .exchange(exchange)
        switch exchange.response {
        case .ended(flushed: true, _):
            return self.finish(exchange)
        case .ended(flushed: false, _), .waitingForToken:
            return .none
        case .waitingForHead, .headHeld, .streaming:
            return .endUpstreamBody
        }
    }

    /// The channel wants to read.
    mutating func read() -> Action {
        switch self.demand {
        case .producing:
            return .read
        case .paused:
            self.demand = .paused(readPending: true)
            return .none
        }
    }

    /// The transfer's request body queue is full: stop reading the client.
    mutating func upstreamBodyQueueFull() {
        self.pauseReads()
    }

    /// The transfer's request body queue drained: read the client again.
    mutating func upstreamWantsBody() -> Action {
        self.resumeReads() ? .read : .none
    }

    // MARK: - Token

    mutating func tokenArrived(_ token: String, for id: ExchangeID) -> Action {
        guard case .exchange(var exchange) = self.state, exchange.id == id, exchange.response == .waitingForToken else { return .none }
        exchange.token = token
        exchange.response = .waitingForHead
        let body = exchange.pending.flatMap { $0.readableBytes > 0 ? $0 : nil }
        exchange.pending = nil
        self.state = .exchange(exchange)
        return .startUpstream(
            token: token, body: body, endBody: exchange.bodyEnded || exchange.body == .none, read: self.resumeReads())
    }

    /// While the exchange waited to go upstream, the proxy found its answer instead: no token
    /// came (or the governor refused), or the cache answered. Nothing goes upstream.
    mutating func answerWithoutForwarding(_ answer: LocalAnswer, for id: ExchangeID) -> Action {
        guard case .exchange(var exchange) = self.state, exchange.id == id, exchange.response == .waitingForToken else { return .none }
        return self.answer(answer, in: &exchange, cancelTransfer: false)
    }

    // MARK: - Upstream side

    /// The token to report when the upstream answers 401: the exchange has not been replayed
    /// yet, so the token source may want it replayed.
    var tokenToReportOn401: String? {
        guard case .exchange(let exchange) = self.state, exchange.response == .waitingForHead, !exchange.replayed else { return nil }
        return exchange.token
    }

    /// The upstream's head. `verdict`: what the token source said of a 401 (see ``tokenToReportOn401``).
    /// `holdWhole`: the answer is transformed whole (``ResponseTransform/holdsAnswer(status:)``),
    /// so its head waits for its body as a HEAD sent as GET does.
    mutating func upstreamHead(status: Int, hasContentLength: Bool, verdict: UnauthorizedVerdict?, holdWhole: Bool = false) -> Action {
        guard case .exchange(var exchange) = self.state, exchange.response == .waitingForHead else { return .none }
        let replayable = exchange.body == .none || (exchange.bodyEnded && exchange.retained != nil)
        if status == 401, let verdict, verdict != .passThrough, !exchange.replayed, replayable {
            exchange.replayed = true
            exchange.response = .waitingForToken
            exchange.token = nil
            exchange.pending = exchange.retained
            self.state = .exchange(exchange)
            return .replay(exchange.id, verdict)
        }
        // HTTP/1.0 has no chunked encoding: a body of unknown length ends when the connection does.
        if exchange.version.minor == 0, !hasContentLength { exchange.keepAlive = false }
        let held = exchange.headViaGET || holdWhole
        exchange.response = held ? .headHeld : .streaming
        self.state = .exchange(exchange)
        return held ? .holdHead(keepAlive: exchange.keepAlive) : .writeHead(keepAlive: exchange.keepAlive)
    }

    /// The request's whole body (empty when it has none) while its held answer
    /// (``upstreamHead(status:hasContentLength:verdict:holdWhole:)``) may still be replaced by
    /// sending the request again: it was all kept and has not been sent again yet.
    var bodyToResend: ByteBuffer? {
        guard case .exchange(let exchange) = self.state, exchange.response == .headHeld, !exchange.resent else { return nil }
        if exchange.body == .none { return ByteBuffer() }
        return exchange.bodyEnded ? exchange.retained : nil
    }

    /// The held answer is not given: the request goes again, once, with `body` (see
    /// ``bodyToResend``, changed or not) to the target the handler now has for it, as a 401's
    /// replay goes (a 401 on it may still be replayed, with `body`).
    mutating func resendHeld(body: ByteBuffer) -> Action {
        guard case .exchange(var exchange) = self.state, exchange.response == .headHeld, !exchange.resent else { return .none }
        exchange.resent = true
        exchange.response = .waitingForToken
        exchange.token = nil
        exchange.retained = body
        exchange.pending = body.readableBytes > 0 ? body : nil
        self.state = .exchange(exchange)
        return .requestToken(exchange.id, sendContinue: false)
    }

    mutating func upstreamBodyPart() -> Action {
        guard case .exchange(let exchange) = self.state else { return .discardBody }
        switch exchange.response {
        case .streaming: return .writeBody
        case .headHeld: return .countBody
        case .waitingForToken, .waitingForHead, .ended: return .discardBody
        }
    }

    /// The transfer finished; `failure` is the answer to give if nothing of the answer is out yet.
    mutating func upstreamFinished(failure: LocalAnswer?) -> Action {
        guard case .exchange(var exchange) = self.state, exchange.transferRunning else { return .none }
        if let failure {
            if exchange.response == .streaming {
                // Part of the answer is out: only a broken connection tells the client.
                self.state = .closing
                return .close(cancelTransfer: false)
            }
            exchange.keepAlive = exchange.keepAlive && exchange.bodyEnded
            return self.answer(failure, in: &exchange, cancelTransfer: false)
        }
        let held = exchange.response == .headHeld
        exchange.response = .ended(flushed: false, needsRequestEnd: !exchange.bodyEnded)
        self.state = .exchange(exchange)
        // An upstream that answered before taking the whole body no longer drains it: the
        // client is read again, or its request's end would never come.
        let read = !exchange.bodyEnded && self.resumeReads()
        return .writeEnd(exchange.id, releaseHeldHead: held, read: read)
    }

    /// The write of an answer's end completed.
    mutating func endWritten(_ id: ExchangeID) -> Action {
        guard case .exchange(var exchange) = self.state, exchange.id == id,
            case .ended(flushed: false, let needsRequestEnd) = exchange.response
        else { return .none }
        exchange.response = .ended(flushed: true, needsRequestEnd: needsRequestEnd)
        self.state = .exchange(exchange)
        guard !needsRequestEnd || exchange.bodyEnded else { return .none }
        return self.finish(exchange)
    }

    // MARK: - Connection events

    /// The read timeout fired: an idle keep-alive connection, or a request sent too slowly.
    mutating func idleTimeout() -> Action {
        switch self.state {
        case .idle:
            self.state = .closing
            return .close(cancelTransfer: false)
        case .exchange(let exchange) where exchange.response == .ended(flushed: true, needsRequestEnd: true):
            // Answered, but the rest of the request body stopped coming: nothing more is owed.
            self.state = .closing
            return .close(cancelTransfer: false)
        case .exchange(var exchange) where self.clientOwesBody && (exchange.response == .waitingForToken || exchange.response == .waitingForHead):
            // The proxy was reading the body and none came (slowloris on the body): the client
            // hears why, rather than the upstream being blamed when curl gives up on the
            // transfer; the connection closes after the answer.
            return self.answer(Self.bodyStopped(for: "server.idle_timeout"), in: &exchange, cancelTransfer: exchange.transferRunning)
        case .exchange, .closing, .modifying:
            return .none
        }
    }

    /// The answer to a request whose body stopped coming while the proxy was reading it, after
    /// the time `setting` sets.
    static func bodyStopped(for setting: String) -> LocalAnswer {
        LocalAnswer(
            SpotifyError(
                status: 408, message: "the request body stopped arriving: no more of it came within \(setting); send the whole body without pausing"))
    }

    /// The request body came, but not all of it within `setting`, the whole exchange's time.
    static func bodyTooSlow(for setting: String) -> LocalAnswer {
        LocalAnswer(
            SpotifyError(
                status: 408, message: "the request body did not all arrive within \(setting); send the whole body sooner"))
    }

    /// The current request's body is not complete and the proxy is reading the client for it
    /// (not holding it back while the upstream drains what it has): a stall is the client's.
    var clientOwesBody: Bool {
        guard case .exchange(let exchange) = self.state, exchange.body != .none, !exchange.bodyEnded else { return false }
        return self.demand == .producing
    }

    mutating func channelInactive() -> Action {
        let running: Bool
        if case .exchange(let exchange) = self.state { running = exchange.transferRunning } else { running = false }
        self.state = .closing
        return running ? .cancelTransfer : .none
    }

    /// The connection failed (not a parse error): nobody is left to answer.
    mutating func connectionFailed() -> Action {
        let running: Bool
        if case .exchange(let exchange) = self.state { running = exchange.transferRunning } else { running = false }
        self.state = .closing
        return .close(cancelTransfer: running)
    }

    /// The request could not be parsed; `answer` says why. The connection closes after it.
    mutating func malformedRequest(_ answer: LocalAnswer) -> Action {
        var running = false
        switch self.state {
        case .closing, .modifying:
            return .none
        case .exchange(let exchange) where exchange.response == .streaming:
            // Part of an answer is out: the rest of what was written goes, then the connection closes.
            self.state = .closing
            return .close(cancelTransfer: true)
        case .exchange(var exchange) where !exchange.bodyEnded:
            if case .ended(let flushed, _) = exchange.response {
                // The broken request is the one already answered (a stage refused its head,
                // then the parser refused the rest): that answer stands, and the connection
                // closes once it is written.
                guard !flushed else {
                    self.state = .closing
                    return .close(cancelTransfer: false)
                }
                exchange.keepAlive = false
                exchange.response = .ended(flushed: false, needsRequestEnd: false)
                self.state = .exchange(exchange)
                return .none
            }
            // The broken part is this request's body: the 400 is its answer (the transfer, if
            // one started, is cancelled), and nothing more is read.
            exchange.keepAlive = false
            exchange.bodyEnded = true
            return self.answer(answer, in: &exchange, cancelTransfer: exchange.transferRunning)
        case .exchange(let exchange):
            // A request still waiting for its answer is dropped; one already answered keeps
            // its answer, and this one is written after it.
            running = exchange.transferRunning
        case .idle:
            break
        }
        self.nextID += 1
        var exchange = Exchange(id: self.nextID, version: .http1_1, isHead: false, keepAlive: false, body: .none, response: .waitingForToken)
        exchange.bodyEnded = true
        return self.answer(answer, in: &exchange, cancelTransfer: running)
    }

    // MARK: - Private

    private mutating func answer(_ answer: LocalAnswer, in exchange: inout Exchange, cancelTransfer: Bool) -> Action {
        // Keep the connection only when no body is still to come: the client may be sending a
        // large one the proxy has no use for.
        if !exchange.bodyEnded && exchange.body != .none { exchange.keepAlive = false }
        exchange.response = .ended(flushed: false, needsRequestEnd: false)
        self.state = .exchange(exchange)
        return .writeLocalAnswer(
            exchange.id, answer, LocalFraming(version: exchange.version, keepAlive: exchange.keepAlive, headOnly: exchange.isHead),
            cancelTransfer: cancelTransfer)
    }

    private mutating func finish(_ exchange: Exchange) -> Action {
        self.state = exchange.keepAlive ? .idle : .closing
        return .finish(read: self.resumeReads(), close: !exchange.keepAlive)
    }

    private mutating func pauseReads() {
        if case .producing = self.demand { self.demand = .paused(readPending: false) }
    }

    /// Resumes reading; true when a read was held back and should be issued now.
    private mutating func resumeReads() -> Bool {
        guard case .paused(let pending) = self.demand else { return false }
        self.demand = .producing
        return pending
    }
}
