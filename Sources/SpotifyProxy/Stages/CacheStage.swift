/// A request the cache handles upstream: the key its answer is stored under.
public struct CacheDirective: Sendable, Equatable {
    public var key: CacheKey
}

/// App-token GETs (and HEADs) meet the shared cache here. A fresh stored answer is given at once; one
/// stale by at most `stale_while_revalidate` too, while one background request refreshes it; an
/// older one (up to `max_stale`) only while Spotify holds the app rate-limited (`stale-penalty`),
/// instead of the governor's 429. Otherwise the request is marked to go upstream through the
/// cache (coalesced, revalidating), and the stages after this one decide the rest.
/// User-token answers are never cached: they are one user's.
public struct CacheStage: RequestStage {
    let cache: ResponseCache?
    let rendering: AnswerRendering

    public init(cache: ResponseCache?, rendering: AnswerRendering) {
        self.cache = cache
        self.rendering = rendering
    }

    public func decide(_ request: inout ProxyRequest) -> StageDecision {
        // A HEAD is the GET's answer without its body: served from the same entry, and a miss
        // fetches (and stores) the GET, as any HEAD goes upstream as a GET.
        guard let cache = self.cache, cache.settings.enabled, request.isWholeAppRead, !request.assembleFirst else { return .continue }
        let key = CacheKey(target: request.target, for: request.head)
        if let (entry, status) = cache.storedAnswer(key) {
            return .answer(
                self.rendering.render(
                    entry.answer, for: request.head, transform: request.transform, cache: (status, entry.age(now: .now)), memo: entry.rendered))
        }
        request.cache = CacheDirective(key: key)
        return .continue
    }
}
