import FakeSpotify
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import SpotifyProxy
import SpotifyProxyTestSupport
import Synchronization
import Testing

@Suite("The shared cache: rules")
struct CacheRuleTests {
    typealias Store = CacheStore<ManualClock.Instant>
    static let t0 = ManualClock.Instant(offset: .zero)
    static func at(_ seconds: Double) -> ManualClock.Instant { t0.advanced(by: .milliseconds(Int64(seconds * 1000))) }

    struct ControlRow: Sendable, CustomTestStringConvertible {
        var testDescription: String { self.values.joined(separator: " | ") }
        var values: [String]
        var maxAge: Int?
        var sharedMaxAge: Int? = nil
        var noStore = false
        var noCache = false
        var isPrivate = false
        var mustRevalidate = false
    }

    @Test("Cache-Control as a shared cache reads it", arguments: [
        ControlRow(values: ["public, max-age=7200"], maxAge: 7200),
        ControlRow(values: ["private, max-age=0"], maxAge: 0, isPrivate: true),
        ControlRow(values: ["no-cache, no-store, must-revalidate"], maxAge: nil, noStore: true, noCache: true, mustRevalidate: true),
        ControlRow(values: ["max-age=60", "s-maxage=600"], maxAge: 60, sharedMaxAge: 600),
        ControlRow(values: ["MAX-AGE = \"30\" , Proxy-Revalidate"], maxAge: 30, mustRevalidate: true),
        ControlRow(values: ["max-age=-5, max-age=abc, immutable"], maxAge: nil),
        ControlRow(values: ["max-age=60, =, ,"], maxAge: 60),
    ])
    func cacheControl(_ row: ControlRow) {
        let control = CacheControl(row.values)
        #expect(control.maxAge == row.maxAge)
        #expect(control.sharedMaxAge == row.sharedMaxAge)
        #expect(control.noStore == row.noStore)
        #expect(control.noCache == row.noCache)
        #expect(control.isPrivate == row.isPrivate)
        #expect(control.mustRevalidate == row.mustRevalidate)
    }

    @Test("what is stored, and for how long it is fresh")
    func storableAndFresh() {
        func storable(_ status: Int, _ control: String, override: Bool = false, validator: Bool = false) -> Bool {
            CachePolicy.storable(status: status, cacheControl: CacheControl([control]), hasOverride: override, hasValidator: validator)
        }
        #expect(storable(200, "public, max-age=7200"))
        #expect(storable(200, "public, max-age=0", validator: true))
        #expect(!storable(200, "no-store, max-age=60"))
        #expect(!storable(200, "private, max-age=60"))
        #expect(!storable(404, "public, max-age=7200"))
        // Says nothing about caching and has no validator: not kept, unless a TTL override says so.
        #expect(!storable(200, ""))
        #expect(storable(200, "", override: true))
        // Varying by what the key holds (or the proxy asks itself) only; never a cookie.
        func varying(_ vary: String) -> Bool {
            CachePolicy.storable(
                status: 200, cacheControl: CacheControl(["max-age=60"]), hasOverride: false, hasValidator: false, vary: CachePolicy.varyNames([vary]))
        }
        #expect(varying("Accept-Language") && varying("accept-encoding, Accept-Language") && varying(""))
        #expect(!varying("X-Foo") && !varying("*") && !varying("Accept-Language, Authorization"))
        #expect(!CachePolicy.storable(status: 200, cacheControl: CacheControl(["max-age=60"]), hasOverride: false, hasValidator: false, setsCookie: true))
        #expect(CachePolicy.freshness(cacheControl: CacheControl(["max-age=60, s-maxage=600"]), override: nil) == .seconds(600))
        #expect(CachePolicy.freshness(cacheControl: CacheControl(["max-age=60"]), override: 86_400) == .seconds(86_400))
        #expect(CachePolicy.freshness(cacheControl: CacheControl(["no-cache, max-age=60"]), override: 86_400) == .zero)

        var settings = CacheSettings()
        settings.ttl = [RouteTemplate("/v1/artists/{id}")!: 86_400]
        #expect(settings.ttlOverride(for: "/v1/artists/0TnOYISbd1XYRBk9myaseg") == 86_400)
        #expect(settings.ttlOverride(for: "/v1/artists/0TnOYISbd1XYRBk9myaseg/albums") == nil)
        #expect(settings.ttlOverride(for: "/v1/artists/") == nil)
        #expect(RouteTemplate("v1/artists") == nil)
    }

    static func answer(_ control: String, bytes: Int = 100) -> UpstreamAnswer {
        UpstreamAnswer(status: 200, headers: HTTPHeaders([("Cache-Control", control)]), body: Array(repeating: 0x20, count: bytes))
    }

    struct UsabilityRow: Sendable, CustomTestStringConvertible {
        var testDescription: String
        var control: String
        var age: Double
        var expected: CacheUsability
    }

    @Test("how a stored answer may be used as it ages (fresh 60 s, stale-while-revalidate 60 s, max_stale 1 h)", arguments: [
        UsabilityRow(testDescription: "within max-age", control: "max-age=60", age: 59.9, expected: .fresh),
        UsabilityRow(testDescription: "just stale", control: "max-age=60", age: 60, expected: .staleWhileRevalidate),
        UsabilityRow(testDescription: "end of stale-while-revalidate", control: "max-age=60", age: 120, expected: .staleWhileRevalidate),
        UsabilityRow(testDescription: "past it: only if Spotify cannot answer", control: "max-age=60", age: 120.1, expected: .staleIfError),
        UsabilityRow(testDescription: "end of max_stale", control: "max-age=60", age: 3660, expected: .staleIfError),
        UsabilityRow(testDescription: "past max_stale", control: "max-age=60", age: 3660.1, expected: .expired),
        UsabilityRow(testDescription: "must-revalidate: never stale", control: "max-age=60, must-revalidate", age: 61, expected: .expired),
        UsabilityRow(testDescription: "no-cache: never used unvalidated", control: "no-cache", age: 0, expected: .expired),
        UsabilityRow(testDescription: "max-age=0 (playlists): revalidated before each use", control: "max-age=0", age: 0, expected: .staleIfError),
        UsabilityRow(testDescription: "s-maxage implies proxy-revalidate", control: "s-maxage=60", age: 61, expected: .expired),
    ])
    func usability(_ row: UsabilityRow) {
        var settings = CacheSettings()
        settings.maxStale = .seconds(3600)
        let answer = Self.answer(row.control)
        let entry = Store.Entry(answer: answer, storedAt: Self.t0, lifetime: CachePolicy.freshness(cacheControl: answer.cacheControl, override: nil))
        #expect(entry.usability(now: Self.at(row.age), settings: settings) == row.expected)
    }

    @Test("an answer that came with an Age is that much older: fresher for less, and each hit's Age counts from it")
    func upstreamAge() {
        var answer = Self.answer("max-age=60")
        answer.headers.add(name: "Age", value: "50")
        let entry = Store.Entry(answer: answer, storedAt: Self.t0, lifetime: CachePolicy.freshness(cacheControl: answer.cacheControl, override: nil))
        #expect(entry.usability(now: Self.at(9), settings: CacheSettings()) == .fresh)
        #expect(entry.usability(now: Self.at(10), settings: CacheSettings()) == .staleWhileRevalidate)
        #expect(entry.age(now: Self.at(11)) == 61)
        #expect(!entry.answer.headers.contains(name: "Age"), "a hit's Age is made, not the stored one")
    }

    @Test("LRU by bytes: the least recently used go first; a use makes an answer recent; one too large is not kept; purge by prefix")
    func leastRecentlyUsed() {
        let size = Self.answer("max-age=60").headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 } + 64 + 100 + "/v1/artists/a".utf8.count
        var store = Store(maxBytes: size * 3)
        func put(_ target: String) -> Int? { store.put(CacheKey(target: target), Store.Entry(answer: Self.answer("max-age=60"), storedAt: Self.t0, lifetime: .seconds(60))) }
        #expect(put("/v1/artists/a") == 0)
        #expect(put("/v1/artists/b") == 0)
        #expect(put("/v1/albums/cc") == 0)
        #expect(store.bytes == size * 3)
        _ = store.get(CacheKey(target: "/v1/artists/a"))
        #expect(put("/v1/albums/dd") == 1)
        #expect(store.get(CacheKey(target: "/v1/artists/b")) == nil, "the least recently used went")
        #expect(store.get(CacheKey(target: "/v1/artists/a")) != nil)
        // Accept-Language makes another entry.
        #expect(put("/v1/albums/cc") == 0)
        #expect(store.count == 3)
        #expect(store.put(CacheKey(target: "/v1/big"), Store.Entry(answer: Self.answer("max-age=60", bytes: size * 2), storedAt: Self.t0, lifetime: .seconds(60))) == nil, "not stored")
        #expect(store.get(CacheKey(target: "/v1/big")) == nil)
        #expect(store.purge(prefix: "/v1/albums") == 2)
        #expect(store.count == 1)
        #expect(store.bytes == size)
        #expect(store.purge(prefix: "") == 1)
        #expect(store.bytes == 0)
    }

    @Test("a key counts toward max_bytes: answers under long targets (a query padded out) are evicted by their keys' bytes too")
    func keysCount() {
        let answer = Self.answer("max-age=60")
        let pad = String(repeating: "a", count: 15_000)
        var store = Store(maxBytes: 100_000)
        for index in 0..<20 {
            store.put(CacheKey(target: "/v1/artists/x?i=\(index)&pad=\(pad)"), Store.Entry(answer: answer, storedAt: Self.t0, lifetime: .seconds(60)))
        }
        #expect(store.bytes <= 100_000)
        #expect(store.count == 6, "each entry costs its 15 KB key")
    }

    @Test("Cache-Status values (RFC 9211)")
    func cacheStatus() {
        #expect(CacheStatus.hit().description == "spotify-proxy; hit")
        #expect(CacheStatus.hit(detail: "stale-penalty").description == "spotify-proxy; hit; detail=stale-penalty")
        var forwarded = CacheStatus()
        forwarded.forward = .miss
        forwarded.forwardStatus = 200
        forwarded.stored = true
        forwarded.collapsed = true
        #expect(forwarded.description == "spotify-proxy; fwd=miss; fwd-status=200; stored; collapsed")
    }
}

@Suite("The shared cache: one rendering per answer")
struct CacheRenderingTests {
    /// Spotify, as the cache sees it: each `get` waits until the test releases it, then gives
    /// the next scripted answer.
    final class ScriptedUpstream: CacheForwarding {
        let answers: Mutex<[UpstreamAnswer]>
        let gate: AsyncStream<Void>
        let release: AsyncStream<Void>.Continuation

        init(_ answers: [UpstreamAnswer]) {
            self.answers = Mutex(answers)
            (self.gate, self.release) = AsyncStream.makeStream()
        }

        func get(_ key: CacheKey, headers: HTTPHeaders, validators: HTTPHeaders, on eventLoop: any EventLoop) async -> Result<UpstreamAnswer, ForwardFailure> {
            for await _ in self.gate { break }
            return .success(self.answers.withLock { $0.removeFirst() })
        }
    }

    static func rendered(_ outcome: CacheOutcome) -> RenderedBodies? {
        guard case .answer(_, _, _, let rendered) = outcome else { return nil }
        return rendered
    }

    @Test("waiters of one upstream request, and a 304 revalidation, share the stored entry's rendered body; the 304's headers keep their spelling")
    func sharedRendering() async throws {
        let body = Array(#"{"href":"https://api.spotify.com/v1/playlists/1"}"#.utf8)
        let upstream = ScriptedUpstream([
            UpstreamAnswer(
                status: 200,
                headers: HTTPHeaders([
                    ("ETag", "\"v1\""), ("Cache-Control", "public, max-age=0"), ("Content-Type", "application/json"), ("Cache-Control", "stale"),
                    ("Date", "Thu, 03 Dec 2026 20:00:00 GMT"),
                ]),
                body: body),
            // Spelled otherwise than the stored answer, one of them given twice, one new.
            UpstreamAnswer(
                status: 304,
                headers: HTTPHeaders([
                    ("cache-control", "public"), ("etag", "\"v1\""), ("cache-control", "max-age=0"), ("Expires", "0"), ("date", "Thu, 03 Dec 2026 20:12:00 GMT"),
                ]), body: []),
        ])
        var settings = CacheSettings()
        settings.staleWhileRevalidate = .zero
        let eventLoop = MultiThreadedEventLoopGroup.singleton.next()
        let cache = ResponseCache(settings: settings, upstream: upstream, eventLoopGroup: eventLoop, logger: Logger(label: "test"))
        let key = CacheKey(target: "/v1/playlists/1")
        // Both are registered before the upstream answers: the second waits for the first.
        let first = cache.forward(key, headers: HTTPHeaders(), on: eventLoop)
        let second = cache.forward(key, headers: HTTPHeaders(), on: eventLoop)
        upstream.release.yield()
        let shared = try #require(Self.rendered(try await first.get()))
        #expect(Self.rendered(try await second.get()) === shared)
        // max-age=0: the next use revalidates; the 304 keeps the body and so what was rendered of it.
        let revalidated = cache.forward(key, headers: HTTPHeaders(), on: eventLoop)
        upstream.release.yield()
        let refreshed = try await revalidated.get()
        #expect(Self.rendered(refreshed) === shared)
        #expect(cache.stats.revalidated == 1)
        // The headers the 304 updates take the stored ones' place (every value the 304 gives, the
        // stored copies gone) in the 304's spelling; one the answer lacked is added at the end.
        guard case .answer(let refreshedAnswer, _, _, _) = refreshed else { Issue.record("not an answer"); return }
        #expect(refreshedAnswer.headers.map { "\($0.name): \($0.value)" } == [
            "etag: \"v1\"", "cache-control: public", "cache-control: max-age=0", "Content-Type: application/json",
            "date: Thu, 03 Dec 2026 20:12:00 GMT", "Expires: 0",
        ])

        // What that sharing buys: the second client of the same base is given the first's bytes.
        let rendering = AnswerRendering(settings: ListenerSettings(ProxyConfiguration()))
        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/v1/playlists/1", headers: ["Host": "127.0.0.1:8080"])
        let answer = UpstreamAnswer(status: 200, headers: HTTPHeaders([("Content-Type", "application/json")]), body: body)
        let once = rendering.render(answer, for: head, transform: nil, memo: shared)
        let twice = rendering.render(answer, for: head, transform: nil, memo: shared)
        #expect(String(buffer: once.body) == #"{"href":"http://127.0.0.1:8080/v1/playlists/1"}"#)
        #expect(once.body.withUnsafeReadableBytes { $0.baseAddress } == twice.body.withUnsafeReadableBytes { $0.baseAddress })
    }
}

@Suite("The shared cache against the fake Spotify")
struct CacheTests {
    static let artist = "/v1/artists/0TnOYISbd1XYRBk9myaseg"
    static let playlist = "/v1/playlists/37i9dQZF1DXcBWIGoYBM5M"

    @Test("a hit: the second GET never reaches Spotify; links follow each client's Host; Cache-Status and Age say so")
    func hit() async throws {
        try await withProxy { proxy in
            let client = try await proxy.client()
            let first = try await client.request("GET", Self.artist)
            let reached = proxy.fake.counters.apiRequests
            let second = try await client.request("GET", Self.artist)
            try await client.send("GET \(Self.artist) HTTP/1.1\r\nHost: proxy.example:9000\r\n\r\n")
            let otherHost = try await client.response()
            await client.close()
            #expect(first.status == 200)
            #expect(first.headers["cache-status"] == ["spotify-proxy; fwd=miss; fwd-status=200; stored"])
            #expect(second.status == 200)
            #expect(second.headers["cache-status"] == ["spotify-proxy; hit"])
            #expect(second.headers["age"].first.flatMap(Int.init) != nil)
            #expect(second.body == first.body)
            #expect(proxy.fake.counters.apiRequests == reached)
            #expect(otherHost.text.contains(#""http://proxy.example:9000/v1/artists/0TnOYISbd1XYRBk9myaseg""#))
            #expect(!otherHost.text.contains("api.spotify.com/v1"))
            #expect(otherHost.headers["content-length"] == [String(otherHost.body.count)])
        }
    }

    @Test("a GET with Content-Length: 0 is a GET without a body: it goes through the cache, and the second one is a hit")
    func emptyBody() async throws {
        try await withProxy { proxy in
            let client = try await proxy.client()
            let headers = [("Content-Length", "0")]
            let first = try await client.request("GET", Self.artist, headers: headers)
            let reached = proxy.fake.counters.apiRequests
            let second = try await client.request("GET", Self.artist, headers: headers)
            await client.close()
            #expect(first.headers["cache-status"] == ["spotify-proxy; fwd=miss; fwd-status=200; stored"], "\(first.headers)")
            #expect(second.headers["cache-status"] == ["spotify-proxy; hit"], "\(second.headers)")
            #expect(second.body == first.body)
            #expect(proxy.fake.counters.apiRequests == reached)
        }
    }

    @Test("a HEAD is served from the GET's entry (no request to Spotify, the GET's Content-Length, no body); a HEAD that misses stores the GET's answer")
    func head() async throws {
        try await withProxy { proxy in
            let client = try await proxy.client()
            let album = "/v1/albums/3IqzqH6ShrRtie9Yd2ODyG"
            // A miss: the GET goes upstream (as every HEAD does), and its answer is kept.
            try await client.send("HEAD \(album) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", method: .HEAD)
            let miss = try await client.response()
            let reached = proxy.fake.counters.apiRequests
            let get = try await client.request("GET", album)
            try await client.send("HEAD \(album) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", method: .HEAD)
            let hit = try await client.response()
            // The connection is still in step: nothing of a body followed the HEADs' heads.
            let after = try await client.request("GET", "/healthz")
            await client.close()
            #expect(miss.status == 200)
            #expect(miss.headers["cache-status"] == ["spotify-proxy; fwd=miss; fwd-status=200; stored"])
            #expect(get.headers["cache-status"] == ["spotify-proxy; hit"])
            #expect(hit.headers["cache-status"] == ["spotify-proxy; hit"])
            #expect(proxy.fake.counters.apiRequests == reached)
            #expect(hit.body.isEmpty && miss.body.isEmpty)
            #expect(hit.headers["content-length"] == [String(get.body.count)])
            #expect(miss.headers["content-length"] == [String(get.body.count)])
            #expect(after.status == 200)
        }
    }

    @Test("revalidation: Spotify sees If-None-Match and answers 304; the client gets 200 with the body; a changed playlist is fetched anew")
    func revalidation() async throws {
        try await withProxy(configure: { $0.cache.staleWhileRevalidate = .zero }) { proxy in
            let client = try await proxy.client()
            let first = try await client.request("GET", Self.playlist)
            let second = try await client.request("GET", Self.playlist)
            proxy.fake.changePlaylist("37i9dQZF1DXcBWIGoYBM5M")
            let changed = try await client.request("GET", Self.playlist)
            // The client's own validator: 304 when it holds the current answer.
            let etag = try #require(changed.headers["etag"].first)
            let conditional = try await client.request("GET", Self.playlist, headers: [("If-None-Match", etag)])
            // tekore sends its validator in a request header named ETag.
            let tekore = try await client.request("GET", Self.playlist, headers: [("ETag", etag)])
            await client.close()
            #expect(first.headers["cache-status"] == ["spotify-proxy; fwd=miss; fwd-status=200; stored"])
            #expect(second.status == 200)
            #expect(second.body == first.body)
            #expect(second.headers["cache-status"] == ["spotify-proxy; fwd=stale; fwd-status=304"])
            #expect(proxy.fake.counters.notModified >= 1)
            #expect(changed.status == 200)
            #expect(changed.text.contains(#""snapshot_id":"AAAAA1"#), "\(changed.text)")
            #expect(changed.headers["cache-status"] == ["spotify-proxy; fwd=stale; fwd-status=200; stored"])
            #expect(conditional.status == 304)
            #expect(conditional.body.isEmpty)
            #expect(conditional.headers["etag"] == [etag])
            #expect(tekore.status == 304)
        }
    }

    @Test("If-None-Match: * matches any current answer, with an entity tag or without (RFC 9110 §13.1.2): a GET or HEAD gets 304; other methods the answer")
    func ifNoneMatchAny() {
        let rendering = AnswerRendering(settings: ListenerSettings(ProxyConfiguration()))
        func status(_ method: HTTPMethod, etag: String?, _ clientTag: String) -> Int {
            let head = HTTPRequestHead(version: .http1_1, method: method, uri: "/v1/artists/x", headers: ["Host": "127.0.0.1:8080", "If-None-Match": clientTag])
            var headers = HTTPHeaders([("Content-Type", "application/json")])
            if let etag { headers.add(name: "ETag", value: etag) }
            return rendering.render(UpstreamAnswer(status: 200, headers: headers, body: Array("{}".utf8)), for: head, transform: nil).status
        }
        #expect(status(.GET, etag: nil, "*") == 304)
        #expect(status(.HEAD, etag: nil, "*") == 304)
        #expect(status(.GET, etag: "\"a\"", "*") == 304)
        #expect(status(.GET, etag: nil, "\"a\"") == 200)
        #expect(status(.GET, etag: "\"a\"", "W/\"a\"") == 304)
        #expect(status(.GET, etag: "\"a\"", "\"b\"") == 200)
        #expect(status(.PUT, etag: "\"a\"", "*") == 200)
    }

    @Test("stale-while-revalidate: a stale answer is served at once while one background request refreshes it")
    func staleWhileRevalidate() async throws {
        // Fresh for one second: the cache's clock is the real one, so the test waits for it to pass.
        try await withProxy(configure: { $0.cache.ttl = [RouteTemplate("/v1/artists/{id}")!: 1] }) { proxy in
            let client = try await proxy.client()
            _ = try await client.request("GET", Self.artist)
            let reached = proxy.fake.counters.apiRequests
            var stale: RawHTTPClient.Response?
            _ = try await eventually(5) {
                let response = try await client.request("GET", Self.artist)
                if response.headers["cache-status"] == ["spotify-proxy; hit; detail=stale-while-revalidate"] { stale = response }
                return stale != nil
            }
            await client.close()
            #expect(stale?.status == 200)
            // The background request went (and stored a fresh answer).
            #expect(try await eventually { proxy.fake.counters.apiRequests == reached + 1 })
        }
    }

    @Test("no-store and private answers are never stored; an answer that says nothing about caching is not stored; nor one that sets a cookie or varies by a header the key lacks; an upstream Age counts")
    func notStored() async throws {
        try await withProxy { proxy in
            let client = try await proxy.client()
            var asked: [String: Int] = [:]
            let controls = [
                "no-store", "private,%20max-age=600", "", "public,%20max-age=600", "public,%20max-age=601?set-cookie=sid%3D1",
                "public,%20max-age=602?vary=X-Foo", "public,%20max-age=603?vary=*", "public,%20max-age=604?vary=Accept-Language",
            ]
            for control in controls {
                let before = proxy.fake.counters.cacheControlRequests
                for _ in 0..<2 { _ = try await client.request("GET", "/v1/test/cache-control/\(control)") }
                asked[control] = proxy.fake.counters.cacheControlRequests - before
            }
            // Fresh for 600 s, 590 of them spent upstream: a hit says so, and 11 s on it would be stale.
            _ = try await client.request("GET", "/v1/test/cache-control/public,%20max-age=600?age=590")
            let hit = try await client.request("GET", "/v1/test/cache-control/public,%20max-age=600?age=590")
            await client.close()
            #expect(asked == [
                "no-store": 2, "private,%20max-age=600": 2, "": 2, "public,%20max-age=600": 1, "public,%20max-age=601?set-cookie=sid%3D1": 2,
                "public,%20max-age=602?vary=X-Foo": 2, "public,%20max-age=603?vary=*": 2, "public,%20max-age=604?vary=Accept-Language": 1,
            ])
            #expect((590...600).contains(Int(hit.headers["age"].first ?? "") ?? 0) && hit.headers["cache-status"].first?.contains("hit") == true, "\(hit.headers)")
        }
    }

    @Test("user-token answers are never cached: each /v1/me reaches Spotify, without Cache-Status")
    func userAnswersNotCached() async throws {
        let directory = try UserTokenTests.usersDirectory()
        try await withProxy(configure: { $0.users.directory = directory }) { proxy in
            _ = try await UserTokenTests.login("alice", as: "alice-id", fake: proxy.fake, users: directory)
            let client = try await proxy.client()
            let before = proxy.fake.counters.apiRequests
            let first = try await client.request("GET", "/v1/me")
            let second = try await client.request("GET", "/v1/me")
            await client.close()
            #expect(first.status == 200)
            #expect(second.status == 200)
            #expect(proxy.fake.counters.apiRequests - before == 2)
            #expect(second.headers["cache-status"].isEmpty)
        }
    }

    /// A token first, so that concurrent requests meet at the cache, not at the token.
    static func warmToken(_ proxy: ProxyHarness) async throws {
        let warm = try await proxy.client()
        _ = try await warm.request("GET", "/v1/test/echo/warm")
        await warm.close()
    }

    /// `count` identical GETs at once, each on a connection of its own.
    static func concurrentGETs(_ target: String, count: Int, through proxy: ProxyHarness) async throws -> [RawHTTPClient.Response] {
        try await withThrowingTaskGroup(of: RawHTTPClient.Response.self) { group in
            for _ in 0..<count {
                group.addTask {
                    let client = try await proxy.client()
                    let response = try await client.request("GET", target)
                    await client.close()
                    return response
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
    }

    @Test("20 concurrent identical GETs: one upstream request; every client gets the answer")
    func coalescing() async throws {
        try await withProxy(prepareFake: { $0.setLatency(.milliseconds(300)) }) { proxy in
            try await Self.warmToken(proxy)
            let before = proxy.fake.counters.apiRequests
            let answers = try await Self.concurrentGETs("/v1/albums/3IqzqH6ShrRtie9Yd2ODyG", count: 20, through: proxy)
            #expect(answers.count == 20)
            #expect(answers.allSatisfy { $0.status == 200 && $0.body == answers[0].body })
            // A request that arrived after the answer was stored is a hit; the others waited for the one.
            #expect(proxy.fake.counters.apiRequests - before == 1)
            let collapsed = answers.filter { $0.headers["cache-status"].first?.contains("collapsed") == true }.count
            let hits = answers.filter { $0.headers["cache-status"] == ["spotify-proxy; hit"] }.count
            #expect(collapsed + hits == 19, "\(answers.map { $0.headers["cache-status"] })")
        }
    }

    @Test("a failure is not stored but given to every waiter")
    func failureToAllWaiters() async throws {
        try await withProxy(prepareFake: { $0.setLatency(.milliseconds(300)) }) { proxy in
            try await Self.warmToken(proxy)
            proxy.fake.setOutage(status: 503)
            let statuses = try await Self.concurrentGETs(Self.artist, count: 5, through: proxy).map(\.status)
            #expect(statuses == Array(repeating: 503, count: 5))
            proxy.fake.setOutage(status: nil)
            let client = try await proxy.client()
            let after = try await client.request("GET", Self.artist)
            await client.close()
            #expect(after.status == 200)
            #expect(after.headers["cache-status"] == ["spotify-proxy; fwd=miss; fwd-status=200; stored"])
        }
    }

    /// A proxy whose artist answers are stale at once and past stale-while-revalidate: usable
    /// only when Spotify cannot answer.
    static func staleAtOnce(_ config: inout ProxyConfiguration) {
        config.cache.ttl = [RouteTemplate("/v1/artists/{id}")!: 0]
        config.cache.staleWhileRevalidate = .zero
    }

    @Test("during a penalty a stale answer is served instead of the 429; what was never stored gets the governor's 429")
    func staleDuringPenalty() async throws {
        try await withProxy(configure: Self.staleAtOnce) { proxy in
            let client = try await proxy.client()
            let stored = try await client.request("GET", Self.artist)
            proxy.fake.setRateLimited(retryAfter: 3600, reason: "QUOTA_EXCEEDED")
            let first = try await client.request("GET", Self.artist)
            let reached = proxy.fake.counters.apiRequests
            let second = try await client.request("GET", Self.artist)
            let never = try await client.request("GET", "/v1/albums/3IqzqH6ShrRtie9Yd2ODyG")
            await client.close()
            #expect(stored.status == 200)
            #expect(first.status == 200)
            #expect(first.body == stored.body)
            #expect(first.headers["cache-status"] == ["spotify-proxy; fwd=stale; fwd-status=429; detail=stale-penalty"])
            #expect(second.status == 200)
            #expect(second.headers["cache-status"] == ["spotify-proxy; hit; detail=stale-penalty"])
            #expect(never.status == 429)
            #expect(never.text.contains("QUOTA_EXCEEDED"))
            #expect(proxy.fake.counters.apiRequests == reached, "the upstream saw nothing while limited")
        }
    }

    @Test("during an outage (5xx, or Spotify unreachable) a stale answer is served")
    func staleDuringOutage() async throws {
        try await withProxy(configure: Self.staleAtOnce) { proxy in
            let client = try await proxy.client()
            let stored = try await client.request("GET", Self.artist)
            proxy.fake.setOutage(status: 503)
            let failing = try await client.request("GET", Self.artist)
            await client.close()
            #expect(failing.status == 200)
            #expect(failing.body == stored.body)
            #expect(failing.headers["cache-status"] == ["spotify-proxy; fwd=stale; fwd-status=503; detail=stale-error"])
        }
        // Unreachable: the stored answer stands in for the 502.
        try await withProxy(configure: Self.staleAtOnce) { proxy in
            let client = try await proxy.client()
            let stored = try await client.request("GET", Self.artist)
            try await proxy.fake.shutdown()
            let unreachable = try await client.request("GET", Self.artist)
            await client.close()
            #expect(unreachable.status == 200)
            #expect(unreachable.body == stored.body)
            #expect(unreachable.headers["cache-status"] == ["spotify-proxy; fwd=stale; detail=stale-error"])
        }
    }

    @Test("while Spotify limits the app, stale answers are served and no background revalidation reaches it")
    func noRevalidationWhileLimited() async throws {
        try await withProxy { proxy in
            let client = try await proxy.client()
            _ = try await client.request("GET", Self.playlist)
            proxy.fake.setRateLimited(retryAfter: 3600)
            #expect(try await client.request("GET", "/v1/albums/3IqzqH6ShrRtie9Yd2ODyG").status == 429)
            let reached = proxy.fake.counters.apiRequests
            var answers: [RawHTTPClient.Response] = []
            for _ in 0..<3 { answers.append(try await client.request("GET", Self.playlist)) }
            let ready = try await client.request("GET", "/readyz")
            await client.close()
            #expect(answers.allSatisfy { $0.status == 200 })
            #expect(ready.text.contains("rate_limited"))
            #expect(proxy.fake.counters.apiRequests == reached)
        }
    }

    @Test("POST /admin/cache/purge empties the cache (by prefix); the next GET goes to Spotify")
    func purge() async throws {
        try await withProxy { proxy in
            let client = try await proxy.client()
            _ = try await client.request("GET", Self.artist)
            _ = try await client.request("GET", "/v1/albums/3IqzqH6ShrRtie9Yd2ODyG")
            let unmarked = try await client.request("POST", "/admin/cache/purge")
            let admin = [(OwnEndpointStage.adminHeader, "1")]
            let purged = try await client.request("POST", "/admin/cache/purge?prefix=/v1/artists", headers: admin)
            let again = try await client.request("GET", Self.artist)
            let album = try await client.request("GET", "/v1/albums/3IqzqH6ShrRtie9Yd2ODyG")
            let bad = try await client.request("POST", "/admin/cache/purge?prefix=v1", headers: admin)
            await client.close()
            // A web page could send a plain POST to the proxy on this machine: the header keeps it out.
            #expect(unmarked.status == 403)
            #expect(unmarked.text.contains(OwnEndpointStage.adminHeader))
            #expect(purged.status == 200)
            #expect(purged.text == #"{"purged":1}"#)
            #expect(again.headers["cache-status"] == ["spotify-proxy; fwd=miss; fwd-status=200; stored"])
            #expect(album.headers["cache-status"] == ["spotify-proxy; hit"])
            #expect(bad.status == 400)
        }
    }
}
