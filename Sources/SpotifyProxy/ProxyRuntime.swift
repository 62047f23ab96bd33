import Foundation
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
    /// The logged-in users' tokens (nil when no client id is configured).
    public let users: UserTokens?
    public let upstream: UpstreamClient
    /// The tee, when a sink is configured.
    public let tee: TeeWriter?
    /// What every connection shares (the access keys in force, the metrics, the status).
    public let context: ProxyContext
    private let reloader: ConfigurationReloader
    private let group: ServiceGroup
    /// The signals that shut it down: the first gracefully, a second ends the grace period.
    private let signals: [UnixSignal]

    public var port: Int { self.server.port }

    /// Binds the listener; nothing is served until ``run()``.
    /// `fetcher` defaults to the client-credentials grant with the configured credentials.
    /// `reload` reads the configuration anew for ``reload()`` and SIGHUP (`reloadOnSIGHUP`);
    /// without it a reload re-reads the files this configuration names (keys, certificate).
    public init(
        configuration: ProxyConfiguration,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger,
        fetcher: (any TokenFetching)? = nil,
        signals: [UnixSignal] = [],
        reload: ConfigurationReloader.Load? = nil,
        reloadOnSIGHUP: Bool = false
    ) async throws {
        try configuration.validate(requiringCredentials: fetcher == nil)
        let upstream = UpstreamClient(configuration: configuration.upstream)
        let tokenFetcher: any TokenFetching
        var credentialsFetcher: ClientCredentialsFetcher?
        if let fetcher {
            tokenFetcher = fetcher
        } else {
            let credentials = try configuration.requireCredentials()
            let made = ClientCredentialsFetcher(
                tokenURL: configuration.tokenURL, clientID: credentials.id, clientSecret: credentials.secret,
                client: upstream, eventLoopGroup: eventLoopGroup)
            credentialsFetcher = made
            tokenFetcher = made
        }
        let tokens = TokenRefresher(
            clock: ContinuousClock(), fetcher: tokenFetcher,
            configuration: .init(
                refreshAheadFraction: configuration.refreshAhead, unauthorizedRefreshInterval: configuration.unauthorizedRefreshInterval),
            maximumWait: .milliseconds(Int64(configuration.tokenWait.milliseconds)),
            logger: logger)
        let tee: TeeWriter?
        var sinkService: (any Service)?
        if let sink = try configuration.sink.makeSink(logger: logger) {
            tee = try TeeWriter(sink: sink, configuration: configuration.sink, logger: logger)
            sinkService = sink.service
        } else {
            tee = nil
        }
        // Users need the app's client id (PKCE sends it); a fetcher injected by a test has none.
        let users =
            configuration.clientID == nil
            ? nil : UserTokens(settings: .init(configuration), client: upstream, eventLoopGroup: eventLoopGroup, logger: logger)
        let access = AccessControl(try configuration.accessSettings())
        for warning in access.settings.keys?.warnings ?? [] { logger.warning("\(warning)") }
        let tls = try configuration.listenerTLS()
        if let warning = configuration.tlsCertificateWarning() { logger.warning("\(warning)") }
        // Only with users to keep fresh: a proxy without any never writes there.
        if users != nil, configuration.users.environmentRefreshToken != nil || !UserStore(directory: configuration.users.directory).labels().isEmpty,
            let warning = configuration.usersDirectoryWarning
        {
            logger.warning("\(warning)")
        }
        let context = ProxyContext(
            settings: ListenerSettings(configuration), upstream: upstream, tokens: tokens, users: users, tee: tee,
            eventLoopGroup: eventLoopGroup, logger: logger, access: access)
        let server: ProxyServer
        do {
            server = try await ProxyServer.bind(context: context, group: eventLoopGroup, tls: tls)
        } catch {
            if let tee { await tee.abandon() }
            throw ConfigurationError(Self.listenProblem(error, configuration: configuration))
        }
        // Once listening: a listener that could not bind is open to nobody.
        if access.settings.keys == nil, !configuration.listensOnLoopbackOnly {
            logger.warning("\(OwnEndpoints.openWarning)", metadata: ["listen": "\(configuration.listenDescription)"])
        }
        self.server = server
        self.context = context
        let reloader = ConfigurationReloader(
            load: reload ?? { configuration }, running: configuration, access: access, tls: tls,
            credentials: credentialsFetcher.map { ($0, tokens) }, users: users,
            record: context.reloads, trapSIGHUP: reloadOnSIGHUP, logger: logger)
        self.reloader = reloader
        self.signals = signals
        self.tokens = tokens
        self.users = users
        self.upstream = upstream
        self.tee = tee
        // Shut down in reverse order: the listener first (no new bodies), then the token
        // refresher, the tee (it drains into the sink), the sink's connection pool, and last
        // the curl loop (the listener's last answers and the refresher used it).
        let background = [upstream, sinkService, tee, users].compactMap { $0 }.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) }
        self.group = ServiceGroup(
            configuration: .init(
                services: background + [
                    .init(service: reloader),
                    .init(service: tokens),
                    .init(service: server, successTerminationBehavior: .gracefullyShutdownGroup),
                ],
                logger: logger))
    }

    /// For `check-config`: the listen address must be this machine's (a name, one it resolves),
    /// as the listener's bind will find; bound on port 0 and let go at once, since the port itself
    /// may be the running proxy's.
    public static func checkListenAddress(_ configuration: ProxyConfiguration) async throws(ConfigurationError) {
        do {
            let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: configuration.listenHost, port: 0).get()
            try? await channel.close()
        } catch {
            throw ConfigurationError(Self.listenProblem(error, configuration: configuration))
        }
    }

    /// Why the listener could not bind, naming the flag or key that chose the address.
    static func listenProblem(_ error: any Error, configuration: ProxyConfiguration) -> String {
        let address = configuration.listenDescription
        let fix: String
        switch configuration.listenSetBy {
        case nil: fix = "choose another with --listen HOST:PORT (or server.listen in proxy.conf)"
        case "--listen": fix = "choose another with --listen HOST:PORT"
        case let key?: fix = "choose another in \(key) or with --listen HOST:PORT"
        }
        return Self.bindProblem(error, address: address, fix: fix)
    }

    /// A bind failure in words (`errno` as text, not NIO's type names) and what to do.
    public static func bindProblem(_ error: any Error, address: String, fix: String) -> String {
        if let unknown = error as? SocketAddressError.UnknownHost {
            return "cannot listen on \(address): the host \(unknown.host) is not a name this machine resolves (\(unknown.errorDescription)); \(fix), e.g. 127.0.0.1:8080"
        }
        guard let io = error as? IOError else { return "cannot listen on \(address): \(error); \(fix)" }
        switch io.errnoCode {
        case EADDRINUSE: return "\(address) is already in use; \(fix)"
        case EACCES: return "\(address) needs privileges to listen on (ports below 1024 do); \(fix)"
        case EADDRNOTAVAIL: return "\(address) is not an address of this machine; \(fix)"
        default: return "cannot listen on \(address): \(String(cString: strerror(io.errnoCode))); \(fix)"
        }
    }

    /// Serves until a shutdown signal or ``shutdown()``, then drains and stops.
    public func run() async throws {
        // One handler for the shutdown signals (ServiceLifecycle's advice: one per signal),
        // installed before anything runs: the first shuts the group down gracefully, a second
        // ends the listener's grace period at once (in-flight requests answered 503 and
        // closed), as operators expect of a second Ctrl-C.
        var watcher: Task<Void, Never>?
        if !self.signals.isEmpty {
            let received = await UnixSignalsSequence(trapping: self.signals)
            let (group, server) = (self.group, self.server)
            watcher = Task {
                var seen = 0
                for await _ in received {
                    seen += 1
                    if seen == 1 { await group.triggerGracefulShutdown() } else if seen == 2 { server.endGracePeriod() }
                }
            }
        }
        defer { watcher?.cancel() }
        try await self.group.run()
    }

    /// Reloads the configuration (as SIGHUP does): nil when applied, else why it was refused
    /// (the running configuration stays).
    @discardableResult
    public func reload() -> ConfigurationError? {
        self.reloader.reload()
    }

    /// Starts a graceful shutdown: stop accepting, finish in-flight requests, return from ``run()``.
    public func shutdown() async {
        await self.group.triggerGracefulShutdown()
    }
}

extension ProxyConfiguration {
    /// The one check that `check-config` and `serve` share: everything a running proxy needs
    /// that parsing alone cannot tell (credentials, a database to write to).
    /// `checkingSink: false` is for a running proxy's reload: the sink is built once, at the
    /// start, and its checks read the SQLite database's header, and closing any descriptor of
    /// that file drops every POSIX lock the process holds on it (fcntl's rule), the open
    /// database's included: the next other reader then takes itself for the last and removes the
    /// WAL the proxy still writes to.
    public func validate(requiringCredentials: Bool = true, checkingSink: Bool = true) throws(ConfigurationError) {
        if requiringCredentials { _ = try self.requireCredentials() }
        if checkingSink { try self.sink.validate() }
        if let bundle = self.upstream.caBundle {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: bundle, isDirectory: &isDirectory), !isDirectory.boolValue,
                FileAccess.permits(bundle, R_OK)
            else {
                throw ConfigurationError(
                    "spotify.ca_bundle = \"\(bundle)\" \(isDirectory.boolValue ? "is a directory" : "cannot be read"): name a PEM file of CA certificates, or remove the key to trust the system's")
            }
            // curl would refuse it at every request ("problem with the SSL CA cert").
            guard let text = FileManager.default.contents(atPath: bundle), text.range(of: Data("-----BEGIN CERTIFICATE-----".utf8)) != nil else {
                throw ConfigurationError(
                    "spotify.ca_bundle = \"\(bundle)\" holds no PEM certificate (-----BEGIN CERTIFICATE-----): name a PEM file of CA certificates, or remove the key to trust the system's")
            }
        }
        _ = try self.accessSettings()
        _ = try self.listenerTLS()
    }
}
