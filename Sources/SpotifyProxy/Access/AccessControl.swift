import NIOHTTP1
import Synchronization

/// `[access]`: the keys in force (replaced whole on reload) and each key's budget window.
/// Shared by every connection; a reload swaps the keys between two requests, never during one.
public final class AccessControl: Sendable {
    public struct Settings: Sendable, Equatable {
        /// nil: access keys are off (the proxy's own endpoints are then taken from loopback only).
        public var keys: AccessKeys?
        /// `[access] allow_open`: a non-loopback listener without keys, on purpose.
        public var allowOpen: Bool

        public init(keys: AccessKeys? = nil, allowOpen: Bool = false) {
            self.keys = keys
            self.allowOpen = allowOpen
        }
    }

    private struct State {
        var settings: Settings
        /// Per key label with a budget: the times of its recent requests.
        var windows: [String: RollingWindow<ContinuousClock.Instant>] = [:]
    }

    private let state: Mutex<State>
    private let now: @Sendable () -> ContinuousClock.Instant

    public init(_ settings: Settings, now: @escaping @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }) {
        self.state = Mutex(State(settings: settings))
        self.keysInForce = Atomic(settings.keys != nil)
        self.now = now
    }

    public var settings: Settings { self.state.withLock { $0.settings } }

    /// Requests answered 429 because their key's budget was spent (``KeyBudgetStage``).
    private let budgetRefusals = Atomic<Int>(0)
    /// The reason they are counted under, with the governor's own 429s (metrics, status).
    public static let budgetRefusalReason = "key_budget"
    var budgetRefused: Int { self.budgetRefusals.load(ordering: .relaxed) }

    /// Whether keys are in force (read for every request: an atomic, not the lock).
    private let keysInForce: Atomic<Bool>
    var keysOn: Bool { self.keysInForce.load(ordering: .relaxed) }

    /// Replaces the keys (a reload). A key that keeps a budget keeps its recent requests, under
    /// its new budget if that changed: a reload does not give a key a fresh 30 s.
    public func replace(_ settings: Settings) {
        self.state.withLock { state in
            state.settings = settings
            self.keysInForce.store(settings.keys != nil, ordering: .relaxed)
            var kept: [String: RollingWindow<ContinuousClock.Instant>] = [:]
            for (label, window) in state.windows {
                guard let budget = settings.keys?.label(label)?.budget else { continue }
                kept[label] = window.resized(to: budget)
            }
            state.windows = kept
        }
    }

    enum Authentication {
        /// Access keys are off (a reload may have turned them off since `keysOn` was read).
        case keysOff
        /// No key, or one that is unknown or revoked.
        case refused
        case accepted(AccessKey)
    }

    func authenticate(_ presented: Substring?) -> Authentication {
        // The keys are copied out (a reference count), so hashing happens outside the lock.
        guard let keys = self.state.withLock({ $0.settings.keys }) else { return .keysOff }
        guard let presented, let key = keys.authenticate(presented) else { return .refused }
        return .accepted(key)
    }

    /// Spends one request of `key`'s budget: nil when admitted, else how long until one is free.
    func spend(_ key: AccessKey) -> Duration? {
        guard let budget = key.budget else { return nil }
        let now = self.now()
        return self.state.withLock { state in
            var window = state.windows[key.label] ?? RollingWindow(limit: budget)
            if window.limit != budget {
                // A request that raced a reload carries the key as it was: the budget in force counts.
                window = window.resized(to: state.settings.keys?.label(key.label)?.budget ?? budget)
            }
            defer { state.windows[key.label] = window }
            switch window.admit(now: now) {
            case .admitted:
                return nil
            case .refused(let retryAfter):
                self.budgetRefusals.add(1, ordering: .relaxed)
                return retryAfter
            }
        }
    }
}

/// Who may use the proxy. With access keys on, every request but `/healthz` must present one —
/// `Authorization: Bearer KEY` (where a Spotify client puts its token, so spotipy, tekore and
/// curl need no change) or `X-Proxy-Key: KEY` — and gets 401 in Spotify's shape without one.
/// With keys off, the proxy's own endpoints are taken from loopback only.
public struct AccessStage: RequestStage {
    public static let keyHeader = "X-Proxy-Key"
    let access: AccessControl

    public init(access: AccessControl) {
        self.access = access
    }

    public func decide(_ request: inout ProxyRequest) -> StageDecision {
        if request.ownEndpoint == .healthz { return .continue }
        // Keys off (the usual case on a laptop): no header is read.
        if !self.access.keysOn {
            guard let endpoint = request.ownEndpoint, endpoint != .simpleSearch, !request.fromLoopback else { return .continue }
            return .answer(Self.localOnly)
        }
        let presented: Substring?
        switch Self.presentedKey(request.head.headers) {
        case .none: presented = nil
        case .key(let key): presented = key
        // Two different keys: which one pays (its budget, its user) would be a guess.
        case .twoKeys: return .answer(Self.twoKeys)
        }
        switch self.access.authenticate(presented) {
        case .keysOff:
            // Keys were turned off by a reload between the two reads.
            guard let endpoint = request.ownEndpoint, endpoint != .simpleSearch, !request.fromLoopback else { return .continue }
            return .answer(Self.localOnly)
        case .refused:
            let answer = LocalAnswer(
                SpotifyError(
                    status: 401,
                    message: presented != nil
                        ? "this access key is not valid for this proxy (unknown or revoked); ask the proxy's operator for a key (spotify-proxy keys new --label NAME)"
                        : "this proxy needs an access key: send it as your Spotify client's token (Authorization: Bearer KEY) or as X-Proxy-Key: KEY; ask the proxy's operator for one (spotify-proxy keys new --label NAME)"
                ))
            return .answer(answer)
        case .accepted(let key):
            request.key = key
            return .continue
        }
    }

    static let twoKeys = LocalAnswer(
        SpotifyError(status: 400, message: "the request has two different X-Proxy-Key headers (or two different Authorization bearers); send one access key"))

    /// Keys off: the proxy's own reports and controls stay on its machine.
    static let localOnly = LocalAnswer(
        SpotifyError(
            status: 403,
            message: "the proxy's own endpoints are answered only on its machine while access keys are off; set [access] keys_file to reach them with a key"))

    enum PresentedKey: Equatable {
        case none
        case key(Substring)
        /// `X-Proxy-Key` more than once, or `Authorization` with a bearer more than once, with
        /// different keys.
        case twoKeys
    }

    /// `X-Proxy-Key` (every one the same key; an empty one is none), else the bearer token of
    /// `Authorization` (every one the same); one pass over the headers.
    static func presentedKey(_ headers: HTTPHeaders) -> PresentedKey {
        var offered: String?
        var bearer: Substring?
        var bearersDiffer = false
        for (name, value) in headers {
            if name.equalsIgnoringASCIICase("x-proxy-key") {
                let key = value.trimmingSpaces()
                guard !key.isEmpty else { continue }
                if let offered, offered != key { return .twoKeys }
                offered = key
            } else if name.equalsIgnoringASCIICase("authorization") {
                let parts = value.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
                guard parts.count == 2, parts[0].equalsIgnoringASCIICase("bearer") else { continue }
                let key = Substring(parts[1].trimmingSpaces())
                if let bearer, bearer != key { bearersDiffer = true }
                bearer = bearer ?? key
            }
        }
        // X-Proxy-Key wins over the bearers, whichever comes first.
        if let offered { return .key(Substring(offered)) }
        if bearersDiffer { return .twoKeys }
        return bearer.map { .key($0) } ?? .none
    }
}

/// `budget=N` on a key: at most N requests per rolling 30 s from that key, answered 429 with
/// `Retry-After` by the proxy itself beyond it (nothing goes upstream). Every request the key
/// makes to Spotify's paths counts, cache hits included; the proxy's own endpoints do not.
public struct KeyBudgetStage: RequestStage {
    let access: AccessControl

    public init(access: AccessControl) {
        self.access = access
    }

    public func decide(_ request: inout ProxyRequest) -> StageDecision {
        guard let key = request.key, key.budget != nil, let retryAfter = self.access.spend(key) else { return .continue }
        let seconds = max(1, Int((retryAfter + .milliseconds(999)).components.seconds))
        return .answer(
            LocalAnswer(
                SpotifyError(
                    status: 429,
                    message: "the access key \(key.label) has spent its budget of \(key.budget!) requests per 30 s; retry after \(seconds) s",
                    headers: [("Retry-After", String(seconds))])))
    }
}
