import Crypto
import FakeSpotify
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
@testable import SpotifyProxy
import SpotifyProxyTestSupport
import Synchronization
import Testing

/// A proxy shared by a team, against the fake Spotify over real sockets: access keys, per-key
/// budgets and users, request ids, metrics by route and key, HTTPS, and reloads under load.
@Suite("Team operation")
struct TeamOperationTests {
    static let artist = "/v1/artists/0TnOYISbd1XYRBk9myaseg"

    /// A keys file in a fresh directory; `lines` as written.
    static func keysFile(_ lines: [String]) throws -> String {
        let path = try temporaryDirectory().appendingPathComponent("keys").path
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func sha256(_ key: String) -> String {
        SHA256.hash(data: Array(key.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// The headers the fake received, from its echo answer.
    static func echoedHeaders(_ response: RawHTTPClient.Response) throws -> [(String, String)] {
        let object = try jsonObject(response)
        return try #require(object["headers"] as? [[String]]).map { ($0[0], $0[1]) }
    }

    @Test("keys: right via Authorization or X-Proxy-Key, wrong and missing are 401; never forwarded, never logged; own endpoints need one")
    func keys() async throws {
        let alice = "alice-\(UUID().uuidString)"
        let bob = "bob-\(UUID().uuidString)"
        let keys = try Self.keysFile(["alice sha256:\(Self.sha256(alice))", "bob \(bob)"])
        try await withProxy(configure: { $0.access.keysFile = keys; $0.cache.maxBytes = 0 }) { proxy in
            let client = try await proxy.client()
            let bearer = try await client.request("GET", "/v1/test/echo/keys", headers: [("Authorization", "Bearer \(alice)")])
            let header = try await client.request("GET", "/v1/test/echo/keys", headers: [(AccessStage.keyHeader, bob), ("Authorization", "Bearer None")])
            #expect(bearer.status == 200)
            #expect(header.status == 200)
            for echoed in [try Self.echoedHeaders(bearer), try Self.echoedHeaders(header)] {
                #expect(!echoed.contains { $0.1.contains(alice) || $0.1.contains(bob) }, "a key reached Spotify: \(echoed)")
                #expect(!echoed.contains { $0.0.lowercased() == "x-proxy-key" })
                #expect(echoed.contains { $0.0.lowercased() == "authorization" && $0.1.hasPrefix("Bearer fake-at-") })
            }
            let upstreamBefore = proxy.fake.counters.apiRequests
            let wrong = try await client.request("GET", Self.artist, headers: [("Authorization", "Bearer \(alice)x")])
            let missing = try await client.request("GET", Self.artist)
            #expect(proxy.fake.counters.apiRequests == upstreamBefore, "a refused request reached Spotify")
            for (response, words) in [(wrong, "not valid for this proxy"), (missing, "needs an access key")] {
                #expect(response.status == 401)
                #expect(response.headers["www-authenticate"].first == #"Bearer realm="spotify-proxy""#)
                // As on Spotify's own errors: a browser app can read the message.
                #expect(response.headers["access-control-allow-origin"] == ["*"])
                let error = try #require(try jsonObject(response)["error"] as? [String: Any])
                #expect(error["status"] as? Int == 401)
                #expect((error["message"] as? String)?.contains(words) == true, "\(response.text)")
            }
            // Two X-Proxy-Key headers: the same key twice is that key; two keys are refused.
            let twice = try await client.request("GET", "/v1/test/echo/keys", headers: [(AccessStage.keyHeader, bob), (AccessStage.keyHeader, bob)])
            #expect(twice.status == 200)
            let two = try await client.request("GET", "/v1/test/echo/keys", headers: [(AccessStage.keyHeader, bob), (AccessStage.keyHeader, alice)])
            #expect(two.status == 400 && two.text.contains("two different X-Proxy-Key headers (or two different Authorization bearers); send one access key"), "\(two.text)")
            #expect(!two.text.contains(alice) && !two.text.contains(bob))
            // The same for two bearers (the first one used to be taken); X-Proxy-Key still wins
            // over them, and an empty one is none.
            let bearers = try await client.request("GET", "/v1/test/echo/keys", headers: [("Authorization", "Bearer \(bob)"), ("Authorization", "Bearer \(alice)")])
            #expect(bearers.status == 400, "\(bearers.text)")
            let keyOverBearers = try await client.request(
                "GET", "/v1/test/echo/keys", headers: [("Authorization", "Bearer \(bob)"), ("Authorization", "Bearer \(alice)"), (AccessStage.keyHeader, bob)])
            #expect(keyOverBearers.status == 200)
            let emptyKey = try await client.request("GET", "/v1/test/echo/keys", headers: [(AccessStage.keyHeader, ""), ("Authorization", "Bearer \(bob)")])
            #expect(emptyKey.status == 200, "\(emptyKey.text)")
            // The proxy's own endpoints: /healthz open, the rest behind a key.
            #expect(try await client.request("GET", "/healthz").status == 200)
            for path in ["/readyz", "/metrics", "/admin/status"] {
                #expect(try await client.request("GET", path).status == 401, "\(path) without a key")
                #expect(try await client.request("GET", path, headers: [(AccessStage.keyHeader, bob)]).status == 200, "\(path) with a key")
            }
            let purge = try await client.request("POST", "/admin/cache/purge", headers: [(OwnEndpointStage.adminHeader, "1")])
            #expect(purge.status == 401)
            await client.close()
            let logs = proxy.logs.all.joined(separator: "\n")
            #expect(!logs.contains(alice) && !logs.contains(bob), "a key was logged")
            #expect(logs.contains("key=alice") && logs.contains("key=bob"), "the request lines name the key's label")
            #expect(logs.contains("client=127.0.0.1:"))
        }
    }

    @Test("a key's budget: beyond N requests per 30 s the proxy answers 429 with Retry-After itself; other keys go on")
    func budget() async throws {
        let keys = try Self.keysFile(["carol carol-key budget=2", "dave dave-key"])
        try await withProxy(configure: { $0.access.keysFile = keys }) { proxy in
            let client = try await proxy.client()
            let carol = [("Authorization", "Bearer carol-key")]
            #expect(try await client.request("GET", Self.artist, headers: carol).status == 200)
            #expect(try await client.request("GET", "/v1/test/echo/budget", headers: carol).status == 200)
            let upstream = proxy.fake.counters.apiRequests
            let refused = try await client.request("GET", "/v1/test/echo/budget", headers: carol)
            #expect(refused.status == 429)
            let retryAfter = try #require(refused.headers["retry-after"].first.flatMap { Int($0) })
            #expect((1...30).contains(retryAfter))
            let error = try #require(try jsonObject(refused)["error"] as? [String: Any])
            #expect(error["status"] as? Int == 429)
            #expect((error["message"] as? String)?.contains("carol has spent its budget of 2 requests per 30 s") == true)
            #expect(proxy.fake.counters.apiRequests == upstream, "the refused request reached Spotify")
            #expect(try await client.request("GET", "/v1/test/echo/budget", headers: [("Authorization", "Bearer dave-key")]).status == 200)
            // Counted with the proxy's other 429s, for an alert on a teammate out of budget.
            let dave = [("Authorization", "Bearer dave-key")]
            let metrics = MetricsTests.parse(try await client.request("GET", "/metrics", headers: dave).text)
            #expect(MetricsTests.sum(metrics, "spotify_proxy_rate_limited_answers_total", ["reason": "key_budget"]) == 1)
            let status = try ProxyStatus.decoder().decode(ProxyStatus.self, from: Data(try await client.request("GET", "/admin/status", headers: dave).body))
            #expect(status.governor?.answeredLocally == ["key_budget": 1], "\(String(describing: status.governor))")
            await client.close()
        }
    }

    @Test("a key's user: /v1/me with alice's key is alice's, with bob's is bob's; a key cannot ask for another user")
    func keyUser() async throws {
        let users = try UserTokenTests.usersDirectory()
        let keys = try Self.keysFile(["alice alice-key user=alice", "bob bob-key user=bob", "ops ops-key"])
        try await withProxy(configure: { $0.users.directory = users; $0.access.keysFile = keys }) { proxy in
            _ = try await UserTokenTests.login("alice", as: "alice-id", fake: proxy.fake, users: users)
            _ = try await UserTokenTests.login("bob", as: "bob-id", fake: proxy.fake, users: users)
            let client = try await proxy.client()
            let alice = try await client.request("GET", "/v1/me", headers: [("Authorization", "Bearer alice-key")])
            let bob = try await client.request("GET", "/v1/me", headers: [("Authorization", "Bearer bob-key")])
            let borrowing = try await client.request("GET", "/v1/me", headers: [("Authorization", "Bearer alice-key"), ("X-Spotify-User", "bob")])
            let ops = try await client.request("GET", "/v1/me", headers: [("Authorization", "Bearer ops-key"), ("X-Spotify-User", "bob")])
            await client.close()
            #expect(alice.text.contains(#""id":"alice-id""#), "\(alice.text)")
            #expect(bob.text.contains(#""id":"bob-id""#), "\(bob.text)")
            #expect(borrowing.status == 403)
            #expect(borrowing.text.contains("acts as the Spotify user alice"))
            #expect(ops.text.contains(#""id":"bob-id""#), "a key without user= names one with the header")
        }
    }

    @Test("a key's user whose refresh token Spotify refused: its teammate is told to ask whoever runs the proxy, without the server's paths")
    func refusedLoginTeammate() async throws {
        let users = try UserTokenTests.usersDirectory()
        let keys = try Self.keysFile(["dana dana-key user=alice"])
        try await withProxy(
            configure: { $0.users.directory = users; $0.access.keysFile = keys },
            prepareFake: { $0.setUserTokenLifetime(seconds: 2) }
        ) { proxy in
            _ = try await UserTokenTests.login("alice", as: "alice-id", fake: proxy.fake, users: users)
            let client = try await proxy.client()
            let key = [("Authorization", "Bearer dana-key")]
            #expect(try await client.request("GET", "/v1/me", headers: key).status == 200)
            proxy.fake.revokeRefreshTokens(ofUser: "alice-id")
            // The token expires in 2 s; the refresh after it is refused, for good.
            #expect(try await eventually(10) { try await client.request("GET", "/v1/me", headers: key).status == 401 })
            let refused = try await client.request("GET", "/v1/me", headers: key)
            await client.close()
            #expect(refused.status == 401)
            #expect(
                refused.text.contains(
                    "Spotify user alice's login can no longer be used (logged out, or its refresh token refused by Spotify): ask whoever runs this proxy to log alice in (`spotify-proxy login --user alice` with the proxy's --config)"
                ), "\(refused.text)")
        }
    }

    @Test("metrics by method, route template, status class and key; upstream latency by route; tokens, connections; values move")
    func metricsByRouteAndKey() async throws {
        let keys = try Self.keysFile(["alice alice-key", "bob bob-key"])
        try await withProxy(configure: { $0.access.keysFile = keys; $0.cache.maxBytes = 0 }) { proxy in
            let client = try await proxy.client()
            let alice = [("Authorization", "Bearer alice-key")]
            for _ in 0..<2 { #expect(try await client.request("GET", Self.artist, headers: alice).status == 200) }
            #expect(try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg/albums?limit=2", headers: alice).status == 200)
            #expect(try await client.request("GET", "/v1/artists/nonexistent00000000000", headers: [("Authorization", "Bearer bob-key")]).status == 404)
            #expect(try await client.request("GET", Self.artist, headers: [("Authorization", "Bearer nobody")]).status == 401)
            func scrape() async throws -> (String, [MetricsTests.Sample]) {
                let response = try await client.request("GET", "/metrics", headers: alice)
                #expect(response.status == 200)
                return (response.text, MetricsTests.parse(response.text))
            }
            let (text, samples) = try await scrape()
            let requests = "spotify_proxy_requests_total"
            #expect(MetricsTests.sum(samples, requests, ["method": "GET", "route": "/v1/artists/{id}", "code": "2xx", "key": "alice"]) == 2)
            #expect(MetricsTests.sum(samples, requests, ["route": "/v1/artists/{id}/albums", "key": "alice"]) == 1)
            #expect(MetricsTests.sum(samples, requests, ["route": "/v1/artists/{id}", "code": "4xx", "key": "bob"]) == 1)
            #expect(MetricsTests.sum(samples, requests, ["code": "4xx", "key": "-"]) == 1, "the refused request, without a key")
            #expect(MetricsTests.sum(samples, "spotify_proxy_upstream_duration_seconds_count", ["route": "/v1/artists/{id}"]) == 3)
            #expect(MetricsTests.sum(samples, "spotify_proxy_token_refreshes_total", ["token": "app"]) >= 1)
            #expect(MetricsTests.sum(samples, "spotify_proxy_token_refresh_failures_total", ["token": "app"]) == 0)
            #expect(MetricsTests.sum(samples, "spotify_proxy_token_expires_in_seconds", ["token": "app"]) > 3000)
            #expect(MetricsTests.sum(samples, "spotify_proxy_open_connections") >= 1)
            // Bounded label values: no id, no key.
            for sample in samples {
                for value in sample.labels.values {
                    #expect(!value.contains("0TnOYISbd1XYRBk9myaseg") && !value.contains("nonexistent") && !value.contains("-key"), "\(sample.name) \(sample.labels)")
                }
            }
            #expect(!text.contains("alice-key"))
            #expect(try await client.request("GET", Self.artist, headers: alice).status == 200)
            let (_, later) = try await scrape()
            #expect(MetricsTests.sum(later, requests, ["route": "/v1/artists/{id}", "code": "2xx", "key": "alice"]) == 3)
            await client.close()
        }
    }

    @Test("X-Request-Id: a sane one is kept, forwarded and returned; a missing or unsafe one is replaced by a new id; logged, the own endpoints' answers too")
    func requestID() async throws {
        try await withProxy(configure: { $0.cache.maxBytes = 0 }) { proxy in
            let client = try await proxy.client()
            // Every answer is logged, the health check's too (not counted in /metrics: not the clients' traffic).
            let health = try await client.request("GET", "/healthz", headers: [("X-Request-Id", "probe-1")])
            #expect(health.status == 200 && health.headers["x-request-id"] == ["probe-1"])
            let metrics = MetricsTests.parse(try await client.request("GET", "/metrics").text)
            #expect(MetricsTests.sum(metrics, "spotify_proxy_requests_total", [:]) == 0)
            let kept = try await client.request("GET", "/v1/test/echo/id", headers: [("X-Request-Id", "trace-42:abc")])
            #expect(kept.headers["x-request-id"] == ["trace-42:abc"])
            #expect(try Self.echoedHeaders(kept).filter { $0.0.lowercased() == "x-request-id" }.map(\.1) == ["trace-42:abc"])
            let made = try await client.request("GET", "/v1/test/echo/id")
            let unsafe = try await client.request("GET", "/v1/test/echo/id", headers: [("X-Request-Id", "two words;" + String(repeating: "x", count: 200))])
            let local = try await client.request("GET", "/nope")
            for response in [made, unsafe, local] {
                let id = try #require(response.headers["x-request-id"].first)
                #expect(id.count == 32 && id.allSatisfy(\.isHexDigit), "\(id)")
            }
            #expect(made.headers["x-request-id"] != unsafe.headers["x-request-id"])
            #expect(try Self.echoedHeaders(made).contains { $0.0.lowercased() == "x-request-id" && $0.1 == made.headers["x-request-id"].first })
            await client.close()
            let logs = proxy.logs.all.joined(separator: "\n")
            #expect(logs.contains("request_id=trace-42:abc"))
            let probe = try #require(proxy.logs.all.first { $0.contains("request_id=probe-1") })
            #expect(probe.contains("path=/healthz") && probe.contains("status=200"), "\(probe)")
            #expect(logs.contains("request_id=\(made.headers["x-request-id"].first!)"))
        }
    }

    /// A certificate and key for 127.0.0.1, made with openssl in `directory`.
    /// A self-signed certificate for `name` (a subjectAltName such as `IP:127.0.0.1` or `DNS:proxy.test`).
    static func makeCertificate(in directory: URL, name: String = "IP:127.0.0.1", expired: Bool = false) async throws -> (certificate: String, key: String) {
        let certificate = directory.appendingPathComponent("cert.pem").path
        let key = directory.appendingPathComponent("key.pem").path
        let openssl = try #require(TLSUpstream.which("openssl"), "openssl is missing: run scripts/test, which installs it")
        let subject = "/CN=\(name.split(separator: ":").last ?? "")"
        if expired {
            // Self-signed with -days -1: it ended a day before it began.
            let request = directory.appendingPathComponent("request.pem").path
            try await ChildProcess.run(
                openssl, ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", request, "-subj", subject])
            try await ChildProcess.run(openssl, ["x509", "-req", "-in", request, "-signkey", key, "-days", "-1", "-out", certificate])
            return (certificate, key)
        }
        try await ChildProcess.run(
            openssl,
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", certificate,
                "-days", "2", "-subj", subject, "-addext", "subjectAltName=\(name)",
            ])
        return (certificate, key)
    }

    /// A proxy serving HTTPS on a certificate made for it in `directory`, for a test that stops it.
    static func startTLSProxy(
        in directory: URL, configure: (inout ProxyConfiguration) -> Void = { _ in }, prepareFake: (FakeSpotify) -> Void = { _ in }
    ) async throws -> (proxy: ProxyHarness, certificate: String) {
        let (certificate, key) = try await Self.makeCertificate(in: directory)
        let proxy = try await ProxyHarness.start(
            configure: {
                $0.tlsCertificate = certificate
                $0.tlsKey = key
                configure(&$0)
            }, prepareFake: prepareFake)
        return (proxy, certificate)
    }

    /// `body` with a proxy serving HTTPS on a certificate made for it (its path passed along).
    static func withTLSProxy(
        configure: (inout ProxyConfiguration) -> Void = { _ in }, _ body: (ProxyHarness, _ certificate: String) async throws -> Void
    ) async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (certificate, key) = try await Self.makeCertificate(in: directory)
        try await withProxy(configure: {
            $0.tlsCertificate = certificate
            $0.tlsKey = key
            configure(&$0)
        }) { proxy in try await body(proxy, certificate) }
    }

    @Test("HTTPS on the listener: a round trip with a certificate made in the test; links point at https://; plain HTTP gets a plain 400 saying to use https://")
    func tls() async throws {
        try await Self.withTLSProxy { proxy, certificate in
            var upstream = UpstreamConfiguration()
            upstream.caBundle = certificate
            let base = "https://127.0.0.1:\(proxy.port)"
            let response = try await UpstreamClient.withRunning(configuration: upstream) { client in
                try await client.perform(method: "GET", url: base + Self.artist, headers: [], body: nil, on: MultiThreadedEventLoopGroup.singleton.next())
            }
            #expect(response.status == 200)
            let body = String(decoding: response.body.readableBytesView, as: UTF8.self)
            #expect(body.contains("\"\(base)/v1/artists/0TnOYISbd1XYRBk9myaseg\""), "\(body.prefix(400))")
            // A plain-HTTP request to the HTTPS port: a plain 400 that says so (as nginx), then close.
            let plain = try await proxy.client()
            try await plain.send("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            let refused = try await plain.response()
            #expect(refused.status == 400)
            #expect(refused.text.contains("plain HTTP came to an HTTPS listener: use an https:// URL"))
            #expect(refused.headers["connection"] == ["close"])
            #expect(refused.headers["cache-control"] == ["private, max-age=0"], "as every refusal")
            let requestID = try #require(refused.headers["x-request-id"].first)
            try await plain.waitForClose()
            await plain.close()
            // Logged and counted like every other answer.
            let line = try #require(proxy.logs.all.first { $0.contains(requestID) })
            #expect(line.contains("status=400") && line.contains("plain HTTP on the HTTPS listener"), "\(line)")
            let metrics = try await UpstreamClient.withRunning(configuration: upstream) { client in
                try await client.perform(method: "GET", url: base + "/metrics", headers: [], body: nil, on: MultiThreadedEventLoopGroup.singleton.next())
            }
            let text = String(decoding: metrics.body.readableBytesView, as: UTF8.self)
            #expect(MetricsTests.sum(MetricsTests.parse(text), "spotify_proxy_requests_total", ["code": "4xx", "key": "-"]) == 1)
        }
    }

    @Test("HTTPS: TLS 1.0 and 1.1 are refused (RFC 8996), 1.2 and 1.3 accepted")
    func tlsVersions() async throws {
        try await Self.withTLSProxy { proxy, certificate in
            for version in [TLSVersion.tlsv1, .tlsv11] {
                await #expect(throws: (any Error).self, "TLS \(version) accepted") {
                    let channel = try await TLSRawClient.silentConnection(port: proxy.port, certificate: certificate, maximumVersion: version)
                    try await channel.close()
                }
            }
            for version in [TLSVersion.tlsv12, .tlsv13] {
                let channel = try await TLSRawClient.silentConnection(port: proxy.port, certificate: certificate, maximumVersion: version)
                try await channel.close()
            }
        }
    }

    @Test("HTTPS: a certificate outside its validity period is warned about (it expired, or is not valid yet), with what to do; a valid one is not")
    func tlsCertificateValidity() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (certificate, key) = try await Self.makeCertificate(in: directory)
        var config = ProxyConfiguration()
        #expect(config.tlsCertificateWarning() == nil, "no certificate")
        config.tlsCertificate = certificate
        config.tlsKey = key
        let now = time(nil)
        #expect(config.tlsCertificateWarning(now: now) == nil)
        // Made for 2 days from now: in 3 days it has expired; a day ago it was not valid yet.
        let expired = try #require(config.tlsCertificateWarning(now: now + 3 * 86_400))
        #expect(expired.hasPrefix("server.tls_cert = \(certificate) expired on ") && expired.hasSuffix(" GMT: clients will refuse it; put a valid one in its place and run spotify-proxy reload"), "\(expired)")
        let early = try #require(config.tlsCertificateWarning(now: now - 86_400))
        #expect(early.contains("is not valid before "), "\(early)")
    }

    @Test("HTTPS: refusals answered as over plain HTTP, in the same words, the body of a CONNECT's 405 included; a HEAD's answer has no body", arguments: [
        ("CONNECT api.spotify.com:443 HTTP/1.1\r\nHost: api.spotify.com:443\r\n\r\n", "405 Method Not Allowed", "CONNECT is not supported"),
        ("POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", "400 Bad Request", "can't be present with"),
        ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "400 Bad Request", "HTTP/2 with prior knowledge (the PRI preface) is not supported"),
        ("GET /v1/x HTTP/2.0\r\nHost: x\r\n\r\n", "400 Bad Request", "HTTP/2.0 is not supported"),
        // Pipelined: the HEAD's answer ends with its head, so the GET's begins right after it.
        ("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "200 OK", "\r\n\r\nHTTP/1.1 200 OK"),
    ])
    func tlsRefusals(request: String, status: String, expected: String) async throws {
        try await Self.withTLSProxy { proxy, certificate in
            // Every request here ends with the connection closed by the proxy.
            let all = String(decoding: try await TLSRawClient.exchange(port: proxy.port, certificate: certificate, sending: request), as: UTF8.self)
            #expect(all.hasPrefix("HTTP/1.1 \(status)\r\n"), "\(all)")
            #expect(all.contains(expected), "\(all)")
            if status != "200 OK" {
                let body = try #require(all.range(of: "\r\n\r\n").map { all[$0.upperBound...] })
                #expect(body.hasPrefix(#"{"error":{"status":"#) && body.contains("; send ") || request.hasPrefix("CONNECT"), "\(all)")
                let length = try #require(all.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") })
                #expect(Int(length.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) == body.utf8.count, "\(all)")
            }
        }
    }

    @Test("HTTPS: a body refused with 413 while it still comes: the client can send it all and reads the 413")
    func tlsOversizeBody() async throws {
        try await Self.withTLSProxy(configure: { $0.maxBodyBytes = 1000 }) { proxy, certificate in
            let request = "POST /v1/test/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4000000\r\n\r\n" + String(repeating: "a", count: 4_000_000)
            let all = String(decoding: try await TLSRawClient.exchange(port: proxy.port, certificate: certificate, sending: request), as: UTF8.self)
            #expect(all.hasPrefix("HTTP/1.1 413 Payload Too Large\r\n"), "\(all.prefix(300))")
        }
    }

    @Test("HTTPS: a shutdown does not wait NIO's 5 s for a client that never answers TLS's close_notify (an idle one that reads nothing)")
    func tlsShutdownCloseNotify() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (proxy, certificate) = try await Self.startTLSProxy(in: directory)
        let silent = try await TLSRawClient.silentConnection(port: proxy.port, certificate: certificate)
        let started = ContinuousClock.now
        try await proxy.stop()
        let took = ContinuousClock.now - started
        try? await silent.close()
        #expect(took < .seconds(3), "the shutdown took \(took)")
    }

    @Test("HTTPS: a request still waiting for Spotify when the shutdown's grace period ends is answered 503 with Retry-After and Connection: close, and logged, as over plain HTTP")
    func tlsShutdownPastGrace() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (proxy, certificate) = try await Self.startTLSProxy(in: directory) { $0.shutdownGrace = .milliseconds(300) }
        let before = proxy.fake.counters.apiRequests
        let exchange = Task {
            try await TLSRawClient.exchange(port: proxy.port, certificate: certificate, sending: "GET /v1/test/slow/10000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        }
        let arrived = try await eventually(5) { proxy.fake.counters.apiRequests > before }
        #expect(arrived)
        try await proxy.stop()
        let all = String(decoding: try await exchange.value, as: UTF8.self)
        #expect(all.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"), "\(all)")
        let head = all.lowercased()
        #expect(head.contains("retry-after: 1\r\n") && head.contains("connection: close\r\n"), "\(all)")
        #expect(all.contains("the proxy is shutting down"), "\(all)")
        // Answered before the listener's shutdown ends (it used to be answered later, when the
        // curl loop stopped: a process had exited by then).
        let lines = proxy.logs.all
        let answered = lines.firstIndex { $0.contains("/v1/test/slow/10000") && $0.contains("status=503") }
        let passed = lines.firstIndex { $0.contains("shutdown grace period passed") }
        #expect(answered != nil && passed != nil && answered! < passed!, "\(lines)")
    }

    @Test("HTTPS: a request still waiting for its token when the shutdown's grace period ends is answered 503 with Retry-After: it never left, so it is safe to retry")
    func tlsShutdownWhileWaitingForToken() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let (proxy, certificate) = try await Self.startTLSProxy(
            in: directory,
            configure: {
                $0.shutdownGrace = .milliseconds(300)
                $0.tokenWait = .seconds(20)
            }, prepareFake: { $0.setTokenDelay(.seconds(4)) })
        let exchange = Task {
            try await TLSRawClient.exchange(port: proxy.port, certificate: certificate, sending: "GET \(Self.artist) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        }
        #expect(try await eventually(5) { proxy.runtime.context.metrics.openConnections == 1 })
        try await proxy.stop()
        let all = String(decoding: try await exchange.value, as: UTF8.self)
        #expect(all.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n"), "\(all)")
        #expect(all.lowercased().contains("retry-after: 1\r\n"), "\(all)")
        #expect(all.contains("stopped this request before Spotify answered; retry it"), "\(all)")
        #expect(proxy.fake.counters.apiRequests == 0)
    }

    @Test("HTTPS: a HEAD forwarded as a HEAD (links not rewritten, cache off) whose answer has no length: its answer ends with its head, not even a chunked end after it")
    func tlsForwardedHead() async throws {
        try await Self.withTLSProxy(configure: {
            $0.rewriteLinks = false
            $0.cache.maxBytes = 0
        }) { proxy, certificate in
            let requests = "HEAD \(Self.artist) HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            let all = String(decoding: try await TLSRawClient.exchange(port: proxy.port, certificate: certificate, sending: requests), as: UTF8.self)
            let end = try #require(all.range(of: "\r\n\r\n"), "\(all)")
            let head = all[..<end.lowerBound].lowercased()
            #expect(head.hasPrefix("http/1.1 200 ok"), "\(all)")
            // Spotify's gzip, decoded by curl: the length is not the client's, so the head says chunked.
            #expect(!head.contains("content-length:") && head.contains("transfer-encoding: chunked"), "\(all)")
            #expect(all[end.upperBound...].hasPrefix("HTTP/1.1 200 OK\r\n"), "\(all)")
            #expect(proxy.fake.counters.apiRequests == 1)
        }
    }

    /// openssl's TLS client, running: what is written to `input` goes to the proxy, and what it
    /// receives goes to `output`, a pipe nobody reads until the test does. Once the pipe is full
    /// it stops reading the socket: a client that does not take its answers.
    static func unreadingClient(port: Int, certificate: String) throws -> (Process, input: Pipe, output: Pipe) {
        let openssl = try #require(TLSUpstream.which("openssl"))
        let client = Process()
        client.executableURL = URL(fileURLWithPath: openssl)
        client.arguments = ["s_client", "-connect", "127.0.0.1:\(port)", "-quiet", "-CAfile", certificate]
        let input = Pipe()
        let output = Pipe()
        client.standardInput = input
        client.standardOutput = output
        client.standardError = FileHandle.nullDevice
        try client.runTiedToTestProcess()
        return (client, input, output)
    }

    @Test("HTTPS: a client that pipelines 200 requests and does not read has few of them fetched (the next waits while the channel is unwritable); once read, all 200 come whole and in order")
    func tlsPipelinedUnread() async throws {
        try await Self.withTLSProxy { proxy, certificate in
            let count = 200
            let size = 100_000
            let (client, input, output) = try Self.unreadingClient(port: proxy.port, certificate: certificate)
            defer { if client.isRunning { client.terminate() } }
            var requests = ""
            for index in 0..<count {
                requests += "GET /v1/test/bytes/\(size)?i=\(index) HTTP/1.1\r\nHost: 127.0.0.1\r\n\(index == count - 1 ? "Connection: close\r\n" : "")\r\n"
            }
            let before = proxy.fake.counters.apiRequests
            try input.fileHandleForWriting.write(contentsOf: Data(requests.utf8))
            // As over plain HTTP (ProxyIntegrationTests.pipelinedUnread): no event says that
            // something does not happen, so the upstream's count is watched for 2 s.
            let flooded = try await eventually(2) { proxy.fake.counters.apiRequests - before > 80 }
            #expect(!flooded, "\(proxy.fake.counters.apiRequests - before) requests went upstream")
            let reader = output.fileHandleForReading
            let all = try await Blocking.run { [UInt8](reader.readDataToEndOfFile()) }
            let (answers, end) = SmallWindowReader.answers(in: all, bodyBytes: size)
            #expect(answers == count)
            #expect(end == all.count)
        }
    }

    @Test("HTTPS: a client that takes nothing of its answer is closed after the idle timeout (nginx's send_timeout), and the request logged as cut by the proxy for that")
    func tlsUnreadAnswerClosed() async throws {
        try await Self.withTLSProxy(configure: {
            $0.clientIdleTimeout = .seconds(1)
            $0.cache.maxBytes = 0
        }) { proxy, certificate in
            let (client, input, _) = try Self.unreadingClient(port: proxy.port, certificate: certificate)
            defer { if client.isRunning { client.terminate() } }
            let request = "GET /v1/test/bytes/\(12 * 1024 * 1024) HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: never-read-tls\r\n\r\n"
            try input.fileHandleForWriting.write(contentsOf: Data(request.utf8))
            let logs = proxy.logs
            let cut = try await eventually(15) { logs.all.contains { $0.contains("never-read-tls") && $0.contains("the client took none of the answer for server.idle_timeout; the proxy closed the connection") } }
            #expect(cut)
        }
    }

    @Test("HTTPS: slowloris on the head: a byte every 200 ms does not keep a connection past the idle timeout (as over plain HTTP)")
    func tlsHeadTrickle() async throws {
        try await Self.withTLSProxy(configure: { $0.clientIdleTimeout = .seconds(1) }) { proxy, certificate in
            // A byte written after openssl has gone must fail the write, not kill the test process.
            signal(SIGPIPE, SIG_IGN)
            let (client, input, _) = try Self.unreadingClient(port: proxy.port, certificate: certificate)
            defer { if client.isRunning { client.terminate() } }
            let started = ContinuousClock.now
            let head = Array("GET \(Self.artist) HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: \(String(repeating: "a", count: 60))".utf8)
            for byte in head where client.isRunning {
                // The client's pace, not a wait: the whole head would take 27 s.
                try await Task.sleep(for: .milliseconds(200))
                try? input.fileHandleForWriting.write(contentsOf: Data([byte]))
            }
            let closed = try await eventually(5) { !client.isRunning }
            #expect(closed)
            // The head's second (from the connection's start) is up after 1 s; asked again every quarter.
            #expect(ContinuousClock.now - started < .seconds(4))
            // Logged and counted as a 408 under a placeholder line, as over plain HTTP.
            #expect(proxy.logs.all.contains { $0.contains("status=408") && $0.contains("method=-") }, "\(proxy.logs.all)")
        }
    }

    /// Tells a client loop to stop after its current request (cancelling would cut that request).
    final class Stop: Sendable {
        let flag = Atomic<Bool>(false)
        func callAsFunction() { self.flag.store(true, ordering: .relaxed) }
        var requested: Bool { self.flag.load(ordering: .relaxed) }
    }

    /// A client asking `path` with `headers` until `stop`; what it saw is in the tally.
    static func clientLoop(port: Int, path: String, headers: [(String, String)], tally: StatusTally, stop: Stop) -> Task<Void, any Error> {
        Task {
            let client = try await RawHTTPClient.connect(port: port)
            while !stop.requested {
                let status = try await client.request("GET", path, headers: headers).status
                tally.counts.withLock { $0[status, default: 0] += 1 }
            }
            await client.close()
        }
    }

    static func total(_ tally: StatusTally) -> Int { tally.counts.withLock { $0.values.reduce(0, +) } }

    @Test("reload under load: a new key works and a removed one stops; a bad keys file is refused whole, the old keys stay; the client running throughout sees no failure")
    func reloadUnderLoad() async throws {
        let keys = try Self.keysFile(["alice alice-key", "bob bob-key"])
        try await withProxy(configure: { $0.access.keysFile = keys; $0.cache.maxBytes = 0 }) { proxy in
            let tally = StatusTally()
            let stop = Stop()
            let loop = Self.clientLoop(port: proxy.port, path: "/v1/test/echo/reload", headers: [("Authorization", "Bearer alice-key")], tally: tally, stop: stop)
            let client = try await proxy.client()
            #expect(try await eventually { Self.total(tally) >= 5 })
            let tokens = proxy.fake.tokensIssued
            try "alice alice-key\ncarol carol-key budget=100\n".write(toFile: keys, atomically: true, encoding: .utf8)
            #expect(proxy.runtime.reload() == nil)
            #expect(try await client.request("GET", Self.artist, headers: [("Authorization", "Bearer carol-key")]).status == 200)
            #expect(try await client.request("GET", Self.artist, headers: [("Authorization", "Bearer bob-key")]).status == 401)
            let seen = Self.total(tally)
            #expect(try await eventually { Self.total(tally) >= seen + 5 })
            // A bad keys file: the reload is refused whole, the keys in force stay.
            try "alice alice-key\ncarol\n".write(toFile: keys, atomically: true, encoding: .utf8)
            let refused = try #require(proxy.runtime.reload())
            #expect(refused.message.contains("line 2"))
            #expect(try await client.request("GET", Self.artist, headers: [("Authorization", "Bearer carol-key")]).status == 200)
            let status = try await client.request("GET", "/admin/status", headers: [("Authorization", "Bearer alice-key")])
            let decoded = try ProxyStatus.decoder().decode(ProxyStatus.self, from: Data(status.body))
            #expect(decoded.reload?.generation == 1)
            #expect(decoded.reload?.error?.contains("line 2") == true)
            #expect(decoded.access?.keys == 2)
            // For an alert on a refused reload.
            let metrics = MetricsTests.parse(try await client.request("GET", "/metrics", headers: [("Authorization", "Bearer alice-key")]).text)
            #expect(MetricsTests.sum(metrics, "spotify_proxy_config_reloads_total", ["result": "applied"]) == 1)
            #expect(MetricsTests.sum(metrics, "spotify_proxy_config_reloads_total", ["result": "refused"]) == 1)
            #expect(MetricsTests.sum(metrics, "spotify_proxy_config_last_reload_successful") == 0)
            #expect(decoded.requestsLastHour["alice", default: 0] >= 10)
            #expect(decoded.requestsLastHour["carol"] == 2)
            #expect(proxy.fake.tokensIssued == tokens, "a reload keeps the current token")
            stop()
            try await loop.value
            await client.close()
            let statuses = tally.counts.withLock { $0 }
            #expect(Set(statuses.keys) == [200], "the client running throughout saw \(statuses)")
            #expect(proxy.logs.all.contains { $0.contains("configuration reload refused") && $0.contains("line 2") })
        }
    }

    @Test("reload signals a proxy running this very executable under another file name (a release binary renamed)")
    func reloadRenamedExecutable() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fake = try await FakeSpotify.start(group: MultiThreadedEventLoopGroup.singleton)
        let port = try LoopbackPort.free()
        let config = try writeProxyConfig(in: directory, port: port, fake: fake, sections: "[sink]\nkind = \"none\"\n")
        let renamed = directory.appendingPathComponent("proxy-1.2").path
        // A hard link where it can be one (a copy across file systems).
        do {
            try FileManager.default.linkItem(atPath: try requireProxyExecutable(), toPath: renamed)
        } catch {
            try FileManager.default.copyItem(atPath: try requireProxyExecutable(), toPath: renamed)
        }
        let proxy = try CommandRun(["serve", "--config", config.path], executable: renamed)
        defer { proxy.process.terminate() }
        #expect(try await eventually(30) { try await CommandRun.run(["status", "--config", config.path]).status == 0 }, "\(proxy.stderr)")
        let reload = try await CommandRun.run(["reload", "--config", config.path], executable: renamed)
        #expect(reload.status == 0, "\(reload.stderr)")
        #expect(reload.stdout.contains("configuration reloaded"), "\(reload.stdout)")
    }

    @Test("keys new and keys revoke run at once, as processes: every revoked key is gone, every new one is in the file")
    func keysCommandsAtOnce() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let keysPath = directory.appendingPathComponent("keys").path
        for index in 0..<6 {
            let made = try await CommandRun.run(["keys", "new", "--label", "old\(index)", "--keys-file", keysPath])
            #expect(made.status == 0, "\(made.stderr)")
        }
        let statuses = try await withThrowingTaskGroup(of: Int32.self) { group in
            for index in 0..<6 {
                group.addTask { try await CommandRun.run(["keys", "revoke", "--label", "old\(index)", "--keys-file", keysPath]).status }
                group.addTask { try await CommandRun.run(["keys", "new", "--label", "new\(index)", "--keys-file", keysPath]).status }
            }
            return try await group.reduce(into: [Int32]()) { $0.append($1) }
        }
        #expect(statuses == Array(repeating: 0, count: 12))
        let labels = try String(contentsOfFile: keysPath, encoding: .utf8).split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
        #expect(labels.sorted() == (0..<6).map { "new\($0)" })
    }

    @Test("as processes: keys new, list and revoke; SIGHUP takes a new key and drops a removed one under load; reload refuses a bad config and the old stays; status reports it")
    func sighupAsProcesses() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fake = try await FakeSpotify.start(group: MultiThreadedEventLoopGroup.singleton)
        let port = try LoopbackPort.free()
        let good = "[access]\nkeys_file = \"keys\"\n[sink]\nkind = \"none\"\n"
        let config = try writeProxyConfig(in: directory, port: port, fake: fake, sections: good)
        let keysPath = directory.appendingPathComponent("keys").path
        func newKey(_ label: String, _ extra: [String] = []) async throws -> String {
            let made = try await CommandRun.run(["keys", "new", "--label", label, "--config", config.path] + extra)
            #expect(made.status == 0, "\(made.stderr)")
            return made.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let alice = try await newKey("alice")
        let bob = try await newKey("bob", ["--budget", "1000"])
        let file = try String(contentsOfFile: keysPath, encoding: .utf8)
        #expect(file.contains("alice sha256:") && file.contains("bob sha256:") && file.contains("budget=1000"))
        #expect(!file.contains(alice) && !file.contains(bob), "the keys file holds hashes only")
        let mode = try FileManager.default.attributesOfItem(atPath: keysPath)[.posixPermissions] as? Int
        #expect(mode == 0o600)

        let proxy = try CommandRun(["serve", "--config", config.path])
        defer { proxy.process.terminate() }
        #expect(try await eventually(30) { (try? await RawHTTPClient.connect(port: port)) != nil }, "the proxy did not start: \(proxy.stderr)")
        let tally = StatusTally()
        let stop = Stop()
        let loop = Self.clientLoop(port: port, path: "/v1/test/echo/sighup", headers: [("Authorization", "Bearer \(alice)")], tally: tally, stop: stop)
        let client = try await RawHTTPClient.connect(port: port)
        #expect(try await eventually { Self.total(tally) >= 5 })

        let carol = try await newKey("carol")
        #expect(try await client.request("GET", Self.artist, headers: [("Authorization", "Bearer \(carol)")]).status == 401, "not before the reload")
        let revoked = try await CommandRun.run(["keys", "revoke", "--label", "bob", "--config", config.path])
        #expect(revoked.status == 0 && revoked.stdout.contains("access key bob removed from") && revoked.stdout.contains("spotify-proxy reload"), "\(revoked.stderr)")
        let kept = try String(contentsOfFile: keysPath, encoding: .utf8)
        #expect(!kept.contains("bob ") && kept.contains("alice sha256:") && kept.contains("carol sha256:"), "\(kept)")
        #expect(try FileManager.default.attributesOfItem(atPath: keysPath)[.posixPermissions] as? Int == 0o600)
        let unknown = try await CommandRun.run(["keys", "revoke", "--label", "bob", "--config", config.path])
        #expect(unknown.status == 2 && unknown.stderr.contains("has no key labelled bob"), "\(unknown.stderr)")
        #expect(kill(proxy.process.processIdentifier, SIGHUP) == 0)
        #expect(try await eventually(10) { try await client.request("GET", Self.artist, headers: [("Authorization", "Bearer \(carol)")]).status == 200 })
        #expect(try await client.request("GET", Self.artist, headers: [("Authorization", "Bearer \(bob)")]).status == 401)

        // spotify-proxy reload: applied with a good config, refused with a bad one (the old stays).
        let reloaded = try await CommandRun.run(["reload", "--config", config.path, "--key", alice])
        #expect(reloaded.status == 0, "\(reloaded.stderr)")
        #expect(reloaded.stdout.contains("configuration reloaded (reload 2 since start; access keys: 2)"), "\(reloaded.stdout)")
        // With a key the proxy does not hold yet, but the keys file does: the reload makes it held.
        let erin = try await newKey("erin")
        let byNewKey = try await CommandRun.run(["reload", "--config", config.path, "--key", erin])
        #expect(byNewKey.status == 0, "\(byNewKey.stderr)")
        #expect(byNewKey.stdout.contains("configuration reloaded (reload 3 since start; access keys: 3)"), "\(byNewKey.stdout)")
        #expect(!reloaded.stderr.contains("warning") && !byNewKey.stderr.contains("warning"), "\(reloaded.stderr)")
        // A key written out by hand, short enough to guess: reload says so, as the proxy's log does.
        try (try String(contentsOfFile: keysPath, encoding: .utf8) + "frank short-key\n").write(toFile: keysPath, atomically: true, encoding: .utf8)
        let guessable = try await CommandRun.run(["reload", "--config", config.path, "--key", alice])
        #expect(guessable.status == 0 && guessable.stdout.contains("access keys: 4"), "\(guessable.stdout)")
        #expect(guessable.stderr.contains("warning: the access keys of frank are written in the keys file and shorter than 16 characters"), "\(guessable.stderr)")
        #expect(!guessable.stderr.contains("short-key"), "never a key's value")
        // A key in neither: refused, and nothing signalled.
        let stranger = try await CommandRun.run(["reload", "--config", config.path, "--key", "not-a-key-of-this-proxy"])
        #expect(stranger.status == 1 && stranger.stderr.contains("give this command a key the proxy holds"), "\(stranger.stderr)")
        try (try String(contentsOf: config, encoding: .utf8).replacingOccurrences(of: #"keys_file = "keys""#, with: #"keys_file = "missing-keys""#))
            .write(to: config, atomically: true, encoding: .utf8)
        // The command sees what the proxy would refuse, and does not signal it.
        let refused = try await CommandRun.run(["reload", "--config", config.path, "--key", alice, "--proxy", "http://127.0.0.1:\(port)"])
        #expect(refused.status == 2, "a configuration error, as the file's own")
        #expect(refused.stderr.contains("the proxy would refuse this configuration, so nothing was signalled") && refused.stderr.contains("missing-keys"), "\(refused.stderr)")
        // SIGHUP all the same: the proxy refuses it, and keeps the keys it has.
        #expect(kill(proxy.process.processIdentifier, SIGHUP) == 0)
        #expect(try await eventually(10) { proxy.stderr.contains("configuration reload refused") && proxy.stderr.contains("missing-keys") }, "\(proxy.stderr)")
        #expect(try await client.request("GET", Self.artist, headers: [("Authorization", "Bearer \(carol)")]).status == 200)

        let status = try await CommandRun.run(["status", "--config", config.path, "--key", alice, "--proxy", "http://127.0.0.1:\(port)"])
        #expect(status.status == 0, "\(status.stderr)")
        // A file that does not even parse: with --proxy, status warns and reads the proxy all the
        // same; without, it says to give --proxy.
        let broken = directory.appendingPathComponent("broken.conf")
        try "[sink]\nworkers = \"two\"\n".write(to: broken, atomically: true, encoding: .utf8)
        let despite = try await CommandRun.run(["status", "--config", broken.path, "--key", alice, "--proxy", "http://127.0.0.1:\(port)"])
        #expect(despite.status == 0 && despite.stdout.contains(": ready") && despite.stderr.contains("warning:") && despite.stderr.contains("workers"), "\(despite.stderr)")
        let without = try await CommandRun.run(["status", "--config", broken.path, "--key", alice])
        #expect(without.status == 2 && without.stderr.contains("give --proxy URL"), "\(without.stderr)")
        // users asks the proxy as status does, with the key: without it, it says so.
        try UserStore(directory: directory.appendingPathComponent("users").path).save(
            StoredUser(label: "dana", refreshToken: "R1", scopes: ["user-read-private"], spotifyUserID: "dana-id", authorizedAt: Date()))
        let keyless = try await CommandRun.run(["users", "--config", config.path, "--proxy", "http://127.0.0.1:\(port)"])
        #expect(keyless.status == 0 && keyless.stdout.contains("(proxy wants a key: --key)"), "\(keyless.stdout)")
        let keyed = try await CommandRun.run(["users", "--config", config.path, "--key", alice, "--proxy", "http://127.0.0.1:\(port)"])
        #expect(keyed.status == 0 && keyed.stdout.contains("dana-id") && !keyed.stdout.contains("(proxy"), "\(keyed.stdout)")
        let wrong = try await CommandRun.run(["users", "--config", config.path, "--key", "not-a-key-of-this-proxy", "--proxy", "http://127.0.0.1:\(port)"])
        #expect(wrong.status == 0 && wrong.stdout.contains("(proxy refused the key given)"), "\(wrong.stdout)")
        #expect(status.stdout.contains(": ready"), "\(status.stdout)")
        #expect(status.stdout.contains("REFUSED") && status.stdout.contains("alice") && status.stdout.contains("4 keys"), "\(status.stdout)")
        let listed = try await CommandRun.run(["keys", "list", "--keys-file", keysPath])
        #expect(listed.status == 0)
        #expect(listed.stdout.contains("alice") && listed.stdout.contains("carol") && !listed.stdout.contains("bob"))
        #expect(!listed.stdout.contains(alice) && !listed.stdout.contains(carol))

        stop()
        try await loop.value
        await client.close()
        let statuses = tally.counts.withLock { $0 }
        #expect(Set(statuses.keys) == [200], "the client running throughout saw \(statuses)")
        #expect(await proxy.process.terminate(within: 30) != nil)
        try await fake.shutdown()
        #expect(!proxy.stderr.contains(alice) && !proxy.stderr.contains(carol), "a key was logged")
        #expect(proxy.stderr.contains("configuration reload refused"))
    }

    /// A configuration in `directory` for a proxy on a free port in front of `fake` (sink none,
    /// plus `sections`), its text changed by `edit`.
    static func processConfig(
        in directory: URL, fake: FakeSpotify, sections: String = "", edit: (String) -> String = { $0 }
    ) throws -> (config: URL, port: Int) {
        let port = try LoopbackPort.free()
        let config = try writeProxyConfig(in: directory, port: port, fake: fake, sections: "[sink]\nkind = \"none\"\n" + sections)
        try edit(try String(contentsOf: config, encoding: .utf8)).write(to: config, atomically: true, encoding: .utf8)
        return (config, port)
    }

    /// `spotify-proxy serve --config config` as a process, once its status answers (the caller stops it).
    static func serveWhenReady(_ config: URL) async throws -> CommandRun {
        let proxy = try CommandRun(["serve", "--config", config.path])
        #expect(try await eventually(30) { try await CommandRun.run(["status", "--config", config.path]).status == 0 }, "\(proxy.stderr)")
        return proxy
    }

    /// A `spotify-proxy serve` process in front of a fake of its own, as `withServedProcess` runs it.
    struct Served {
        let directory: URL
        let fake: FakeSpotify
        let config: URL
        let port: Int
        let proxy: CommandRun
    }

    /// `body` with a `spotify-proxy serve` process (configured by `processConfig` with `edit`,
    /// once `prepare` has made its files in the directory) in front of a fake of its own; then
    /// the process must exit within 30 s of SIGTERM. Returns what ran, for its log.
    @discardableResult
    static func withServedProcess(
        prepare: (URL) async throws -> Void = { _ in }, edit: (String) -> String = { $0 }, _ body: (Served) async throws -> Void
    ) async throws -> Served {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fake = try await FakeSpotify.start(group: MultiThreadedEventLoopGroup.singleton)
        try await prepare(directory)
        let (config, port) = try Self.processConfig(in: directory, fake: fake, edit: edit)
        let proxy = try await Self.serveWhenReady(config)
        defer { proxy.process.terminate() }
        let served = Served(directory: directory, fake: fake, config: config, port: port, proxy: proxy)
        try await body(served)
        #expect(await proxy.process.terminate(within: 30) != nil)
        try await fake.shutdown()
        return served
    }

    @Test("as processes: a second SIGTERM during the grace period ends it: the request still waiting for Spotify is answered 503 at once, and the proxy exits")
    func secondSignalEndsGrace() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fake = try await FakeSpotify.start(group: MultiThreadedEventLoopGroup.singleton)
        let (config, port) = try Self.processConfig(in: directory, fake: fake) { $0.replacingOccurrences(of: "[server]\n", with: "[server]\nshutdown_grace = 60\n") }
        let proxy = try await Self.serveWhenReady(config)
        defer { proxy.process.terminate() }
        let client = try await RawHTTPClient.connect(port: port)
        let before = fake.counters.apiRequests
        try await client.send("GET /v1/test/slow/30000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        #expect(try await eventually(10) { fake.counters.apiRequests > before })
        let started = ContinuousClock.now
        #expect(kill(proxy.process.processIdentifier, SIGTERM) == 0)
        #expect(try await eventually(10) { proxy.stderr.contains("shutting down") }, "\(proxy.stderr)")
        #expect(kill(proxy.process.processIdentifier, SIGTERM) == 0)
        let response = try await client.response()
        #expect(response.status == 503)
        #expect(await proxy.process.exitStatus(within: 20) == 0)
        #expect(ContinuousClock.now - started < .seconds(20), "not the 60 s grace period, nor the 30 s answer")
        #expect(proxy.stderr.contains("shutdown grace period ended by a second signal"), "\(proxy.stderr)")
        await client.close()
        try await fake.shutdown()
    }

    @Test("as processes: two SIGTERMs at once with nothing in flight: the proxy exits without saying requests were cut short")
    func secondSignalIdle() async throws {
        try await Self.withServedProcess { served in
            let proxy = served.proxy
            #expect(kill(proxy.process.processIdentifier, SIGTERM) == 0)
            #expect(kill(proxy.process.processIdentifier, SIGTERM) == 0)
            #expect(await proxy.process.exitStatus(within: 20) == 0)
            #expect(!proxy.stderr.contains("requests still in flight"), "\(proxy.stderr)")
        }
    }

    @Test("as processes over HTTPS: requests still waiting for Spotify when the grace period ends are answered 503 before the proxy exits (it used to exit under them: an empty reply)")
    func tlsProcessShutdownPastGrace() async throws {
        try await Self.withServedProcess(
            prepare: { directory in _ = try await Self.makeCertificate(in: directory) },
            edit: { $0.replacingOccurrences(of: "[server]\n", with: "[server]\nshutdown_grace = 1\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n") }
        ) { served in
            let (fake, proxy) = (served.fake, served.proxy)
            let certificate = served.directory.appendingPathComponent("cert.pem").path
            let before = fake.counters.apiRequests
            // Several, on connections of their own (targets of their own: the cache would make one
            // request of the same four): each answer raced the exit.
            let exchanges = (0..<4).map { n in
                Task {
                    try await TLSRawClient.exchange(
                        port: served.port, certificate: certificate, sending: "GET /v1/test/slow/30000?n=\(n) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                }
            }
            #expect(try await eventually(10) { fake.counters.apiRequests >= before + 4 }, "\(fake.counters.apiRequests - before) arrived")
            #expect(kill(proxy.process.processIdentifier, SIGTERM) == 0)
            for exchange in exchanges {
                let all = String(decoding: try await exchange.value, as: UTF8.self)
                #expect(all.hasPrefix("HTTP/1.1 503 Service Unavailable\r\n") && all.contains("the proxy is shutting down"), "\(all)")
            }
            #expect(await proxy.process.exitStatus(within: 20) == 0)
            #expect(proxy.stderr.contains("shutdown grace period passed"), "\(proxy.stderr)")
            #expect(proxy.stderr.components(separatedBy: "status=503").count - 1 == 4, "\(proxy.stderr)")
        }
    }

    @Test("as processes: the client secret changed, then put back: the first reload names it as waiting for a restart (the users' refreshes), the second nothing")
    func credentialsPutBack() async throws {
        try await Self.withServedProcess { served in
            let good = try String(contentsOf: served.config, encoding: .utf8)
            try good.replacingOccurrences(of: "client_secret = \"\(served.fake.clientSecret)\"", with: "client_secret = \"another-secret\"")
                .write(to: served.config, atomically: true, encoding: .utf8)
            let changed = try await CommandRun.run(["reload", "--config", served.config.path])
            #expect(changed.status == 0 && changed.stdout.contains("spotify.client_id/client_secret for logged-in users' refreshes"), "\(changed.stdout)")
            try good.write(to: served.config, atomically: true, encoding: .utf8)
            let back = try await CommandRun.run(["reload", "--config", served.config.path])
            #expect(back.status == 0 && back.stdout.contains("configuration reloaded"), "\(back.stderr)")
            #expect(!back.stdout.contains("next restart"), "\(back.stdout)")
        }
    }

    @Test("as processes: a wrong client secret fixed in the file and reloaded takes effect at once, not at the next retry a minute later")
    func fixedSecretReloaded() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fake = try await FakeSpotify.start(group: MultiThreadedEventLoopGroup.singleton)
        var good = ""
        let (config, port) = try Self.processConfig(in: directory, fake: fake) { text in
            good = text
            return text.replacingOccurrences(of: "client_secret = \"\(fake.clientSecret)\"", with: "client_secret = \"wrong-secret\"")
        }
        let proxy = try CommandRun(["serve", "--config", config.path])
        defer { proxy.process.terminate() }
        #expect(try await eventually(30) { proxy.stderr.contains("refused the app's credentials") }, "\(proxy.stderr)")
        let client = try await RawHTTPClient.connect(port: port)
        let refused = try await client.request("GET", "/readyz")
        #expect(refused.status == 503)
        try good.write(to: config, atomically: true, encoding: .utf8)
        let reloaded = try await CommandRun.run(["reload", "--config", config.path])
        #expect(reloaded.status == 0, "\(reloaded.stderr)")
        // The configuration error's backoff is 60 s: ready well before it.
        let started = ContinuousClock.now
        #expect(try await eventually(10) { try await client.request("GET", "/readyz").status == 200 })
        #expect(ContinuousClock.now - started < .seconds(10))
        await client.close()
        #expect(await proxy.process.terminate(within: 30) != nil)
        try await fake.shutdown()
        #expect(!proxy.stderr.contains("wrong-secret") && !proxy.stderr.contains(fake.clientSecret), "a secret was logged")
    }

    @Test("as processes: a reload after server.listen changed in the file says where to find the proxy; applied, it names what waits for a restart; a file the proxy would refuse is not signalled")
    func reloadRestartSettings() async throws {
        let served = try await Self.withServedProcess { served in
            let (directory, config, port) = (served.directory, served.config, served.port)
            let moved = try LoopbackPort.free()
            let text = try String(contentsOf: config, encoding: .utf8)
            try text.replacingOccurrences(of: "127.0.0.1:\(port)", with: "127.0.0.1:\(moved)").write(to: config, atomically: true, encoding: .utf8)
            let lost = try await CommandRun.run(["reload", "--config", config.path])
            #expect(lost.status == 1)
            #expect(lost.stderr.contains("if server.listen or tls_cert changed since it started, give --proxy with the address it was started with"), "\(lost.stderr)")
            let old = "http://127.0.0.1:\(port)"
            let reloaded = try await CommandRun.run(["reload", "--config", config.path, "--proxy", old])
            #expect(reloaded.status == 0, "\(reloaded.stderr)")
            #expect(reloaded.stdout.contains("changed in the file, in force at the next restart: server.listen"), "\(reloaded.stdout)")
            let status = try await CommandRun.run(["status", "--config", config.path, "--proxy", old])
            #expect(status.stdout.contains("changed in the file, in force at the next restart: server.listen"), "\(status.stdout)")
            // A keys file that is a directory: refused by the command, the proxy not signalled.
            try FileManager.default.createDirectory(at: directory.appendingPathComponent("keysdir"), withIntermediateDirectories: false)
            try (try String(contentsOf: config, encoding: .utf8) + "[access]\nkeys_file = \"keysdir\"\n").write(to: config, atomically: true, encoding: .utf8)
            let refused = try await CommandRun.run(["reload", "--config", config.path, "--proxy", old])
            #expect(refused.status == 2)
            #expect(refused.stderr.contains("nothing was signalled: access.keys_file: cannot read \(directory.appendingPathComponent("keysdir").path): a directory, not a file"), "\(refused.stderr)")
        }
        let log = served.proxy.stderr
        #expect(log.components(separatedBy: "SIGHUP: reloading").count == 2, "one SIGHUP only: \(log)")
    }

    @Test("as processes: a reload that turns access keys on is reported as applied, though the command (without a key) can no longer read the status")
    func reloadTurningKeysOn() async throws {
        try await Self.withServedProcess { served in
            let (directory, config) = (served.directory, served.config)
            try "alice alice-key-long-enough-123\n".write(to: directory.appendingPathComponent("keys"), atomically: true, encoding: .utf8)
            try (try String(contentsOf: config, encoding: .utf8) + "[access]\nkeys_file = \"keys\"\n").write(to: config, atomically: true, encoding: .utf8)
            let reloaded = try await CommandRun.run(["reload", "--config", config.path])
            #expect(reloaded.status == 0, "\(reloaded.stderr)")
            #expect(reloaded.stdout.contains("configuration reloaded; the proxy now refuses this command's access key (or asks for one)"), "\(reloaded.stdout)")
            #expect(try await CommandRun.run(["status", "--config", config.path, "--key", "alice-key-long-enough-123"]).status == 0)
        }
    }

    @Test("as processes over HTTPS: certificate files replaced in place (the new one naming a host, not 127.0.0.1); status says to reload, reload finds the proxy by its port and applies it, the new certificate is served")
    func reloadAfterCertificateRotation() async throws {
        try await Self.withServedProcess(
            prepare: { directory in _ = try await Self.makeCertificate(in: directory) },
            edit: { text in text.replacingOccurrences(of: "[server]\n", with: "[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n") }
        ) { served in
            let (directory, fake, config, port, proxy) = (served.directory, served.fake, served.config, served.port, served.proxy)
            let (certificate, key) = (directory.appendingPathComponent("cert.pem").path, directory.appendingPathComponent("key.pem").path)

            // New files in place of the old: the proxy serves the old certificate until it reloads.
            let next = directory.appendingPathComponent("next")
            try FileManager.default.createDirectory(at: next, withIntermediateDirectories: true)
            // It names proxy.test: the commands dial 127.0.0.1 and pin its key instead.
            let (newCertificate, newKey) = try await Self.makeCertificate(in: next, name: "DNS:proxy.test")
            for (from, to) in [(newCertificate, certificate), (newKey, key)] { #expect(rename(from, to) == 0) }
            let refused = try await CommandRun.run(["status", "--config", config.path])
            #expect(refused.status == 1)
            #expect(
                refused.stderr.contains("answered with a certificate whose key is not that of server.tls_cert")
                    && refused.stderr.contains("if those files were replaced, run spotify-proxy reload"), "\(refused.stderr)")

            // Another proxy, plain HTTP, named by --proxy https://…: its handshake fails, but not on the
            // certificate, so it is not signalled.
            let otherDirectory = directory.appendingPathComponent("other")
            try FileManager.default.createDirectory(at: otherDirectory, withIntermediateDirectories: true)
            let (otherConfig, otherPort) = try Self.processConfig(in: otherDirectory, fake: fake)
            let other = try await Self.serveWhenReady(otherConfig)
            defer { other.process.terminate() }
            let wrong = try await CommandRun.run(["reload", "--config", config.path, "--proxy", "https://127.0.0.1:\(otherPort)"])
            #expect(wrong.status == 1)
            #expect(!other.stderr.contains("configuration reloaded"), "\(other.stderr)")
            #expect(await other.process.terminate(within: 30) != nil)

            let reloaded = try await CommandRun.run(["reload", "--config", config.path])
            #expect(reloaded.status == 0, "\(reloaded.stderr)")
            #expect(reloaded.stdout.contains("configuration reloaded (reload 1 since start"), "\(reloaded.stdout)")
            let status = try await CommandRun.run(["status", "--config", config.path])
            #expect(status.status == 0, "\(status.stderr)")
            var upstream = UpstreamConfiguration()
            upstream.caBundle = certificate
            var pinned = ProxyConfiguration()
            pinned.tlsCertificate = certificate
            upstream.pinnedPublicKey = pinned.tlsCertificatePin()
            #expect(upstream.pinnedPublicKey?.hasPrefix("sha256//") == true)
            let response = try await UpstreamClient.withRunning(configuration: upstream) { client in
                try await client.perform(
                    method: "GET", url: "https://127.0.0.1:\(port)/readyz", headers: [], body: nil, on: MultiThreadedEventLoopGroup.singleton.next())
        }
        #expect(response.status == 200)

        // An expired certificate in their place: the commands know the proxy by its key all the
        // same (reload reads its outcome, status answers), and warn of the dates.
        let (expiredCertificate, expiredKey) = try await Self.makeCertificate(in: next, expired: true)
        for (from, to) in [(expiredCertificate, certificate), (expiredKey, key)] { #expect(rename(from, to) == 0) }
        let toExpired = try await CommandRun.run(["reload", "--config", config.path])
        #expect(toExpired.status == 0 && toExpired.stdout.contains("configuration reloaded (reload 2 since start"), "\(toExpired.stdout) \(toExpired.stderr)")
        #expect(toExpired.stderr.components(separatedBy: "warning: server.tls_cert = \(certificate) expired on ").count == 2, "\(toExpired.stderr)")
        for command in [["status"], ["cache", "purge"]] {
            let expiredAnswer = try await CommandRun.run(command + ["--config", config.path])
            #expect(expiredAnswer.status == 0, "\(command): \(expiredAnswer.stdout) \(expiredAnswer.stderr)")
            #expect(expiredAnswer.stderr.components(separatedBy: "warning: server.tls_cert = \(certificate) expired on ").count == 2, "\(command): \(expiredAnswer.stderr)")
            if command == ["status"] { #expect(expiredAnswer.stdout.contains(": ready"), "\(expiredAnswer.stdout)") }
        }
        // A file that is no certificate: said as such, not as a proxy that does not answer.
        let served = try String(contentsOfFile: certificate, encoding: .utf8)
        try "garbage\n".write(toFile: certificate, atomically: true, encoding: .utf8)
        let unreadable = try await CommandRun.run(["status", "--config", config.path])
        #expect(unreadable.status == 2 && unreadable.stderr.contains("cannot be read as a PEM certificate"), "\(unreadable.stderr)")
        #expect(!unreadable.stderr.contains("no proxy answered"), "\(unreadable.stderr)")
        try served.write(toFile: certificate, atomically: true, encoding: .utf8)

        // HTTPS turned off in the file (that waits for a restart): the command finds the proxy by
        // its port, signals it, and says it cannot read the outcome, at once; the proxy applied it.
        try (try String(contentsOf: config, encoding: .utf8)).replacingOccurrences(of: "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n", with: "")
            .write(to: config, atomically: true, encoding: .utf8)
        let turnedOff = try await CommandRun.run(["reload", "--config", config.path, "--proxy", "https://127.0.0.1:\(port)"])
        #expect(turnedOff.status == 0, "\(turnedOff.stderr)")
        #expect(turnedOff.stdout.contains("sent SIGHUP to pid \(proxy.process.processIdentifier)") && turnedOff.stdout.contains("the file names no tls_cert"), "\(turnedOff.stdout)")
        #expect(try await eventually(10) { proxy.stderr.contains("turning HTTPS on or off") && proxy.stderr.contains("generation=3") }, "\(proxy.stderr)")
        }
    }

    /// A temporary directory and a fake Spotify, for commands run against a configuration file
    /// there; both are gone afterwards, whatever `body` throws.
    static func withCommandFixture(_ body: (URL, FakeSpotify) async throws -> Void) async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let fake = try await FakeSpotify.start(group: MultiThreadedEventLoopGroup.singleton)
        do {
            try await body(directory, fake)
        } catch {
            try? await fake.shutdown()
            throw error
        }
        try await fake.shutdown()
    }

    @Test("check-config refuses a non-loopback listener without keys, and accepts it with allow_open")
    func openListenerCommand() async throws {
        try await Self.withCommandFixture { directory, fake in
            let closed = try writeProxyConfig(in: directory, port: 8080, fake: fake, sections: "[sink]\nkind = \"none\"\n")
            let refused = try await CommandRun.run(["check-config", "--config", closed.path, "--listen", "0.0.0.0:8080"])
            #expect(refused.status == 2)
            #expect(refused.stderr.contains("refusing to listen on 0.0.0.0:8080 without access keys"), "\(refused.stderr)")
            let open = try writeProxyConfig(in: directory, port: 8080, fake: fake, sections: "[sink]\nkind = \"none\"\n[access]\nallow_open = true\n")
            let accepted = try await CommandRun.run(["check-config", "--config", open.path, "--listen", "0.0.0.0:8080"])
            #expect(accepted.status == 0, "\(accepted.stderr)")
            // An address this machine does not have (TEST-NET-1): the bind fails, and no warning
            // says the proxy is listening open to the network first.
            for command in ["serve", "check-config"] {
                let unbound = try await CommandRun.run([command, "--config", open.path, "--listen", "192.0.2.1:8080"])
                #expect(unbound.status == 2 && unbound.stderr.contains("192.0.2.1:8080 is not an address of this machine"), "\(command): \(unbound.stderr)")
                #expect(!unbound.stderr.contains("listening beyond this machine"), "\(command): \(unbound.stderr)")
            }
        }
    }

    @Test("token prints a fresh token; credentials the token endpoint refuses are a configuration error (exit 2) that names what to check, and no secret")
    func tokenCommand() async throws {
        try await Self.withCommandFixture { directory, fake in
            let config = try writeProxyConfig(in: directory, port: 8080, fake: fake, sections: "[sink]\nkind = \"none\"\n")
            let printed = try await CommandRun.run(["token", "--config", config.path])
            #expect(printed.status == 0, "\(printed.stderr)")
            #expect(!printed.stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
            try (try String(contentsOf: config, encoding: .utf8)).replacingOccurrences(of: "client_secret = \"\(fake.clientSecret)\"", with: "client_secret = \"not-the-secret\"")
                .write(to: config, atomically: true, encoding: .utf8)
            let refused = try await CommandRun.run(["token", "--config", config.path])
            #expect(refused.status == 2, "\(refused.stderr)")
            #expect(refused.stderr.contains("refused to give a token") && refused.stderr.contains("check spotify.client_id and client_secret"), "\(refused.stderr)")
            #expect(!refused.stderr.contains("not-the-secret") && refused.stdout.isEmpty, "\(refused.stdout) \(refused.stderr)")
        }
    }

    @Test("check-config prints the paths it resolved, relative ones against the configuration file's directory: ca_bundle and users.dir too")
    func checkConfigPaths() async throws {
        try await Self.withCommandFixture { directory, fake in
            _ = try await Self.makeCertificate(in: directory)
            let config = try writeProxyConfig(
                in: directory, port: 8080, fake: fake, spotify: "ca_bundle = \"cert.pem\"", sections: "[sink]\nkind = \"none\"\n[users]\ndir = \"people\"\n")
            let checked = try await CommandRun.run(["check-config", "--config", config.path])
            #expect(checked.status == 0, "\(checked.stderr)")
            let base = directory.standardizedFileURL.path
            #expect(checked.stdout.contains("ca_bundle    \(base)/cert.pem\n"), "\(checked.stdout)")
            #expect(checked.stdout.contains("users.dir    \(base)/people\n"), "\(checked.stdout)")
            let unset = try writeProxyConfig(in: directory, port: 8080, fake: fake, sections: "[sink]\nkind = \"none\"\n")
            let defaults = try await CommandRun.run(["check-config", "--config", unset.path])
            #expect(defaults.stdout.contains("ca_bundle    (libcurl's default)\n") && defaults.stdout.contains("users.dir    \(base)/users\n"), "\(defaults.stdout)")
        }
    }

    @Test("GET /admin/status: readiness, token expiry, governor, cache size and hit ratio, tee backlog and spool, requests per key; and as text")
    func status() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let keys = try Self.keysFile(["alice alice-key", "bob bob-key"])
        try await withProxy(configure: { config in
            config.access.keysFile = keys
            config.sink.kind = .jsonl
            config.sink.path = directory.appendingPathComponent("library.jsonl").path
            config.sink.spoolDirectory = directory.appendingPathComponent("spool").path
        }) { proxy in
            let client = try await proxy.client()
            for _ in 0..<3 { #expect(try await client.request("GET", Self.artist, headers: [("Authorization", "Bearer alice-key")]).status == 200) }
            #expect(try await client.request("GET", Self.artist, headers: [("Authorization", "Bearer bob-key")]).status == 200)
            let response = try await client.request("GET", "/admin/status", headers: [("Authorization", "Bearer bob-key")])
            await client.close()
            #expect(response.status == 200)
            #expect(!response.text.contains("-key"), "no key in the status")
            let status = try ProxyStatus.decoder().decode(ProxyStatus.self, from: Data(response.body))
            #expect(status.ready)
            #expect(status.pid == getpid())
            #expect(status.tokens.first?.name == "app")
            #expect((status.tokens.first?.expiresInS ?? 0) > 3000)
            #expect(status.governor?.limitedForS == nil)
            #expect(status.cache?.entries == 1)
            #expect(status.cache?.forwarded == 1)
            #expect(status.cache?.hits == 3)
            #expect(status.cache?.hitRatio == 0.75)
            #expect(status.tee?.queued == 1, "one body teed: the hits are the stored answer")
            #expect(status.teeBacklog != nil)
            #expect(status.tee?.spoolPending == false)
            #expect(status.requestsLastHour == ["alice": 3, "bob": 1])
            #expect(status.access?.keys == 2)
            #expect(status.devMode?.setting == "auto" && status.devMode?.active == false, "the fake answers as for an extended-quota app")
            let text = StatusText.render(status, base: proxy.baseURL)
            #expect(text.contains("dev mode:  auto; not seen yet"), "\(text)")
            #expect(text.contains(": ready"))
            #expect(text.contains("hit ratio 0.75 (3 fresh hits, 0 stale, 0 collapsed, 1 forwarded)"), "\(text)")
            #expect(text.contains("spool empty"))
            #expect(text.contains("alice") && text.contains("bob"))
        }
    }
}
