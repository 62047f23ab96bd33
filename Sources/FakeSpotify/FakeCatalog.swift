import Foundation

/// The fake Spotify's catalog: every artist, album and track in the recorded responses
/// (`Fixtures/`), and the answers Spotify gives about them, built once. Pure (no sockets, no
/// NIO): each answer is a body's bytes or a Spotify error (status and message).
///
/// Every link in a body is Spotify's own (`https://api.spotify.com/v1/…`), as Spotify writes
/// them whatever address it is reached by; rewriting them is the proxy's job.
///
/// Where Spotify's answer for a listing was recorded, its items are served as recorded: the
/// embedded `tracks` of an album, `album-tracks.json`, `artist-albums.json`,
/// `artist-top-tracks.json`, and the first page of each recorded search (Spotify's ranking for
/// that query comes first). Everything else is derived from the richest recorded object of each
/// id: a full album without `tracks` gets them from the tracks known to be on it, a track without
/// `album` gets its album, simplified objects are full ones with the full-only keys removed.
public struct FakeCatalog: Sendable {
    public enum Kind: String, Sendable, CaseIterable {
        case artist, album, track

        /// The path segment and the batch answer's key: `artists`, `albums`, `tracks`.
        public var plural: String { self.rawValue + "s" }

        /// Most ids a batch request may carry (`openapi.yml`: 50 artists or tracks, 20 albums).
        public var batchLimit: Int { self == .album ? 20 : 50 }
    }

    /// A Spotify error answer: `{"error":{"status":…,"message":…}}`.
    public struct Failure: Error, Sendable, Equatable {
        public var status: Int
        public var message: String

        public init(_ status: Int, _ message: String) {
            self.status = status
            self.message = message
        }

        public static let invalidID = Failure(400, "invalid id")
        public static let notFound = Failure(404, "Resource not found")
        public static let invalidLimit = Failure(400, "Invalid limit")
        public static let invalidOffset = Failure(400, "Invalid offset")
        /// Spotify's words for a missing `ids` field (of PUT /v1/me/tracks, 2024:
        /// jwilsson/spotify-web-api-php#278); no recording of a GET without `ids` was found.
        public static let missingIDs = Failure(400, "Missing required field: ids")
        /// As Spotify writes it, lower case (thelinmichael/spotify-web-api-node#356, 2021).
        public static let tooManyIDs = Failure(400, "too many ids requested")
        public static let noSearchQuery = Failure(400, "No search query")
        public static let missingSearchType = Failure(400, "Missing parameter type")
        /// Spotify names the value it refused ("Bad search type field test" for `type=test`).
        public static func badSearchType(_ value: String) -> Failure { Failure(400, "Bad search type field \(value)") }
    }

    public typealias Answer = Result<[UInt8], Failure>

    /// The base of every link in a body.
    public static let apiBase = "https://api.spotify.com/v1"

    /// The `type` values search accepts; only the first three have a catalog.
    public static let searchTypes = ["artist", "album", "track", "playlist", "show", "episode", "audiobook"]

    /// The recorded responses the catalog is made of. Order matters when two objects of one id
    /// have as many keys: the earlier wins, so whole recorded lookups come first.
    public static let sourceFiles = [
        "artist", "album", "track", "track-2023", "several-artists", "several-albums", "several-tracks",
        "artist-top-tracks", "album-tracks", "artist-albums", "search-artist-album-track", "search-all-types", "search-tracks",
    ]

    /// Files that are the whole answer to `GET /v1/{kind}s/{id}` of their object: that id is
    /// answered with the file's bytes as recorded.
    static let wholeLookups: Set<String> = ["artist", "album", "track", "track-2023"]

    /// `artist-top-tracks.json` is the answer for this artist (Fixtures/README.md); the body does
    /// not say whose it is.
    static let recordedTopTracks = (file: "artist-top-tracks", artistID: "0TnOYISbd1XYRBk9myaseg")

    struct Entity: Sendable {
        /// The answer to `GET /v1/{kind}s/{id}`.
        var single: [UInt8]
        /// The full object, compact: batch answers, top tracks, search items of artists and tracks.
        var full: [UInt8]
        /// What a search answer lists: the full object, or for an album the simplified one.
        var searchItem: [UInt8]
        var keys: SearchKeys
    }

    /// What search matches an entity by: folded words, and the values of field filters.
    struct SearchKeys: Sendable {
        var name: [String] = []
        /// Words of the artists' names (albums and tracks).
        var artists: [String] = []
        /// Words of the album's name (tracks).
        var album: [String] = []
        var year: Int?
        var genres: [String] = []
        var isrc: String?
        var upc: String?
    }

    struct ListedAlbum: Sendable {
        /// `album_group`: `album`, `single`, `compilation` or `appears_on`.
        var group: String
        var bytes: [UInt8]
    }

    struct RankedItem: Sendable {
        var id: String
        var bytes: [UInt8]
    }

    private let artists: [String: Entity]
    private let albums: [String: Entity]
    private let tracks: [String: Entity]
    /// Ids in the order they were first met, per kind: the order of search results.
    private let order: [Kind: [String]]
    /// Album id → its simplified tracks, in disc and track order (every known album has an entry).
    private let albumTrackItems: [String: [[UInt8]]]
    /// Artist id → its albums as artist-albums lists them (every known artist has an entry).
    private let artistAlbumItems: [String: [ListedAlbum]]
    /// Artist id → the whole top-tracks answer (every known artist has an entry).
    private let topTracks: [String: [UInt8]]
    /// Normalized query → kind → the items of the recorded search, in Spotify's order.
    private let rankings: [String: [Kind: [RankedItem]]]
    /// The simplified albums with a release date, newest first (`GET /v1/browse/new-releases`).
    private let newReleaseItems: [[UInt8]]

    /// The catalog of the bundled recordings (`Fixtures/`).
    public static func recorded() throws -> FakeCatalog {
        try FakeCatalog(recording: { try RecordedResponses.data($0) })
    }

    /// Builds the catalog from the files named in ``sourceFiles``, read with `recording`.
    public init(recording: (String) throws -> Data) throws {
        let builder = Builder()
        var raw: [String: [UInt8]] = [:]
        for name in Self.sourceFiles {
            let data = try recording(name)
            raw[name] = Array(data)
            builder.add(try JSONSerialization.jsonObject(with: data), wholeLookup: Self.wholeLookups.contains(name) ? Array(data) : nil)
        }
        builder.finish()

        var artists: [String: Entity] = [:]
        var albums: [String: Entity] = [:]
        var tracks: [String: Entity] = [:]
        for id in builder.order[.artist] ?? [] {
            let full = try Self.compact(builder.fullArtist(id))
            artists[id] = Entity(single: builder.recordedLookup(.artist, id) ?? full, full: full, searchItem: full, keys: builder.searchKeys(.artist, id))
        }
        for id in builder.order[.album] ?? [] {
            let full = try Self.compact(builder.fullAlbum(id))
            albums[id] = Entity(
                single: builder.recordedLookup(.album, id) ?? full, full: full,
                searchItem: try Self.compact(builder.simplifiedAlbum(id)!), keys: builder.searchKeys(.album, id))
        }
        var fullTracks: [String: [UInt8]] = [:]
        for id in builder.order[.track] ?? [] {
            let full = try Self.compact(builder.fullTrack(id))
            fullTracks[id] = full
            tracks[id] = Entity(single: builder.recordedLookup(.track, id) ?? full, full: full, searchItem: full, keys: builder.searchKeys(.track, id))
        }

        var albumTrackItems: [String: [[UInt8]]] = [:]
        for id in builder.order[.album] ?? [] {
            albumTrackItems[id] = try builder.albumTrackItems(id).map { try Self.compact($0) }
        }

        var artistAlbumItems: [String: [ListedAlbum]] = [:]
        var topTracks: [String: [UInt8]] = [:]
        for id in builder.order[.artist] ?? [] {
            artistAlbumItems[id] = try builder.artistAlbumItems(id).map { ListedAlbum(group: $0.group, bytes: try Self.compact($0.object)) }
            if id == Self.recordedTopTracks.artistID, let recorded = raw[Self.recordedTopTracks.file] {
                topTracks[id] = recorded
            } else {
                topTracks[id] = Self.object(key: "tracks", items: builder.topTrackIDs(id).compactMap { fullTracks[$0] })
            }
        }

        var rankings: [String: [Kind: [RankedItem]]] = [:]
        for (query, kinds) in builder.searchListings {
            for (kind, items) in kinds {
                rankings[query, default: [:]][kind] = try items.compactMap { item -> RankedItem? in
                    guard let id = item["id"] as? String else { return nil }
                    return RankedItem(id: id, bytes: try Self.compact(item))
                }
            }
        }

        self.artists = artists
        self.albums = albums
        self.tracks = tracks
        self.order = builder.order
        self.albumTrackItems = albumTrackItems
        self.artistAlbumItems = artistAlbumItems
        self.topTracks = topTracks
        self.rankings = rankings
        // An album known only from a recording too old to carry its date is no new release.
        // ISO dates of any precision order as strings; albums of one date stay in first-met order.
        let dated = (builder.order[.album] ?? []).compactMap { id in
            (builder.best[.album]?[id]?["release_date"] as? String).map { (id: id, date: $0) }
        }
        self.newReleaseItems = dated.enumerated()
            .sorted { ($0.element.date, $1.offset) > ($1.element.date, $0.offset) }
            .compactMap { albums[$0.element.id]?.searchItem }
    }

    /// How many entities of `kind` the catalog holds.
    public func count(_ kind: Kind) -> Int { self.table(kind).count }

    /// The ids of `kind`, in the order they were first met in ``sourceFiles``.
    public func ids(_ kind: Kind) -> [String] { self.order[kind] ?? [] }

    private func table(_ kind: Kind) -> [String: Entity] {
        switch kind {
        case .artist: return self.artists
        case .album: return self.albums
        case .track: return self.tracks
        }
    }

    // MARK: Answers

    /// `GET /v1/{kind}s/{id}`.
    public func entity(_ kind: Kind, id: String) -> Answer {
        let entity: Entity?
        switch kind {
        case .artist: entity = self.artists[id]
        case .album: entity = self.albums[id]
        case .track: entity = self.tracks[id]
        }
        if let entity { return .success(entity.single) }
        return .failure(Self.isWellFormed(id) ? .notFound : .invalidID)
    }

    /// Track `id`'s full object (as a batch or a playlist has it), when the catalog holds it.
    func fullTrack(_ id: String) -> [UInt8]? { self.tracks[id]?.full }

    /// `GET /v1/{kind}s?ids=…`: the objects in request order, `null` for an unknown id, and for
    /// a base-62 one of the wrong length, which alone is a 400 "invalid id" (rspotify#67: `44`
    /// among a batch's ids is null there). A character that is not base-62 refuses the batch.
    public func several(_ kind: Kind, ids: String?) -> Answer {
        guard let ids, !ids.isEmpty else { return .failure(.missingIDs) }
        let list = ids.split(separator: ",", omittingEmptySubsequences: false)
        guard list.count <= kind.batchLimit else { return .failure(.tooManyIDs) }
        guard list.allSatisfy({ !$0.isEmpty && $0.utf8.allSatisfy(Self.isBase62) }) else { return .failure(.invalidID) }
        let table = self.table(kind)
        return .success(Self.object(key: kind.plural, items: list.map { table[String($0)]?.full ?? Self.null }))
    }

    /// `GET /v1/albums/{id}/tracks`: a page of simplified tracks.
    public func albumTracks(albumID: String, query: [String: String]) -> Answer {
        guard Self.isWellFormed(albumID) else { return .failure(.invalidID) }
        let paging: Paging
        switch Self.paging(query) {
        case .success(let value): paging = value
        case .failure(let failure): return .failure(failure)
        }
        guard let items = self.albumTrackItems[albumID] else { return .failure(.notFound) }
        return .success(Self.page(items, paging) { "\(Self.apiBase)/albums/\(albumID)/tracks?offset=\($0)&limit=\(paging.limit)" })
    }

    /// `GET /v1/browse/new-releases`: `{"albums": page}` of simplified albums, the newest
    /// release first, among the albums the fake knows a release date of.
    public func newReleases(query: [String: String]) -> Answer {
        Self.listing(self.newReleaseItems, query, path: "browse/new-releases").map { Self.wrapped(key: "albums", $0) }
    }

    /// A page of nothing at `path` (below the API's base), as Spotify answers a listing the
    /// fake holds nothing for: a user's public playlists, a playlist's tracks, categories.
    static func emptyPage(_ query: [String: String], path: String, maxLimit: Int = 50) -> Answer {
        Self.listing([], query, path: path, maxLimit: maxLimit)
    }

    static func listing(_ items: [[UInt8]], _ query: [String: String], path: String, maxLimit: Int = 50) -> Answer {
        Self.paging(query, maxLimit: maxLimit).map { paging in Self.page(items, paging) { "\(Self.apiBase)/\(path)?offset=\($0)&limit=\(paging.limit)" } }
    }

    /// `{"key":value}`: the browse endpoints give their page under a key.
    static func wrapped(key: String, _ value: [UInt8]) -> [UInt8] {
        [UInt8(ascii: "{")] + Self.jsonString(key) + [UInt8(ascii: ":")] + value + [UInt8(ascii: "}")]
    }

    /// `GET /v1/markets`: the ISO 3166-1 alpha-2 codes of the markets the fake answers for (a
    /// sample of Spotify's; the fake takes any market in a query).
    static let markets = ["AD", "AR", "AT", "AU", "BE", "BR", "CA", "CH", "DE", "DK", "ES", "FI", "FR", "GB", "IE", "IT", "JP", "MX", "NL", "NO", "NZ", "PL", "PT", "SE", "US"]

    /// `GET /v1/artists/{id}/albums`: a page of simplified albums with `album_group`, filtered
    /// by `include_groups` when given (and then kept in the links, as Spotify does).
    public func artistAlbums(artistID: String, query: [String: String]) -> Answer {
        guard Self.isWellFormed(artistID) else { return .failure(.invalidID) }
        let paging: Paging
        switch Self.paging(query) {
        case .success(let value): paging = value
        case .failure(let failure): return .failure(failure)
        }
        guard var listed = self.artistAlbumItems[artistID] else { return .failure(.notFound) }
        var suffix = ""
        if let groups = query["include_groups"], !groups.isEmpty {
            let wanted = Set(groups.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).lowercased() })
            listed = listed.filter { wanted.contains($0.group) }
            suffix = "&include_groups=" + Self.percentEncoded(groups, keeping: ",_")
        }
        return .success(Self.page(listed.map(\.bytes), paging) {
            "\(Self.apiBase)/artists/\(artistID)/albums?offset=\($0)&limit=\(paging.limit)\(suffix)"
        })
    }

    /// `GET /v1/artists/{id}/top-tracks` (`market`/`country` are accepted and change nothing).
    public func artistTopTracks(artistID: String) -> Answer {
        if let body = self.topTracks[artistID] { return .success(body) }
        return .failure(Self.isWellFormed(artistID) ? .notFound : .invalidID)
    }

    /// `GET /v1/search`: one paging object per requested type, keyed `artists`, `albums`, ….
    public func search(query: [String: String]) -> Answer {
        // Spotify's own `next` links say `query=`, and following them works: it takes both names.
        guard let text = query["q"] ?? query["query"], !text.isEmpty else { return .failure(.noSearchQuery) }
        guard let typeList = query["type"], !typeList.isEmpty else { return .failure(.missingSearchType) }
        var types: [String] = []
        for value in typeList.split(separator: ",", omittingEmptySubsequences: false).map(String.init) {
            guard Self.searchTypes.contains(value) else { return .failure(.badSearchType(value)) }
            if !types.contains(value) { types.append(value) }
        }
        let paging: Paging
        switch Self.paging(query, maxOffset: 1000) {
        case .success(let value): paging = value
        case .failure(let failure): return .failure(failure)
        }
        let parsed = SearchQuery(text)
        let echoed = Self.percentEncoded(text)
        var body: [UInt8] = [UInt8(ascii: "{")]
        for (index, type) in types.enumerated() {
            if index > 0 { body.append(UInt8(ascii: ",")) }
            body += Self.jsonString(type + "s") + [UInt8(ascii: ":")]
            let items = Kind(rawValue: type).map { self.results($0, parsed) } ?? []
            body += Self.page(items, paging) { "\(Self.apiBase)/search?offset=\($0)&limit=\(paging.limit)&query=\(echoed)&type=\(type)" }
        }
        body.append(UInt8(ascii: "}"))
        return .success(body)
    }

    /// Search items of `kind` for `query`: the recorded search's items for this very query
    /// first, in Spotify's order, then every other entity that matches.
    func results(_ kind: Kind, _ query: SearchQuery) -> [[UInt8]] {
        guard !query.isEmpty else { return [] }
        var seen = Set<String>()
        var items: [[UInt8]] = []
        if let key = query.plainKey, let ranked = self.rankings[key]?[kind] {
            for item in ranked {
                if seen.insert(item.id).inserted { items.append(item.bytes) }
            }
        }
        let table = self.table(kind)
        for id in self.order[kind] ?? [] where !seen.contains(id) {
            guard let entity = table[id], query.matches(kind, entity.keys) else { continue }
            seen.insert(id)
            items.append(entity.searchItem)
        }
        return items
    }

    // MARK: Pieces of answers

    struct Paging: Sendable {
        var offset: Int
        var limit: Int
    }

    /// `limit` 1…`maxLimit` (default 20; 50 but for a playlist's `/tracks`, 100), `offset`
    /// 0…`maxOffset` (default 0).
    static func paging(_ query: [String: String], maxOffset: Int = .max, maxLimit: Int = 50) -> Result<Paging, Failure> {
        func value(_ name: String) -> String? { query[name].flatMap { $0.isEmpty ? nil : $0 } }
        guard let limit = Int(value("limit") ?? "20"), (1...maxLimit).contains(limit) else { return .failure(.invalidLimit) }
        guard let offset = Int(value("offset") ?? "0"), offset >= 0, offset <= maxOffset else { return .failure(.invalidOffset) }
        return .success(Paging(offset: offset, limit: limit))
    }

    /// A paging object over `items`; `link(offset)` is the page's URL at that offset.
    static func page(_ items: [[UInt8]], _ paging: Paging, link: (Int) -> String) -> [UInt8] {
        let (offset, limit, total) = (paging.offset, paging.limit, items.count)
        let start = min(offset, total)
        let end = start + min(limit, total - start)
        var body = Array(#"{"href":"#.utf8) + Self.jsonString(link(offset)) + Array(#","items":["#.utf8)
        for index in start..<end {
            if index > start { body.append(UInt8(ascii: ",")) }
            body += items[index]
        }
        body += Array(#"],"limit":\#(limit),"next":"#.utf8)
        // offset < total first: offset + limit cannot overflow then.
        body += offset < total && limit < total - offset ? Self.jsonString(link(offset + limit)) : Self.null
        body += Array(#","offset":\#(offset),"previous":"#.utf8)
        body += offset > 0 ? Self.jsonString(link(max(0, offset - limit))) : Self.null
        body += Array(#","total":\#(total)}"#.utf8)
        return body
    }

    /// `{"key":[item,item,…]}`.
    static func object(key: String, items: [[UInt8]]) -> [UInt8] {
        var body = [UInt8(ascii: "{")] + Self.jsonString(key) + Array(":[".utf8)
        for (index, item) in items.enumerated() {
            if index > 0 { body.append(UInt8(ascii: ",")) }
            body += item
        }
        body += Array("]}".utf8)
        return body
    }

    static let null = Array("null".utf8)

    static func compact(_ object: Any) throws -> [UInt8] {
        Array(try JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes, .sortedKeys]))
    }

    /// `text` as a JSON string literal.
    public static func jsonString(_ text: String) -> [UInt8] {
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = [UInt8(ascii: "\"")]
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                out += [UInt8(ascii: "\\"), byte]
            case 0..<0x20:
                out += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            default:
                out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
        return out
    }

    /// Percent-encodes all but the unreserved characters (and `keeping`), as `%20` for a space.
    static func percentEncoded(_ text: String, keeping: String = "") -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        let kept = Set(keeping.utf8)
        var out: [UInt8] = []
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(byte)
            case _ where kept.contains(byte):
                out.append(byte)
            default:
                out += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// A Spotify id: 22 base-62 characters.
    /// The 62 characters of Spotify's ids, in the order of their values.
    static let base62Digits = Array("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")

    public static func isWellFormed<S: StringProtocol>(_ id: S) -> Bool {
        id.utf8.count == 22 && id.utf8.allSatisfy(Self.isBase62)
    }

    static func isBase62(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
            || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
    }

    /// Lower-cased, accent-free words of `text` (letters and digits; everything else separates).
    static func words(_ text: String) -> [String] {
        text.folding(options: [.caseInsensitive, .diacriticInsensitive], locale: nil).lowercased()
            .split(whereSeparator: { !($0.isLetter || $0.isNumber) }).map(String.init)
    }

    /// `key=value&…` (the part after `?`), percent-decoded, `+` as a space.
    static func queryItems<S: StringProtocol>(_ query: S) -> [String: String] {
        var out: [String: String] = [:]
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(parts[0]).removingPercentEncoding ?? String(parts[0])
            let value = parts.count > 1 ? String(parts[1]).replacingOccurrences(of: "+", with: " ") : ""
            out[key] = value.removingPercentEncoding ?? value
        }
        return out
    }
}

extension FakeCatalog.Kind {
    /// From a path segment: `artists`, `albums`, `tracks`.
    init?(plural: String) {
        guard plural.hasSuffix("s"), let kind = Self(rawValue: String(plural.dropLast())) else { return nil }
        self = kind
    }
}

// MARK: Search queries

/// A search `q`: free words, and Spotify's field filters (`artist:`, `album:`, `track:`,
/// `year:1990-1999`, `genre:`, `isrc:`, `upc:`, `tag:`); a filter's value may be quoted. Every
/// free word must begin a word of the name or of an artist's name; every filter must hold for
/// the kind searched (a filter Spotify does not apply to that kind matches nothing).
struct SearchQuery: Sendable {
    var words: [String] = []
    var filters: [(field: String, value: String)] = []

    static let fields: Set<String> = ["artist", "album", "track", "year", "genre", "isrc", "upc", "tag"]

    init(_ text: String) {
        for token in Self.tokens(text) {
            if let colon = token.firstIndex(of: ":"), Self.fields.contains(token[..<colon].lowercased()) {
                let value = String(token[token.index(after: colon)...])
                if !value.isEmpty { self.filters.append((token[..<colon].lowercased(), value)) }
            } else {
                self.words += FakeCatalog.words(token)
            }
        }
    }

    var isEmpty: Bool { self.words.isEmpty && self.filters.isEmpty }

    /// The key of a recorded search with the same words, when there are no filters.
    var plainKey: String? { self.filters.isEmpty && !self.words.isEmpty ? self.words.joined(separator: " ") : nil }

    /// Splits on white space outside double quotes; the quotes go.
    static func tokens(_ text: String) -> [String] {
        var tokens: [String] = []
        var current = ""
        var quoted = false
        for character in text {
            if character == "\"" {
                quoted.toggle()
            } else if character.isWhitespace && !quoted {
                if !current.isEmpty { tokens.append(current) }
                current = ""
            } else {
                current.append(character)
            }
        }
        if !current.isEmpty { tokens.append(current) }
        return tokens
    }

    /// Every word of `wanted` begins one of `words`.
    static func found(_ wanted: [String], in words: [String]) -> Bool {
        wanted.allSatisfy { word in words.contains { $0.hasPrefix(word) } }
    }

    func matches(_ kind: FakeCatalog.Kind, _ keys: FakeCatalog.SearchKeys) -> Bool {
        guard Self.found(self.words, in: keys.name + keys.artists) else { return false }
        for filter in self.filters {
            let wanted = FakeCatalog.words(filter.value)
            let holds: Bool
            switch (filter.field, kind) {
            case ("artist", .artist): holds = Self.found(wanted, in: keys.name)
            case ("artist", _): holds = Self.found(wanted, in: keys.artists)
            case ("album", .album): holds = Self.found(wanted, in: keys.name)
            case ("album", .track): holds = Self.found(wanted, in: keys.album)
            case ("track", .track): holds = Self.found(wanted, in: keys.name)
            case ("genre", .artist): holds = Self.found(wanted, in: keys.genres)
            case ("year", .album), ("year", .track): holds = Self.year(filter.value, contains: keys.year)
            case ("isrc", .track): holds = keys.isrc == filter.value.lowercased()
            case ("upc", .album): holds = keys.upc == filter.value.lowercased()
            default: holds = false
            }
            if !holds { return false }
        }
        return true
    }

    /// `year:2020` or `year:1990-1999`.
    static func year(_ value: String, contains year: Int?) -> Bool {
        let bounds = value.split(separator: "-").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard let year, let low = bounds.first ?? nil, let high = bounds.last ?? nil, bounds.count <= 2 else { return false }
        return (min(low, high)...max(low, high)).contains(year)
    }
}

// MARK: Building

extension FakeCatalog {
    /// Reads the recordings once into JSON objects (not Sendable; used by `init` only).
    fileprivate final class Builder {
        typealias Object = [String: Any]

        /// The richest object of each id (the most keys; the first of equals).
        var best: [Kind: [String: Object]] = [:]
        var order: [Kind: [String]] = [:]
        /// Whole recorded lookups (the file's bytes) and their object's key count.
        var lookups: [Kind: [String: (bytes: [UInt8], keys: Int)]] = [:]
        /// Album id → the track items of recorded listings (`…/albums/{id}/tracks`).
        var albumListings: [String: [Object]] = [:]
        /// Artist id → the album items of recorded listings (`…/artists/{id}/albums`).
        var artistListings: [String: [Object]] = [:]
        /// Normalized query → kind → items of recorded searches.
        var searchListings: [String: [Kind: [Object]]] = [:]
        /// Track id → album id, from listings and the tracks' own `album`.
        var trackAlbum: [String: String] = [:]

        func add(_ root: Any, wholeLookup: [UInt8]?) {
            if let bytes = wholeLookup, let object = root as? Object, let identity = Self.identity(object) {
                self.lookups[identity.kind, default: [:]][identity.id] = (bytes, object.count)
            }
            self.walk(root)
        }

        static func identity(_ object: Object) -> (kind: Kind, id: String)? {
            guard let type = object["type"] as? String, let kind = Kind(rawValue: type), let id = object["id"] as? String,
                object["name"] as? String != nil
            else { return nil }
            return (kind, id)
        }

        private func walk(_ value: Any) {
            if let array = value as? [Any] {
                for element in array { self.walk(element) }
                return
            }
            guard let object = value as? Object else { return }
            if let href = object["href"] as? String, let items = object["items"] as? [Any] {
                self.listing(href: href, items: items.compactMap { $0 as? Object })
            }
            if let identity = Self.identity(object) {
                let (kind, id) = identity
                if let current = self.best[kind]?[id] {
                    if object.count > current.count { self.best[kind]?[id] = object }
                } else {
                    self.best[kind, default: [:]][id] = object
                    self.order[kind, default: []].append(id)
                }
            }
            // Sorted, so that the order entities are met in is the same on every run.
            for key in object.keys.sorted() {
                if let nested = object[key] { self.walk(nested) }
            }
        }

        /// Remembers the items of a recorded listing, known by its `href`.
        private func listing(href: String, items: [Object]) {
            let prefix = FakeCatalog.apiBase + "/"
            guard href.hasPrefix(prefix) else { return }
            let target = href.dropFirst(prefix.count)
            let path = target.prefix { $0 != "?" }.split(separator: "/").map(String.init)
            let query = target.firstIndex(of: "?").map { FakeCatalog.queryItems(target[target.index(after: $0)...]) } ?? [:]
            if path.count == 3, path[0] == "albums", path[2] == "tracks" {
                self.albumListings[path[1], default: []] += items
                for item in items { if let id = item["id"] as? String { self.trackAlbum[id] = path[1] } }
            } else if path.count == 3, path[0] == "artists", path[2] == "albums" {
                self.artistListings[path[1], default: []] += items
            } else if path == ["search"], let text = query["query"], let type = query["type"], let kind = Kind(rawValue: type),
                let key = SearchQuery(text).plainKey
            {
                self.searchListings[key, default: [:]][kind, default: []] += items
            }
        }

        func finish() {
            for (id, track) in self.best[.track] ?? [:] where self.trackAlbum[id] == nil {
                if let albumID = (track["album"] as? Object)?["id"] as? String { self.trackAlbum[id] = albumID }
            }
        }

        /// The recorded file for `id`, if it is the whole answer and its object stayed the richest.
        func recordedLookup(_ kind: Kind, _ id: String) -> [UInt8]? {
            guard let lookup = self.lookups[kind]?[id], self.best[kind]?[id]?.count == lookup.keys else { return nil }
            return lookup.bytes
        }

        static func artistIDs(_ object: Object) -> [String] {
            (object["artists"] as? [Any] ?? []).compactMap { ($0 as? Object)?["id"] as? String }
        }

        static func artistNames(_ object: Object) -> [String] {
            (object["artists"] as? [Any] ?? []).compactMap { ($0 as? Object)?["name"] as? String }
        }

        /// An album as search and artist albums list it: no `tracks` and no full-only keys.
        func simplifiedAlbum(_ id: String) -> Object? {
            guard var album = self.best[.album]?[id] else { return nil }
            for key in ["tracks", "copyrights", "external_ids", "genres", "label", "popularity", "album_group"] { album[key] = nil }
            self.fillDated(&album, id: id)
            return album
        }

        /// Members every album has, for one recorded without them (an older answer's; clients
        /// such as tekore require them): its tracks' count as the catalog knows them, and a
        /// release date Spotify gives when it has none ("0000", precision "year").
        func fillDated(_ album: inout Object, id: String) {
            if album["total_tracks"] == nil { album["total_tracks"] = max(1, self.albumTrackItems(id).count) }
            if album["release_date"] == nil { (album["release_date"], album["release_date_precision"]) = ("0000", "year") }
            if album["release_date_precision"] == nil { album["release_date_precision"] = "day" }
        }

        /// An album as `GET /v1/albums/{id}` answers: with `tracks`, a paging object of up to 50.
        func fullAlbum(_ id: String) -> Object {
            var album = self.best[.album]![id]!
            album["album_group"] = nil
            // Only a simplified object was recorded for most albums: the members a full album
            // always has are generated empty (clients such as tekore require them).
            let fullOnly: [(String, Any)] = [("copyrights", [Any]()), ("external_ids", Object()), ("genres", [Any]()), ("label", ""), ("popularity", 0)]
            for (key, empty) in fullOnly where album[key] == nil { album[key] = empty }
            self.fillDated(&album, id: id)
            if album["tracks"] == nil {
                let items = self.albumTrackItems(id)
                let link = { (offset: Int) in "\(FakeCatalog.apiBase)/albums/\(id)/tracks?offset=\(offset)&limit=50" }
                album["tracks"] = [
                    "href": link(0), "items": items.prefix(50).map { $0 as Any }, "limit": 50,
                    "next": items.count > 50 ? link(50) as Any : NSNull(), "offset": 0, "previous": NSNull(), "total": items.count,
                ] as Object
            }
            return album
        }

        /// An artist as `GET /v1/artists/{id}` (and search) answers. Only a simplified artist
        /// (an album's or a track's) was recorded for most: the members a full artist always has
        /// are generated empty, as for albums.
        func fullArtist(_ id: String) -> Object {
            var artist = self.best[.artist]![id]!
            let fullOnly: [(String, Any)] = [("followers", ["href": NSNull(), "total": 0] as Object), ("genres", [Any]()), ("images", [Any]()), ("popularity", 0)]
            for (key, empty) in fullOnly where artist[key] == nil { artist[key] = empty }
            return artist
        }

        /// A track as `GET /v1/tracks/{id}` answers: with its `album` when that is known, and the
        /// members a full track always has (most were recorded in an album's simplified list).
        func fullTrack(_ id: String) -> Object {
            var track = self.best[.track]![id]!
            if track["album"] == nil, let albumID = self.trackAlbum[id], let album = self.simplifiedAlbum(albumID) {
                track["album"] = album
            }
            // An album recorded without them (an older answer's) takes them from the catalog's
            // best record of it, as a playlist's or a batch's track has them on Spotify (tekore requires them).
            if var album = track["album"] as? Object, let id = album["id"] as? String, let best = self.simplifiedAlbum(id) {
                for key in ["release_date", "release_date_precision", "total_tracks"] where album[key] == nil { album[key] = best[key] }
                track["album"] = album
            }
            let fullOnly: [(String, Any)] = [("external_ids", Object()), ("popularity", 0), ("is_local", false)]
            for (key, empty) in fullOnly where track[key] == nil { track[key] = empty }
            return track
        }

        /// A track as an album's track list has it: no `album`, `external_ids` or `popularity`.
        func simplifiedTrack(_ id: String) -> Object {
            var track = self.best[.track]![id]!
            for key in ["album", "external_ids", "popularity"] { track[key] = nil }
            // Every track object has it (one recorded in 2018 lacks it; tekore requires it).
            if track["is_local"] == nil { track["is_local"] = false }
            return track
        }

        /// The album's tracks: recorded listings as recorded, then other tracks on it; unique by
        /// id, in disc and track order.
        func albumTrackItems(_ albumID: String) -> [Object] {
            var seen = Set<String>()
            var items: [Object] = []
            for item in self.albumListings[albumID] ?? [] {
                if let id = item["id"] as? String, seen.insert(id).inserted { items.append(item) }
            }
            for id in self.order[.track] ?? [] where !seen.contains(id) && self.trackAlbum[id] == albumID {
                seen.insert(id)
                items.append(self.simplifiedTrack(id))
            }
            func position(_ index: Int) -> (Int, Int, Int) {
                let disc = items[index]["disc_number"] as? Int ?? 1
                let track = items[index]["track_number"] as? Int ?? Int.max
                return (disc, track, index)
            }
            return items.indices.sorted { position($0) < position($1) }.map { items[$0] }
        }

        /// The artist's albums: a recorded listing as recorded (Spotify's answer, nothing added);
        /// otherwise the albums naming the artist (their `album_group` is their `album_type`: the
        /// artist's own releases).
        func artistAlbumItems(_ artistID: String) -> [(group: String, object: Object)] {
            var seen = Set<String>()
            var items: [(group: String, object: Object)] = []
            for item in self.artistListings[artistID] ?? [] {
                guard let id = item["id"] as? String, seen.insert(id).inserted else { continue }
                items.append((item["album_group"] as? String ?? item["album_type"] as? String ?? "album", item))
            }
            if !items.isEmpty { return items }
            for id in self.order[.album] ?? [] where !seen.contains(id) {
                guard let album = self.best[.album]?[id], Self.artistIDs(album).contains(artistID), var simple = self.simplifiedAlbum(id)
                else { continue }
                seen.insert(id)
                let group = album["album_type"] as? String ?? "album"
                simple["album_group"] = group
                items.append((group, simple))
            }
            return items
        }

        /// Up to 10 tracks naming the artist, the most popular first.
        func topTrackIDs(_ artistID: String) -> [String] {
            let tracks = self.best[.track] ?? [:]
            let ids = (self.order[.track] ?? []).filter { tracks[$0].map(Self.artistIDs)?.contains(artistID) == true }
            func popularity(_ index: Int) -> Int { tracks[ids[index]]?["popularity"] as? Int ?? -1 }
            let ranked = ids.indices.sorted { popularity($0) != popularity($1) ? popularity($0) > popularity($1) : $0 < $1 }
            return ranked.prefix(10).map { ids[$0] }
        }

        func searchKeys(_ kind: Kind, _ id: String) -> SearchKeys {
            let object = kind == .track ? self.fullTrack(id) : self.best[kind]![id]!
            var keys = SearchKeys()
            keys.name = FakeCatalog.words(object["name"] as? String ?? "")
            keys.artists = Self.artistNames(object).flatMap(FakeCatalog.words)
            let externalIDs = object["external_ids"] as? Object
            switch kind {
            case .artist:
                keys.genres = (object["genres"] as? [Any] ?? []).compactMap { $0 as? String }.flatMap(FakeCatalog.words)
            case .album:
                keys.year = Self.year(object)
                keys.upc = (externalIDs?["upc"] as? String)?.lowercased()
            case .track:
                let album = object["album"] as? Object
                keys.album = FakeCatalog.words(album?["name"] as? String ?? "")
                keys.year = album.flatMap(Self.year)
                keys.isrc = (externalIDs?["isrc"] as? String)?.lowercased()
            }
            return keys
        }

        static func year(_ album: Object) -> Int? {
            (album["release_date"] as? String).flatMap { Int($0.prefix(4)) }
        }
    }
}
