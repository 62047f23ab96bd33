import Foundation
import NIOCore
import NIOHTTP1

/// What the proxy's own endpoints report: the token's readiness, the tee's counters, the metrics.
public struct OwnEndpoints: Sendable {
    let tokens: any AccessTokenSource
    let users: UserTokens?
    let tee: TeeWriter?
    let metrics: ProxyMetrics
    let governor: Governor?
    let cache: ResponseCache?
    let devMode: DevMode?
    let access: AccessControl?
    /// The listener is reachable from other machines (`/readyz` warns while no keys guard it).
    let listensOpenly: Bool
    let activity: KeyActivity?
    let reloads: ReloadRecord?
    /// `[cache] max_bytes`, for the status.
    let cacheMaxBytes: Int

    public init(
        tokens: any AccessTokenSource, users: UserTokens? = nil, tee: TeeWriter?, metrics: ProxyMetrics, governor: Governor? = nil,
        cache: ResponseCache? = nil, devMode: DevMode? = nil, access: AccessControl? = nil, listensOpenly: Bool = false,
        activity: KeyActivity? = nil, reloads: ReloadRecord? = nil, cacheMaxBytes: Int = 0
    ) {
        self.access = access
        self.listensOpenly = listensOpenly
        self.activity = activity
        self.reloads = reloads
        self.cacheMaxBytes = cacheMaxBytes
        self.tokens = tokens
        self.users = users
        self.tee = tee
        self.metrics = metrics
        self.governor = governor
        self.cache = cache
        self.devMode = devMode
    }

    /// `/healthz`: the process answers (with the tee's counters when a sink is configured).
    /// `/readyz`: 503 until the app token is held; each logged-in user's state is listed, and a
    /// user without a token does not make the proxy unready. `/metrics`: Prometheus' text format.
    public func answer(_ endpoint: OwnEndpoint) -> LocalAnswer {
        switch endpoint {
        case .healthz:
            guard let stats = self.tee?.stats else { return .json(#"{"status":"ok"}"#) }
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            // As in /admin/status and the log: spool_pending.
            encoder.keyEncodingStrategy = .convertToSnakeCase
            let tee = (try? encoder.encode(stats)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
            return .json(#"{"status":"ok","tee":\#(tee)}"#)
        case .readyz:
            if let problem = self.tokens.readinessProblem {
                return LocalAnswer(
                    SpotifyError(status: 503, message: "not ready: \(problem.reason)", headers: [("Retry-After", String(problem.retryAfterSeconds))]))
            }
            return .json(#"{"status":"ready"\#(self.openWarningJSON)\#(self.governorJSON)\#(self.devModeJSON)\#(self.usersJSON)}"#)
        case .simpleSearch:
            // Answered from Spotify's search by ``SimpleSearchStage`` and the handler, never from here.
            return LocalAnswer(SpotifyError(status: 500, message: "the simple search was not routed to its stage"))
        case .cachePurge(let prefix):
            guard let cache = self.cache else {
                return LocalAnswer(SpotifyError(status: 404, message: "the cache is off ([cache] max_bytes = 0): nothing to purge"))
            }
            guard prefix.isEmpty || prefix.hasPrefix("/") else {
                return LocalAnswer(SpotifyError(status: 400, message: "prefix must be a path such as /v1/artists (or absent, to empty the whole cache)"))
            }
            let purged = cache.purge(prefix: prefix)
            return .json(#"{"purged":\#(purged)}"#)
        case .status:
            guard let data = try? ProxyStatus.encoder().encode(self.status()) else {
                return LocalAnswer(SpotifyError(status: 500, message: "the status could not be encoded"))
            }
            return .json(String(decoding: data, as: UTF8.self))
        case .metrics:
            let text = self.metrics.render(
                tee: self.tee?.stats, tokenReady: self.tokens.readinessProblem == nil, users: self.users?.statuses() ?? [],
                tokens: [(name: "app", figures: self.tokens.figures)] + (self.users?.figures ?? []),
                governor: self.governorStatus, cache: self.cache?.stats, devMode: self.devMode?.status, reloads: self.reloads?.status)
            let headers = HTTPHeaders([
                ("Content-Type", "text/plain; version=0.0.4; charset=utf-8"), ("Content-Length", String(text.count)), ("Cache-Control", "no-store"),
            ])
            return LocalAnswer(status: 200, headers: headers, body: ByteBuffer(bytes: text), counted: false)
        }
    }
}

extension OwnEndpoints {
    /// The governor's state, its 429s answered locally joined by the access keys' budget refusals.
    var governorStatus: (limited: (seconds: Int, reason: String?)?, upstream429s: Int, answeredLocally: [String: Int])? {
        guard var status = self.governor?.status else { return nil }
        if let refused = self.access?.budgetRefused, refused > 0 { status.answeredLocally[AccessControl.budgetRefusalReason] = refused }
        return status
    }

    /// What `GET /admin/status` answers.
    func status() -> ProxyStatus {
        let problem = self.tokens.readinessProblem?.reason
        var tokens = [ProxyStatus.Token(figures: self.tokens.figures, name: "app")]
        for (name, figures) in self.users?.figures ?? [] { tokens.append(ProxyStatus.Token(figures: figures, name: name)) }
        let governor = self.governorStatus.map { status in
            ProxyStatus.GovernorState(
                limitedForS: status.limited?.seconds, reason: status.limited?.reason, upstream429s: status.upstream429s,
                answeredLocally: status.answeredLocally)
        }
        let cache = self.cache.map { ProxyStatus.CacheState($0.stats, maxBytes: self.cacheMaxBytes) }
        let access = self.access.map { access in
            let settings = access.settings
            return ProxyStatus.AccessState(keys: settings.keys?.keys.count, allowOpen: settings.allowOpen)
        }
        return ProxyStatus(
            pid: getpid(), version: SpotifyProxyVersion.current, ready: problem == nil, problem: problem, tokens: tokens, governor: governor,
            cache: cache, tee: self.tee?.stats, teeBacklog: self.tee?.backlog, requestsLastHour: self.activity?.lastHour() ?? [:], openConnections: self.metrics.openConnections,
            access: access, reload: self.reloads?.status, devMode: self.devMode?.status)
    }

    static let openWarning =
        "listening beyond this machine without access keys ([access] allow_open = true): anyone who reaches it spends the app's quota"

    /// `,"warning":"…"` while the listener is open to the network and no keys guard it.
    var openWarningJSON: String {
        guard self.listensOpenly, let access = self.access, access.settings.keys == nil else { return "" }
        return #","warning":"\#(Self.openWarning)""#
    }

    /// `,"rate_limited":{"for_s":N,"until":"2026-11-30T12:00:00Z","reason":"…"}` while Spotify
    /// holds the app limited (the proxy is still ready: it answers), else nothing.
    var governorJSON: String {
        guard let limited = self.governor?.status.limited else { return "" }
        let reason = limited.reason.map { #","reason":"\#(SpotifyError.escape($0))""# } ?? ""
        let until = ISO8601DateFormatter().string(from: Date().addingTimeInterval(Double(limited.seconds)))
        return #","rate_limited":{"for_s":\#(limited.seconds),"until":"\#(until)"\#(reason)}"#
    }

    /// `,"dev_mode":{"setting":"auto","active":true,"detected":true,"limit_cap":10,…}`.
    var devModeJSON: String {
        guard let status = self.devMode?.status, let data = try? ProxyStatus.encoder().encode(status) else { return "" }
        return #","dev_mode":"# + String(decoding: data, as: UTF8.self)
    }

    /// `,"users":[{"label":"alice","state":"fresh",…}]`, or nothing without users.
    var usersJSON: String {
        guard let users = self.users?.statuses(), !users.isEmpty else { return "" }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        guard let data = try? encoder.encode(users) else { return "" }
        return #","users":"# + String(decoding: data, as: UTF8.self)
    }
}

extension OwnEndpointStage {
    /// The header an admin request must carry: a web page cannot send it to the proxy without
    /// a CORS preflight, which the proxy never grants.
    public static let adminHeader = "X-Spotify-Proxy-Admin"

    /// Admin requests (the cache purge) must carry ``adminHeader``; who may send them at all
    /// (a key holder, or this machine while keys are off) the access stage has decided.
    static func adminRefusal(_ request: ProxyRequest) -> LocalAnswer? {
        guard request.head.headers.first(name: Self.adminHeader) != nil else {
            return LocalAnswer(SpotifyError(status: 403, message: "admin requests must carry the header \(Self.adminHeader): 1 (spotify-proxy cache purge sends it)"))
        }
        return nil
    }
}

/// Answers `/healthz`, `/readyz` and `/metrics` (found by the route stage) from memory.
public struct OwnEndpointStage: RequestStage {
    let endpoints: OwnEndpoints

    public init(endpoints: OwnEndpoints) {
        self.endpoints = endpoints
    }

    public func decide(_ request: inout ProxyRequest) -> StageDecision {
        guard let endpoint = request.ownEndpoint, endpoint != .simpleSearch else { return .continue }
        if case .cachePurge = endpoint, let refusal = Self.adminRefusal(request) { return .answer(refusal) }
        return .answer(self.endpoints.answer(endpoint))
    }
}
