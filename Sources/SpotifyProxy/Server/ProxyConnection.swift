import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SpotifyCatalog

/// One client connection, as a thin adapter: every channel and transfer event goes to the
/// ``ProxyConnectionStateMachine``, whose ``ProxyConnectionStateMachine/Action`` this performs.
/// What to do with a request is decided by the ``RequestStages``; what remains here is I/O:
/// writing heads and bodies, the upstream transfer, link rewriting, the tee's copy, the log line.
final class ProxyConnection: UpstreamTransferDelegate {
    typealias Action = ProxyConnectionStateMachine.Action

    /// What the handler keeps of the current exchange for its I/O and its log line.
    private final class Record {
        let id: ProxyConnectionStateMachine.ExchangeID
        let head: HTTPRequestHead
        /// The origin-form target (the request target until routed).
        let target: String
        /// What the stages decided (a playlist's refused `/tracks` read is re-planned as its `/items`).
        var plan: ForwardPlan?
        /// The plan's body edit was tried on the body's first part.
        var bodyEditTried = false
        /// The access key's label (never the key), when one was presented.
        var keyLabel: String?
        /// `X-Request-Id`: the client's when sane, else one made here; logged, forwarded, returned.
        let requestID: String
        /// Where its token comes from: the app's refresher or a user's.
        var tokens: (any AccessTokenSource)?
        let started: NIODeadline
        var transfer: UpstreamTransfer?
        var status = 0
        var bytesOut = 0
        var upstreamStarted: NIODeadline?
        var upstreamHeadAt: NIODeadline?
        var replayed = false
        var rewriter: LinkRewriter?
        /// The tee's copy of the upstream body as received (before rewriting); nil when not teed.
        var teeCapture: TeeCapture?
        /// A HEAD sent as GET: its head, written with its `Content-Length` once the body is counted.
        var heldHead: HTTPResponseHead?
        /// A 429's body, kept (a few KiB at most) for the governor to read Spotify's reason from.
        var rateLimitBody: [UInt8]?
        /// The whole upstream body of an answer to transform (``ResponseTransform/holdsAnswer(status:)``).
        var transformBody: [UInt8]?
        /// The body to transform outgrew its limit: the answer is a 502, not a truncated one.
        var transformOverflow = false
        /// The answer's head was written (a connection closing now cut its body).
        var headSent = false
        /// Logged, or answered by design without a log line: nothing is left to log.
        var finished = false
        /// The cache could not hold its answer: it goes upstream streaming, past the cache.
        var pastCache = false
        /// When the governor first held it: `max_wait` counts every hold since.
        var heldSince: ContinuousClock.Instant?
        /// A hold took its budget slot: asked again after a limit's hold, it takes none.
        var slotTaken = false

        init(
            id: ProxyConnectionStateMachine.ExchangeID, head: HTTPRequestHead, target: String, plan: ForwardPlan?, requestID: String,
            started: NIODeadline = .now()
        ) {
            self.id = id
            self.started = started
            self.head = head
            self.requestID = requestID
            self.target = target
            self.plan = plan
        }
    }

    private let shared: ProxyContext
    /// The client's connection; nil once it is gone.
    private var channel: (any ClientChannel)?
    private var state: ProxyConnectionStateMachine
    private var record: Record?
    /// Why the proxy is closing the connection, for the line of a request it cuts short.
    private var closingReason: String?
    /// Response bytes written but not flushed yet.
    private var unflushed = false
    /// The buffer the last rewritten body part went out in, kept for the next one while it is
    /// small: the worker listener copies a small part into its own output, so the buffer is
    /// free again and no allocation is made per answer (a buffer still held by the listener is
    /// replaced, not copied, when it is cleared).
    private var rewriteScratch: ByteBuffer?
    /// The metric instruments this connection's last request was counted with (a keep-alive
    /// client mostly repeats its route): found again without the shared lock.
    private var instruments = ProxyMetrics.Memo()
    /// The link rewriter made for this connection's last rewritten answer, with the `Host` it
    /// was made for (the proxy's base in the links may come from it): a client keeps its `Host`
    /// on a connection, so the next answer's is a copy, not a new one.
    private var rewriterMemo: (host: String?, rewriter: LinkRewriter)?

    init(context: ProxyContext) {
        self.shared = context
        self.state = ProxyConnectionStateMachine(
            configuration: .init(maxBodyBytes: context.settings.limits.maxBodyBytes, replayBodyLimit: context.settings.replayBodyLimit))
    }

    /// The client is on this machine (the proxy's own endpoints are answered to it while keys are off).
    private var fromLoopback = false
    /// The client's address, for the log line.
    private var clientAddress = "-"

    /// The connection is open on `channel`; `remote` is the client's address.
    func attached(to channel: any ClientChannel, remote: SocketAddress?) {
        self.channel = channel
        self.shared.metrics.connectionOpened()
        switch remote {
        case .v4(let address): self.fromLoopback = address.address.sin_addr.s_addr.bigEndian >> 24 == 127
        case .v6(let address): self.fromLoopback = address.host == "::1" || address.host.hasPrefix("::ffff:127.")
        default: self.fromLoopback = false
        }
        self.clientAddress = Self.logLabel(remote)
    }

    /// A client's address as the request log shows it: `IP:PORT`, `[IPv6]:PORT`, or `-`.
    static func logLabel(_ remote: SocketAddress?) -> String {
        guard let ip = remote?.ipAddress, let port = remote?.port else { return "-" }
        return ProxyConfiguration.hostAndPort(ip, port)
    }

    /// The connection is gone: nothing is written to it any more.
    func detached() {
        self.shared.metrics.connectionClosed()
        self.channel = nil
    }

    // MARK: - Client side

    /// A parsed part of a request.
    func received(_ part: HTTPServerRequestPart) {
        guard let channel = self.channel else { return }
        switch part {
        case .head(var head):
            let receivedHeadBytes = HeaderLimitStage.bytes(of: head)
            // One id per request, in the head from here on: forwarded upstream with the client's headers.
            let offered = head.headers.first(name: RequestID.header)
            let requestID = RequestID.choose(offered)
            if offered == nil {
                head.headers.add(name: RequestID.header, value: requestID)
            } else {
                // Replaced even when kept: a repeated header becomes one.
                head.headers.replaceOrAdd(name: RequestID.header, value: requestID)
            }
            var request = ProxyRequest(head: head)
            request.receivedHeadBytes = receivedHeadBytes
            request.fromLoopback = self.fromLoopback
            let decision = self.shared.stages.decide(&request)
            let action = self.state.requestHead(head, decision: decision)
            if let id = self.state.currentExchange, id != self.record?.id {
                let plan: ForwardPlan?
                if case .forward(let forward) = decision { plan = forward } else { plan = nil }
                let record = Record(id: id, head: head, target: request.target, plan: plan, requestID: requestID)
                record.keyLabel = request.key?.label
                switch plan?.credential {
                case .user(let label): record.tokens = self.shared.users?.tokens(for: label)
                case .app, nil: record.tokens = self.shared.tokens
                }
                self.record = record
            }
            self.run(action, channel: channel)
        case .body(var buffer):
            if let record = self.record, let edit = record.plan?.bodyEdit, !record.bodyEditTried, buffer.readableBytes > 0 {
                // Only where the body begins: the edit keeps its length.
                record.bodyEditTried = true
                if let edited = edit.edited(first: buffer) { buffer = edited }
            }
            switch self.state.requestBodyPart(buffer) {
            case .forwardBody(let buffer):
                if self.record?.transfer?.appendRequestBody(buffer) == false { self.state.upstreamBodyQueueFull() }
            case let action:
                self.run(action, channel: channel)
            }
        case .end:
            self.run(self.state.requestEnd(), channel: channel)
        }
    }

    /// Something asks for the client to be read (the transport's read demand passes through here).
    func readRequested() {
        guard let channel = self.channel else { return }
        self.run(self.state.read(), channel: channel)
    }

    /// The client's connection closed.
    func inactive() {
        guard let channel = self.channel else { return }
        self.logAbandoned()
        self.run(self.state.channelInactive(), channel: channel)
    }

    /// The connection closes before the current answer ended (the client left, its socket
    /// failed, or shutdown's grace period ran out): the request is logged and counted as nginx
    /// logs it, 499 when nothing of the answer was sent, else the answer's status.
    private func logAbandoned() {
        guard let record = self.record, !record.finished else { return }
        if record.transfer != nil { self.shared.metrics.recordUpstreamFailure(.cancelled) }
        if !record.headSent { record.status = 499 }
        self.log(record, note: self.closingReason ?? "the connection closed before the answer ended")
    }

    /// The shutdown's grace period is over. A request with nothing of its answer yet — waiting
    /// for its token, held by the governor, or (a GET) waiting for the cache's fetch — is
    /// answered 503 to retry, as one stopped on its way is, before its connection closes (not an
    /// empty reply, logged as the client's 499). A GET may be waiting for a fetch under way, so
    /// it is told it was stopped; any other method, which never waits for the cache, that it
    /// was not sent.
    func graceEnded() {
        guard let channel = self.channel, let record = self.record, !record.finished else { return }
        let idempotentRead = record.head.method == .GET || record.head.method == .HEAD
        let answer = LocalAnswer.upstreamFailure(idempotentRead ? .shutdown : .notSent, method: record.head.method)
        self.run(self.state.answerWithoutForwarding(answer, for: record.id), channel: channel)
    }

    /// The client took none of its answer for `server.idle_timeout` (nginx's `send_timeout`):
    /// the proxy closes the connection, and the request's line says so.
    func stoppedReading() {
        self.closingReason = "the client took none of the answer for server.idle_timeout; the proxy closed the connection"
    }

    /// The client has sent nothing for `server.idle_timeout`. True when that closes the
    /// connection (idle keep-alive, or a half-sent request: slowloris).
    func idleTimedOut() -> Bool {
        guard let channel = self.channel else { return false }
        let action = self.state.idleTimeout()
        guard action != .none else { return false }
        self.run(action, channel: channel)
        return true
    }

    /// A request head began but did not arrive whole within `server.idle_timeout` (slowloris on
    /// the head). As nginx's `client_header_timeout`: between requests it is logged and counted
    /// as a 408 under a placeholder request line, and the connection closes without an answer
    /// (one would hold the connection in a lingering close while the client trickles on). With
    /// an answer still owed, as any idle timeout. `since`: when the head's bytes began (the
    /// line's ms). True when it closes the connection.
    func headTimedOut(since: NIODeadline) -> Bool {
        guard self.channel != nil, self.state.isIdle else { return self.idleTimedOut() }
        let record = Record(id: 0, head: Self.placeholderHead, target: "-", plan: nil, requestID: RequestID.choose(nil), started: since)
        record.status = 408
        self.record = record
        self.log(record, note: "the request head did not arrive whole within server.idle_timeout; the connection was closed")
        return self.idleTimedOut()
    }

    /// The request line logged for what never became a request (`- -`).
    private static let placeholderHead = HTTPRequestHead(version: .http1_1, method: .RAW(value: "-"), uri: "-")

    /// The request could not be parsed (an `HTTPParserError`; `reason` in words when the parser
    /// gave them), or the socket failed.
    func failed(_ error: any Error, reason: String? = nil) {
        guard let channel = self.channel else { return }
        guard let parserError = error as? HTTPParserError, parserError != .invalidEOFState, channel.isActive else {
            // The client left mid-request (or the socket failed): nobody to answer.
            self.logAbandoned()
            return self.run(self.state.connectionFailed(), channel: channel)
        }
        let answer: SpotifyError
        switch parserError {
        case .headerOverflow where reason == RequestParser.requestLineOverflow:
            // As for a request line over server.max_header_bytes (HeaderLimitStage): 414, as nginx.
            answer = SpotifyError(
                status: 414,
                message:
                    "request line too long: over \(RequestParser.maximumHeadBytes / 1024) KiB, the most a head may have: send a shorter URL (fewer ids, a shorter q)")
        case .headerOverflow:
            answer = SpotifyError(
                status: 431,
                message:
                    "request head too large: the request line and headers are over \(RequestParser.maximumHeadBytes / 1024) KiB; send a shorter URL, or fewer or shorter headers")
        case .invalidChunkSize where reason == RequestParser.bodyOverLimit:
            // Its chunk sizes say so before the bytes come, as a Content-Length would.
            answer = self.state.configuration.bodyTooLarge
        case .invalidMethod where reason == RequestParser.tlsHandshake:
            answer = SpotifyError(
                status: 400,
                message: "\(RequestParser.tlsHandshake); send plain HTTP (an http:// URL), or set server.tls_cert and server.tls_key to serve HTTPS")
        case .invalidMethod:
            answer = SpotifyError(status: 400, message: "malformed request: a method HTTP does not define; the Spotify Web API takes \(RequestRouter.allowedMethods)")
        case .invalidVersion:
            answer = SpotifyError(
                status: 400, message: "malformed request: \(reason ?? "unsupported HTTP version"); send HTTP/1.1 (or HTTP/1.0) requests with CRLF line ends")
        default:
            answer = SpotifyError(
                status: 400,
                message:
                    "malformed request: \(reason ?? "\(parserError)"); send a well-formed HTTP/1.1 request (CRLF line ends, a space in the target as %20, a body framed by one Content-Length or by Transfer-Encoding: chunked)"
            )
        }
        let previous = self.record?.transfer
        let action = self.state.malformedRequest(LocalAnswer(answer))
        guard case .writeLocalAnswer(let id, let answer, let framing, let cancel) = action else {
            return self.run(action, channel: channel)
        }
        if let record = self.record, record.id == id {
            // The request's own body was malformed: the 400 is its answer, logged as such; a
            // transfer under way is detached and cancelled, as for a body too large or too slow.
            if cancel { self.cancelTransfer(reason: "malformed request") }
        } else {
            // A request still waiting for its answer is dropped with the connection: logged as such.
            self.logAbandoned()
            if cancel { previous?.cancel(reason: "malformed request") }
            // Nothing usable was parsed: the answer is logged and counted under a placeholder request line.
            self.record = Record(id: id, head: Self.placeholderHead, target: "-", plan: nil, requestID: RequestID.choose(nil))
        }
        self.write(answer, framing: framing, for: id, channel: channel)
    }

    // MARK: - Actions

    private func run(_ action: Action, channel: any ClientChannel) {
        switch action {
        case .none:
            break
        case .read:
            channel.read()
        case .requestToken(let id, let sendContinue):
            if sendContinue, let head = self.record?.head {
                channel.writeAndFlush(.head(HTTPResponseHead(version: head.version, status: .continue)))
            }
            if let hold = self.record?.plan?.hold {
                self.hold(id, for: hold, channel: channel)
            } else {
                self.goUpstream(id, channel: channel)
            }
        case .startUpstream(let token, let body, let endBody, let read):
            self.startTransfer(token: token, body: body, endBody: endBody, channel: channel)
            if read { channel.read() }
        case .forwardBody(let buffer):
            if self.record?.transfer?.appendRequestBody(buffer) == false { self.state.upstreamBodyQueueFull() }
        case .endUpstreamBody:
            self.record?.transfer?.endRequestBody()
        case .replay(let id, let verdict):
            self.replay(id, verdict: verdict, channel: channel)
        case .writeLocalAnswer(let id, let answer, let framing, let cancelTransfer):
            if cancelTransfer { self.cancelTransfer(reason: "answered by the proxy") }
            self.write(answer, framing: framing, for: id, channel: channel)
        case .finish(let read, let close):
            self.record = nil
            if read { channel.read() }
            if close { channel.close() }
        case .close(let cancelTransfer):
            if cancelTransfer { self.cancelTransfer(reason: "connection closing") }
            channel.flush()
            channel.close()
        case .cancelTransfer:
            self.cancelTransfer(reason: "client closed the connection")
        case .writeHead, .holdHead, .writeBody, .countBody, .discardBody, .writeEnd:
            // Answered where the upstream event that caused them is handled.
            break
        }
    }

    private func cancelTransfer(reason: String) {
        guard let record = self.record, let transfer = record.transfer else { return }
        record.transfer = nil
        transfer.cancel(reason: reason)
    }

    /// Through the cache (a GET it may answer), or straight with a token.
    private func goUpstream(_ id: ProxyConnectionStateMachine.ExchangeID, channel: any ClientChannel) {
        if let plan = self.record?.plan, let assembly = plan.assembly, plan.assembleFirst {
            self.answerAssembled(assembly, for: id, channel: channel)
        } else if let directive = self.record?.plan?.cache, self.record?.pastCache == false {
            self.forwardThroughCache(directive, for: id, channel: channel)
        } else {
            self.requestToken(for: id, channel: channel)
        }
    }

    /// The governor holds the request: a paced one goes when its slot comes (unless a 429 limited
    /// the app meanwhile); one held by the `wait` policy asks the governor again (pacing, or a
    /// further wait, or a refusal). A client that left meanwhile sends nothing upstream (one
    /// whose request goes through the cache is held there, ``ResponseCache``, and goes anyway).
    private func hold(_ id: ProxyConnectionStateMachine.ExchangeID, for hold: GovernorHold, channel: any ClientChannel) {
        if self.record?.heldSince == nil { self.record?.heldSince = .now }
        if hold.paced { self.record?.slotTaken = true }
        channel.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(max(1, hold.duration.milliseconds)))) {
            guard let channel = self.channel, channel.isActive, let record = self.record, record.id == id else { return }
            let credential = record.plan?.credential ?? .app
            let waited = record.heldSince.map { $0.duration(to: .now) } ?? .zero
            // A slot taken (a paced hold) is not taken again: only a limit is looked at. Through
            // the cache, the slot is taken there, by the request that goes upstream.
            let pacing = record.plan?.cache == nil && !record.slotTaken
            switch self.shared.governor.admit(credential, pacing: pacing, waited: waited) {
            case .pass:
                self.goUpstream(id, channel: channel)
            case .hold(let duration, let paced):
                self.hold(id, for: GovernorHold(duration: duration, paced: paced), channel: channel)
            case .refuse(let answer):
                self.run(self.state.answerWithoutForwarding(answer, for: id), channel: channel)
            }
        }
    }

    /// A GET the cache may answer: it goes upstream through the cache (coalesced with identical
    /// ones, revalidating what is stored, or answered from a stale entry when Spotify cannot).
    private func forwardThroughCache(_ directive: CacheDirective, for id: ProxyConnectionStateMachine.ExchangeID, channel: any ClientChannel) {
        guard let record = self.record else { return }
        // Kept when a refused /tracks read is asked again as /items: the log's upstream time covers both.
        record.upstreamStarted = record.upstreamStarted ?? .now()
        // The store is looked at again: an answer may have arrived while the request was held.
        self.shared.cache.answer(directive.key, headers: record.head.headers, on: channel.eventLoop, heldSince: record.heldSince)
            .assumeIsolated().whenSuccess { outcome in
            guard let channel = self.channel, let record = self.record, record.id == id else { return }
            if case .answer(let upstream, _, _, _) = outcome, let plan = record.plan {
                // A development-mode refusal of a batch or a page beyond the cap: made of allowed requests.
                if let assembly = plan.assembly, self.shared.devMode.refused(assembly, with: upstream) {
                    return self.answerAssembled(assembly, for: id, channel: channel)
                }
                // Spotify's bare refusal of an endpoint it removed: explained (a development-mode one is learned).
                if let removal = plan.removedEndpoint, let status = self.shared.devMode.refusal(of: removal, in: upstream) {
                    // A playlist's /tracks, which the mode now known asks as its /items: asked so
                    // at once, as the next such request would be, so the first one works too (the
                    // user's own playlists by id, with the user's token, past the cache).
                    if removal.when.resendsToReplacement, let replacement = removal.replacement {
                        self.replan(record, to: replacement)
                        guard replacement.credential == nil else {
                            // Past the cache with the user's token: the governor decides for it as
                            // for any request of that user's (a budget slot, its limit).
                            record.plan?.cache = nil
                            return self.admitAgain(id, pacing: true, channel: channel)
                        }
                        let directive = CacheDirective(key: CacheKey(target: replacement.target, for: record.head))
                        record.plan?.cache = directive
                        return self.forwardThroughCache(directive, for: id, channel: channel)
                    }
                    return self.answer(.failed(LocalAnswer.afterUpstream(SpotifyError(status: status, message: removal.message))), for: id, channel: channel)
                }
            }
            self.answer(outcome, for: id, channel: channel)
        }
    }

    /// A development-mode app's batch or over-the-cap page, made of the requests Spotify allows.
    private func answerAssembled(_ assembly: Assembly, for id: ProxyConnectionStateMachine.ExchangeID, channel: any ClientChannel) {
        guard let record = self.record else { return }
        record.upstreamStarted = record.upstreamStarted ?? .now()
        DevModeAssembler(cache: self.shared.cache, devMode: self.shared.devMode)
            .answer(assembly, headers: record.head.headers, on: channel.eventLoop).assumeIsolated().whenSuccess { outcome in
                guard let channel = self.channel, let record = self.record, record.id == id else { return }
                self.answer(outcome, for: id, channel: channel)
            }
    }

    /// The cache's (or an assembly's) outcome, rendered for this client.
    private func answer(_ outcome: CacheOutcome, for id: ProxyConnectionStateMachine.ExchangeID, channel: any ClientChannel) {
        guard let record = self.record else { return }
        let answer: LocalAnswer
        switch outcome {
        case .answer(let upstream, let status, let age, let rendered):
            // Upstream time only for an answer this request fetched itself (not a hit, not a wait on another's).
            if status.forward != nil, !status.collapsed { record.upstreamHeadAt = .now() } else { record.upstreamStarted = nil }
            answer = self.shared.rendering.render(
                upstream, for: record.head, transform: record.plan?.transform, cache: (status, age), memo: rendered)
        case .failed(let failure):
            // Upstream time only when Spotify was asked (not when no token came, or the governor refused).
            if failure.failedUpstream { record.upstreamHeadAt = .now() } else { record.upstreamStarted = nil }
            answer = failure
        case .tooLarge:
            // Too large to hold whole: asked again, streaming, like any request the cache does
            // not take. A limit that came meanwhile holds or answers it, as the governor's stage
            // would have; it takes no budget slot of its own (the first request's was taken):
            // with a slot further away than `max_wait`, as a budget of 2 has, it could never go.
            record.upstreamStarted = nil
            record.pastCache = true
            return self.admitAgain(id, pacing: false, channel: channel)
        }
        self.run(self.state.answerWithoutForwarding(answer, for: id), channel: channel)
    }

    /// A request going upstream another way than the governor's stage saw (past the cache, or
    /// with a user's token): the governor is asked again, and it goes, is held, or is refused.
    /// `pacing`: it takes a budget slot of its own.
    private func admitAgain(_ id: ProxyConnectionStateMachine.ExchangeID, pacing: Bool, channel: any ClientChannel) {
        guard let record = self.record else { return }
        let waited = record.heldSince.map { $0.duration(to: .now) } ?? .zero
        switch self.shared.governor.admit(record.plan?.credential ?? .app, pacing: pacing, waited: waited) {
        case .pass:
            self.requestToken(for: id, channel: channel)
        case .hold(let duration, let paced):
            self.hold(id, for: GovernorHold(duration: duration, paced: paced), channel: channel)
        case .refuse(let refusal):
            self.run(self.state.answerWithoutForwarding(refusal, for: id), channel: channel)
        }
    }

    /// No token for the request (``LocalAnswer/noToken(_:)``). When only a new login helps and the
    /// request came with an access key, its client (a teammate) is told to ask whoever runs the
    /// proxy, without the server's paths: the reason names a command only the operator can run.
    private func noToken(_ unavailable: TokenUnavailable) -> LocalAnswer {
        guard unavailable.needsLogin, self.record?.keyLabel != nil, case .user(let label)? = self.record?.plan?.credential else {
            return .noToken(unavailable)
        }
        return LocalAnswer(
            SpotifyError(
                status: 401,
                message: "Spotify user \(label)'s login can no longer be used (logged out, or its refresh token refused by Spotify): \(CommandHint.askOperator(user: label))"
            ))
    }

    /// Starts the transfer as soon as a token is at hand; answers 503 if none comes in time.
    private func requestToken(for id: ProxyConnectionStateMachine.ExchangeID, channel: any ClientChannel) {
        guard let tokens = self.record?.tokens else {
            let advice = self.record?.keyLabel != nil ? CommandHint.askOperator() : "run `\(self.shared.settings.commands.login())`"
            let answer = SpotifyError(status: 401, message: "no such Spotify user is logged in: \(advice)")
            return self.run(self.state.answerWithoutForwarding(LocalAnswer(answer), for: id), channel: channel)
        }
        switch tokens.token(on: channel.eventLoop) {
        case .ready(let token):
            // The governor stage decided a moment ago: only a token that had to be waited for is checked again.
            self.run(self.state.tokenArrived(token, for: id), channel: channel)
        case .unavailable(let unavailable):
            self.run(self.state.answerWithoutForwarding(self.noToken(unavailable), for: id), channel: channel)
        case .wait(let future):
            future.assumeIsolated().whenComplete { result in
                guard let channel = self.channel else { return }
                switch result {
                case .success(let token):
                    self.tokenArrived(token, for: id, channel: channel)
                case .failure(let error):
                    let unavailable = error as? TokenUnavailable ?? TokenUnavailable(reason: "\(error)", retryAfterSeconds: 1)
                    self.run(self.state.answerWithoutForwarding(self.noToken(unavailable), for: id), channel: channel)
                }
            }
        }
    }

    /// A token that had to be waited for is at hand. A 429 may have limited the app meanwhile:
    /// the governor is asked again before anything goes upstream.
    private func tokenArrived(_ token: String, for id: ProxyConnectionStateMachine.ExchangeID, channel: any ClientChannel) {
        if let answer = GovernorStage.refusal(self.shared.governor.decide(self.record?.plan?.credential ?? .app)) {
            return self.run(self.state.answerWithoutForwarding(answer, for: id), channel: channel)
        }
        self.run(self.state.tokenArrived(token, for: id), channel: channel)
    }

    private func startTransfer(token: String, body: ByteBuffer?, endBody: Bool, channel: any ClientChannel) {
        guard let record = self.record, let plan = record.plan else { return }
        // Kept when the request goes again (a 401's replay, a refused /tracks sent to /items):
        // the log's upstream time covers both.
        record.upstreamStarted = record.upstreamStarted ?? .now()
        let request = UpstreamRequest(
            method: plan.method,
            url: self.shared.settings.apiURL + plan.target,
            headers: HeaderPolicy.upstreamHeaders(from: record.head.headers, token: token),
            body: plan.body)
        let transfer = self.shared.upstream.startTransfer(request, on: channel.eventLoop, delegate: self)
        record.transfer = transfer
        if let body { _ = transfer.appendRequestBody(body) }
        if endBody { transfer.endRequestBody() }
    }

    /// The token source wants a 401 replayed (its token was revoked or replaced): the request
    /// goes again, once, with the current token.
    private func replay(_ id: ProxyConnectionStateMachine.ExchangeID, verdict: UnauthorizedVerdict, channel: any ClientChannel) {
        guard let record = self.record, record.id == id else { return }
        record.replayed = true
        self.cancelTransfer(reason: "replaying after 401")
        self.shared.logger.info(
            verdict == .refreshAndReplay
                ? "upstream answered 401 for the current token; refreshing it and replaying once"
                : "upstream answered 401 for an older token; replaying once with the current one",
            metadata: ["path": "\(record.target.pathWithoutQuery)"])
        self.requestToken(for: id, channel: channel)
    }

    // MARK: - Upstream side

    func upstreamDidReceiveHead(_ transfer: UpstreamTransfer, status: Int, headers: [(name: String, value: String)]) {
        guard let channel = self.channel, let record = self.record, record.transfer === transfer else { return }
        record.upstreamHeadAt = .now()
        var verdict: UnauthorizedVerdict?
        if status == 401, let token = self.state.tokenToReportOn401 { verdict = record.tokens?.unauthorized(token: token) }
        var responseHeaders: HTTPHeaders
        let framing: HeaderPolicy.ResponseFraming
        (responseHeaders, framing) = HeaderPolicy.clientHeaders(from: headers, rewriteLinks: self.shared.settings.rewriteLinks)
        // Held whole only when it is transformed (a simple search's 200, Spotify's refusal of a removed endpoint).
        // And Spotify's refusal of a request whose refusal is to be explained (a user's read of
        // a playlist's items asked as /tracks, whose page transform holds a 200 only).
        let transformed =
            (record.plan?.transform?.holdsAnswer(status: status) ?? false)
            || (record.plan?.transform != nil && record.plan?.removedEndpoint != nil && (status == 403 || status == 404))
        let action = self.state.upstreamHead(
            status: status, hasContentLength: responseHeaders.contains(name: "content-length"), verdict: verdict, holdWhole: transformed)
        let keepAlive: Bool
        switch action {
        case .writeHead(let keep), .holdHead(let keep):
            keepAlive = keep
        default:
            return self.run(action, channel: channel)
        }
        if let tee = self.shared.tee, framing.isJSON, (200..<300).contains(status), record.head.method == .GET {
            record.teeCapture = tee.capture(key: record.target)
        }
        if transformed {
            record.transformBody = []
        } else if framing.rewrite {
            let host = self.shared.rendering.clientAuthority(of: record.head)
            if let memo = self.rewriterMemo, memo.host == host {
                record.rewriter = memo.rewriter
            } else {
                let made = self.shared.rendering.rewriter(for: record.head)
                self.rewriterMemo = (host, made)
                record.rewriter = made
            }
        }
        if status == 429 {
            // The whole app is limited until Retry-After: later requests are answered locally.
            let retryAfter = headers.first { $0.name.equalsIgnoringASCIICase("retry-after") }?.value
            if let replaced = self.shared.governor.rateLimited(record.plan?.credential ?? .app, retryAfterHeader: retryAfter) {
                responseHeaders.replaceOrAdd(name: "Retry-After", value: replaced)
            }
            record.rateLimitBody = []
        }
        // Set before the head is made: edited inside it, the headers would be copied first.
        responseHeaders.set(RequestID.header, to: record.requestID)
        // `Connection` is hop-by-hop: the upstream's is gone already.
        Self.addConnection(keepAlive: keepAlive, version: record.head.version, to: &responseHeaders)
        let head = HTTPResponseHead(version: record.head.version, status: HTTPResponseStatus(statusCode: status), headers: responseHeaders)
        record.status = status
        if case .holdHead = action {
            record.heldHead = head
        } else {
            record.headSent = true
            channel.write(.head(head), done: nil)
        }
    }

    func upstreamDidReceiveBody(_ transfer: UpstreamTransfer, _ buffer: ByteBuffer) {
        let consumed = buffer.readableBytes
        guard let channel = self.channel, let record = self.record, record.transfer === transfer else {
            transfer.consumed(consumed)
            return
        }
        let action = self.state.upstreamBodyPart()
        guard action == .writeBody || action == .countBody else {
            transfer.consumed(consumed)
            return
        }
        if record.rateLimitBody != nil, record.rateLimitBody!.count + consumed <= 4096 {
            record.rateLimitBody!.append(contentsOf: buffer.readableBytesView)
        }
        if record.teeCapture != nil {
            if record.teeCapture!.bytes + consumed <= Self.teeBodyLimit {
                record.teeCapture!.append(buffer)
            } else {
                record.teeCapture = nil
                self.shared.logger.warning("response too large to tee; not extracted", metadata: ["path": "\(record.target.pathWithoutQuery)"])
            }
        }
        var out = buffer
        if record.rewriter != nil {
            // Taken out of the property first, so that `clear` finds it held once (unless the
            // listener still holds it) and keeps its storage.
            out = self.rewriteScratch.take() ?? channel.allocator.buffer(capacity: consumed + 256)
            out.clear(minimumCapacity: consumed + 256)
            record.rewriter!.rewrite(buffer, into: &out)
        }
        record.bytesOut += out.readableBytes
        if record.transformBody != nil {
            if record.transformBody!.count + consumed <= Self.teeBodyLimit {
                record.transformBody!.append(contentsOf: buffer.readableBytesView)
            } else {
                record.transformBody = []
                record.transformOverflow = true
            }
        }
        guard action == .writeBody else {
            // A HEAD (only the length is wanted), or an answer to transform (kept above).
            transfer.consumed(consumed)
            return
        }
        // Flushed with the rest of this batch of events (or with the end of the response).
        channel.write(.body(.byteBuffer(out))) { transfer.consumed(consumed) }
        self.unflushed = true
        if record.rewriter != nil, out.capacity <= Self.rewriteScratchLimit { self.rewriteScratch = out }
    }

    /// The largest buffer kept as ``rewriteScratch`` (below ``OutputQueue/copyLimit``'s
    /// power of two, the buffers the worker listener copies).
    static let rewriteScratchLimit = OutputQueue.copyLimit

    func upstreamDidDeliverEvents(_ transfer: UpstreamTransfer) {
        guard self.unflushed, let channel = self.channel else { return }
        self.unflushed = false
        channel.flush()
    }

    func upstreamDidFinish(_ transfer: UpstreamTransfer, error: UpstreamError?) {
        guard let channel = self.channel, let record = self.record, record.transfer === transfer else { return }
        record.transfer = nil
        if let error {
            // Curl's low-speed check (`spotify.idle_timeout`) and its total timeout also end a
            // transfer whose request body the client has not sent: the client's stall, not an
            // upstream failure.
            let answer: LocalAnswer
            switch error.clientStall {
            case .idle: answer = ProxyConnectionStateMachine.bodyStopped(for: "spotify.idle_timeout")
            case .total: answer = ProxyConnectionStateMachine.bodyTooSlow(for: "spotify.total_timeout")
            case nil:
                self.shared.metrics.recordUpstreamFailure(error.kind)
                answer = LocalAnswer.upstreamFailure(error, method: record.head.method, bodyWhole: !self.state.requestBodyPending)
            }
            let action = self.state.upstreamFinished(failure: answer)
            if case .close = action { self.log(record, note: error.message) }
            return self.run(action, channel: channel)
        }
        if record.heldHead != nil, self.resendReplaced(record, channel: channel) { return }
        let action = self.state.upstreamFinished(failure: nil)
        guard case .writeEnd(let id, let releaseHeldHead, let read) = action else { return self.run(action, channel: channel) }
        if record.rewriter?.holdsBytes == true {
            var tail = channel.allocator.buffer(capacity: 64)
            record.rewriter!.finish(into: &tail)
            record.bytesOut += tail.readableBytes
            if !releaseHeldHead { channel.write(.body(.byteBuffer(tail)), done: nil) }
        }
        if releaseHeldHead, let head = record.heldHead, record.transformBody != nil, let transform = record.plan?.transform {
            record.heldHead = nil
            self.writeTransformed(head, body: record.transformBody ?? [], transform: transform, record: record, channel: channel)
        } else if releaseHeldHead, var head = record.heldHead {
            // 1xx, 204 and 304 carry no length of a body (RFC 9110 §8.6).
            if AnswerRendering.carriesBody(Int(head.status.code)) {
                head.headers.replaceOrAdd(name: "Content-Length", value: String(record.bytesOut))
            }
            record.heldHead = nil
            record.bytesOut = 0
            channel.write(.head(head), done: nil)
        }
        if let body = record.rateLimitBody, let reason = Governor.reason(inBody: body) {
            self.shared.governor.reasonArrived(record.plan?.credential ?? .app, reason: reason)
        }
        if let capture = record.teeCapture, let tee = self.shared.tee {
            // The original Spotify bytes, links untouched; the client's answer does not wait for it.
            tee.submit(capture, key: record.target)
        }
        // Logged as the answer completes, before the client can see it (tests read the log next).
        self.log(record, note: nil)
        self.unflushed = false
        self.writeEnd(for: id, channel: channel)
        if read { channel.read() }
    }

    /// Spotify refused a request it replaced for development-mode apps (``RemovedEndpoint/replacement(method:target:)``)
    /// as it refuses such an app, which this refusal teaches (before, a playlist's `/tracks`
    /// removal or user read, or a library write by type, went as sent): the request goes again,
    /// once, to the replacement, as it would go now the mode is known (a removal's body with its
    /// `tracks` named `items`, a read answered in `/tracks`' shape), so that it works too. False
    /// when it cannot (its body was not all kept, or the edit finds nothing to change): the
    /// refusal is explained.
    private func resendReplaced(_ record: Record, channel: any ClientChannel) -> Bool {
        guard let head = record.heldHead, let held = record.transformBody, !record.transformOverflow, let plan = record.plan,
            let removal = plan.removedEndpoint, removal.when.resendsToReplacement, let replacement = removal.replacement,
            var body = self.state.bodyToResend,
            self.shared.devMode.refusal(of: removal, in: UpstreamAnswer(status: Int(head.status.code), headers: head.headers, body: held)) != nil
        else { return false }
        if let edit = replacement.bodyEdit {
            guard let edited = edit.edited(first: body) else { return false }
            body = edited
        }
        self.replan(record, to: replacement)
        record.plan?.hold = nil
        record.heldHead = nil
        record.transformBody = nil
        record.status = 0
        record.bytesOut = 0
        record.upstreamHeadAt = nil
        self.run(self.state.resendHeld(body: body), channel: channel)
        return true
    }

    /// `record`'s plan made `replacement`'s: its target and transform, and its user's token if it names one.
    private func replan(_ record: Record, to replacement: EndpointReplacement) {
        record.plan?.target = replacement.target
        record.plan?.transform = replacement.transform
        record.plan?.removedEndpoint = replacement.refusal.map { Removal(when: .playlistItems2026, status: 403, message: $0) }
        if case .user(let label)? = replacement.credential {
            record.plan?.credential = .user(label)
            record.plan?.transform = replacement.transform ?? .refusal
            record.tokens = self.shared.users?.tokens(for: label)
        }
    }

    func upstreamWantsRequestBody(_ transfer: UpstreamTransfer) {
        guard let channel = self.channel, self.record?.transfer === transfer else { return }
        self.run(self.state.upstreamWantsBody(), channel: channel)
    }

    // MARK: - Writing

    /// The held answer of a transformed request (``ResponseTransform/apply(status:headers:body:)``):
    /// Spotify's search compacted for `/simple/search`, a playlist's items as its tracks, a
    /// removed endpoint's refusal explained; a body that does not parse goes as Spotify sent it.
    private func writeTransformed(
        _ head: HTTPResponseHead, body: [UInt8], transform: ResponseTransform, record: Record, channel: any ClientChannel
    ) {
        var answer = UpstreamAnswer(status: Int(head.status.code), headers: head.headers, body: body)
        // Too large to transform: a 502, not a truncated answer. Else Spotify's bare refusal of an
        // endpoint it removed: explained (a development-mode one is learned).
        let error: SpotifyError? =
            if record.transformOverflow {
                SpotifyError(status: 502, message: transform.overflowMessage)
            } else if let removal = record.plan?.removedEndpoint, let status = self.shared.devMode.refusal(of: removal, in: answer) {
                SpotifyError(status: status, message: removal.message)
            } else if case .user(let label)? = record.plan?.credential, ScopeRefusal.isInsufficientScope(answer) {
                SpotifyError(
                    status: 403,
                    message: ScopeRefusal.message(
                        user: label, granted: self.shared.users?.grantedScopes(of: label), commands: self.shared.settings.commands,
                        viaKey: record.keyLabel != nil))
            } else {
                nil
            }
        if let error {
            var headers = error.responseHeaders
            // The held head's `Connection` (hop-by-hop, the proxy's own) still holds.
            for connection in head.headers["connection"] { headers.add(name: "Connection", value: connection) }
            answer = UpstreamAnswer(status: error.status, headers: headers, body: Array(error.body.readableBytesView))
        }
        answer.headers.remove(name: "Transfer-Encoding")
        let rendered = self.shared.rendering.render(answer, for: record.head, transform: transform)
        record.status = rendered.status
        record.bytesOut = record.head.method == .HEAD ? 0 : rendered.body.readableBytes
        var headers = rendered.headers
        headers.set(RequestID.header, to: record.requestID)
        channel.write(.head(HTTPResponseHead(version: head.version, status: HTTPResponseStatus(statusCode: rendered.status), headers: headers)), done: nil)
        if record.head.method != .HEAD, rendered.body.readableBytes > 0 {
            channel.write(.body(.byteBuffer(rendered.body)), done: nil)
        }
    }

    /// Writes a whole answer made by the proxy (its endpoints, refusals, errors).
    private func write(
        _ answer: LocalAnswer, framing: ProxyConnectionStateMachine.LocalFraming, for id: ProxyConnectionStateMachine.ExchangeID,
        channel: any ClientChannel
    ) {
        var headers = answer.headers
        if let record = self.record, record.id == id { headers.set(RequestID.header, to: record.requestID) }
        Self.addConnection(keepAlive: framing.keepAlive, version: framing.version, to: &headers)
        let head = HTTPResponseHead(version: framing.version, status: HTTPResponseStatus(statusCode: answer.status), headers: headers)
        channel.write(.head(head), done: nil)
        if !framing.headOnly { channel.write(.body(.byteBuffer(answer.body)), done: nil) }
        if let record = self.record, record.id == id {
            record.status = answer.status
            record.bytesOut = framing.headOnly ? 0 : answer.body.readableBytes
            record.finished = true
            self.log(record, note: answer.note, counted: answer.counted)
        }
        self.writeEnd(for: id, channel: channel)
    }

    private func writeEnd(for id: ProxyConnectionStateMachine.ExchangeID, channel: any ClientChannel) {
        channel.writeAndFlush(.end(nil)) {
            self.run(self.state.endWritten(id), channel: channel)
        }
    }

    /// `Connection` as the client needs it: `close` when the connection ends with this answer;
    /// `keep-alive` when an HTTP/1.0 client's connection is kept (its default is to close).
    private static func addConnection(keepAlive: Bool, version: HTTPVersion, to headers: inout HTTPHeaders) {
        if !keepAlive {
            headers.add(name: "Connection", value: "close")
        } else if version == .http1_0 {
            headers.add(name: "Connection", value: "keep-alive")
        }
    }

    /// Bodies above this are not teed (no Spotify response comes close).
    static let teeBodyLimit = 16 << 20

    /// Counts a finished request in the metrics and logs it.
    private func log(_ record: Record, note: String?, counted: Bool = true) {
        record.finished = true
        let now = NIODeadline.now()
        // What the client asked for (`/simple/search`, not the search it became); an absolute-form
        // target that was routed, as the origin-form target it named; one refused, without any
        // user information.
        let path =
            record.head.uri.isOriginForm
            ? record.head.uri.pathWithoutQuery : record.target.isOriginForm ? record.target.pathWithoutQuery : record.head.uri.loggedPath
        if counted {
            let route = RouteLabel.of(path)
            self.shared.metrics.recordRequest(
                method: record.head.method.rawValue, route: route, status: record.status, key: record.keyLabel,
                nanoseconds: (now - record.started).nanoseconds, memo: &self.instruments)
            if let started = record.upstreamStarted, let head = record.upstreamHeadAt {
                self.shared.metrics.recordUpstream(route: route, nanoseconds: (head - started).nanoseconds, memo: &self.instruments)
            }
            self.shared.activity.record(record.keyLabel, minute: Int(now.uptimeNanoseconds / 60_000_000_000))
        }
        // Built only when it will be written: this runs once per request.
        guard self.shared.logger.logLevel <= .info else { return }
        var line = RequestLogLine(
            method: record.head.method.rawValue, path: String(path), status: record.status, bytes: record.bytesOut,
            milliseconds: (now - record.started).nanoseconds / 1_000_000, client: self.clientAddress, requestID: record.requestID)
        line.key = record.keyLabel
        if let started = record.upstreamStarted, let head = record.upstreamHeadAt {
            line.upstreamMilliseconds = (head - started).nanoseconds / 1_000_000
        }
        line.replayed = record.replayed
        line.error = note
        self.shared.writeRequestLine(line)
    }
}
