import FakeSpotify
import Foundation
import Logging
import NIOCore
import NIOPosix
import SpotifyCatalog
@testable import SpotifyProxy
import SpotifyProxyTestSupport
import Testing

/// Logged-in users against the fake Spotify's accounts service: `login` with PKCE, the token
/// choice, refresh-token rotation across expiries and restarts, `invalid_grant`.
@Suite("User tokens: login and refresh, end to end")
struct UserTokenTests {
    /// GET `url` (an absolute http:// URL on loopback) with a fresh connection.
    static func get(_ url: String) async throws -> RawHTTPClient.Response {
        let components = try #require(URLComponents(string: url))
        let client = try await RawHTTPClient.connect(port: try #require(components.port))
        defer { Task { await client.close() } }
        let target = components.percentEncodedPath + (components.percentEncodedQuery.map { "?" + $0 } ?? "")
        return try await client.request("GET", target)
    }

    /// Plays the browser: opens the authorize URL (as `fakeUser`, a knob of the fake), and
    /// follows the fake's redirect back to the login's callback, after `tamper`.
    static func browse(_ authorizeURL: String, as fakeUser: String, tamper: @Sendable (String) -> String = { $0 }) async throws
        -> RawHTTPClient.Response
    {
        let authorize = try await Self.get(authorizeURL + "&fake_user=\(fakeUser)")
        #expect(authorize.status == 302)
        let location = try #require(authorize.headers.first(name: "location"))
        return try await Self.get(tamper(location))
    }

    /// Runs `spotify-proxy login`'s flow against `fake` for `label`, the test playing the browser.
    /// `first` runs once the URL is shown, before the browser's return (given the authorize URL
    /// and the callback's).
    static func login(
        _ label: String, as fakeUser: String, fake: FakeSpotify, users directory: String, scopes: [String] = UserSettings.defaultScopes,
        tamper: @escaping @Sendable (String) -> String = { $0 }, first: (_ authorize: String, _ callback: String) async throws -> Void = { _, _ in }
    ) async throws -> StoredUser {
        let callback = "http://127.0.0.1:\(try LoopbackPort.free())/callback"
        let flow = LoginFlow(
            settings: .init(
                label: label, scopes: scopes, redirectURI: try RedirectURI(callback),
                authorizeURL: fake.baseURL + "/authorize", tokenURL: fake.tokenURL, apiURL: fake.baseURL, clientID: fake.clientID,
                clientSecret: nil, store: UserStore(directory: directory)))
        let (urls, shown) = AsyncStream.makeStream(of: String.self)
        async let user = UpstreamClient.withRunning(configuration: UpstreamConfiguration()) { client in
            try await flow.run(client: client, group: MultiThreadedEventLoopGroup.singleton, show: { line in
                if line.hasPrefix("http") { shown.yield(line) }
            })
        }
        var iterator = urls.makeAsyncIterator()
        let url = try #require(await iterator.next())
        #expect(url.hasPrefix(fake.baseURL + "/authorize?client_id=\(fake.clientID)&response_type=code"))
        #expect(url.contains("code_challenge_method=S256"))
        try await first(url, callback)
        // The browser's page waits for the login's outcome, and says it.
        let page = try await Self.browse(url, as: fakeUser, tamper: tamper)
        do {
            let stored = try await user
            #expect(page.status == 200 && page.text.contains("spotify-proxy: logged in."), "\(page.text)")
            return stored
        } catch let error as LoginFlow.LoginError {
            #expect(page.status == 400 && page.text.contains("spotify-proxy: the login failed: "), "\(page.text)")
            #expect(page.text.contains(error.message.prefix(40)), "\(page.text)")
            throw error
        }
    }

    static func usersDirectory() throws -> String {
        try temporaryDirectory().appendingPathComponent("users").path
    }

    /// `body` with a client of a proxy on which alice is logged in with the default scopes but `scope`.
    static func withAlice(lacking scope: String, _ body: (RawHTTPClient) async throws -> Void) async throws {
        let directory = try Self.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }) { proxy in
            _ = try await Self.login("alice", as: "alice-id", fake: proxy.fake, users: directory, scopes: UserSettings.defaultScopes.filter { $0 != scope })
            let client = try await proxy.client()
            try await body(client)
            await client.close()
        }
    }

    @Test("login end to end: the refresh token is stored (0700/0600), and /v1/me through the proxy is the user's")
    func loginEndToEnd() async throws {
        let directory = try Self.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }) { proxy in
            let user = try await Self.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            #expect(user.spotifyUserID == "alice-id")
            #expect(user.scopes == UserSettings.defaultScopes)
            let directoryMode = try FileManager.default.attributesOfItem(atPath: directory)[.posixPermissions] as? Int
            let fileMode = try FileManager.default.attributesOfItem(atPath: directory + "/alice.json")[.posixPermissions] as? Int
            #expect(directoryMode == 0o700)
            #expect(fileMode == 0o600)
            #expect(proxy.fake.counters.authorizationCodeGrants == 1)

            // Logged in while the proxy runs: the only user is the default.
            let client = try await proxy.client()
            let me = try await client.request("GET", "/v1/me")
            #expect(me.status == 200)
            #expect(me.text.contains(#""id":"alice-id""#))
            // The catalog still goes with the app token.
            #expect(try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg").status == 200)
            await client.close()
            // The user's refresh is logged as the app's, with the label in a field of its own.
            let refreshed = proxy.logs.all.filter { $0.contains("access token refreshed") && $0.contains("kind=user") }
            #expect(!refreshed.isEmpty && refreshed.allSatisfy { $0.contains("user=alice") }, "\(proxy.logs.all)")
        }
    }

    @Test("the user's library keeps what its writes leave, by type or as /v1/me/library (either mode): the checks, the saved pages and the followed artists say so", arguments: [false, true])
    func library(developmentMode: Bool) async throws {
        let directory = try Self.usersDirectory()
        let (brightside, somebody, hotFuss, pitbull) = ("3n3Ppam7vgaVa1iaRUc9Lp", "3twNvmDtFQtAd5gMKedhLD", "4OHNH3sDzIxnmUADXzv2kT", "0TnOYISbd1XYRBk9myaseg")
        try await withProxy(configure: { $0.users.directory = directory }, prepareFake: { $0.setDevelopmentMode(developmentMode) }) { proxy in
            _ = try await Self.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            func json(_ path: String) async throws -> JSONValue { try JSONValue.parse(Data(try await client.request("GET", path).body)) }
            #expect(try await client.request("PUT", "/v1/me/tracks?ids=\(brightside)%2C\(somebody)").status == 200)
            #expect(try await client.request("PUT", "/v1/me/library?uris=spotify%3Aalbum%3A\(hotFuss)").status == 200)
            #expect(try await client.request("PUT", "/v1/me/following?type=artist&ids=\(pitbull)").status == 200)
            #expect(try await client.request("DELETE", "/v1/me/tracks?ids=\(brightside)").status == 200)
            #expect(try await json("/v1/me/tracks/contains?ids=\(brightside),\(somebody)") == .array([.bool(false), .bool(true)]))
            #expect(try await json("/v1/me/library/contains?uris=spotify:album:\(hotFuss),spotify:track:\(brightside)") == .array([.bool(true), .bool(false)]))
            #expect(try await json("/v1/me/following/contains?type=artist&ids=\(pitbull)") == .array([.bool(true)]))
            let tracks = try await json("/v1/me/tracks")
            #expect(tracks["total"]?.int == 1 && tracks["items"]?.array?.first?["track"]?["name"]?.string == "Somebody Told Me", "\(tracks)")
            #expect(tracks["items"]?.array?.first?["added_at"]?.string?.hasSuffix("Z") == true)
            #expect(try await json("/v1/me/albums")["items"]?.array?.first?["album"]?["id"]?.string == hotFuss)
            #expect(try await json("/v1/me/following?type=artist")["artists"]?["items"]?.array?.first?["name"]?.string == "Pitbull")
            await client.close()
        }
    }

    @Test("the fake's user side answers as Spotify's: a read needs its scope, /v1/me's email needs user-read-email, playback commands are 404 NO_ACTIVE_DEVICE, a playlist's follow is in followers/contains, a cover upload is 202 and listed, shows and episodes are unknown ids")
    func fakeUserSide() async throws {
        try await Self.withAlice(lacking: "user-follow-read") { client in
            func json(_ path: String) async throws -> JSONValue { try JSONValue.parse(Data(try await client.request("GET", path).body)) }
            let following = try await client.request("GET", "/v1/me/following?type=artist")
            #expect(following.status == 403 && following.text.contains("Insufficient client scope"), "\(following.text)")
            // Explained: what the login lacks, and the command that logs it in again.
            let explained = try JSONValue.parse(Data(following.body))["error"]?["message"]?.string ?? ""
            #expect(explained.hasPrefix("Insufficient client scope: Spotify says user alice's login was not granted a scope this request needs"), "\(explained)")
            #expect(explained.contains("of the default scopes (every /v1/me endpoint's) it lacks user-follow-read:") && explained.contains("spotify-proxy login --user alice"), "\(explained)")
            #expect(try await client.request("GET", "/v1/me/tracks").status == 200, "user-library-read was granted")
            let me = try await json("/v1/me")
            #expect(me["email"] == nil && me["country"]?.string == "SE" && me["product"]?.string == "premium", "\(me)")
            let play = try await client.request("PUT", "/v1/me/player/play", body: Array(#"{"uris":["spotify:track:3n3Ppam7vgaVa1iaRUc9Lp"]}"#.utf8))
            #expect(play.status == 404 && play.text == #"{"error":{"status":404,"message":"Player command failed: No active device found","reason":"NO_ACTIVE_DEVICE"}}"#, "\(play.text)")
            let playlist = "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n"
            #expect(try await json("\(playlist)/followers/contains") == .array([.bool(false)]))
            #expect(try await client.request("PUT", "\(playlist)/followers").status == 200)
            #expect(try await json("\(playlist)/followers/contains") == .array([.bool(true)]), "the user's token: asked again, not from a cache")
            #expect(try await json("\(playlist)/followers/contains?ids=alice-id") == .array([.bool(true)]))
            let jpeg = Data([0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 0x4A, 0x46, 0x49, 0x46]).base64EncodedString()
            let upload = try await client.request("PUT", "\(playlist)/images", headers: [("Content-Type", "image/jpeg")], body: Array(jpeg.utf8))
            let notJPEG = try await client.request("PUT", "\(playlist)/images", headers: [("Content-Type", "image/jpeg")], body: Array("aGVsbG8=".utf8))
            #expect(upload.status == 202 && upload.body.isEmpty && notJPEG.status == 400, "\(upload.text) \(notJPEG.text)")
            #expect(try await json("\(playlist)/images").array?.first?["url"]?.string?.hasPrefix("https://i.scdn.co/image/") == true)
            let show = try await client.request("GET", "/v1/shows/38bS44xjbVVZ3No3ByF1dJ?market=SE")
            #expect(show.status == 404 && show.text.contains("non existing id"), "\(show.text)")
            #expect(try await json("/v1/episodes?ids=512ojhOuo1ktJprKbVcKyQ,0Q86acNRm6V9GYx55SXKwf") == .object(["episodes": .array([.null, .null])]))
        }
    }

    @Test("followed artists are a cursor page (after, next) whose next links lead through the proxy to the last; following needs a type; a playlist followed by /followers is in the library")
    func following() async throws {
        let directory = try Self.usersDirectory()
        let artists = ["0TnOYISbd1XYRBk9myaseg", "2CIMQHirSU0MQqyYHq0eOx", "57dN52uHvrHOxijzpIgu3E", "1vCWHaC5f2uS3yhpwWbIA6"]
        try await withProxy(configure: { $0.users.directory = directory }) { proxy in
            _ = try await Self.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            func json(_ path: String) async throws -> JSONValue { try JSONValue.parse(Data(try await client.request("GET", path).body)) }
            #expect(try await client.request("PUT", "/v1/me/following?type=artist&ids=\(artists.joined(separator: ","))").status == 200)
            var names: [String] = []
            var next: String? = "http://127.0.0.1/v1/me/following?type=artist&limit=3"
            var pages = 0
            while let link = next, pages < 5 {
                let target = String(link[try #require(link.firstRange(of: "/v1/")).lowerBound...])
                let page = try await json(target)["artists"]
                #expect(page?["total"]?.int == 4, "\(String(describing: page))")
                names += page?["items"]?.array?.compactMap { $0["name"]?.string } ?? []
                next = page?["next"]?.string
                if let next { #expect(next.hasPrefix("http://127.0.0.1/v1/me/following?type=artist&after="), "links rewritten: \(next)") }
                #expect((page?["cursors"]?["after"]?.string != nil) == (next != nil))
                pages += 1
            }
            #expect(pages == 2 && names.count == 4 && Set(names).count == 4, "\(names)")
            let untyped = try await client.request("PUT", "/v1/me/following?ids=\(artists[0])")
            #expect(untyped.status == 400 && untyped.text.contains("Missing required field: type"), "\(untyped.text)")
            #expect(try await client.request("GET", "/v1/me/following?type=user").status == 400)
            #expect(try await client.request("GET", "/v1/me/following/contains?type=album&ids=\(artists[0])").status == 400)
            let playlist = "3cEYpjA9oz9GiPac4AsH4n"
            #expect(try await client.request("PUT", "/v1/playlists/\(playlist)/followers").status == 200)
            #expect(try await json("/v1/me/library/contains?uris=spotify:playlist:\(playlist)") == .array([.bool(true)]))
            #expect(try await client.request("DELETE", "/v1/playlists/\(playlist)/followers").status == 200)
            #expect(try await json("/v1/me/library/contains?uris=spotify:playlist:\(playlist)") == .array([.bool(false)]))
            await client.close()
        }
    }

    @Test("a playlist keeps what its item edits leave (added at a position, replaced, a range moved, every occurrence removed), read through the proxy in both shapes; a bad track URI is Spotify's 400")
    func playlistEntries() async throws {
        let directory = try Self.usersDirectory()
        let playlist = "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n"
        let (brightside, somebody, austerity) = ("spotify:track:3n3Ppam7vgaVa1iaRUc9Lp", "spotify:track:3twNvmDtFQtAd5gMKedhLD", "spotify:track:2RM5Lx7VIp6GrLRsg2yXwW")
        try await withProxy(configure: { $0.users.directory = directory }) { proxy in
            _ = try await Self.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            func uris(_ path: String, key: String) async throws -> [String?] {
                let page = try JSONValue.parse(Data(try await client.request("GET", path).body))
                return page["items"]?.array?.map { $0[key]?["uri"]?.string } ?? []
            }
            func edit(_ method: String, _ path: String, _ body: String) async throws -> Int {
                try await client.request(method, "\(playlist)/\(path)", body: Array(body.utf8)).status
            }
            #expect(try await edit("POST", "tracks", #"{"uris":["\#(brightside)","\#(somebody)"]}"#) == 201)
            #expect(try await edit("POST", "items", #"{"uris":["\#(austerity)"],"position":0}"#) == 201)
            #expect(try await uris("\(playlist)/tracks", key: "track") == [austerity, brightside, somebody])
            #expect(try await uris("\(playlist)/items?limit=2&offset=1", key: "item") == [brightside, somebody])
            // Austerity (0) moved before the end.
            #expect(try await edit("PUT", "items", #"{"range_start":0,"insert_before":3}"#) == 200)
            #expect(try await uris("\(playlist)/items", key: "item") == [brightside, somebody, austerity])
            // spotipy's playlist_add_items: the body a bare list, the position in the query.
            #expect(try await edit("POST", "items?position=0", #"["\#(brightside)"]"#) == 201)
            #expect(try await uris("\(playlist)/items", key: "item") == [brightside, brightside, somebody, austerity])
            #expect(try await edit("POST", "items?uris=\(brightside)", "") == 201)
            #expect(try await edit("DELETE", "tracks", #"{"tracks":[{"uri":"\#(brightside)"}]}"#) == 200)
            #expect(try await uris("\(playlist)/tracks", key: "track") == [somebody, austerity])
            let whole = try JSONValue.parse(Data(try await client.request("GET", playlist).body))
            #expect(whole["tracks"]?["total"]?.int == 2 && whole["items"]?["items"]?.array?.first?["item"]?["name"]?.string == "Somebody Told Me", "\(whole)")
            #expect(try await edit("PUT", "items", #"{"uris":["\#(austerity)"]}"#) == 200)
            #expect(try await uris("\(playlist)/items", key: "item") == [austerity])
            let bad = try await client.request("POST", "\(playlist)/items", body: Array(#"{"uris":["spotify:track:nope"]}"#.utf8))
            #expect(bad.status == 400 && bad.text.contains("Invalid track uri: spotify:track:nope"), "\(bad.text)")
            let entry = try JSONValue.parse(Data(try await client.request("GET", "\(playlist)/items").body))["items"]?.array?.first
            #expect(entry?["added_by"]?["id"]?.string == "alice-id" && entry?["added_at"]?.string?.hasSuffix("Z") == true, "\(String(describing: entry))")
            // As Spotify's playlist track object has them (tekore's model requires them).
            #expect(entry?["is_local"] == .bool(false) && entry?["primary_color"] == .null && entry?["video_thumbnail"]?["url"] == .null)
            #expect(entry?["item"]?["track"] == .bool(true) && entry?["item"]?["episode"] == .bool(false))
            await client.close()
        }
    }

    @Test("a user's playlist writes through the proxy get Spotify's answers: a snapshot_id (201 for an addition), a new playlist owned by the user, fetched as made")
    func playlistWrites() async throws {
        let directory = try Self.usersDirectory()
        let playlist = "3cEYpjA9oz9GiPac4AsH4n"
        try await withProxy(configure: { $0.users.directory = directory }) { proxy in
            _ = try await Self.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            let before = try await client.request("GET", "/v1/playlists/\(playlist)")
            let publicBefore = try JSONValue.parse(Data(try await client.request("GET", "/v1/users/alice-id/playlists").body))
            let added = try await client.request("POST", "/v1/playlists/\(playlist)/items", body: Array(#"{"uris":["spotify:track:4OHNH3sDzIxnmUADXzv2kT"]}"#.utf8))
            let removed = try await client.request("DELETE", "/v1/playlists/\(playlist)/tracks", body: Array(#"{"tracks":[{"uri":"spotify:track:4OHNH3sDzIxnmUADXzv2kT"}]}"#.utf8))
            let after = try await client.request("GET", "/v1/playlists/\(playlist)")
            // Another key first (a client that sorts them): an extended-mode app's /tracks takes it as sent.
            let sortedRemoval = try await client.request(
                "DELETE", "/v1/playlists/\(playlist)/tracks", body: Array(#"{"snapshot_id":"s","tracks":[{"uri":"spotify:track:4OHNH3sDzIxnmUADXzv2kT"}]}"#.utf8))
            let created = try await client.request("POST", "/v1/users/alice-id/playlists", body: Array(#"{"name":"x"}"#.utf8))
            let badID = try await client.request("PUT", "/v1/playlists/abc/items", body: Array(#"{"uris":[]}"#.utf8))
            let mine = try await client.request("POST", "/v1/me/playlists", body: Array(#"{"name":"Road trip","description":"mine","public":false}"#.utf8))
            let othersList = try await client.request("POST", "/v1/users/bob-id/playlists", body: Array(#"{"name":"x"}"#.utf8))
            let unnamed = try await client.request("POST", "/v1/me/playlists", body: Array(#"{"public":false}"#.utf8))
            let mineID = try JSONValue.parse(Data(mine.body))["id"]?.string ?? "-"
            let mineLater = try await client.request("GET", "/v1/playlists/\(mineID)")
            let myList = try JSONValue.parse(Data(try await client.request("GET", "/v1/me/playlists").body))
            let publicList = try JSONValue.parse(Data(try await client.request("GET", "/v1/users/alice-id/playlists").body))
            // Its details changed (tekore's and spotipy's playlist_change_details), followed, its images.
            let renamed = try await client.request("PUT", "/v1/playlists/\(mineID)", body: Array(#"{"name":"Renamed","public":true}"#.utf8))
            let mineRenamed = try JSONValue.parse(Data(try await client.request("GET", "/v1/playlists/\(mineID)").body))
            let notJSON = try await client.request("PUT", "/v1/playlists/\(mineID)", body: Array("name=x".utf8))
            let followed = try await client.request("PUT", "/v1/playlists/\(playlist)/followers")
            let unfollowed = try await client.request("DELETE", "/v1/playlists/\(playlist)/followers")
            let images = try await client.request("GET", "/v1/playlists/\(mineID)/images")
            await client.close()
            #expect(renamed.status == 200 && renamed.body.isEmpty, "\(renamed.text)")
            #expect(mineRenamed["name"]?.string == "Renamed" && mineRenamed["public"] == .bool(true) && mineRenamed["description"]?.string == "mine")
            #expect(notJSON.status == 400 && notJSON.text.contains("Error parsing JSON."), "\(notJSON.text)")
            #expect(followed.status == 200 && unfollowed.status == 200, "\(followed.text) \(unfollowed.text)")
            #expect(images.status == 200 && images.text == "[]", "\(images.text)")
            // A listing changes with the user's writes: not reused from the shared cache.
            #expect(publicBefore["items"]?.array?.isEmpty == true, "\(publicBefore)")
            #expect(added.status == 201, "\(added.text)")
            let firstSnapshot = try JSONValue.parse(Data(added.body))["snapshot_id"]?.string
            #expect(removed.status == 200, "\(removed.text)")
            #expect(sortedRemoval.status == 200, "\(sortedRemoval.text)")
            let secondSnapshot = try JSONValue.parse(Data(removed.body))["snapshot_id"]?.string
            #expect(firstSnapshot != nil && secondSnapshot != nil && firstSnapshot != secondSnapshot)
            #expect(try JSONValue.parse(Data(after.body))["snapshot_id"]?.string == secondSnapshot)
            #expect(before.headers["etag"] != after.headers["etag"], "a write makes a new version")
            #expect(try JSONValue.parse(Data(before.body))["name"] == JSONValue.parse(Data(after.body))["name"], "of its items, not of its name")
            #expect(created.status == 201, "\(created.text)")
            let owner = try JSONValue.parse(Data(created.body))["owner"]
            #expect(owner?["id"]?.string == "alice-id")
            #expect(owner?["href"]?.string == "http://127.0.0.1/v1/users/alice-id", "links rewritten as on any answer")
            #expect(try JSONValue.parse(Data(created.body))["name"]?.string == "x")
            #expect(mine.status == 201, "\(mine.text)")
            let minePlaylist = try JSONValue.parse(Data(mine.body))
            #expect(minePlaylist["name"]?.string == "Road trip" && minePlaylist["owner"]?["id"]?.string == "alice-id")
            #expect(minePlaylist["description"]?.string == "mine" && minePlaylist["public"] == .bool(false) && minePlaylist["collaborative"] == .bool(false))
            let mineFetched = try JSONValue.parse(Data(mineLater.body))
            #expect(mineLater.status == 200 && mineFetched == minePlaylist, "a created playlist is fetched as it was made")
            // Listed, newest first, simplified (its tracks a link and a total); the private one only for its owner.
            let createdID = try JSONValue.parse(Data(created.body))["id"]?.string
            #expect(myList["items"]?.array?.map { $0["id"]?.string } == [mineID, createdID] && myList["total"]?.int == 2, "\(myList)")
            #expect(myList["items"]?.array?.first?["tracks"] == .object(["href": .string("http://127.0.0.1/v1/playlists/\(mineID)/tracks"), "total": .number(0)]))
            #expect(publicList["items"]?.array?.map { $0["id"]?.string } == [createdID], "\(publicList)")
            #expect(othersList.status == 403 && othersList.text.contains("You cannot create a playlist for another user."), "\(othersList.text)")
            #expect(unnamed.status == 400 && unnamed.text.contains("Missing required field: name"), "\(unnamed.text)")
            #expect(badID.status == 400 && badID.text.contains("Invalid base62 id"))
        }
    }

    @Test("a login without playlist-modify: Spotify's 403 \"Insufficient client scope\" for a playlist write reaches the client in Spotify's words, explained, and teaches nothing")
    func playlistWriteWithoutScope() async throws {
        let directory = try Self.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }) { proxy in
            _ = try await Self.login("reader", as: "reader-id", fake: proxy.fake, users: directory, scopes: ["user-read-private", "playlist-read-private"])
            let client = try await proxy.client()
            let created = try await client.request("POST", "/v1/me/playlists", body: Array(#"{"name":"x"}"#.utf8))
            let added = try await client.request("POST", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items", body: Array(#"{"uris":[]}"#.utf8))
            let ready = try await client.request("GET", "/readyz")
            await client.close()
            for refused in [created, added] {
                let message = try JSONValue.parse(Data(refused.body))["error"]?["message"]?.string ?? ""
                #expect(refused.status == 403 && message.hasPrefix("Insufficient client scope: Spotify says user reader's login"), "\(refused.text)")
                #expect(message.contains(" playlist-modify-public playlist-modify-private ") && message.contains("spotify-proxy login --user reader"), "\(message)")
            }
            #expect(ready.text.contains(#""dev_mode":{"active":false,"#), "\(ready.text)")
        }
    }

    @Test("the fake's answers below /v1/me have Spotify's shapes for a user with nothing saved or playing (tekore's models take them)")
    func meShapes() async throws {
        let directory = try Self.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }) { proxy in
            _ = try await Self.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            func json(_ target: String) async throws -> JSONValue { try JSONValue.parse(Data(try await client.request("GET", target).body)) }
            let player = try await client.request("GET", "/v1/me/player")
            let playing = try await client.request("GET", "/v1/me/player/currently-playing")
            let devices = try await json("/v1/me/player/devices")
            let queue = try await json("/v1/me/player/queue")
            let recent = try await json("/v1/me/player/recently-played?limit=5")
            let followed = try await json("/v1/me/following?type=artist")
            let contains = try await json("/v1/me/tracks/contains?ids=4OHNH3sDzIxnmUADXzv2kT,3n3Ppam7vgaVa1iaRUc9Lp")
            let libraryContains = try await json("/v1/me/library/contains?uris=spotify:track:4OHNH3sDzIxnmUADXzv2kT")
            let noIDs = try await client.request("GET", "/v1/me/albums/contains")
            let saved = try await json("/v1/me/tracks?limit=5")
            await client.close()
            #expect(player.status == 204 && player.body.isEmpty && playing.status == 204, "nothing is playing")
            #expect(devices["devices"]?.array?.isEmpty == true)
            #expect(queue["currently_playing"] == .null && queue["queue"]?.array?.isEmpty == true)
            #expect(recent["items"]?.array?.isEmpty == true && recent["cursors"] == .null && recent["limit"]?.int == 5 && recent["next"] == .null)
            #expect(recent["href"]?.string == "http://127.0.0.1/v1/me/player/recently-played?limit=5", "links rewritten")
            let artists = followed["artists"]
            #expect(artists?["items"]?.array?.isEmpty == true && artists?["cursors"]?["after"] == .null && artists?["total"]?.int == 0)
            #expect(contains == .array([.bool(false), .bool(false)]) && libraryContains == .array([.bool(false)]))
            #expect(noIDs.status == 400 && noIDs.text.contains("Missing required field: ids"))
            #expect(saved["total"]?.int == 0 && saved["offset"]?.int == 0 && saved["limit"]?.int == 5)
        }
    }

    @Test("a return with another state, or none (an old tab, a probe), is refused with nothing exchanged or stored, and the login goes on waiting for its own")
    func stateMismatch() async throws {
        let directory = try Self.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }) { proxy in
            let stored = try await Self.login("mallory", as: "mallory-id", fake: proxy.fake, users: directory, first: { authorize, callback in
                let forged = try await Self.browse(authorize, as: "mallory-id") { $0.replacingOccurrences(of: "state=", with: "state=forged") }
                #expect(forged.status == 400 && forged.text.contains("this is not the login in progress"), "\(forged.text)")
                let probe = try await Self.get(callback)
                #expect(probe.status == 400 && probe.text.contains("this is not the login in progress"), "\(probe.text)")
                #expect(proxy.fake.counters.authorizationCodeGrants == 0)
                #expect(UserStore(directory: directory).labels().isEmpty)
            })
            #expect(stored.spotifyUserID == "mallory-id")
            #expect(proxy.fake.counters.authorizationCodeGrants == 1)
        }
    }

    @Test("the user refuses on Spotify's page (error=access_denied): the login fails, and the browser's page says so and why; the same on another login's return does not end this one")
    func accessDenied() async throws {
        let directory = try Self.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }) { proxy in
            // `login` itself checks that the page says the login failed, with its message.
            await #expect {
                try await Self.login("alice", as: "alice-id", fake: proxy.fake, users: directory) { location in
                    location.replacingOccurrences(of: "code=", with: "error=access_denied&was=")
                }
            } throws: { error in
                (error as? LoginFlow.LoginError)?.message == "Spotify did not authorize the app (access_denied); run the login again and agree"
            }
            #expect(UserStore(directory: directory).labels().isEmpty)
            // An error on a return that is not this login's (another state) says nothing about
            // it: refused as such, and the login goes on to its own return.
            let stored = try await Self.login("alice", as: "alice-id", fake: proxy.fake, users: directory, first: { authorize, _ in
                let other = try await Self.browse(authorize, as: "alice-id") { location in
                    location.replacingOccurrences(of: "code=", with: "error=access_denied&was=").replacingOccurrences(of: "state=", with: "state=forged")
                }
                #expect(other.status == 400 && other.text.contains("this is not the login in progress"), "\(other.text)")
            })
            #expect(stored.spotifyUserID == "alice-id")
        }
    }

    @Test("a code exchange that failed is called a refusal only when Spotify refused it")
    func exchangeFailureWords() {
        #expect(LoginFlow.exchangeFailed(.transient("token endpoint unreachable: upstream failed: Couldn't connect to server")).message
            == "the code exchange with Spotify failed (token endpoint unreachable: upstream failed: Couldn't connect to server); run the login again once Spotify's token endpoint answers")
        #expect(LoginFlow.exchangeFailed(TokenFetchError(.invalidGrant("invalid_grant: code expired"))).message
            == "Spotify refused the code exchange (invalid_grant: code expired); run the login again")
    }

    @Test("a code exchange with the wrong code_verifier is refused by the accounts service")
    func wrongVerifier() async throws {
        try await withProxy { proxy in
            let fake = proxy.fake
            let pkce = PKCE.random()
            let flow = LoginFlow(
                settings: .init(
                    label: "x", scopes: ["user-read-private"], redirectURI: try RedirectURI("http://127.0.0.1:9/callback"),
                    authorizeURL: fake.baseURL + "/authorize", tokenURL: fake.tokenURL, apiURL: fake.baseURL, clientID: fake.clientID,
                    clientSecret: nil, store: UserStore(directory: "/nonexistent")))
            let authorize = try await Self.get(flow.authorizeURL(pkce: pkce, state: "s1"))
            let location = try #require(authorize.headers.first(name: "location"))
            let code = try #require(URLComponents(string: location)?.queryItems?.first { $0.name == "code" }?.value)
            await UpstreamClient.withRunning(configuration: UpstreamConfiguration()) { client in
                let grant = TokenGrant(tokenURL: fake.tokenURL, client: client, eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
                await #expect(throws: TokenFetchError(.invalidGrant("invalid_grant: code_verifier was incorrect"))) {
                    try await flow.exchange(code: code, verifier: PKCE.random().verifier, grant: grant)
                }
            }
        }
    }

    @Test("/v1/me across several 2-second user-token expiries: no failures, each rotated refresh token stored first")
    func acrossExpiries() async throws {
        let directory = try Self.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }, prepareFake: { $0.setUserTokenLifetime(seconds: 2) }) { proxy in
            let first = try await Self.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            var statuses: [Int: Int] = [:]
            let end = ContinuousClock.now + .seconds(7)
            while ContinuousClock.now < end {
                let me = try await client.request("GET", "/v1/me")
                statuses[me.status, default: 0] += 1
                try await Task.sleep(for: .milliseconds(50))
            }
            await client.close()
            #expect(statuses.keys.sorted() == [200], "statuses: \(statuses)")
            #expect(proxy.fake.counters.refreshGrants >= 3)
            // Rotation: the stored refresh token is the latest, not the one the login stored.
            let stored = try #require(try UserStore(directory: directory).load("alice"))
            #expect(stored.refreshToken != first.refreshToken)
            #expect(stored.authorizedAt == first.authorizedAt)
        }
    }

    @Test("when Spotify does not rotate (no refresh_token in the answer), the stored one stays and keeps working")
    func noRotation() async throws {
        let directory = try Self.usersDirectory()
        try await withProxy(
            configure: { $0.users.directory = directory },
            prepareFake: {
                $0.setUserTokenLifetime(seconds: 2)
                $0.setRefreshTokenRotation(false)
            }
        ) { proxy in
            let first = try await Self.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            var failures = 0
            let end = ContinuousClock.now + .seconds(5)
            while ContinuousClock.now < end {
                if try await client.request("GET", "/v1/me").status != 200 { failures += 1 }
                try await Task.sleep(for: .milliseconds(50))
            }
            await client.close()
            #expect(failures == 0)
            #expect(proxy.fake.counters.refreshGrants >= 2)
            #expect(try UserStore(directory: directory).load("alice")?.refreshToken == first.refreshToken)
        }
    }

    @Test("X-Spotify-User is the proxy's: it never reaches Spotify")
    func userHeaderRemoved() async throws {
        try await withProxy { proxy in
            let client = try await proxy.client()
            let echo = try await client.request("GET", "/v1/test/echo/x", headers: [("X-Spotify-User", "alice"), ("X-Other", "kept")])
            await client.close()
            #expect(echo.status == 200)
            #expect(!echo.text.lowercased().contains("x-spotify-user"))
            #expect(echo.text.contains("X-Other"))
        }
    }

    @Test("a rotated refresh token survives a restart: the next proxy refreshes with it")
    func rotationAcrossRestart() async throws {
        let directory = try Self.usersDirectory()
        let group = MultiThreadedEventLoopGroup.singleton
        let fake = try await FakeSpotify.start(group: group)
        do {
            var config = ProxyConfiguration.pointing(at: fake)
            config.users.directory = directory
            _ = try await Self.login("alice", as: "alice-id", fake: fake, users: directory)
            for run in 1...2 {
                let runtime = try await ProxyRuntime(configuration: config, eventLoopGroup: group, logger: Logger(label: "restart-\(run)"))
                let running = Task { try await runtime.run() }
                let client = try await RawHTTPClient.connect(port: runtime.port)
                let me = try await client.request("GET", "/v1/me")
                await client.close()
                await runtime.shutdown()
                try await running.value
                #expect(me.status == 200, "run \(run): \(me.text)")
            }
            // Each start refreshed once, with the token the previous one stored (the fake rotates,
            // so the login's token was spent by the first start).
            #expect(fake.counters.refreshGrants == 2)
            try await fake.shutdown()
        } catch {
            try? await fake.shutdown()
            throw error
        }
    }

    @Test("two users at once: each /v1/me answers its own id; several users and no header is a 401 naming the header")
    func twoUsers() async throws {
        let directory = try Self.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }) { proxy in
            _ = try await Self.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            _ = try await Self.login("bob", as: "bob-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            let alice = try await client.request("GET", "/v1/me", headers: [("X-Spotify-User", "alice")])
            let bob = try await client.request("GET", "/v1/me", headers: [("X-Spotify-User", "bob")])
            let neither = try await client.request("GET", "/v1/me")
            let carol = try await client.request("GET", "/v1/me", headers: [("X-Spotify-User", "carol")])
            await client.close()
            #expect(alice.text.contains(#""id":"alice-id""#))
            #expect(bob.text.contains(#""id":"bob-id""#))
            #expect(neither.status == 401)
            #expect(neither.text.contains("X-Spotify-User"))
            #expect(carol.status == 401)
            #expect(carol.text.contains("spotify-proxy login --user carol"))
        }
    }

    @Test("files in the users directory that are not logins (not JSON, a directory, a copy's name) do not count: the only user stays the one, one naming them is a 401 to log in, and each is warned of once")
    func strayUserFiles() async throws {
        let directory = try Self.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }) { proxy in
            _ = try await Self.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            try "{garbage".write(toFile: directory + "/bad.json", atomically: true, encoding: .utf8)
            try FileManager.default.createDirectory(atPath: directory + "/dir.json", withIntermediateDirectories: false)
            try FileManager.default.copyItem(atPath: directory + "/alice.json", toPath: directory + "/alice copy.json")
            let client = try await proxy.client()
            let only = try await client.request("GET", "/v1/me")
            #expect(only.text.contains(#""id":"alice-id""#), "\(only.text)")
            let bad = try await client.request("GET", "/v1/me", headers: [("X-Spotify-User", "bad")])
            #expect(bad.status == 401 && bad.text.contains("no Spotify user bad is logged in: run `spotify-proxy login"), "\(bad.text)")
            // RFC 9110 §15.5.2: a 401 says how to authenticate.
            #expect(bad.headers["www-authenticate"] == [#"Bearer realm="spotify-proxy""#])
            #expect(try await client.request("GET", "/v1/me", headers: [("X-Spotify-User", "dir")]).status == 401)
            // Listed again (the directory changed): not warned of again.
            try "x".write(toFile: directory + "/.touch", atomically: false, encoding: .utf8)
            #expect(try await client.request("GET", "/v1/me").text.contains(#""id":"alice-id""#))
            await client.close()
            let warnings = proxy.logs.all.filter { $0.contains("is not a login") }
            #expect(warnings.count == 2, "\(warnings)")
            #expect(warnings.contains { $0.contains("user=dir") && $0.contains("a directory, not a file") }, "\(warnings)")
        }
    }

    @Test("the only user is the one logged in now: a second login makes a request without X-Spotify-User a 401 at once, never the first user's token; after a logout the other is the only one, and the logged-out one is refused by name too")
    func onlyUserFollowsLogins() async throws {
        let directory = try Self.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }) { proxy in
            _ = try await Self.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            let first = try await client.request("GET", "/v1/me")
            #expect(first.text.contains(#""id":"alice-id""#))
            _ = try await Self.login("bob", as: "bob-id", fake: proxy.fake, users: directory)
            let ambiguous = try await client.request("GET", "/v1/me")
            #expect(ambiguous.status == 401, "\(ambiguous.text)")
            #expect(ambiguous.text.contains("(alice, bob)"), "\(ambiguous.text)")
            #expect(try await client.request("GET", "/metrics").text.contains(#"spotify_proxy_user_token_ready{user="alice"} 1"#))
            #expect(try UserStore(directory: directory).delete("alice"))
            let onlyBob = try await client.request("GET", "/v1/me")
            #expect(onlyBob.text.contains(#""id":"bob-id""#), "\(onlyBob.text)")
            // Named, the logged-out user is refused at once too: its held token is not used.
            let named = try await client.request("GET", "/v1/me", headers: [("X-Spotify-User", "alice")])
            #expect(named.status == 401, "\(named.text)")
            #expect(named.text.contains("spotify-proxy login"), "\(named.text)")
            let metrics = try await client.request("GET", "/metrics").text
            #expect(!metrics.contains(#"spotify_proxy_user_token_ready{user="alice"} 1"#), "\(metrics)")
            // The refresher finds no login: a notice, not an error telling the operator to act.
            #expect(try await eventually(10) { proxy.logs.all.contains { $0.hasPrefix("notice user alice logged out; its token is no longer used") } })
            // Its series are gone (an alert on its expiry would fire for a user nobody needs); bob's stay.
            let after = try await client.request("GET", "/metrics").text
            #expect(!after.contains(#"user="alice""#) && !after.contains(#"token="alice""#), "\(after)")
            #expect(after.contains(#"spotify_proxy_user_token_ready{user="bob"} 1"#), "\(after)")
            #expect(after.contains(#"spotify_proxy_user_refresh_token_expires_in_seconds{user="bob"} 1572"#), "182 days, in seconds: \(after)")
            #expect(!proxy.logs.all.contains { $0.hasPrefix("error") && $0.contains("alice") }, "\(proxy.logs.all.filter { $0.hasPrefix("error") })")
            // Nor is it counted as a failed refresh (nothing was asked of Spotify).
            let failures = MetricsTests.sum(MetricsTests.parse(try await client.request("GET", "/metrics").text), "spotify_proxy_token_refresh_failures_total", ["token": "alice"])
            #expect(failures == 0)
            // The label logged in again, as another Spotify account: its token, never the old one.
            _ = try await Self.login("alice", as: "carol-id", fake: proxy.fake, users: directory)
            let again = try await client.request("GET", "/v1/me", headers: [("X-Spotify-User", "alice")])
            #expect(again.text.contains(#""id":"carol-id""#), "\(again.text)")
            // Logged in over itself, with no listing between (no logout seen): the new login's token.
            _ = try await Self.login("alice", as: "dave-id", fake: proxy.fake, users: directory)
            let over = try await client.request("GET", "/v1/me", headers: [("X-Spotify-User", "alice")])
            #expect(over.text.contains(#""id":"dave-id""#), "\(over.text)")
            await client.close()
        }
    }

    @Test("invalid_grant is final: 401 naming the login command, no further grant requests, /readyz still 200 and listing the user")
    func invalidGrantFinal() async throws {
        let directory = try Self.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }, prepareFake: { $0.setUserTokenLifetime(seconds: 2) }) { proxy in
            _ = try await Self.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            #expect(try await client.request("GET", "/v1/me").status == 200)
            proxy.fake.revokeRefreshTokens(ofUser: "alice-id")
            // The token expires in 2 s; the refresh after it is refused.
            let refused = try await eventually(10) {
                let me = try await client.request("GET", "/v1/me")
                return me.status == 401 && me.text.contains("spotify-proxy login --user alice")
            }
            #expect(refused)
            let grants = proxy.fake.counters.refreshGrants
            for _ in 0..<5 { _ = try await client.request("GET", "/v1/me") }
            let ready = try await client.request("GET", "/readyz")
            let metrics = try await client.request("GET", "/metrics")
            await client.close()
            #expect(proxy.fake.counters.refreshGrants == grants)
            #expect(ready.status == 200)
            #expect(ready.text.contains(#""label":"alice""#))
            #expect(ready.text.contains(#""state":"invalid_grant""#))
            // A refused refresh token has no time left, whatever its age.
            #expect(ready.text.contains(#""refresh_token_days_left":0"#), "\(ready.text)")
            #expect(metrics.text.contains(#"spotify_proxy_user_refresh_token_expires_in_seconds{user="alice"} 0"#))
            // Its 0 days left warn of no expiry (the refusal was logged): the hourly look, now.
            var warnings = ExpiryWarnings()
            try #require(proxy.runtime.users).warnOfExpiries(&warnings, now: Date())
            #expect(!proxy.logs.all.contains { $0.contains("refresh token expires in") }, "\(proxy.logs.all.filter { $0.contains("alice") })")

            // A new login is picked up within seconds, without a restart.
            _ = try await Self.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let again = try await proxy.client()
            let recovered = try await eventually(10) { try await again.request("GET", "/v1/me").status == 200 }
            await again.close()
            #expect(recovered)
        }
    }

    @Test("no refresh token, access token or verifier ever reaches a log line")
    func secretsNotLogged() async throws {
        let directory = try Self.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }, prepareFake: { $0.setUserTokenLifetime(seconds: 2) }) { proxy in
            let user = try await Self.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            for _ in 0..<3 {
                _ = try await client.request("GET", "/v1/me")
                try await Task.sleep(for: .seconds(1))
            }
            await client.close()
            let stored = try #require(try UserStore(directory: directory).load("alice"))
            let logs = proxy.logs.all.joined(separator: "\n")
            #expect(!logs.isEmpty)
            #expect(!logs.contains(user.refreshToken))
            #expect(!logs.contains(stored.refreshToken))
            #expect(!logs.contains("fake-at-"))
        }
    }

    @Test("without a logged-in user, a user path is a 401 saying to run login; the catalog still works")
    func noUser() async throws {
        let directory = try Self.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }) { proxy in
            let client = try await proxy.client()
            let me = try await client.request("GET", "/v1/me")
            #expect(me.status == 401)
            #expect(me.text.contains("run `spotify-proxy login`"))
            #expect(try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg").status == 200)
            await client.close()
        }
    }
}

@Suite("User commands (login, users, logout) as processes")
struct UserCommandTests {
    @Test("spotify-proxy login prints the URL on a line of its own; the browser's return stores the user; users lists it without a token; logout deletes it")
    func loginUsersLogout() async throws {
        let fake = try await FakeSpotify.start(group: MultiThreadedEventLoopGroup.singleton)
        do {
            let directory = try temporaryDirectory()
            let callback = try LoopbackPort.free()
            let config = try writeProxyConfig(
                in: directory, port: try LoopbackPort.free(), fake: fake,
                spotify: """
                    authorize_url = "\(fake.baseURL)/authorize"
                    redirect_uri = "http://127.0.0.1:\(callback)/callback"
                    """,
                sections: "[users]\ndir = \"people\"\n")
            let login = try CommandRun(["login", "--config", config.path, "--user", "alice"])
            var url: String?
            let printed = try await eventually(20) {
                url = login.stdout.split(separator: "\n").first { $0.hasPrefix("http://") }.map(String.init)
                return url != nil
            }
            #expect(printed, "stdout: \(login.stdout) stderr: \(login.stderr)")
            let authorizeURL = try #require(url)
            _ = try await UserTokenTests.browse(authorizeURL, as: "alice-id")
            #expect(try await login.exitStatus(within: 20) == 0, "stderr: \(login.stderr)")
            #expect(login.stdout.contains("logged in: user alice (Spotify id alice-id)"))
            let stored = try #require(try UserStore(directory: directory.appendingPathComponent("people").path).load("alice"))

            let users = try await CommandRun.run(["users", "--config", config.path])
            #expect(users.status == 0)
            #expect(users.stdout.contains("alice"))
            #expect(users.stdout.contains("alice-id"))
            #expect(users.stdout.contains("181 days left") || users.stdout.contains("182 days left"))
            #expect(users.stdout.contains("(proxy not running)"))
            #expect(!users.stdout.contains(stored.refreshToken))

            let logout = try await CommandRun.run(["logout", "--config", config.path, "--user", "alice"])
            #expect(logout.status == 0)
            #expect(try UserStore(directory: directory.appendingPathComponent("people").path).load("alice") == nil)
            try await fake.shutdown()
        } catch {
            try? await fake.shutdown()
            throw error
        }
    }

    @Test("login with a users directory it cannot make: refused before the URL is shown (a code cannot be used twice), exit 2")
    func usersDirectoryUnusable() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try "a file".write(to: directory.appendingPathComponent("afile"), atomically: true, encoding: .utf8)
        let config = directory.appendingPathComponent("proxy.conf")
        try "[spotify]\nclient_id = \"id\"\n[users]\ndir = \"afile/users\"\n".write(to: config, atomically: true, encoding: .utf8)
        let run = try await CommandRun.run(["login", "--config", config.path])
        #expect(run.status == 2)
        #expect(run.stderr.contains("users.dir = \"\(directory.standardizedFileURL.path)/afile/users\" cannot be created"), "\(run.stderr)")
        #expect(!run.stdout.contains("http"), "\(run.stdout)")
    }

    @Test("login refuses a localhost redirect URI, saying why, exit 64 (the flag's value)")
    func localhostRefused() async throws {
        let run = try await CommandRun.run(["login", "--redirect-uri", "http://localhost:8888/callback"], in: try temporaryDirectory())
        #expect(run.status == 64, "a flag's value")
        #expect(run.stderr.contains("no longer accepts localhost"))
        #expect(run.stderr.contains("--redirect-uri"))
    }
}

@Suite("Refresh-token expiry warnings")
struct ExpiryWarningTests {
    @Test("from 14 days before, once a day per user")
    func onceADay() {
        var warnings = ExpiryWarnings()
        let t0 = Date(timeIntervalSince1970: 1_800_000_000)
        let outcomes = [
            warnings.due("alice", daysLeft: 15, now: t0),
            warnings.due("alice", daysLeft: 14, now: t0),
            warnings.due("alice", daysLeft: 14, now: t0.addingTimeInterval(3600)),
            warnings.due("bob", daysLeft: 3, now: t0.addingTimeInterval(3600)),
            warnings.due("alice", daysLeft: 13, now: t0.addingTimeInterval(86_400)),
        ]
        // Not yet; the first within 14 days; not again the same day; another user; the next day.
        #expect(outcomes == [false, true, false, true, true])
    }
}
