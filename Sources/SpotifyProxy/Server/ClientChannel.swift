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
    /// Queues a part of the response; `done` runs once it is written, or once it never will be
    /// (the connection closed). A closure, not a promise: a forwarded answer's body and end each
    /// wait on one, and a promise costs a future, its callback list and their allocations.
    func write(_ part: HTTPServerResponsePart, done: (() -> Void)?)
    /// Writes out what is queued.
    func flush()
    /// Reads the client once more (parts arrive through ``ProxyConnection/received(_:)``).
    func read()
    func close()
}

extension ClientChannel {
    /// Queues `part` and writes out everything queued; `done` as for ``write(_:done:)``.
    func writeAndFlush(_ part: HTTPServerResponsePart, done: (() -> Void)? = nil) {
        self.write(part, done: done)
        self.flush()
    }
}
