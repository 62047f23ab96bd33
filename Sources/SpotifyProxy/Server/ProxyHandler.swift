import Foundation
import Logging
import NIOCore
import NIOHTTP1

/// One client connection. Requests arrive one at a time (`HTTPServerPipelineHandler` holds
/// pipelined ones back and answers in order); each becomes an ``Exchange`` with one upstream
/// transfer, streamed both ways with back-pressure: the client is not read while the upstream
/// has enough request body buffered, and curl is paused while the client is slow to take the answer.
final class ProxyHandler: ChannelDuplexHandler, UpstreamTransferDelegate {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private final class Exchange {
        let head: HTTPRequestHead
        let uri: String
        let started: NIODeadline
        var keepAlive: Bool
        var body: UpstreamRequest.Body = .none
        var bodyBytes = 0
        var bodyEnded = false
        /// The whole request body while it is small enough to replay after a 401.
        var retained: ByteBuffer? = ByteBuffer()
        /// Body received before the transfer existed (while waiting for a token).
        var pending = ByteBuffer()
        var token: String?
        var transfer: UpstreamTransfer?
        var replayed = false
        var responseStarted = false
        var rewriter: LinkRewriter?
        var status = 0
        var bytesOut = 0
        var upstreamStarted: NIODeadline?
        var upstreamHeadAt: NIODeadline?
        /// The request was answered before its body ended: ignore the rest of it.
        var answered = false
        /// The tee's copy of the upstream body as received (before rewriting); nil when not teed.
        var teeCapture: TeeCapture?
        /// A HEAD sent upstream as GET, so that the rewritten body's length can be announced.
        var headViaGET = false
        /// For `headViaGET`: the response head, written with its `Content-Length` once the body is counted.
        var deferredHead: HTTPResponseHead?

        init(head: HTTPRequestHead, uri: String) {
            self.head = head
            self.uri = uri
            self.started = .now()
            self.keepAlive = head.isKeepAlive
        }
    }

    private let shared: ProxyContext
    private var context: ChannelHandlerContext?
    private var exchange: Exchange?
    private var readsHeld = false
    private var readPending = false
    /// Response bytes written but not flushed yet.
    private var unflushed = false

    private let ownAuthorities: Set<String>

    init(context: ProxyContext) {
        self.shared = context
        self.ownAuthorities = context.configuration.ownAuthorities
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    // MARK: - Client side

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch self.unwrapInboundIn(data) {
        case .head(let head): self.receivedHead(head, context: context)
        case .body(let buffer): self.receivedBody(buffer, context: context)
        case .end: self.receivedEnd(context: context)
        }
    }

    func read(context: ChannelHandlerContext) {
        if self.readsHeld {
            self.readPending = true
        } else {
            context.read()
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let exchange = self.exchange, let transfer = exchange.transfer {
            exchange.transfer = nil
            transfer.cancel(reason: "client closed the connection")
        }
        self.exchange = nil
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent, self.exchange == nil {
            // Idle keep-alive or half-sent request (slowloris): free the connection.
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parserError = error as? HTTPParserError, parserError != .invalidEOFState, context.channel.isActive else {
            // The client left mid-request (or the socket failed): nobody to answer.
            self.exchange?.transfer?.cancel(reason: "connection failed")
            context.close(promise: nil)
            return
        }
        if let exchange = self.exchange, exchange.responseStarted, !exchange.answered {
            // Part of an answer is out: the rest of it goes, then the connection closes.
            exchange.transfer?.cancel(reason: "malformed request")
            context.flush()
            context.close(promise: nil)
            return
        }
        let answer: SpotifyError
        switch parserError {
        case .headerOverflow:
            answer = SpotifyError(status: 431, message: "request headers too large")
        case .invalidMethod:
            answer = SpotifyError(status: 400, message: "malformed request: invalid method")
        case .invalidVersion:
            answer = SpotifyError(status: 400, message: "malformed request: unsupported HTTP version")
        default:
            answer = SpotifyError(status: 400, message: "malformed request: \(parserError)")
        }
        // A request still waiting for its answer is dropped; one already answered (a malformed
        // request pipelined behind it) keeps its answer, and this one is written after it.
        if let exchange = self.exchange, !exchange.answered { exchange.transfer?.cancel(reason: "malformed request") }
        // Nothing usable was parsed: the answer is logged and counted under a placeholder
        // request line, and the connection closes after it.
        let exchange = Exchange(head: HTTPRequestHead(version: .http1_1, method: .RAW(value: "-"), uri: "-"), uri: "-")
        exchange.keepAlive = false
        self.exchange = exchange
        self.answer(answer, context: context)
    }

    private func receivedHead(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let config = self.shared.configuration
        let route = RequestRouter.route(method: head.method, uri: head.uri, ownAuthorities: self.ownAuthorities)
        let uri: String
        switch route {
        case .forward(let target): uri = target
        case .healthz, .readyz, .metrics, .reject: uri = head.uri
        }
        let exchange = Exchange(head: head, uri: uri)
        self.exchange = exchange
        // A refused CONNECT must not leave a half-open tunnel behind (and NIO sends its answer bodiless).
        if head.method == .CONNECT { exchange.keepAlive = false }

        let headerBytes = head.uri.utf8.count + head.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
        if headerBytes > config.maxHeaderBytes {
            return self.answer(
                SpotifyError(status: 431, message: "request headers too large: \(headerBytes) bytes, the limit is \(config.maxHeaderBytes) (server.max_header_bytes)"),
                context: context)
        }
        switch route {
        case .healthz:
            return self.answer(SpotifyOK.health(tee: self.shared.tee?.stats), context: context)
        case .readyz:
            if let problem = self.shared.tokens.readinessProblem {
                return self.answer(SpotifyError(status: 503, message: "not ready: \(problem)", headers: [("Retry-After", "1")]), context: context)
            }
            return self.answer(SpotifyOK.ready, context: context)
        case .metrics:
            let text = self.shared.metrics.render(tee: self.shared.tee?.stats, tokenReady: self.shared.tokens.readinessProblem == nil)
            let headers = HTTPHeaders([
                ("Content-Type", "text/plain; version=0.0.4; charset=utf-8"), ("Content-Length", String(text.count)), ("Cache-Control", "no-store"),
            ])
            return self.respond(status: 200, headers: headers, body: ByteBuffer(bytes: text), logging: (false, nil), context: context)
        case .reject(let error):
            return self.answer(error, context: context)
        case .forward:
            break
        }

        let lengths = head.headers["content-length"]
        let chunked = head.headers["transfer-encoding"].contains { $0.lowercased().contains("chunked") }
        if lengths.count > 1 && Set(lengths).count > 1 || (chunked && !lengths.isEmpty) {
            // Conflicting framing is how requests are smuggled: never forward it.
            return self.answer(SpotifyError(status: 400, message: "conflicting Content-Length / Transfer-Encoding headers"), context: context)
        }
        if chunked {
            exchange.body = .streamed
        } else if let text = lengths.first {
            guard let length = Int64(text), length >= 0 else {
                return self.answer(SpotifyError(status: 400, message: "invalid Content-Length"), context: context)
            }
            guard length <= config.maxBodyBytes else {
                return self.answer(
                    SpotifyError(status: 413, message: "request body too large: \(length) bytes, the limit is \(config.maxBodyBytes) (server.max_body_bytes)"),
                    context: context)
            }
            exchange.body = .known(length)
        }
        if exchange.body != .none,
            head.headers["expect"].contains(where: { $0.lowercased() == "100-continue" })
        {
            context.writeAndFlush(self.wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
        }
        // Rewriting changes a JSON body's length, which a HEAD answer cannot know without the body.
        exchange.headViaGET = head.method == .HEAD && config.rewriteLinks
        self.withToken(for: exchange, context: context)
    }

    /// Starts the transfer as soon as a token is at hand; answers 503 if none comes in time.
    private func withToken(for exchange: Exchange, context: ChannelHandlerContext) {
        switch self.shared.tokens.token(on: context.eventLoop) {
        case .ready(let token):
            self.startTransfer(exchange, token: token, context: context)
        case .unavailable(let unavailable):
            self.answer(Self.noToken(unavailable), context: context)
        case .wait(let future):
            future.assumeIsolated().whenComplete { result in
                guard self.exchange === exchange, let context = self.context else { return }
                switch result {
                case .success(let token):
                    self.startTransfer(exchange, token: token, context: context)
                case .failure(let error):
                    let unavailable = error as? TokenUnavailable ?? TokenUnavailable(reason: "\(error)", retryAfterSeconds: 1)
                    self.answer(Self.noToken(unavailable), context: context)
                }
            }
        }
    }

    private static func noToken(_ unavailable: TokenUnavailable) -> SpotifyError {
        SpotifyError(
            status: 503,
            message: "no Spotify access token available: \(unavailable.reason); retry later",
            headers: [("Retry-After", String(unavailable.retryAfterSeconds))])
    }

    private func receivedBody(_ buffer: ByteBuffer, context: ChannelHandlerContext) {
        guard let exchange = self.exchange, !exchange.answered else { return }
        exchange.bodyBytes += buffer.readableBytes
        if exchange.bodyBytes > self.shared.configuration.maxBodyBytes {
            exchange.transfer?.cancel(reason: "request body too large")
            exchange.transfer = nil
            if exchange.responseStarted {
                context.close(promise: nil)
            } else {
                exchange.keepAlive = false
                self.answer(
                    SpotifyError(status: 413, message: "request body too large: the limit is \(self.shared.configuration.maxBodyBytes) bytes (server.max_body_bytes)"),
                    context: context)
            }
            return
        }
        if var retained = exchange.retained {
            exchange.retained = nil
            if retained.readableBytes + buffer.readableBytes <= self.shared.configuration.replayBodyLimit {
                var copy = buffer
                retained.writeBuffer(&copy)
                exchange.retained = retained
            }
        }
        if let transfer = exchange.transfer {
            if !transfer.appendRequestBody(buffer) { self.readsHeld = true }
        } else {
            var copy = buffer
            exchange.pending.writeBuffer(&copy)
            if exchange.pending.readableBytes >= UpstreamTransfer.requestHighWater { self.readsHeld = true }
        }
    }

    private func receivedEnd(context: ChannelHandlerContext) {
        guard let exchange = self.exchange else { return }
        exchange.bodyEnded = true
        if exchange.answered {
            self.finishExchange(exchange, context: context)
            return
        }
        exchange.transfer?.endRequestBody()
    }

    private func resumeReads(context: ChannelHandlerContext) {
        guard self.readsHeld else { return }
        self.readsHeld = false
        if self.readPending {
            self.readPending = false
            context.read()
        }
    }

    // MARK: - Upstream side

    private func startTransfer(_ exchange: Exchange, token: String, context: ChannelHandlerContext) {
        let config = self.shared.configuration
        exchange.token = token
        exchange.upstreamStarted = .now()
        let request = UpstreamRequest(
            method: exchange.headViaGET ? "GET" : exchange.head.method.rawValue,
            url: config.apiURL + exchange.uri,
            headers: HeaderPolicy.upstreamHeaders(from: exchange.head.headers, token: token),
            body: exchange.body)
        let transfer = self.shared.upstream.startTransfer(request, on: context.eventLoop, delegate: self)
        exchange.transfer = transfer
        if exchange.pending.readableBytes > 0 {
            let pending = exchange.pending
            exchange.pending = ByteBuffer()
            _ = transfer.appendRequestBody(pending)
        }
        if exchange.bodyEnded || exchange.body == .none { transfer.endRequestBody() }
        self.resumeReads(context: context)
    }

    func upstreamDidReceiveHead(_ transfer: UpstreamTransfer, status: Int, headers: [(name: String, value: String)]) {
        guard let context = self.context, let exchange = self.exchange, exchange.transfer === transfer else { return }
        exchange.upstreamHeadAt = .now()
        if status == 401, self.replay(exchange, context: context) { return }
        let (responseHeaders, framing) = HeaderPolicy.clientHeaders(from: headers, rewriteLinks: self.shared.configuration.rewriteLinks)
        if let tee = self.shared.tee, framing.isJSON, (200..<300).contains(status), exchange.head.method == .GET {
            exchange.teeCapture = tee.capture(key: exchange.uri)
        }
        if framing.rewrite {
            exchange.rewriter = LinkRewriter(bases: self.shared.linkBases, proxyBase: self.proxyBase(for: exchange.head))
        }
        var head = HTTPResponseHead(version: exchange.head.version, status: HTTPResponseStatus(statusCode: status), headers: responseHeaders)
        // HTTP/1.0 has no chunked encoding: a body of unknown length ends when the connection does.
        if exchange.head.version.minor == 0, !head.headers.contains(name: "content-length") { exchange.keepAlive = false }
        if !exchange.keepAlive { head.headers.replaceOrAdd(name: "Connection", value: "close") }
        exchange.status = status
        if exchange.headViaGET {
            exchange.deferredHead = head
            return
        }
        exchange.responseStarted = true
        context.write(self.wrapOutboundOut(.head(head)), promise: nil)
    }

    func upstreamDidReceiveBody(_ transfer: UpstreamTransfer, _ buffer: ByteBuffer) {
        let consumed = buffer.readableBytes
        guard let context = self.context, let exchange = self.exchange, exchange.transfer === transfer,
            exchange.responseStarted || exchange.deferredHead != nil
        else {
            transfer.consumed(consumed)
            return
        }
        if exchange.teeCapture != nil {
            if exchange.teeCapture!.bytes + consumed <= Self.teeBodyLimit {
                exchange.teeCapture!.append(buffer)
            } else {
                exchange.teeCapture = nil
                self.shared.logger.warning("response too large to tee; not extracted", metadata: ["path": "\(Self.pathOnly(exchange.uri))"])
            }
        }
        var out = buffer
        if exchange.rewriter != nil {
            out = context.channel.allocator.buffer(capacity: consumed + 256)
            exchange.rewriter!.rewrite(buffer, into: &out)
        }
        exchange.bytesOut += out.readableBytes
        if exchange.deferredHead != nil {
            // A HEAD: only the length is wanted.
            transfer.consumed(consumed)
            return
        }
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.assumeIsolated().whenComplete { _ in transfer.consumed(consumed) }
        // Flushed with the rest of this batch of events (or with the end of the response).
        context.write(self.wrapOutboundOut(.body(.byteBuffer(out))), promise: promise)
        self.unflushed = true
    }

    func upstreamDidDeliverEvents(_ transfer: UpstreamTransfer) {
        guard self.unflushed, let context = self.context else { return }
        self.unflushed = false
        context.flush()
    }

    func upstreamDidFinish(_ transfer: UpstreamTransfer, error: UpstreamError?) {
        guard let context = self.context, let exchange = self.exchange, exchange.transfer === transfer else { return }
        exchange.transfer = nil
        if let error {
            self.shared.metrics.recordUpstreamFailure(error.kind)
            guard !exchange.responseStarted else {
                // Part of the answer is out: only a broken connection tells the client.
                self.log(exchange, note: error.message)
                context.close(promise: nil)
                return
            }
            exchange.keepAlive = exchange.keepAlive && exchange.bodyEnded
            let message = error.kind == .timeout
                ? "the Spotify API did not answer in time (\(error.message)); retry later"
                : "the proxy could not reach the Spotify API (\(error.message)); retry later"
            self.answer(SpotifyError(status: error.status, message: message), context: context)
            return
        }
        if var rewriter = exchange.rewriter {
            var tail = context.channel.allocator.buffer(capacity: 0)
            rewriter.finish(into: &tail)
            exchange.rewriter = rewriter
            if tail.readableBytes > 0 {
                exchange.bytesOut += tail.readableBytes
                if exchange.deferredHead == nil { context.write(self.wrapOutboundOut(.body(.byteBuffer(tail))), promise: nil) }
            }
        }
        if var head = exchange.deferredHead {
            // 1xx, 204 and 304 carry no length of a body (RFC 9110 §8.6).
            if head.status.code >= 200, head.status.code != 204, head.status.code != 304 {
                head.headers.replaceOrAdd(name: "Content-Length", value: String(exchange.bytesOut))
            }
            exchange.deferredHead = nil
            exchange.bytesOut = 0
            exchange.responseStarted = true
            context.write(self.wrapOutboundOut(.head(head)), promise: nil)
        }
        if let capture = exchange.teeCapture, let tee = self.shared.tee {
            // The original Spotify bytes, links untouched; the client's answer does not wait for it.
            tee.submit(capture, key: exchange.uri)
        }
        exchange.answered = true
        // Logged as the answer completes, before the client can see it (tests read the log next).
        self.log(exchange, note: nil)
        self.unflushed = false
        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if exchange.bodyEnded { self.finishExchange(exchange, context: context) }
        }
    }

    func upstreamWantsRequestBody(_ transfer: UpstreamTransfer) {
        guard let context = self.context, self.exchange?.transfer === transfer else { return }
        self.resumeReads(context: context)
    }

    /// A 401 for the token that is still current means it was revoked early: drop it, get a
    /// fresh one and send the request again, once, if its body is still at hand. The token's
    /// state machine decides (at most one forced refresh per interval, so an endpoint that
    /// refuses every app token cannot make a token request per call); the replay's own 401
    /// goes to the client.
    private func replay(_ exchange: Exchange, context: ChannelHandlerContext) -> Bool {
        guard !exchange.replayed, let token = exchange.token, let transfer = exchange.transfer else { return false }
        let verdict = self.shared.tokens.unauthorized(token: token)
        let replayable = exchange.body == .none || (exchange.bodyEnded && exchange.retained != nil)
        guard verdict != .passThrough, replayable else { return false }
        exchange.replayed = true
        exchange.transfer = nil
        transfer.cancel(reason: "replaying after 401")
        exchange.pending = exchange.retained ?? ByteBuffer()
        self.shared.logger.info(
            verdict == .refreshAndReplay
                ? "upstream answered 401 for the current token; refreshing it and replaying once"
                : "upstream answered 401 for an older token; replaying once with the current one",
            metadata: ["path": "\(Self.pathOnly(exchange.uri))"])
        self.withToken(for: exchange, context: context)
        return true
    }

    // MARK: - Answers made by the proxy

    private func answer(_ error: SpotifyError, context: ChannelHandlerContext) {
        self.respond(
            status: error.status, headers: error.responseHeaders, body: error.body,
            logging: (true, error.status >= 500 ? error.message : nil), context: context)
    }

    private func answer(_ ok: SpotifyOK, context: ChannelHandlerContext) {
        let headers = HTTPHeaders([("Content-Type", "application/json"), ("Content-Length", String(ok.body.utf8.count)), ("Cache-Control", "no-store")])
        self.respond(status: 200, headers: headers, body: ByteBuffer(string: ok.body), logging: (false, nil), context: context)
    }

    /// Writes a whole answer made by the proxy (health, readiness, errors) for the current exchange.
    private func respond(
        status: Int, headers: HTTPHeaders, body: ByteBuffer, logging: (enabled: Bool, note: String?), context: ChannelHandlerContext
    ) {
        guard let exchange = self.exchange else { return }
        // Keep the connection only when the rest of the request can be read and discarded cheaply.
        if !exchange.bodyEnded && exchange.body != .none { exchange.keepAlive = false }
        exchange.status = status
        exchange.responseStarted = true
        exchange.answered = true
        let isHead = exchange.head.method == .HEAD
        exchange.bytesOut = isHead ? 0 : body.readableBytes
        var headers = headers
        if !exchange.keepAlive { headers.add(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: exchange.head.version, status: HTTPResponseStatus(statusCode: status), headers: headers)
        context.write(self.wrapOutboundOut(.head(head)), promise: nil)
        if !isHead { context.write(self.wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        if logging.enabled { self.log(exchange, note: logging.note) }
        context.writeAndFlush(self.wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            if exchange.bodyEnded || exchange.body == .none || !exchange.keepAlive {
                self.finishExchange(exchange, context: context)
            }
        }
    }

    private func finishExchange(_ exchange: Exchange, context: ChannelHandlerContext) {
        guard self.exchange === exchange else { return }
        self.exchange = nil
        self.resumeReads(context: context)
        if !exchange.keepAlive { context.close(promise: nil) }
    }

    private func proxyBase(for head: HTTPRequestHead) -> String {
        if let url = self.shared.configuration.publicURL { return url }
        if let host = head.headers.first(name: "host"), Self.isPlainAuthority(host) { return "http://\(host)" }
        return "http://\(self.shared.configuration.listenDescription)"
    }

    /// Only host[:port] characters, so a hostile `Host` cannot inject anything into a body.
    static func isPlainAuthority(_ host: String) -> Bool {
        !host.isEmpty && host.utf8.count < 256
            && host.utf8.allSatisfy { byte in
                (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                    || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                    || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ":")
                    || byte == UInt8(ascii: "[") || byte == UInt8(ascii: "]")
            }
    }

    /// Bodies above this are not teed (no Spotify response comes close).
    static let teeBodyLimit = 16 << 20

    static func pathOnly(_ uri: String) -> Substring { uri.prefix { $0 != "?" } }

    /// Counts a finished request in the metrics and logs it.
    private func log(_ exchange: Exchange, note: String?) {
        let now = NIODeadline.now()
        self.shared.metrics.recordRequest(status: exchange.status, nanoseconds: (now - exchange.started).nanoseconds)
        // Built only when it will be written: this runs once per request.
        guard self.shared.logger.logLevel <= .info else { return }
        var metadata: Logger.Metadata = [
            "method": "\(exchange.head.method.rawValue)",
            "path": "\(Self.pathOnly(exchange.uri))",
            "status": "\(exchange.status)",
            "bytes": "\(exchange.bytesOut)",
            "ms": "\((now - exchange.started).nanoseconds / 1_000_000)",
        ]
        if let started = exchange.upstreamStarted, let head = exchange.upstreamHeadAt {
            metadata["upstream_ms"] = "\((head - started).nanoseconds / 1_000_000)"
        }
        if exchange.replayed { metadata["replayed"] = "true" }
        if let note { metadata["error"] = "\(note)" }
        self.shared.logger.info("request", metadata: metadata)
    }
}

/// The proxy's own successful answers.
struct SpotifyOK {
    var body: String
    /// `{"status":"ok"}`, plus the tee's counters when a sink is configured.
    static func health(tee: TeeWriter.Stats?) -> SpotifyOK {
        guard let tee else { return SpotifyOK(body: #"{"status":"ok"}"#) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let stats = (try? encoder.encode(tee)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return SpotifyOK(body: #"{"status":"ok","tee":\#(stats)}"#)
    }
    static let ready = SpotifyOK(body: #"{"status":"ready"}"#)
}
