import Foundation
import SpotifyCatalog

/// `GET /simple/search?q=NAME&type=artist|album|track|song` (`song` is `track`; optional `limit`
/// 1–50, `market`): the search this project grew from. The stage turns it into Spotify's
/// `/v1/search` (so it is governed, and teed, like any request); the handler turns Spotify's
/// answer into a compact list (``compact(_:kind:query:)``).
public struct SimpleSearchStage: RequestStage {
    public static let path = "/simple/search"
    public static let types = ["artist", "album", "track", "song"]
    /// The `limit`s Spotify's search takes.
    public static let limits = 1...50

    public init() {}

    public func decide(_ request: inout ProxyRequest) -> StageDecision {
        guard request.ownEndpoint == .simpleSearch else { return .continue }
        request.ownEndpoint = nil
        // A parameter given twice is refused, not decided by whichever came last.
        if let twice = QueryString.repeatedNames(in: request.head.uri).first(where: Self.parameters.contains) {
            return .answer(LocalAnswer(SpotifyError(status: 400, message: "\(twice) is given more than once; give it once: \(Self.usage)")))
        }
        switch Self.upstreamTarget(QueryString.parse(request.head.uri)) {
        case .search(let target, let kind, let query):
            request.target = target
            request.transform = .simpleSearch(kind: kind, query: query)
            return .continue
        case .refused(let error):
            return .answer(LocalAnswer(error))
        }
    }

    public enum Target: Sendable, Equatable {
        case search(target: String, kind: String, query: String)
        case refused(SpotifyError)
    }

    static let usage = "GET /simple/search?q=NAME&type=artist|album|track|song[&limit=1-50][&market=XX]"
    static let parameters = ["q", "type", "limit", "market"]

    /// The `/v1/search` target for a simple search's parameters, or the 400 saying what to send.
    public static func upstreamTarget(_ parameters: [String: String]) -> Target {
        let usage = Self.usage
        guard let query = parameters["q"]?.trimmingCharacters(in: .whitespaces), !query.isEmpty else {
            return .refused(SpotifyError(status: 400, message: "q is missing: \(usage)"))
        }
        guard let type = parameters["type"]?.lowercased(), Self.types.contains(type) else {
            let given = parameters["type"].map { "type=\($0) is not one of" } ?? "type is missing; use one of"
            return .refused(SpotifyError(status: 400, message: "\(given) artist, album, track, song (song = track): \(usage)"))
        }
        let kind = type == "song" ? "track" : type
        var target = "/v1/search?q=\(QueryString.encode(query))&type=\(kind)"
        if let limit = parameters["limit"] {
            guard let value = Int(limit), Self.limits.contains(value) else {
                return .refused(SpotifyError(status: 400, message: "limit must be a whole number from 1 to 50, got \(limit): \(usage)"))
            }
            target += "&limit=\(value)"
        }
        if let market = parameters["market"], !market.isEmpty { target += "&market=\(QueryString.encode(market))" }
        return .search(target: target, kind: kind, query: query)
    }

    /// Spotify's search answer as a compact list: id, name, type, artists, album, release date,
    /// popularity, image URL and Spotify URL per item (null where Spotify gave none, or gave
    /// its "0000" for an unknown date).
    public static func compact(_ body: JSONValue, kind: String, query: String) -> [UInt8] {
        let items = body[kind + "s"]?["items"]?.array ?? []
        let compacted: [JSONValue] = items.compactMap { item -> JSONValue? in
            guard item.object != nil else { return nil }
            let album = kind == "track" ? item["album"] : kind == "album" ? item : nil
            let images = (kind == "artist" ? item["images"] : album?["images"])?.array
            var fields: [String: JSONValue] = [
                "id": item["id"] ?? .null,
                "name": item["name"] ?? .null,
                "type": .string(kind),
                "popularity": item["popularity"] ?? .null,
                "image_url": images?.first?["url"] ?? .null,
                "spotify_url": item["external_urls"]?["spotify"] ?? .null,
            ]
            if kind != "artist" {
                fields["artists"] = .array((item["artists"]?.array ?? []).compactMap { $0["name"] })
                // "0000" is Spotify's date for an album it has none for: null here, as none.
                fields["release_date"] = album?["release_date"].flatMap { $0.string == "0000" ? nil : $0 } ?? .null
            }
            if kind == "track" { fields["album"] = album?["name"] ?? .null }
            return .object(fields)
        }
        return JSONValue.object(["q": .string(query), "type": .string(kind), "items": .array(compacted)]).serializedBytes(sortedKeys: true)
    }
}

/// What a forwarded answer becomes before it reaches the client.
public enum ResponseTransform: Sendable, Equatable {
    /// Spotify's search answer, compacted for `/simple/search`.
    case simpleSearch(kind: String, query: String)
    /// A development-mode app's `/v1/playlists/{id}/items` page in the shape of the
    /// `/tracks` page the client asked for (``RemovedEndpoint/playlistItems(method:target:)``).
    case playlistTracks
    /// None: a refusal (403, 404) is held whole only so that the proxy can explain it: Spotify's
    /// refusal of an endpoint it removed (a write, or a user's request, which the cache does not
    /// take), or of a user's token not granted the scope a request needs (``ScopeRefusal``).
    case refusal
}

/// Query strings: parsed percent-decoded (`+` as a space), and values encoded for a target.
public enum QueryString {
    public static func parse(_ target: String) -> [String: String] {
        guard let start = target.firstIndex(of: "?") else { return [:] }
        var out: [String: String] = [:]
        for pair in target[target.index(after: start)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            out[Self.decode(parts[0])] = parts.count > 1 ? Self.decode(parts[1]) : ""
        }
        return out
    }

    /// A name or value as a form writes it: `+` a space, then percent-decoded.
    static func decode(_ text: Substring) -> String {
        let plain = String(text).replacingOccurrences(of: "+", with: " ")
        return plain.removingPercentEncoding ?? plain
    }

    /// The names that occur more than once in `target`'s query, decoded, in order of their first repeat.
    public static func repeatedNames(in target: String) -> [String] {
        guard let start = target.firstIndex(of: "?") else { return [] }
        var seen = Set<String>()
        var repeated: [String] = []
        for pair in target[target.index(after: start)...].split(separator: "&") {
            let name = Self.decode(pair.prefix { $0 != "=" })
            if !seen.insert(name).inserted, !repeated.contains(name) { repeated.append(name) }
        }
        return repeated
    }

    /// Everything but unreserved characters (RFC 3986 §2.3: ASCII letters and digits, `-._~`)
    /// percent-encoded as UTF-8 (a space as `%20`, `é` as `%C3%A9`).
    public static func encode(_ value: String) -> String {
        value.addingPercentEncoding(withAllowedCharacters: Self.unreserved) ?? value
    }

    private static let unreserved = CharacterSet(charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
}
