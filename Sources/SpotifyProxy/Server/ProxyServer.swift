import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle
import Synchronization

/// The listener. Plain HTTP is served by worker loops (``WorkerServer``: one thread per core
/// owning its connections and its curl handle); HTTPS by a NIO server whose connections each
/// get a ``ProxyHandler`` (TLS needs NIO's pipeline). Either way, on graceful shutdown it stops
/// accepting, lets in-flight requests finish (bounded by `server.shutdown_grace`), then closes
/// what is left.
public final class ProxyServer: Service, Sendable {
    private enum Listener {
        case workers(WorkerServer)
        case nio(any Channel, ServerQuiescingHelper, ClosedConnectionsTrim, OpenChannels)
    }

    private let listener: Listener
    /// The worker loops serving plain HTTP (none over HTTPS).
    var workerServer: WorkerServer? {
        if case .workers(let server) = self.listener { return server }
        return nil
    }
    private let context: ProxyContext
    private let listening = Atomic<Bool>(true)
    /// Ended early by ``endGracePeriod()``: what waits for it runs then.
    private let graceEnd = Mutex<(ended: Bool, waiters: [@Sendable () -> Void])>((false, []))

    /// Ends the shutdown's grace period now, or as soon as the shutdown starts (a second
    /// SIGTERM or SIGINT): what is still in flight is answered and closed as when it runs out.
    public func endGracePeriod() {
        let waiters = self.graceEnd.withLock { state in
            state.ended = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter() }
    }

    /// Runs `body` when the grace period is ended early (at once if it was).
    private func onGraceEnded(_ body: @escaping @Sendable () -> Void) {
        let now = self.graceEnd.withLock { state in
            if !state.ended { state.waiters.append(body) }
            return state.ended
        }
        if now { body() }
    }

    /// The address actually bound (port 0 becomes a real port).
    public let localAddress: SocketAddress

    private init(listener: Listener, localAddress: SocketAddress, context: ProxyContext) {
        self.listener = listener
        self.context = context
        self.localAddress = localAddress
    }

    public var port: Int { self.localAddress.port ?? 0 }

    /// Whether the listening socket is still open (false once shutdown has closed it).
    public var isListening: Bool {
        switch self.listener {
        case .workers: self.listening.load(ordering: .relaxed)
        case .nio(let channel, _, _, _): channel.isActive
        }
    }

    /// `tls`: HTTPS on the listener (its context read for each new connection, so a reload takes
    /// effect). Without it, `server.workers` worker loops serve plain HTTP.
    public static func bind(context: ProxyContext, group: any EventLoopGroup, tls: ListenerTLS? = nil) async throws -> ProxyServer {
        if tls == nil {
            let server = try WorkerServer.bind(context: context, workers: context.settings.workers)
            return ProxyServer(listener: .workers(server), localAddress: server.localAddress, context: context)
        }
        let config = context.settings
        let quiesce = ServerQuiescingHelper(group: group)
        let trim = ClosedConnectionsTrim()
        let open = OpenChannels()
        let idle = TimeAmount.milliseconds(Int64(config.clientIdleTimeout.milliseconds))
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Bound now (so a taken address is reported before anything starts), but accepting
            // only once `run()` starts: `ProxyRuntime.run` traps SIGTERM and SIGINT before the
            // services run, so no client is answered by a process a SIGTERM would simply kill.
            .serverChannelOption(.autoRead, value: false)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            // Unwritable above the worker loops' bound on unwritten answers (`ProxyHandler` holds
            // the next pipelined request meanwhile).
            .childChannelOption(
                .writeBufferWaterMark,
                value: .init(low: WorkerConnection.heldOutputLimit / 2, high: WorkerConnection.heldOutputLimit))
            .childChannelInitializer { channel in
                open.add(channel)
                channel.closeFuture.whenComplete { _ in
                    open.remove(channel)
                    trim.connectionClosed()
                }
                return channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls {
                        try sync.addHandler(PlainHTTPOnTLSHandler(context: context))
                        try sync.addHandler(NIOSSLServerHandler(context: tls.context))
                    }
                    // The write timeout is for `ProxyHandler` to close a client that takes nothing.
                    try sync.addHandler(IdleStateHandler(readTimeout: idle, writeTimeout: idle))
                    let head = HeadDeadline.handlers(timeout: idle)
                    try sync.addHandler(head.bytes)
                    try sync.addHandler(RequestTargetEncodingHandler())
                    // NIO's server pipeline, with the plain listener's parser and encoder.
                    let reason = RequestDecoder.Reason()
                    try sync.addHandlers([
                        ByteToMessageHandler(RequestDecoder(reason: reason, maxBodyBytes: context.settings.limits.maxBodyBytes)), ResponseEncoderHandler(), head.parts, HTTPServerPipelineHandler(),
                        NIOHTTPResponseHeadersValidator(), ProxyHandler(context: context, parseFailure: reason),
                    ])
                }
            }
            .bind(host: config.listenHost, port: config.listenPort)
            .get()
        return ProxyServer(listener: .nio(channel, quiesce, trim, open), localAddress: channel.localAddress!, context: context)
    }

    public func run() async throws {
        if case .workers(let server) = self.listener { server.accept() }
        if case .nio(let channel, _, let trim, _) = self.listener {
            trim.start(on: channel.eventLoop)
            try await channel.setOption(.autoRead, value: true).get()
        }
        try? await gracefulShutdown()
        let grace = self.context.settings.shutdownGrace
        self.context.logger.info("shutting down: no new connections; waiting for in-flight requests", metadata: ["grace_s": .stringConvertible(grace.components.seconds)])
        let inTime: Bool
        switch self.listener {
        case .workers(let server):
            self.listening.store(false, ordering: .relaxed)
            inTime = await server.shutdown(grace: grace, endedEarly: self.onGraceEnded)
        case .nio(let channel, let quiesce, let trim, let open):
            defer { trim.stop() }
            let closed = channel.eventLoop.makePromise(of: Void.self)
            quiesce.initiateShutdown(promise: closed)
            // Nothing open is in time, however early a second signal ended the wait.
            inTime = await closed.futureResult.completes(within: grace, endedEarly: self.onGraceEnded) || open.all.isEmpty
            if !inTime {
                // As the worker loops stop their curl handles: a request still waiting for
                // Spotify (or for the cache's fetch) is answered 503, to retry, and its connection
                // closes after it. Returning before those answers were written let the process
                // exit under them: an empty reply instead of the 503. What has not closed within
                // a second (a request held for a token or by the governor, a client that does not
                // end its TLS) is closed then.
                self.context.upstream.stopClientTransfers()
                // A request that never left (waiting for its token, held by the governor): its 503 too.
                for child in open.all { child.pipeline.fireUserInboundEventTriggered(GraceEnded()) }
                if !(await closed.futureResult.completes(within: .seconds(1))) {
                    for child in open.all { child.close(promise: nil) }
                }
            }
        }
        if !inTime {
            let why = self.graceEnd.withLock { $0.ended } ? "ended by a second signal" : "passed"
            self.context.logger.warning("shutdown grace period \(why) with requests still in flight; closing them")
        }
    }

}

extension EventLoopFuture where Value == Void {
    /// Whether it completes (succeeded or failed) within `limit`, and before `endedEarly` ends
    /// the wait: a shutdown's grace period.
    func completes(within limit: Duration, endedEarly: (@escaping @Sendable () -> Void) -> Void = { _ in }) async -> Bool {
        let result = self.eventLoop.makePromise(of: Bool.self)
        self.whenComplete { _ in result.succeed(true) }
        let timeout = self.eventLoop.scheduleTask(in: .milliseconds(Int64(limit.milliseconds))) { result.succeed(false) }
        endedEarly { result.succeed(false) }
        defer { timeout.cancel() }
        return (try? await result.futureResult.get()) ?? false
    }
}

/// Sent through each HTTPS connection's pipeline when the shutdown's grace period is over.
struct GraceEnded {}

/// The HTTPS listener's open connections, to close those left a second past the grace period.
final class OpenChannels: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    func add(_ channel: any Channel) {
        self.channels.withLock { $0[ObjectIdentifier(channel)] = channel }
    }

    func remove(_ channel: any Channel) {
        _ = self.channels.withLock { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    var all: [any Channel] { self.channels.withLock { Array($0.values) } }
}
