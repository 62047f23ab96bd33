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
