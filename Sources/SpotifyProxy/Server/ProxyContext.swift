import Logging
import NIOCore

/// Where requests get their bearer token; ``TokenRefresher`` is the real one.
public protocol AccessTokenSource: AnyObject, Sendable {
    func token(on eventLoop: any EventLoop) -> TokenLookup
    /// Reports an upstream 401 for a request that carried `token`; says whether to replay it.
    func unauthorized(token: String) -> UnauthorizedVerdict
    /// `nil` while a valid token is held, else why not and when to try again.
    var readinessProblem: TokenUnavailable? { get }
    /// Refreshes and time left, for `/metrics`.
    var figures: TokenFigures { get }
}

extension TokenRefresher: AccessTokenSource {
    public var readinessProblem: TokenUnavailable? { self.unreadiness }
}

/// A proxy without user logins: every user-token request is told to log in.
struct NoUsers: UserDirectory {
    func resolve(_ requested: String?) -> UserResolution { requested.map { .unknown($0) } ?? .none }
    func spotifyUserID(of label: String) -> String? { nil }
}

/// What every connection shares. It holds the listener's settings only, never the whole
/// configuration: no connection can reach the client secret.
public final class ProxyContext: Sendable {
    public let settings: ListenerSettings
    public let stages: RequestStages
    public let upstream: UpstreamClient
    public let tokens: any AccessTokenSource
    /// The logged-in users' tokens, when any can be (nil: app token only).
    public let users: UserTokens?
    public let tee: TeeWriter?
    /// Spotify's rate limits, as its 429s announced them.
    public let governor: Governor
    /// The shared response cache (with `[cache] max_bytes = 0` it stores nothing, and still
    /// forwards the development-mode assemblies' parts).
    public let cache: ResponseCache
    public let devMode: DevMode
    /// The access keys in force (replaced on reload) and their budgets.
    public let access: AccessControl
    /// Requests per key over the last hour (for the status).
    public let activity = KeyActivity()
    /// The configuration reloads applied or refused.
    public let reloads = ReloadRecord()
    public let logger: Logger
    /// ``logger``'s handler writing request lines from their fields (text logs); nil: through ``logger``.
    let requestLines: RequestLogLine.Writer?
    public let metrics: ProxyMetrics
    /// Links rewritten, transforms and cache fields applied to whole answers.
    let rendering: AnswerRendering

    public init(
        settings: ListenerSettings, upstream: UpstreamClient, tokens: any AccessTokenSource, users: UserTokens?, tee: TeeWriter?,
        eventLoopGroup: any EventLoopGroup, logger: Logger, metrics: ProxyMetrics = ProxyMetrics(),
        access: AccessControl = AccessControl(.init())
    ) {
        self.access = access
        self.settings = settings
        let governor = Governor(settings: settings.governor, logger: logger)
        self.governor = governor
        let cache = ResponseCache(
            settings: settings.cache,
            upstream: AppTokenForwarding(upstream: upstream, apiURL: settings.apiURL, tokens: tokens, governor: governor, tee: tee, metrics: metrics),
            governor: governor, eventLoopGroup: eventLoopGroup, logger: logger)
        self.cache = cache
        let devMode = DevMode(setting: settings.devMode, logger: logger)
        self.devMode = devMode
        self.rendering = AnswerRendering(settings: settings)
        let enabledCache = settings.cache.enabled ? cache : nil
        self.stages = .standard(
            settings: settings,
            endpoints: OwnEndpoints(
                tokens: tokens, users: users, tee: tee, metrics: metrics, governor: governor, cache: enabledCache, devMode: devMode,
                access: access, listensOpenly: !settings.listensOnLoopbackOnly, activity: self.activity, reloads: self.reloads,
                cacheMaxBytes: settings.cache.maxBytes),
            users: users ?? NoUsers(), governor: governor, cache: enabledCache, devMode: devMode, access: access)
        self.upstream = upstream
        self.tokens = tokens
        self.users = users
        self.tee = tee
        self.logger = logger
        self.requestLines = RequestLogLine.writer(for: logger)
        self.metrics = metrics
    }

    /// Writes a finished request's log line, at `info` (the caller checks the level before it
    /// builds the line).
    func writeRequestLine(_ line: RequestLogLine) {
        if let write = self.requestLines {
            write(line)
        } else {
            self.logger.log(level: .info, RequestLogLine.message, metadata: line.metadata, source: RequestLogLine.source)
        }
    }
}
