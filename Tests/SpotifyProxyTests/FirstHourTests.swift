import FakeSpotify
import Foundation
import NIOCore
import NIOHTTP1
import SpotifyProxy
import SpotifyProxyTestSupport
import Synchronization
import Testing

/// What a new user met in the first hour with the proxy in front of the fake Spotify: tokens
/// that fail fast and never storm, Spotify's own links, every answer logged and counted.
@Suite("A new user's first hour")
struct FirstHourTests {
    static let artistID = "0TnOYISbd1XYRBk9myaseg"

    @Test("an endpoint that answers 401 to every app token costs at most one token request per interval, whatever the load")
    func noRefreshStormOnUnauthorized() async throws {
        // With no user paths, /v1/me goes with the app token, which Spotify refuses there.
        try await withProxy(configure: { $0.users.userPaths = [] }) { harness in
            let statuses = StatusTally()
            let messages = Messages()
            // 250 requests to /v1/me on 10 connections: Spotify refuses an app token there.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<10 {
                    group.addTask {
                        let client = try await harness.client()
                        for _ in 0..<25 {
                            let response = try await client.request("GET", "/v1/me")
                            statuses.counts.withLock { $0[response.status, default: 0] += 1 }
                            let message = ((try? jsonObject(response))?["error"] as? [String: Any])?["message"] as? String
                            messages.seen.withLock { _ = $0.insert(message ?? response.text) }
                        }
                        await client.close()
                    }
                }
                try await group.waitForAll()
            }
            #expect(statuses.counts.withLock { $0 } == [401: 250])
            // Spotify's own answer reaches the client unchanged.
            #expect(messages.seen.withLock { $0 } == ["Only valid bearer authentication supported"])
            // The first token, and one forced refresh for the first 401; none for the other 249.
            #expect(harness.fake.counters.tokenRequests <= 2)
            #expect(harness.fake.tokensIssued <= 2)
        }
    }

    @Test("refused credentials answer 503 at once with the reason, the fix and Retry-After, instead of waiting token_wait")
    func refusedCredentialsFailFast() async throws {
        try await withProxy(configure: { $0.tokenWait = .seconds(30) }, prepareFake: { $0.setTokenMode(.invalidClient) }) { harness in
            let client = try await harness.client()
            // Once the accounts service has refused the grant (however long that takes here).
            #expect(try await eventually(10) { try await client.request("GET", "/readyz").text.contains("SPOTIFY_CLIENT_SECRET") })
            let started = ContinuousClock.now
            let response = try await client.request("GET", "/v1/artists/\(Self.artistID)")
            // token_wait is 30 s: an answer well before it did not wait for a token.
            #expect(ContinuousClock.now - started < .seconds(5))
            #expect(response.status == 503)
            let error = try #require(try jsonObject(response)["error"] as? [String: Any])
            #expect(error["status"] as? Int == 503)
            let message = try #require(error["message"] as? String)
            #expect(message.contains("refused the app's credentials"))
            #expect(message.contains("Invalid client"))
            #expect(message.contains("SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET"))
            // The next attempt is a minute after the refusal.
            let retryAfter = try #require(response.headers.first(name: "retry-after").flatMap { Int($0) })
            #expect((1...60).contains(retryAfter))
            // /readyz tells a poller the same wait, not "1" (a poller would ask sixty times for nothing).
            let ready = try await client.request("GET", "/readyz")
            #expect(ready.status == 503)
            let readyRetryAfter = try #require(ready.headers.first(name: "retry-after").flatMap { Int($0) })
            #expect(readyRetryAfter > 1 && abs(readyRetryAfter - retryAfter) <= 1)
            await client.close()
        }
    }

    @Test("Spotify's own links and the configured api_url's both point at the proxy, so paging stays on it")
    func spotifyLinksRewrittenThroughAnyUpstream() async throws {
        try await withProxy { harness in
            // The fake is reached at http://127.0.0.1:PORT, yet its bodies say https://api.spotify.com/...
            let client = try await harness.client()
            let response = try await client.request("GET", "/v1/artists/\(Self.artistID)/albums?limit=2")
            #expect(response.status == 200)
            let page = try jsonObject(response)
            #expect((page["href"] as? String)?.hasPrefix("http://127.0.0.1/v1/artists/\(Self.artistID)/albums") == true)
            #expect((page["next"] as? String)?.hasPrefix("http://127.0.0.1/v1/artists/\(Self.artistID)/albums") == true)
            #expect(!response.text.contains("https://api.spotify.com/"))
            #expect(!response.text.contains(harness.fake.baseURL))
            await client.close()
        }
    }

    @Test("spotipy-shaped paging: following next from the first page to the last collects every item once", arguments: [
        "/v1/albums/4aawyAB9vmqN3uQ7FjRGTy/tracks/?limit=7",
        "/v1/artists/0TnOYISbd1XYRBk9myaseg/albums?limit=10",
        "/v1/search?q=old&type=track&limit=3",
    ])
    func followNextToTheEnd(first: String) async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            var target: String? = first
            var ids: [String] = []
            var total: Int?
            var pages = 0
            while let path = target, pages < 200 {
                let response = try await client.request("GET", path)
                try #require(response.status == 200, "\(path): \(response.text.prefix(200))")
                var page = try jsonObject(response)
                if let tracks = page["tracks"] as? [String: Any] { page = tracks }  // search wraps the page
                total = total ?? page["total"] as? Int
                if pages == 0 { #expect(page["previous"] is NSNull) }
                ids += (page["items"] as? [[String: Any]] ?? []).compactMap { $0["id"] as? String }
                // Like spotipy's next(): the link is followed verbatim, so it must be the proxy's.
                let next = page["next"] as? String
                if let next { try #require(next.hasPrefix("http://127.0.0.1/v1/"), "next leaves the proxy: \(next)") }
                target = next.map { String($0.dropFirst("http://127.0.0.1".count)) }
                pages += 1
            }
            let expected = try #require(total)
            #expect(expected > 0)
            #expect(pages > 1)
            #expect(ids.count == expected)
            #expect(Set(ids).count == ids.count)
            await client.close()
        }
    }

    @Test("HEAD on a JSON resource carries the Content-Length of the rewritten GET answer, and no body")
    func headHasContentLength() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            let get = try await client.request("GET", "/v1/artists/\(Self.artistID)")
            #expect(get.status == 200)
            try await client.send("HEAD /v1/artists/\(Self.artistID) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", method: .HEAD)
            let head = try await client.response()
            #expect(head.status == 200)
            #expect(head.headers["content-length"] == [String(get.body.count)])
            #expect(head.headers["content-type"].first?.hasPrefix("application/json") == true)
            #expect(head.body.isEmpty)
            // The connection is still in step: the next answer is the next request's.
            #expect(try await client.request("GET", "/readyz").status == 200)
            await client.close()
        }
    }

    @Test("a request refused before routing is answered in Spotify's shape, logged and counted like every answer", arguments: [
        ("GET /v1/artists/x HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: x\r\n\r\n", 400),
        ("GET /v1/artists/x HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n", 400),
        ("GET /v1/artists/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: \(String(repeating: "b", count: 20_000))\r\n\r\n", 431),
    ])
    func refusedBeforeRoutingLoggedAndCounted(request: String, status: Int) async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            try await client.send(request)
            let response = try await client.response()
            #expect(response.status == status)
            let error = try #require(try jsonObject(response)["error"] as? [String: Any])
            #expect(error["status"] as? Int == status)
            await client.close()
            #expect(harness.logs.all.contains { $0.contains("request") && $0.contains("status=\(status)") })
            let metrics = try await harness.client()
            let text = try await metrics.request("GET", "/metrics").text
            // Counted under a route template (or "other"), never under what the client sent.
            #expect(MetricsTests.sum(MetricsTests.parse(text), "spotify_proxy_requests_total", ["code": "4xx", "key": "-"]) == 1)
            #expect(!text.contains("/v1/artists/x\""))
            await metrics.close()
        }
    }

    @Test("a malformed request pipelined behind a good one: the good one's answer arrives whole, then the 400")
    func malformedBehindGood() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            try await client.send(
                "GET /v1/artists/\(Self.artistID) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /v1/x HTTP/1.1\r\nBad Header: x\r\n\r\n", requests: 2)
            let good = try await client.response()
            #expect(good.status == 200)
            #expect(try jsonObject(good)["id"] as? String == Self.artistID)
            let bad = try await client.response()
            #expect(bad.status == 400)
            await client.close()
        }
    }

    @Test("raw non-ASCII bytes in the target are forwarded percent-encoded, as browsers send them")
    func nonASCIITargetPercentEncoded() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            let response = try await client.request("GET", "/v1/test/echo/search?q=Björk&type=artist")
            #expect(response.status == 200)
            #expect(try jsonObject(response)["uri"] as? String == "/v1/test/echo/search?q=Bj%C3%B6rk&type=artist")
            await client.close()
        }
    }

    @Test("each token refresh is one info line: kind, expires in, took; never the token")
    func refreshLoggedAtInfo() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            #expect(try await client.request("GET", "/v1/artists/\(Self.artistID)").status == 200)
            await client.close()
            let lines = harness.logs.all.filter { $0.contains("access token refreshed") }
            #expect(lines.count == 1)
            let line = try #require(lines.first)
            #expect(line.hasPrefix("info "))
            #expect(line.contains("kind=app") && line.contains("expires_in_s=3600") && line.contains("took_ms="))
            #expect(!line.contains("fake-at-"))
        }
    }
}

final class Messages: Sendable {
    let seen = Mutex<Set<String>>([])
}
