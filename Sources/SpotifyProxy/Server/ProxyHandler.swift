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
        self.connection.received(self.unwrapInboundIn(data))
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
    func read() { self.context?.read() }
    func close() { self.context?.close(promise: nil) }
}
