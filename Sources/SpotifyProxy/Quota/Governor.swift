import Foundation
import Logging
import Synchronization

/// One scope's rate-limit state as Spotify reported it (the app's, or one user's): after a 429,
/// the scope is limited until its `Retry-After` has passed. Pure: the caller gives the time, so
/// every decision is tested with plain instants.
public struct GovernorStateMachine<Instant: InstantProtocol>: Sendable, Equatable where Instant.Duration == Duration {
    public enum Decision: Sendable, Equatable {
        case pass
        /// Still limited for `remaining`; `reason` is Spotify's, when its answer gave one.
        case limited(remaining: Duration, reason: String?)

        var remaining: Duration {
            if case .limited(let remaining, _) = self { return remaining }
            return .zero
        }
    }

    /// A 429 without a usable `Retry-After` limits for Spotify's rolling window.
    public static var defaultRetryAfter: Duration { .seconds(30) }

    public private(set) var limitedUntil: Instant?
    public private(set) var reason: String?

    public init() {}

    /// Spotify answered 429 at `now`, saying `retryAfter` (nil: none given). A later, shorter limit
    /// never shortens an earlier one: the penalty Spotify announced is the one that holds.
    public mutating func rateLimited(retryAfter: Duration?, now: Instant) {
        let until = now.advanced(by: retryAfter ?? Self.defaultRetryAfter)
        if let current = self.limitedUntil, current >= until { return }
        self.limitedUntil = until
        self.reason = nil
    }

    /// The 429's body named a reason (`QUOTA_EXCEEDED`); it is kept while the limit lasts.
    public mutating func reasonArrived(_ reason: String) {
        if self.limitedUntil != nil { self.reason = reason }
    }

    public func decide(now: Instant) -> Decision {
        guard let until = self.limitedUntil, now < until else { return .pass }
        return .limited(remaining: now.duration(to: until), reason: self.reason)
    }
}

/// `[governor]`: what happens to requests while Spotify holds the app limited, and the
/// optional pacing before it ever does.
public struct GovernorSettings: Sendable, Equatable {
    public enum Policy: String, Sendable {
        /// Answer 429 at once with the remaining `Retry-After`.
        case fail
        /// Hold requests while the limit ends within `max_wait`, then forward them.
        case wait
    }

    public var policy = Policy.fail
    /// The longest a request is held (by the `wait` policy or by pacing) before the proxy
    /// answers 429 itself.
    public var maxWait: Duration = .seconds(10)
    /// At most about this many upstream requests per rolling 30 s (nil: no pacing).
    public var budget: Int?

    public init() {}
}

/// A request the governor holds before it goes upstream.
public struct GovernorHold: Sendable, Equatable {
    public var duration: Duration
    /// Its pacing slot is taken: it goes when the hold ends (unless a limit came meanwhile).
    public var paced: Bool
}

/// What the governor says of a request about to go upstream.
public enum GovernorAdmission: Sendable, Equatable {
    case pass
    /// Hold it this long: then go, its slot taken (`paced`), or ask again (the `wait` policy
    /// waiting out a limit: with a `[governor] budget` the requests it held are then paced, not
    /// sent in the same instant; without one they all go when the limit ends, as their clients
    /// would have after `Retry-After`).
    case hold(Duration, paced: Bool)
    case refuse(LocalAnswer)
}

/// Whose quota a request spends: the app's, and for user-token requests the user's too.
public protocol RequestGovernor: Sendable {
    /// Whether `credential`'s request may go upstream now, be held first, or is answered 429.
    /// `pacing`: a `[governor] budget` slot is taken here too; without it only a limit is
    /// looked at (a request that spends its slot later, where it is sure to go upstream).
    /// `waited`: how long the request was held already; `max_wait` counts it, so that a request
    /// held by a limit and then by pacing is not held longer than `max_wait` in all.
    func admit(_ credential: Credential, pacing: Bool, waited: Duration) -> GovernorAdmission
    /// Whether `credential`'s request may go upstream now; a refusal is counted as answered locally.
    func decide(_ credential: Credential) -> GovernorStateMachine<ContinuousClock.Instant>.Decision
    /// Whether `credential`'s requests are limited now, without counting anything.
    func isLimited(_ credential: Credential) -> Bool
}

/// The governor of a running proxy: Spotify limits per app, so one 429 limits every app-token
/// request (and every user's, which also count against the app); a 429 on a user's request
/// limits that user as well.
public final class Governor: RequestGovernor {
    public typealias Machine = GovernorStateMachine<ContinuousClock.Instant>

    private struct State {
        var app = Machine()
        var users: [String: Machine] = [:]
        var pacer: PacerStateMachine<ContinuousClock.Instant>?
        var upstream429s = 0
        /// Requests the proxy answered 429 itself, by why: Spotify's reason (`QUOTA_EXCEEDED`),
        /// `rate_limited` when it gave none, `budget` for the proxy's own pacing.
        var answeredLocally: [String: Int] = [:]
    }

    /// The reasons of the proxy's own 429s: Spotify's 429 named none, or the proxy's pacing.
    static let unnamedLimitReason = "rate_limited", budgetReason = "budget"
    static let localReasons = [unnamedLimitReason, budgetReason]
    /// The reasons Spotify's 429s are known to give (the facts sheet: since July 2026).
    static let spotifyReasons: Set = ["QUOTA_EXCEEDED"]

    /// What a 429 answered locally is counted under: Spotify's reason when it is a known one,
    /// `other` for any other (a metric's label must not take whatever the upstream sends),
    /// `rate_limited` when it gave none.
    static func countedReason(_ reason: String?) -> String {
        guard let reason else { return Self.unnamedLimitReason }
        return Self.spotifyReasons.contains(reason) ? reason : "other"
    }

    private let state: Mutex<State>
    public let settings: GovernorSettings
    /// Says when Spotify begins to limit the app (not at every 429 while it does).
    private let logger: Logger?

    public init(settings: GovernorSettings = GovernorSettings(), logger: Logger? = nil) {
        self.settings = settings
        self.logger = logger
        self.state = Mutex(State(pacer: settings.budget.map { PacerStateMachine(budget: $0) }))
    }

    public func admit(_ credential: Credential, pacing: Bool = true, waited: Duration = .zero) -> GovernorAdmission {
        let now = ContinuousClock.now
        let maxWait = self.maxWait(after: waited)
        return self.state.withLock { state in
            let limit = Self.decide(credential, in: &state, now: now)
            if case .limited(let remaining, let reason) = limit {
                if self.settings.policy == .wait, remaining <= maxWait { return .hold(remaining, paced: false) }
                state.answeredLocally[Self.countedReason(reason), default: 0] += 1
                return .refuse(GovernorStage.refusal(limit)!)
            }
            guard pacing, var pacer = state.pacer else { return .pass }
            let admission = pacer.admit(now: now, maxWait: maxWait)
            state.pacer = pacer
            switch admission {
            case .now:
                return .pass
            case .after(let wait):
                return .hold(wait, paced: true)
            case .refuse(let retryAfter):
                state.answeredLocally[Self.budgetReason, default: 0] += 1
                return .refuse(GovernorStage.budgetRefusal(retryAfter: retryAfter, budget: self.settings.budget ?? 0, maxWait: self.settings.maxWait))
            }
        }
    }

    /// What is left of `max_wait` for a request held `waited` already.
    private func maxWait(after waited: Duration) -> Duration {
        max(.zero, self.settings.maxWait - waited)
    }

    private static func decide(_ credential: Credential, in state: inout State, now: ContinuousClock.Instant) -> Machine.Decision {
        var decision = state.app.decide(now: now)
        if case .user(let label) = credential, let user = state.users[label]?.decide(now: now), user.remaining > decision.remaining {
            decision = user
        }
        return decision
    }

    /// The limit now, for a request that was held or waited for its token (its pacing slot is
    /// taken already); a refusal is counted.
    public func decide(_ credential: Credential) -> Machine.Decision {
        let now = ContinuousClock.now
        return self.state.withLock { state in
            let decision = Self.decide(credential, in: &state, now: now)
            if case .limited(_, let reason) = decision { state.answeredLocally[Self.countedReason(reason), default: 0] += 1 }
            return decision
        }
    }

    public func isLimited(_ credential: Credential) -> Bool {
        let now = ContinuousClock.now
        return self.state.withLock { state in
            if case .limited = Self.decide(credential, in: &state, now: now) { return true }
            return false
        }
    }

    /// An upstream 429 for a request that carried `credential`.
    public func rateLimited(_ credential: Credential, retryAfter: Duration?) {
        let now = ContinuousClock.now
        let began = self.state.withLock { state in
            state.upstream429s += 1
            let wasLimited = if case .limited = state.app.decide(now: now) { true } else { false }
            state.app.rateLimited(retryAfter: retryAfter, now: now)
            if case .user(let label) = credential { state.users[label, default: Machine()].rateLimited(retryAfter: retryAfter, now: now) }
            return !wasLimited
        }
        guard began, let logger else { return }
        let seconds = (retryAfter ?? Machine.defaultRetryAfter).wholeSecondsRoundedUp
        logger.notice(
            "Spotify rate-limited the app (429): the proxy answers for it until Retry-After ends (policy \(self.settings.policy.rawValue))",
            metadata: ["retry_after_s": .stringConvertible(seconds)])
    }

    /// Spotify answered 429 with `retryAfter` (its header's value): limits `credential` for it,
    /// and returns the `Retry-After` to give the client in its place (nil: Spotify's stands).
    public func rateLimited(_ credential: Credential, retryAfterHeader retryAfter: String?) -> String? {
        let limit = Self.retryAfter(retryAfter)
        self.rateLimited(credential, retryAfter: limit)
        return Self.retryAfterForClient(retryAfter, limit: limit)
    }

    /// The reason in a 429's body, once it has arrived.
    public func reasonArrived(_ credential: Credential, reason: String) {
        self.state.withLock { state in
            state.app.reasonArrived(reason)
            if case .user(let label) = credential { state.users[label]?.reasonArrived(reason) }
        }
    }

    /// The app's limit now: seconds left and reason, nil when not limited; with the counters.
    public var status: (limited: (seconds: Int, reason: String?)?, upstream429s: Int, answeredLocally: [String: Int]) {
        let now = ContinuousClock.now
        return self.state.withLock { state in
            var limited: (Int, String?)?
            if case .limited(let remaining, let reason) = state.app.decide(now: now) { limited = (remaining.wholeSecondsRoundedUp, reason) }
            return (limited, state.upstream429s, state.answeredLocally)
        }
    }

    /// The `reason` of a Spotify error body (`{"error":{"status":429,…,"reason":"QUOTA_EXCEEDED"}}`).
    public static func reason(inBody body: [UInt8]) -> String? {
        struct Body: Decodable {
            struct Error: Decodable { var reason: String? }
            var error: Error?
        }
        return (try? JSONDecoder().decode(Body.self, from: Data(body)))?.error?.reason
    }

    /// The `Retry-After` to give a client with Spotify's 429 in its place, when Spotify's is not
    /// whole seconds as clients read them: the limit the governor applies for it, in whole
    /// seconds. Told 0, or nothing, a client retries at once, into the proxy's own 429s; told
    /// `1.5` or a date, urllib3 (spotipy's) fails on it. Nil: Spotify's stands.
    public static func retryAfterForClient(_ value: String?, now: Date = Date()) -> String? {
        Self.retryAfterForClient(value, limit: Self.retryAfter(value, now: now))
    }

    /// The same, `limit` being ``retryAfter(_:now:)`` of `value` (read once for both).
    static func retryAfterForClient(_ value: String?, limit: Duration?) -> String? {
        let seconds = (limit ?? GovernorStateMachine<ContinuousClock.Instant>.defaultRetryAfter).components.seconds
        let text = String(seconds)
        return value?.trimmingCharacters(in: .whitespaces) == text ? nil : text
    }

    /// The longest limit believed: Spotify's longest reported penalties are a day (86,400 s); a
    /// larger value is taken as a day, so a corrupt header cannot lock the proxy until a restart.
    public static let longestLimit = 86_400

    /// `Retry-After` as Spotify sends it, whole seconds, or as RFC 9110 allows it too, a fraction
    /// (rounded up) or an HTTP date (the time until it, from `now`); at most a day; nil when
    /// absent, unreadable, past, or 0, which Spotify has sent with a 429 while it went on refusing
    /// (spotify/web-api#542): believed, it would limit nothing, and every client's retry would
    /// lengthen the penalty.
    public static func retryAfter(_ value: String?, now: Date = Date()) -> Duration? {
        guard let text = value?.trimmingCharacters(in: .whitespaces) else { return nil }
        guard let seconds = Double(text) ?? Self.httpDate(text).map({ $0.timeIntervalSince(now) }), seconds > 0, seconds.isFinite else { return nil }
        // Clamped as a Double first: converting a huge value to Int would trap.
        return .seconds(Int(min(seconds.rounded(.up), Double(Self.longestLimit))))
    }

    /// An HTTP date in its preferred form (RFC 9110 §5.6.7, `Sun, 06 Nov 1994 08:49:37 GMT`).
    static func httpDate(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter.date(from: text)
    }
}

/// While Spotify holds the app (or the request's user) rate-limited, the proxy answers 429 itself
/// with the time that remains: retrying while limited has been reported to lengthen the penalty,
/// and clients that each learn it alone handle it badly.
public struct GovernorStage: RequestStage {
    let governor: any RequestGovernor

    public init(governor: any RequestGovernor) {
        self.governor = governor
    }

    public func decide(_ request: inout ProxyRequest) -> StageDecision {
        // An assembled answer's parts are governed one by one where they go upstream (in the
        // cache): a part the cache holds spends no quota, and is given even while Spotify limits
        // the app.
        if request.assembleFirst { return .continue }
        // A request through the cache spends a budget slot only if it goes upstream: as the
        // leader of identical concurrent requests, in the cache. Here only a limit holds it.
        switch self.governor.admit(request.credential, pacing: request.cache == nil, waited: .zero) {
        case .pass:
            return .continue
        case .hold(let duration, let paced):
            request.hold = GovernorHold(duration: duration, paced: paced)
            return .continue
        case .refuse(let answer):
            return .answer(answer)
        }
    }

    /// The proxy's own 429 when the next `[governor] budget` slot is further away than `max_wait`.
    /// The budget is paced (a request every 30 s / budget, a few at once), so the slots are not
    /// "spent" for the window: the next one is too far for a request to wait for it.
    static func budgetRefusal(retryAfter: Duration, budget: Int, maxWait: Duration) -> LocalAnswer {
        let seconds = max(1, retryAfter.wholeSecondsRoundedUp)
        let interval = PacerStateMachine<ContinuousClock.Instant>(budget: max(1, budget)).interval
        return LocalAnswer(
            SpotifyError(
                status: 429,
                message:
                    "the proxy paces Spotify requests to its [governor] budget of \(budget) per 30 s (one every \(Self.describe(interval))), and the next free slot is \(seconds) s away, more than [governor] max_wait (\(Self.describe(maxWait))) lets a request wait: retry after Retry-After (or raise max_wait or budget)",
                headers: [("Retry-After", String(seconds))]))
    }

    /// `3 s`, `1.5 s`, `300 ms`.
    static func describe(_ duration: Duration) -> String {
        let milliseconds = Int(duration / .milliseconds(1))
        if milliseconds < 1000 { return "\(milliseconds) ms" }
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000) s" : String(format: "%.1f s", Double(milliseconds) / 1000)
    }

    /// The proxy's own 429 while `decision` is a limit.
    static func refusal(_ decision: GovernorStateMachine<ContinuousClock.Instant>.Decision) -> LocalAnswer? {
        guard case .limited(let remaining, let reason) = decision else { return nil }
        let seconds = remaining.wholeSecondsRoundedUp
        return LocalAnswer(
            SpotifyError(
                status: 429,
                message:
                    "Spotify's rate limit for this app holds for another \(seconds) s; the proxy answers for it, as retrying earlier lengthens the penalty (retry after Retry-After)",
                headers: [("Retry-After", String(seconds))], reason: reason))
    }
}

extension Duration {
    /// Whole seconds, a started second counting as one (a `Retry-After` must not be early).
    var wholeSecondsRoundedUp: Int {
        let (seconds, attoseconds) = self.components
        return Int(seconds) + (attoseconds > 0 ? 1 : 0)
    }
}
