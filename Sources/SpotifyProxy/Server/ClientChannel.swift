import NIOCore
import NIOHTTP1

/// What a ``ProxyConnection`` needs of the connection under it: write the response's parts,
/// read the client when asked, close. Two transports provide it: a worker loop's own connection
/// (``WorkerConnection``, plain HTTP) and a NIO channel (``ProxyHandler``, HTTPS).
/// Every call happens on ``eventLoop``.
protocol ClientChannel: AnyObject {
    var eventLoop: any EventLoop { get }
    var allocator: ByteBufferAllocator { get }
    /// False once the connection is closed.
    var isActive: Bool { get }
    /// Queues a part of the response; `promise` completes once it is written (or fails when it never will be).
    func write(_ part: HTTPServerResponsePart, promise: EventLoopPromise<Void>?)
    /// Writes out what is queued.
    func flush()
    /// Reads the client once more (parts arrive through ``ProxyConnection/received(_:)``).
    func read()
    func close()
}

extension ClientChannel {
    /// Queues `part`, writes out everything queued; the future completes once it is written.
    @discardableResult
    func writeAndFlush(_ part: HTTPServerResponsePart) -> EventLoopFuture<Void> {
        let promise = self.eventLoop.makePromise(of: Void.self)
        self.write(part, promise: promise)
        self.flush()
        return promise.futureResult
    }
}
