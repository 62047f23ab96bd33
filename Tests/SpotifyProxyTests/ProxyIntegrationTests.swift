import FakeSpotify
import Foundation
import NIOCore
import NIOHTTP1
import SpotifyProxy
import SpotifyProxyTestSupport
import Testing

/// The real proxy against the fake Spotify, both on port 0, over real sockets.
@Suite("Proxy against the fake Spotify")
struct ProxyIntegrationTests {
    static let artistID = "0TnOYISbd1XYRBk9myaseg"

    func json(_ response: RawHTTPClient.Response) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any])
    }

    @Test("a client with no credentials gets Spotify's answer, with links pointing at the proxy")
    func forwardsWithInjectedToken() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            let response = try await client.request("GET", "/v1/artists/\(Self.artistID)", headers: [("Authorization", "Bearer None")])
            #expect(response.status == 200)
            let body = try self.json(response)
            #expect(body["id"] as? String == Self.artistID)
            #expect(body["href"] as? String == "http://127.0.0.1/v1/artists/\(Self.artistID)")
            #expect(response.headers["cache-control"] == ["public, max-age=7200"])
            #expect(harness.fake.counters.unauthorized == 0)
            await client.close()
        }
    }

    @Test("method, raw path, raw query, headers and a 1 MiB body arrive upstream byte for byte")
    func byteExactForwarding() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            var body = [UInt8](repeating: 0, count: 1 << 20)
            for index in body.indices { body[index] = UInt8(truncatingIfNeeded: index &* 31 &+ index >> 8) }
            let target = "/v1/test/echo/a%2Fb%2Cc/?ids=a%2Cb,c&q=x+y&empty=&z=%E2%9C%93"
            let response = try await client.request(
                "PUT", target,
                headers: [
                    ("Authorization", "Bearer dummy-client-token"), ("X-Case", "MiXeD"), ("x-dup", "1"), ("X-Dup", "2"),
                    ("Content-Type", "application/octet-stream"), ("Connection", "keep-alive, X-Hop"), ("X-Hop", "drop me"),
                    ("Accept", "application/json"), ("X-Empty", ""),
                ],
                body: body)
            #expect(response.status == 200)
            let echo = try self.json(response)
            #expect(echo["method"] as? String == "PUT")
            #expect(echo["uri"] as? String == target)
            #expect(echo["body_length"] as? Int == body.count)
            #expect(echo["body_fnv1a"] as? String == String(FNV1a.hash(body), radix: 16))
            let headers = (echo["headers"] as? [[String]] ?? []).map { "\($0[0]): \($0[1])" }
            let fakeToken = headers.first { $0.hasPrefix("Authorization: ") }
            #expect(fakeToken?.hasPrefix("Authorization: Bearer fake-at-") == true)
            #expect(headers.filter { $0.lowercased().hasPrefix("authorization:") }.count == 1)
            #expect(!headers.contains { $0.contains("dummy-client-token") || $0.lowercased().hasPrefix("x-hop") })
            let forwarded = headers.filter { ["x-case", "x-dup", "content-type", "accept", "x-empty"].contains($0.split(separator: ":")[0].lowercased()) }
            #expect(forwarded == ["X-Case: MiXeD", "x-dup: 1", "X-Dup: 2", "Content-Type: application/octet-stream", "Accept: application/json", "X-Empty: "])
            #expect(headers.contains("Host: 127.0.0.1:\(harness.fake.port)"))
            #expect(headers.contains("Content-Length: \(body.count)"))
            await client.close()
        }
    }

    @Test("pooled curl handles carry nothing of one request into the next: methods and bodies in any order")
    func handleReuse() async throws {
        // No cache and no link rewriting: every request goes upstream as it came (with rewriting
        // on, a HEAD goes upstream as a GET, to learn the rewritten length).
        try await withProxy(configure: { $0.rewriteLinks = false; $0.cache.maxBytes = 0 }) { harness in
            // One connection, one request at a time: each transfer takes the handle the one
            // before it gave back.
            let client = try await harness.client()
            let body = Array("a body of twenty-six bytes".utf8)
            var step = 0
            func expectEcho(_ method: String, bodyLength: Int, _ response: RawHTTPClient.Response) throws {
                #expect(response.status == 200)
                let echo = try self.json(response)
                #expect(echo["method"] as? String == method, "step \(step)")
                #expect(echo["body_length"] as? Int == bodyLength, "step \(step)")
                let names = (echo["headers"] as? [[String]] ?? []).map { $0[0].lowercased() }
                #expect(names.contains("content-length") == (bodyLength > 0), "step \(step)")
                #expect(!names.contains("transfer-encoding"), "step \(step)")
                // curl's `Expect: 100-continue` is kept off uploads; a request without a body gets none.
                #expect(!names.contains("expect"), "step \(step)")
            }
            for method in ["GET", "PUT", "GET", "DELETE", "GET", "POST", "GET", "GET"] {
                step += 1
                let sent: [UInt8]? = method == "PUT" || method == "POST" ? body : nil
                let response = try await client.request(method, "/v1/test/echo/\(step)", body: sent)
                try expectEcho(method, bodyLength: sent?.count ?? 0, response)
            }
            // A HEAD (no body read), then a GET on the handle it gave back.
            try await client.send("HEAD /v1/artists/\(Self.artistID) HTTP/1.1\r\nHost: x\r\n\r\n", method: .HEAD)
            let head = try await client.response()
            #expect(head.status == 200)
            #expect(head.body.isEmpty)
            step += 1
            try expectEcho("GET", bodyLength: 0, try await client.request("GET", "/v1/test/echo/\(step)"))
            // A streamed upload (chunked: no length known to curl), then a GET.
            try await client.send("POST /v1/test/echo/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            let chunked = try self.json(try await client.response())
            #expect(chunked["body_length"] as? Int == 5)
            #expect(!((chunked["headers"] as? [[String]] ?? []).contains { $0[0].lowercased() == "expect" }))
            step += 1
            try expectEcho("GET", bodyLength: 0, try await client.request("GET", "/v1/test/echo/\(step)"))
            await client.close()
        }
    }

    @Test("a chunked request body is streamed upstream intact")
    func chunkedRequestBody() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            let parts = ["hello ", "chunked ", "world"]
            var text = "POST /v1/test/echo/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            for part in parts { text += String(part.utf8.count, radix: 16) + "\r\n" + part + "\r\n" }
            text += "0\r\n\r\n"
            try await client.send(text)
            let echo = try self.json(try await client.response())
            let expected = Array(parts.joined().utf8)
            #expect(echo["body_length"] as? Int == expected.count)
            #expect(echo["body_fnv1a"] as? String == String(FNV1a.hash(expected), radix: 16))
            await client.close()
        }
    }

    @Test("paging: following next through the proxy reaches the last page without leaving it")
    func pagingToTheEnd() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            var next: String? = "http://127.0.0.1/v1/artists/\(Self.artistID)/albums?offset=0&limit=10"
            var items = 0
            var pages = 0
            while let link = next {
                #expect(link.hasPrefix("http://127.0.0.1/v1/"))
                let response = try await client.request("GET", String(link.dropFirst("http://127.0.0.1".count)))
                #expect(response.status == 200)
                let page = try self.json(response)
                items += (page["items"] as? [Any])?.count ?? 0
                next = page["next"] as? String
                pages += 1
                if pages > 10 { break }
            }
            // artist-albums.json holds 48 items: pages of 10, 10, 10, 10, 8.
            #expect(items == 48)
            #expect(pages == 5)
            await client.close()
        }
    }

    @Test("gzip from upstream is decoded so links can be rewritten; the client gets identity")
    func gzipDecoded() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            let response = try await client.request("GET", "/v1/albums/3IqzqH6ShrRtie9Yd2ODyG", headers: [("Accept-Encoding", "gzip")])
            #expect(response.status == 200)
            #expect(response.headers["content-encoding"].isEmpty)
            let album = try self.json(response)
            #expect(album["href"] as? String == "http://127.0.0.1/v1/albums/3IqzqH6ShrRtie9Yd2ODyG")
            #expect(!response.text.contains("http://127.0.0.1:\(harness.fake.port)"))
            await client.close()
        }
    }

    @Test("link rewriting can be turned off, links follow each request's Host, and a configured public URL wins over Host")
    func rewriteSettings() async throws {
        try await withProxy(configure: { $0.rewriteLinks = false }) { off in
            let client = try await off.client()
            let plain = try self.json(try await client.request("GET", "/v1/artists/\(Self.artistID)"))
            #expect(plain["href"] as? String == "https://api.spotify.com/v1/artists/\(Self.artistID)")
            await client.close()
        }

        // Every answer forwarded (no cache), on one connection whose Host changes: each answer's
        // links follow its own request's Host, also when the one before had the same.
        try await withProxy(configure: { $0.cache.maxBytes = 0 }) { uncached in
            let client = try await uncached.client()
            for host in ["a.example.test:1", "a.example.test:1", "b.example.test:2", "a.example.test:1"] {
                try await client.send("GET /v1/artists/\(Self.artistID) HTTP/1.1\r\nHost: \(host)\r\n\r\n")
                let body = try self.json(try await client.response())
                #expect(body["href"] as? String == "http://\(host)/v1/artists/\(Self.artistID)")
            }
            await client.close()
        }

        try await withProxy(configure: { $0.publicURL = "https://proxy.example.test" }) { configured in
            let other = try await configured.client()
            let rewritten = try self.json(try await other.request("GET", "/v1/artists/\(Self.artistID)"))
            #expect(rewritten["href"] as? String == "https://proxy.example.test/v1/artists/\(Self.artistID)")
            await other.close()
        }
    }

    @Test("4xx, 5xx and 429 pass through unchanged, with Retry-After", arguments: [400, 403, 404, 429, 500, 503])
    func errorPassthrough(status: Int) async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            let response = try await client.request("GET", "/v1/test/status/\(status)")
            #expect(response.status == status)
            let message = status == 429 ? "API rate limit exceeded" : "fake error \(status)"
            #expect(response.text == #"{"error":{"status":\#(status),"message":"\#(message)"}}"#)
            if status == 429 { #expect(response.headers["retry-after"] == ["7"]) }
            await client.close()
        }
    }

    static func lines(of harness: ProxyHarness, with needle: String) -> [String] {
        harness.logs.all.filter { $0.contains(needle) }
    }

    @Test("a request whose client leaves before the answer is logged 499 and its transfer counted as cancelled (cache off: a cache fill outlives its first client)")
    func abandonedLogged() async throws {
        try await withProxy(configure: { $0.cache.maxBytes = 0 }) { harness in
            let client = try await harness.client()
            let before = harness.fake.counters.apiRequests
            try await client.send("GET /v1/test/slow/3000 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: left-early-1\r\n\r\n")
            let arrived = try await eventually(5) { harness.fake.counters.apiRequests > before }
            #expect(arrived)
            await client.close()
            let logged = try await eventually(5) { Self.lines(of: harness, with: "left-early-1").contains { $0.contains("status=499") } }
            let lines = Self.lines(of: harness, with: "left-early-1")
            #expect(logged, "\(lines)")
            #expect(lines.contains { $0.contains("before the answer ended") }, "\(lines)")
            // A HEAD goes upstream as GET and its head is held until the body is counted: nothing
            // was sent when the client left, so it is a 499 too.
            let head = try await harness.client()
            let sent = harness.fake.counters.apiRequests
            try await head.send("HEAD /v1/test/slow/3000 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: left-early-2\r\n\r\n", method: .HEAD)
            let arrivedToo = try await eventually(5) { harness.fake.counters.apiRequests > sent }
            #expect(arrivedToo)
            await head.close()
            let loggedToo = try await eventually(5) { Self.lines(of: harness, with: "left-early-2").contains { $0.contains("status=499") } }
            #expect(loggedToo, "\(Self.lines(of: harness, with: "left-early-2"))")
            let metrics = try await harness.client()
            let text = try await metrics.request("GET", "/metrics").text
            #expect(MetricsTests.sum(MetricsTests.parse(text), "spotify_proxy_upstream_failures_total", ["kind": "cancelled"]) == 2)
            #expect(MetricsTests.sum(MetricsTests.parse(text), "spotify_proxy_requests_total", ["code": "4xx"]) == 2)
            await metrics.close()
        }
    }

    @Test("a malformed chunked body is its own request's 400: logged once, under its method, path and id, not as a 499 and an anonymous 400")
    func malformedBodyLoggedOnce() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            try await client.send(
                "POST /v1/test/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: broken-chunk-1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\n")
            let response = try await client.response()
            #expect(response.status == 400)
            #expect(response.headers.first(name: "X-Request-Id") == "broken-chunk-1")
            #expect(response.text.contains("chunk size"), "\(response.text)")
            try await client.waitForClose()
            let logged = try await eventually(5) { !Self.lines(of: harness, with: "broken-chunk-1").isEmpty }
            #expect(logged)
            let lines = Self.lines(of: harness, with: "broken-chunk-1")
            #expect(lines.count == 1, "\(lines)")
            #expect(lines.first?.contains("status=400") == true, "\(lines)")
            #expect(lines.first?.contains("path=/v1/test/echo") == true, "\(lines)")
            #expect(!harness.logs.all.contains { $0.contains("status=499") || $0.contains("path=-") }, "\(harness.logs.all)")
        }
    }

    @Test("a 401 for a revoked token is replayed once with a fresh token; the client sees 200")
    func replayAfter401() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            #expect(try await client.request("GET", "/v1/artists/\(Self.artistID)").status == 200)
            harness.fake.revokeAllTokens()
            let echo = try await client.request("POST", "/v1/test/echo/replay", body: Array("replay me".utf8))
            #expect(echo.status == 200)
            #expect(try self.json(echo)["body_length"] as? Int == 9)
            #expect(harness.fake.counters.unauthorized == 1)
            #expect(harness.fake.tokensIssued == 2)
            #expect(harness.logs.all.contains { $0.contains("replayed=true") })
            await client.close()
        }
    }

    @Test("a 401 for a body too large to retain is passed to the client, not replayed")
    func noReplayForLargeBody() async throws {
        try await withProxy(configure: { $0.replayBodyLimit = 16 }) { harness in
            let client = try await harness.client()
            #expect(try await client.request("GET", "/v1/artists/\(Self.artistID)").status == 200)
            harness.fake.revokeAllTokens()
            let response = try await client.request("POST", "/v1/test/echo/big", body: Array(repeating: 65, count: 17))
            #expect(response.status == 401)
            // The stale token was still dropped: the next request gets a fresh one.
            #expect(try await client.request("GET", "/v1/artists/\(Self.artistID)").status == 200)
            await client.close()
        }
    }

    @Test("pipelined requests are answered in order")
    func pipelining() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            let targets = ["/v1/test/slow/150", "/v1/test/echo/second", "/healthz", "/v1/test/status/404"]
            try await client.send(targets.map { "GET \($0) HTTP/1.1\r\nHost: x\r\n\r\n" }.joined(), requests: targets.count)
            let first = try await client.response()
            #expect(first.status == 200)
            #expect(try self.json(first)["id"] as? String == Self.artistID)
            let second = try await client.response()
            #expect(try self.json(second)["uri"] as? String == "/v1/test/echo/second")
            #expect(try await client.response().text == #"{"status":"ok"}"#)
            #expect(try await client.response().status == 404)
            await client.close()
        }
    }

    @Test("an HTTP/1.0 keep-alive client gets a rewritten body delimited by closing the connection")
    func http10() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            try await client.send("GET /v1/artists/\(Self.artistID) HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            let response = try await client.response()
            #expect(response.status == 200)
            #expect(try self.json(response)["id"] as? String == Self.artistID)
            try await client.waitForClose()
        }
    }

    @Test("an HTTP/1.0 keep-alive client is told its connection is kept (Connection: keep-alive), and it is, for answers with a length")
    func http10KeepAlive() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            for path in ["/healthz", "/v1/test/bytes/10", "/v1/no-such-path"] {
                try await client.send("GET \(path) HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                let response = try await client.response()
                #expect(response.headers["connection"] == ["keep-alive"], "\(path)")
            }
            try await client.send("GET /healthz HTTP/1.0\r\n\r\n")
            let last = try await client.response()
            #expect(last.status == 200)
            #expect(last.headers["connection"] == ["close"])
            try await client.waitForClose()
        }
    }

    @Test("open-proxy attempts, paths outside /v1/, smuggling, oversized and malformed requests: the right 4xx in Spotify's error shape, nothing upstream", arguments: [
        ("CONNECT api.spotify.com:443 HTTP/1.1\r\nHost: api.spotify.com:443\r\n\r\n", 405),
        ("GET http://evil.example/v1/x HTTP/1.1\r\nHost: evil.example\r\n\r\n", 403),
        ("GET /v1/../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET /v1/%2e%2e/admin HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET /admin HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        ("POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
        ("POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413),
        // Smuggling, oversized and malformed requests.
        ("POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        ("GET /v1/x HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n", 400),
        ("GET /v1/\(String(repeating: "a", count: 100_000)) HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        ("GET http:///v1/x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET /v1/x HTTP/1.1\r\nHost: x\r\nX-Big: \(String(repeating: "b", count: 20_000))\r\n\r\n", 431),
        ("BREW /v1/x HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET /v1/x HTTP/3.7\r\nHost: x\r\n\r\n", 400),
        ("GET /v1/x\0y HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET /v1/%2e%2e%2fadmin HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        // A CR without its LF: refused at once, not held for a line end.
        ("GET /v1/x HTTP/1.1\rHost: x\r\r", 400),
        // A TRACE would come back echoed with the token; HTTP/0.9 has no head to answer with;
        // HTTP/1.1 needs exactly one Host (RFC 9112 §3.2).
        ("TRACE /v1/me HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        ("GET /v1/artists/0TnOYISbd1XYRBk9myaseg\r\n\r\n", 400),
        ("GET /v1/artists/0TnOYISbd1XYRBk9myaseg HTTP/1.1\r\n\r\n", 400),
        ("GET /v1/artists/0TnOYISbd1XYRBk9myaseg HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        ("GET /v1/artists/0TnOYISbd1XYRBk9myaseg HTTP/1.1\r\nHost: evil.com/x\r\n\r\n", 400),
        ("POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
        // A transfer coding the proxy does not decode (RFC 9112 §6.1).
        ("POST /v1/test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        ("POST /v1/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
        ("POST /v1/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        // An empty one: the parser reads no body, so a body sent would be the next request.
        ("POST /v1/test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\nGET /v1/test/echo?smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        // A body held back for a 100 (Continue) that does not come: the answer closes.
        ("POST /nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 404),
    ])
    func refusals(request: String, status: Int) async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            try await client.send(request)
            let response = try await client.response()
            #expect(response.status == status)
            #expect(harness.fake.counters.apiRequests == 0)
            if request.hasPrefix("CONNECT") {
                // Refused, a CONNECT's answer has its body (only a 2xx has none: RFC 9110 §9.3.6);
                // the connection is closed.
                try await client.waitForClose()
            } else if ["Transfer-Encoding: xchunked", "Transfer-Encoding: gzip", "Transfer-Encoding: \r", "Expect: 100-continue"].contains(where: request.contains) {
                // The parser refuses the rest of a request whose coding it cannot frame: the
                // one answer stands, says so, and the connection closes, with no second answer.
                #expect(response.headers["connection"] == ["close"], "\(response.headers)")
                await #expect(throws: RawHTTPClient.ConnectionClosed.self) { try await client.response() }
            }
            let error = try #require(try self.json(response)["error"] as? [String: Any])
            #expect(error["status"] as? Int == status)
            #expect((error["message"] as? String)?.isEmpty == false)
            #expect(harness.fake.counters.apiRequests == 0)
            // The proxy keeps serving others.
            let other = try await harness.client()
            #expect(try await other.request("GET", "/healthz").status == 200)
            await other.close()
            await client.close()
        }
    }

    @Test("server.max_header_bytes counts the head as the client sent it (request line, headers, blank line; not the proxy's X-Request-Id): 1024 bytes pass, 1025 get 431 saying so")
    func headerLimit() async throws {
        try await withProxy(configure: { $0.maxHeaderBytes = 1024 }) { harness in
            let client = try await harness.client()
            let response = try await client.request("GET", "/v1/artists/\(Self.artistID)", headers: [("X-Big", String(repeating: "a", count: 2000))])
            #expect(response.status == 431)
            await client.close()
            for size in [1024, 1025] {
                let start = "GET /v1/artists/\(Self.artistID) HTTP/1.1\r\nHost: x\r\nX-Pad: "
                let head = start + String(repeating: "p", count: size - start.utf8.count - 4) + "\r\n\r\n"
                #expect(head.utf8.count == size)
                let raw = try await harness.client()
                try await raw.send(head)
                let answer = try await raw.response()
                if size == 1024 {
                    #expect(answer.status == 200, "\(answer.text)")
                } else {
                    #expect(answer.status == 431)
                    #expect(answer.text.contains("request head too large: 1025 bytes (request line and headers), the limit is 1024"), "\(answer.text)")
                }
                await raw.close()
            }
        }
    }

    @Test("a malformed request's message says what is wrong, in the parser's words, and what to send", arguments: [
        ("POST /v1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", "can't be present with"),
        ("GET /v1/x\r\n\r\n", "HTTP/0.9 is not supported"),
        // HTTP/0.9's request is its line alone: answered when it ends, not when the head would have.
        ("GET /v1/x\r\n", "HTTP/0.9 is not supported"),
        ("GET /v1/x\r\nHost: x\r\n", "HTTP/0.9 is not supported"),
        ("GET /v1/x HTTP/2.0\r\nHost: x\r\n\r\n", "HTTP/2.0 is not supported"),
        ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "HTTP/2 with prior knowledge (the PRI preface) is not supported"),
        ("GET /v1/x HTTP/1.1\nHost: x\n\n", "the request line does not end with CRLF"),
        ("GET /v1/x HTTP/1.01\r\nHost: x\r\n\r\n", "right after its version (HTTP/1.1 or HTTP/1.0, nothing after it)"),
        ("GET /v1/x HTTP/1.1 extra\r\nHost: x\r\n\r\n", "right after its version (HTTP/1.1 or HTTP/1.0, nothing after it)"),
        ("GET /v1/x HTTP/1.2\r\nHost: x\r\n\r\n", "is not HTTP/1.1 or HTTP/1.0"),
        // The start of a TLS ClientHello: an https:// URL for the plain listener.
        ("\u{16}\u{03}\u{01}\u{02}\u{00}\u{01}\u{00}\u{01}", "a TLS handshake came to a plain-HTTP listener"),
        ("GET /v1/a b HTTP/1.1\r\nHost: x\r\n\r\n", "a space in the target must be sent as %20"),
    ])
    func malformedMessages(request: String, expected: String) async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            try await client.send(request)
            let response = try await client.response()
            #expect(response.status == 400)
            let message = try #require((try self.json(response)["error"] as? [String: Any])?["message"] as? String)
            #expect(message.contains(expected), "\(message)")
            #expect(message.contains("; send "), "\(message)")
            #expect(!message.contains("unknown"), "\(message)")
            try await client.waitForClose()
        }
    }

    @Test("malformed requests get 400 in Spotify's error shape and the connection closes")
    func malformed() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            try await client.send("GET /v1/x HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
            let response = try await client.response()
            #expect(response.status == 400)
            #expect(response.text.hasPrefix(#"{"error":{"status":400,"#))
            try await client.waitForClose()
        }
    }

    @Test("when the token endpoint fails, requests get 503 with Retry-After and /readyz says why; then it recovers")
    func failingTokenEndpoint() async throws {
        try await withProxy(
            configure: { $0.tokenWait = .milliseconds(200) },
            prepareFake: { $0.setTokenMode(.serverError) }) { harness in
            let client = try await harness.client()
            let failed = try await client.request("GET", "/v1/artists/\(Self.artistID)")
            #expect(failed.status == 503)
            #expect(Int(failed.headers.first(name: "retry-after") ?? "") ?? 0 >= 1)
            #expect(failed.text.contains("no Spotify access token available"))
            // Logged without an upstream time: the request never left for want of a token.
            let failedID = try #require(failed.headers.first(name: "x-request-id"))
            let line = try #require(harness.logs.all.first { $0.contains(failedID) })
            #expect(line.contains("status=503") && !line.contains("upstream_ms"), "\(line)")
            // Once the first refused refresh is back (however long that takes on a loaded machine).
            var notReady = try await client.request("GET", "/readyz")
            _ = try await eventually(10) {
                notReady = try await client.request("GET", "/readyz")
                return notReady.text.contains("token endpoint is failing (token endpoint answered HTTP 500")
            }
            #expect(notReady.status == 503)
            #expect(notReady.text.contains("token endpoint is failing (token endpoint answered HTTP 500"))
            harness.fake.setTokenMode(.normal)
            // Backoff after a few failures is well under the default 10 s token wait.
            let recovered = try await RawHTTPClient.connect(port: harness.port)
            var status = 0
            for _ in 0..<40 where status != 200 {
                status = try await recovered.request("GET", "/v1/artists/\(Self.artistID)").status
            }
            #expect(status == 200)
            #expect(try await client.request("GET", "/readyz").status == 200)
            await client.close()
            await recovered.close()
        }
    }

    @Test("invalid client credentials are reported as a configuration error on /readyz and in the log")
    func invalidClient() async throws {
        try await withProxy(
            configure: { $0.tokenWait = .seconds(1) },
            prepareFake: { $0.setTokenMode(.invalidClient) }) { harness in
            let client = try await harness.client()
            // Once the first refresh has been refused (however long that takes on a loaded
            // machine), /readyz names the fix and requests are refused with the reason.
            #expect(try await eventually(10) { try await client.request("GET", "/readyz").text.contains("SPOTIFY_CLIENT_ID") })
            #expect(try await client.request("GET", "/readyz").status == 503)
            let response = try await client.request("GET", "/v1/artists/\(Self.artistID)")
            #expect(response.status == 503)
            #expect(response.text.contains("refused the app's credentials"))
            #expect(harness.logs.all.contains { $0.contains("configuration error") })
            // Not retried in a hot loop: one attempt, the next one a minute later.
            #expect(harness.fake.counters.tokenRequests == 1)
            await client.close()
        }
    }

    @Test("a slow token endpoint delays the first request, which then succeeds")
    func slowTokenEndpoint() async throws {
        try await withProxy(prepareFake: { $0.setTokenDelay(.milliseconds(300)) }) { harness in
            let client = try await harness.client()
            let response = try await client.request("GET", "/v1/artists/\(Self.artistID)")
            #expect(response.status == 200)
            #expect(harness.fake.counters.tokenRequests == 1)
            await client.close()
        }
    }

    @Test("an unreachable upstream is a 502 in Spotify's error shape, in curl's own words (where, and why)")
    func unreachableUpstream() async throws {
        try await withProxy(configure: { config in
            // A port nothing listens on: the fake's token endpoint stays real.
            config.apiURL = "http://127.0.0.1:1"
        }) { harness in
            let client = try await harness.client()
            let response = try await client.request("GET", "/v1/artists/\(Self.artistID)")
            #expect(response.status == 502)
            #expect(response.text.contains("could not reach the Spotify API"))
            // curl's error buffer, not only its code's "Couldn't connect to server".
            #expect(response.text.contains("Failed to connect to 127.0.0.1 port 1"), "\(response.text)")
            #expect(try await client.request("GET", "/healthz").status == 200)
            await client.close()
        }
    }

    @Test("an upstream slower than the configured timeout is a 504")
    func upstreamTimeout() async throws {
        try await withProxy(configure: { $0.upstream.totalTimeout = .milliseconds(200) }) { harness in
            let client = try await harness.client()
            // The token comes through the same client and timeout: on a loaded machine its first
            // fetch can miss 200 ms (the answer would be 503, no token). Ready first.
            #expect(try await eventually(20) { try await client.request("GET", "/readyz").status == 200 })
            let response = try await client.request("GET", "/v1/test/slow/2000")
            #expect(response.status == 504)
            #expect(response.text.contains("Operation timed out after"), "\(response.text)")
            await client.close()
        }
    }

    @Test("a large response streams through intact, also when the cache first tried to hold it whole")
    func largeResponse() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            let size = 20 * 1024 * 1024
            let before = harness.fake.counters.apiRequests
            let response = try await client.request("GET", "/v1/test/bytes/\(size)")
            #expect(response.status == 200)
            #expect(response.body.count == size)
            #expect(response.headers["content-length"] == [String(size)])
            // The cache's whole-answer path gave up at its 8 MiB cap; the request went again, streaming.
            #expect(harness.fake.counters.apiRequests - before == 2)
            #expect(harness.runtime.context.cache.stats.entries == 0)
            await client.close()
        }
    }

    @Test("a client that pipelines 200 requests and does not read: the next one waits while answers are left to write, so few go upstream; once read, all 200 come whole and in order")
    func pipelinedUnread() async throws {
        try await withProxy { harness in
            let count = 200
            let size = 100_000
            let port = harness.port
            let fd = try SmallWindowReader.connect(port: port)
            defer { close(fd) }
            var requests = ""
            for index in 0..<count {
                requests += "GET /v1/test/bytes/\(size)?i=\(index) HTTP/1.1\r\nHost: x\r\n\(index == count - 1 ? "Connection: close\r\n" : "")\r\n"
            }
            let before = harness.fake.counters.apiRequests
            try SmallWindowReader.send(requests, on: fd)
            // What is checked is that something does not happen, so no event ends the wait: the
            // upstream's count is watched for 2 s. Before the limit, all 200 went within that.
            // The socket buffers between the two hold some answers (a few MiB on loopback).
            let flooded = try await eventually(2) { harness.fake.counters.apiRequests - before > 80 }
            #expect(!flooded, "\(harness.fake.counters.apiRequests - before) requests went upstream")
            let all = try await Blocking.run { try SmallWindowReader.readToEnd(fd) }
            let (answers, end) = SmallWindowReader.answers(in: all, bodyBytes: size)
            #expect(answers == count)
            #expect(end == all.count)
            #expect(harness.fake.counters.apiRequests - before == count)
        }
    }

    @Test("a client that takes nothing of its answer is closed after the idle timeout (nginx's send_timeout), and the request logged as cut by the proxy for that")
    func unreadAnswerClosed() async throws {
        try await withProxy(configure: {
            $0.clientIdleTimeout = .seconds(1)
            $0.cache.maxBytes = 0
        }) { harness in
            let size = 12 * 1024 * 1024
            let fd = try SmallWindowReader.connect(port: harness.port)
            defer { close(fd) }
            try SmallWindowReader.send("GET /v1/test/bytes/\(size) HTTP/1.1\r\nHost: x\r\nX-Request-Id: never-read-1\r\n\r\n", on: fd)
            let logged = try await eventually(10) { Self.lines(of: harness, with: "never-read-1").contains { $0.contains("the client took none of the answer for server.idle_timeout; the proxy closed the connection") } }
            #expect(logged, "\(Self.lines(of: harness, with: "never-read-1"))")
            // What the socket buffers held, then the end (or a reset): not the whole answer.
            let received = try await Blocking.run { (try? SmallWindowReader.readToEnd(fd))?.count ?? 0 }
            #expect(received < size)
        }
    }

    @Test("a slow client reading a large answer through a small window gets all of it, byte count exact")
    func smallWindowReader() async throws {
        try await withProxy { harness in
            // Above the cache's 8 MiB whole-answer cap: streamed, with the client's window as the
            // brake. The proxy's writes queue behind it, curl is paused and resumed many times,
            // and the writes' completions never all run at once (the worker connection drops
            // the ones run as it goes: a lost or repeated one would stall or skew the window).
            let size = 12 * 1024 * 1024
            let port = harness.port
            let answer = try await Blocking.run { try SmallWindowReader.get("/v1/test/bytes/\(size)", port: port) }
            #expect(answer.head.hasPrefix("HTTP/1.1 200 "), "\(answer.head)")
            #expect(answer.head.lowercased().contains("content-length: \(size)\r\n"))
            #expect(answer.bodyBytes == size)
        }
    }

    @Test("graceful shutdown lets an in-flight request finish, then stops accepting")
    func gracefulShutdown() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            #expect(try await client.request("GET", "/healthz").status == 200)
            try await client.send("GET /v1/test/slow/400 HTTP/1.1\r\nHost: x\r\n\r\n")
            // Wait until the request is upstream: the fake has counted it.
            while harness.fake.counters.apiRequests == 0 { await Task.yield() }
            await harness.runtime.shutdown()
            let response = try await client.response()
            #expect(response.status == 200)
            try await client.waitForClose()
            try await harness.waitUntilStopped()
            // The listener is closed. (Connecting to its port is no proof: with the suites running
            // in parallel, another test's listener can be given the freed port at once.)
            #expect(!harness.runtime.server.isListening)
        }
    }
}

@Suite("Streaming uploads")
struct StreamingUploadTests {
    @Test("a 48 MiB chunked upload streams through (read back-pressure) and arrives intact")
    func largeUpload() async throws {
        try await withProxy(configure: { $0.maxBodyBytes = 64 << 20 }) { harness in
            let client = try await harness.client()
            let chunk = [UInt8]((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7) })
            let chunks = 48
            var expected = FNV1a()
            try await client.send("PUT /v1/test/echo/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", requests: 1)
            for _ in 0..<chunks {
                var buffer = ByteBuffer(string: String(chunk.count, radix: 16) + "\r\n")
                buffer.writeBytes(chunk)
                buffer.writeString("\r\n")
                try await client.send(buffer, requests: 0)
                expected.add(chunk)
            }
            try await client.send("0\r\n\r\n", requests: 0)
            let response = try await client.response()
            #expect(response.status == 200)
            let echo = try #require(try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any])
            #expect(echo["body_length"] as? Int == chunks * chunk.count)
            #expect(echo["body_fnv1a"] as? String == String(expected.value, radix: 16))
            await client.close()
        }
    }

    @Test("a body over server.max_body_bytes is refused with 413, even when chunked")
    func chunkedOverLimit() async throws {
        try await withProxy(configure: { $0.maxBodyBytes = 1000 }) { harness in
            let client = try await harness.client()
            let body = String(repeating: "a", count: 1500)
            try await client.send("POST /v1/test/echo/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\(String(body.count, radix: 16))\r\n\(body)\r\n0\r\n\r\n")
            let response = try await client.response()
            #expect(response.status == 413)
            try await client.waitForClose()
            // A chunk-size line past the limit is enough, as for nginx: the 413 comes before its
            // bytes do (none are sent here), and nothing reaches Spotify.
            let declaring = try await harness.client()
            try await declaring.send("POST /v1/test/echo/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n", requests: 0)
            try await declaring.send(ByteBuffer(bytes: Array(repeating: UInt8(ascii: "a"), count: 1000) + Array("\r\n1\r\n".utf8)))
            let early = try await declaring.response()
            #expect(early.status == 413)
            #expect(early.text.contains("request body too large: the limit is 1000 bytes (server.max_body_bytes)"), "\(early.text)")
            try await declaring.waitForClose()
            #expect(harness.fake.counters.apiRequests == 0)
        }
    }
}

/// A blocking client with a 4 KiB receive buffer that reads 4 KiB at a time: the slow reader
/// whose window, not the proxy, sets the pace. A stall fails it after 30 s instead of hanging.
enum SmallWindowReader {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// A connected socket with the small window (closed by the caller).
    static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(errno)") }
        var window: Int32 = 4096
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &window, socklen_t(MemoryLayout<Int32>.size))
        var timeout = timeval(tv_sec: 30, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw Failure(description: "connect: \(errno)")
        }
        return fd
    }

    static func send(_ text: String, on fd: Int32) throws {
        let bytes = Array(text.utf8)
        guard Glibc.send(fd, bytes, bytes.count, 0) == bytes.count else { throw Failure(description: "send: \(errno)") }
    }

    /// How many 200 answers with a body of `bodyBytes` (and that length) `stream` starts with,
    /// back to back, and where the last of them ends.
    static func answers(in stream: [UInt8], bodyBytes: Int) -> (count: Int, end: Int) {
        var offset = 0
        var count = 0
        while let end = stream[offset...].firstRange(of: [13, 10, 13, 10])?.upperBound {
            let head = String(decoding: stream[offset..<end], as: UTF8.self).lowercased()
            guard head.hasPrefix("http/1.1 200 "), head.contains("content-length: \(bodyBytes)\r\n"), end + bodyBytes <= stream.count else { break }
            count += 1
            offset = end + bodyBytes
        }
        return (count, offset)
    }

    /// Everything until the proxy closes the connection.
    static func readToEnd(_ fd: Int32) throws -> [UInt8] {
        var all: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count >= 0 else { throw Failure(description: "recv: \(errno) after \(all.count) bytes") }
            if count == 0 { return all }
            all.append(contentsOf: buffer[..<count])
        }
    }

    static func get(_ path: String, port: Int) throws -> (head: String, bodyBytes: Int) {
        let fd = try Self.connect(port: port)
        defer { close(fd) }
        try Self.send("GET \(path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", on: fd)
        var head: [UInt8] = []
        var bodyBytes = 0
        var inBody = false
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count >= 0 else { throw Failure(description: "recv: \(errno) after \(bodyBytes) body bytes") }
            if count == 0 { break }
            if inBody {
                bodyBytes += count
                // The reader's pace (not a wait for anything): slower than the upstream, so the
                // proxy's writes queue behind its window; 12 MiB take about a second.
                usleep(100)
                continue
            }
            head.append(contentsOf: buffer[..<count])
            if let end = head.firstRange(of: [13, 10, 13, 10])?.upperBound {
                bodyBytes = head.count - end
                head.removeLast(head.count - end)
                inBody = true
            }
        }
        return (String(decoding: head, as: UTF8.self), bodyBytes)
    }
}
