import FakeSpotify
import Foundation
import NIOCore
import NIOHTTP1
import SpotifyCatalog
@testable import SpotifyProxy
import SpotifyProxyTestSupport
import Testing

@Suite("Development mode: requests Spotify refuses, made of allowed ones")
struct DevModeTests {
    struct Row: Sendable, CustomTestStringConvertible {
        var testDescription: String { self.target }
        var target: String
        var expected: Assembly?
        /// Spotify's 400 in any mode (then `expected` is nil).
        var refused: String? = nil
    }

    static let artistAlbums = "/v1/artists/0TnOYISbd1XYRBk9myaseg/albums"

    @Test("which requests are assembled, and from what", arguments: [
        Row(target: "/v1/tracks?ids=a1,b2&market=SE", expected: .batch(key: "tracks", parts: ["/v1/tracks/a1?market=SE", "/v1/tracks/b2?market=SE"])),
        // spotipy's trailing slash; the TS SDK's encoded commas.
        Row(target: "/v1/artists/?ids=a1", expected: .batch(key: "artists", parts: ["/v1/artists/a1"])),
        Row(target: "/v1/albums?ids=a1%2Cb2", expected: .batch(key: "albums", parts: ["/v1/albums/a1", "/v1/albums/b2"])),
        // Refused by Spotify in any mode: a development-mode app is told why, not "Forbidden".
        Row(target: "/v1/tracks?ids=a1,../x", expected: nil, refused: "invalid id"),
        Row(target: "/v1/tracks?ids=a1,,b2", expected: nil, refused: "invalid id"),
        Row(target: "/v1/tracks?ids=", expected: nil, refused: "Missing required field: ids"),
        // No ids parameter at all (no query, or another one): refused alike, not sent to be 403.
        Row(target: "/v1/tracks", expected: nil, refused: "Missing required field: ids"),
        Row(target: "/v1/albums/?market=SE", expected: nil, refused: "Missing required field: ids"),
        Row(target: "/v1/artists?market=SE&ids=", expected: nil, refused: "Missing required field: ids"),
        Row(target: "/v1/tracks?ids=" + (0..<51).map { "a\($0)" }.joined(separator: ","), expected: nil, refused: "too many ids requested"),
        Row(target: "/v1/tracks/a1", expected: nil),
        Row(target: "/v1/playlists?ids=a1", expected: nil),
        Row(
            target: "/v1/search?q=abba&type=artist,track&limit=25&offset=5",
            expected: .pages(PageRequest(path: "/v1/search", query: ["q=abba", "type=artist,track"], offset: 5, limit: 25, cap: 10))),
        Row(
            target: "\(Self.artistAlbums)?limit=20&offset=0",
            expected: .pages(PageRequest(path: Self.artistAlbums, query: [], offset: 0, limit: 20, cap: 10))),
        Row(target: "/v1/search?q=abba&type=artist&limit=10", expected: nil),
        Row(target: "/v1/search?q=abba&type=artist&limit=51", expected: nil),
        Row(target: "/v1/albums/x/tracks?limit=50", expected: nil),
        // Beyond Spotify's own bounds: no overflow, no flood of parts.
        Row(target: "/v1/search?q=a&type=track&limit=20&offset=9223372036854775800", expected: nil, refused: "Invalid offset"),
        Row(target: "/v1/albums?ids=" + (0..<21).map { "a\($0)" }.joined(separator: ","), expected: nil, refused: "too many ids requested"),
        // The offset is named, not the limit a development-mode Spotify would complain of.
        Row(target: "\(Self.artistAlbums)?limit=20&offset=-1", expected: nil, refused: "Invalid offset"),
        Row(target: "\(Self.artistAlbums)?limit=20&offset=abc", expected: nil, refused: "Invalid offset"),
        Row(
            target: "\(Self.artistAlbums)?limit=20&offset=",
            expected: .pages(PageRequest(path: Self.artistAlbums, query: [], offset: 0, limit: 20, cap: 10))),
    ])
    func assemblies(_ row: Row) {
        do {
            #expect(try Assembly.of(row.target) == row.expected)
            #expect(row.refused == nil, "not refused")
        } catch {
            #expect(error.message == row.refused)
        }
    }

    @Test("pages of the cap's size; the page asked for assembled with consistent links and counts")
    func pageAssembly() throws {
        let request = PageRequest(path: Self.artistAlbums, query: ["include_groups=album"], offset: 5, limit: 25, cap: 10)
        #expect(request.parts == [
            "\(Self.artistAlbums)?include_groups=album&offset=5&limit=10",
            "\(Self.artistAlbums)?include_groups=album&offset=15&limit=10",
            "\(Self.artistAlbums)?include_groups=album&offset=25&limit=5",
        ])
        func page(_ offset: Int, _ limit: Int, total: Int) -> [UInt8] {
            let items = (offset..<min(offset + limit, total)).map { #"{"id":"item\#($0)"}"# }.joined(separator: ",")
            let href = "https://api.spotify.com\(Self.artistAlbums)?offset=\(offset)&limit=\(limit)&include_groups=album"
            return Array(#"{"href":"\#(href)","items":[\#(items)],"limit":\#(limit),"next":null,"offset":\#(offset),"previous":null,"total":\#(total)}"#.utf8)
        }
        let body = try #require(request.assemble([page(5, 10, total: 40), page(15, 10, total: 40), page(25, 5, total: 40)]))
        let value = try JSONValue.parse(Data(body))
        #expect(value["items"]?.array?.compactMap { $0["id"]?.string } == (5..<30).map { "item\($0)" })
        #expect(value["limit"]?.int == 25)
        #expect(value["offset"]?.int == 5)
        #expect(value["total"]?.int == 40)
        #expect(value["href"]?.string == "https://api.spotify.com\(Self.artistAlbums)?offset=5&limit=25&include_groups=album")
        #expect(value["next"]?.string == "https://api.spotify.com\(Self.artistAlbums)?offset=30&limit=25&include_groups=album")
        #expect(value["previous"]?.string == "https://api.spotify.com\(Self.artistAlbums)?offset=0&limit=25&include_groups=album")
        // The last page: no next.
        let last = try JSONValue.parse(Data(try #require(PageRequest(path: Self.artistAlbums, query: [], offset: 30, limit: 20, cap: 10)
            .assemble([page(30, 10, total: 40), page(40, 10, total: 40)]))))
        #expect(last["items"]?.array?.count == 10)
        #expect(last["next"] == .null)
        // Search takes offsets up to 1,000: no page starts after it (it would be a 400 "Invalid offset").
        #expect(PageRequest(path: "/v1/search", query: ["q=old", "type=track"], offset: 995, limit: 20, cap: 10).parts == [
            "/v1/search?q=old&type=track&offset=995&limit=10"
        ])
        #expect(PageRequest(path: "/v1/search", query: ["q=a", "type=track"], offset: 990, limit: 25, cap: 10).parts.count == 2)
        #expect(PageRequest(path: Self.artistAlbums, query: [], offset: 995, limit: 20, cap: 10).parts.count == 2)
    }

    @Test("auto: a 403 on a batch is learned, then answered by fetching each id; unknown ids are null; the next batch never tries the batch path")
    func batchFanOut() async throws {
        try await withProxy(prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            let client = try await proxy.client()
            let known = "0TnOYISbd1XYRBk9myaseg"
            let unknown = "0000000000000000000000"
            let before = proxy.fake.counters.apiRequests
            let first = try await client.request("GET", "/v1/artists?ids=\(known),\(unknown)")
            let afterFirst = proxy.fake.counters.apiRequests
            let ready = try await client.request("GET", "/readyz")
            let second = try await client.request("GET", "/v1/albums?ids=3IqzqH6ShrRtie9Yd2ODyG")
            let afterSecond = proxy.fake.counters.apiRequests
            // A HEAD of a new batch is assembled as its GET is: the GET's length, no body.
            let headTarget = "/v1/artists?ids=\(known),\(known)"
            try await client.send("HEAD \(headTarget) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", method: .HEAD)
            let head = try await client.response()
            let headGET = try await client.request("GET", headTarget)
            let metrics = try await client.request("GET", "/metrics")
            let status = try ProxyStatus.decoder().decode(ProxyStatus.self, from: Data(try await client.request("GET", "/admin/status").body))
            await client.close()
            #expect(first.status == 200)
            let artists = try #require(try JSONValue.parse(Data(first.body))["artists"]?.array)
            #expect(artists.count == 2)
            #expect(artists[0]["id"]?.string == known)
            #expect(artists[0]["href"]?.string == "http://127.0.0.1/v1/artists/\(known)")
            #expect(artists[1] == .null)
            #expect(first.headers["cache-status"] == ["spotify-proxy; fwd=miss; detail=dev-mode-assembled"])
            // Fresh as long as its parts are (the catalog's public, max-age=7200; the null part says nothing).
            #expect(first.headers["cache-control"] == ["public, max-age=7200"], "\(first.headers)")
            // The refused batch, then one request per id.
            #expect(afterFirst - before == 3)
            #expect(ready.text.contains(#""dev_mode":{"active":true,"#))
            #expect(second.status == 200)
            #expect(try JSONValue.parse(Data(second.body))["albums"]?.array?.first?["id"]?.string == "3IqzqH6ShrRtie9Yd2ODyG")
            #expect(afterSecond - afterFirst == 1, "learned: the batch path is not tried again")
            #expect(head.status == 200 && head.body.isEmpty)
            #expect(head.headers["content-length"] == [String(headGET.body.count)])
            #expect(headGET.headers["cache-status"] == ["spotify-proxy; hit; detail=dev-mode-assembled"])
            #expect(metrics.text.contains(#"spotify_proxy_dev_mode_assembled_total{kind="batch"} 4"#), "the HEAD and its GET assembled too")
            #expect(metrics.text.contains("spotify_proxy_dev_mode_active 1"))
            #expect(status.devMode == DevMode.Status(setting: "auto", active: true, detected: true, limitCap: 10, batchesAssembled: 4, pagesAssembled: 0))
            #expect(StatusText.render(status, base: proxy.baseURL).contains(
                "dev mode:  auto; answering as for a development-mode app (learned from Spotify's refusals): assembled so far 4 batches and 0 pages beyond the limit cap of 10"))
        }
    }

    @Test("a batch part's answer: an unknown id (404) and a wrong-length id (400) are null, as in Spotify's batch; another 400 refuses the batch")
    func nullParts() {
        #expect(Assembly.isNullInBatch(part: "/v1/tracks/0000000000000000000000", status: 404))
        #expect(Assembly.isNullInBatch(part: "/v1/tracks/44?market=SE", status: 400))
        #expect(!Assembly.isNullInBatch(part: "/v1/tracks/2RM5Lx7VIp6GrLRsg2yXwW?market=XX", status: 400))
        #expect(!Assembly.isNullInBatch(part: "/v1/tracks/2RM5Lx7VIp6GrLRsg2yXwW", status: 403))
        #expect(!Assembly.isNullInBatch(part: "/v1/tracks/2RM5Lx7VIp6GrLRsg2yXwW", status: 200))
    }

    @Test("a wrong-length id in a batch is null, assembled in development mode (without asking Spotify for it) as Spotify's batch has it in extended mode")
    func wrongLengthID() async throws {
        let target = "/v1/artists?ids=0TnOYISbd1XYRBk9myaseg,44"
        var bodies: [JSONValue] = []
        try await withProxy(configure: { $0.devMode = .off }) { proxy in
            let client = try await proxy.client()
            let response = try await client.request("GET", target)
            await client.close()
            #expect(response.status == 200, "\(response.text)")
            bodies.append(try JSONValue.parse(Data(response.body)))
        }
        try await withProxy(configure: { $0.devMode = .on }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            let client = try await proxy.client()
            let before = proxy.fake.counters.apiRequests
            let response = try await client.request("GET", target)
            await client.close()
            #expect(proxy.fake.counters.apiRequests - before == 1, "the wrong-length id is not asked for")
            #expect(response.status == 200, "\(response.text)")
            #expect(response.headers["cache-status"] == ["spotify-proxy; fwd=miss; detail=dev-mode-assembled"])
            bodies.append(try JSONValue.parse(Data(response.body)))
        }
        for body in bodies {
            let artists = try #require(body["artists"]?.array)
            #expect(artists.count == 2)
            #expect(artists[0]["id"]?.string == "0TnOYISbd1XYRBk9myaseg")
            #expect(artists[1] == .null)
        }
    }

    @Test("spotipy's artist_albums(limit=20) in a development-mode app: the page it asked for, as an extended-mode app would get it")
    func limitAssembly() async throws {
        // spotipy 2.26 sends artists/{id}/albums with limit then offset.
        let target = "\(Self.artistAlbums)?limit=20&offset=0"
        let extended = try await withProxy { proxy in
            let client = try await proxy.client()
            let response = try await client.request("GET", target)
            await client.close()
            return response
        }
        try await withProxy(configure: { $0.devMode = .on }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            let client = try await proxy.client()
            let assembled = try await client.request("GET", target)
            let direct = try await client.request("GET", "\(Self.artistAlbums)?limit=10&offset=0")
            await client.close()
            #expect(extended.status == 200)
            #expect(assembled.status == 200)
            #expect(direct.status == 200)
            let want = try JSONValue.parse(Data(extended.body))
            let got = try JSONValue.parse(Data(assembled.body))
            #expect(got["items"]?.array?.compactMap { $0["id"]?.string } == want["items"]?.array?.compactMap { $0["id"]?.string })
            #expect(got["items"]?.array?.count == 20)
            for field in ["limit", "offset", "total", "next", "previous", "href"] {
                #expect(got[field] == want[field], "\(field)")
            }
        }
    }

    @Test("known development mode: a batch or page Spotify refuses in any mode gets its 400 in Spotify's words, not a bare 403; before the mode is known Spotify is asked, and its bare 403 on a batch becomes that 400")
    func refusals() async throws {
        let targets = [
            ("/v1/tracks?ids=2RM5Lx7VIp6GrLRsg2yXwW,bad!", "invalid id"),
            ("/v1/tracks?ids=2RM5Lx7VIp6GrLRsg2yXwW,,3n3Ppam7vgaVa1iaRUc9Lp", "invalid id"),
            ("/v1/tracks?ids=", "Missing required field: ids"),
            ("/v1/albums?ids=" + Array(repeating: "3IqzqH6ShrRtie9Yd2ODyG", count: 21).joined(separator: ","), "too many ids requested"),
            ("\(Self.artistAlbums)?limit=20&offset=-1", "Invalid offset"),
            ("\(Self.artistAlbums)?limit=20&offset=abc", "Invalid offset"),
        ]
        // What an extended-mode app hears from Spotify (the fake) for each.
        try await withProxy(configure: { $0.devMode = .off }) { proxy in
            let client = try await proxy.client()
            for (target, message) in targets {
                let response = try await client.request("GET", target)
                #expect(response.status == 400, "\(target)")
                let error = try JSONValue.parse(Data(response.body))["error"]
                #expect(error?["status"]?.int == 400 && error?["message"]?.string == message, "\(target): \(response.text)")
            }
            await client.close()
        }
        try await withProxy(configure: { $0.devMode = .on }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            let client = try await proxy.client()
            let before = proxy.fake.counters.apiRequests
            for (target, message) in targets {
                let response = try await client.request("GET", target)
                #expect(response.status == 400, "\(target)")
                let error = try JSONValue.parse(Data(response.body))["error"]
                #expect(error?["status"]?.int == 400 && error?["message"]?.string == message, "\(target): \(response.text)")
            }
            #expect(proxy.fake.counters.apiRequests == before, "answered without Spotify")
            await client.close()
        }
        // auto, not yet learned: Spotify is asked; a development-mode app's bare 403 "Forbidden"
        // becomes the 400 an extended-mode app hears, and teaches the mode.
        try await withProxy(configure: { $0.devMode = .auto }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            let client = try await proxy.client()
            let before = proxy.fake.counters.apiRequests
            let response = try await client.request("GET", "/v1/tracks?ids=bad!")
            let asked = proxy.fake.counters.apiRequests - before
            let ready = try await client.request("GET", "/readyz")
            await client.close()
            #expect(response.status == 400 && asked == 1, "\(response.text)")
            #expect(try JSONValue.parse(Data(response.body))["error"]?["message"]?.string == "invalid id", "\(response.text)")
            #expect(ready.text.contains(#""dev_mode":{"active":true,"#), "\(ready.text)")
        }
    }

    @Test("endpoints removed with nothing to make them from: which, and the advice", arguments: [
        (HTTPMethod.GET, "/v1/artists/0TnOYISbd1XYRBk9myaseg/top-tracks?market=US", "no other endpoint gives an artist's top tracks"),
        (.HEAD, "/v1/artists/0TnOYISbd1XYRBk9myaseg/top-tracks/", "no other endpoint gives an artist's top tracks"),
        (.GET, "/v1/browse/new-releases?limit=5", "GET /v1/browse/new-releases for development-mode apps in February 2026, and nothing replaces it"),
        (.HEAD, "/v1/markets", "GET /v1/markets for development-mode apps"),
        (.GET, "/v1/browse/categories/party", "browse/categories and browse/categories/{id} for development-mode apps"),
        (.GET, "/v1/browse/categories/party/playlists", nil),
        (.GET, "/v1/markets", "markets for development-mode apps in February 2026, and nothing replaces it"),
        (.GET, "/v1/users/smedjan", "GET /v1/me is the logged-in user's own profile"),
        (.GET, "/v1/users/smedjan/playlists?limit=5", "GET /v1/me/playlists lists the logged-in user's own"),
        (.POST, "/v1/users/smedjan/playlists", "send the same request to POST /v1/me/playlists"),
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks", "send the request to /v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items"),
        (.POST, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items"),
        (.PUT, "/v1/me/tracks", "PUT /v1/me/tracks with PUT /v1/me/library?uris="),
        (.DELETE, "/v1/me/following?type=artist", "its ids are not in the query; send them there as ids=…"),
        (.PUT, "/v1/me/following?type=playlist&ids=x", "send type=artist or type=user"),
        (.PUT, "/v1/me/tracks?ids=" + Array(repeating: "4OHNH3sDzIxnmUADXzv2kT", count: 45).joined(separator: "%2C"), "it names 45 ids; send at most 40 per request"),
        (.PUT, "/v1/me/tracks?ids=a&ids=b", "ids is repeated in the query; send it once"),
        (.DELETE, "/v1/me/albums?ids=a,,b", "its ids are not all Spotify ids"),
        (.PUT, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/followers", "PUT /v1/me/library?uris=spotify:playlist:{id}"),
        (.PUT, "/v1/me/tracks?ids=", "its ids= is empty; send 1 to 40 Spotify ids"),
        (.DELETE, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks", #"/items, its body's top-level "tracks" named "items""#),
        (.GET, "/v1/me/tracks/contains?ids=a,,b", "GET /v1/me/tracks/contains with GET /v1/me/library/contains?uris="),
        (.HEAD, "/v1/me/albums/contains", "its ids are not in the query; send them there as ids=… (comma-separated);"),
        (.GET, "/v1/me/following/contains?ids=x", "send type=artist or type=user"),
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/followers/contains?ids=a,b", "ask about one playlist, for the logged-in user"),
        // Not removed, or made from others (the batches, large pages).
        (.GET, "/v1/artists/0TnOYISbd1XYRBk9myaseg", nil),
        (.GET, "/v1/artists/0TnOYISbd1XYRBk9myaseg/albums?limit=20", nil),
        (.GET, "/v1/artists/top-tracks", nil),
        (.GET, "/v1/tracks?ids=4OHNH3sDzIxnmUADXzv2kT", nil),
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n", nil),
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items", nil),
        (.GET, "/v1/me/playlists", nil),
        (.POST, "/v1/me/playlists", nil),
        (.GET, "/v1/me/tracks", nil),
        (.PUT, "/v1/me/library?uris=spotify:track:4OHNH3sDzIxnmUADXzv2kT", nil),
        (.GET, "/v1/marketsx", nil),
        (.DELETE, "/v1/markets", nil),
        (.GET, "/v2/markets", nil),
    ] as [(HTTPMethod, String, String?)])
    func removedEndpoints(_ method: HTTPMethod, _ target: String, _ advice: String?) {
        let message = RemovedEndpoint.message(method: method, target: target, setting: .auto)
        if method == .HEAD {
            #expect(message == RemovedEndpoint.message(method: .GET, target: target, setting: .auto), "a HEAD's answer is its GET's, without the body")
        }
        if let advice {
            #expect(message?.contains(advice) == true, "\(message ?? "nil")")
            #expect(message?.hasSuffix(RemovedEndpoint.modeNote(.auto)) == true, "says how to tell the proxy otherwise")
            #expect(RemovedEndpoint.message(method: method, target: target, setting: .on)?.hasSuffix(RemovedEndpoint.modeNote(.on)) == true, "and why it thinks so")
            #expect(RemovedEndpoint.removedIn2024(method: method, target: target) == nil, "in one table only")
        } else {
            #expect(message == nil)
        }
    }

    @Test("a library write or check by type the proxy cannot send to /v1/me/library for its query alone is the client's 400, as an invalid id is; ids in the body, another user's check, stay the removal's 403", arguments: [
        (HTTPMethod.PUT, "/v1/me/tracks?ids=bad!", 400),
        (.DELETE, "/v1/me/albums?ids=", 400),
        (.PUT, "/v1/me/tracks?ids=" + Array(repeating: "4OHNH3sDzIxnmUADXzv2kT", count: 41).joined(separator: ","), 400),
        (.PUT, "/v1/me/tracks?ids=4OHNH3sDzIxnmUADXzv2kT&ids=4OHNH3sDzIxnmUADXzv2kT", 400),
        (.PUT, "/v1/me/following?type=album&ids=4OHNH3sDzIxnmUADXzv2kT", 400),
        (.GET, "/v1/me/tracks/contains?ids=a:b", 400),
        (.PUT, "/v1/me/tracks", 403),
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/followers/contains?ids=a,b", 403),
    ] as [(HTTPMethod, String, Int)])
    func malformedLibraryQueries(_ method: HTTPMethod, _ target: String, _ status: Int) {
        let removal = RemovedEndpoint.removal(method: method, target: target, setting: .on)
        #expect(removal?.status == status, "\(String(describing: removal))")
    }

    @Test("endpoints removed for new apps in 2024: which, with Spotify's status, the same message for a HEAD, and none in the 2026 table too", arguments: [
        (HTTPMethod.GET, "/v1/recommendations?seed_artists=0TnOYISbd1XYRBk9myaseg", "GET /v1/recommendations on 2024-11-27", 404),
        (.GET, "/v1/recommendations/available-genre-seeds", "GET /v1/recommendations/available-genre-seeds on 2024-11-27", 404),
        (.GET, "/v1/artists/0TnOYISbd1XYRBk9myaseg/related-artists", "GET /v1/artists/{id}/related-artists on", 404),
        (.HEAD, "/v1/artists/0TnOYISbd1XYRBk9myaseg/related-artists/", "GET /v1/artists/{id}/related-artists on", 404),
        (.GET, "/v1/audio-features?ids=4OHNH3sDzIxnmUADXzv2kT", "GET /v1/audio-features on", 403),
        (.GET, "/v1/audio-features/4OHNH3sDzIxnmUADXzv2kT", "GET /v1/audio-features/{id} on", 403),
        (.GET, "/v1/audio-analysis/4OHNH3sDzIxnmUADXzv2kT", "GET /v1/audio-analysis/{id} on", 403),
        (.GET, "/v1/browse/featured-playlists?limit=5", "GET /v1/browse/featured-playlists on", 404),
        (.GET, "/v1/browse/categories/party/playlists", "GET /v1/browse/categories/{id}/playlists on", 404),
        (.GET, "/v1/artists/0TnOYISbd1XYRBk9myaseg", nil, 0),
        (.GET, "/v1/artists/related-artists", nil, 0),
        (.GET, "/v1/browse/categories/party", nil, 0),
        (.GET, "/v1/browse/new-releases", nil, 0),
        (.POST, "/v1/recommendations", nil, 0),
        (.GET, "/v1/recommendations/seeds", nil, 0),
        (.GET, "/v1/recommendations/available-genre-seeds/x", nil, 0),
        (.GET, "/v1/recommendationsx", nil, 0),
        (.GET, "/v1/audio-analysis", nil, 0),
    ] as [(HTTPMethod, String, String?, Int)])
    func removedIn2024(_ method: HTTPMethod, _ target: String, _ what: String?, _ status: Int) {
        let removal = RemovedEndpoint.removedIn2024(method: method, target: target)
        if method == .HEAD { #expect(removal == RemovedEndpoint.removedIn2024(method: .GET, target: target)) }
        if let what {
            #expect(removal?.message.contains("Spotify removed \(what)") == true, "\(removal?.message ?? "nil")")
            #expect(removal?.message.contains("nothing replaces it") == true)
            #expect(removal?.status == status && removal?.when == .newApps2024)
            #expect(RemovedEndpoint.message(method: method, target: target, setting: .auto) == nil, "in one table only")
            #expect(RemovedEndpoint.removal(method: method, target: target, setting: .on) == removal)
        } else {
            #expect(removal == nil)
        }
    }

    @Test("an endpoint removed for new apps in 2024: Spotify's bare 404 or 403 is explained, in any development mode, with the cache on or off; nothing is learned; once development mode is known, the proxy answers it", arguments: [
        (DevModeSetting.auto, false), (.auto, true), (.off, false), (.on, true), (.on, false),
    ])
    func removedIn2024Answered(setting: DevModeSetting, cacheOff: Bool) async throws {
        try await withProxy(configure: { config in
            config.devMode = setting
            if cacheOff { config.cache.maxBytes = 0 }
        }) { proxy in
            let client = try await proxy.client()
            let start = proxy.fake.counters.apiRequests
            let recommendations = try await client.request("GET", "/v1/recommendations?seed_artists=0TnOYISbd1XYRBk9myaseg&limit=5")
            let related = try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg/related-artists")
            let features = try await client.request("GET", "/v1/audio-features?ids=4OHNH3sDzIxnmUADXzv2kT")
            try await client.send("HEAD /v1/audio-features?ids=4OHNH3sDzIxnmUADXzv2kT HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", method: .HEAD)
            let featuresHead = try await client.response()
            let categoryPlaylists = try await client.request("GET", "/v1/browse/categories/party/playlists")
            let removed = proxy.fake.counters.apiRequests - start
            let artist = try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg")
            let ready = try await client.request("GET", "/readyz")
            await client.close()
            for (response, status, target) in [
                (recommendations, 404, "/v1/recommendations?seed_artists=0TnOYISbd1XYRBk9myaseg&limit=5"),
                (related, 404, "/v1/artists/0TnOYISbd1XYRBk9myaseg/related-artists"), (features, 403, "/v1/audio-features?ids=4OHNH3sDzIxnmUADXzv2kT"),
                (categoryPlaylists, 404, "/v1/browse/categories/party/playlists"),
            ] {
                let error = try JSONValue.parse(Data(response.body))["error"]
                #expect(response.status == status && error?["status"]?.int == status, "\(response.text)")
                let explained = RemovedEndpoint.removedIn2024(method: .GET, target: target)?.message
                #expect(error?["message"]?.string == (setting == .on ? explained.map { "\($0); \(RemovedEndpoint.modeNote(.on))" } : explained), "\(response.text)")
            }
            #expect(featuresHead.status == 403 && featuresHead.body.isEmpty)
            #expect(featuresHead.headers["content-length"] == [String(features.body.count)], "the HEAD announces its GET's length")
            #expect(artist.status == 200)
            // Its refusals are not stored: the HEAD asks Spotify again.
            #expect(removed == (setting == .on ? 0 : 5), "Spotify answered each, or none once development mode is known")
            if setting != .off { #expect(ready.text.contains(#""dev_mode":{"active":\#(setting == .on),"#), "\(ready.text)") }
        }
    }

    @Test("auto: Spotify's 403 on a removed endpoint is learned and explained; the next removed endpoints (of 2026 and 2024) are answered without Spotify, a batch assembled at once", arguments: [false, true])
    func removedEndpointAnswered(cacheOff: Bool) async throws {
        let topTracks = "/v1/artists/0TnOYISbd1XYRBk9myaseg/top-tracks?market=US"
        try await withProxy(configure: { if cacheOff { $0.cache.maxBytes = 0 } }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            let client = try await proxy.client()
            let start = proxy.fake.counters.apiRequests
            // A HEAD first: it teaches the mode as its GET would.
            let firstTarget = cacheOff ? "/v1/markets" : "/v1/browse/categories/party"
            try await client.send("HEAD \(firstTarget) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", method: .HEAD)
            let firstHead = try await client.response()
            let first = try await client.request("GET", firstTarget)
            let asked = proxy.fake.counters.apiRequests
            let ready = try await client.request("GET", "/readyz")
            let known = try await client.request("GET", topTracks)
            try await client.send("HEAD /v1/users/smedjan HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", method: .HEAD)
            let head = try await client.response()
            let related = try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg/related-artists")
            let afterRemoved = proxy.fake.counters.apiRequests
            let batch = try await client.request("GET", "/v1/tracks?ids=4OHNH3sDzIxnmUADXzv2kT")
            let end = proxy.fake.counters.apiRequests
            await client.close()
            #expect(firstHead.status == 403 && firstHead.body.isEmpty)
            #expect(firstHead.headers["content-length"] == [String(first.body.count)], "the HEAD announces its GET's length")
            #expect(first.status == 403)
            #expect(try JSONValue.parse(Data(first.body))["error"]?["message"]?.string == RemovedEndpoint.message(method: .GET, target: firstTarget, setting: .auto), "\(first.text)")
            #expect(asked - start == 1, "Spotify was asked once, for the HEAD")
            #expect(ready.text.contains(#""dev_mode":{"active":true,"#), "\(ready.text)")
            #expect(known.status == 403)
            #expect(try JSONValue.parse(Data(known.body))["error"]?["message"]?.string == RemovedEndpoint.message(method: .GET, target: topTracks, setting: .auto), "\(known.text)")
            #expect(head.status == 403 && head.body.isEmpty)
            // Removed for such apps in 2024 too: Spotify's status, and why the proxy answered.
            #expect(related.status == 404)
            #expect(
                try JSONValue.parse(Data(related.body))["error"]?["message"]?.string
                    == "\(RemovedEndpoint.removedIn2024(method: .GET, target: "/v1/artists/0TnOYISbd1XYRBk9myaseg/related-artists")?.message ?? "-"); \(RemovedEndpoint.modeNote(.auto))",
                "\(related.text)")
            #expect(afterRemoved == asked, "answered without Spotify once the mode is known")
            #expect(batch.status == 200)
            #expect(end - afterRemoved == 1, "the batch is assembled at once: one request for its one id")
        }
    }

    @Test("auto with an extended-quota app: the removed endpoints answer as Spotify answers them, and teach nothing", arguments: [false, true])
    func removedEndpointsExtended(cacheOff: Bool) async throws {
        let directory = try UserTokenTests.usersDirectory()
        let userReads = try ["GET /v1/users/alice-id", "GET /v1/recommendations"].map { try UserPathRule($0) }
        try await withProxy(configure: {
            if cacheOff { $0.cache.maxBytes = 0 }
            $0.users.directory = directory
            $0.users.userPaths += userReads
        }) { proxy in
            _ = try await UserTokenTests.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            let markets = try await client.request("GET", "/v1/markets")
            let user = try await client.request("GET", "/v1/users/smedjan")
            let asUser = try await client.request("GET", "/v1/users/alice-id")
            let removedAsUser = try await client.request("GET", "/v1/recommendations?seed_genres=rock")
            let releases = try await client.request("GET", "/v1/browse/new-releases?limit=2")
            let ready = try await client.request("GET", "/readyz")
            await client.close()
            #expect(markets.status == 200 && markets.text.contains(#""markets":["#))
            #expect(user.status == 200)
            // Through the cache to be looked at whole; with the cache off, not stored.
            #expect(user.headers["cache-status"].allSatisfy { !cacheOff || !$0.contains("stored") }, "\(user.headers)")
            #expect(try JSONValue.parse(Data(user.body))["href"]?.string == "http://127.0.0.1/v1/users/smedjan", "links rewritten as on any answer")
            // A user's request, not through the cache: only a refusal is held whole, a success streams.
            #expect(asUser.status == 200 && asUser.headers["content-length"].isEmpty && asUser.headers["transfer-encoding"] == ["chunked"], "\(asUser.headers)")
            #expect(try JSONValue.parse(Data(asUser.body))["href"]?.string == "http://127.0.0.1/v1/users/alice-id", "\(asUser.text)")
            // Removed for new apps in 2024: its 404 "Not Found" is held and explained.
            #expect(removedAsUser.status == 404, "\(removedAsUser.text)")
            #expect(
                try JSONValue.parse(Data(removedAsUser.body))["error"]?["message"]?.string
                    == RemovedEndpoint.removedIn2024(method: .GET, target: "/v1/recommendations")?.message, "\(removedAsUser.text)")
            #expect(releases.status == 200)
            #expect(try JSONValue.parse(Data(releases.body))["albums"]?["items"]?.array?.count == 2)
            #expect(ready.text.contains(#""dev_mode":{"active":false,"#), "\(ready.text)")
        }
    }

    @Test("a playlist's /tracks is asked as its /items for a development-mode app: reads, additions, reorderings and removals, limit at most 50", arguments: [
        (HTTPMethod.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks?limit=100&offset=0&additional_types=episode%2Ctrack",
         "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items?limit=50&offset=0&additional_types=episode%2Ctrack"),
        (.HEAD, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks/", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items"),
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks?limit=20", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items?limit=20"),
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks?limit=1%30%30", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items?limit=50"),
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks?fields=items(added_at,track(name))&limit=5",
         "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items?fields=items%28added_at%2Citem%28name%29%29&limit=5"),
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks?fields=total%2Climit", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items?fields=total%2Climit"),
        // A form's `+` is a space, and stays one.
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks?fields=items(track(name,+id))",
         "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items?fields=items%28item%28name%2C%20id%29%29"),
        (.POST, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks?uris=spotify:track:4OHNH3sDzIxnmUADXzv2kT", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items?uris=spotify:track:4OHNH3sDzIxnmUADXzv2kT"),
        (.PUT, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items"),
        (.DELETE, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items"),
        (.PATCH, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks", nil),
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n", nil),
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items", nil),
        (.GET, "/v1/playlists//tracks", nil),
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks/x", nil),
    ] as [(HTTPMethod, String, String?)])
    func playlistItemsTarget(_ method: HTTPMethod, _ target: String, _ items: String?) {
        #expect(RemovedEndpoint.playlistItems(method: method, target: target) == items)
    }

    @Test("a library write by type as Spotify's replacement, /v1/me/library?uris=…; none when the ids are not in the query, or not 1–40 ids", arguments: [
        (HTTPMethod.PUT, "/v1/me/tracks?ids=4OHNH3sDzIxnmUADXzv2kT%2C3n3Ppam7vgaVa1iaRUc9Lp", "spotify%3Atrack%3A4OHNH3sDzIxnmUADXzv2kT%2Cspotify%3Atrack%3A3n3Ppam7vgaVa1iaRUc9Lp"),
        (.DELETE, "/v1/me/albums/?ids=4aawyAB9vmqN3uQ7FjRGTy", "spotify%3Aalbum%3A4aawyAB9vmqN3uQ7FjRGTy"),
        (.DELETE, "/v1/me/shows?ids=5CfCWKI5pZ28U0uOzXkDHe&market=SE", "spotify%3Ashow%3A5CfCWKI5pZ28U0uOzXkDHe"),
        (.PUT, "/v1/me/following?type=artist&ids=0TnOYISbd1XYRBk9myaseg", "spotify%3Aartist%3A0TnOYISbd1XYRBk9myaseg"),
        (.DELETE, "/v1/me/following?ids=alice-id,smedjan&type=user", "spotify%3Auser%3Aalice-id%2Cspotify%3Auser%3Asmedjan"),
        (.PUT, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/followers", "spotify%3Aplaylist%3A3cEYpjA9oz9GiPac4AsH4n"),
        (.DELETE, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/followers/", "spotify%3Aplaylist%3A3cEYpjA9oz9GiPac4AsH4n"),
        (.PUT, "/v1/me/tracks", nil),
        (.PUT, "/v1/me/tracks?ids=", nil),
        (.PUT, "/v1/me/tracks?ids=a,,b", nil),
        (.PUT, "/v1/me/tracks?ids=spotify:track:4OHNH3sDzIxnmUADXzv2kT", nil),
        (.PUT, "/v1/me/tracks?ids=" + Array(repeating: "4OHNH3sDzIxnmUADXzv2kT", count: 41).joined(separator: ","), nil),
        (.PUT, "/v1/me/following?type=playlist&ids=3cEYpjA9oz9GiPac4AsH4n", nil),
        (.PUT, "/v1/me/tracks?ids=4OHNH3sDzIxnmUADXzv2kT&ids=3n3Ppam7vgaVa1iaRUc9Lp", nil),
        (.PUT, "/v1/me/following?type=user&ids=a+b", nil),
        (.GET, "/v1/me/tracks?ids=4OHNH3sDzIxnmUADXzv2kT", nil),
        (.PUT, "/v1/me/library?uris=spotify:track:4OHNH3sDzIxnmUADXzv2kT", nil),
        (.PUT, "/v1/me/player/play", nil),
        (.PUT, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n", nil),
    ] as [(HTTPMethod, String, String?)])
    func libraryTarget(_ method: HTTPMethod, _ target: String, _ uris: String?) {
        #expect(RemovedEndpoint.libraryTarget(method: method, target: target) == uris.map { "/v1/me/library?uris=\($0)" })
    }

    @Test("a library check by type as Spotify's replacement, /v1/me/library/contains?uris=…; a playlist's only for the logged-in user", arguments: [
        (HTTPMethod.GET, "/v1/me/tracks/contains?ids=4OHNH3sDzIxnmUADXzv2kT,3n3Ppam7vgaVa1iaRUc9Lp", "spotify%3Atrack%3A4OHNH3sDzIxnmUADXzv2kT%2Cspotify%3Atrack%3A3n3Ppam7vgaVa1iaRUc9Lp"),
        (.HEAD, "/v1/me/albums/contains/?ids=4aawyAB9vmqN3uQ7FjRGTy", "spotify%3Aalbum%3A4aawyAB9vmqN3uQ7FjRGTy"),
        (.GET, "/v1/me/episodes/contains?ids=512ojhOuo1ktJprKbVcKyQ", "spotify%3Aepisode%3A512ojhOuo1ktJprKbVcKyQ"),
        (.GET, "/v1/me/following/contains?type=artist&ids=0TnOYISbd1XYRBk9myaseg", "spotify%3Aartist%3A0TnOYISbd1XYRBk9myaseg"),
        (.GET, "/v1/me/following/contains?type=user&ids=smedjan", "spotify%3Auser%3Asmedjan"),
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/followers/contains", "spotify%3Aplaylist%3A3cEYpjA9oz9GiPac4AsH4n"),
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/followers/contains?ids=alice-id", "spotify%3Aplaylist%3A3cEYpjA9oz9GiPac4AsH4n"),
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/followers/contains?ids=alice-id,bob", nil),
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/followers/contains?ids=bob", nil),
        (.GET, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/followers/contains?ids=alice-id&ids=bob", nil),
        (.GET, "/v1/me/tracks/contains", nil),
        (.GET, "/v1/me/tracks/contains?ids=", nil),
        (.GET, "/v1/me/following/contains?ids=0TnOYISbd1XYRBk9myaseg", nil),
        (.GET, "/v1/me/tracks/contains?ids=" + Array(repeating: "4OHNH3sDzIxnmUADXzv2kT", count: 41).joined(separator: ","), nil),
        (.GET, "/v1/me/library/contains?uris=spotify:track:4OHNH3sDzIxnmUADXzv2kT", nil),
        (.GET, "/v1/me/tracks?ids=4OHNH3sDzIxnmUADXzv2kT", nil),
        (.POST, "/v1/me/tracks/contains?ids=4OHNH3sDzIxnmUADXzv2kT", nil),
        (.PUT, "/v1/me/tracks/contains?ids=4OHNH3sDzIxnmUADXzv2kT", nil),
        (.GET, "/v1/artists/0TnOYISbd1XYRBk9myaseg", nil),
    ] as [(HTTPMethod, String, String?)])
    func libraryCheckTarget(_ method: HTTPMethod, _ target: String, _ uris: String?) {
        // The request carries alice-id's token.
        #expect(RemovedEndpoint.libraryTarget(method: method, target: target, userID: "alice-id") == uris.map { "/v1/me/library/contains?uris=\($0)" })
        if target.hasSuffix("?ids=bob") {
            #expect(RemovedEndpoint.libraryTarget(method: method, target: target) != nil, "a user whose id is not known is taken to be the one named")
        }
    }

    @Test("a replaced endpoint goes to its replacement before development mode is known only when request and answer are the same there (a /tracks addition); the others once it is known", arguments: [
        (HTTPMethod.PUT, "/v1/me/tracks?ids=4OHNH3sDzIxnmUADXzv2kT", "/v1/me/library?uris=spotify%3Atrack%3A4OHNH3sDzIxnmUADXzv2kT", false),
        (.PUT, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/followers", "/v1/me/library?uris=spotify%3Aplaylist%3A3cEYpjA9oz9GiPac4AsH4n", false),
        (.DELETE, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items", false),
        (.POST, "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items", true),
    ] as [(HTTPMethod, String, String, Bool)])
    func replacementWhen(_ method: HTTPMethod, _ target: String, _ replaced: String, _ always: Bool) {
        func decided(_ setting: DevModeSetting) -> ProxyRequest {
            var request = ProxyRequest(head: HTTPRequestHead(version: .http1_1, method: method, uri: target))
            request.credential = .user("alice")
            _ = DevModeStage(devMode: DevMode(setting: setting), users: RequestStagesTests.NoUsers()).decide(&request)
            return request
        }
        #expect(decided(.on).target == replaced)
        let before = decided(.auto)
        #expect(before.target == (always ? replaced : target))
        // Sent as it came: held whole, so that Spotify's refusal can send it to its replacement.
        #expect(before.transform == (always ? nil : .refusal))
        #expect(decided(.off).target == target)
    }

    @Test("library writes by type (tekore 6's saved_tracks_add, follow, playlist_follow): before development mode is known they go as sent, and Spotify's refusal sends the first to /v1/me/library, the next ones go there at once; one with its ids in the body is explained; an extended-quota app's go as sent", arguments: [true, false])
    func libraryWrites(developmentMode: Bool) async throws {
        let directory = try UserTokenTests.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }, prepareFake: { $0.setDevelopmentMode(developmentMode) }) { proxy in
            _ = try await UserTokenTests.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            func asked(_ method: String, _ target: String, body: String? = nil) async throws -> (RawHTTPClient.Response, Int) {
                let start = proxy.fake.counters.apiRequests
                let answer = try await client.request(method, target, body: body.map { Array($0.utf8) })
                return (answer, proxy.fake.counters.apiRequests - start)
            }
            let saved = try await asked("PUT", "/v1/me/tracks?ids=4OHNH3sDzIxnmUADXzv2kT%2C3n3Ppam7vgaVa1iaRUc9Lp")
            let ready = try await client.request("GET", "/readyz")
            let unsaved = try await asked("DELETE", "/v1/me/albums?ids=4aawyAB9vmqN3uQ7FjRGTy")
            let followed = try await asked("PUT", "/v1/me/following?type=artist&ids=0TnOYISbd1XYRBk9myaseg")
            let playlist = try await asked("PUT", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/followers", body: #"{"public":true}"#)
            let inBody = try await asked("PUT", "/v1/me/tracks", body: #"{"ids":["4OHNH3sDzIxnmUADXzv2kT"]}"#)
            await client.close()
            for (answer, _) in [saved, unsaved, followed, playlist] { #expect(answer.status == 200, "\(answer.text)") }
            #expect(ready.text.contains(#""dev_mode":{"active":\#(developmentMode),"#), "\(ready.text)")
            #expect(saved.1 == (developmentMode ? 2 : 1), "refused, then /v1/me/library")
            #expect(unsaved.1 == 1 && followed.1 == 1 && playlist.1 == 1)
            if developmentMode {
                #expect(inBody.0.status == 403 && inBody.1 == 0, "answered by the proxy once the mode is known: \(inBody.0.text)")
                #expect(try JSONValue.parse(Data(inBody.0.body))["error"]?["message"]?.string == RemovedEndpoint.message(method: .PUT, target: "/v1/me/tracks", setting: .auto))
            } else {
                #expect(inBody.0.status == 200 && inBody.1 == 1, "\(inBody.0.text)")
            }
        }
    }

    @Test("library checks by type (tekore 6's saved_tracks_contains, artists_followed_contains, playlist_is_following): before development mode is known Spotify's refusal sends the first to /v1/me/library/contains, the next go there at once; an extended-quota app's go as sent; the fake's /v1/me as for such an app", arguments: [true, false])
    func libraryChecks(developmentMode: Bool) async throws {
        let directory = try UserTokenTests.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }, prepareFake: { $0.setDevelopmentMode(developmentMode) }) { proxy in
            _ = try await UserTokenTests.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            func asked(_ method: String, _ target: String) async throws -> (answer: RawHTTPClient.Response, upstream: Int) {
                let start = proxy.fake.counters.apiRequests
                let answer = try await client.request(method, target)
                return (answer, proxy.fake.counters.apiRequests - start)
            }
            // Saved and followed through /v1/me/library, which every app has.
            for uri in ["spotify:track:4OHNH3sDzIxnmUADXzv2kT", "spotify:artist:0TnOYISbd1XYRBk9myaseg", "spotify:playlist:3cEYpjA9oz9GiPac4AsH4n"] {
                #expect(try await client.request("PUT", "/v1/me/library?uris=\(uri)").status == 200)
            }
            let tracks = try await asked("GET", "/v1/me/tracks/contains?ids=4OHNH3sDzIxnmUADXzv2kT,3n3Ppam7vgaVa1iaRUc9Lp")
            let artists = try await asked("GET", "/v1/me/following/contains?type=artist&ids=0TnOYISbd1XYRBk9myaseg")
            let playlist = try await asked("GET", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/followers/contains?ids=alice-id")
            let otherUser = try await asked("GET", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/followers/contains?ids=bob-id")
            let albums = try await asked("GET", "/v1/me/albums/contains/?ids=4aawyAB9vmqN3uQ7FjRGTy")
            let unsendable = try await asked("GET", "/v1/me/tracks/contains?ids=a,,b")
            let me = try JSONValue.parse(Data(try await client.request("GET", "/v1/me").body))
            await client.close()
            // The user object's fields Spotify removed for such apps (facts sheet: February 2026).
            // (`email` only with `user-read-email`, which the default scopes do not ask for.)
            for field in ["country", "explicit_content", "followers", "product"] {
                #expect((me[field] == nil) == developmentMode, "\(field)")
            }
            #expect(me["email"] == nil)
            #expect(me["account_id"] != nil && me["id"]?.string == "alice-id")
            #expect(tracks.answer.status == 200 && tracks.answer.text == "[true,false]", "\(tracks.answer.text)")
            #expect(tracks.upstream == (developmentMode ? 2 : 1), "refused, then /v1/me/library/contains")
            #expect(artists.answer.text == "[true]" && artists.upstream == 1, "\(artists.answer.text)")
            #expect(playlist.answer.text == "[true]" && playlist.upstream == 1, "\(playlist.answer.text)")
            if developmentMode {
                #expect(otherUser.answer.status == 403 && otherUser.upstream == 0, "not answered as alice's: \(otherUser.answer.text)")
                #expect(otherUser.answer.text.contains("a user other than the logged-in one"), "\(otherUser.answer.text)")
            } else {
                #expect(otherUser.answer.text == "[false]" && otherUser.upstream == 1, "as sent: \(otherUser.answer.text)")
            }
            #expect(albums.answer.text == "[false]" && albums.upstream == 1, "\(albums.answer.text)")
            if developmentMode {
                #expect(unsendable.answer.status == 400 && unsendable.upstream == 0, "answered by the proxy once the mode is known, the client's to fix: \(unsendable.answer.text)")
                #expect(unsendable.answer.text.contains("its ids are not all Spotify ids"), "\(unsendable.answer.text)")
            } else {
                #expect(unsendable.answer.text == "[false,false,false]" && unsendable.upstream == 1, "as sent: \(unsendable.answer.text)")
            }
        }
    }

    @Test("the logged-in user's own playlists by its id are asked as /v1/me/playlists with its token (private ones too): once development mode is known at once, before it after Spotify's refusal; another user's are explained", arguments: [DevModeSetting.on, .auto])
    func ownPlaylistsByID(setting: DevModeSetting) async throws {
        let directory = try UserTokenTests.usersDirectory()
        try await withProxy(configure: { $0.devMode = setting; $0.users.directory = directory }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            _ = try await UserTokenTests.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            let created = try await client.request("POST", "/v1/me/playlists", body: Array(#"{"name":"Secret","public":false}"#.utf8))
            let start = proxy.fake.counters.apiRequests
            let own = try await client.request("GET", "/v1/users/alice-id/playlists?limit=5")
            let asked = proxy.fake.counters.apiRequests - start
            let others = try await client.request("GET", "/v1/users/bob-id/playlists")
            await client.close()
            #expect(created.status == 201)
            let list = try JSONValue.parse(Data(own.body))
            #expect(own.status == 200 && asked == (setting == .on ? 1 : 2), "\(own.text)")
            #expect(list["items"]?.array?.map { $0["name"]?.string } == ["Secret"] && list["limit"]?.int == 5, "\(own.text)")
            #expect(others.status == 403 && others.text.contains("GET /v1/me/playlists lists the logged-in user's own"), "\(others.text)")
        }
    }

    @Test("the own playlists by id, re-planned after the refusal that taught the mode, ask the governor again for a slot: held within max_wait and answered, or the proxy's 429 past it", arguments: [
        (19, 200),  // one slot every 1.6 s: held, then asked as /v1/me/playlists
        (2, 429),  // one slot every 15 s, more than max_wait: refused
    ])
    func ownPlaylistsAdmittedAgain(budget: Int, status: Int) async throws {
        let directory = try UserTokenTests.usersDirectory()
        try await withProxy(configure: {
            $0.devMode = .auto
            $0.users.directory = directory
            $0.governor.budget = budget
            $0.governor.maxWait = .seconds(5)
        }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            _ = try await UserTokenTests.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            let start = proxy.fake.counters.apiRequests
            let own = try await client.request("GET", "/v1/users/alice-id/playlists")
            let asked = proxy.fake.counters.apiRequests - start
            let metrics = try await client.request("GET", "/metrics")
            await client.close()
            #expect(own.status == status, "\(own.text)")
            if status == 200 {
                let href = try JSONValue.parse(Data(own.body))["href"]?.string
                #expect(asked == 2 && href?.contains("/v1/me/playlists") == true, "\(own.text)")
            } else {
                #expect(asked == 1, "the refusal taught the mode; the re-planned request did not go")
                #expect(own.text.contains("the proxy paces Spotify requests to its [governor] budget of 2 per 30 s") && own.headers["retry-after"].count == 1, "\(own.text)")
                #expect(metrics.text.contains(#"spotify_proxy_rate_limited_answers_total{reason="budget"} 1"#))
            }
        }
    }

    @Test("the own playlists by id take the user /v1/me/playlists would: a rule's user, the header's, none where user_paths give /v1/me/playlists the app's token")
    func ownPlaylistsUser() {
        struct TwoUsers: UserDirectory {
            func resolve(_ requested: String?) -> UserResolution { requested.map { .user($0) } ?? .user("alice") }
            func spotifyUserID(of label: String) -> String? { label + "-id" }
        }
        func decided(_ headers: [(String, String)] = [], credential: Credential = .app, rules: [UserPathRule] = UserPathRule.defaults) -> ProxyRequest {
            var request = ProxyRequest(head: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/v1/users/alice-id/playlists", headers: HTTPHeaders(headers)))
            request.credential = credential
            _ = DevModeStage(devMode: DevMode(setting: .on), users: TwoUsers(), userPaths: rules).decide(&request)
            return request
        }
        let own = decided()
        #expect(own.target == "/v1/me/playlists" && own.credential == .user("alice"))
        #expect(decided([("X-Spotify-User", "bob")]).target == "/v1/users/alice-id/playlists", "bob's id is not alice-id: refused")
        #expect(decided([("X-Spotify-User", "a"), ("X-Spotify-User", "b")]).target == "/v1/users/alice-id/playlists", "a header the token choice refuses")
        #expect(decided(rules: []).target == "/v1/users/alice-id/playlists", "no user token for /v1/me/playlists")
        #expect(decided(credential: .user("alice"), rules: []).credential == .user("alice"), "a rule chose the user already")
        #expect(decided(credential: .user("alice"), rules: []).target == "/v1/me/playlists")
    }

    @Test("several users logged in, no default, none named: the own playlists by id go to the one user whose Spotify id the path names; an id none or two have stays refused")
    func ownPlaylistsAmongSeveralUsers() {
        struct Users: UserDirectory {
            let ids: [String: String]
            func resolve(_ requested: String?) -> UserResolution {
                requested.map { self.ids[$0] == nil ? .unknown($0) : .user($0) } ?? .ambiguous(self.ids.keys.sorted())
            }
            func spotifyUserID(of label: String) -> String? { self.ids[label] }
        }
        func decided(_ owner: String, _ ids: [String: String]) -> ProxyRequest {
            var request = ProxyRequest(head: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/v1/users/\(owner)/playlists?limit=5", headers: HTTPHeaders()))
            _ = DevModeStage(devMode: DevMode(setting: .on), users: Users(ids: ids)).decide(&request)
            return request
        }
        let bob = decided("bob-id", ["alice": "alice-id", "bob": "bob-id", "carol": "carol-id"])
        #expect(bob.target == "/v1/me/playlists?limit=5" && bob.credential == .user("bob"))
        #expect(decided("dave-id", ["alice": "alice-id", "bob": "bob-id"]).target == "/v1/users/dave-id/playlists?limit=5")
        let twice = decided("same-id", ["alice": "same-id", "bob": "same-id"])
        #expect(twice.target == "/v1/users/same-id/playlists?limit=5" && twice.credential == .app)
    }

    @Test("library writes need their scopes, by the kind of each URI, as Spotify's spec names them: 403 \"Insufficient client scope\" without")
    func libraryScopes() async throws {
        try await UserTokenTests.withAlice(lacking: "user-follow-modify") { client in
            let saved = try await client.request("PUT", "/v1/me/library?uris=spotify%3Atrack%3A3n3Ppam7vgaVa1iaRUc9Lp")
            let followed = try await client.request("PUT", "/v1/me/library?uris=spotify%3Atrack%3A3n3Ppam7vgaVa1iaRUc9Lp%2Cspotify%3Aartist%3A0TnOYISbd1XYRBk9myaseg")
            let byType = try await client.request("PUT", "/v1/me/following?type=artist&ids=0TnOYISbd1XYRBk9myaseg")
            #expect(saved.status == 200, "\(saved.text)")
            for refused in [followed, byType] {
                #expect(refused.status == 403 && refused.text.contains("Insufficient client scope"), "\(refused.text)")
            }
        }
    }

    @Test("a removal's body for /items: its top-level key tracks becomes items, in place; a body without one is left", arguments: [
        (#"{"tracks":[{"uri":"spotify:track:x"}]}"#, #"{"items" :[{"uri":"spotify:track:x"}]}"#),
        (" \n{ \"tracks\": [], \"snapshot_id\": \"s\"}", " \n{ \"items\" : [], \"snapshot_id\": \"s\"}"),
        (#"{"snapshot_id":"s","tracks":[]}"#, #"{"snapshot_id":"s","items" :[]}"#),
        (#"{"a":"tracks","b":{"tracks":1},"c":["tracks"],"d":"x\"tracks\":","tracks" :[]}"#, #"{"a":"tracks","b":{"tracks":1},"c":["tracks"],"d":"x\"tracks\":","items"  :[]}"#),
        (#"{"items":[]}"#, nil), (#"{"trac"#, nil), ("", nil), (#"["tracks"]"#, nil), (#"{"a":1}{"tracks":[]}"#, nil), (#"{"tracks""#, nil),
    ] as [(String, String?)])
    func tracksKeyAsItems(_ body: String, _ edited: String?) {
        var part = ByteBuffer(string: "xx" + body)
        part.moveReaderIndex(forwardBy: 2)
        let out = RequestBodyEdit.tracksKeyAsItems.edited(first: part)
        #expect(out.map { String(buffer: $0) } == edited)
        #expect(out.map { $0.readableBytes } ?? part.readableBytes == part.readableBytes)
    }

    @Test("a /tracks page's fields filter for /items: each entry's track named item, nothing else", arguments: [
        ("items(added_at,track(name,href,album(name,href)))", "items(added_at,item(name,href,album(name,href)))"),
        ("items.track.name,total", "items.item.name,total"),
        ("total,items(track(track,name),added_by.id)", "total,items(item(track,name),added_by.id)"),
        ("href,limit,next", "href,limit,next"), ("items(added_by.id)", "items(added_by.id)"), ("track,items", "track,items"),
        ("tracks.items(track(name))", "tracks.items(track(name))"), ("items(track", "items(item"), ("items)),track", "items)),track"),
        ("items(added_at,!track)", "items(added_at,!item)"), ("items(added_at, track(name, id))", "items(added_at, item(name, id))"),
        ("items(! track)", "items(! item)"), ("", ""), ("()", "()"),
    ])
    func itemsFields(_ fields: String, _ items: String) {
        #expect(RemovedEndpoint.itemsFields(fields) == items)
    }

    @Test("an /items page in /tracks' shape: each entry's item is its track, the links go on to /tracks; an error passes")
    func playlistTracksTransform() throws {
        let body = #"{"href":"https://api.spotify.com/v1/playlists/p1/items?offset=0&limit=2","items":[{"added_at":"2026-03-01T00:00:00Z","is_local":false,"item":{"id":"t1","type":"track"}},{"item":null}],"limit":2,"next":"https://api.spotify.com/v1/playlists/p1/items?offset=2&limit=2","offset":0,"previous":null,"total":3}"#
        let (status, headers, out) = ResponseTransform.playlistTracks.apply(
            status: 200, headers: HTTPHeaders([("Content-Type", "application/json"), ("ETag", "\"x\"")]), body: Array(body.utf8))
        let page = try JSONValue.parse(Data(out))
        #expect(status == 200 && headers["etag"].isEmpty)
        #expect(page["items"]?.array?.map { $0["track"]?["id"]?.string } == ["t1", nil])
        #expect(page["items"]?.array?.allSatisfy { $0["item"] == nil } == true)
        #expect(page["items"]?.array?.first?["added_at"]?.string == "2026-03-01T00:00:00Z")
        #expect(page["href"]?.string == "https://api.spotify.com/v1/playlists/p1/tracks?offset=0&limit=2")
        #expect(page["next"]?.string == "https://api.spotify.com/v1/playlists/p1/tracks?offset=2&limit=2" && page["previous"] == .null)
        let error = Array(#"{"error":{"status":404,"message":"Resource not found"}}"#.utf8)
        #expect(ResponseTransform.playlistTracks.apply(status: 404, headers: [:], body: error).2 == error)
    }

    @Test("auto, before the mode is known: the logged-in user's own playlist_create goes as POST /v1/me/playlists; another's gets Spotify's bare 403 \"Forbidden\" explained, which teaches the mode, and the next one is answered without Spotify", arguments: [false, true])
    func removedWriteExplained(keepAlive: Bool) async throws {
        let directory = try UserTokenTests.usersDirectory()
        let others = "/v1/users/bob-id/playlists"
        try await withProxy(configure: { $0.users.directory = directory }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            _ = try await UserTokenTests.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            let body = Array(#"{"name":"Road trip"}"#.utf8)
            let own = try await client.request("POST", "/v1/users/alice-id/playlists", body: body)
            let unknown = try await client.request("GET", "/readyz")
            let first = try await client.request("POST", others, headers: keepAlive ? [] : [("Connection", "close")], body: body)
            let again = keepAlive ? client : try await proxy.client()
            let asked = proxy.fake.counters.apiRequests
            let second = try await again.request("POST", others, body: body)
            let ready = try await again.request("GET", "/readyz")
            let secondAsked = proxy.fake.counters.apiRequests - asked
            await client.close()
            await again.close()
            let owner = try JSONValue.parse(Data(own.body))["owner"]?["id"]?.string
            #expect(own.status == 201 && owner == "alice-id", "\(own.text)")
            #expect(unknown.text.contains(#""dev_mode":{"active":false,"#), "a translated write teaches nothing: \(unknown.text)")
            #expect(first.status == 403, "\(first.text)")
            #expect(try JSONValue.parse(Data(first.body))["error"]?["message"]?.string == RemovedEndpoint.message(method: .POST, target: others, setting: .auto))
            #expect(first.headers["connection"] == (keepAlive ? [] : ["close"]), "\(first.headers)")
            #expect(second.status == 403 && secondAsked == 0, "\(second.text)")
            #expect(ready.text.contains(#""dev_mode":{"active":true,"#), "\(ready.text)")
        }
    }

    /// A playlist of the logged-in user's own, made through the proxy (a development-mode app
    /// reads the items of those only): its path.
    static func ownPlaylist(_ client: RawHTTPClient) async throws -> String {
        let made = try await client.request("POST", "/v1/me/playlists", body: Array(#"{"name":"Mine"}"#.utf8))
        let id = try #require(try JSONValue.parse(Data(made.body))["id"]?.string, "\(made.text)")
        return "/v1/playlists/\(id)"
    }

    @Test("a /tracks read's fields filter reaches Spotify's /items as that page names its fields, and the answer holds what the client selected, in /tracks' shape")
    func tracksFields() async throws {
        let directory = try UserTokenTests.usersDirectory()
        try await withProxy(configure: { $0.devMode = .on; $0.users.directory = directory }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            _ = try await UserTokenTests.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            let playlist = try await Self.ownPlaylist(client)
            let added = try await client.request("POST", "\(playlist)/tracks", body: Array(#"{"uris":["spotify:track:3twNvmDtFQtAd5gMKedhLD"]}"#.utf8))
            let page = try await client.request("GET", "\(playlist)/tracks?fields=items(added_by.id,track(name,album(!available_markets,name))),total")
            await client.close()
            #expect(added.status == 201)
            let answer = try JSONValue.parse(Data(page.body))
            let entry = answer["items"]?.array?.first
            #expect(page.status == 200 && answer["total"]?.int == 1, "\(page.text)")
            #expect(entry == .object(["added_by": .object(["id": .string("alice-id")]), "track": .object(["name": .string("Somebody Told Me"), "album": .object(["name": .string("Hot Fuss (Deluxe Version)")])])]), "\(page.text)")
        }
    }

    @Test("auto, before the mode is known: a playlist's /tracks read refused as a development-mode app's is asked again as /items and answered in /tracks' shape; an addition goes as /items at once")
    func firstTracksRead() async throws {
        let directory = try UserTokenTests.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            _ = try await UserTokenTests.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            let playlist = try await Self.ownPlaylist(client)
            let added = try await client.request("POST", "\(playlist)/tracks", body: Array(#"{"uris":["spotify:track:4OHNH3sDzIxnmUADXzv2kT"]}"#.utf8))
            let unknown = try await client.request("GET", "/readyz")
            let start = proxy.fake.counters.apiRequests
            let page = try await client.request("GET", "\(playlist)/tracks?limit=100")
            let asked = proxy.fake.counters.apiRequests - start
            let ready = try await client.request("GET", "/readyz")
            await client.close()
            #expect(added.status == 201 && added.text.contains("snapshot_id"), "\(added.text)")
            #expect(unknown.text.contains(#""dev_mode":{"active":false,"#), "\(unknown.text)")
            #expect(page.status == 200, "\(page.text)")
            #expect(try JSONValue.parse(Data(page.body))["href"]?.string == "http://127.0.0.1\(playlist)/tracks?offset=0&limit=50", "\(page.text)")
            #expect(asked == 2, "the refused /tracks, then /items with alice's token (her playlist's items)")
            #expect(ready.text.contains(#""dev_mode":{"active":true,"#), "\(ready.text)")
        }
    }

    @Test("auto, before the mode is known: a removal (tekore's playlist_remove) and a user's read of a playlist's /tracks refused as a development-mode app's are sent again as /items; a removal whose body names no tracks gets the refusal explained", arguments: [false, true])
    func firstTracksRemoval(userRead: Bool) async throws {
        let directory = try UserTokenTests.usersDirectory()
        let rule = try UserPathRule("GET /v1/playlists/{id}/tracks")
        try await withProxy(configure: { $0.users.directory = directory; $0.users.userPaths.append(rule) }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            _ = try await UserTokenTests.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            let playlist = try await Self.ownPlaylist(client)
            let start = proxy.fake.counters.apiRequests
            let first: RawHTTPClient.Response
            if userRead {
                first = try await client.request("GET", "\(playlist)/tracks?limit=100")
            } else {
                // Keys sorted (snapshot_id first), as a client may send them.
                first = try await client.request(
                    "DELETE", "\(playlist)/tracks", body: Array(#"{"snapshot_id":"s","tracks":[{"uri":"spotify:track:4OHNH3sDzIxnmUADXzv2kT"}]}"#.utf8))
            }
            let asked = proxy.fake.counters.apiRequests - start
            let ready = try await client.request("GET", "/readyz")
            await client.close()
            if userRead {
                #expect(first.status == 200, "\(first.text)")
                #expect(try JSONValue.parse(Data(first.body))["href"]?.string == "http://127.0.0.1\(playlist)/tracks?offset=0&limit=50", "\(first.text)")
            } else {
                #expect(first.status == 200 && first.text.contains("snapshot_id"), "\(first.text)")
            }
            #expect(asked == 2, "the refused /tracks, then /items")
            #expect(ready.text.contains(#""dev_mode":{"active":true,"#), "\(ready.text)")
            let lines = proxy.logs.all.filter { $0.contains("status=") && $0.contains("path=\(playlist)/tracks") }
            #expect(lines.count == 1 && lines.first?.contains("status=200") == true, "one line, for the answer given: \(proxy.logs.all)")
        }
        // A body the edit cannot change (no top-level tracks) is not sent again.
        let playlist = "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n"
        let another = try UserTokenTests.usersDirectory()
        try await withProxy(configure: { $0.users.directory = another }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            _ = try await UserTokenTests.login("alice", as: "alice-id", fake: proxy.fake, users: another)
            let client = try await proxy.client()
            let start = proxy.fake.counters.apiRequests
            let refused = try await client.request("DELETE", "\(playlist)/tracks", body: Array(#"{"uris":["spotify:track:4OHNH3sDzIxnmUADXzv2kT"]}"#.utf8))
            let asked = proxy.fake.counters.apiRequests - start
            await client.close()
            #expect(refused.status == 403 && asked == 1, "\(refused.text)")
            #expect(try JSONValue.parse(Data(refused.body))["error"]?["message"]?.string == RemovedEndpoint.message(method: .DELETE, target: "\(playlist)/tracks", setting: .auto))
        }
    }

    @Test("auto: a user's GET of an endpoint removed for development-mode apps: Spotify's bare 403 \"Forbidden\" is explained and teaches the mode")
    func removedUserReadExplained() async throws {
        let directory = try UserTokenTests.usersDirectory()
        let target = "/v1/users/smedjan"
        let userRead = try UserPathRule("GET \(target)")
        try await withProxy(configure: { $0.users.directory = directory; $0.users.userPaths.append(userRead) }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            _ = try await UserTokenTests.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            let refused = try await client.request("GET", target)
            let ready = try await client.request("GET", "/readyz")
            await client.close()
            #expect(refused.status == 403, "\(refused.text)")
            #expect(try JSONValue.parse(Data(refused.body))["error"]?["message"]?.string == RemovedEndpoint.message(method: .GET, target: target, setting: .auto))
            #expect(ready.text.contains(#""dev_mode":{"active":true,"#), "\(ready.text)")
        }
    }

    @Test("development mode known: a playlist's items (its /items, or its /tracks asked so) are read with the current user's token, as Spotify lists them only for that user's own playlists; with no user, or another's playlist, its refusal is explained")
    func playlistItemsWithUserToken() async throws {
        let directory = try UserTokenTests.usersDirectory()
        try await withProxy(configure: { $0.devMode = .on; $0.users.directory = directory }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            let client = try await proxy.client()
            // Nobody logged in: the app's token, which Spotify refuses; said at once, why, and what to do.
            let before = proxy.fake.counters.apiRequests
            let nobody = try await client.request("GET", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items")
            #expect(nobody.status == 403 && proxy.fake.counters.apiRequests == before, "\(nobody.text)")
            #expect(
                try JSONValue.parse(Data(nobody.body))["error"]?["message"]?.string
                    == RemovedEndpoint.playlistItemsRestriction(user: nil, viaKey: false, setting: .on).message, "\(nobody.text)")
            _ = try await UserTokenTests.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let playlist = try await Self.ownPlaylist(client)
            let start = proxy.fake.counters.apiRequests
            let tracks = try await client.request("GET", "\(playlist)/tracks?limit=100")
            let items = try await client.request("GET", "\(playlist)/items?limit=50")
            try await client.send("HEAD \(playlist)/items HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", method: .HEAD)
            let head = try await client.response()
            let asked = proxy.fake.counters.apiRequests - start
            // Another's playlist: alice's token, refused, explained, as /items and as /tracks.
            let others = try await client.request("GET", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items")
            let othersTracks = try await client.request("GET", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/tracks")
            await client.close()
            #expect(othersTracks.status == 403 && othersTracks.text == others.text, "\(othersTracks.text)")
            #expect(tracks.status == 200 && items.status == 200 && head.status == 200, "\(tracks.text) \(items.text)")
            #expect(try JSONValue.parse(Data(tracks.body))["href"]?.string == "http://127.0.0.1\(playlist)/tracks?offset=0&limit=50", "\(tracks.text)")
            #expect(try JSONValue.parse(Data(items.body))["href"]?.string == "http://127.0.0.1\(playlist)/items?offset=0&limit=50", "\(items.text)")
            // A user's answers are never the shared cache's.
            #expect(tracks.headers["cache-status"].isEmpty && items.headers["cache-status"].isEmpty, "\(tracks.headers)")
            #expect(asked == 3)
            #expect(others.status == 403, "\(others.text)")
            #expect(
                try JSONValue.parse(Data(others.body))["error"]?["message"]?.string
                    == RemovedEndpoint.playlistItemsRestriction(user: "alice", viaKey: false, setting: .on).message, "\(others.text)")
        }
    }

    @Test("auto, before the mode is known: a playlist's /items read refused for the app's token is asked again at once with the current user's token; another's playlist's refusal is explained; neither teaches the mode (an extended-quota app may meet a 403 on one playlist)")
    func firstItemsRead() async throws {
        let directory = try UserTokenTests.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            _ = try await UserTokenTests.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            let others = try await client.request("GET", "/v1/playlists/3cEYpjA9oz9GiPac4AsH4n/items")
            let playlist = try await Self.ownPlaylist(client)
            let start = proxy.fake.counters.apiRequests
            let page = try await client.request("GET", "\(playlist)/items")
            let asked = proxy.fake.counters.apiRequests - start
            let ready = try await client.request("GET", "/readyz")
            await client.close()
            #expect(others.status == 403, "\(others.text)")
            #expect(
                try JSONValue.parse(Data(others.body))["error"]?["message"]?.string
                    == RemovedEndpoint.playlistItemsRestriction(user: "alice", viaKey: false, setting: .auto).message, "\(others.text)")
            #expect(page.status == 200, "\(page.text)")
            #expect(asked == 2, "the app's token refused, then alice's")
            #expect(ready.text.contains(#""dev_mode":{"active":false,"#), "\(ready.text)")
        }
    }

    @Test("the owner of a /v1/users/{id}/playlists target", arguments: [
        ("/v1/users/alice-id/playlists", "alice-id"), ("/v1/users/a%20b/playlists/?x=1", "a b"), ("/v1/users/alice-id", nil),
        ("/v1/users//playlists", nil), ("/v1/users/alice-id/playlists/x", nil), ("/v1/me/playlists", nil),
    ] as [(String, String?)])
    func playlistOwner(_ target: String, _ owner: String?) {
        #expect(RemovedEndpoint.playlistOwner(target: target) == owner)
    }

    @Test("development mode known: tekore's /tracks reads, additions and removals work, asked of Spotify as /items; its playlist_create for the logged-in user as POST /v1/me/playlists")
    func playlistTracksAsItems() async throws {
        let directory = try UserTokenTests.usersDirectory()
        try await withProxy(configure: { $0.devMode = .on; $0.users.directory = directory }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            _ = try await UserTokenTests.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            let playlist = String(try await Self.ownPlaylist(client).dropFirst("/v1/playlists/".count))
            let start = proxy.fake.counters.apiRequests
            let page = try await client.request("GET", "/v1/playlists/\(playlist)/tracks?limit=100&offset=0")
            let added = try await client.request("POST", "/v1/playlists/\(playlist)/tracks", body: Array(#"{"uris":["spotify:track:4OHNH3sDzIxnmUADXzv2kT"]}"#.utf8))
            let removed = try await client.request("DELETE", "/v1/playlists/\(playlist)/tracks", body: Array(#"{"tracks":[{"uri":"spotify:track:4OHNH3sDzIxnmUADXzv2kT"}]}"#.utf8))
            let created = try await client.request("POST", "/v1/users/alice-id/playlists", body: Array(#"{"name":"Road trip","public":false}"#.utf8))
            let othersList = try await client.request("POST", "/v1/users/bob-id/playlists", body: Array(#"{"name":"x"}"#.utf8))
            let asked = proxy.fake.counters.apiRequests - start
            await client.close()
            #expect(page.status == 200, "\(page.text)")
            let body = try JSONValue.parse(Data(page.body))
            #expect(body["href"]?.string == "http://127.0.0.1/v1/playlists/\(playlist)/tracks?offset=0&limit=50", "\(page.text)")
            #expect(body["limit"]?.int == 50 && body["items"]?.array?.isEmpty == true)
            let snapshot = try JSONValue.parse(Data(added.body))["snapshot_id"]?.string
            #expect(added.status == 201 && snapshot != nil, "\(added.text)")
            #expect(removed.status == 200 && removed.text.contains("snapshot_id"), "tekore's removal, its body's tracks sent as items: \(removed.text)")
            #expect(created.status == 201, "\(created.text)")
            let createdPlaylist = try JSONValue.parse(Data(created.body))
            #expect(createdPlaylist["name"]?.string == "Road trip" && createdPlaylist["owner"]?["id"]?.string == "alice-id" && createdPlaylist["public"] == .bool(false))
            #expect(othersList.status == 403 && othersList.text.contains("POST /v1/me/playlists"), "\(othersList.text)")
            #expect(asked == 4, "the read, the addition and the removal (as /items) and the creation (as /me/playlists); the fake refuses the old paths in development mode")
        }
    }

    @Test("auto: a development-mode app's 403 \"Forbidden\" on an endpoint removed in 2024 (a category's playlists) is explained and teaches the mode")
    func removedIn2024Forbidden() async throws {
        let target = "/v1/browse/categories/party/playlists"
        try await withProxy(prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            let client = try await proxy.client()
            let first = try await client.request("GET", target)
            let ready = try await client.request("GET", "/readyz")
            await client.close()
            #expect(first.status == 403, "\(first.text)")
            #expect(try JSONValue.parse(Data(first.body))["error"]?["message"]?.string == RemovedEndpoint.removedIn2024(method: .GET, target: target)?.message)
            #expect(ready.text.contains(#""dev_mode":{"active":true,"#), "\(ready.text)")
        }
    }

    @Test("only Spotify's 403 \"Forbidden\" is a development-mode refusal: its other 403s (the owner's Premium, a scope, no message) teach nothing; a 2024 removal's is its 404 \"Not Found\" or bare 403, or that 403 \"Forbidden\"")
    func forbiddenOnly() {
        func answer(_ status: Int, _ body: String) -> UpstreamAnswer { UpstreamAnswer(status: status, headers: [:], body: Array(body.utf8)) }
        let forbidden = answer(403, #"{"error":{"status":403,"message":"Forbidden"}}"#)
        let others = [
            answer(403, #"{"error":{"status":403,"message":"Active premium subscription required for the owner of the app."}}"#),
            answer(403, #"{"error":{"status":403,"message":"Insufficient client scope"}}"#),
            answer(403, #"{"error":{"status":403}}"#),
            answer(403, "Forbidden"),
            answer(404, #"{"error":{"status":404,"message":"Forbidden"}}"#),
        ]
        let batch = Assembly.batch(key: "tracks", parts: ["/v1/tracks/a1"])
        for other in others {
            let devMode = DevMode(setting: .auto)
            #expect(devMode.refusal(of: Self.removedIn2026, in: other) == nil)
            #expect(!devMode.refused(batch, with: other))
            #expect(!devMode.active, "\(String(decoding: other.body, as: UTF8.self))")
        }
        let devMode = DevMode(setting: .auto)
        #expect(devMode.refusal(of: Self.removedIn2026, in: forbidden) == 403 && devMode.active)
        #expect(DevMode(setting: .auto).refused(batch, with: forbidden))
        #expect(DevMode(setting: .off).refusal(of: Self.removedIn2026, in: forbidden) == nil)
        // Removed for new apps in 2024: 404 "Not Found" or a 403 without a message, in any mode,
        // and nothing learned; an unknown id's 404 or a scope's 403 is Spotify's to tell.
        let removedIn2024 = Removal(when: .newApps2024, status: 404, message: "removed")
        for setting in [DevModeSetting.off, .auto] {
            let devMode = DevMode(setting: setting)
            #expect(devMode.refusal(of: removedIn2024, in: answer(404, #"{"error":{"status":404,"message":"Not Found"}}"#)) == 404)
            #expect(devMode.refusal(of: removedIn2024, in: answer(403, #"{"error":{"status":403}}"#)) == 403)
            for other in [
                answer(404, #"{"error":{"status":404,"message":"non existing id"}}"#), answer(404, ""), others[1],
                answer(400, #"{"error":{"status":400,"message":"invalid id"}}"#), answer(200, "{}"),
            ] {
                #expect(devMode.refusal(of: removedIn2024, in: other) == nil, "\(String(decoding: other.body, as: UTF8.self))")
            }
            #expect(!devMode.active)
            // The February 2026 refusal on them is one too, and teaches the mode (not with `off`).
            #expect(devMode.refusal(of: removedIn2024, in: forbidden) == 403)
            #expect(devMode.active == (setting == .auto))
        }
    }

    static let removedIn2026 = Removal(when: .developmentMode2026, status: 403, message: "removed")

    @Test("off: Spotify's refusal goes to the client as it is")
    func off() async throws {
        try await withProxy(configure: { $0.devMode = .off }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            let client = try await proxy.client()
            let batch = try await client.request("GET", "/v1/tracks?ids=4OHNH3sDzIxnmUADXzv2kT")
            let page = try await client.request("GET", "/v1/search?q=abba&type=artist&limit=20")
            let topTracks = try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg/top-tracks?market=US")
            let albums = try await client.request("GET", Self.artistAlbums)
            await client.close()
            #expect(batch.status == 403)
            #expect(page.status == 400)
            #expect(page.text.contains("Invalid limit"))
            #expect(topTracks.status == 403 && topTracks.text.contains(#""message":"Forbidden""#))
            // A development-mode app's default page: 5.
            let albumPage = try JSONValue.parse(Data(albums.body))
            #expect(albumPage["limit"]?.int == 5 && albumPage["items"]?.array?.count == 5, "\(albums.text.prefix(300))")
        }
    }
}
