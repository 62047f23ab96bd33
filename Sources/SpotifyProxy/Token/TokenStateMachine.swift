/// The token schedule, free of I/O: when to refresh, which token may be injected, what a
/// failure or an upstream 401 means. The caller owns the clock and the randomness and feeds
/// both in, so every decision is reproducible in a test.
public struct TokenStateMachine<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    public struct Configuration: Sendable, Equatable {
        /// Refresh when this fraction of the lifetime has passed.
        public var refreshAheadFraction: Double
        /// Plus or minus this fraction of the lifetime, so that several proxies do not refresh in step.
        public var jitterFraction: Double
        public var initialBackoff: Duration
        public var maximumBackoff: Duration
        /// Retry delay after `invalid_client`: a configuration error is not retried in a hot loop.
        public var configurationErrorBackoff: Duration
        /// A 401 for the current token forces a refresh at most once per this interval (or per
        /// the fifth of a token's lifetime past its refresh, when that is shorter): an endpoint
        /// that refuses every app token (`/v1/me`) must not make a token request per call.
        public var unauthorizedRefreshInterval: Duration
        /// After `invalid_grant`, how soon the fetcher looks again for a new login's refresh
        /// token (it asks Spotify only once it finds another, so looking often costs nothing).
        public var refusedGrantRecheck: Duration = .seconds(2)

        public init(
            refreshAheadFraction: Double = 0.8,
            jitterFraction: Double = 0.05,
            initialBackoff: Duration = .milliseconds(250),
            maximumBackoff: Duration = .seconds(30),
            configurationErrorBackoff: Duration = .seconds(60),
            unauthorizedRefreshInterval: Duration = .seconds(30)
        ) {
            self.refreshAheadFraction = refreshAheadFraction
            self.jitterFraction = jitterFraction
            self.initialBackoff = initialBackoff
            self.maximumBackoff = maximumBackoff
            self.configurationErrorBackoff = configurationErrorBackoff
            self.unauthorizedRefreshInterval = unauthorizedRefreshInterval
        }
    }

    public struct Token: Sendable, Equatable {
        public var value: String
        /// Past this instant the token is never injected; it lies before the real expiry by a
        /// margin that covers the request's trip upstream.
        public var usableUntil: Instant
        public var expiresAt: Instant
        /// `expires_in` as the accounts service gave it (up to ``TokenGrant/longestLifetime``).
        public var lifetime: Duration
    }

    public typealias Failure = TokenFailure

    public enum Action: Sendable, Equatable {
        /// Start one refresh now, then report its outcome.
        case refresh
        /// Nothing to do before this instant (or before an invalidation wakes the caller).
        case sleep(until: Instant)
        /// A refresh is already in flight: wait for its outcome.
        case awaitRefresh
    }

    public enum Readiness: Sendable, Equatable {
        case ready
        case notReady(reason: String)
    }

    public let configuration: Configuration
    public private(set) var token: Token?
    public private(set) var lastFailure: Failure?
    private var backoff: Backoff
    public var consecutiveFailures: Int { self.backoff.failures }
    private var refreshInFlight = false
    /// `nil` means as soon as possible.
    private var nextRefreshAt: Instant?
    /// When a 401 last dropped the current token.
    private var lastForcedRefresh: Instant?
    /// New credentials came while a refresh with the old ones was under way.
    private var credentialsReplacedDuringRefresh = false
    /// The token was forgotten while a refresh was under way: what it brings is not kept.
    private var forgottenDuringRefresh = false

    public init(configuration: Configuration = .init()) {
        self.configuration = configuration
        self.backoff = Backoff(initial: configuration.initialBackoff, maximum: configuration.maximumBackoff)
    }

    /// Whether a refresh is under way.
    public var isRefreshing: Bool { self.refreshInFlight }

    /// What the driver should do at `now`.
    public mutating func nextAction(now: Instant) -> Action {
        if self.refreshInFlight { return .awaitRefresh }
        if let due = self.nextRefreshAt, now < due { return .sleep(until: due) }
        self.refreshInFlight = true
        return .refresh
    }

    /// The token to inject at `now`, or `nil` when none may be injected.
    public func usableToken(now: Instant) -> String? {
        guard let token = self.token, now < token.usableUntil else { return nil }
        return token.value
    }

    /// A refresh that was started at `requestedAt` succeeded. `jitter` is a random number in 0..<1.
    public mutating func refreshSucceeded(value: String, expiresIn: Duration, requestedAt: Instant, jitter: Double) {
        self.refreshInFlight = false
        self.credentialsReplacedDuringRefresh = false
        self.lastFailure = nil
        self.backoff.succeed()
        if self.forgottenDuringRefresh {
            // Started before the grant was withdrawn: its token is not used; the next refresh,
            // now, asks with what is there since.
            self.forgottenDuringRefresh = false
            self.token = nil
            self.nextRefreshAt = nil
            return
        }
        // The lifetime counts from when the request left, never from when the answer came.
        let expiresAt = requestedAt.advanced(by: expiresIn)
        let ahead = self.configuration.refreshAheadFraction
        let margin = min(expiresIn.scaled(by: (1 - ahead) / 2), .seconds(30))
        self.token = Token(value: value, usableUntil: expiresAt.advanced(by: .zero - margin), expiresAt: expiresAt, lifetime: expiresIn)
        let spread = (jitter * 2 - 1) * self.configuration.jitterFraction
        // Never later than a margin before the token stops being injected: with `refresh_ahead`
        // near 1 the jitter would otherwise put the refresh past it, and requests would wait.
        let planned = requestedAt.advanced(by: expiresIn.scaled(by: max(0.05, ahead + spread)))
        let latest = expiresAt.advanced(by: .zero - margin - margin)
        self.nextRefreshAt = latest < planned ? latest : planned
    }

    /// A refresh failed at `now`. `jitter` is a random number in 0..<1.
    public mutating func refreshFailed(_ failure: Failure, now: Instant, jitter: Double) {
        self.refreshInFlight = false
        self.forgottenDuringRefresh = false
        self.lastFailure = failure
        var delay = self.backoff.fail(jitter: jitter)
        let replaced = self.credentialsReplacedDuringRefresh
        self.credentialsReplacedDuringRefresh = false
        switch failure {
        case .invalidClient where replaced, .invalidGrant where replaced:
            // Refused credentials replaced meanwhile (a reload, a new login): the new ones are
            // tried now, and callers wait for that instead of being refused.
            self.lastFailure = nil
            delay = .zero
        case .invalidClient, .wrongEndpoint:
            // A configuration error is not retried in a hot loop.
            delay = self.configuration.configurationErrorBackoff
        case .invalidGrant:
            // A refused refresh token is not sent again: the fetcher asks Spotify only once a new
            // login has stored another, so a re-login takes effect within this short recheck.
            delay = self.configuration.refusedGrantRecheck
        case .transient:
            break
        }
        self.nextRefreshAt = now.advanced(by: delay)
    }

    /// The credentials were replaced (the app's by a reload, a user's refresh token by a new
    /// login): a refresh that the old ones had refused is tried again now, not after the
    /// configuration error's backoff or the refused grant's recheck.
    public mutating func credentialsReplaced(now: Instant) {
        if self.refreshInFlight {
            // The refresh under way uses the old ones: should they be refused, retry at once.
            self.credentialsReplacedDuringRefresh = true
            return
        }
        switch self.lastFailure {
        case .invalidClient, .invalidGrant:
            // Callers wait for that refresh (up to `token_wait`) instead of being refused at once.
            self.lastFailure = nil
            self.nextRefreshAt = now
        case .wrongEndpoint, .transient, nil:
            return
        }
    }

    /// The grant behind the token was withdrawn (a user logged out): the token held is never
    /// used again, and the next refresh is now (it finds whether a new login is there).
    public mutating func forgetToken(now: Instant) {
        self.token = nil
        if self.refreshInFlight {
            self.forgottenDuringRefresh = true
        } else {
            self.nextRefreshAt = now
        }
    }

    /// An upstream answered 401 to a request that carried `value`.
    public mutating func unauthorized(value: String, now: Instant) -> UnauthorizedVerdict {
        guard let token = self.token, token.value == value else { return .replay }
        // Short-lived tokens (tests, the demo) expire more often than the interval: each one's
        // expiry may force a refresh, so the interval is at most the part of a lifetime that
        // lies past its scheduled refresh.
        let interval = min(
            self.configuration.unauthorizedRefreshInterval, token.lifetime.scaled(by: 1 - self.configuration.refreshAheadFraction))
        if let last = self.lastForcedRefresh, now < last.advanced(by: interval) {
            // Should the token really be revoked, the first 401 after the interval replaces it.
            return .passThrough
        }
        self.lastForcedRefresh = now
        self.token = nil
        if !self.refreshInFlight { self.nextRefreshAt = now }
        return .refreshAndReplay
    }

    /// Whether a caller without a token should be answered at once rather than wait: the
    /// credentials were refused, so no refresh can succeed before the next retry.
    public var failsFast: Bool {
        switch self.lastFailure {
        case .invalidClient, .wrongEndpoint, .invalidGrant: return true
        case .transient, nil: return false
        }
    }

    /// How long a caller without a token should wait before trying again, at least one second.
    public func retryAfter(now: Instant) -> Duration {
        guard let due = self.nextRefreshAt else { return .seconds(1) }
        return max(now.duration(to: due), .seconds(1))
    }

    public func readiness(now: Instant) -> Readiness {
        if self.usableToken(now: now) != nil { return .ready }
        switch self.lastFailure {
        case .invalidClient(let message):
            return .notReady(
                reason: "Spotify's accounts service refused the app's credentials (\(message)): "
                    + "set SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET (or [spotify] client_id and client_secret) "
                    + "to your app's values from https://developer.spotify.com/dashboard")
        case .wrongEndpoint(let message):
            return .notReady(
                reason: "the token endpoint is not there (\(message)): check spotify.token_url (or --token-url); "
                    + "Spotify's is https://accounts.spotify.com/api/token")
        case .transient(let message):
            return .notReady(reason: "the token endpoint is failing (\(message)); retrying with backoff")
        case .invalidGrant(let message):
            return .notReady(reason: message)
        case nil:
            return .notReady(reason: self.token == nil ? "no access token has been obtained yet" : "the access token expired; refreshing")
        }
    }
}

/// Why a token refresh failed.
public enum TokenFailure: Sendable, Equatable {
    /// A network error, a 5xx, a malformed answer: retried with exponential backoff.
    case transient(String)
    /// The accounts service refused the grant (`invalid_client`, or any other 4xx but 404,
    /// 405, 408 and 429): a configuration error, retried slowly.
    case invalidClient(String)
    /// 404 or 405 from `token_url`: no token endpoint there, a configuration error too.
    case wrongEndpoint(String)
    /// A user's refresh token was refused (`invalid_grant`: revoked, expired after six months,
    /// or rotated by someone else). Final for that refresh token: only a new login helps, so
    /// callers are answered at once; the message says which command to run.
    case invalidGrant(String)
}

/// What an upstream 401 means for the request that got it.
public enum UnauthorizedVerdict: Sendable, Equatable {
    /// It was the current token and no 401 forced a refresh within the interval: the token has
    /// been dropped and a refresh is due now (the caller wakes the driver); replay once.
    case refreshAndReplay
    /// The request carried an older token: a newer one is held or on its way; replay once with it.
    case replay
    /// A 401 for the current token within the interval since the last forced refresh: the
    /// endpoint, not the token, said no. The client gets the 401; the token stays.
    case passThrough
}
