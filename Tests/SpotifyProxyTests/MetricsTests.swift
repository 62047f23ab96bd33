import FakeSpotify
import Foundation
@testable import SpotifyProxy
import SpotifyProxyTestSupport
import Testing

@Suite("Metrics")
struct MetricsTests {
    /// One sample of a Prometheus text exposition, its labels parsed.
    struct Sample {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    /// Every sample of an exposition, labels parsed (`name{a="x",b="y"} 1`).
    static func parse(_ text: String) -> [Sample] {
        text.split(separator: "\n").compactMap { line -> Sample? in
            guard !line.hasPrefix("#"), let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { return nil }
            let series = line[..<space]
            guard let brace = series.firstIndex(of: "{") else { return Sample(name: String(series), labels: [:], value: value) }
            var labels: [String: String] = [:]
            for match in series[brace...].matches(of: /([a-z_]+)="([^"]*)"/) { labels[String(match.1)] = String(match.2) }
            return Sample(name: String(series[..<brace]), labels: labels, value: value)
        }
    }

    /// The sum of `name`'s samples whose labels include `labels`.
    static func sum(_ samples: [Sample], _ name: String, _ labels: [String: String] = [:]) -> Double {
        samples.filter { sample in sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value } }.reduce(0) { $0 + $1.value }
    }

    /// The samples of a Prometheus text exposition: `name{labels}` → value.
    func samples(_ text: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            out[String(line[..<space])] = value
        }
        return out
    }

    @Test("Every metric family has a # HELP line before its # TYPE line, as promtool's check metrics wants")
    func helpLines() {
        let metrics = ProxyMetrics()
        var memo = ProxyMetrics.Memo()
        metrics.recordRequest(method: "GET", route: "/v1/artists/{id}", status: 200, key: "alice", nanoseconds: 1_000_000, memo: &memo)
        metrics.recordUpstream(route: "/v1/artists/{id}", nanoseconds: 500_000, memo: &memo)
        metrics.recordUpstreamFailure(.timeout)
        let user = UserStatus(
            label: "bob", state: .fresh, spotifyUserID: "bob", tokenExpiresInSeconds: 3_000, refreshTokenDaysLeft: 100, problem: nil,
            refreshTokenExpiresInSeconds: 8_640_000)
        let text = String(
            decoding: metrics.render(
                tee: TeeWriter.Stats(), tokenReady: true, users: [user],
                tokens: [("app", TokenFigures(refreshes: 1, failures: 0, expiresInSeconds: 3_000))],
                governor: (limited: (seconds: 5, reason: "spotify"), upstream429s: 1, answeredLocally: ["budget": 1]),
                cache: ResponseCache.Stats(), devMode: DevMode.Status(setting: "auto", active: true, detected: true, limitCap: 10, batchesAssembled: 1, pagesAssembled: 1),
                reloads: ReloadRecord.Status()),
            as: UTF8.self)
        let lines = text.split(separator: "\n").map(String.init)
        let families = lines.filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] }
        #expect(families.count == Set(ProxyMetrics.help.keys).count, "every family in the help table is rendered here, and no other")
        for (index, line) in lines.enumerated() where line.hasPrefix("# TYPE ") {
            let name = line.split(separator: " ")[2]
            #expect(index > 0 && lines[index - 1].hasPrefix("# HELP \(name) "), "\(name) has no # HELP line")
        }
    }

    @Test("status's cache hit ratio: hits and collapsed requests over all lookups; a status without `collapsed` (an older proxy's) still reads")
    func cacheHitRatio() throws {
        var stats = ResponseCache.Stats()
        (stats.hits, stats.staleHits, stats.collapsed, stats.misses) = (10, 2, 8, 40)
        let state = ProxyStatus.CacheState(stats, maxBytes: 1)
        #expect(state.hitRatio == 20.0 / 60.0 && state.collapsed == 8 && state.forwarded == 40)
        #expect(ProxyStatus.CacheState(ResponseCache.Stats(), maxBytes: 1).hitRatio == nil)
        let older = #"{"entries":1,"bytes":2,"max_bytes":3,"hits":4,"stale_hits":0,"forwarded":1,"hit_ratio":0.8}"#
        #expect(try ProxyStatus.decoder().decode(ProxyStatus.CacheState.self, from: Data(older.utf8)).collapsed == nil)
    }

    @Test("The proxy's own 429 reasons are counted from 0 before the first such answer; Spotify's reasons join as they come")
    func localRateLimitReasonsStartAtZero() {
        let metrics = ProxyMetrics()
        func render(_ answeredLocally: [String: Int]) -> [String: Double] {
            samples(String(decoding: metrics.render(tee: nil, tokenReady: true, governor: (nil, 0, answeredLocally)), as: UTF8.self))
        }
        let fresh = render([:])
        #expect(fresh[#"spotify_proxy_rate_limited_answers_total{reason="rate_limited"}"#] == 0)
        #expect(fresh[#"spotify_proxy_rate_limited_answers_total{reason="budget"}"#] == 0)
        #expect(fresh[#"spotify_proxy_rate_limited_answers_total{reason="key_budget"}"#] == 0)
        let later = render(["QUOTA_EXCEEDED": 2, "budget": 1])
        #expect(later[#"spotify_proxy_rate_limited_answers_total{reason="QUOTA_EXCEEDED"}"#] == 2)
        #expect(later[#"spotify_proxy_rate_limited_answers_total{reason="budget"}"#] == 1)
        #expect(later[#"spotify_proxy_rate_limited_answers_total{reason="rate_limited"}"#] == 0)
    }

    @Test("A 429 answered locally is counted under Spotify's reason only when it is a known one: the label never takes whatever the upstream sends")
    func countedReasons() {
        #expect(Governor.countedReason(nil) == "rate_limited")
        #expect(Governor.countedReason("QUOTA_EXCEEDED") == "QUOTA_EXCEEDED")
        #expect(Governor.countedReason("weird\"reason\n{label=\"x\"}") == "other")
        #expect(Governor.countedReason("quota_exceeded") == "other")
    }

    @Test("A user's series (and its token's) go when the user is no longer listed; they come back at a new login")
    func loggedOutSeriesGo() {
        let metrics = ProxyMetrics()
        let bob = UserStatus(label: "bob", state: .fresh, spotifyUserID: "bob", tokenExpiresInSeconds: 3_000, refreshTokenDaysLeft: 100, problem: nil)
        let app = (name: "app", figures: TokenFigures(refreshes: 1, failures: 0, expiresInSeconds: 3_000))
        let bobToken = (name: "bob", figures: TokenFigures(refreshes: 2, failures: 1, expiresInSeconds: 3_000))
        func render(_ users: [UserStatus], _ tokens: [(name: String, figures: TokenFigures)]) -> String {
            String(decoding: metrics.render(tee: nil, tokenReady: true, users: users, tokens: tokens), as: UTF8.self)
        }
        let before = render([bob], [app, bobToken])
        #expect(before.contains(#"spotify_proxy_user_token_ready{user="bob"} 1"#) && before.contains(#"spotify_proxy_token_refreshes_total{token="bob"} 2"#))
        #expect(!before.contains("spotify_proxy_user_refresh_token_expires_in_seconds"), "unknown: no series, not 0")
        var known = bob
        known.refreshTokenExpiresInSeconds = 86_400
        #expect(render([known], [app, bobToken]).contains(#"spotify_proxy_user_refresh_token_expires_in_seconds{user="bob"} 86400"#))
        let after = render([], [app])
        #expect(!after.contains("bob"), "\(after)")
        #expect(after.contains(#"spotify_proxy_token_refreshes_total{token="app"} 1"#), "\(after)")
        let again = render([bob], [app, bobToken])
        #expect(again.contains(#"spotify_proxy_user_token_ready{user="bob"} 1"#) && again.contains(#"spotify_proxy_token_refresh_failures_total{token="bob"} 1"#))
    }

    @Test("/metrics counts answered requests by status class, upstream failures and the tee, in Prometheus' text format")
    func exposition() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try await withProxy(configure: { config in
            // Only the stall may reach it: long enough for the others on a loaded CI machine.
            config.upstream.totalTimeout = .seconds(2)
            // Every request goes upstream (the cache's counters are CacheTests').
            config.cache.maxBytes = 0
            config.sink.kind = .jsonl
            config.sink.path = directory.appendingPathComponent("library.jsonl").path
            config.sink.spoolDirectory = directory.appendingPathComponent("spool").path
        }) { harness in
            let client = try await harness.client()
            let statuses = try await [
                "/v1/artists/0TnOYISbd1XYRBk9myaseg", "/v1/artists/0TnOYISbd1XYRBk9myaseg", "/v1/test/status/404", "/nope",
                "/v1/test/status/503", "/v1/test/fault/stall", "/healthz",
            ].asyncMap { try await client.request("GET", $0).status }
            #expect(statuses == [200, 200, 404, 404, 503, 504, 200])

            let response = try await client.request("GET", "/metrics")
            #expect(response.status == 200)
            #expect(response.headers["content-type"].first == "text/plain; version=0.0.4; charset=utf-8")
            let text = String(decoding: response.body, as: UTF8.self)
            #expect(text.contains("# TYPE spotify_proxy_requests_total counter"))
            #expect(text.contains("# TYPE spotify_proxy_request_duration_seconds histogram"))
            let values = self.samples(text)
            let parsed = Self.parse(text)
            // /healthz and /metrics are the proxy's own state, not counted.
            #expect(Self.sum(parsed, "spotify_proxy_requests_total", ["code": "2xx"]) == 2)
            #expect(Self.sum(parsed, "spotify_proxy_requests_total", ["code": "4xx"]) == 2)
            #expect(Self.sum(parsed, "spotify_proxy_requests_total", ["code": "5xx"]) == 2)
            #expect(Self.sum(parsed, "spotify_proxy_requests_total", ["method": "GET", "route": "/v1/artists/{id}", "code": "2xx", "key": "-"]) == 2)
            #expect(Self.sum(parsed, "spotify_proxy_requests_total", ["route": "other", "code": "4xx"]) == 2, "made-up paths (/nope, the fake's /v1/test/...) are not labels of their own")
            #expect(!text.contains("0TnOYISbd1XYRBk9myaseg"), "no raw id in any label")
            #expect(values["spotify_proxy_request_duration_seconds_count"] == 6)
            #expect(values[#"spotify_proxy_upstream_failures_total{kind="timeout"}"#] == 1)
            #expect(values[#"spotify_proxy_upstream_failures_total{kind="connect"}"#] == 0)
            // Both artist answers were handed to the tee before their last byte reached the client.
            #expect(values["spotify_proxy_tee_bodies_queued_total"] == 2)
            #expect(values["spotify_proxy_tee_bodies_dropped_total"] == 0)
            #expect(values["spotify_proxy_tee_spool_pending"] == 0)
            #expect(values["spotify_proxy_token_ready"] == 1)
            await client.close()
        }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        out.reserveCapacity(self.count)
        for element in self { out.append(try await transform(element)) }
        return out
    }
}
