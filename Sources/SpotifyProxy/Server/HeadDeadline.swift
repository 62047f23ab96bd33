import NIOCore
import NIOHTTP1

/// The HTTPS listener's deadline for a request head (nginx's `client_header_timeout`; the
/// worker loops keep their own in `WorkerConnection`): a head has `server.idle_timeout` from
/// its first byte to arrive whole, however often its bytes come. NIO's `IdleStateHandler`
/// restarts at every read, so without it a head sent a byte at a time holds a connection for as
/// long as the client likes. The first head's time starts when the connection does, so a TLS
/// handshake sent a byte at a time is held to it too.
///
/// Two handlers share one clock (``handlers(timeout:)``): ``Bytes`` sees every read before the
/// HTTP parser, ``Parts`` sees each head and request end as the parser makes them (before the
/// pipelining handler holds a pipelined request back) and each answer's end on its way out.
/// While the proxy owes an answer, NIO's pipelining handler reads no more of the client, so the
/// head's time starts again once the last answer owed has been written.
/// A late head is reported as NIO's read-idle event, which the connection answers as it answers
/// any idle timeout: it closes unless a request is under way, and is asked again until it does.
final class HeadDeadline {
    private let timeout: TimeAmount
    /// Between requests (or before the first): the next bytes begin a head.
    private var awaitingHead = true
    /// When the head on the clock began.
    private var since: NIODeadline?
    /// Bytes of the head on the clock have come (not only the connection's start).
    private var begun = false
    /// Requests ended and not answered yet (an answer may end before its request does).
    private var owed = 0
    /// The one pending look at the clock (re-armed for the head on the clock when it runs).
    private var check: Scheduled<Void>?
    private weak var context: ChannelHandlerContext?

    private init(timeout: TimeAmount) {
        self.timeout = timeout
    }

    /// The two handlers of one connection, sharing its clock.
    static func handlers(timeout: TimeAmount) -> (bytes: Bytes, parts: Parts) {
        let deadline = HeadDeadline(timeout: timeout)
        return (Bytes(deadline), Parts(deadline))
    }

    fileprivate func added(_ context: ChannelHandlerContext) {
        self.context = context
        self.start(at: context.eventLoop.now)
    }

    fileprivate func removed() {
        self.check?.cancel()
        self.check = nil
        self.context = nil
    }

    /// Whether `bytes`, read between requests, can begin a head: a client may send empty lines
    /// before a request line, which servers ignore (RFC 9112 §2.2, as llhttp and NIO's parser
    /// do), so they start no head's time and make no 408.
    static func mayBeginHead(_ bytes: ByteBuffer) -> Bool {
        bytes.readableBytesView.contains { $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\n") }
    }

    fileprivate func bytesArrived(_ bytes: ByteBuffer) {
        guard self.awaitingHead, let context, Self.mayBeginHead(bytes) else { return }
        self.begun = true
        guard self.since == nil else { return }
        self.start(at: context.eventLoop.now)
    }

    fileprivate func headBegun() {
        guard self.awaitingHead, !self.begun, let context else { return }
        self.begun = true
        if self.since == nil { self.start(at: context.eventLoop.now) }
    }

    fileprivate func headParsed() {
        self.awaitingHead = false
        self.since = nil
        self.begun = false
    }

    fileprivate func requestEnded() {
        self.awaitingHead = true
        self.since = nil
        self.begun = false
        self.owed += 1
    }

    fileprivate func answerEnded() {
        self.owed -= 1
        if self.owed == 0, self.since != nil, let context { self.since = context.eventLoop.now }
    }

    private func start(at now: NIODeadline) {
        self.since = now
        if self.check == nil { self.arm(at: now + self.timeout) }
    }

    private func arm(at deadline: NIODeadline) {
        guard let context else { return }
        self.check = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) { self.look() }
    }

    private func look() {
        self.check = nil
        guard let started = self.since, let context else { return }
        let now = context.eventLoop.now
        // While an answer is owed nothing is read: the head's time has not started.
        let since = self.owed > 0 ? now : started
        self.since = since
        guard now - since >= self.timeout else { return self.arm(at: since + self.timeout) }
        // Asked again (as the worker loops' sweep asks) until the connection closes or the head comes.
        self.arm(at: now + Worker.idleSweepPeriod(for: self.timeout))
        context.fireUserInboundEventTriggered(self.begun ? Late(since: since) as Any : IdleStateHandler.IdleStateEvent.read)
    }

    /// From the request decoder: a head's first bytes were parsed, and it is not whole yet.
    /// ``Bytes`` cannot tell when they came in the read that ended the request before.
    struct HeadBegun {}

    /// A head whose bytes began did not arrive whole in time (logged as a 408 between requests).
    struct Late {
        /// When its time started.
        let since: NIODeadline
    }

    /// Before the HTTP parser (and the target encoder): every read.
    final class Bytes: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        typealias InboundOut = ByteBuffer
        private let deadline: HeadDeadline

        fileprivate init(_ deadline: HeadDeadline) { self.deadline = deadline }

        func handlerAdded(context: ChannelHandlerContext) { self.deadline.added(context) }
        func handlerRemoved(context: ChannelHandlerContext) { self.deadline.removed() }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            self.deadline.bytesArrived(self.unwrapInboundIn(data))
            context.fireChannelRead(data)
        }
    }

    /// After the HTTP parser, before the pipelining handler: heads and request ends as parsed,
    /// answers' ends as written.
    final class Parts: ChannelDuplexHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias InboundOut = HTTPServerRequestPart
        typealias OutboundIn = HTTPServerResponsePart
        typealias OutboundOut = HTTPServerResponsePart
        private let deadline: HeadDeadline

        fileprivate init(_ deadline: HeadDeadline) { self.deadline = deadline }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch self.unwrapInboundIn(data) {
            case .head: self.deadline.headParsed()
            case .end: self.deadline.requestEnded()
            case .body: break
            }
            context.fireChannelRead(data)
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if event is HeadBegun { return self.deadline.headBegun() }
            context.fireUserInboundEventTriggered(event)
        }

        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            if case .end = self.unwrapOutboundIn(data) { self.deadline.answerEnded() }
            context.write(data, promise: promise)
        }
    }
}
