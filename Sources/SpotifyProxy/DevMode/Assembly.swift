import Foundation
import SpotifyCatalog

/// A request that Spotify refuses a development-mode app (since February 2026), and how the
/// proxy makes its answer from requests it does allow. Pure: parsing and assembling are tested
/// as tables; ``DevModeAssembler`` does the fetching.
public enum Assembly: Sendable, Equatable {
    /// `GET /v1/tracks?ids=a,b` (albums, artists too) is 403: each id is fetched alone
    /// (`/v1/tracks/a`, …, the other query parameters kept) and the batch shape rebuilt,
    /// `{"tracks":[{…},null]}`, `null` for an id Spotify does not know.
    case batch(key: String, parts: [String])
    /// `limit` above the cap on search or artist albums is 400 "Invalid limit": pages of the
    /// largest allowed size are fetched and the page the client asked for assembled.
    case pages(PageRequest)

    /// Development-mode `limit` cap on search and artist albums.
    public static let limitCap = 10
    static let batchKinds = ["tracks", "albums", "artists"]
    /// An offset above this is refused before anything is fetched (no Spotify paging goes so far).
    static let offsetRefusedAbove = 100_000

    /// A batch or page request that Spotify refuses with a 400 whatever the app's mode, in
    /// Spotify's words (the fake's `FakeCatalog.Failure`s): once development mode is known, the
    /// proxy answers it so, where Spotify would say only 403 "Forbidden" (a batch) or name the
    /// wrong parameter ("Invalid limit" for a bad offset).
    public struct Refusal: Error, Sendable, Equatable {
        public let message: String

        static let missingIDs = Refusal(message: "Missing required field: ids")
        static let tooManyIDs = Refusal(message: "too many ids requested")
        static let invalidID = Refusal(message: "invalid id")
        static let invalidOffset = Refusal(message: "Invalid offset")
    }

    /// `/v1/tracks`, `/v1/albums` or `/v1/artists` (a trailing slash too), whatever the query: a
    /// batch with no `ids` at all is refused as Spotify refuses it, not sent to be 403 in
    /// development mode.
    static func isBatchPath(_ path: UnsafeBufferPointer<UInt8>) -> Bool {
        var path = path
        if path.last == UInt8(ascii: "/") { path = UnsafeBufferPointer(rebasing: path.dropLast()) }
        return Self.batchPaths.contains { path.count == $0.utf8.count && path.starts(withUTF8: $0) }
    }

    static let batchPaths = ["/v1/tracks", "/v1/albums", "/v1/artists"]

    /// The assembly for `target` (origin form), or nil when Spotify answers it as it is; throws
    /// when Spotify refuses it whatever the mode.
    public static func of(_ target: String, cap: Int = Self.limitCap) throws(Refusal) -> Assembly? {
        // Every app-token GET passes here: most (an entity, a page within the cap) leave at once,
        // on a byte search (`String.contains(String)` is Foundation's, and showed in profiles).
        let (hasQuery, isBatch) = target.withUTF8Bytes { bytes in
            let path = bytes.pathWithoutQuery
            return (path.count != bytes.count, Self.isBatchPath(path))
        }
        guard hasQuery && (target.containsIgnoringASCIICase("ids=") || target.containsIgnoringASCIICase("limit=")) || isBatch else { return nil }
        let (path, query) = Self.split(target)
        var segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
        if segments.count > 2, segments.last == "" { segments.removeLast() }
        guard segments.first == "v1" else { return nil }
        if segments.count == 2, Self.batchKinds.contains(segments[1]) {
            guard let list = Self.value("ids", in: query), !list.isEmpty else { throw .missingIDs }
            let ids = list.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            // More ids than Spotify's batch takes: 20 albums, 50 otherwise.
            guard ids.count <= (segments[1] == "albums" ? 20 : 50) else { throw .tooManyIDs }
            // An empty slot (`a,,b`) too: each part becomes a path of its own.
            guard ids.allSatisfy({ !$0.isEmpty && $0.utf8.allSatisfy(Self.isBase62) }) else { throw .invalidID }
            let rest = query.filter { Self.name(of: $0) != "ids" }
            let suffix = rest.isEmpty ? "" : "?" + rest.joined(separator: "&")
            return .batch(key: segments[1], parts: ids.map { "/v1/\(segments[1])/\($0)\(suffix)" })
        }
        let pageable = segments == ["v1", "search"] || (segments.count == 4 && segments[1] == "artists" && segments[3] == "albums")
        // A limit outside Spotify's own bounds: its 400 "Invalid limit" is already the right answer.
        guard pageable, let limit = Self.value("limit", in: query).flatMap({ Int($0) }), limit > cap, limit <= 50 else { return nil }
        // A negative or far too large offset is refused here; an empty one is absent. (Search
        // stops at 1,000: the pages fetched stop there, ``PageRequest/largestSpotifyOffset``.)
        let offsetValue = Self.value("offset", in: query) ?? ""
        guard let offset = offsetValue.isEmpty ? 0 : Int(offsetValue), offset >= 0, offset <= Self.offsetRefusedAbove else { throw .invalidOffset }
        let rest = query.filter { !["limit", "offset"].contains(Self.name(of: $0)) }
        return .pages(PageRequest(path: "/" + segments.joined(separator: "/"), query: rest, offset: offset, limit: limit, cap: cap))
    }

    /// The batch answer from each id's answer in order (nil: Spotify does not know the id).
    public static func batchBody(key: String, parts: [[UInt8]?]) -> [UInt8] {
        var body = Array(#"{"\#(key)":["#.utf8)
        for (index, part) in parts.enumerated() {
            if index > 0 { body.append(UInt8(ascii: ",")) }
            body += part ?? Array("null".utf8)
        }
        body += Array("]}".utf8)
        return body
    }

    static func split(_ target: String) -> (path: Substring, query: [String]) {
        guard let mark = target.firstIndex(of: "?") else { return (Substring(target), []) }
        let query = target[target.index(after: mark)...].split(separator: "&").map(String.init)
        return (target[..<mark], query)
    }

    static func name(of item: String) -> String {
        String(item.prefix { $0 != "=" })
    }

    static func value(_ name: String, in query: [String]) -> String? {
        guard let item = query.first(where: { Self.name(of: $0) == name }) else { return nil }
        let raw = item.dropFirst(name.count + 1)
        return raw.removingPercentEncoding ?? String(raw)
    }

    /// Whether a batch part (`/v1/tracks/{id}?…`, its id base-62) answered `status` is `null` in
    /// Spotify's batch answer: an unknown id (404), and one of the wrong length, which alone is
    /// a 400 "invalid id" (rspotify#67: `44` among a batch's ids is null there). Any other 400
    /// (a bad `market`) refuses the batch.
    public static func isNullInBatch(part: String, status: Int) -> Bool {
        guard status == 400 else { return status == 404 }
        let path = part.utf8.prefix { $0 != UInt8(ascii: "?") }
        return path.split(separator: UInt8(ascii: "/")).last?.count != 22
    }

    static func isBase62(_ byte: UInt8) -> Bool {
        (byte >= 48 && byte <= 57) || (byte >= 65 && byte <= 90) || (byte >= 97 && byte <= 122)
    }
}

/// A page asked for beyond the cap: which pages to fetch, and the page they make.
public struct PageRequest: Sendable, Equatable {
    public var path: String
    /// The other query items, raw, in order.
    public var query: [String]
    public var offset: Int
    public var limit: Int
    public var cap: Int

    public init(path: String, query: [String], offset: Int, limit: Int, cap: Int) {
        self.path = path
        self.query = query
        self.offset = offset
        self.limit = limit
        self.cap = cap
    }

    /// The targets of the pages to fetch: `cap` items each from `offset`, the last one shorter.
    /// None starts past the largest offset Spotify takes (search: 1,000; its 400 "Invalid offset"
    /// would fail the whole page): the page ends there, as Spotify's own would.
    public var parts: [String] {
        stride(from: self.offset, to: self.offset + self.limit, by: self.cap).filter { $0 == self.offset || $0 <= self.largestSpotifyOffset }.map { start in
            self.target(offset: start, limit: min(self.cap, self.offset + self.limit - start))
        }
    }

    /// The largest `offset` Spotify takes on this path.
    var largestSpotifyOffset: Int { self.path == "/v1/search" ? 1000 : .max }

    func target(offset: Int, limit: Int) -> String {
        self.path + "?" + (self.query + ["offset=\(offset)", "limit=\(limit)"]).joined(separator: "&")
    }

    /// The page the client asked for, from the fetched pages in order: for each paging object
    /// (the root for artist albums; `artists`, `tracks`, … for search) the items joined and
    /// `limit`, `offset`, `href`, `next`, `previous` and `total` consistent with them. Nil when a
    /// page is not a JSON object.
    public func assemble(_ pages: [[UInt8]]) -> [UInt8]? {
        var values: [JSONValue] = []
        for page in pages {
            guard let value = try? JSONValue.parse(Data(page)), value.object != nil else { return nil }
            values.append(value)
        }
        guard let first = values.first?.object else { return nil }
        if first["items"] != nil {
            return self.merge(values).serializedBytes(sortedKeys: false)
        }
        var out = first
        for (key, paging) in first where paging.object?["items"] != nil {
            out[key] = self.merge(values.compactMap { $0[key] })
        }
        return JSONValue.object(out).serializedBytes(sortedKeys: false)
    }

    private func merge(_ pagings: [JSONValue]) -> JSONValue {
        guard var out = pagings.first?.object else { return .null }
        let items = pagings.flatMap { $0["items"]?.array ?? [] }
        let total = out["total"]?.int ?? items.count
        out["items"] = .array(Array(items.prefix(self.limit)))
        out["limit"] = .number(Double(self.limit))
        out["offset"] = .number(Double(self.offset))
        out["total"] = .number(Double(total))
        // Spotify's own link of the first page, with this page's offset and limit.
        let href = out["href"]?.string
        func link(_ offset: Int) -> JSONValue {
            guard let href else { return .null }
            return .string(Self.replacing(href, offset: offset, limit: self.limit))
        }
        out["href"] = link(self.offset)
        out["next"] = self.offset + self.limit < total ? link(self.offset + self.limit) : .null
        out["previous"] = self.offset > 0 ? link(max(0, self.offset - self.limit)) : .null
        return .object(out)
    }

    /// `url` with its `offset` and `limit` query values replaced (added when absent).
    static func replacing(_ url: String, offset: Int, limit: Int) -> String {
        let (base, query) = Assembly.split(url)
        var items = query
        for (name, value) in [("offset", offset), ("limit", limit)] {
            if let index = items.firstIndex(where: { Assembly.name(of: $0) == name }) {
                items[index] = "\(name)=\(value)"
            } else {
                items.append("\(name)=\(value)")
            }
        }
        return base + "?" + items.joined(separator: "&")
    }
}
