import NIOCore
import NIOHTTP1

/// The NIO transport of a ``ProxyConnection`` (the HTTPS listener): channel events go to the
/// connection, and the connection writes, reads and closes through this handler's context.
final class ProxyHandler: ChannelDuplexHandler, ClientChannel {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let connection: ProxyConnection
    private var context: ChannelHandlerContext?
    /// What came from the pipeline in order: a request's part, or an error.
    private enum Inbound {
        case part(HTTPServerRequestPart)
        case error(any Error)
    }

    /// A request that came while the client was not taking its answers (the channel unwritable)
    /// or while an answer was being written, and everything after it, in order: handed on once
    /// the channel is writable (and the write is over). NIO's pipelining handler starts the next
    /// request once an answer's end is written into the pipeline, so a client that pipelines and
    /// does not read would otherwise have every answer held in memory, and answers written at
    /// once (the cache's, the proxy's own) would start the next request inside the write.
    private var held: [Inbound] = []
    /// Writes under way (a write's completion may write again inside it).
    private var writes = 0
    /// A hand-on of held parts is scheduled for after the current write.
    private var handOnScheduled = false
    /// Held parts are being handed on (an answer's flush inside it may ask again: the loop
    /// already under way takes what is held).
    private var handingOn = false
    /// A read asked for while parts are held: asked again once they have been handed on.
    private var readHeld = false
    /// Writes flushed and not completed yet (not taken by the socket; promises complete in
    /// order, so the first completions are theirs). With some left and none completing for
    /// `server.idle_timeout`, the client takes nothing of its answer: it is closed (nginx's
    /// `send_timeout`; the worker loops do the same). Writes not flushed yet (a head waiting for
    /// its body from a slow upstream) do not count.
    private var unwritten = 0
    private var flushedUnwritten = 0

    /// Why the request decoder stopped, in words, for the 400 that answers it.
    private let parseFailure: RequestDecoder.Reason

    init(context: ProxyContext, parseFailure: RequestDecoder.Reason) {
        self.connection = ProxyConnection(context: context)
        self.parseFailure = parseFailure
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        self.connection.attached(to: self, remote: context.channel.remoteAddress)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.connection.detached()
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = self.unwrapInboundIn(data)
        var isHead = false
        if case .head = part { isHead = true }
        guard self.held.isEmpty, !isHead || (context.channel.isWritable && self.writes == 0) else {
            self.held.append(.part(part))
            if self.writes > 0 { self.scheduleHandOn(context) }
            return
        }
        self.connection.received(part)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { self.handOn(context) }
        context.fireChannelWritabilityChanged()
    }

    /// Hands held parts on in order, until a head finds the channel unwritable again (or a
    /// write under way); then the read held meanwhile is asked for again.
    private func handOn(_ context: ChannelHandlerContext) {
        guard !self.handingOn else { return }
        self.handingOn = true
        defer { self.handingOn = false }
        while let first = self.held.first, self.context != nil {
            if case .part(.head) = first, !context.channel.isWritable || self.writes > 0 {
                if self.writes > 0 { self.scheduleHandOn(context) }
                return
            }
            self.held.removeFirst()
            switch first {
            case .part(let part): self.connection.received(part)
            case .error(let error): self.connection.failed(error, reason: self.parseFailure.text)
            }
        }
        if self.held.isEmpty, self.readHeld {
            self.readHeld = false
            self.connection.readRequested()
        }
    }

    /// After the write under way (and its flush): a head that came inside it goes on then.
    private func scheduleHandOn(_ context: ChannelHandlerContext) {
        guard !self.handOnScheduled else { return }
        self.handOnScheduled = true
        context.eventLoop.assumeIsolated().execute {
            self.handOnScheduled = false
            guard let context = self.context, context.channel.isWritable else { return }
            self.handOn(context)
        }
    }

    func read(context: ChannelHandlerContext) {
        self.connection.readRequested()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // Held requests were never started: nobody is left to answer them.
        self.held.removeAll()
        self.readHeld = false
        self.connection.inactive()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let late = event as? HeadDeadline.Late, self.connection.headTimedOut(since: late.since) { return }
        if event is GraceEnded { return self.connection.graceEnded() }
        switch event as? IdleStateHandler.IdleStateEvent {
        case .read? where self.connection.idleTimedOut():
            return
        case .write? where self.flushedUnwritten > 0:
            self.connection.stoppedReading()
            return context.close(promise: nil)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // After the held parts it followed, not before them.
        guard self.held.isEmpty else { return self.held.append(.error(error)) }
        self.connection.failed(error, reason: self.parseFailure.text)
    }

    // MARK: - ClientChannel

    var eventLoop: any EventLoop { self.context!.eventLoop }
    var allocator: ByteBufferAllocator { self.context!.channel.allocator }
    var isActive: Bool { self.context?.channel.isActive ?? false }

    func write(_ part: HTTPServerResponsePart, done: (() -> Void)?) {
        guard let context = self.context else { done?(); return }
        self.writes += 1
        defer { self.writes -= 1 }
        let promise = context.eventLoop.makePromise(of: Void.self)
        self.unwritten += 1
        promise.futureResult.assumeIsolated().whenComplete { _ in
            self.unwritten -= 1
            self.flushedUnwritten = max(0, self.flushedUnwritten - 1)
            done?()
        }
        context.write(self.wrapOutboundOut(part), promise: promise)
    }

    func flush() {
        self.flushedUnwritten = self.unwritten
        self.context?.flush()
    }

    func read() {
        guard self.held.isEmpty else {
            self.readHeld = true
            return
        }
        self.context?.read()
    }
    func close() { self.context?.close(promise: nil) }
}
