import NIOHTTP1

/// What identifies a cached answer: the target (path and query, `market` included) and the one
/// request header Spotify's answers vary on, `Accept-Language`. The method is always GET, and
/// the token is always the app's (user answers are never cached). Links are rewritten on the
/// way out, so the client's `Host` is not part of it: one entry serves every name of the proxy.
public struct CacheKey: Sendable, Hashable, CustomStringConvertible {
    public var target: String
    public var acceptLanguage: String

    public init(target: String, acceptLanguage: String? = nil) {
        self.target = target
        self.acceptLanguage = acceptLanguage ?? ""
    }

    /// The key of `target` for a client that sent `head` (its `Accept-Language`).
    init(target: String, for head: HTTPRequestHead) {
        self.init(target: target, acceptLanguage: head.headers.first(name: "accept-language"))
    }

    /// The target's path, without the query.
    public var path: Substring { self.target.pathWithoutQuery }

    public var description: String { self.acceptLanguage.isEmpty ? self.target : "\(self.target) [\(self.acceptLanguage)]" }

    /// What the key costs the cache: a target may be tens of kilobytes (a query padded out), so
    /// it counts toward `max_bytes` as the answer does.
    var byteCount: Int { self.target.utf8.count + self.acceptLanguage.utf8.count }
}

/// An upstream answer, whole: as stored, and as handed to every request that waited for it.
/// Headers are the upstream's minus hop-by-hop ones and the body's framing (the proxy frames
/// each answer it writes); the body is Spotify's bytes, links untouched.
public struct UpstreamAnswer: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]

    public init(status: Int, headers: HTTPHeaders, body: [UInt8]) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public var cacheControl: CacheControl { CacheControl(self.headers["cache-control"]) }
    public var etag: String? { self.headers.first(name: "etag") }
    public var lastModified: String? { self.headers.first(name: "last-modified") }

    /// What the entry costs the cache: body and header bytes.
    var byteCount: Int { self.body.count + self.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 } + 64 }
}

/// The stored answers, least recently used evicted first when their bytes exceed the bound.
/// A value type with no clock and no lock: ``ResponseCache`` owns one behind its mutex, and the
/// tests drive one with plain instants.
public struct CacheStore<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    public struct Entry: Sendable {
        public var answer: UpstreamAnswer
        public var storedAt: Instant
        /// How old the answer was when it came (its `Age`: an upstream cache kept it that long).
        public var initialAge: Duration
        public var lifetime: Duration
        /// `no-cache` or `must-revalidate`: never served stale.
        public var revalidateOnly: Bool
        /// The body as last rendered for a client (links rewritten): shared by later hits, and
        /// kept when a revalidation finds the body unchanged.
        public let rendered: RenderedBodies

        public init(answer: UpstreamAnswer, storedAt: Instant, lifetime: Duration, rendered: RenderedBodies = RenderedBodies()) {
            self.rendered = rendered
            let control = answer.cacheControl
            self.answer = answer
            // Counted from here on (RFC 9111 §4.2.3); each hit's `Age` is made from it.
            self.initialAge = .seconds(answer.headers.first(name: "age").flatMap { Int($0) }.map { max(0, $0) } ?? 0)
            self.answer.headers.remove(name: "Age")
            self.storedAt = storedAt
            self.lifetime = lifetime
            // s-maxage implies proxy-revalidate for a shared cache (RFC 9111 §5.2.2.10).
            self.revalidateOnly = control.noCache || control.mustRevalidate || control.sharedMaxAge != nil
        }

        public func usability(now: Instant, settings: CacheSettings) -> CacheUsability {
            let age = self.initialAge + self.storedAt.duration(to: now)
            if age < self.lifetime { return .fresh }
            if self.revalidateOnly { return .expired }
            let staleness = age - self.lifetime
            // An answer fresh for no time at all (`max-age=0`: playlists) is revalidated before
            // each use, never served stale while revalidating.
            if self.lifetime > .zero, staleness <= settings.staleWhileRevalidate { return .staleWhileRevalidate }
            return staleness <= settings.maxStale ? .staleIfError : .expired
        }

        /// Whole seconds since it was stored (or last revalidated): the `Age` header.
        public func age(now: Instant) -> Int { max(0, Int((self.initialAge + self.storedAt.duration(to: now)).components.seconds)) }
    }

    private struct Node {
        var entry: Entry
        var older: CacheKey?
        var newer: CacheKey?
    }

    public let maxBytes: Int
    public private(set) var bytes = 0
    private var nodes: [CacheKey: Node] = [:]
    private var newest: CacheKey?
    private var oldest: CacheKey?

    public init(maxBytes: Int) {
        self.maxBytes = maxBytes
    }

    public var count: Int { self.nodes.count }

    /// The entry, now the most recently used.
    public mutating func get(_ key: CacheKey) -> Entry? {
        guard let node = self.nodes[key] else { return nil }
        self.unlink(key)
        self.linkNewest(key, node.entry)
        return node.entry
    }

    /// Stores `entry` (replacing any under `key`), evicting the least recently used until the
    /// bytes fit. An answer larger than half the bound is not stored: one answer must not empty
    /// the cache (nor anything while the bound is 0, the cache off). Returns how many entries
    /// were evicted, nil when `entry` was not stored.
    @discardableResult
    public mutating func put(_ key: CacheKey, _ entry: Entry) -> Int? {
        self.remove(key)
        let size = entry.answer.byteCount + key.byteCount
        guard size <= self.maxBytes / 2 else { return nil }
        var evicted = 0
        while self.bytes + size > self.maxBytes, let oldest = self.oldest {
            self.remove(oldest)
            evicted += 1
        }
        self.linkNewest(key, entry)
        self.bytes += size
        return evicted
    }

    public mutating func remove(_ key: CacheKey) {
        guard let node = self.nodes[key] else { return }
        self.unlink(key)
        self.bytes -= node.entry.answer.byteCount + key.byteCount
    }

    /// Removes every entry whose target starts with `prefix` (every entry for ""); returns how many.
    public mutating func purge(prefix: String) -> Int {
        let keys = self.nodes.keys.filter { $0.target.hasPrefix(prefix) }
        for key in keys { self.remove(key) }
        return keys.count
    }

    private mutating func linkNewest(_ key: CacheKey, _ entry: Entry) {
        self.nodes[key] = Node(entry: entry, older: self.newest, newer: nil)
        if let newest = self.newest { self.nodes[newest]?.newer = key }
        self.newest = key
        if self.oldest == nil { self.oldest = key }
    }

    private mutating func unlink(_ key: CacheKey) {
        guard let node = self.nodes.removeValue(forKey: key) else { return }
        if let older = node.older { self.nodes[older]?.newer = node.newer } else { self.oldest = node.newer }
        if let newer = node.newer { self.nodes[newer]?.older = node.older } else { self.newest = node.older }
    }
}
