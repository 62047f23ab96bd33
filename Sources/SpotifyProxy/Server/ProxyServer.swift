import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle

/// The listener: an HTTP/1.1 server whose connections each get a ``ProxyHandler``.
/// On graceful shutdown it stops accepting, lets in-flight requests finish (bounded by
/// `server.shutdown_grace`), then closes what is left.
public final class ProxyServer: Service, Sendable {
    private let channel: any Channel
    private let quiesce: ServerQuiescingHelper
    private let context: ProxyContext

    /// The address actually bound (port 0 becomes a real port).
    public let localAddress: SocketAddress

    private init(channel: any Channel, quiesce: ServerQuiescingHelper, context: ProxyContext) {
        self.channel = channel
        self.quiesce = quiesce
        self.context = context
        self.localAddress = channel.localAddress!
    }

    public var port: Int { self.localAddress.port ?? 0 }

    /// Whether the listening socket is still open (false once shutdown has closed it).
    public var isListening: Bool { self.channel.isActive }

    /// `tls`: HTTPS on the listener (its context read for each new connection, so a reload takes effect).
    public static func bind(context: ProxyContext, group: any EventLoopGroup, tls: ListenerTLS? = nil) async throws -> ProxyServer {
        let config = context.settings
        let quiesce = ServerQuiescingHelper(group: group)
        let idle = TimeAmount.milliseconds(Int64(config.clientIdleTimeout.milliseconds))
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // Bound now (so a taken address is reported before anything starts), but accepting
            // only once `run()` starts: the service group traps SIGTERM and SIGINT before it runs
            // its services, so no client is answered by a process a SIGTERM would simply kill.
            .serverChannelOption(.autoRead, value: false)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiesce.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let tls { try sync.addHandler(NIOSSLServerHandler(context: tls.context)) }
                    try sync.addHandler(IdleStateHandler(readTimeout: idle))
                    try sync.addHandler(RequestTargetEncodingHandler())
                    try sync.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: false)
                    try sync.addHandler(ProxyHandler(context: context))
                }
            }
            .bind(host: config.listenHost, port: config.listenPort)
            .get()
        return ProxyServer(channel: channel, quiesce: quiesce, context: context)
    }

    public func run() async throws {
        try await self.channel.setOption(.autoRead, value: true).get()
        try? await gracefulShutdown()
        let grace = self.context.settings.shutdownGrace
        self.context.logger.info("shutting down: no new connections; waiting for in-flight requests", metadata: ["grace_s": "\(grace.components.seconds)"])
        let done = self.channel.eventLoop.makePromise(of: Void.self)
        self.quiesce.initiateShutdown(promise: done)
        let timeout = self.channel.eventLoop.scheduleTask(in: .milliseconds(Int64(grace.milliseconds))) {
            done.fail(ShutdownTimedOut())
        }
        do {
            try await done.futureResult.get()
            timeout.cancel()
        } catch {
            self.context.logger.warning("shutdown grace period passed with requests still in flight; closing them")
        }
    }

    private struct ShutdownTimedOut: Error {}
}
