import FakeSpotify
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import SpotifyProxy
import SpotifyProxyTestSupport
import Synchronization
import Testing

/// A one-shot signal: `wait()` suspends until `open()`.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { continuation in
            let resume = self.state.withLock { state -> Bool in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if resume { continuation.resume() }
        }
    }

    func open() {
        let waiters = self.state.withLock { state in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// Answers token requests from a script; counts them; can hold each one at a gate.
final class ScriptedFetcher: TokenFetching {
    private let state = Mutex<(script: [Result<FetchedToken, TokenFetchError>], calls: Int)>(([], 0))
    let gate: Gate?
    let lifetime: Duration

    init(script: [Result<FetchedToken, TokenFetchError>] = [], gate: Gate? = nil, lifetime: Duration = .seconds(3600)) {
        self.state.withLock { $0.script = script }
        self.gate = gate
        self.lifetime = lifetime
    }

    var calls: Int { self.state.withLock { $0.calls } }

    func fetchToken() async throws(TokenFetchError) -> FetchedToken {
        let (call, scripted) = self.state.withLock { state in
            state.calls += 1
            return (state.calls, state.script.isEmpty ? nil : state.script.removeFirst())
        }
        if let gate = self.gate { await gate.wait() }
        return try (scripted ?? .success(FetchedToken(accessToken: "tok\(call)", expiresIn: self.lifetime))).get()
    }
}

@Suite("Token refresher (driver, injected clock)")
struct TokenRefresherTests {
    let clock = ManualClock()
    let logger = Logger(label: "test")

    func makeRefresher(_ fetcher: ScriptedFetcher, maximumWait: TimeAmount = .seconds(60)) -> TokenRefresher<ManualClock> {
        TokenRefresher(clock: self.clock, fetcher: fetcher, maximumWait: maximumWait, logger: self.logger, random: { 0.5 })
    }

    @Test("fetches at start, then again at 80% of each lifetime")
    func refreshAhead() async throws {
        let fetcher = ScriptedFetcher()
        let refresher = self.makeRefresher(fetcher)
        let task = Task { try await refresher.run() }
        defer { task.cancel() }

        let first = await self.clock.nextSleep()
        #expect(first == ManualClock.Instant(offset: .seconds(2880)))
        #expect(fetcher.calls == 1)
        self.clock.advance(to: first)
        let second = await self.clock.nextSleep()
        #expect(second == ManualClock.Instant(offset: .seconds(5760)))
        #expect(fetcher.calls == 2)
        #expect(refresher.successfulRefreshes == 2)
        guard case .ready(let token) = refresher.token(on: MultiThreadedEventLoopGroup.singleton.next()) else {
            Issue.record("expected a ready token")
            return
        }
        #expect(token == "tok2")
    }

    @Test("the lock-free read never hands out a token past its usable time, even while its refresh hangs")
    func publishedTokenExpires() async throws {
        // The first fetch answers; the refresh at 80% hangs until the end of the test.
        let gate = Gate()
        let fetcher = ScriptedFetcher(gate: nil)
        let hanging = HangingAfterFirst(first: fetcher, gate: gate)
        let refresher = TokenRefresher(clock: self.clock, fetcher: hanging, maximumWait: .seconds(60), logger: self.logger, random: { 0.5 })
        let task = Task { try await refresher.run() }
        defer {
            gate.open()
            task.cancel()
        }
        let refreshAt = await self.clock.nextSleep()
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        guard case .ready("tok1") = refresher.token(on: loop) else {
            Issue.record("expected tok1 at once")
            return
        }
        self.clock.advance(to: refreshAt)
        // Still usable while the refresh is out (the lifetime is 3,600 s).
        guard case .ready("tok1") = refresher.token(on: loop) else {
            Issue.record("expected tok1 during the refresh")
            return
        }
        self.clock.advance(to: ManualClock.Instant(offset: .seconds(3600)))
        if case .ready(let token) = refresher.token(on: loop) { Issue.record("an expired token was handed out: \(token)") }
    }

    @Test("a refresh the token endpoint never answers does not hold the shutdown: the refresher stops at once, and a request waiting for the token is told the proxy is shutting down")
    func shutdownDuringHangingRefresh() async throws {
        let gate = Gate()
        let fetcher = ScriptedFetcher(gate: gate)
        let refresher = self.makeRefresher(fetcher)
        defer { gate.open() }
        let group = ServiceGroup(configuration: .init(services: [refresher], logger: self.logger))
        let running = Task { try await group.run() }
        // The first fetch is out, held at the gate; a request waits for its token.
        while fetcher.calls == 0 { await Task.yield() }
        guard case .wait(let waiting) = refresher.token(on: MultiThreadedEventLoopGroup.singleton.next()) else {
            Issue.record("no token should exist yet")
            return
        }
        await group.triggerGracefulShutdown()
        try await running.value
        #expect(fetcher.calls == 1)
        do {
            _ = try await waiting.get()
            Issue.record("a token came")
        } catch let unavailable as TokenUnavailable {
            #expect(unavailable.reason.contains("shutting down"), "\(unavailable)")
        }
    }

    @Test("100 requests waiting for the first token share one refresh")
    func singleFlightWaiters() async throws {
        let gate = Gate()
        let fetcher = ScriptedFetcher(gate: gate)
        let refresher = self.makeRefresher(fetcher)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        var futures: [EventLoopFuture<String>] = []
        for _ in 0..<100 {
            guard case .wait(let future) = refresher.token(on: loop) else {
                Issue.record("no token should exist yet")
                return
            }
            futures.append(future)
        }
        let task = Task { try await refresher.run() }
        defer { task.cancel() }
        gate.open()
        for future in futures { #expect(try await future.get() == "tok1") }
        #expect(fetcher.calls == 1)
    }

    @Test("while the token endpoint fails, waiters get 503 material after the maximum wait, then recovery")
    func failingEndpoint() async throws {
        let failures: [Result<FetchedToken, TokenFetchError>] = [.failure(.transient("HTTP 500")), .failure(.transient("HTTP 500"))]
        let fetcher = ScriptedFetcher(script: failures)
        let refresher = self.makeRefresher(fetcher, maximumWait: .milliseconds(20))
        let task = Task { try await refresher.run() }
        defer { task.cancel() }
        // First failure: backoff 250 ms * (0.5 + 0.25).
        let retry = await self.clock.nextSleep()
        #expect(retry == ManualClock.Instant(offset: .microseconds(187_500)))
        guard case .wait(let future) = refresher.token(on: MultiThreadedEventLoopGroup.singleton.next()) else {
            Issue.record("no token should exist")
            return
        }
        await #expect(throws: TokenUnavailable.self) { try await future.get() }
        #expect(refresher.readinessProblem?.reason.contains("HTTP 500") == true)
        self.clock.advance(to: retry)
        // Second failure: backoff doubles.
        let again = await self.clock.nextSleep()
        #expect(again == retry.advanced(by: .microseconds(375_000)))
        self.clock.advance(to: again)
        _ = await self.clock.nextSleep()
        #expect(fetcher.calls == 3)
        #expect(refresher.readinessProblem == nil)
    }

    @Test("a 401 for the current token wakes the driver for an immediate refresh")
    func invalidationWakesDriver() async throws {
        let fetcher = ScriptedFetcher()
        let refresher = self.makeRefresher(fetcher)
        let task = Task { try await refresher.run() }
        defer { task.cancel() }
        _ = await self.clock.nextSleep()
        #expect(refresher.unauthorized(token: "not-current") == .replay)
        #expect(refresher.unauthorized(token: "tok1") == .refreshAndReplay)
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        switch refresher.token(on: loop) {
        case .ready(let token): #expect(token == "tok2")
        case .wait(let future): #expect(try await future.get() == "tok2")
        case .unavailable(let why): Issue.record("no token: \(why.reason)")
        }
        #expect(fetcher.calls == 2)
    }

    @Test("once the credentials are refused, callers get the reason and the next retry at once instead of waiting")
    func refusedCredentialsFailFast() async throws {
        let fetcher = ScriptedFetcher(script: [.failure(.invalidClient("invalid_client: Invalid client secret"))])
        let refresher = self.makeRefresher(fetcher, maximumWait: .seconds(3600))
        let task = Task { try await refresher.run() }
        defer { task.cancel() }
        _ = await self.clock.nextSleep()
        self.clock.advance(by: .seconds(15))
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        guard case .unavailable(let why) = refresher.token(on: loop) else {
            Issue.record("expected an immediate answer")
            return
        }
        #expect(why.reason.contains("SPOTIFY_CLIENT_SECRET"))
        #expect(why.reason.contains("Invalid client secret"))
        #expect(why.retryAfterSeconds == 45)
        #expect(fetcher.calls == 1)
    }

    @Test("token responses are parsed per RFC 6749; invalid_client is a configuration error")
    func parsing() throws {
        let ok = try ClientCredentialsFetcher.parse(
            status: 200, body: ByteBuffer(string: #"{"access_token":"abc","token_type":"Bearer","expires_in":3600,"scope":""}"#))
        #expect(ok == FetchedToken(accessToken: "abc", expiresIn: .seconds(3600)))
        #expect(throws: TokenFetchError.invalidClient("invalid_client: Invalid client")) {
            try ClientCredentialsFetcher.parse(status: 400, body: ByteBuffer(string: #"{"error":"invalid_client","error_description":"Invalid client"}"#))
        }
        // Any other refusal of the grant is a configuration problem too; 429 and 5xx are load.
        #expect(throws: TokenFetchError.invalidClient("unsupported_grant_type: grant_type parameter is missing")) {
            try ClientCredentialsFetcher.parse(
                status: 400, body: ByteBuffer(string: #"{"error":"unsupported_grant_type","error_description":"grant_type parameter is missing"}"#))
        }
        #expect(throws: TokenFetchError.invalidClient("HTTP 403, a body that is not an OAuth error")) {
            try ClientCredentialsFetcher.parse(status: 403, body: ByteBuffer(string: "<html>"))
        }
        #expect(throws: TokenFetchError.invalidClient("HTTP 403, no error body")) {
            try ClientCredentialsFetcher.parse(status: 403, body: ByteBuffer())
        }
        // A token URL that names no token endpoint is a configuration error of its own.
        #expect(throws: TokenFetchError(.wrongEndpoint("HTTP 404 from the token URL"))) {
            try ClientCredentialsFetcher.parse(status: 404, body: ByteBuffer(string: "<html>not found</html>"))
        }
        #expect(throws: TokenFetchError.transient("token endpoint answered HTTP 429 (no error body)")) {
            try ClientCredentialsFetcher.parse(status: 429, body: ByteBuffer())
        }
        #expect(throws: TokenFetchError.transient("token endpoint answered HTTP 503 (a body that is not an OAuth error)")) {
            try ClientCredentialsFetcher.parse(status: 503, body: ByteBuffer(string: "<html>"))
        }
        #expect(throws: TokenFetchError.transient("token endpoint answered 200 without access_token and expires_in")) {
            try ClientCredentialsFetcher.parse(status: 200, body: ByteBuffer(string: #"{"token_type":"Bearer"}"#))
        }
    }
}

/// Answers the first fetch from `first`; every later one waits at `gate`, then fails.
final class HangingAfterFirst: TokenFetching {
    let first: ScriptedFetcher
    let gate: Gate
    private let calls = Mutex(0)

    init(first: ScriptedFetcher, gate: Gate) {
        self.first = first
        self.gate = gate
    }

    func fetchToken() async throws(TokenFetchError) -> FetchedToken {
        let call = self.calls.withLock { calls -> Int in
            calls += 1
            return calls
        }
        if call == 1 { return try await self.first.fetchToken() }
        await self.gate.wait()
        throw .transient("test over")
    }
}
