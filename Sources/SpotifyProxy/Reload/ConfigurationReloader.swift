import Logging
import NIOSSL
import ServiceLifecycle
import Synchronization
import UnixSignals

/// Reloads the configuration on SIGHUP (or ``reload()``) without dropping a connection, a
/// request or the current token: the new file is read and checked whole — keys file,
/// certificate and all — and either applied or refused, the old one staying, with a log line
/// saying why. Applied at once: the access keys and `allow_open`, the listener's certificate,
/// the app's client id and secret (used from the next refresh on), `[users] default`. Settings that need the
/// listener, the sink or the caches rebuilt are named in a warning and take effect at restart.
public final class ConfigurationReloader: Service, Sendable {
    /// Reads the configuration as the proxy was started with it: the same file, environment and flags.
    public typealias Load = @Sendable () throws(ConfigurationError) -> ProxyConfiguration

    private let load: Load
    /// What is in force: the file's values, but those that wait for a restart as they were at
    /// the start (the users' refreshers keep the client id and secret they started with).
    private let running: Mutex<ProxyConfiguration>
    /// The app's client id and secret in force: a reload applies them at once.
    private let appCredentials: Mutex<(id: String?, secret: String?)>
    private let access: AccessControl
    private let tls: ListenerTLS?
    /// The app's credentials and the refresher that uses them (nil when a test injects a fetcher).
    private let credentials: (fetcher: ClientCredentialsFetcher, tokens: TokenRefresher<ContinuousClock>)?
    /// The logged-in users, whose default a reload replaces (nil: no user tokens).
    private let users: UserTokens?
    private let record: ReloadRecord
    private let trapSIGHUP: Bool
    private let logger: Logger
    /// One reload at a time (SIGHUP and ``reload()`` may race).
    private let serial = Mutex(())

    init(
        load: @escaping Load, running: ProxyConfiguration, access: AccessControl, tls: ListenerTLS?,
        credentials: (fetcher: ClientCredentialsFetcher, tokens: TokenRefresher<ContinuousClock>)?, users: UserTokens? = nil,
        record: ReloadRecord, trapSIGHUP: Bool, logger: Logger
    ) {
        self.load = load
        self.running = Mutex(running)
        self.appCredentials = Mutex((running.clientID, running.clientSecret))
        self.access = access
        self.tls = tls
        self.credentials = credentials
        self.users = users
        self.record = record
        self.trapSIGHUP = trapSIGHUP
        self.logger = logger
    }

    /// Reloads on each SIGHUP until the proxy shuts down.
    public func run() async throws {
        guard self.trapSIGHUP else {
            try? await gracefulShutdown()
            return
        }
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            self.logger.notice("SIGHUP: reloading the configuration")
            _ = self.reload()
        }
    }

    /// Reads, checks and applies the configuration; on any problem nothing changes.
    /// Returns the problem, or nil when the new configuration is in force.
    @discardableResult
    public func reload() -> ConfigurationError? {
        self.serial.withLock { _ in self.reloadSerially() }
    }

    private func reloadSerially() -> ConfigurationError? {
        let old = self.running.withLock { $0 }
        let new: ProxyConfiguration
        let access: AccessControl.Settings
        var certificate: NIOSSLContext?
        do throws(ConfigurationError) {
            new = try self.load()
            // The listener keeps its address until a restart: keys are required by the one in use.
            var listening = new
            listening.listenHost = old.listenHost
            // Not the sink's checks: they would open (and close) the database the proxy holds open.
            try listening.validate(requiringCredentials: self.credentials != nil, checkingSink: false)
            access = try listening.accessSettings()
            // Built before anything is applied (a certificate that cannot be used refuses the
            // reload), and this very context is installed.
            if self.tls != nil, let path = new.tlsCertificate, let key = new.tlsKey {
                certificate = try ListenerTLS.context(certificate: path, key: key)
            }
        } catch {
            self.record.refused(error.message)
            self.logger.error("configuration reload refused; the running configuration stays", metadata: ["error": "\(error.message)"])
            return error
        }
        self.access.replace(access)
        for warning in access.keys?.warnings ?? [] { self.logger.warning("\(warning)") }
        if let tls = self.tls, let certificate {
            tls.install(certificate)
            if let warning = new.tlsCertificateWarning() { self.logger.warning("\(warning)") }
        }
        // As at the start: a reload can open the listener to anyone (keys turned off, allow_open on).
        if access.keys == nil, !old.listensOnLoopbackOnly {
            self.logger.warning("\(OwnEndpoints.openWarning)", metadata: ["listen": "\(old.listenDescription)"])
        }
        let app = self.appCredentials.withLock { $0 }
        if let credentials = self.credentials, let id = new.clientID, let secret = new.clientSecret, id != app.id || secret != app.secret {
            credentials.fetcher.replaceCredentials(clientID: id, clientSecret: secret)
            credentials.tokens.credentialsReplaced()
            self.appCredentials.withLock { $0 = (id, secret) }
        }
        if new.users.defaultUser != old.users.defaultUser { self.users?.replaceDefaultUser(new.users.defaultUser) }
        var applied = new
        let atRestart = Self.restartOnly(old: old, new: new)
        if !atRestart.isEmpty {
            // What the running proxy keeps until it restarts: the next reload compares with it.
            applied = Self.keepingRestartOnly(of: old, in: new)
            self.logger.warning(
                "these settings changed but take effect at the next restart", metadata: ["settings": "\(atRestart.joined(separator: ", "))"])
        }
        self.running.withLock { $0 = applied }
        self.record.applied(atRestart: atRestart)
        self.logger.notice(
            "configuration reloaded",
            metadata: ["keys": access.keys.map { .stringConvertible($0.keys.count) } ?? "off", "generation": .stringConvertible(self.record.status.generation)])
        return nil
    }

    /// The settings that differ and need a restart: the listener, the upstream, the sink, the
    /// caches and the users' store are built once at the start.
    static func restartOnly(old: ProxyConfiguration, new: ProxyConfiguration) -> [String] {
        var changed: [String] = []
        if old.listenDescription != new.listenDescription { changed.append("server.listen") }
        if (old.tlsCertificate == nil) != (new.tlsCertificate == nil) { changed.append("server.tls_cert (turning HTTPS on or off)") }
        changed += ListenerSettings(new).changedKeys(from: ListenerSettings(old))
        if old.tokenURL != new.tokenURL { changed.append("spotify.token_url") }
        if old.clientID != new.clientID || old.clientSecret != new.clientSecret {
            // The app's token takes them at its next refresh; the users' refreshers were made with the old ones.
            changed.append("spotify.client_id/client_secret for logged-in users' refreshes (the app's token uses the new ones)")
        }
        if old.upstream != new.upstream { changed.append("spotify timeouts or ca_bundle") }
        if old.refreshAhead != new.refreshAhead { changed.append("spotify.refresh_ahead") }
        if old.tokenWait != new.tokenWait { changed.append("spotify.token_wait") }
        if old.unauthorizedRefreshInterval != new.unauthorizedRefreshInterval { changed.append("spotify.unauthorized_refresh_interval") }
        if old.sink != new.sink { changed.append("[sink]") }
        if old.users.directory != new.users.directory { changed.append("users.dir") }
        if old.logLevel != new.logLevel || old.logFormat != new.logFormat { changed.append("[log]") }
        return changed
    }

    /// `new` with the restart-only settings of `old`: what is in force after a reload.
    static func keepingRestartOnly(of old: ProxyConfiguration, in new: ProxyConfiguration) -> ProxyConfiguration {
        var kept = old
        kept.access = new.access
        kept.users.defaultUser = new.users.defaultUser
        if old.tlsCertificate != nil, new.tlsCertificate != nil {
            kept.tlsCertificate = new.tlsCertificate
            kept.tlsKey = new.tlsKey
        }
        return kept
    }
}
