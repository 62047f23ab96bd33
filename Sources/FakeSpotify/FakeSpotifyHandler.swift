import Foundation
import NIOCore
import NIOHTTP1

/// Routes of the fake Spotify. The Web API routes answer from the ``FakeCatalog`` (bodies with
/// Spotify's own `https://api.spotify.com` links, as the real service sends them); the
/// `/v1/test/...` routes exist for the proxy's tests (echo, status, streaming, delays). The
/// accounts service (`/authorize`, `/api/token`) is in `FakeAccounts.swift`.
final class FakeSpotifyHandler: ChannelInboundHandler {
    typealias InboundIn = NIOHTTPServerRequestFull
    typealias OutboundOut = HTTPServerResponsePart

    let fake: FakeSpotify
    private let catalog: FakeCatalog

    init(fake: FakeSpotify) {
        self.fake = fake
        self.catalog = fake.fixtures.catalog
    }

    func channelActive(context: ChannelHandlerContext) {
        self.fake.state.withLock { $0.counters.connectionsOpened += 1 }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        self.fake.state.withLock { $0.counters.connectionsClosed += 1 }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let request = self.unwrapInboundIn(data)
        let path = String(request.head.uri.prefix { $0 != "?" })
        if path == "/api/token" {
            self.token(request, context: context)
            return
        }
        if path == "/authorize" {
            self.authorize(request, context: context)
            return
        }
        self.fake.state.withLock { $0.counters.apiRequests += 1 }
        if let authorization = request.head.headers.first(name: "authorization"), !Self.isBearerScheme(authorization) {
            // Another scheme (Basic, a bare token): error-400-only-bearer.json.
            return self.error(400, "Only valid bearer authentication supported", request: request.head, context: context)
        }
        guard let bearer = self.bearer(request.head) else {
            self.fake.state.withLock { $0.counters.unauthorized += 1 }
            self.error(401, "Missing/invalid/expired access token", request: request.head, context: context, extra: [
                ("WWW-Authenticate", #"Bearer realm="spotify", error="invalid_token", error_description="Missing/invalid/expired access token""#)
            ])
            return
        }
        if path == "/v1/test/counters" {
            // What the fake has seen (for benchmarks, whose fake runs in another process): never
            // limited, failed or counted itself.
            let counters = self.fake.state.withLock { state -> FakeSpotify.Counters in
                state.counters.apiRequests -= 1
                return state.counters
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            return self.json(Array((try? encoder.encode(counters)) ?? Data()), request: request.head, context: context, cacheControl: "no-store")
        }
        if let retryAfter = self.fake.state.withLock({ Self.rollingLimitRetryAfter(&$0) }) {
            return self.rateLimited(retryAfter: retryAfter, reason: nil, request: request.head, context: context)
        }
        if let status = self.fake.state.withLock({ $0.outage }) {
            return self.error(status, "Service unavailable", request: request.head, context: context)
        }
        if let limit = self.fake.state.withLock({ $0.rateLimit }) {
            return self.rateLimited(retryAfter: limit.retryAfter, reason: limit.reason, request: request.head, context: context)
        }
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
        let isGET = request.head.method == .GET
        if segments.count >= 3, segments[0] == "v1", segments[1] == "test" {
            let argument = segments.count > 3 ? segments[3] : ""
            switch segments[2] {
            case "echo":
                self.echo(request, context: context)
            case "status":
                let status = Int(argument) ?? 500
                // A final status, as Spotify answers (NIO's encoder traps on a 1xx with a body).
                guard (200...599).contains(status) else {
                    return self.error(400, "fake: /v1/test/status/N takes N from 200 to 599", context: context)
                }
                var extra: [(String, String)] = []
                if status == 429 { extra.append(("Retry-After", "7")) }
                self.error(status, status == 429 ? "API rate limit exceeded" : "fake error \(status)", context: context, extra: extra)
            case "fault":
                guard let fault = Fault(rawValue: argument) else { return self.error(404, "no such fault", context: context) }
                self.inject(fault, context: context)
            case "bytes" where isGET:
                self.stream(total: Int(argument) ?? 0, context: context)
            case "slow" where isGET:
                let body = self.fake.fixtures.artist
                let head = request.head
                context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(argument) ?? 0)) {
                    self.json(body, request: head, context: context)
                }
            case "cache-control" where isGET:
                // `{"n":N}` (N counts these requests) with the percent-decoded argument as its
                // Cache-Control, and the query's `vary`, `set-cookie` and `age` as those headers:
                // for tests of what a shared cache may keep.
                let count = self.fake.state.withLock { state -> Int in
                    state.counters.cacheControlRequests += 1
                    return state.counters.cacheControlRequests
                }
                let query = Self.query(request.head.uri)
                let extra = [("Vary", "vary"), ("Set-Cookie", "set-cookie"), ("Age", "age")].compactMap { name, key in query[key].map { (name, $0) } }
                self.json(
                    Array(#"{"n":\#(count)}"#.utf8), request: request.head, context: context, cacheControl: argument.removingPercentEncoding ?? argument,
                    extra: extra)
            case "artists" where isGET:
                guard let page = Int(argument), page >= 0 else { return self.error(400, "invalid page", context: context) }
                self.json(Self.generatedArtists(page: page), request: request.head, context: context)
            default:
                self.error(404, "Service not found", context: context)
            }
        } else if case let latency = self.fake.state.withLock({ $0.latency }), latency > .zero {
            context.eventLoop.assumeIsolated().scheduleTask(in: latency) {
                self.webAPI(request, path: path, bearer: bearer, context: context)
            }
        } else {
            self.webAPI(request, path: path, bearer: bearer, context: context)
        }
    }

    /// Spotify's 429: `Retry-After` in seconds, and the `reason` its quota answers carry.
    private func rateLimited(retryAfter: Int, reason: String?, request: HTTPRequestHead, context: ChannelHandlerContext) {
        // The quota's 429 says "Too many requests" with its reason (error-429-quota-exceeded.json),
        // the ordinary one "API rate limit exceeded" (error-429-rate-limit.json); like every
        // Spotify error, it is `private, max-age=0`.
        let message = reason == nil ? "API rate limit exceeded" : "Too many requests"
        let reasonMember = reason.map { Array(#","reason":"#.utf8) + FakeCatalog.jsonString($0) } ?? []
        let body = Array(#"{"error":{"status":429,"message":"\#(message)""#.utf8) + reasonMember + Array("}}".utf8)
        let headers = HTTPHeaders([
            ("Content-Type", "application/json; charset=utf-8"), ("Cache-Control", "private, max-age=0"), ("Retry-After", String(retryAfter)),
            ("Content-Length", String(body.count)),
        ])
        self.send(status: .tooManyRequests, headers: headers, body: body, request: request, context: context)
    }

    /// With a rolling-window limit set: nil when this request fits the window (it is counted),
    /// else the whole seconds until the oldest request in the window leaves it.
    static func rollingLimitRetryAfter(_ state: inout FakeSpotify.State) -> Int? {
        guard let limit = state.rollingLimit else { return nil }
        let now = NIODeadline.now()
        state.recentRequests.removeAll { $0 + limit.window <= now }
        guard state.recentRequests.count >= limit.requests else {
            state.recentRequests.append(now)
            return nil
        }
        state.counters.windowLimited += 1
        let left = state.recentRequests[0] + limit.window - now
        return max(1, Int((left.nanoseconds + 999_999_999) / 1_000_000_000))
    }

    // MARK: Web API

    /// The Web API routes. A trailing slash is accepted (spotipy sends `/v1/artists/?ids=…` and
    /// `/v1/albums/{id}/tracks/`).
    enum Route: Equatable {
        /// `/v1/artists/{id}`, `/v1/albums/{id}`, `/v1/tracks/{id}`
        case entity(FakeCatalog.Kind, id: String)
        /// `/v1/artists?ids=…`, `/v1/albums?ids=…`, `/v1/tracks?ids=…`
        case several(FakeCatalog.Kind)
        /// `/v1/albums/{id}/tracks`
        case albumTracks(albumID: String)
        /// `/v1/artists/{id}/albums`
        case artistAlbums(artistID: String)
        /// `/v1/artists/{id}/top-tracks`
        case topTracks(artistID: String)
        /// `/v1/search`
        case search
        /// `/v1/me` and everything below it
        case me
        /// `/v1/playlists/{id}`: the one answer with an `ETag`, as on Spotify.
        case playlist(id: String)
        /// `/v1/playlists/{id}/tracks`: replaced by `/items` for development-mode apps.
        case playlistTracks(id: String)
        /// `/v1/playlists/{id}/items`
        case playlistItems(id: String)
        /// `/v1/playlists/{id}/followers`: following it (PUT) or not (DELETE).
        case playlistFollowers(id: String)
        /// `/v1/playlists/{id}/followers/contains`: whether users follow it.
        case playlistFollowersContains(id: String)
        /// `/v1/playlists/{id}/images`: its cover images.
        case playlistImages(id: String)
        /// Shows, episodes, audiobooks and chapters (`plural`), which the fake holds none of: an id
        /// (and what is below it) is Spotify's 404 for an id it does not know, a batch (`?ids=`)
        /// a `null` for each.
        case unheld(plural: String, batch: Bool)
        /// `/v1/markets`
        case markets
        /// `/v1/users/{id}`
        case user(id: String)
        /// `/v1/users/{id}/playlists`
        case userPlaylists(userID: String)
        /// `/v1/browse/new-releases`
        case newReleases
        /// `/v1/browse/categories`
        case categories
        /// Anything else below `/v1/browse/` (a category, its playlists, featured playlists):
        /// the fake has no categories.
        case browse
        /// Removed on 2024-11-27 for apps created since then and development-mode apps
        /// (facts sheet): recommendations, related artists, featured playlists and a category's
        /// playlists answer 404 "Not Found", audio features and analysis 403 with no message.
        /// The fake is such an app in both of its modes: it has none of their data. A category's
        /// playlists are below `/browse/categories…`, removed again in February 2026 (facts
        /// sheet): in development mode they answer as that removal does (`categories`).
        case removedIn2024(forbidden: Bool, categories: Bool = false)

        /// Removed for development-mode apps in February 2026 (facts sheet): Spotify answers
        /// them 403 "Forbidden", whatever the method.
        var removedInDevelopmentMode: Bool {
            switch self {
            case .several, .topTracks, .playlistTracks, .playlistFollowers, .playlistFollowersContains, .markets, .user, .userPlaylists, .newReleases,
                .categories, .browse:
                true
            case .unheld(_, let batch): batch
            case .removedIn2024(_, let categories): categories
            default: false
            }
        }

        static let unheldKinds: Set = ["shows", "episodes", "audiobooks", "chapters"]

        init?(path: String) {
            var parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            if parts.count > 2, parts.last == "" { parts.removeLast() }
            guard parts.count >= 3, parts[0] == "", parts[1] == "v1" else { return nil }
            let rest = Array(parts[2...])
            if rest[0] == "me" {
                self = .me
                return
            }
            if rest[0] == "recommendations" || (rest.count == 3 && rest[0] == "artists" && rest[2] == "related-artists")
                || (rest.count == 2 && rest[0] == "browse" && rest[1] == "featured-playlists")
            {
                self = .removedIn2024(forbidden: false)
                return
            }
            if rest.count == 4 && rest[0] == "browse" && rest[1] == "categories" && rest[3] == "playlists" {
                self = .removedIn2024(forbidden: false, categories: true)
                return
            }
            if rest[0] == "audio-features" || rest[0] == "audio-analysis" {
                self = .removedIn2024(forbidden: true)
                return
            }
            switch rest.count {
            case 1 where rest[0] == "search":
                self = .search
            case 1 where rest[0] == "markets":
                self = .markets
            case 2 where rest[0] == "users":
                self = .user(id: rest[1])
            case 3 where rest[0] == "users" && rest[2] == "playlists":
                self = .userPlaylists(userID: rest[1])
            case 2 where rest[0] == "browse" && rest[1] == "new-releases":
                self = .newReleases
            case 2 where rest[0] == "browse" && rest[1] == "categories":
                self = .categories
            case _ where rest[0] == "browse":
                self = .browse
            case 3 where rest[0] == "playlists" && rest[2] == "tracks":
                self = .playlistTracks(id: rest[1])
            case 3 where rest[0] == "playlists" && rest[2] == "items":
                self = .playlistItems(id: rest[1])
            case 3 where rest[0] == "playlists" && rest[2] == "followers":
                self = .playlistFollowers(id: rest[1])
            case 3 where rest[0] == "playlists" && rest[2] == "images":
                self = .playlistImages(id: rest[1])
            case 4 where rest[0] == "playlists" && rest[2] == "followers" && rest[3] == "contains":
                self = .playlistFollowersContains(id: rest[1])
            case _ where Self.unheldKinds.contains(rest[0]):
                self = .unheld(plural: rest[0], batch: rest.count == 1)
            case 1:
                guard let kind = FakeCatalog.Kind(plural: rest[0]) else { return nil }
                self = .several(kind)
            case 2 where rest[0] == "playlists":
                self = .playlist(id: rest[1])
            case 2:
                guard let kind = FakeCatalog.Kind(plural: rest[0]) else { return nil }
                self = .entity(kind, id: rest[1])
            case 3 where rest[0] == "albums" && rest[2] == "tracks":
                self = .albumTracks(albumID: rest[1])
            case 3 where rest[0] == "artists" && rest[2] == "albums":
                self = .artistAlbums(artistID: rest[1])
            case 3 where rest[0] == "artists" && rest[2] == "top-tracks":
                self = .topTracks(artistID: rest[1])
            default:
                return nil
            }
        }
    }

    /// Answers a Web API request (already authorized) from the catalog (GET and HEAD only), and
    /// `/v1/me…` for a user token. Catalog routes take both kinds of token.
    private func webAPI(_ request: NIOHTTPServerRequestFull, path: String, bearer: Bearer, context: ChannelHandlerContext) {
        let head = request.head
        guard let route = Route(path: path) else { return self.error(404, "Service not found", request: head, context: context) }
        if route == .me {
            // Spotify refuses an app token on every `/v1/me…` route, whatever the method: there is
            // no user behind it.
            guard case .user(let id) = bearer else {
                return self.error(401, "Only valid bearer authentication supported", request: head, context: context)
            }
            return self.me(request, path: path, user: id, context: context)
        }
        let developmentMode = self.fake.state.withLock { $0.developmentMode }
        if developmentMode, route.removedInDevelopmentMode {
            // Since February 2026 (facts sheet: the migration guide and the spec of 2026-02-08).
            return self.error(403, "Forbidden", request: head, context: context)
        }
        if developmentMode, case .playlistItems(let id) = route, head.method == .GET || head.method == .HEAD, FakeCatalog.isWellFormed(id) {
            // Since February 2026 such an app reads a playlist's items only for the current user's
            // own playlists and those they collaborate on (official-openapi.yml; cliamp#444): the
            // app's token has no user. (The fake keeps no collaborators: a collaborative playlist
            // is read by any user.)
            let created = self.fake.state.withLock { $0.createdPlaylists[id] }
            guard case .user(let user) = bearer, let created, created.owner == user || created.fields.collaborative else {
                return self.error(403, "Forbidden", request: head, context: context)
            }
        }
        if case .removedIn2024(let forbidden, _) = route {
            // lidify#24 and spotify-web-api-php#280 (404), spotify-web-api-php#281 (403, error-403-no-message.json).
            return forbidden ? self.error(403, nil, request: head, context: context) : self.error(404, "Not Found", request: head, context: context)
        }
        guard head.method == .GET || head.method == .HEAD else {
            return self.write(route, request, bearer: bearer, context: context)
        }
        var query = Self.query(head.uri)
        if developmentMode {
            switch route {
            case .search, .artistAlbums:
                // Search and an artist's albums: at most 10 a page, 5 by default.
                if let limit = query["limit"].flatMap({ Int($0) }), limit > 10 {
                    return self.error(400, "Invalid limit", request: head, context: context)
                }
                if query["limit", default: ""].isEmpty { query["limit"] = "5" }
            default:
                break
            }
        }
        let answer: FakeCatalog.Answer
        switch route {
        case .entity(let kind, let id):
            answer = self.catalog.entity(kind, id: id)
        case .several(let kind):
            answer = self.catalog.several(kind, ids: query["ids"])
        case .albumTracks(let albumID):
            answer = self.catalog.albumTracks(albumID: albumID, query: query)
        case .artistAlbums(let artistID):
            answer = self.catalog.artistAlbums(artistID: artistID, query: query)
        case .topTracks(let artistID):
            answer = self.catalog.artistTopTracks(artistID: artistID)
        case .search:
            answer = self.catalog.search(query: query)
        case .playlist(let id):
            return self.playlist(id, request: head, context: context)
        case .playlistTracks(let id), .playlistItems(let id):
            // What its item edits left in it. `limit` goes to 100 on /tracks (openapi.yml; tekore
            // asks for 100), to 50 on /items (its QueryLimit; spotipy asks for 50).
            let entries = self.fake.state.withLock { $0.playlistEntries[id]?.entries ?? [] }
            answer =
                FakeCatalog.isWellFormed(id)
                ? self.entryPage(id, entries, items: route == .playlistItems(id: id), query: query).flatMap { Self.filtered($0, fields: query["fields"]) }
                : .failure(Self.invalidPlaylistID)
        case .playlistImages(let id):
            // The cover uploaded, else an empty list (on Spotify a mosaic appears once it has tracks).
            let image = self.fake.state.withLock { $0.playlistImages[id] }
            let images = image.map { Array(#"[{"height":null,"url":"#.utf8) + FakeCatalog.jsonString($0) + Array(#","width":null}]"#.utf8) }
            answer = FakeCatalog.isWellFormed(id) ? .success(images ?? Array("[]".utf8)) : .failure(Self.invalidPlaylistID)
        case .playlistFollowers:
            answer = .failure(.notFound)
        case .playlistFollowersContains(let id):
            // Whether each user named follows it (at most one, the deprecated `ids`), or the
            // token's user: as its library keeps the follow (``UserLibrary``).
            let named = (query["ids"] ?? "").split(separator: ",").map(String.init)
            let users = if case .user(let user) = bearer, named.isEmpty { [user] } else { named }
            if users.isEmpty {
                answer = .failure(.missingIDs)
            } else {
                let follows = self.fake.state.withLock { state in users.map { state.libraries[$0]?.contains("spotify:playlist:\(id)") ?? false } }
                answer = .success(Array("[\(follows.map(String.init).joined(separator: ","))]".utf8))
            }
        case .unheld(let plural, let batch):
            // A show or episode asked without a market is also this 404 on Spotify (facts sheet: "considered unavailable").
            if batch {
                let ids = query["ids"].map { $0.split(separator: ",", omittingEmptySubsequences: false) } ?? []
                answer = ids.isEmpty ? .failure(.missingIDs) : .success(FakeCatalog.object(key: plural, items: ids.map { _ in FakeCatalog.null }))
            } else {
                answer = .failure(FakeCatalog.Failure(404, "non existing id"))
            }
        case .markets:
            answer = .success(FakeCatalog.object(key: "markets", items: FakeCatalog.markets.map(FakeCatalog.jsonString)))
        case .user(let id):
            answer = .success(FakeAccounts.publicUser(id))
        case .userPlaylists(let userID):
            // The public ones it created here, newest first; Spotify's user has its own too.
            answer = FakeCatalog.listing(
                self.createdPlaylists(of: userID, publicOnly: true).map(\.object), query, path: "users/\(FakeCatalog.percentEncoded(userID))/playlists")
        case .newReleases:
            answer = self.catalog.newReleases(query: query)
        case .categories:
            answer = FakeCatalog.emptyPage(query, path: "browse/categories").map { FakeCatalog.wrapped(key: "categories", $0) }
        case .browse:
            answer = .failure(.notFound)
        case .me, .removedIn2024:
            return
        }
        switch answer {
        case .success(let body):
            // What changes with a user's writes (a playlist's items, a user's playlists) may not be
            // reused without asking again, as a playlist itself (``playlist(_:request:context:)``).
            let changes: Bool
            switch route {
            case .playlistTracks, .playlistItems, .playlistImages, .userPlaylists: changes = true
            default: changes = false
            }
            if case .playlistFollowersContains = route {
                // About users: no shared cache may keep it.
                self.json(body, request: head, context: context, cacheControl: "private, max-age=0")
            } else if changes {
                self.json(body, request: head, context: context, cacheControl: "public, max-age=0")
            } else {
                self.json(body, request: head, context: context)
            }
        case .failure(let failure):
            self.error(failure.status, failure.message, request: head, context: context)
        }
    }

    // MARK: Users

    /// The library writes by type that `/v1/me/library` replaced for development-mode apps.
    static let libraryByType = Set(UserLibrary.kinds.keys).union(["following"])

    /// A library write by type (or, below `/contains`, its check), which a development-mode app
    /// no longer has: `deprecated: true` in the spec, which the facts sheet says "matches what
    /// the changelog marks [REMOVED] for Development-Mode apps".
    private func replacedByLibrary(_ rest: Substring) -> Bool {
        Self.libraryByType.contains(String(rest)) && self.fake.state.withLock { $0.developmentMode }
    }

    /// Why `PUT`/`DELETE /v1/me/library` refuses `uris` (official-openapi.yml: missing, not a
    /// Spotify URI of a kind it saves, more than 40), else nil. The messages are the fake's own:
    /// none of Spotify's is recorded.
    static func libraryRefusal(_ uris: String?) -> String? {
        guard let uris, !uris.isEmpty else { return "Missing required field: uris" }
        let list = uris.split(separator: ",", omittingEmptySubsequences: false)
        guard list.count <= 40 else { return "Too many uris requested: at most 40" }
        let kinds: Set<Substring> = ["track", "album", "episode", "show", "audiobook", "artist", "user", "playlist"]
        for uri in list {
            let parts = uri.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 3, parts[0] == "spotify", kinds.contains(parts[1]), !parts[2].isEmpty else { return "Invalid uri: \(uri)" }
        }
        return nil
    }

    /// `/v1/me` for a user token: the private user object; below it, a GET answers as
    /// ``meAnswer(_:query:user:listed:library:)`` (nothing playing; what the user saved or follows),
    /// `POST /v1/me/playlists` creates a playlist (201, as for ``write(_:_:bearer:context:)``'s
    /// `POST /v1/users/{id}/playlists`), a library write saves or removes (``UserLibrary``), and
    /// any other write succeeds with an empty 200. Answers about a user are
    /// `private`: no shared cache may keep them.
    private func me(_ request: NIOHTTPServerRequestFull, path: String, user: String, context: ChannelHandlerContext) {
        let head = request.head
        var rest: Substring = path.dropFirst("/v1/me".count)
        while rest.first == "/" { rest = rest.dropFirst() }
        while rest.last == "/" { rest = rest.dropLast() }
        let privately = "private, max-age=0"
        switch head.method {
        case .GET, .HEAD:
            if rest.hasSuffix("/contains"), self.replacedByLibrary(rest.dropLast("/contains".count)) {
                // Replaced by /v1/me/library/contains for development-mode apps.
                return self.error(403, "Forbidden", request: head, context: context)
            }
            let query = Self.query(head.uri)
            guard self.grants(head, anyOfEach: Self.readScopes(String(rest), query: query)) else {
                return self.error(403, Self.insufficientScope, request: head, context: context)
            }
            let library = self.fake.state.withLock { $0.libraries[user] ?? UserLibrary() }
            let listed = rest == "playlists" ? self.createdPlaylists(of: user, publicOnly: false) : self.savedItems(String(rest), query: query, in: library)
            // A development-mode app's user object has none of them (facts sheet: the February 2026 changes).
            let full = !self.fake.state.withLock { $0.developmentMode }
            let fields = (
                account: full && self.grants(head, anyOfEach: [["user-read-private"]]), email: full && self.grants(head, anyOfEach: [["user-read-email"]]),
                followers: full
            )
            switch Self.meAnswer(String(rest), query: query, user: user, fields: fields, listed: listed, library: library) {
            case .success(let body?):
                self.json(body, request: head, context: context, cacheControl: privately)
            case .success(nil):
                let headers = HTTPHeaders([("Cache-Control", privately)])
                self.send(status: .noContent, headers: headers, body: [], request: head, context: context)
            case .failure(let failure):
                self.error(failure.status, failure.message, request: head, context: context)
            }
        case .POST where rest == "playlists":
            self.createPlaylist(request, owner: user, context: context)
        case .PUT where rest.hasPrefix("player"), .POST where rest.hasPrefix("player"):
            // Playback control needs its scope; with no device of the user's active (the fake
            // has none), Spotify's 404 and its player reason (tekore maps it).
            guard self.grants(head, anyOfEach: [["user-modify-playback-state"]]) else {
                return self.error(403, Self.insufficientScope, request: head, context: context)
            }
            self.error(404, "Player command failed: No active device found", reason: "NO_ACTIVE_DEVICE", request: head, context: context)
        case .PUT where self.replacedByLibrary(rest), .DELETE where self.replacedByLibrary(rest):
            // Replaced by /v1/me/library for development-mode apps in February 2026 (facts sheet: the migration guide).
            self.error(403, "Forbidden", request: head, context: context)
        case .PUT where rest == "library", .DELETE where rest == "library":
            let uris = Self.query(head.uri)["uris"]
            if let refusal = Self.libraryRefusal(uris) { return self.error(400, refusal, request: head, context: context) }
            // Each kind of URI needs its scope (official-openapi.yml names the three).
            let kinds = Set((uris ?? "").split(separator: ",").map { $0.split(separator: ":")[1] })
            guard self.grants(head, anyOfEach: kinds.map(Self.libraryScopes)) else { return self.error(403, Self.insufficientScope, request: head, context: context) }
            self.changeLibrary(of: user, head.method, (uris ?? "").split(separator: ",").map(String.init))
            let headers = HTTPHeaders([("Cache-Control", privately), ("Content-Length", "0")])
            self.send(status: .ok, headers: headers, body: [], request: head, context: context)
        case .PUT, .POST, .DELETE:
            guard !rest.isEmpty else { return self.error(404, "Service not found", request: head, context: context) }
            if Self.libraryByType.contains(String(rest)) {
                // A library write by type needs its scope (official-openapi.yml); its ids in the
                // query or in a JSON body's `ids`.
                guard self.grants(head, anyOfEach: [Self.libraryScopes(rest == "following" ? "artist" : "track")]) else {
                    return self.error(403, Self.insufficientScope, request: head, context: context)
                }
                let query = Self.query(head.uri)
                let ids = query["ids"].map { $0.split(separator: ",").map(String.init) } ?? (Self.jsonBody(request) as? [String: Any])?["ids"] as? [String] ?? []
                // `type` is required and names what is followed (official-openapi.yml: artist or user).
                if rest == "following", let refusal = Self.typeRefusal(query["type"], allowed: ["artist", "user"]) {
                    return self.error(400, refusal, request: head, context: context)
                }
                if let kind = rest == "following" ? query["type"] : UserLibrary.kinds[String(rest)] {
                    self.changeLibrary(of: user, head.method, UserLibrary.uris(ids: ids, kind: kind))
                }
            }
            let headers = HTTPHeaders([("Cache-Control", privately), ("Content-Length", "0")])
            self.send(status: .ok, headers: headers, body: [], request: head, context: context)
        default:
            self.error(404, "Service not found", request: head, context: context)
        }
    }

    /// A library write: a `PUT` saves `uris` for `user`, a `DELETE` removes them.
    private func changeLibrary(of user: String, _ method: HTTPMethod, _ uris: [String]) {
        let date = Date().formatted(.iso8601)
        self.fake.state.withLock { state in
            if method == .DELETE {
                state.libraries[user, default: UserLibrary()].remove(uris)
            } else {
                state.libraries[user, default: UserLibrary()].save(uris, date: date)
            }
        }
    }

    /// The items of a saved page below `/v1/me` (`rest`): saved tracks and albums as Spotify lists
    /// them (`added_at` and the object), followed artists (`following?type=artist`); the
    /// catalog's objects with their ids, none for an id it does not hold.
    private func savedItems(_ rest: String, query: [String: String], in library: UserLibrary) -> [Listed] {
        switch rest {
        case "tracks", "albums":
            let kind: FakeCatalog.Kind = rest == "tracks" ? .track : .album
            return library.saved(rest == "tracks" ? "track" : "album").compactMap { item in
                let object = kind == .track ? self.catalog.fullTrack(item.id) : try? self.catalog.entity(.album, id: item.id).get()
                guard let object else { return nil }
                let entry = Array(#"{"added_at":"#.utf8) + FakeCatalog.jsonString(item.addedAt) + Array(#","\#(rest == "tracks" ? "track" : "album")":"#.utf8) + object + [UInt8(ascii: "}")]
                return Listed(id: item.id, object: entry)
            }
        case "following" where query["type"] == "artist":
            return library.saved("artist").compactMap { item in
                (try? self.catalog.entity(.artist, id: item.id).get()).map { Listed(id: item.id, object: $0) }
            }
        default:
            return []
        }
    }

    /// An item of a page below `/v1/me`, with its id (a cursor page's `after` names the last one).
    struct Listed {
        var id: String
        var object: [UInt8]
    }

    /// Why a `type` parameter is refused (missing, or not one of `allowed`), else nil. The words
    /// are the fake's own: none of Spotify's is recorded.
    static func typeRefusal(_ type: String?, allowed: [String]) -> String? {
        guard let type, !type.isEmpty else { return "Missing required field: type" }
        guard allowed.contains(type) else { return "Invalid type: \(type); send \(allowed.joined(separator: " or "))" }
        return nil
    }

    /// A GET below `/v1/me` (`rest`, without its slashes) for a user with nothing playing,
    /// shaped as Spotify's spec has each: nil for 204 (no playback), whether each is in `library`
    /// for a `…/contains` check, cursor pages for recent plays and followed artists, an offset
    /// page for the rest (saved tracks, albums, playlists, top items, …); `listed` holds the
    /// listing's items (the user's own playlists, simplified; its saved tracks or albums; the
    /// artists it follows), none for the rest.
    static func meAnswer(
        _ rest: String, query: [String: String], user: String, fields: (account: Bool, email: Bool, followers: Bool) = (true, true, true), listed: [Listed] = [],
        library: UserLibrary = UserLibrary()
    ) -> Result<[UInt8]?, FakeCatalog.Failure> {
        let base = "\(FakeCatalog.apiBase)/me/\(rest)"
        switch rest {
        case "":
            return .success(FakeAccounts.privateUser(user, account: fields.account, email: fields.email, followers: fields.followers))
        case "player", "player/currently-playing":
            return .success(nil)
        case "player/devices":
            return .success(Array(#"{"devices":[]}"#.utf8))
        case "player/queue":
            return .success(Array(#"{"currently_playing":null,"queue":[]}"#.utf8))
        case _ where rest.hasSuffix("/contains"):
            // `ids` (`uris` for /me/library/contains), whether each is saved (followed).
            let name = rest == "library/contains" ? "uris" : "ids"
            guard let list = query[name], !list.isEmpty else { return .failure(FakeCatalog.Failure(400, "Missing required field: \(name)")) }
            let owner = String(rest.dropLast("/contains".count))
            if owner == "following", let refusal = Self.typeRefusal(query["type"], allowed: ["artist", "user"]) {
                return .failure(FakeCatalog.Failure(400, refusal))
            }
            let kind = owner == "following" ? query["type"] : UserLibrary.kinds[owner]
            let answers = list.split(separator: ",", omittingEmptySubsequences: false).map { item in
                library.contains(rest == "library/contains" ? String(item) : "spotify:\(kind ?? "-"):\(item)")
            }
            return .success(Array("[\(answers.map(String.init).joined(separator: ","))]".utf8))
        case "following":
            // Only followed artists are listed (official-openapi.yml: type is required, artist).
            if let refusal = Self.typeRefusal(query["type"], allowed: ["artist"]) { return .failure(FakeCatalog.Failure(400, refusal)) }
        default:
            break
        }
        return FakeCatalog.paging(query).map { paging in
            switch rest {
            case "player/recently-played":
                // Exhausted: no cursors (tekore's PlayHistoryPaging allows null).
                let link = FakeCatalog.jsonString("\(base)?limit=\(paging.limit)")
                return Array(#"{"cursors":null,"href":"#.utf8) + link + Array(#","items":[],"limit":\#(paging.limit),"next":null}"#.utf8)
            case "following":
                // A cursor page: the artists after the one `after` names; `cursors.after` and
                // `next` name this page's last one while more follow it.
                let after = query["after"]
                let remaining = after.map { after in listed.drop { $0.id != after }.dropFirst() } ?? listed[...]
                let shown = remaining.prefix(paging.limit)
                let last = remaining.count > shown.count ? shown.last?.id : nil
                func link(after: String?) -> String { "\(base)?type=artist\(after.map { "&after=\($0)" } ?? "")&limit=\(paging.limit)" }
                var body = Array(#"{"artists":{"cursors":{"after":"#.utf8) + (last.map(FakeCatalog.jsonString) ?? Array("null".utf8))
                body += Array(#"},"href":"#.utf8) + FakeCatalog.jsonString(link(after: after)) + Array(#","items":["#.utf8)
                for (index, artist) in shown.enumerated() { body += (index > 0 ? [UInt8(ascii: ",")] : []) + artist.object }
                body += Array(#"],"limit":\#(paging.limit),"next":"#.utf8) + (last.map { FakeCatalog.jsonString(link(after: $0)) } ?? Array("null".utf8))
                return body + Array(#","total":\#(listed.count)}}"#.utf8)
            default:
                return FakeCatalog.page(listed.map(\.object), paging) { "\(base)?offset=\($0)&limit=\(paging.limit)" }
            }
        }
    }

    /// A playlist as Spotify answers one: `public, max-age=0` with an `ETag` that changes with
    /// its snapshot, and 304 (no body) to an `If-None-Match` naming the current one.
    private func playlist(_ id: String, request head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard FakeCatalog.isWellFormed(id) else {
            return self.error(Self.invalidPlaylistID.status, Self.invalidPlaylistID.message, request: head, context: context)
        }
        let (version, created, entries) = self.fake.state.withLock {
            ($0.playlistVersions[id, default: 0], $0.createdPlaylists[id], $0.playlistEntries[id]?.entries ?? [])
        }
        let snapshot = Self.snapshot(id, version: version)
        let etag = "\"MC-\(snapshot)\""
        if head.headers["if-none-match"].contains(where: { $0.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces) == etag } }) {
            self.fake.state.withLock { $0.counters.notModified += 1 }
            let headers = HTTPHeaders([("Cache-Control", "public, max-age=0"), ("ETag", etag)])
            return self.send(status: .notModified, headers: headers, body: [], request: head, context: context)
        }
        // Its first entries, as Spotify's playlist object holds them: as many as a page of each
        // path takes (its `next` link must be one the path answers).
        let pages = (
            items: (try? self.entryPage(id, entries, items: true, query: ["limit": "50"]).get()) ?? [],
            tracks: (try? self.entryPage(id, entries, items: false, query: ["limit": "100"]).get()) ?? []
        )
        let whole = Self.playlistBody(id, version: version, owner: created?.owner ?? "fake", fields: created?.fields ?? PlaylistFields(), pages: pages)
        let body: [UInt8]
        switch Self.filtered(whole, fields: Self.query(head.uri)["fields"]) {
        case .success(let value): body = value
        case .failure(let failure): return self.error(failure.status, failure.message, request: head, context: context)
        }
        var headers = HTTPHeaders([("Content-Type", "application/json; charset=utf-8"), ("Cache-Control", "public, max-age=0"), ("ETag", etag)])
        headers.add(name: "Content-Length", value: String(body.count))
        self.send(status: .ok, headers: headers, body: body, request: head, context: context)
    }

    /// A playlist answer with only the fields its `fields` filter selects (``FieldsFilter``);
    /// as it is without one. A filter that does not parse is a 400 (the fake's own words: none
    /// of Spotify's is recorded).
    static func filtered(_ body: [UInt8], fields: String?) -> Result<[UInt8], FakeCatalog.Failure> {
        guard let fields, !fields.isEmpty else { return .success(body) }
        guard let filter = FieldsFilter(fields) else { return .failure(FakeCatalog.Failure(400, "Invalid fields: \(fields)")) }
        guard let value = try? JSONSerialization.jsonObject(with: Data(body)),
            let data = try? JSONSerialization.data(withJSONObject: filter.apply(to: value), options: [.sortedKeys, .withoutEscapingSlashes])
        else { return .success(body) }
        return .success(Array(data))
    }

    /// What a playlist is made with: the fields of a create request's body.
    struct PlaylistFields: Sendable {
        var name: String?
        var description: String? = "A playlist of the fake's"
        var isPublic = true
        var collaborative = false
    }

    /// A playlist `POST …/playlists` made: what its `GET` answers, and where its owner's
    /// listings put it (the newest first).
    struct CreatedPlaylist: Sendable {
        var owner: String
        var fields: PlaylistFields
        var order: Int
    }

    /// `owner`'s playlists made here (only the public ones for another user's view), newest
    /// first, as a listing's simplified playlists.
    private func createdPlaylists(of owner: String, publicOnly: Bool) -> [Listed] {
        let (created, versions, entries) = self.fake.state.withLock { ($0.createdPlaylists, $0.playlistVersions, $0.playlistEntries) }
        return created.filter { $0.value.owner == owner && (!publicOnly || $0.value.fields.isPublic) }
            .sorted { $0.value.order > $1.value.order }
            .map {
                Listed(
                    id: $0.key,
                    object: Self.playlistBody(
                        $0.key, version: versions[$0.key, default: 0], owner: owner, fields: $0.value.fields, simplified: true,
                        total: entries[$0.key]?.entries.count ?? 0))
            }
    }

    /// A page of playlist `id`'s `entries` (``PlaylistEntries``), each one's track under `item`
    /// (`/items`) or `track` (`/tracks`).
    private func entryPage(_ id: String, _ entries: [PlaylistEntries.Entry], items: Bool, query: [String: String]) -> FakeCatalog.Answer {
        let key = items ? "item" : "track"
        return FakeCatalog.listing(
            entries.map { self.entryJSON($0, key: key) }, query, path: "playlists/\(id)/\(items ? "items" : "tracks")", maxLimit: items ? 50 : 100)
    }

    /// A playlist entry as its pages hold it: when and by whom it was added, and its track under
    /// `key`; one the catalog does not hold (an episode, a track from elsewhere) is null there,
    /// as Spotify has an entry it cannot give.
    private func entryJSON(_ entry: PlaylistEntries.Entry, key: String) -> [UInt8] {
        let parts = entry.uri.split(separator: ":")
        var item = FakeCatalog.null
        if parts.count == 3, parts[1] == "track", let track = self.catalog.fullTrack(String(parts[2])), track.first == UInt8(ascii: "{") {
            // A playlist's track says what it is (Spotify's playlist track object; tekore reads both).
            item = Array(#"{"episode":false,"track":true,"#.utf8) + track.dropFirst()
        }
        let user = FakeCatalog.percentEncoded(entry.addedBy)
        var body = Array(#"{"added_at":"#.utf8) + FakeCatalog.jsonString(entry.addedAt)
        body += Array(#","added_by":{"external_urls":{"spotify":"https://open.spotify.com/user/\#(user)"},"href":"\#(FakeCatalog.apiBase)/users/\#(user)","id":"#.utf8)
        body += FakeCatalog.jsonString(entry.addedBy) + Array(#","type":"user","uri":"#.utf8) + FakeCatalog.jsonString("spotify:user:" + entry.addedBy)
        body += Array(#"},"is_local":false,"primary_color":null,"#.utf8) + FakeCatalog.jsonString(key) + [UInt8(ascii: ":")] + item
        body += Array(#","video_thumbnail":{"url":null}}"#.utf8)
        return body
    }

    /// A playlist object of the fake's, owned by `owner`, named "Playlist" and the id's first
    /// six characters unless given a name (the same name however its items change).
    /// `simplified`: as listings have it, its `items` and `tracks` only a link and a `total`;
    /// else its first page of each, `pages` (empty when nil).
    static func playlistBody(
        _ id: String, version: Int, owner: String = "fake", fields: PlaylistFields = PlaylistFields(), simplified: Bool = false, total: Int = 0,
        pages: (items: [UInt8], tracks: [UInt8])? = nil
    ) -> [UInt8] {
        let base = FakeCatalog.apiBase
        let snapshot = Self.snapshot(id, version: version)
        let user = FakeCatalog.percentEncoded(owner)
        var body = Array(#"{"collaborative":\#(fields.collaborative),"description":"#.utf8) + (fields.description.map(FakeCatalog.jsonString) ?? Array("null".utf8))
        func items(_ path: String) -> String {
            if simplified { return #"{"href":"\#(base)/playlists/\#(id)/\#(path)","total":\#(total)}"# }
            // Empty unless given: as many as a page of the path takes.
            let page = (path == "items" ? pages?.items : pages?.tracks).flatMap { $0.isEmpty ? nil : $0 }
                ?? (try? FakeCatalog.listing([], ["limit": path == "items" ? "50" : "100"], path: "playlists/\(id)/\(path)", maxLimit: 100).get()) ?? []
            return String(decoding: page, as: UTF8.self)
        }
        let followers = simplified ? "" : #","followers":{"href":null,"total":0}"#
        body += Array(#","external_urls":{"spotify":"https://open.spotify.com/playlist/\#(id)"}\#(followers),"href":"\#(base)/playlists/\#(id)","id":"\#(id)","images":[],"items":\#(items("items")),"name":"#.utf8)
        body += FakeCatalog.jsonString(fields.name ?? "Playlist \(id.prefix(6))")
        body += Array(#","owner":{"display_name":"#.utf8)
        body += FakeCatalog.jsonString(owner)
        body += Array(#","external_urls":{"spotify":"https://open.spotify.com/user/\#(user)"},"href":"\#(base)/users/\#(user)","id":"#.utf8)
        body += FakeCatalog.jsonString(owner)
        body += Array(#","type":"user","uri":"#.utf8) + FakeCatalog.jsonString("spotify:user:" + owner)
        body += Array(#"},"primary_color":null,"public":\#(fields.isPublic),"snapshot_id":"\#(snapshot)","tracks":\#(items("tracks")),"type":"playlist","uri":"spotify:playlist:\#(id)"}"#.utf8)
        return body
    }

    /// Spotify's answer to a playlist id that is not 22 base-62 characters.
    static let invalidPlaylistID = FakeCatalog.Failure(400, "Invalid base62 id")

    /// A playlist's `snapshot_id` at `version` (``FakeSpotify/changePlaylist(_:)`` makes a new one).
    static func snapshot(_ id: String, version: Int) -> String {
        "AAAAA\(version)\(String(FNV1a.hash(Array(id.utf8)), radix: 16))"
    }

    /// A write outside `/v1/me` (an extended-mode app's; development mode refused the removed
    /// ones before): changing a playlist's items answers its new `snapshot_id` (201 for an
    /// addition), creating a playlist for a user 201 with it, as Spotify does; they need a
    /// user's token. Any other write: no such service.
    private func write(_ route: Route, _ request: NIOHTTPServerRequestFull, bearer: Bearer, context: ChannelHandlerContext) {
        let head = request.head
        let changesItems = [.POST, .PUT, .DELETE].contains(head.method)
        let needsUser = FakeCatalog.Failure(403, "This request requires user authentication.")
        let body: [UInt8]
        switch route {
        case .playlistTracks(let id) where changesItems, .playlistItems(let id) where changesItems:
            guard FakeCatalog.isWellFormed(id) else {
                return self.error(Self.invalidPlaylistID.status, Self.invalidPlaylistID.message, request: head, context: context)
            }
            guard case .user(let user) = bearer else { return self.error(needsUser.status, needsUser.message, request: head, context: context) }
            guard self.mayChangePlaylists(head) else { return self.error(403, Self.insufficientScope, request: head, context: context) }
            let json = Self.jsonBody(request)
            let sent = json as? [String: Any]
            let query = Self.query(head.uri)
            let uris = PlaylistEntries.uris(body: json, query: query)
            let date = Date().formatted(.iso8601)
            // The edit and the new version together: a reader sees both or neither.
            let edit: (inout PlaylistEntries) -> FakeCatalog.Failure?
            switch head.method {
            case .DELETE:
                // A removal names what to remove: `items` on /items, `tracks` on /tracks (facts
                // sheet: the February 2026 renames), in Spotify's words for a missing field.
                let key = route == .playlistItems(id: id) ? "items" : "tracks"
                guard let removed = sent?[key] as? [Any] else { return self.error(400, "Missing required field: \(key)", request: head, context: context) }
                let gone = removed.compactMap { item -> (uri: String, positions: [Int]?)? in
                    guard let item = item as? [String: Any], let uri = item["uri"] as? String else { return nil }
                    return (uri, item["positions"] as? [Int])
                }
                edit = { $0.remove(gone) }
            case .POST:
                let position = sent?["position"] as? Int ?? query["position"].flatMap { Int($0) }
                guard let uris else { return self.error(400, "Missing required field: uris", request: head, context: context) }
                edit = { $0.add(uris, at: position, by: user, date: date) }
            default:
                // Replaced with `uris`, or a range moved (`range_start`, `insert_before`, `range_length`).
                if let uris {
                    edit = { $0.replace(with: uris, by: user, date: date) }
                } else if let start = sent?["range_start"] as? Int, let before = sent?["insert_before"] as? Int {
                    let length = sent?["range_length"] as? Int ?? 1
                    edit = { $0.reorder(start: start, insertBefore: before, length: length) }
                } else {
                    return self.error(400, "Missing required field: uris", request: head, context: context)
                }
            }
            let outcome: Result<Int, FakeCatalog.Failure> = self.fake.state.withLock { state in
                if let failure = edit(&state.playlistEntries[id, default: PlaylistEntries()]) { return .failure(failure) }
                state.playlistVersions[id, default: 0] += 1
                return .success(state.playlistVersions[id]!)
            }
            let version: Int
            switch outcome {
            case .success(let value): version = value
            case .failure(let failure): return self.error(failure.status, failure.message, request: head, context: context)
            }
            body = Array(#"{"snapshot_id":"#.utf8) + FakeCatalog.jsonString(Self.snapshot(id, version: version)) + [UInt8(ascii: "}")]
        case .playlistImages(let id) where head.method == .PUT:
            // A custom cover: Spotify's reference asks for `ugc-image-upload` and a playlist
            // scope, and a Base64-encoded JPEG of at most 256 KB; it answers 202, no body.
            guard FakeCatalog.isWellFormed(id) else {
                return self.error(Self.invalidPlaylistID.status, Self.invalidPlaylistID.message, request: head, context: context)
            }
            guard bearer != .app else { return self.error(needsUser.status, needsUser.message, request: head, context: context) }
            guard self.grants(head, anyOfEach: [["ugc-image-upload"], ["playlist-modify-public", "playlist-modify-private"]]) else {
                return self.error(403, Self.insufficientScope, request: head, context: context)
            }
            let sent = request.body.map { Data($0.readableBytesView) } ?? Data()
            guard sent.count <= 256 * 1024, let jpeg = Data(base64Encoded: sent, options: .ignoreUnknownCharacters), jpeg.starts(with: [0xFF, 0xD8]) else {
                // The fake's own words: none of Spotify's is recorded.
                return self.error(400, "The body must be a Base64-encoded JPEG image of at most 256 KB", request: head, context: context)
            }
            self.fake.state.withLock { state in
                state.playlistVersions[id, default: 0] += 1
                state.playlistImages[id] = "https://i.scdn.co/image/ab67706c0000d72c" + String(FNV1a.hash(Array("\(id)/\(state.playlistVersions[id]!)".utf8)), radix: 16)
            }
            let headers = HTTPHeaders([("Cache-Control", "private, max-age=0"), ("Content-Length", "0")])
            return self.send(status: .accepted, headers: headers, body: [], request: head, context: context)
        case .playlist(let id) where head.method == .PUT, .playlistFollowers(let id) where head.method == .PUT || head.method == .DELETE:
            // Changing a playlist's details, or following it: an empty 200, as Spotify answers.
            guard FakeCatalog.isWellFormed(id) else {
                return self.error(Self.invalidPlaylistID.status, Self.invalidPlaylistID.message, request: head, context: context)
            }
            guard bearer != .app else { return self.error(needsUser.status, needsUser.message, request: head, context: context) }
            guard self.mayChangePlaylists(head) else { return self.error(403, Self.insufficientScope, request: head, context: context) }
            if route == .playlistFollowers(id: id), case .user(let user) = bearer {
                // Kept as `/v1/me/library` keeps a playlist's follow: its URI in the user's library.
                self.changeLibrary(of: user, head.method, ["spotify:playlist:\(id)"])
            }
            if route == .playlist(id: id) {
                let sent = Self.jsonObject(request)
                // Spotify's words for a body that is not JSON (spotify/web-api#360).
                guard let sent else { return self.error(400, "Error parsing JSON.", request: head, context: context) }
                self.fake.state.withLock { state in
                    if var created = state.createdPlaylists[id] {
                        if let name = sent["name"] as? String { created.fields.name = name }
                        if let description = sent["description"] as? String { created.fields.description = description }
                        if let isPublic = sent["public"] as? Bool { created.fields.isPublic = isPublic }
                        if let collaborative = sent["collaborative"] as? Bool { created.fields.collaborative = collaborative }
                        state.createdPlaylists[id] = created
                    }
                    // A new version: its ETag changes, so a stored copy is not reused.
                    state.playlistVersions[id, default: 0] += 1
                }
            }
            let headers = HTTPHeaders([("Cache-Control", "private, max-age=0"), ("Content-Length", "0")])
            return self.send(status: .ok, headers: headers, body: [], request: head, context: context)
        case .userPlaylists(let owner) where head.method == .POST:
            guard case .user(let user) = bearer else { return self.error(needsUser.status, needsUser.message, request: head, context: context) }
            // spotipy's FAQ and API test suites quote it.
            guard user == owner else { return self.error(403, "You cannot create a playlist for another user.", request: head, context: context) }
            return self.createPlaylist(request, owner: owner, context: context)
        default:
            return self.error(404, "Service not found", request: head, context: context)
        }
        var headers = HTTPHeaders([("Content-Type", "application/json; charset=utf-8"), ("Cache-Control", "private, max-age=0")])
        headers.add(name: "Content-Length", value: String(body.count))
        self.send(status: head.method == .POST ? .created : .ok, headers: headers, body: body, request: head, context: context)
    }

    /// A new playlist for `owner` (201), made with the request's JSON body: its `name`, which
    /// Spotify requires, `description`, `public` and `collaborative`. A body without a name gets
    /// Spotify's words for a missing body field (``FakeCatalog/Failure/missingIDs``'s source;
    /// none was recorded for this endpoint).
    private func createPlaylist(_ request: NIOHTTPServerRequestFull, owner: String, context: ChannelHandlerContext) {
        guard self.mayChangePlaylists(request.head) else { return self.error(403, Self.insufficientScope, request: request.head, context: context) }
        let sent = Self.jsonObject(request)
        guard let sent, let name = sent["name"] as? String else {
            return self.error(400, "Missing required field: name", request: request.head, context: context)
        }
        let fields = PlaylistFields(
            name: name, description: sent["description"] as? String, isPublic: sent["public"] as? Bool ?? true,
            collaborative: sent["collaborative"] as? Bool ?? false)
        let id = String((0..<22).map { _ in FakeCatalog.base62Digits.randomElement()! })
        self.fake.state.withLock { $0.createdPlaylists[id] = CreatedPlaylist(owner: owner, fields: fields, order: $0.createdPlaylists.count) }
        let body = Self.playlistBody(id, version: 0, owner: owner, fields: fields)
        var headers = HTTPHeaders([("Content-Type", "application/json; charset=utf-8"), ("Cache-Control", "private, max-age=0")])
        headers.add(name: "Content-Length", value: String(body.count))
        self.send(status: .created, headers: headers, body: body, request: request.head, context: context)
    }

    /// Whose bearer token a request carries.
    enum Bearer: Equatable {
        /// A client-credentials token: catalog only.
        case app
        /// A token from a user's login (code exchange or refresh).
        case user(String)
    }

    /// `Authorization` names the Bearer scheme (in any case), with or without a token: a bare
    /// "Bearer" is a missing token (401), another scheme a 400.
    static func isBearerScheme(_ authorization: String) -> Bool {
        let scheme = authorization.utf8.prefix(7)
        return scheme.count >= 6 && zip(scheme, "bearer ".utf8).allSatisfy { $0 | 0x20 == $1 }
    }

    /// Spotify's refusal of a token without the scope an endpoint needs (error-403-insufficient-client-scope.json).
    static let insufficientScope = "Insufficient client scope"

    /// The request body as JSON (an object, a list, …), or nil when it is none.
    static func jsonBody(_ request: NIOHTTPServerRequestFull) -> Any? {
        request.body.flatMap { try? JSONSerialization.jsonObject(with: Data($0.readableBytesView)) }
    }

    /// The request body as a JSON object, or nil when it is none.
    static func jsonObject(_ request: NIOHTTPServerRequestFull) -> [String: Any]? {
        Self.jsonBody(request) as? [String: Any]
    }

    /// The scopes a GET below `/v1/me` (`rest`) needs, one of each set (official-openapi.yml's
    /// `security` of each operation): the library's and the follows' reads, top items, the
    /// player's state; `/v1/me/library/contains` each URI kind's. `/v1/me` and `/v1/me/playlists`
    /// need none: Spotify answers them without (the email and the private playlists need one).
    static func readScopes(_ rest: String, query: [String: String]) -> [Set<String>] {
        switch rest {
        case "library/contains":
            let kinds = Set((query["uris"] ?? "").split(separator: ",").compactMap { $0.split(separator: ":").dropFirst().first })
            return kinds.map { kind in
                switch kind {
                case "artist", "user": ["user-follow-read"]
                case "playlist": ["playlist-read-private"]
                default: ["user-library-read"]
                }
            }
        case "following", "following/contains": return [["user-follow-read"]]
        case "player", "player/devices": return [["user-read-playback-state"]]
        case "player/currently-playing": return [["user-read-currently-playing"]]
        case "player/queue": return [["user-read-currently-playing", "user-read-playback-state"]]
        case "player/recently-played": return [["user-read-recently-played"]]
        case _ where rest.hasPrefix("top/"): return [["user-top-read"]]
        case _ where UserLibrary.kinds[String(rest.prefix { $0 != "/" })] != nil: return [["user-library-read"]]
        default: return []
        }
    }

    /// The scopes of which a library write of a URI of `kind` needs one (official-openapi.yml).
    static func libraryScopes<Kind: StringProtocol>(_ kind: Kind) -> Set<String> {
        switch kind {
        case "artist", "user": ["user-follow-modify"]
        case "playlist": ["playlist-modify-public", "playlist-modify-private"]
        default: ["user-library-modify"]
        }
    }

    /// Whether the request's token was granted one scope of each of `needed`.
    private func grants(_ head: HTTPRequestHead, anyOfEach needed: [Set<String>]) -> Bool {
        let scopes = Set(self.issuedToken(head)?.scopes ?? [])
        return needed.allSatisfy { !$0.isDisjoint(with: scopes) }
    }

    /// Whether the request's user token may create playlists or change their items: it was
    /// granted `playlist-modify-public` or `playlist-modify-private` (Spotify's reference names
    /// both for these endpoints; the fake does not tell a public playlist from a private one).
    private func mayChangePlaylists(_ head: HTTPRequestHead) -> Bool {
        let scopes = self.issuedToken(head)?.scopes ?? []
        return scopes.contains("playlist-modify-public") || scopes.contains("playlist-modify-private")
    }

    /// The access token the request's bearer names, as the fake issued it (expired or not).
    private func issuedToken(_ head: HTTPRequestHead) -> FakeSpotify.AccessToken? {
        guard let header = head.headers.first(name: "authorization"), Self.isBearerScheme(header) else { return nil }
        let token = String(header.dropFirst("Bearer ".count))
        return self.fake.state.withLock { state in state.tokens[token] }
    }

    /// The request's bearer, or nil for a missing, unknown, expired or revoked token.
    private func bearer(_ head: HTTPRequestHead) -> Bearer? {
        guard let issued = self.issuedToken(head), issued.expiry > .now() else { return nil }
        if let user = issued.user { return .user(user) }
        return .app
    }

    // MARK: Test routes

    private struct Echo: Encodable {
        var method: String
        var uri: String
        var headers: [[String]]
        var body_length: Int
        var body_fnv1a: String
    }

    private func echo(_ request: NIOHTTPServerRequestFull, context: ChannelHandlerContext) {
        let body = request.body.map { Array($0.readableBytesView) } ?? []
        let echo = Echo(
            method: request.head.method.rawValue, uri: request.head.uri,
            headers: request.head.headers.map { [$0.name, $0.value] },
            body_length: body.count, body_fnv1a: String(FNV1a.hash(body), radix: 16))
        let data = (try? JSONEncoder().encode(echo)) ?? Data()
        var headers = HTTPHeaders([("Content-Type", "application/json; charset=utf-8"), ("X-Fake-Echo", "yes")])
        headers.add(name: "Content-Length", value: String(data.count))
        self.send(status: .ok, headers: headers, body: Array(data), context: context)
    }

    /// `total` bytes of octet-stream, written one chunk at a time as the client takes them.
    private func stream(total: Int, context: ChannelHandlerContext) {
        let headers = HTTPHeaders([("Content-Type", "application/octet-stream"), ("Content-Length", String(total)), ("Date", Self.date())])
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: headers))), promise: nil)
        let chunk = ByteBuffer(repeating: UInt8(ascii: "x"), count: 64 * 1024)
        func next(_ remaining: Int) {
            guard remaining > 0 else {
                context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
                return
            }
            let slice = chunk.getSlice(at: 0, length: min(remaining, chunk.readableBytes))!
            context.writeAndFlush(self.wrapOutboundOut(.body(.byteBuffer(slice)))).assumeIsolated().whenSuccess {
                next(remaining - slice.readableBytes)
            }
        }
        next(total)
    }

    /// A 200 JSON answer; to a HEAD request, the same head (its `Content-Length` too) and no body.
    /// `{"artists":[…]}` with 50 generated artists, `page` × 50 onwards: as many distinct
    /// entities as a durability test needs (the recordings hold 143 artists). Ids are 22
    /// base-62 characters, `0GENERATEDARTIST` and six digits.
    static func generatedArtists(page: Int) -> [UInt8] {
        var body = #"{"artists":["#
        for number in (page * 50)..<(page * 50 + 50) {
            let id = "0GENERATEDARTIST" + String(repeating: "0", count: max(0, 6 - String(number).count)) + String(number)
            if number > page * 50 { body += "," }
            body += #"{"external_urls":{"spotify":"https://open.spotify.com/artist/\#(id)"},"followers":{"href":null,"total":\#(number)},"#
            body += #""genres":[],"href":"https://api.spotify.com/v1/artists/\#(id)","id":"\#(id)","images":[],"#
            body += #""name":"Generated Artist \#(number)","popularity":0,"type":"artist","uri":"spotify:artist:\#(id)"}"#
        }
        body += "]}"
        return Array(body.utf8)
    }

    private func json(
        _ body: [UInt8], request: HTTPRequestHead, context: ChannelHandlerContext, cacheControl: String = "public, max-age=7200",
        extra: [(String, String)] = []
    ) {
        var headers = HTTPHeaders([
            ("Content-Type", "application/json; charset=utf-8"), ("Cache-Control", cacheControl),
        ] + extra)
        var payload = body
        // Spotify compresses when asked; so does the fake.
        if request.headers["accept-encoding"].contains(where: { $0.lowercased().contains("gzip") }) {
            payload = Gzip.encode(body)
            headers.add(name: "Content-Encoding", value: "gzip")
        }
        headers.add(name: "Content-Length", value: String(payload.count))
        self.send(status: .ok, headers: headers, body: payload, request: request, context: context)
    }

    /// A Spotify-shaped error, `{"error":{"status":…,"message":…}}`.
    /// Spotify's error object; some of its errors carry no message (error-403-no-message.json).
    private func error(
        _ status: Int, _ message: String?, reason: String? = nil, request: HTTPRequestHead? = nil, context: ChannelHandlerContext,
        extra: [(String, String)] = []
    ) {
        var body = Array(#"{"error":{"status":\#(status)"#.utf8) + (message.map { Array(#","message":"#.utf8) + FakeCatalog.jsonString($0) } ?? [])
        body += (reason.map { Array(#","reason":"#.utf8) + FakeCatalog.jsonString($0) } ?? []) + Array("}}".utf8)
        var headers = HTTPHeaders([("Content-Type", "application/json; charset=utf-8"), ("Cache-Control", "private, max-age=0")])
        for (name, value) in extra { headers.add(name: name, value: value) }
        headers.add(name: "Content-Length", value: String(body.count))
        self.send(status: HTTPResponseStatus(statusCode: status), headers: headers, body: body, request: request, context: context)
    }

    /// Now as a `Date` header's value (`Thu, 03 Dec 2026 19:54:43 GMT`).
    static func date() -> String {
        Date.now.formatted(
            Date.VerbatimFormatStyle(
                format: "\(weekday: .abbreviated), \(day: .twoDigits) \(month: .abbreviated) \(year: .defaultDigits) \(hour: .twoDigits(clock: .twentyFourHour, hourCycle: .zeroBased)):\(minute: .twoDigits):\(second: .twoDigits) GMT",
                locale: Locale(identifier: "en_US_POSIX"), timeZone: TimeZone(identifier: "GMT")!, calendar: Calendar(identifier: .gregorian)))
    }

    /// Writes a whole response; the body is left out when `request` was a HEAD.
    func send(
        status: HTTPResponseStatus, headers: HTTPHeaders, body: [UInt8], request: HTTPRequestHead? = nil, context: ChannelHandlerContext
    ) {
        var headers = headers
        // Spotify dates every answer (headers-observed.json).
        if !headers.contains(name: "date") { headers.add(name: "Date", value: Self.date()) }
        context.write(self.wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if request?.method != .HEAD {
            context.write(self.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
        }
        context.writeAndFlush(self.wrapOutboundOut(.end(nil)), promise: nil)
    }

    /// The request's query items (see ``FakeCatalog/queryItems(_:)``).
    static func query(_ uri: String) -> [String: String] {
        guard let mark = uri.firstIndex(of: "?") else { return [:] }
        return FakeCatalog.queryItems(uri[uri.index(after: mark)...])
    }
}

extension FakeSpotifyHandler {
    /// Misbehaviours for the proxy's fault tests, under `/v1/test/fault/…`.
    enum Fault: String {
        /// Part of a status line and headers, then a reset (RST).
        case resetInHeaders = "reset-in-headers"
        /// A full head promising 100,000 bytes, 10 of them, then a reset.
        case resetInBody = "reset-in-body"
        /// Reads the request and never answers.
        case stall
        /// A whole, keep-alive answer, then the connection closed (FIN) at once: what a server
        /// does when an idle kept-alive connection times out, here before any next request.
        case closeWhenIdle = "close-when-idle"
        /// A whole answer with a header whose name is not an HTTP token (a UTF-8 `é` in it).
        case invalidHeaderName = "invalid-header-name"
        /// A whole answer with a control byte (0x01) in a header's value.
        case controlInHeaderValue = "control-in-header-value"
        /// A 103 Early Hints head with a header whose name is not a token, then a good answer.
        case invalidInformational = "invalid-informational"
        /// A whole answer whose `Transfer-Encoding` names a coding no client decodes (`foo`).
        case undecodableTransferEncoding = "undecodable-transfer-encoding"
        /// A whole answer whose `Content-Encoding` names a coding no client decodes (`foo`).
        case undecodableContentEncoding = "undecodable-content-encoding"
        /// A 204 whose `Content-Encoding` names a coding no client decodes: there is no body
        /// to decode, so it is no harm.
        case undecodableNoContent = "undecodable-no-content"
        /// A whole answer with one header line of 200,000 bytes.
        case hugeHeaderLine = "huge-header-line"
        /// A 101 Switching Protocols to a request that asked for no upgrade; then nothing.
        case switchingProtocols = "switching-protocols"
    }

    func inject(_ fault: Fault, context: ChannelHandlerContext) {
        // Raw bytes must go below the response encoder, which only takes typed parts.
        guard let raw = try? context.pipeline.syncOperations.context(handlerType: HTTPResponseEncoder.self) else {
            context.close(promise: nil)
            return
        }
        let reset = {
            // Linger 0: close with RST instead of FIN.
            if let socket = context.channel as? any SocketOptionProvider {
                socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            } else {
                context.close(promise: nil)
            }
        }
        switch fault {
        case .resetInHeaders:
            raw.writeAndFlush(NIOAny(ByteBuffer(string: "HTTP/1.1 200 OK\r\nContent-Type: appl"))).assumeIsolated().whenComplete { _ in reset() }
        case .resetInBody:
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"partial\""
            raw.writeAndFlush(NIOAny(ByteBuffer(string: head))).assumeIsolated().whenComplete { _ in reset() }
        case .stall:
            break
        case .switchingProtocols:
            raw.writeAndFlush(NIOAny(ByteBuffer(string: "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")), promise: nil)
        case .closeWhenIdle:
            self.answerAndClose(Self.answer(withHeader: nil), raw: raw, context: context)
        case .invalidHeaderName:
            self.answerAndClose(Self.answer(withHeader: "X-Caf\u{E9}: 1"), raw: raw, context: context)
        case .controlInHeaderValue:
            self.answerAndClose(Self.answer(withHeader: "X-Note: a\u{01}b"), raw: raw, context: context)
        case .invalidInformational:
            self.answerAndClose("HTTP/1.1 103 Early Hints\r\nX-Caf\u{E9}: 1\r\n\r\n" + Self.answer(withHeader: nil), raw: raw, context: context)
        case .undecodableTransferEncoding:
            self.answerAndClose(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: foo, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", raw: raw, context: context)
        case .undecodableContentEncoding:
            self.answerAndClose(Self.answer(withHeader: "Content-Encoding: foo"), raw: raw, context: context)
        case .undecodableNoContent:
            self.answerAndClose("HTTP/1.1 204 No Content\r\nContent-Encoding: foo\r\n\r\n", raw: raw, context: context)
        case .hugeHeaderLine:
            self.answerAndClose(Self.answer(withHeader: "X-Huge: " + String(repeating: "a", count: 200_000)), raw: raw, context: context)
        }
    }

    /// Writes `answer` as raw bytes below the response encoder (`raw`), then closes (FIN).
    private func answerAndClose(_ answer: String, raw: ChannelHandlerContext, context: ChannelHandlerContext) {
        raw.writeAndFlush(NIOAny(ByteBuffer(string: answer))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }

    /// A whole `{}` answer, with `header` (a raw line) among its headers.
    private static func answer(withHeader header: String?) -> String {
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + (header.map { $0 + "\r\n" } ?? "") + "Content-Length: 2\r\n\r\n{}"
    }
}
