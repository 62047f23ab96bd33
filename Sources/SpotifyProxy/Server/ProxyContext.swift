import Logging
import NIOCore

/// Where requests get their bearer token; ``TokenRefresher`` is the real one.
public protocol AccessTokenSource: AnyObject, Sendable {
    func token(on eventLoop: any EventLoop) -> TokenLookup
    /// Reports an upstream 401 for a request that carried `token`; says whether to replay it.
    func unauthorized(token: String) -> UnauthorizedVerdict
    /// `nil` while a valid token is held, else why not.
    var readinessProblem: String? { get }
}

extension TokenRefresher: AccessTokenSource {
    public var readinessProblem: String? {
        switch self.readiness {
        case .ready: nil
        case .notReady(let reason): reason
        }
    }
}

/// A proxy without user logins: every user-token request is told to log in.
struct NoUsers: UserDirectory {
    func resolve(_ requested: String?) -> UserResolution { requested.map { .unknown($0) } ?? .none }
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
    public let logger: Logger
    public let metrics: ProxyMetrics
    /// What links in bodies may start with: Spotify's own base and the configured `api_url`.
    let linkBases: LinkRewriter.Bases

    public init(
        settings: ListenerSettings, upstream: UpstreamClient, tokens: any AccessTokenSource, users: UserTokens?, tee: TeeWriter?,
        logger: Logger, metrics: ProxyMetrics = ProxyMetrics()
    ) {
        self.settings = settings
        let governor = Governor()
        self.governor = governor
        self.stages = .standard(
            settings: settings, endpoints: OwnEndpoints(tokens: tokens, users: users, tee: tee, metrics: metrics, governor: governor),
            users: users ?? NoUsers(), governor: governor)
        self.upstream = upstream
        self.tokens = tokens
        self.users = users
        self.tee = tee
        self.logger = logger
        self.metrics = metrics
        self.linkBases = LinkRewriter.Bases([LinkRewriter.spotifyBase, settings.apiURL])
    }
}
