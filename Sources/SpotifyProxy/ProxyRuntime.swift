import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import UnixSignals

/// The whole proxy, assembled: upstream client, token refresher and listener, run as one
/// `ServiceGroup`. The CLI, the demo and the integration tests all start it this way.
public final class ProxyRuntime: Sendable {
    public let server: ProxyServer
    public let tokens: TokenRefresher<ContinuousClock>
    public let upstream: UpstreamClient
    /// The tee, when a sink is configured.
    public let tee: TeeWriter?
    private let group: ServiceGroup

    public var port: Int { self.server.port }

    /// Binds the listener; nothing is served until ``run()``.
    /// `fetcher` defaults to the client-credentials grant with the configured credentials.
    public init(
        configuration: ProxyConfiguration,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger,
        fetcher: (any TokenFetching)? = nil,
        signals: [UnixSignal] = []
    ) async throws {
        let upstream = UpstreamClient(configuration: configuration.upstream)
        let tokenFetcher: any TokenFetching
        if let fetcher {
            tokenFetcher = fetcher
        } else {
            let credentials = try configuration.requireCredentials()
            tokenFetcher = ClientCredentialsFetcher(
                tokenURL: configuration.tokenURL, clientID: credentials.id, clientSecret: credentials.secret,
                client: upstream, eventLoopGroup: eventLoopGroup)
        }
        let tokens = TokenRefresher(
            clock: ContinuousClock(), fetcher: tokenFetcher,
            configuration: .init(refreshAheadFraction: configuration.refreshAhead),
            maximumWait: .milliseconds(Int64(configuration.tokenWait.milliseconds)),
            logger: logger)
        let tee: TeeWriter?
        do {
            if let sink = try configuration.sink.makeSink(logger: logger) {
                tee = try TeeWriter(sink: sink, configuration: configuration.sink, logger: logger)
            } else {
                tee = nil
            }
        } catch {
            await upstream.shutdown()
            throw error
        }
        let context = ProxyContext(configuration: configuration, upstream: upstream, tokens: tokens, tee: tee, logger: logger)
        let server: ProxyServer
        do {
            server = try await ProxyServer.bind(context: context, group: eventLoopGroup)
        } catch {
            await upstream.shutdown()
            if let tee { await tee.abandon() }
            throw ConfigurationError("cannot listen on \(configuration.listenDescription) (server.listen): \(error)")
        }
        self.server = server
        self.tokens = tokens
        self.upstream = upstream
        self.tee = tee
        // Shut down in reverse order: the listener first (no new bodies), the tee last (drains).
        self.group = ServiceGroup(
            configuration: .init(
                services: (tee.map { [ServiceGroupConfiguration.ServiceConfiguration(service: $0)] } ?? []) + [
                    .init(service: tokens),
                    .init(service: server, successTerminationBehavior: .gracefullyShutdownGroup),
                ],
                gracefulShutdownSignals: signals,
                logger: logger))
    }

    /// Serves until a shutdown signal or ``shutdown()``, then drains and stops.
    public func run() async throws {
        do {
            try await self.group.run()
        } catch {
            await self.upstream.shutdown()
            throw error
        }
        await self.upstream.shutdown()
    }

    /// Starts a graceful shutdown: stop accepting, finish in-flight requests, return from ``run()``.
    public func shutdown() async {
        await self.group.triggerGracefulShutdown()
    }
}
