import NIOCore
import ServiceLifecycle

/// The proxy's way upstream: libcurl's multi interface on one dedicated thread, shared by
/// every connection, with connection reuse and HTTP/2 multiplexing to HTTPS upstreams.
/// A `Service`: the thread runs while ``run()`` does; transfers started before that wait.
public final class UpstreamClient: Service, Sendable {
    public let configuration: UpstreamConfiguration
    private let loop: CurlLoop

    public init(configuration: UpstreamConfiguration) {
        self.configuration = configuration
        self.loop = CurlLoop(configuration: configuration)
    }

    /// Starts a streaming transfer whose events reach `delegate` on `eventLoop`: on a worker
    /// loop, through that loop's own curl handle; elsewhere through the shared curl thread.
    public func startTransfer(
        _ request: UpstreamRequest,
        on eventLoop: any EventLoop,
        delegate: any UpstreamTransferDelegate
    ) -> UpstreamTransfer {
        let transfer = UpstreamTransfer(
            request: request, configuration: self.configuration, loop: (eventLoop as? WorkerLoop)?.curl ?? self.loop,
            eventLoop: eventLoop, delegate: delegate)
        transfer.start()
        return transfer
    }

    /// A small exchange held in memory, for the token endpoint.
    public struct BufferedResponse: Sendable {
        public var status: Int
        public var headers: [(name: String, value: String)]
        public var body: ByteBuffer
    }

    /// A whole exchange; an answer whose body outgrows `maxBodyBytes` is cut off and fails.
    /// `servesClient`: ``UpstreamRequest/servesClient`` (false for the accounts service).
    public func perform(
        method: String, url: String, headers: [(name: String, value: String)], body: ByteBuffer?,
        on eventLoop: any EventLoop, maxBodyBytes: Int = .max, servesClient: Bool = true
    ) async throws(UpstreamError) -> BufferedResponse {
        let promise = eventLoop.makePromise(of: BufferedResponse.self)
        let request = UpstreamRequest(
            method: method, url: url, headers: headers,
            body: body.map { .known(Int64($0.readableBytes)) } ?? .none, servesClient: servesClient)
        eventLoop.execute {
            let collector = BufferedCollector(promise: promise, maxBodyBytes: maxBodyBytes)
            let transfer = self.startTransfer(request, on: eventLoop, delegate: collector)
            if let body { _ = transfer.appendRequestBody(body) }
            transfer.endRequestBody()
        }
        do {
            return try await promise.futureResult.get()
        } catch let error as UpstreamError {
            throw error
        } catch {
            throw UpstreamError(kind: .protocolError, message: "\(error)")
        }
    }

    /// The HTTPS listener's shutdown grace period is over: the transfers of its clients'
    /// requests still running on the shared curl thread (forwarded, or filling the cache for
    /// them) fail as ``UpstreamError/shutdown``, so each is answered 503 to retry before the
    /// process exits, and those started later (a token or a governor slot came meanwhile) are
    /// refused as never sent; the token endpoint's go on. (The worker loops stop their own curl
    /// handles.)
    public func stopClientTransfers() {
        self.loop.submit(.stopClientTransfers)
    }

    /// Drives transfers until graceful shutdown, then stops: transfers still running fail as cancelled.
    public func run() async throws {
        self.loop.start()
        try? await gracefulShutdown()
        await self.loop.shutdown()
    }

    /// Runs `body` with a client whose loop runs for just that long (commands outside a `ServiceGroup`).
    public static func withRunning<T>(
        configuration: UpstreamConfiguration, _ body: (UpstreamClient) async throws -> T
    ) async rethrows -> T {
        let client = UpstreamClient(configuration: configuration)
        client.loop.start()
        do {
            let result = try await body(client)
            await client.loop.shutdown()
            return result
        } catch {
            await client.loop.shutdown()
            throw error
        }
    }
}

private final class BufferedCollector: UpstreamTransferDelegate {
    private let promise: EventLoopPromise<UpstreamClient.BufferedResponse>
    private let maxBodyBytes: Int
    private var response = UpstreamClient.BufferedResponse(status: 0, headers: [], body: ByteBuffer())
    private var failed = false

    init(promise: EventLoopPromise<UpstreamClient.BufferedResponse>, maxBodyBytes: Int) {
        self.promise = promise
        self.maxBodyBytes = maxBodyBytes
    }

    func upstreamDidReceiveHead(_ transfer: UpstreamTransfer, status: Int, headers: [(name: String, value: String)]) {
        self.response.status = status
        self.response.headers = headers
    }

    func upstreamDidReceiveBody(_ transfer: UpstreamTransfer, _ buffer: ByteBuffer) {
        var buffer = buffer
        let count = buffer.readableBytes
        defer { transfer.consumed(count) }
        guard !self.failed else { return }
        guard self.response.body.readableBytes + count <= self.maxBodyBytes else {
            self.failed = true
            transfer.cancel(reason: "answer too large")
            self.promise.fail(UpstreamError(kind: .tooLarge, message: "the answer is larger than \(self.maxBodyBytes) bytes"))
            return
        }
        self.response.body.writeBuffer(&buffer)
    }

    func upstreamDidFinish(_ transfer: UpstreamTransfer, error: UpstreamError?) {
        guard !self.failed else { return }
        if let error {
            self.promise.fail(error)
        } else {
            self.promise.succeed(self.response)
        }
    }

    func upstreamWantsRequestBody(_ transfer: UpstreamTransfer) {}

    func upstreamDidDeliverEvents(_ transfer: UpstreamTransfer) {}
}
