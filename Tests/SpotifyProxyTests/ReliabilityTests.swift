import FakeSpotify
import Foundation
import NIOCore
import NIOPosix
import SpotifyCatalog
import SpotifyProxy
import SpotifyProxyTestSupport
import Synchronization
import Testing

@Suite("Reliability: upstream faults")
struct UpstreamFaultTests {
    func errorStatus(_ response: RawHTTPClient.Response) -> Int? {
        (try? JSONValue.parse(Data(response.body)))?["error"]?["status"]?.int
    }

    @Test("a reset inside the upstream's headers is a 502 in Spotify's shape; the proxy keeps serving")
    func resetInHeaders() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            for _ in 0..<20 {
                let response = try await client.request("GET", "/v1/test/fault/reset-in-headers")
                #expect(response.status == 502)
                #expect(self.errorStatus(response) == 502)
            }
            #expect(try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg").status == 200)
            await client.close()
        }
    }

    @Test(
        "an upstream head that cannot be forwarded (a name that is not a token, a control byte in a value, a coding curl cannot decode, a header line over curl's limit) is a 502 saying so before any head, through the cache or not; the proxy keeps serving",
        arguments: [true, false])
    func invalidUpstreamHeader(cacheOn: Bool) async throws {
        try await withProxy(configure: { if !cacheOn { $0.cache.maxBytes = 0 } }) { harness in
            let client = try await harness.client()
            for (fault, words) in [
                ("invalid-header-name", "upstream sent a head that is not valid HTTP: a byte (0xC3) that a header's name cannot hold"),
                ("control-in-header-value", "upstream sent a head that is not valid HTTP: a control byte (0x01) in the value of its X-Note header"),
                // Without the check, curl fails these once the body starts: with the cache off,
                // after the 200 head went out (the client saw a cut connection).
                ("undecodable-transfer-encoding", "upstream sent a Transfer-Encoding the proxy cannot decode (foo, chunked); its libcurl decodes chunked, gzip, deflate"),
                ("undecodable-content-encoding", "upstream sent a Content-Encoding the proxy cannot decode (foo); its libcurl decodes gzip, deflate"),
                ("huge-header-line", "upstream failed: Out of memory (curl also says this of a header line over 100 KB, its limit)"),
                // No answer follows a switch; curl would wait for one until its timeout (30 s).
                ("switching-protocols", "upstream sent 101 Switching Protocols to a request that asked for no upgrade"),
            ] {
                let response = try await client.request("GET", "/v1/test/fault/\(fault)")
                #expect(response.status == 502, "\(fault)")
                #expect(self.errorStatus(response) == 502, "\(fault)")
                let message = (try? JSONValue.parse(Data(response.body)))?["error"]?["message"]?.string ?? ""
                #expect(message.contains(words), "\(message)")
            }
            // An answer without a body gives curl nothing to decode: its codings are not checked.
            #expect(try await client.request("GET", "/v1/test/fault/undecodable-no-content").status == 204)
            // A 1xx head is not forwarded: one with such a header is dropped, and the answer after it goes.
            let afterEarlyHints = try await client.request("GET", "/v1/test/fault/invalid-informational")
            #expect(afterEarlyHints.status == 200)
            #expect(afterEarlyHints.text == "{}")
            #expect(try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg").status == 200)
            await client.close()
        }
    }

    @Test("an answer to a HEAD sent upstream as a HEAD has no body to decode: a coding curl cannot decode goes through")
    func undecodableCodingOnHead() async throws {
        // Links not rewritten, cache off: a HEAD goes upstream as a HEAD (else it is sent as a GET).
        try await withProxy(configure: { $0.rewriteLinks = false; $0.cache.maxBytes = 0 }) { harness in
            let client = try await harness.client()
            try await client.send("HEAD /v1/test/fault/undecodable-content-encoding HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", method: .HEAD)
            let response = try await client.response()
            #expect(response.status == 200)
            #expect(try await client.request("GET", "/v1/test/fault/undecodable-content-encoding").status == 502)
            await client.close()
        }
    }

    @Test("a reset inside the upstream's body cuts the client's connection (its head was already sent)")
    func resetInBody() async throws {
        // The streaming path: with the cache on, a GET is answered whole (see CacheTests).
        try await withProxy(configure: { $0.cache.maxBytes = 0 }) { harness in
            let client = try await harness.client()
            await #expect(throws: (any Error).self) { _ = try await client.request("GET", "/v1/test/fault/reset-in-body") }
            try await client.waitForClose()
            let other = try await harness.client()
            #expect(try await other.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg").status == 200)
            await other.close()
        }
    }

    @Test("an upstream that never answers is a 504 after the total timeout, for every waiting client")
    func stall() async throws {
        try await withProxy(configure: { $0.upstream.totalTimeout = .milliseconds(300) }) { harness in
            try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<20 {
                    group.addTask {
                        let client = try await harness.client()
                        defer { Task { await client.close() } }
                        return try await client.request("GET", "/v1/test/fault/stall").status
                    }
                }
                for try await status in group { #expect(status == 504) }
            }
        }
    }

    @Test("a burst of 5xx passes through unchanged, and many clients of a slow upstream all get their answer")
    func burstsAndSlowness() async throws {
        try await withProxy { harness in
            let statuses = StatusTally()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<50 {
                    group.addTask {
                        let client = try await harness.client()
                        let target = index % 2 == 0 ? "/v1/test/status/503" : "/v1/test/slow/200"
                        let status = try await client.request("GET", target).status
                        statuses.counts.withLock { $0[status, default: 0] += 1 }
                        await client.close()
                    }
                }
                try await group.waitForAll()
            }
            #expect(statuses.counts.withLock { $0 } == [503: 25, 200: 25])
        }
    }

    @Test("after faults of every kind, no connection is left open, upstream or downstream")
    func noLeakedConnections() async throws {
        try await withProxy(configure: { $0.upstream.totalTimeout = .milliseconds(200) }) { harness in
            func exchange(_ target: String) async throws {
                for _ in 0..<10 {
                    let client = try await harness.client()
                    _ = try? await client.request("GET", target)
                    await client.close()
                }
            }
            // The proxy's sockets: those it accepted on its port, and those it opened to the
            // upstream. (The fake's own accepted sockets are the test's: under heavy load one was
            // once left ESTABLISHED after the proxy's end of it was gone entirely.)
            func upstream() -> Int { TCPConnections.established(port: harness.fake.port, at: .remote) }
            func downstream() -> Int { TCPConnections.established(port: harness.port, at: .local) }
            func sockets() -> String {
                "proxy port: \(TCPConnections.sockets(port: harness.port)), upstream port: \(TCPConnections.sockets(port: harness.fake.port))"
            }
            // A connection that failed (reset in the head or the body, a stall cut by the timeout)
            // is closed, never returned to curl's pool. Closing is asynchronous on both ends:
            // wait for the counts to settle, then compare.
            // The token endpoint's connection (the refresher's, kept in the shared curl thread's
            // pool; the fake serves the accounts service on the same port) is not the faults'.
            let ready = try await eventually(5) {
                let client = try await harness.client()
                let status = try await client.request("GET", "/readyz").status
                await client.close()
                return status == 200
            }
            try #require(ready)
            let before = upstream()
            for fault in ["reset-in-headers", "reset-in-body", "stall"] { try await exchange("/v1/test/fault/\(fault)") }
            #expect(try await eventually(5) { upstream() <= before && downstream() == 0 }, "\(sockets())")
            // A whole 500 leaves its connection alive and pooled: the ten answers share one per
            // worker loop (each loop has its own curl handle and pool).
            try await exchange("/v1/test/status/500")
            let workers = ListenerSettings(harness.configuration).workers
            #expect(try await eventually(5) { upstream() <= before + workers && downstream() == 0 }, "\(sockets())")
        }
    }

    @Test("after faults of every kind, the proxy process holds no more file descriptors than before")
    func noLeakedDescriptors() async throws {
        // The proxy runs in its own process here, so /proc/<pid>/fd counts its descriptors
        // alone (the other suites share this test process).
        // The fake gets an event loop of its own: on the shared group, other suites' load (the
        // 10,000-connection test) once delayed a reset past the timeout, turning a 502 into a 504.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let fake = try await FakeSpotify.start(group: group)
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let port = try LoopbackPort.free()
        let config = try writeProxyConfig(
            in: directory, port: port, fake: fake, spotify: "total_timeout = 10",
            sections: "[sink]\nkind = \"none\"\n[cache]\nmax_bytes = 0")
        // Its log (request lines with curl's reason for each failure) is kept for the failure message.
        let log = directory.appendingPathComponent("proxy.log")
        let process = try launchProxy(config: config, log: log)
        // Stopped below; should the test throw first, killed (no wait on the cooperative pool).
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        func openDescriptors() -> Int {
            (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(process.processIdentifier)/fd").count) ?? -1
        }
        func get(_ target: String) async throws -> Int? {
            guard let client = try? await RawHTTPClient.connect(port: port) else { return nil }
            let status = try? await client.request("GET", target).status
            await client.close()
            return status
        }
        let artist = "/v1/artists/0TnOYISbd1XYRBk9myaseg"
        // Warm: a token fetched, one upstream connection cached, every loop and thread started.
        #expect(try await eventually(10) { try await get(artist) == 200 })
        let before = openDescriptors()
        try #require(before > 0, "cannot read /proc/\(process.processIdentifier)/fd")
        // The ten stalls run at once, so they cost one timeout, not ten, and the timeout can be
        // long enough (10 s) that no other request reaches it on a loaded machine (0.2 s did, in
        // CI, and 3 s did twice under the whole suite's load: a reset seen after the timeout). The others run one after another: answers that keep their upstream connection
        // alive then reuse the one cached connection instead of leaving ten in curl's cache.
        var statuses: [Int: Int] = [:]
        for target in ["/v1/test/fault/reset-in-headers", "/v1/test/fault/reset-in-body", "/v1/test/status/500", artist] {
            for _ in 0..<10 { statuses[try await get(target) ?? 0, default: 0] += 1 }
        }
        try await withThrowingTaskGroup(of: Int?.self) { group in
            for _ in 0..<10 { group.addTask { try await get("/v1/test/fault/stall") } }
            for try await status in group { statuses[status ?? 0, default: 0] += 1 }
        }
        // reset-in-body: the head was out, so the client sees its connection cut (no status).
        #expect(
            statuses == [502: 10, 0: 10, 504: 10, 500: 10, 200: 10],
            "the proxy's answers other than 200: \(((try? String(contentsOf: log, encoding: .utf8)) ?? "").split(separator: "\n").filter { $0.contains("status=5") || $0.contains("warning") || $0.contains("error") }.joined(separator: "\n"))")
        let settled = try await eventually(5) { openDescriptors() <= before }
        #expect(settled, "open descriptors: \(before) before the faults, \(openDescriptors()) after")
        await stopGracefully(process)
        try await fake.shutdown()
        try await group.shutdownGracefully()
    }
}

@Suite("Reliability: abusive clients")
struct AbuseTests {
    @Test("slowloris: half-sent requests are closed after the idle timeout while others are served")
    func slowloris() async throws {
        try await withProxy(configure: { $0.clientIdleTimeout = .seconds(1) }) { harness in
            var idle: [RawHTTPClient] = []
            for _ in 0..<100 {
                let client = try await harness.client()
                // On a loaded machine the idle timeout may already have closed it: that is the point.
                try? await client.send("GET /v1/artists/0TnOYISbd1XYRBk9myaseg HTTP/1.1\r\nHost: x\r\nX-Slow: ", requests: 0)
                idle.append(client)
            }
            let served = try await harness.client()
            #expect(try await served.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg").status == 200)
            for client in idle { try await client.waitForClose() }
            await served.close()
        }
    }

    @Test("a head that never comes whole is closed after the idle timeout and logged and counted as a 408 under a placeholder line (nginx's client_header_timeout), with the head's time; a connection that sent nothing is closed without a line")
    func headTimeoutLogged() async throws {
        try await withProxy(configure: { $0.clientIdleTimeout = .seconds(1) }) { harness in
            let client = try await harness.client()
            let silent = try await harness.client()
            try await client.send("GET /v1/artists/0TnOYISbd1XYRBk9myaseg HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ", requests: 0)
            try await client.waitForClose()
            try await silent.waitForClose()
            #expect(try await eventually(5) { harness.logs.all.contains { $0.contains("status=408") && $0.contains("method=-") } }, "\(harness.logs.all)")
            #expect(harness.logs.all.filter { $0.contains("status=") }.count == 1, "one line: the silent connection has none")
            // Its time is the head's, from its first byte: the idle timeout at least.
            let line = try #require(harness.logs.all.first { $0.contains("status=408") })
            let ms = try #require(line.split(separator: " ").first { $0.hasPrefix("ms=") }.flatMap { Int($0.dropFirst(3)) }, "\(line)")
            #expect(ms >= 1000, "\(line)")
            let metrics = try await harness.client().request("GET", "/metrics").text
            #expect(MetricsTests.sum(MetricsTests.parse(metrics), "spotify_proxy_requests_total", ["code": "4xx"]) == 1)
            #expect(harness.fake.counters.apiRequests == 0)
        }
    }

    @Test("empty lines between requests (RFC 9112 has servers ignore them) begin no head: a request after them is answered, and a connection left with them is closed as idle, without a 408 line")
    func emptyLinesAreNoHead() async throws {
        try await withProxy(configure: { $0.clientIdleTimeout = .seconds(1) }) { harness in
            let client = try await harness.client()
            try await client.send("\r\nGET /v1/artists/0TnOYISbd1XYRBk9myaseg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n\r\n")
            #expect(try await client.response().status == 200)
            try await client.send("\r\n", requests: 0)
            try await client.waitForClose()
            #expect(try await eventually(5) { harness.logs.all.contains { $0.contains("status=200") } }, "\(harness.logs.all)")
            #expect(!harness.logs.all.contains { $0.contains("status=408") }, "\(harness.logs.all)")
        }
    }

    @Test("slowloris on the head: a byte every 200 ms does not keep a connection past the idle timeout")
    func headTrickle() async throws {
        try await withProxy(configure: { $0.clientIdleTimeout = .seconds(1) }) { harness in
            let client = try await harness.client()
            let started = ContinuousClock.now
            let head = Array("GET /v1/artists/0TnOYISbd1XYRBk9myaseg HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: \(String(repeating: "a", count: 60))".utf8)
            var closed = false
            for byte in head {
                // The client's pace, not a wait: 60 bytes would take 12 s.
                try await Task.sleep(for: .milliseconds(200))
                do {
                    try await client.send(ByteBuffer(bytes: [byte]), requests: 0)
                } catch {
                    closed = true
                    break
                }
            }
            if !closed { try await client.waitForClose() }
            // The head's second is up after 1 s; the sweep runs every quarter of it.
            #expect(ContinuousClock.now - started < .seconds(4))
            #expect(try await harness.client().request("GET", "/healthz").status == 200)
        }
    }

    @Test(
        "slowloris on the body: a body that stops coming is answered 408 naming the timer that fired (the proxy's idle sweep, or curl's idle or total timeout while it waits for the body), the upstream not blamed, and the connection closes",
        arguments: [
            ("server.idle_timeout", 1, 30, 120, "the request body stopped arriving: no more of it came within server.idle_timeout"),
            ("spotify.idle_timeout", 30, 1, 120, "the request body stopped arriving: no more of it came within spotify.idle_timeout"),
            ("spotify.total_timeout", 30, 30, 1, "the request body did not all arrive within spotify.total_timeout"),
        ])
    func bodyStall(timer: String, clientIdleSeconds: Int, upstreamIdleSeconds: Int, totalSeconds: Int, message: String) async throws {
        try await withProxy(configure: {
            $0.clientIdleTimeout = .seconds(clientIdleSeconds)
            $0.upstream.idleTimeout = .seconds(upstreamIdleSeconds)
            $0.upstream.totalTimeout = .seconds(totalSeconds)
        }) { harness in
            let client = try await harness.client()
            let started = ContinuousClock.now
            try await client.send("POST /v1/test/echo/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nabc", method: .POST)
            let response = try await client.response()
            #expect(response.status == 408)
            #expect(response.text.contains(message), "\(timer): \(response.text)")
            try await client.waitForClose()
            #expect(ContinuousClock.now - started < .seconds(5))
            #expect(harness.fake.counters.apiRequests <= 1)
            #expect(harness.logs.all.contains { $0.contains("status=408") })
            let metrics = try await harness.client()
            let text = try await metrics.request("GET", "/metrics").text
            #expect(MetricsTests.sum(MetricsTests.parse(text), "spotify_proxy_upstream_failures_total") == 0)
            await metrics.close()
        }
    }

    @Test("10,000 connections opened and dropped: the proxy keeps serving and holds none of them")
    func connectionChurn() async throws {
        try await withProxy { harness in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        for index in 0..<1250 {
                            let client = try await harness.client()
                            if (worker + index) % 3 == 0 { try? await client.send("GET /v1/artists/0TnO", requests: 0) }
                            await client.close()
                        }
                    }
                }
                try await group.waitForAll()
            }
            let client = try await harness.client()
            #expect(try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg").status == 200)
            await client.close()
            #expect(try await eventually(5) { TCPConnections.established(port: harness.port) == 0 })
        }
    }
}
