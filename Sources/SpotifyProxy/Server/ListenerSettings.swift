import NIOCore

/// What the listener and its connections use of the configuration, and nothing else: no
/// connection holds the client secret, the database URL or the token settings.
public struct ListenerSettings: Sendable, Equatable {
    public var listenHost: String
    public var listenPort: Int
    /// The worker loops serving plain HTTP (`server.workers`, default one per core).
    public var workers: Int
    public var clientIdleTimeout: Duration
    public var shutdownGrace: Duration
    public var limits: RequestLimits
    /// Requests whose body is at most this long can be replayed once after a 401.
    public var replayBodyLimit: Int
    public var rewriteLinks: Bool
    public var apiURL: String
    /// The base that links in bodies are rewritten to; `nil` derives it from each request's `Host`.
    public var publicURL: String?
    /// The lower-cased host[:port] names an absolute-form target may carry.
    public var ownAuthorities: Set<String>
    public var listenDescription: String
    /// `[users] user_paths`: which requests carry a user's token.
    public var userPaths: [UserPathRule]
    /// `[cache]`: the shared response cache.
    public var cache: CacheSettings
    /// `[governor]`: the 429 policy and the pacing.
    public var governor: GovernorSettings
    /// `[spotify] dev_mode`.
    public var devMode: DevModeSetting
    /// The listen address is this machine's alone.
    public var listensOnLoopbackOnly: Bool
    /// The listener speaks HTTPS (links are rewritten to https://).
    public var tls: Bool
    /// How the commands in its answers name the configuration (`spotify-proxy login --config …`).
    public var commands: CommandHint

    public init(_ configuration: ProxyConfiguration) {
        self.listensOnLoopbackOnly = configuration.listensOnLoopbackOnly
        self.tls = configuration.tlsCertificate != nil
        self.listenHost = configuration.listenHost
        self.listenPort = configuration.listenPort
        self.workers = configuration.workers ?? System.coreCount
        self.clientIdleTimeout = configuration.clientIdleTimeout
        self.shutdownGrace = configuration.shutdownGrace
        self.limits = RequestLimits(maxHeaderBytes: configuration.maxHeaderBytes, maxBodyBytes: configuration.maxBodyBytes)
        self.replayBodyLimit = configuration.replayBodyLimit
        self.rewriteLinks = configuration.rewriteLinks
        self.apiURL = configuration.apiURL
        self.publicURL = configuration.publicURL
        self.ownAuthorities = configuration.ownAuthorities
        self.listenDescription = configuration.listenDescription
        self.userPaths = configuration.users.userPaths
        self.cache = configuration.cache
        self.governor = configuration.governor
        self.devMode = configuration.devMode
        self.commands = configuration.commands
    }
}

/// `server.max_header_bytes` and `server.max_body_bytes`.
public struct RequestLimits: Sendable, Equatable {
    public var maxHeaderBytes: Int
    public var maxBodyBytes: Int

    public init(maxHeaderBytes: Int, maxBodyBytes: Int) {
        self.maxHeaderBytes = maxHeaderBytes
        self.maxBodyBytes = maxBodyBytes
    }
}

extension ListenerSettings {
    /// The configuration keys of the settings that differ from `old`, for the reload's warning.
    /// The listen address and TLS are left out: the reload names them itself.
    func changedKeys(from old: ListenerSettings) -> [String] {
        var keys: [String] = []
        func note(_ changed: Bool, _ key: String) { if changed { keys.append(key) } }
        note(self.workers != old.workers, "server.workers")
        note(self.clientIdleTimeout != old.clientIdleTimeout, "server.idle_timeout")
        note(self.shutdownGrace != old.shutdownGrace, "server.shutdown_grace")
        note(self.limits.maxHeaderBytes != old.limits.maxHeaderBytes, "server.max_header_bytes")
        note(self.limits.maxBodyBytes != old.limits.maxBodyBytes, "server.max_body_bytes")
        note(self.rewriteLinks != old.rewriteLinks, "server.rewrite_links")
        note(self.publicURL != old.publicURL, "server.public_url")
        note(self.apiURL != old.apiURL, "spotify.api_url")
        note(self.replayBodyLimit != old.replayBodyLimit, "spotify.replay_body_limit")
        note(self.devMode != old.devMode, "spotify.dev_mode")
        note(self.userPaths != old.userPaths, "users.user_paths")
        note(self.cache != old.cache, "[cache]")
        note(self.governor != old.governor, "[governor]")
        // A setting added later and not named above is still reported: every field named (or
        // reported by the reload itself) is set to the old value, and the rest compared.
        var rest = self
        (rest.listenHost, rest.listenPort, rest.listenDescription) = (old.listenHost, old.listenPort, old.listenDescription)
        (rest.listensOnLoopbackOnly, rest.tls, rest.ownAuthorities) = (old.listensOnLoopbackOnly, old.tls, old.ownAuthorities)
        (rest.workers, rest.clientIdleTimeout, rest.shutdownGrace, rest.limits) = (old.workers, old.clientIdleTimeout, old.shutdownGrace, old.limits)
        (rest.rewriteLinks, rest.publicURL, rest.apiURL, rest.replayBodyLimit) = (old.rewriteLinks, old.publicURL, old.apiURL, old.replayBodyLimit)
        (rest.devMode, rest.userPaths, rest.cache, rest.governor) = (old.devMode, old.userPaths, old.cache, old.governor)
        if rest != old { keys.append("another listener setting ([server], [spotify], [users], [cache] or [governor])") }
        return keys
    }
}
