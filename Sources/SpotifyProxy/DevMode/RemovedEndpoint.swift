import Foundation
import NIOCore
import NIOHTTP1

/// The endpoints Spotify removed for development-mode apps in February 2026 that the proxy
/// cannot make from others (the batches and large pages it assembles, ``Assembly``). Spotify
/// answers them 403 "Forbidden" and nothing more; once development mode is known the proxy
/// answers that 403 itself, saying what was removed and what to use instead, and spends no
/// quota on it; before, the 403 of a GET that teaches `auto` the mode is explained alike.
/// (Facts sheet: the February 2026 migration guide and changelog.) Pure: a table.
enum RemovedEndpoint {
    /// How the proxy knows the mode (`setting` says which way), and how to tell it otherwise.
    static func modeNote(_ setting: DevModeSetting) -> String {
        let why = setting == .on ? "[spotify] dev_mode = \"on\"" : "[spotify] dev_mode = \"auto\", and Spotify has refused it as one"
        return "the proxy treats this app as a development-mode app (\(why)); if it has extended quota, set dev_mode = \"off\""
    }

    static let firstSegments = ["browse/", "markets", "users/", "playlists/", "me/"]

    /// The message for `method` on `target` (origin form) when Spotify removed it for
    /// development-mode apps, else nil, for an app `setting` says may be one. Most requests
    /// leave on their first path segment.
    static func message(method: HTTPMethod, target: String, setting: DevModeSetting) -> String? {
        guard let segments = Self.segments(of: target, firstSegments: Self.firstSegments, artistSuffix: "/top-tracks") else { return nil }
        // A HEAD is its GET without the body: the same message, so the same length.
        let removed = "Spotify removed \(method == .HEAD ? "GET" : method.rawValue) /v1/"
        switch (segments.first, segments.count) {
        case ("artists"?, 3) where segments[2] == "top-tracks" && (method == .GET || method == .HEAD):
            return "\(removed)artists/{id}/top-tracks for development-mode apps in February 2026, and no other endpoint gives an artist's top tracks; \(Self.modeNote(setting))"
        case ("browse"?, 2...3) where segments[1] == "new-releases" || segments[1] == "categories":
            let what = segments[1] == "categories" ? "categories and browse/categories/{id}" : "new-releases"
            return "\(removed)browse/\(what) for development-mode apps in February 2026, and nothing replaces it; \(Self.modeNote(setting))"
        case ("markets"?, 1) where method == .GET || method == .HEAD:
            return "\(removed)markets for development-mode apps in February 2026, and nothing replaces it; \(Self.modeNote(setting))"
        case ("users"?, 2) where method == .GET || method == .HEAD:
            return "\(removed)users/{id} for development-mode apps in February 2026: GET /v1/me is the logged-in user's own profile; \(Self.modeNote(setting))"
        case ("users"?, 3) where segments[2] == "playlists" && method == .POST:
            return "\(removed)users/{id}/playlists for development-mode apps in February 2026: send the same request to POST /v1/me/playlists, which creates it for the logged-in user; \(Self.modeNote(setting))"
        case ("users"?, 3) where segments[2] == "playlists" && (method == .GET || method == .HEAD):
            return "\(removed)users/{id}/playlists for development-mode apps in February 2026: GET /v1/me/playlists lists the logged-in user's own; \(Self.modeNote(setting))"
        case ("me"?, 2) where (method == .PUT || method == .DELETE) && (Self.libraryKinds[String(segments[1])] != nil || segments[1] == "following"):
            return "Spotify replaced \(method.rawValue) /v1/me/\(segments[1]) with \(method.rawValue) /v1/me/library?uris=… (each id as its Spotify URI, at most \(Self.libraryLimit)) for development-mode apps in February 2026, where the proxy sends such a request itself, but not this one: \(Self.libraryProblem(target, following: segments[1] == "following", check: false)); \(Self.modeNote(setting))"
        case ("me"?, 3) where segments[2] == "contains" && (method == .GET || method == .HEAD) && (Self.libraryKinds[String(segments[1])] != nil || segments[1] == "following"):
            return "Spotify replaced GET /v1/me/\(segments[1])/contains with GET /v1/me/library/contains?uris=… (each id as its Spotify URI, at most \(Self.libraryLimit)) for development-mode apps in February 2026, where the proxy sends such a check itself, but not this one: \(Self.libraryProblem(target, following: segments[1] == "following", check: true)); \(Self.modeNote(setting))"
        case ("playlists"?, 3) where segments[2] == "followers" && (method == .PUT || method == .DELETE):
            return "Spotify replaced \(method.rawValue) /v1/playlists/{id}/followers with \(method.rawValue) /v1/me/library?uris=spotify:playlist:{id} for development-mode apps in February 2026; \(Self.modeNote(setting))"
        case ("playlists"?, 4) where segments[2] == "followers" && segments[3] == "contains" && (method == .GET || method == .HEAD):
            return "Spotify replaced GET /v1/playlists/{id}/followers/contains with GET /v1/me/library/contains?uris=spotify:playlist:{id}, which answers for the logged-in user, for development-mode apps in February 2026, where the proxy sends such a check itself, but not this one: it names several users, a user other than the logged-in one, or a playlist id that is not a Spotify id; ask about one playlist, for the logged-in user (ids= empty, or that user's id); \(Self.modeNote(setting))"
        case ("playlists"?, 3) where segments[2] == "tracks":
            return "Spotify replaced /v1/playlists/{id}/tracks with /v1/playlists/{id}/items for development-mode apps in February 2026 (its answers say `item` where they said `track`): send the request to /v1/playlists/\(segments[1])/items\(method == .DELETE ? ", its body's top-level \"tracks\" named \"items\"" : ""); \(Self.modeNote(setting))"
        default:
            return nil
        }
    }

    /// Either table's removal of `method` on `target`, the February 2026 one's only when
    /// development mode may apply (`setting` is not `off`). No target is in both.
    static func removal(method: HTTPMethod, target: String, setting: DevModeSetting) -> Removal? {
        if setting != .off, let message = Self.message(method: method, target: target, setting: setting) {
            return Removal(when: .developmentMode2026, status: Self.malformedLibraryQuery(method: method, target: target) ? 400 : 403, message: message)
        }
        return Self.removedIn2024(method: method, target: target)
    }

    /// A GET (or HEAD) of an endpoint Spotify removed on 2024-11-27 for apps created since then
    /// and for development-mode apps (facts sheet: the blog of that day), else nil. Spotify
    /// refuses them 404 "Not Found" (recommendations, related artists, featured playlists, a
    /// category's playlists) or 403 with no message (audio features and analysis), which says
    /// nothing of why; ``DevMode/refusal(of:in:)`` tells them apart from its other errors.
    /// Unlike the February 2026 table, this applies whatever `dev_mode` says.
    static func removedIn2024(method: HTTPMethod, target: String) -> Removal? {
        guard method == .GET || method == .HEAD,
            let segments = Self.segments(of: target, firstSegments: Self.firstSegments2024, artistSuffix: "/related-artists")
        else { return nil }
        let (what, status): (String, Int)
        switch (segments.first, segments.count) {
        case ("recommendations"?, 1): (what, status) = ("recommendations", 404)
        case ("recommendations"?, 2) where segments[1] == "available-genre-seeds": (what, status) = ("recommendations/available-genre-seeds", 404)
        case ("artists"?, 3): (what, status) = ("artists/{id}/related-artists", 404)
        case ("audio-features"?, 1): (what, status) = ("audio-features", 403)
        case ("audio-features"?, 2): (what, status) = ("audio-features/{id}", 403)
        case ("audio-analysis"?, 2): (what, status) = ("audio-analysis/{id}", 403)
        case ("browse"?, 2) where segments[1] == "featured-playlists": (what, status) = ("browse/featured-playlists", 404)
        case ("browse"?, 4) where segments[1] == "categories" && segments[3] == "playlists": (what, status) = ("browse/categories/{id}/playlists", 404)
        default: return nil
        }
        return Removal(
            when: .newApps2024, status: status,
            message: "Spotify removed GET /v1/\(what) on 2024-11-27 for apps created since then and for development-mode apps, and nothing replaces it; "
                + "only an app that had extended quota before then still has it")
    }

    static let firstSegments2024 = ["recommendations", "audio-features", "audio-analysis/", "browse/"]

    /// For a development-mode app, `/v1/playlists/{id}/tracks` asked as Spotify's replacement,
    /// `/v1/playlists/{id}/items` (a read, answered in the old shape by
    /// ``ResponseTransform/playlistTracks``; an addition or a reordering, whose bodies and
    /// answers did not change), with `limit` at most 50, the most `/items` takes (/tracks took
    /// 100; the answer's `limit` and `next` say so), and a `fields` filter naming each entry's
    /// `track` naming its `item` (``itemsFields(_:)``); a removal too, whose body's `tracks`
    /// the caller renames (``RequestBodyEdit/tracksKeyAsItems``). Else nil.
    static func playlistItems(method: HTTPMethod, target: String) -> String? {
        guard target.hasUTF8Prefix("/v1/playlists/"), [.GET, .HEAD, .POST, .PUT, .DELETE].contains(method) else { return nil }
        let path = target.pathWithoutQuery
        var segments = path.dropFirst("/v1/playlists/".count).split(separator: "/", omittingEmptySubsequences: false)
        if segments.count > 1, segments.last == "" { segments.removeLast() }
        guard segments.count == 2, !segments[0].isEmpty, segments[1] == "tracks" else { return nil }
        var query = target[path.endIndex...]
        if !query.isEmpty {
            let pairs = query.dropFirst().split(separator: "&", omittingEmptySubsequences: false).map { pair -> Substring in
                // Decoded as a form writes it (`+` a space), so that re-encoding keeps its meaning.
                let decoded = QueryString.decode(pair.drop { $0 != "=" }.dropFirst())
                if pair.hasPrefix("limit="), let limit = Int(decoded), limit > 50 { return "limit=50" }
                if pair.hasPrefix("fields="), case let fields = Self.itemsFields(decoded), fields != decoded {
                    return "fields=" + QueryString.encode(fields)
                }
                return pair
            }
            query = "?" + pairs.joined(separator: "&")
        }
        return "/v1/playlists/\(segments[0])/items\(query)"
    }

    /// A `fields` filter of a `/tracks` page (`items(added_at,track(name))`, `items.track.name`)
    /// for the `/items` page, where each entry's `track` is its `item`: only that name is changed
    /// (a track's own `track` flag, `items(track(track))`, is kept), an exclusion (`!track`) and
    /// spaces around a name too.
    static func itemsFields(_ fields: String) -> String {
        var out = ""
        // The path of the names each open parenthesis applies to, and of the current term in it.
        var owners: [[String]] = [[]]
        var term: [String] = []
        var name = ""
        func endName() {
            guard !name.isEmpty else { return }
            // The name itself, without the spaces around it or an exclusion's `!`.
            let bare = name.trimmingCharacters(in: .whitespaces)
            let core = bare.hasPrefix("!") ? String(bare.dropFirst()).trimmingCharacters(in: .whitespaces) : bare
            if owners[owners.count - 1] + term + [core] == ["items", "track"], let range = name.range(of: core, options: .backwards) {
                name.replaceSubrange(range, with: "item")
            }
            out += name
            term.append(core)
            name = ""
        }
        for character in fields {
            switch character {
            case "(", ")", ",", ".":
                endName()
                if character == "(" {
                    owners.append(owners[owners.count - 1] + term)
                    term = []
                } else if character == ")" {
                    if owners.count > 1 { owners.removeLast() }
                    term = []
                } else if character == "," {
                    term = []
                }
                out.append(character)
            default:
                name.append(character)
            }
        }
        endName()
        return out
    }

    /// The replacement of `method` on `target`: a playlist's `/tracks` as its `/items`
    /// (``playlistItems(method:target:)``), a library write or check by type as
    /// `/v1/me/library` (``libraryTarget(method:target:userID:)``); else nil.
    static func replacement(method: HTTPMethod, target: String, userID: @autoclosure () -> String? = nil) -> EndpointReplacement? {
        if let items = Self.playlistItems(method: method, target: target) {
            switch method {
            case .GET, .HEAD: return EndpointReplacement(target: items, transform: .playlistTracks)
            // The body names them `tracks`; /items, `items`.
            case .DELETE: return EndpointReplacement(target: items, bodyEdit: .tracksKeyAsItems)
            default: return EndpointReplacement(target: items, always: true)
            }
        }
        return Self.libraryTarget(method: method, target: target, userID: userID()).map { EndpointReplacement(target: $0) }
    }

    /// A library write or check by type (`/v1/me/tracks`, …, `/v1/me/following`) that is not
    /// sent to `/v1/me/library` because its query is wrong in itself (ids empty, not Spotify
    /// ids, too many; a name repeated; a type that is neither artist nor user): the client's to
    /// fix, so 400 as Spotify answers an invalid id (and the batch reads here do), not the 403
    /// of a removal. Ids sent in the body instead are no mistake of the client's: those stay 403.
    static func malformedLibraryQuery(method: HTTPMethod, target: String) -> Bool {
        let check = method == .GET || method == .HEAD
        guard check || method == .PUT || method == .DELETE, target.hasUTF8Prefix("/v1/me/"),
            Self.libraryTarget(method: method, target: target) == nil
        else { return false }
        var segments = target.pathWithoutQuery.dropFirst("/v1/me/".count).split(separator: "/", omittingEmptySubsequences: false)
        if segments.count > 1, segments.last == "" { segments.removeLast() }
        guard segments.count == (check ? 2 : 1), !check || segments[1] == "contains",
            Self.libraryKinds[String(segments[0])] != nil || segments[0] == "following"
        else { return false }
        let query = QueryString.parse(target)
        return query["ids"] != nil || !QueryString.repeatedNames(in: target).isEmpty
            || (segments[0] == "following" && query["type"] != "artist" && query["type"] != "user")
    }

    /// Why ``libraryTarget(method:target:)`` cannot send a library write (or, `check`, a check)
    /// by type to `/v1/me/library`, in words that say what to send instead.
    static func libraryProblem(_ target: String, following: Bool, check: Bool) -> String {
        let query = QueryString.parse(target)
        let repeated = QueryString.repeatedNames(in: target)
        if !repeated.isEmpty { return "\(repeated.joined(separator: " and ")) is repeated in the query; send it once" }
        if following, query["type"] != "artist", query["type"] != "user" { return "its type is not artist or user; send type=artist or type=user" }
        guard let ids = query["ids"] else {
            return "its ids are not in the query; send them there as ids=… (comma-separated)\(check ? "" : ", not in the body")"
        }
        guard !ids.isEmpty else { return "its ids= is empty; send 1 to \(Self.libraryLimit) Spotify ids, comma-separated" }
        let count = ids.split(separator: ",", omittingEmptySubsequences: false).count
        if count > Self.libraryLimit { return "it names \(count) ids; send at most \(Self.libraryLimit) per request" }
        guard Self.libraryTarget(method: check ? .GET : .PUT, target: target) != nil else {
            return "its ids are not all Spotify ids (empty, or with a separator); send ids=… of Spotify ids, comma-separated"
        }
        // Only when it could not be sent again after Spotify's refusal.
        return "the proxy could not send it again (its body was not all kept, or it had been sent again already); send it to /v1/me/library?uris=… yourself"
    }

    /// The library writes Spotify replaced for development-mode apps in February 2026 with
    /// `PUT`/`DELETE /v1/me/library?uris=…` (facts sheet: the migration guide), which every app
    /// has: the kind of URI each saves or removes. `/v1/me/following` says it in its `type`.
    static let libraryKinds = ["tracks": "track", "albums": "album", "episodes": "episode", "shows": "show", "audiobooks": "audiobook"]
    /// The most URIs `/v1/me/library` takes at once (official-openapi.yml).
    static let libraryLimit = 40

    /// A save, removal, follow or unfollow by type — `PUT`/`DELETE` `/v1/me/tracks?ids=…` (and
    /// albums, episodes, shows, audiobooks), `/v1/me/following?type=artist&ids=…`,
    /// `/v1/playlists/{id}/followers` — as Spotify's replacement for them,
    /// `/v1/me/library?uris=…`, each id as its URI (the answer is the same empty 200; a
    /// playlist follow's `public` has no place there); a check of them — `GET` (or `HEAD`) of
    /// the same paths below `/contains` — as `/v1/me/library/contains?uris=…` (the same array of
    /// booleans; a playlist's, which asked about users named in its deprecated `ids`, only for
    /// the logged-in user, the one Spotify allowed). Nil for anything else, or when the ids are
    /// not in the query (a body's), or are not 1–40 ids; for a playlist's check, when it names a
    /// user other than `userID` (the Spotify id of the user whose token it carries, when known).
    static func libraryTarget(method: HTTPMethod, target: String, userID: @autoclosure () -> String? = nil) -> String? {
        let check: Bool
        switch method {
        case .PUT, .DELETE: check = false
        case .GET, .HEAD: check = true
        default: return nil
        }
        // Every GET passes here: most leave on their first bytes, the rest on their last.
        guard target.hasUTF8Prefix("/v1/me/") || target.hasUTF8Prefix("/v1/playlists/") else { return nil }
        let path = target.pathWithoutQuery
        guard !check || path.hasSuffix("/contains") || path.hasSuffix("/contains/") else { return nil }
        var segments = path.split(separator: "/", omittingEmptySubsequences: false)
        if segments.count > 1, segments.last == "" { segments.removeLast() }
        if check { segments.removeLast() }
        guard segments.count >= 4, segments[0] == "", segments[1] == "v1" else { return nil }
        func isID(_ id: Substring) -> Bool { !id.isEmpty && id.utf8.allSatisfy(Assembly.isBase62) }
        let uris: [String]
        if segments.count == 5, segments[2] == "playlists", segments[4] == "followers", isID(segments[3]) {
            if check {
                // Spotify let a check name one user, the logged-in one (official-openapi.yml):
                // /v1/me/library/contains answers for that user only. One named who is known to
                // be someone else is not that user's check (an id not known, a
                // `SPOTIFY_REFRESH_TOKEN` user's, is taken to be the user's own).
                guard QueryString.repeatedNames(in: target).isEmpty else { return nil }
                let named = QueryString.parse(target)["ids"] ?? ""
                guard named.isEmpty || (!named.contains(",") && userID().map { $0 == named } != false) else { return nil }
            }
            uris = ["spotify:playlist:\(segments[3])"]
        } else if segments.count == 4, segments[2] == "me" {
            // A repeated `ids` or `type` would lose one of its values.
            guard QueryString.repeatedNames(in: target).isEmpty else { return nil }
            let query = QueryString.parse(target)
            let kind = segments[3] == "following" ? query["type"].flatMap { ["artist", "user"].contains($0) ? $0 : nil } : Self.libraryKinds[String(segments[3])]
            // A user's id is not always base 62 (`smedjan`, `alice-id`): any without a separator.
            let valid: (Substring) -> Bool = kind == "user" ? { !$0.isEmpty && !$0.contains(":") && !$0.contains(" ") } : isID
            guard let kind, let ids = query["ids"]?.split(separator: ",", omittingEmptySubsequences: false),
                (1...Self.libraryLimit).contains(ids.count), ids.allSatisfy(valid)
            else { return nil }
            uris = ids.map { "spotify:\(kind):\($0)" }
        } else {
            return nil
        }
        return (check ? "/v1/me/library/contains?uris=" : "/v1/me/library?uris=") + QueryString.encode(uris.joined(separator: ","))
    }

    /// `/v1/me/playlists` with `target`'s query: where the logged-in user's own
    /// `/v1/users/{id}/playlists` goes (a creation, a listing).
    static func mePlaylists(keepingQueryOf target: String) -> String {
        "/v1/me/playlists" + (target.firstIndex(of: "?").map { String(target[$0...]) } ?? "")
    }

    /// The user id (percent-decoded) of a `/v1/users/{id}/playlists` target, else nil.
    static func playlistOwner(target: String) -> String? {
        guard target.hasUTF8Prefix("/v1/users/") else { return nil }
        let path = target.pathWithoutQuery.dropFirst("/v1/users/".count)
        var segments = path.split(separator: "/", omittingEmptySubsequences: false)
        if segments.count > 1, segments.last == "" { segments.removeLast() }
        guard segments.count == 2, !segments[0].isEmpty, segments[1] == "playlists" else { return nil }
        return segments[0].removingPercentEncoding
    }

    /// Whether `target` is a playlist's `/items` (`/v1/playlists/{id}/items`, a final `/` allowed).
    static func isPlaylistItems(_ target: String) -> Bool {
        guard target.hasUTF8Prefix("/v1/playlists/") else { return false }
        var segments = target.pathWithoutQuery.dropFirst("/v1/playlists/".count).split(separator: "/", omittingEmptySubsequences: false)
        if segments.count > 1, segments.last == "" { segments.removeLast() }
        return segments.count == 2 && !segments[0].isEmpty && segments[1] == "items"
    }

    /// Spotify lists a playlist's items to a development-mode app only for the current user's own
    /// playlists and those they collaborate on (official-openapi.yml's `/playlists/{id}/items`,
    /// since February 2026; cliamp#444): its refusal of a read, explained, for `user` (nil: the
    /// request had none to give).
    static func playlistItemsRestriction(user: String?, viaKey: Bool, setting: DevModeSetting) -> Removal {
        let rule = "Spotify lists a playlist's items to development-mode apps only for the current user's own playlists and those they collaborate on (February 2026)"
        let none =
            viaKey
            ? CommandHint.askOperator()
            : "name one with X-Spotify-User (or set [users] default) when several are logged in, else log one in (spotify-proxy login)"
        let why = user.map { "and this playlist is neither user \($0)'s own nor one they collaborate on" } ?? "and this request has no user to read them for: \(none)"
        return Removal(when: .playlistItems2026, status: 403, message: "\(rule), \(why); \(Self.modeNote(setting))")
    }

    /// A link to a playlist's `/items` page as the `/tracks` page it stands for.
    static func tracksLink(_ link: String) -> String {
        let queryStart = link.firstIndex(of: "?") ?? link.endIndex
        guard link[..<queryStart].hasSuffix("/items") else { return link }
        return link[..<queryStart].dropLast("/items".count) + "/tracks" + link[queryStart...]
    }

    /// `target`'s path below `/v1/` as segments (a last empty one dropped) when a table may hold
    /// it: it starts with one of `firstSegments`, or is below `artists/` and ends in
    /// `artistSuffix`; else nil. Compared as bytes first: every request passes here, and an
    /// artist (the hot path) is split only when it ends so.
    static func segments(of target: String, firstSegments: [String], artistSuffix: String) -> [Substring]? {
        guard Self.mayHold(target, firstSegments: firstSegments, artistSuffix: artistSuffix) else { return nil }
        var segments = target.pathWithoutQuery.dropFirst(4).split(separator: "/", omittingEmptySubsequences: false)
        if segments.count > 1, segments.last == "" { segments.removeLast() }
        return segments
    }

    /// The test of ``segments(of:firstSegments:artistSuffix:)``, on the target's bytes.
    private static func mayHold(_ target: String, firstSegments: [String], artistSuffix: String) -> Bool {
        target.withUTF8Bytes { target in
            let path = target.pathWithoutQuery
            guard path.starts(withUTF8: "/v1/") else { return false }
            let rest = UnsafeBufferPointer(rebasing: path[4...])
            guard rest.starts(withUTF8: "artists/") else { return firstSegments.contains { rest.starts(withUTF8: $0) } }
            let end = rest.last == UInt8(ascii: "/") ? UnsafeBufferPointer(rebasing: rest.dropLast()) : rest
            return end.count > artistSuffix.utf8.count && end.ends(withUTF8: artistSuffix)
        }
    }
}

/// An endpoint Spotify removed, as a request met it: when, and what to tell the client that
/// Spotify refuses it (``DevMode/refusal(of:in:)``), or, once development mode is known, what
/// the proxy answers itself (``DevModeStage``).
public struct Removal: Sendable, Equatable {
    public enum When: Sendable, Equatable {
        /// For development-mode apps in February 2026 (``RemovedEndpoint/message(method:target:)``).
        case developmentMode2026
        /// For apps created from 2024-11-27 on (``RemovedEndpoint/removedIn2024(method:target:)``).
        case newApps2024
        /// Not removed: a playlist's items, which Spotify lists to a development-mode app only
        /// for the current user's own playlists (``RemovedEndpoint/playlistItemsRestriction(user:viaKey:setting:)``).
        /// Its refusal is explained, and sends the read again with the user's token, but teaches
        /// nothing: an app with extended quota may meet a 403 on one playlist too.
        case playlistItems2026

        /// Spotify's refusal sends the request to its replacement, if it has one.
        var resendsToReplacement: Bool { self != .newApps2024 }
    }

    public var when: When
    /// Spotify's status for it: what the proxy answers once it knows the app cannot have it.
    public var status: Int
    public var message: String
    /// Where it goes instead when Spotify refuses it as a development-mode app, if anywhere
    /// (the development-mode stage fills it in while the mode is not known).
    public var replacement: EndpointReplacement?
}

/// Where a request Spotify replaced for development-mode apps goes instead, to an endpoint
/// every app has, and how it is changed on the way (``RemovedEndpoint/replacement(method:target:)``).
public struct EndpointReplacement: Sendable, Equatable {
    public var target: String
    /// The answer made in the old endpoint's shape.
    public var transform: ResponseTransform?
    public var bodyEdit: RequestBodyEdit?
    /// The same request and answer there (a playlist's `/tracks` addition or reordering): it
    /// goes there before development mode is known too. Else only once it is known: before,
    /// it goes as sent (an extended-quota app has it as it was), and Spotify's refusal, which
    /// teaches the mode, sends it there (``ProxyConnection``).
    public var always = false
    /// A user's token instead of the app's (the logged-in user's own playlists by its id).
    public var credential: Credential?
    /// What Spotify's refusal of the replacement means, to explain it (a playlist's items read
    /// with a user's token, of a playlist that is not theirs): a ``Removal/When/playlistItems2026``
    /// refusal's message. (Not a ``Removal``: that holds a replacement.)
    public var refusal: String?
}

/// A request body changed on its way upstream, in place and to the same length, so that its
/// framing, its `Content-Length` and the copy kept for a 401 replay stay as they are.
public enum RequestBodyEdit: Sendable, Equatable {
    /// A removal from a playlist's `/tracks` (tekore 6's `playlist_remove`: `{"tracks":[…]}`)
    /// sent to `/items`, which names them `items`: the top-level key becomes `"items" `.
    case tracksKeyAsItems

    /// The body's first part, edited; nil when the edit finds nothing to change in it (then the
    /// body goes as it came, and Spotify says what is wrong with it).
    public func edited(first part: ByteBuffer) -> ByteBuffer? {
        switch self {
        case .tracksKeyAsItems:
            guard let offset = Self.topLevelKey(#""tracks""#, in: part.readableBytesView) else { return nil }
            var out = part
            out.setBytes(Array(#""items" "#.utf8), at: out.readerIndex + offset)
            return out
        }
    }

    /// Where `key` (quoted) stands as a key of the top-level JSON object in `bytes`, as an
    /// offset from their start; nil when they do not begin an object or hold no such key
    /// (strings and nested values are skipped as JSON writes them).
    static func topLevelKey<Bytes: Collection>(_ key: String, in bytes: Bytes) -> Int? where Bytes.Element == UInt8, Bytes.Index == Int {
        let key = Array(key.utf8)
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D }
        guard let open = bytes.firstIndex(where: { !isSpace($0) }), bytes[open] == UInt8(ascii: "{") else { return nil }
        var depth = 0
        var inString = false
        var escaped = false
        var index = open
        while index < bytes.endIndex {
            let byte = bytes[index]
            if inString {
                if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
            } else if byte == UInt8(ascii: "\"") {
                // A key of the top-level object is a string there followed by `:`.
                if depth == 1, bytes[index...].starts(with: key),
                    let after = bytes[(index + key.count)...].firstIndex(where: { !isSpace($0) }), bytes[after] == UInt8(ascii: ":")
                {
                    return index - bytes.startIndex
                }
                inString = true
            } else if byte == UInt8(ascii: "{") || byte == UInt8(ascii: "[") {
                depth += 1
            } else if byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]") {
                depth -= 1
                if depth == 0 { return nil }
            }
            index += 1
        }
        return nil
    }
}
