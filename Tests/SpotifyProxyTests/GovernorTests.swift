import FakeSpotify
import Foundation
import SpotifyCatalog
import SpotifyProxy
import SpotifyProxyTestSupport
import Testing

@Suite("The 429 governor")
struct GovernorTests {
    typealias Machine = GovernorStateMachine<ManualClock.Instant>
    static let t0 = ManualClock.Instant(offset: .zero)
    static func at(_ seconds: Double) -> ManualClock.Instant { t0.advanced(by: .milliseconds(Int64(seconds * 1000))) }

    @Test("a 429 limits until Retry-After; a shorter later one does not shorten it; the body's reason is kept")
    func schedule() {
        var machine = Machine()
        let before = machine.decide(now: Self.t0)
        machine.rateLimited(retryAfter: .seconds(3600), now: Self.t0)
        let atOnce = machine.decide(now: Self.t0)
        machine.reasonArrived("QUOTA_EXCEEDED")
        let later = machine.decide(now: Self.at(1))
        machine.rateLimited(retryAfter: .seconds(7), now: Self.at(2))
        let afterShorter = machine.decide(now: Self.at(2))
        let justBefore = machine.decide(now: Self.at(3599.999))
        let after = machine.decide(now: Self.at(3600))
        #expect(before == .pass)
        #expect(atOnce == .limited(remaining: .seconds(3600), reason: nil))
        #expect(later == .limited(remaining: .seconds(3599), reason: "QUOTA_EXCEEDED"))
        #expect(afterShorter == .limited(remaining: .seconds(3598), reason: "QUOTA_EXCEEDED"))
        #expect(justBefore == .limited(remaining: .milliseconds(1), reason: "QUOTA_EXCEEDED"))
        #expect(after == .pass)
    }

    @Test("a 429 without Retry-After, or with 0, limits for Spotify's 30-second window")
    func noRetryAfter() {
        var machine = Machine()
        machine.rateLimited(retryAfter: nil, now: Self.t0)
        #expect(machine.decide(now: Self.at(29)) == .limited(remaining: .seconds(1), reason: nil))
        #expect(machine.decide(now: Self.at(30)) == .pass)
        #expect(Governor.retryAfter("3600") == .seconds(3600))
        // An HTTP date: the time until it; a past one, none.
        let now = Date(timeIntervalSince1970: 1_445_412_400)  // Wed, 21 Oct 2015 07:26:40 GMT
        #expect(Governor.retryAfter("Wed, 21 Oct 2015 07:28:00 GMT", now: now) == .seconds(80))
        #expect(Governor.retryAfter("Wed, 21 Oct 2015 07:28:00 GMT") == nil)
        #expect(Governor.retryAfter("Wednesday soon", now: now) == nil)
        // Never early: a fraction counts as a whole second; never forever: at most a day.
        #expect(Governor.retryAfter("3600.5") == .seconds(3601))
        #expect(Governor.retryAfter("9223372036854775807") == .seconds(86_400))
        #expect(Governor.retryAfter("1e400") == nil)
        #expect(Governor.retryAfter("1e300") == .seconds(86_400))
        #expect(Governor.retryAfter("-5") == nil)
        // Spotify has sent 0 while it went on refusing (spotify/web-api#542): 30 s, as without one.
        #expect(Governor.retryAfter("0") == nil)
        #expect(Governor.retryAfter("0.2") == .seconds(1))
    }

    @Test("limited: the proxy answers 429 itself with the remaining Retry-After and Spotify's reason; the upstream sees nothing")
    func answersLocally() async throws {
        try await withProxy { proxy in
            proxy.fake.setRateLimited(retryAfter: 3600, reason: "QUOTA_EXCEEDED")
            let client = try await proxy.client()
            let first = try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg")
            // Spotify's own answer goes through.
            #expect(first.status == 429)
            #expect(first.headers["retry-after"] == ["3600"])
            #expect(first.text.contains(#""message":"Too many requests""#))
            let reached = proxy.fake.counters.apiRequests
            var answers: [RawHTTPClient.Response] = []
            for target in ["/v1/artists/0TnOYISbd1XYRBk9myaseg", "/v1/search?q=abba&type=artist", "/v1/albums/3IqzqH6ShrRtie9Yd2ODyG"] {
                answers.append(try await client.request("GET", target))
            }
            let ready = try await client.request("GET", "/readyz")
            let metrics = try await client.request("GET", "/metrics")
            await client.close()
            #expect(proxy.fake.counters.apiRequests == reached)
            for answer in answers {
                #expect(answer.status == 429)
                let retryAfter = Int(answer.headers["retry-after"].first ?? "") ?? 0
                // Counting down from Spotify's 3,600 s (a few seconds pass on a loaded machine).
                #expect((3590...3600).contains(retryAfter))
                let error = try #require(try jsonObject(answer)["error"] as? [String: Any])
                #expect(error["status"] as? Int == 429)
                #expect(error["reason"] as? String == "QUOTA_EXCEEDED")
            }
            #expect(ready.status == 200)
            #expect(ready.text.contains(#""rate_limited":{"for_s":"#))
            #expect(ready.text.contains(#","until":"20"#), "until when, as a UTC timestamp: \(ready.text)")
            #expect(metrics.text.contains("spotify_proxy_upstream_429_total 1"))
            #expect(metrics.text.contains(#"spotify_proxy_rate_limited_answers_total{reason="QUOTA_EXCEEDED"} 3"#))
        }
    }

    @Test("Spotify's 429 with Retry-After: 0 reaches the client saying 30, the limit the proxy applies for it, and the next request is the proxy's own 429 (cache off, and on)", arguments: [0, 1 << 20])
    func retryAfterZero(cacheBytes: Int) async throws {
        try await withProxy(configure: { $0.cache.maxBytes = cacheBytes }) { proxy in
            proxy.fake.setRateLimited(retryAfter: 0)
            let client = try await proxy.client()
            let first = try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg")
            #expect(first.status == 429)
            #expect(first.headers["retry-after"] == ["30"], "\(first.headers)")
            let reached = proxy.fake.counters.apiRequests
            let second = try await client.request("GET", "/v1/albums/3IqzqH6ShrRtie9Yd2ODyG")
            #expect(second.status == 429)
            #expect((25...30).contains(Int(second.headers["retry-after"].first ?? "") ?? 0), "\(second.headers)")
            #expect(proxy.fake.counters.apiRequests == reached, "not sent while limited")
            await client.close()
        }
        #expect(Governor.retryAfterForClient("0") == "30" && Governor.retryAfterForClient(nil) == "30" && Governor.retryAfterForClient("x") == "30")
        #expect(Governor.retryAfterForClient("7") == nil)
        // Whole seconds for clients that read no other (urllib3, spotipy's, fails on 1.5).
        #expect(Governor.retryAfterForClient("1.5") == "2" && Governor.retryAfterForClient("999999") == "86400")
        #expect(Governor.retryAfterForClient("Wed, 21 Oct 2015 07:28:00 GMT", now: Date(timeIntervalSince1970: 1_445_412_400)) == "80")
    }

    @Test("limited, in development mode: a batch assembled from cached parts is given (a hit), not the governor's 429; one needing Spotify gets the 429 and sends nothing")
    func assembledWhileLimited() async throws {
        try await withProxy(configure: { $0.devMode = .on }, prepareFake: { $0.setDevelopmentMode(true) }) { proxy in
            let client = try await proxy.client()
            let cached = "0TnOYISbd1XYRBk9myaseg"
            #expect(try await client.request("GET", "/v1/artists/\(cached)").status == 200)
            // Spotify's 429 on a request that reaches it limits the app.
            proxy.fake.setRateLimited(retryAfter: 3600)
            #expect(try await client.request("GET", "/v1/albums/3IqzqH6ShrRtie9Yd2ODyG").status == 429)
            let reached = proxy.fake.counters.apiRequests
            let assembled = try await client.request("GET", "/v1/artists?ids=\(cached),\(cached)")
            let needsSpotify = try await client.request("GET", "/v1/artists?ids=\(cached),2CIMQHirSU0MQqyYHq0eOx")
            let metrics = try await client.request("GET", "/metrics")
            await client.close()
            #expect(metrics.text.contains(#"spotify_proxy_dev_mode_assembled_total{kind="batch"} 1"#), "only the batch answered is counted as assembled")
            #expect(assembled.status == 200, "\(assembled.text)")
            #expect(assembled.headers["cache-status"] == ["spotify-proxy; hit; detail=dev-mode-assembled"])
            #expect(try JSONValue.parse(Data(assembled.body))["artists"]?.array?.count == 2)
            #expect(needsSpotify.status == 429)
            #expect((3590...3600).contains(Int(needsSpotify.headers["retry-after"].first ?? "") ?? 0), "\(needsSpotify.headers)")
            #expect(proxy.fake.counters.apiRequests == reached)
        }
    }

    @Test("the log says when Spotify begins to limit the app, once, not at every 429 while it does; and when auto learns development mode, once")
    func noticesOnce() {
        let logs = LogCapture()
        let governor = Governor(settings: GovernorSettings(), logger: logs.logger())
        governor.rateLimited(.app, retryAfter: .seconds(40))
        governor.rateLimited(.user("alice"), retryAfter: .seconds(40))
        governor.rateLimited(.app, retryAfter: nil)
        let limited = logs.all.filter { $0.contains("Spotify rate-limited the app (429)") }
        #expect(limited.count == 1, "\(logs.all)")
        #expect(limited.first?.hasPrefix("notice ") == true && limited.first?.contains("retry_after_s=40") == true, "\(limited)")

        let refusal = UpstreamAnswer(status: 403, headers: [:], body: Array(#"{"error":{"status":403,"message":"Forbidden"}}"#.utf8))
        let batch = Assembly.batch(key: "artists", parts: ["0TnOYISbd1XYRBk9myaseg"])
        for setting in [DevModeSetting.auto, .on] {
            let learned = LogCapture()
            let devMode = DevMode(setting: setting, logger: learned.logger())
            #expect(devMode.refused(batch, with: refusal) && devMode.refused(batch, with: refusal))
            let lines = learned.all.filter { $0.contains("development-mode app") }
            #expect(lines.count == (setting == .auto ? 1 : 0), "\(setting): \(learned.all)")
        }
    }

    @Test("max_wait counts every hold: a request already held by a limit is paced, or held by a limit again, only for what is left of max_wait")
    func maxWaitInAll() {
        var settings = GovernorSettings()
        settings.budget = 10
        settings.maxWait = .seconds(10)
        // A slot every 3 s.
        let paced = Governor(settings: settings)
        #expect(paced.admit(.app) == .pass)
        guard case .hold(let wait, paced: true) = paced.admit(.app, pacing: true, waited: .zero) else {
            Issue.record("not paced")
            return
        }
        #expect(wait > .seconds(2) && wait <= .seconds(3))
        // The next slot is about 6 s away: within max_wait alone, past what 8 s of holding left of it.
        guard case .refuse(let refusal) = paced.admit(.app, pacing: true, waited: .seconds(8)) else {
            Issue.record("held past max_wait in all")
            return
        }
        #expect(refusal.status == 429)
        settings.budget = nil
        settings.policy = .wait
        let waiting = Governor(settings: settings)
        waiting.rateLimited(.app, retryAfter: .seconds(5))
        guard case .hold(_, paced: false) = waiting.admit(.app, pacing: true, waited: .zero) else {
            Issue.record("the wait policy did not hold")
            return
        }
        guard case .refuse = waiting.admit(.app, pacing: true, waited: .seconds(8)) else {
            Issue.record("held past max_wait in all")
            return
        }
    }

    @Test("budget: identical concurrent cache misses go upstream once and spend one slot; none gets the proxy's 429")
    func budgetCoalesced() async throws {
        try await withProxy(configure: {
            // One request per 3 s, and no wait long enough for a second slot.
            $0.governor.budget = 10
            $0.governor.maxWait = .seconds(1)
        }) { proxy in
            // Spotify answers slowly: every request arrives while the first is upstream.
            proxy.fake.setLatency(.milliseconds(500))
            let before = proxy.fake.counters.apiRequests
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<5 {
                    group.addTask {
                        let client = try await proxy.client()
                        let answer = try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg")
                        await client.close()
                        return answer.status
                    }
                }
                return try await group.reduce(into: [Int]()) { $0.append($1) }
            }
            #expect(statuses == [200, 200, 200, 200, 200])
            #expect(proxy.fake.counters.apiRequests - before == 1)
        }
    }

    @Test("the limit passes: requests go upstream again")
    func limitPasses() async throws {
        try await withProxy { proxy in
            proxy.fake.setRateLimited(retryAfter: 2)
            let client = try await proxy.client()
            #expect(try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg").status == 429)
            proxy.fake.setRateLimited(retryAfter: nil)
            #expect(try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg").status == 429)
            let recovered = try await eventually(5) { try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg").status == 200 }
            await client.close()
            #expect(recovered)
        }
    }

    typealias Pacer = PacerStateMachine<ManualClock.Instant>

    @Test("pacing: 30 s / budget apart on average, a tenth of the budget at once, refused beyond max_wait without taking a slot")
    func pacing() {
        var ten = Pacer(budget: 10)
        #expect(ten.interval == .seconds(3))
        #expect(ten.burst == 1)
        #expect(ten.admit(now: Self.t0, maxWait: .seconds(5)) == .now)
        #expect(ten.admit(now: Self.t0, maxWait: .seconds(5)) == .after(.seconds(3)))
        #expect(ten.admit(now: Self.t0, maxWait: .seconds(5)) == .refuse(retryAfter: .seconds(6)))
        #expect(ten.admit(now: Self.at(1), maxWait: .seconds(5)) == .after(.seconds(5)))
        // Idle long enough: the next goes at once again.
        #expect(ten.admit(now: Self.at(60), maxWait: .seconds(5)) == .now)

        var hundred = Pacer(budget: 100)
        #expect(hundred.burst == 10)
        let burst = (0..<10).map { _ in hundred.admit(now: Self.t0, maxWait: .seconds(1)) }
        #expect(burst == Array(repeating: .now, count: 10))
        #expect(hundred.admit(now: Self.t0, maxWait: .seconds(1)) == .after(.milliseconds(300)))
        // Over a minute of steady demand, at most about the budget per 30 s goes.
        var admitted = 0
        for tick in 0..<600 {
            if hundred.admit(now: Self.at(Double(tick) / 10), maxWait: .zero) == .now { admitted += 1 }
        }
        #expect((190...211).contains(admitted), "\(admitted) in 60 s")
    }

    @Test("policy wait: a limit that ends within max_wait holds requests, then forwards them; a longer one is 429 at once")
    func waitPolicy() async throws {
        try await withProxy(configure: {
            $0.governor.policy = .wait
            $0.governor.maxWait = .seconds(5)
        }) { proxy in
            proxy.fake.setRateLimited(retryAfter: 2)
            let client = try await proxy.client()
            #expect(try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg").status == 429)
            proxy.fake.setRateLimited(retryAfter: nil)
            let started = ContinuousClock.now
            let held = try await client.request("GET", "/v1/albums/3IqzqH6ShrRtie9Yd2ODyG")
            let waited = ContinuousClock.now - started
            #expect(held.status == 200)
            #expect(waited >= .seconds(1), "held for \(waited)")
            proxy.fake.setRateLimited(retryAfter: 3600)
            #expect(try await client.request("GET", "/v1/tracks/4OHNH3sDzIxnmUADXzv2kT").status == 429)
            let reached = proxy.fake.counters.apiRequests
            let refused = try await client.request("GET", "/v1/search?q=abba&type=artist")
            await client.close()
            #expect(refused.status == 429)
            #expect(proxy.fake.counters.apiRequests == reached)
        }
    }

    @Test("budget pacing: beyond the budget a request waits, or past max_wait gets the proxy's own 429; cache hits spend nothing")
    func budget() async throws {
        try await withProxy(configure: {
            $0.governor.budget = 2
            $0.governor.maxWait = .seconds(1)
        }) { proxy in
            let client = try await proxy.client()
            let before = proxy.fake.counters.apiRequests
            let first = try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg")
            let second = try await client.request("GET", "/v1/albums/3IqzqH6ShrRtie9Yd2ODyG")
            let hit = try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg")
            let metrics = try await client.request("GET", "/metrics")
            await client.close()
            #expect(first.status == 200)
            #expect(second.status == 429)
            // 15 s after the first request's slot (less the time since, on a loaded machine).
            #expect((1...15).contains(Int(second.headers["retry-after"].first ?? "") ?? 0), "\(second.headers)")
            // No `reason` of the proxy's own: tekore raises KeyError for a reason it does not know.
            #expect(!second.text.contains("reason"))
            #expect(second.text.contains("the proxy paces Spotify requests to its [governor] budget of 2 per 30 s (one every 15 s), and the next free slot is "), "\(second.text)")
            #expect(second.text.contains("more than [governor] max_wait (1 s) lets a request wait"), "\(second.text)")
            #expect(hit.status == 200)
            #expect(hit.headers["cache-status"] == ["spotify-proxy; hit"])
            #expect(proxy.fake.counters.apiRequests - before == 1)
            #expect(metrics.text.contains(#"spotify_proxy_rate_limited_answers_total{reason="budget"} 1"#))
        }
    }
}
