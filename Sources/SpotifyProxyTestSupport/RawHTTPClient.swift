import NIOCore
import NIOHTTP1
import NIOPosix

/// A deliberately dumb HTTP/1.1 client for tests: it writes exactly the bytes it is given (so
/// tests can pipeline, smuggle or malform) and parses what comes back.
public final class RawHTTPClient: Sendable {
    public struct Response: Sendable {
        public var status: Int
        public var headers: HTTPHeaders
        public var body: [UInt8]
        public var text: String { String(decoding: self.body, as: UTF8.self) }
    }

    public struct ConnectionClosed: Error {}

    private let channel: any Channel
    private let writer: RawWriter
    private let responsesIterator: IteratorBox

    /// Sits in front of the response decoder (which would insist on typed request parts) so that
    /// raw bytes go to the socket untouched.
    private final class RawWriter: ChannelOutboundHandler, @unchecked Sendable {
        typealias OutboundIn = ByteBuffer
        var context: ChannelHandlerContext?
        func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    }

    private final class IteratorBox: @unchecked Sendable {
        // Used by one test task at a time.
        var iterator: AsyncStream<Result<Response, any Error>>.AsyncIterator
        init(_ iterator: AsyncStream<Result<Response, any Error>>.AsyncIterator) { self.iterator = iterator }
    }

    /// The response decoder learns of each request from a typed head written past it; this
    /// handler drops those heads before they reach the socket (the raw bytes already went).
    private final class HeadSwallower: ChannelOutboundHandler {
        typealias OutboundIn = HTTPClientRequestPart
        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            promise?.succeed(())
        }
    }

    /// Collects response parts into whole responses.
    private final class Collector: ChannelInboundHandler {
        typealias InboundIn = HTTPClientResponsePart
        let continuation: AsyncStream<Result<Response, any Error>>.Continuation
        var current: Response?

        init(continuation: AsyncStream<Result<Response, any Error>>.Continuation) { self.continuation = continuation }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch self.unwrapInboundIn(data) {
            case .head(let head):
                self.current = Response(status: Int(head.status.code), headers: head.headers, body: [])
            case .body(let buffer):
                self.current?.body += Array(buffer.readableBytesView)
            case .end:
                if let response = self.current { self.continuation.yield(.success(response)) }
                self.current = nil
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            self.continuation.yield(.failure(error))
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.continuation.yield(.failure(ConnectionClosed()))
            self.continuation.finish()
        }
    }

    public static func connect(port: Int, host: String = "127.0.0.1", group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> RawHTTPClient {
        let (stream, continuation) = AsyncStream.makeStream(of: Result<Response, any Error>.self)
        let writer = RawWriter()
        let channel = try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(writer)
                    try channel.pipeline.syncOperations.addHandler(HeadSwallower())
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPResponseDecoder(leftOverBytesStrategy: .forwardBytes)))
                    try channel.pipeline.syncOperations.addHandler(Collector(continuation: continuation))
                }
            }
            .connect(host: host, port: port).get()
        return RawHTTPClient(channel: channel, writer: writer, iterator: stream.makeAsyncIterator())
    }

    private init(channel: any Channel, writer: RawWriter, iterator: AsyncStream<Result<Response, any Error>>.AsyncIterator) {
        self.channel = channel
        self.writer = writer
        self.responsesIterator = IteratorBox(iterator)
    }

    /// Writes `text` as it is; `requests` is how many responses it should produce (pipelining).
    public func send(_ text: String, requests: Int = 1, method: HTTPMethod = .GET) async throws {
        try await self.send(ByteBuffer(string: text), requests: requests, method: method)
    }

    public func send(_ bytes: ByteBuffer, requests: Int = 1, method: HTTPMethod = .GET) async throws {
        for _ in 0..<requests {
            let head = HTTPClientRequestPart.head(HTTPRequestHead(version: .http1_1, method: method, uri: "/"))
            try await self.channel.writeAndFlush(head)
        }
        let writer = self.writer
        try await self.channel.eventLoop.flatSubmit { () -> EventLoopFuture<Void> in
            guard let context = writer.context else {
                return self.channel.eventLoop.makeFailedFuture(ConnectionClosed())
            }
            return context.writeAndFlush(NIOAny(bytes))
        }.get()
    }

    /// The next complete response; throws ``ConnectionClosed`` when the server closed instead.
    public func response() async throws -> Response {
        guard let next = await self.responsesIterator.iterator.next() else { throw ConnectionClosed() }
        return try next.get()
    }

    /// Sends one request (keep-alive) and returns its response.
    public func request(
        _ method: String = "GET", _ target: String, headers: [(String, String)] = [], body: [UInt8]? = nil
    ) async throws -> Response {
        var text = "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        if let body { text += "Content-Length: \(body.count)\r\n" }
        text += "\r\n"
        var buffer = ByteBuffer(string: text)
        if let body { buffer.writeBytes(body) }
        try await self.send(buffer)
        return try await self.response()
    }

    /// Resolves when the server has closed the connection.
    public func waitForClose() async throws {
        try await self.channel.closeFuture.get()
    }

    public func close() async {
        try? await self.channel.close()
    }
}
