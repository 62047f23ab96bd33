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
    /// A request that came while the client was not taking its answers (the channel unwritable),
    /// and what followed it: handed on once the channel is writable again. NIO's pipelining
    /// handler starts the next request once an answer's end is written into the pipeline, so a
    /// client that pipelines and does not read would otherwise have every answer held in memory.
    private var held: [HTTPServerRequestPart] = []
    /// A read asked for while parts are held: issued once they have been handed on.
    private var readHeld = false

    init(context: ProxyContext) {
        self.connection = ProxyConnection(context: context)
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
        // A new request waits while the client is not taking its answers; its parts wait with it.
        if !self.held.isEmpty || (isHead && !context.channel.isWritable) {
            self.held.append(part)
        } else {
            self.connection.received(part)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable, !self.held.isEmpty {
            let parts = self.held
            self.held = []
            for part in parts where self.context != nil { self.connection.received(part) }
            if self.readHeld {
                self.readHeld = false
                context.read()
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func read(context: ChannelHandlerContext) {
        self.connection.readRequested()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.connection.inactive()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent, self.connection.idleTimedOut() { return }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        self.connection.failed(error)
    }

    // MARK: - ClientChannel

    var eventLoop: any EventLoop { self.context!.eventLoop }
    var allocator: ByteBufferAllocator { self.context!.channel.allocator }
    var isActive: Bool { self.context?.channel.isActive ?? false }

    func write(_ part: HTTPServerResponsePart, done: (() -> Void)?) {
        guard let context = self.context else { done?(); return }
        guard let done else { return context.write(self.wrapOutboundOut(part), promise: nil) }
        let promise = context.eventLoop.makePromise(of: Void.self)
        promise.futureResult.assumeIsolated().whenComplete { _ in done() }
        context.write(self.wrapOutboundOut(part), promise: promise)
    }

    func flush() { self.context?.flush() }

    func read() {
        guard self.held.isEmpty else {
            self.readHeld = true
            return
        }
        self.context?.read()
    }
    func close() { self.context?.close(promise: nil) }
}
