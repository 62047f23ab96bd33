import Logging
import NIOCore
import NIOHTTP1
import Synchronization

/// The standard `Cache-Status` field (RFC 9211) of one answer: `spotify-proxy; hit`,
/// `spotify-proxy; fwd=miss; fwd-status=200; stored`, `spotify-proxy; hit; detail=stale-penalty`.
public struct CacheStatus: Sendable, Equatable, CustomStringConvertible {
    public enum Forward: String, Sendable {
        /// Nothing usable was stored.
        case miss
        /// What was stored had to be revalidated.
        case stale
    }

    public var hit = false
    public var forward: Forward?
    public var forwardStatus: Int?
    public var stored = false
    /// This request waited for another's identical one instead of going upstream itself.
    public var collapsed = false
    /// Why a stale answer was served: `stale-while-revalidate`, `stale-penalty` (Spotify holds
    /// the app rate-limited) or `stale-error` (Spotify could not be reached or failed).
    public var detail: String?

    public init() {}

    public static func hit(detail: String? = nil) -> CacheStatus {
        var status = CacheStatus()
        status.hit = true
        status.detail = detail
        return status
    }

    public var description: String {
        // Appended in place: this runs for every answer the cache gives.
        var text = "spotify-proxy"
        if self.hit { text += "; hit" }
        if let forward = self.forward { text += "; fwd=" + forward.rawValue }
        if let status = self.forwardStatus { text += "; fwd-status=" + String(status) }
        if self.stored { text += "; stored" }
        if self.collapsed { text += "; collapsed" }
        if let detail = self.detail { text += "; detail=" + detail }
        return text
    }
}

/// What a request that went through the cache to Spotify gets.
public enum CacheOutcome: Sendable {
    /// Spotify's answer, or a stored one; `age` (seconds) when it came from the store.
    /// `rendered` is shared by every client given this very answer (the stored entry's, or
    /// one for the waiters of one upstream request), so that its links are rewritten once.
    case answer(UpstreamAnswer, CacheStatus, age: Int?, rendered: RenderedBodies? = nil)
    /// Spotify could not be asked or did not answer, and nothing stored could stand in.
    case failed(LocalAnswer)
    /// Spotify's answer is larger than the cache holds whole: nothing is stored, and the
    /// connection forwards the request itself, streaming.
    case tooLarge
}

/// Why no answer came from Spotify.
public enum ForwardFailure: Error, Sendable {
    case noToken(TokenUnavailable)
    case upstream(UpstreamError)
    /// Spotify limited the app while the request waited for a token: not sent.
    case limited(LocalAnswer)
    /// The answer outgrew ``AppTokenForwarding/maxBodyBytes``.
    case tooLarge

    /// The error the client gets, in Spotify's shape, saying what to do.
    public var answer: LocalAnswer {
        switch self {
        case .noToken(let unavailable): LocalAnswer.noToken(unavailable)
        case .upstream(let error): LocalAnswer.upstreamFailure(error)
        case .limited(let refusal): refusal
        case .tooLarge: LocalAnswer.afterUpstream(SpotifyError(status: 502, message: "Spotify's answer is too large to assemble from; ask for fewer items"))
        }
    }
}

/// How the cache asks Spotify: a whole GET with the app's token (``AppTokenForwarding`` in the
/// proxy; a scripted one in tests).
public protocol CacheForwarding: Sendable {
    /// `headers` are the client's (the first of those coalesced; none for a background
    /// revalidation); `validators` are `If-None-Match` / `If-Modified-Since` for a stored answer
    /// being revalidated.
    func get(_ key: CacheKey, headers: HTTPHeaders, validators: HTTPHeaders, on eventLoop: any EventLoop) async -> Result<UpstreamAnswer, ForwardFailure>
}

/// The shared response cache: app-token GET answers in memory, LRU by bytes, honouring
/// `Cache-Control` and validators, with identical concurrent requests coalesced into one
/// upstream request and stale answers served while revalidating, while Spotify holds the app
/// rate-limited, and while it cannot be reached.
public final class ResponseCache: Sendable {
    public typealias Store = CacheStore<ContinuousClock.Instant>

    public struct Stats: Sendable, Equatable {
        public var hits = 0
        public var staleHits = 0
        public var misses = 0
        public var collapsed = 0
        public var revalidated = 0
        public var stored = 0
        public var evicted = 0
        public var entries = 0
        public var bytes = 0
    }

    private struct State {
        var store: Store
        /// Keys with a request upstream, and who waits for its answer.
        var inFlight: [CacheKey: [EventLoopPromise<CacheOutcome>]] = [:]
        var stats = Stats()
        /// Counts purges: an answer fetched across one is given, not stored.
        var purges = 0
    }

    public let settings: CacheSettings
    private let state: Mutex<State>
    private let upstream: any CacheForwarding
    /// Asked before every request goes upstream from here (a client's miss, a background
    /// revalidation, an assembly's part): its limit holds, and the one request that goes takes
    /// the budget slot. A client that leaves while its request is held does not stop it: its
    /// answer is for every request coalesced with it.
    private let governor: (any RequestGovernor)?
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger

    public init(
        settings: CacheSettings, upstream: any CacheForwarding, governor: (any RequestGovernor)? = nil, eventLoopGroup: any EventLoopGroup,
        logger: Logger
    ) {
        self.settings = settings
        self.state = Mutex(State(store: Store(maxBytes: settings.maxBytes)))
        self.upstream = upstream
        self.governor = governor
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    /// A stored answer that may be given now without going upstream, with its `Cache-Status`:
    /// a fresh one; one stale by at most `stale_while_revalidate` (one background request then
    /// refreshes it); one within `max_stale` while Spotify holds the app limited
    /// (`stale-penalty`). Counted as a hit; nil when the request must go upstream.
    public func storedAnswer(_ key: CacheKey) -> (entry: Store.Entry, status: CacheStatus)? {
        guard self.settings.enabled else { return nil }
        let now = ContinuousClock.now
        guard let entry = self.state.withLock({ $0.store.get(key) }) else { return nil }
        let detail: String?
        switch entry.usability(now: now, settings: self.settings) {
        case .fresh:
            detail = nil
        case .staleWhileRevalidate:
            self.revalidateInBackground(key)
            detail = "stale-while-revalidate"
        case .staleIfError where self.governor?.isLimited(.app) == true:
            detail = "stale-penalty"
        case .staleIfError, .expired:
            return nil
        }
        self.state.withLock { detail == nil ? ($0.stats.hits += 1) : ($0.stats.staleHits += 1) }
        return (entry, .hit(detail: detail))
    }

    /// Asks Spotify for `key` (revalidating what is stored), unless a request for it is already
    /// upstream: then this one waits for that answer (`collapsed`). A failure is given to every
    /// waiter and not stored. Only the request that goes upstream is paced by the governor;
    /// `heldSince`: when the governor first held the client's request (`max_wait` counts from then).
    public func forward(
        _ key: CacheKey, headers: HTTPHeaders, on eventLoop: any EventLoop, heldSince: ContinuousClock.Instant? = nil
    ) -> EventLoopFuture<CacheOutcome> {
        let promise = eventLoop.makePromise(of: CacheOutcome.self)
        let leads = self.state.withLock { state in
            if state.inFlight[key] != nil {
                state.inFlight[key]!.append(promise)
                state.stats.collapsed += 1
                return false
            }
            state.inFlight[key] = [promise]
            state.stats.misses += 1
            return true
        }
        if leads { self.startForward(key, headers: headers, on: eventLoop, heldSince: heldSince) }
        return promise.futureResult.map { outcome in
            guard !leads, case .answer(let answer, var status, let age, let rendered) = outcome else { return outcome }
            status.collapsed = true
            return .answer(answer, status, age: age, rendered: rendered)
        }
    }

    /// A stored answer when it may be given (fresh, or within `stale_while_revalidate` while it
    /// is revalidated in the background), else ``forward(_:headers:on:)``: for the parts of an
    /// assembled answer.
    public func answer(
        _ key: CacheKey, headers: HTTPHeaders, on eventLoop: any EventLoop, heldSince: ContinuousClock.Instant? = nil
    ) -> EventLoopFuture<CacheOutcome> {
        if let (entry, status) = self.storedAnswer(key) {
            return eventLoop.makeSucceededFuture(.answer(entry.answer, status, age: entry.age(now: .now), rendered: entry.rendered))
        }
        return self.forward(key, headers: headers, on: eventLoop, heldSince: heldSince)
    }

    /// A stale answer was served under `stale_while_revalidate`: one background request
    /// refreshes it, unless one is upstream already.
    public func revalidateInBackground(_ key: CacheKey) {
        // While Spotify limits the app, the stale answer stays: asking would lengthen the penalty.
        if self.governor?.isLimited(.app) == true { return }
        let leads = self.state.withLock { state in
            guard state.inFlight[key] == nil else { return false }
            state.inFlight[key] = []
            return true
        }
        if leads { self.startForward(key, headers: HTTPHeaders(), on: self.eventLoopGroup.any()) }
    }

    /// Empties the cache of every answer whose target starts with `prefix`; returns how many.
    public func purge(prefix: String) -> Int {
        self.state.withLock { state in
            state.purges += 1
            return state.store.purge(prefix: prefix)
        }
    }

    public var stats: Stats {
        self.state.withLock { state in
            var stats = state.stats
            stats.entries = state.store.count
            stats.bytes = state.store.bytes
            return stats
        }
    }

    private func startForward(_ key: CacheKey, headers: HTTPHeaders, on eventLoop: any EventLoop, heldSince: ContinuousClock.Instant? = nil) {
        // On a worker loop the fetch stays on its thread (and on its curl handle) throughout.
        Task(executorPreference: eventLoop.preferredTaskExecutor) {
            let outcome = await self.fetch(key, headers: headers, on: eventLoop, heldSince: heldSince)
            let waiters = self.state.withLock { $0.inFlight.removeValue(forKey: key) ?? [] }
            for waiter in waiters { waiter.succeed(outcome) }
        }
    }

    /// One upstream request for `key`, and what it means for the stored answer.
    private func fetch(_ key: CacheKey, headers: HTTPHeaders, on eventLoop: any EventLoop, heldSince: ContinuousClock.Instant?) async -> CacheOutcome {
        let (stored, purges) = self.state.withLock { ($0.store.get(key), $0.purges) }
        var status = CacheStatus()
        status.forward = stored == nil ? .miss : .stale
        let now = ContinuousClock.now
        /// The stored answer, when one may stand in for a failure.
        func standIn(_ detail: String) -> CacheOutcome? {
            guard let stored, stored.usability(now: now, settings: self.settings) != .expired else { return nil }
            status.detail = detail
            self.state.withLock { $0.stats.staleHits += 1 }
            return .answer(stored.answer, status, age: stored.age(now: now), rendered: stored.rendered)
        }
        if let governor = self.governor {
            // The one request that goes upstream takes the budget slot (the governor's stage
            // only looked for a limit: the requests coalesced with this one spend none), is held
            // while the `wait` policy waits out a limit, or is refused.
            var slotTaken = false
            let asked = heldSince ?? ContinuousClock.now
            admission: while true {
                switch governor.admit(.app, pacing: !slotTaken, waited: ContinuousClock.now - asked) {
                case .pass:
                    break admission
                case .hold(let duration, let paced):
                    try? await Task.sleep(for: duration)
                    slotTaken = slotTaken || paced
                case .refuse(let refusal):
                    return standIn("stale-penalty") ?? .failed(refusal)
                }
            }
        }
        var validators = HTTPHeaders()
        if let stored {
            if let etag = stored.answer.etag { validators.add(name: "If-None-Match", value: etag) }
            if let modified = stored.answer.lastModified { validators.add(name: "If-Modified-Since", value: modified) }
        }
        let result = await self.upstream.get(key, headers: headers, validators: validators, on: eventLoop)
        switch result {
        case .failure(.tooLarge):
            return .tooLarge
        case .failure(.limited(let refusal)):
            return standIn("stale-penalty") ?? .failed(refusal)
        case .failure(let failure):
            status.forwardStatus = nil
            return standIn("stale-error") ?? .failed(failure.answer)
        case .success(let answer):
            status.forwardStatus = answer.status
            if answer.status == 304, stored == nil {
                // Nothing was asked conditionally: a 304 cannot be an answer to this request.
                return .failed(LocalAnswer.afterUpstream(SpotifyError(status: 502, message: "Spotify answered 304 Not Modified to a request that had no validator; retry")))
            }
            if answer.status == 304, var refreshed = stored {
                // Still valid: the stored body with the 304's updated headers, fresh again.
                refreshed.answer.headers = Self.updated(refreshed.answer.headers, by: answer.headers)
                // The same body: what was rendered of it stays valid.
                refreshed = Store.Entry(
                    answer: refreshed.answer, storedAt: now, lifetime: self.lifetime(of: refreshed.answer, key: key), rendered: refreshed.rendered)
                self.state.withLock { state in
                    if state.purges == purges { state.stats.evicted += state.store.put(key, refreshed) ?? 0 }
                    state.stats.revalidated += 1
                }
                return .answer(refreshed.answer, status, age: 0, rendered: refreshed.rendered)
            }
            // Every waiter of this request gets the same answer: one rendering serves them all.
            let rendered = RenderedBodies()
            if answer.status == 429 {
                return standIn("stale-penalty") ?? .answer(answer, status, age: nil, rendered: rendered)
            }
            if answer.status >= 500 {
                return standIn("stale-error") ?? .answer(answer, status, age: nil, rendered: rendered)
            }
            let override = self.settings.ttlOverride(for: key.path)
            if CachePolicy.storable(
                status: answer.status, cacheControl: answer.cacheControl, hasOverride: override != nil,
                hasValidator: answer.etag != nil || answer.lastModified != nil, vary: CachePolicy.varyNames(answer.headers["vary"]),
                setsCookie: answer.headers.contains(name: "set-cookie"))
            {
                let entry = Store.Entry(answer: answer, storedAt: now, lifetime: self.lifetime(of: answer, key: key), rendered: rendered)
                // A purge while this was upstream wins: the answer is given, not stored. Nor is
                // one too large for the store, or any while the cache is off (a development-mode
                // request comes through it to be looked at whole).
                status.stored = self.state.withLock { state in
                    guard state.purges == purges, let evicted = state.store.put(key, entry) else { return false }
                    state.stats.evicted += evicted
                    state.stats.stored += 1
                    return true
                }
            } else if answer.status == 200 || answer.status == 404 || answer.status == 410 {
                // No longer storable, or gone: what was stored must not be served again.
                self.state.withLock { $0.store.remove(key) }
            }
            return .answer(answer, status, age: nil, rendered: rendered)
        }
    }

    private func lifetime(of answer: UpstreamAnswer, key: CacheKey) -> Duration {
        CachePolicy.freshness(cacheControl: answer.cacheControl, override: self.settings.ttlOverride(for: key.path))
    }

    /// The headers a 304 updates (RFC 9111 §4.3.4: its freshness, validators and `Date`, so that
    /// `Date` and `Age` agree once it is fresh again) put into the
    /// stored answer's: where the stored one had them, in their place and spelled as the 304
    /// spells them; new ones at the end. The rest stay as Spotify sent them.
    static func updated(_ stored: HTTPHeaders, by notModified: HTTPHeaders) -> HTTPHeaders {
        let updates = notModified.filter { ["cache-control", "etag", "expires", "last-modified", "date"].contains($0.name.lowercased()) }
        guard !updates.isEmpty else { return stored }
        var headers = HTTPHeaders()
        var placed = Set<String>()
        for (name, value) in stored {
            let lower = name.lowercased()
            guard updates.contains(where: { $0.name.lowercased() == lower }) else {
                headers.add(name: name, value: value)
                continue
            }
            // Every value the 304 gives for it, where the first stored one was.
            if placed.insert(lower).inserted {
                for update in updates where update.name.lowercased() == lower { headers.add(name: update.name, value: update.value) }
            }
        }
        for update in updates where !placed.contains(update.name.lowercased()) { headers.add(name: update.name, value: update.value) }
        return headers
    }
}
