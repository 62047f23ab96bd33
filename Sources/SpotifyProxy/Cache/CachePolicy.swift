/// A response's `Cache-Control` as a shared cache reads it (RFC 9111 §5.2.2). Unknown directives
/// are ignored, as the RFC says; a malformed number is taken as absent.
public struct CacheControl: Sendable, Equatable {
    public var maxAge: Int?
    /// `s-maxage`: for shared caches (this proxy is one), it wins over `max-age`.
    public var sharedMaxAge: Int?
    public var noStore = false
    /// `no-cache`: may be stored, but every use must be revalidated first.
    public var noCache = false
    /// `private`: for one user's cache only; a shared cache must not store it.
    public var isPrivate = false
    /// Once stale, never served without a successful revalidation (no stale answers at all).
    public var mustRevalidate = false

    public init() {}

    /// Parses every `Cache-Control` value of a response (several headers are one list).
    public init(_ values: [String]) {
        for value in values {
            for item in value.split(separator: ",") {
                let parts = item.split(separator: "=", maxSplits: 1)
                guard let first = parts.first else { continue }
                let name = first.trimmingSpaces().lowercased()
                let argument = parts.count > 1 ? parts[1].trimmingSpaces().trimmingCharacters(in: "\"") : nil
                switch name {
                case "max-age": self.maxAge = argument.flatMap { Int($0) }.flatMap { $0 >= 0 ? $0 : nil }
                case "s-maxage": self.sharedMaxAge = argument.flatMap { Int($0) }.flatMap { $0 >= 0 ? $0 : nil }
                case "no-store": self.noStore = true
                case "no-cache": self.noCache = true
                case "private": self.isPrivate = true
                case "must-revalidate", "proxy-revalidate": self.mustRevalidate = true
                default: break
                }
            }
        }
    }
}

/// The cache's rules, pure: what may be stored, for how long it is fresh, and which stored
/// answer a request may be given. Tested as tables.
public enum CachePolicy {
    /// Only complete 200 answers are stored (Spotify's errors are `private, max-age=0`, and a
    /// 404 for an id that appears later must not stick), and only those that say how long they
    /// stay fresh (`max-age`, `s-maxage`, a `[cache.ttl]` override) or carry a validator to
    /// revalidate them with: an answer that says nothing about caching is not cached. Nor is one
    /// that sets a cookie (another client would be given it, as nginx's cache does not), or that
    /// varies by a request header the cache does not key on (`vary`, lower-cased: only
    /// `accept-language`, which it keys on, and `accept-encoding`, which the proxy asks for
    /// itself, are; `*` never is).
    public static func storable(
        status: Int, cacheControl: CacheControl, hasOverride: Bool, hasValidator: Bool, vary: [String] = [], setsCookie: Bool = false
    ) -> Bool {
        guard status == 200, !cacheControl.noStore, !cacheControl.isPrivate, !setsCookie else { return false }
        guard vary.allSatisfy({ Self.keyedHeaders.contains($0) }) else { return false }
        return cacheControl.maxAge != nil || cacheControl.sharedMaxAge != nil || hasOverride || hasValidator
    }

    /// The request headers a stored answer may vary by (``storable(status:cacheControl:hasOverride:hasValidator:vary:setsCookie:)``).
    static let keyedHeaders: Set<String> = ["accept-language", "accept-encoding"]

    /// The header names a response's `Vary` values list, lower-cased.
    public static func varyNames(_ values: [String]) -> [String] {
        values.flatMap { $0.split(separator: ",") }.map { $0.trimmingSpaces().lowercased() }.filter { !$0.isEmpty }
    }

    /// How long an answer is fresh: the `[cache.ttl]` override for its route when one matches
    /// (for what Spotify under-declares), else `s-maxage`, else `max-age`, else zero (stored for
    /// revalidation and for stale answers during a penalty, never served fresh). `no-cache` is
    /// always zero: each use is revalidated.
    public static func freshness(cacheControl: CacheControl, override: Int?) -> Duration {
        if cacheControl.noCache { return .zero }
        if let override { return .seconds(override) }
        return .seconds(cacheControl.sharedMaxAge ?? cacheControl.maxAge ?? 0)
    }
}

/// How a stored answer may be used now.
public enum CacheUsability: Sendable, Equatable {
    /// Within its freshness lifetime: served as is.
    case fresh
    /// Stale by at most `stale_while_revalidate`: served at once while one background request
    /// revalidates it.
    case staleWhileRevalidate
    /// Stale beyond that, but within `max_stale`: served only when Spotify cannot answer (the
    /// app is rate-limited, or the upstream failed).
    case staleIfError
    /// Too old to serve at all (or `must-revalidate`); still good for its validators.
    case expired
}

/// `[cache]`: bounds and the stale windows.
public struct CacheSettings: Sendable, Equatable {
    /// The answers' bytes (bodies and headers) kept at most; 0 turns the cache off.
    public var maxBytes = 64 << 20
    public var staleWhileRevalidate: Duration = .seconds(60)
    public var maxStale: Duration = .seconds(86_400)
    /// `[cache.ttl]`: freshness overrides by route template, e.g. `"/v1/artists/{id}" = 86400`.
    public var ttl: [RouteTemplate: Int] = [:]

    public init() {}

    public var enabled: Bool { self.maxBytes > 0 }

    /// The override for `path` (no query), if a template matches it.
    public func ttlOverride(for path: Substring) -> Int? {
        guard !self.ttl.isEmpty else { return nil }
        return self.ttl.first { $0.key.matches(path) }?.value
    }
}

/// A path with `{name}` segments that each match one non-empty segment: `/v1/artists/{id}`.
public struct RouteTemplate: Sendable, Hashable, CustomStringConvertible {
    let segments: [Substring?]
    public let description: String

    public init?(_ text: String) {
        guard text.hasPrefix("/"), !text.contains("?") else { return nil }
        self.description = text
        self.segments = text.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map { segment in
            segment.hasPrefix("{") && segment.hasSuffix("}") ? nil : segment
        }
    }

    public func matches(_ path: Substring) -> Bool {
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard parts.count == self.segments.count else { return false }
        return zip(parts, self.segments).allSatisfy { part, segment in segment.map { $0 == part } ?? !part.isEmpty }
    }
}

extension StringProtocol {
    fileprivate func trimmingCharacters(in quote: Character) -> String {
        var slice = Substring(self)
        while slice.first == quote { slice.removeFirst() }
        while slice.last == quote { slice.removeLast() }
        return String(slice)
    }
}
