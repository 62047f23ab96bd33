import FakeSpotify
import SpotifyProxy
import SpotifyProxyTestSupport
import Testing

@Suite("Token schedule (state machine, injected time)")
struct TokenStateMachineTests {
    typealias Machine = TokenStateMachine<ManualClock.Instant>
    let t0 = ManualClock.Instant(offset: .zero)

    func at(_ seconds: Double) -> ManualClock.Instant { self.t0.advanced(by: .milliseconds(Int64(seconds * 1000))) }

    @Test("the first action is a refresh, and nothing may be injected before it succeeds")
    func startsWithRefresh() {
        var machine = Machine()
        #expect(machine.usableToken(now: self.t0) == nil)
        do {
            let result = machine.nextAction(now: self.t0)
            #expect(result == .refresh)
        }
        #expect(machine.readiness(now: self.t0) == .notReady(reason: "no access token has been obtained yet"))
    }

    @Test("only one refresh is in flight at a time")
    func singleFlight() {
        var machine = Machine()
        do {
            let result = machine.nextAction(now: self.t0)
            #expect(result == .refresh)
        }
        do {
            let result = machine.nextAction(now: self.t0)
            #expect(result == .awaitRefresh)
        }
        do {
            let result = machine.nextAction(now: self.at(100))
            #expect(result == .awaitRefresh)
        }
        machine.refreshSucceeded(value: "A", expiresIn: .seconds(3600), requestedAt: self.t0, jitter: 0.5)
        do {
            let result = machine.nextAction(now: self.at(1))
            #expect(result == .sleep(until: self.at(2880)))
        }
    }

    @Test("refreshes at 80% of the lifetime, spread by the jitter (±5% of the lifetime)", arguments: [
        (0.0, 2700.0), (0.5, 2880.0), (1.0, 3060.0),
    ])
    func refreshAhead(jitter: Double, expectedSeconds: Double) {
        var machine = Machine()
        _ = machine.nextAction(now: self.t0)
        machine.refreshSucceeded(value: "A", expiresIn: .seconds(3600), requestedAt: self.t0, jitter: jitter)
        do {
            let result = machine.nextAction(now: self.t0)
            #expect(result == .sleep(until: self.at(expectedSeconds)))
        }
        do {
            let result = machine.nextAction(now: self.at(expectedSeconds))
            #expect(result == .refresh)
        }
    }

    @Test("a token is injected only until a margin before expiry, counted from when it was requested")
    func neverInjectsExpired() {
        var machine = Machine()
        _ = machine.nextAction(now: self.t0)
        // Requested at t=0, answered at t=3: the lifetime still counts from t=0.
        machine.refreshSucceeded(value: "A", expiresIn: .seconds(100), requestedAt: self.t0, jitter: 0.5)
        #expect(machine.usableToken(now: self.at(3)) == "A")
        #expect(machine.usableToken(now: self.at(89.9)) == "A")
        // Margin: half of the 20% ahead window = 10 s.
        #expect(machine.usableToken(now: self.at(90)) == nil)
        #expect(machine.usableToken(now: self.at(100)) == nil)
        #expect(machine.readiness(now: self.at(95)) == .notReady(reason: "the access token expired; refreshing"))
    }

    @Test("a refresh failure keeps the current token while it is valid")
    func failureKeepsValidToken() {
        var machine = Machine()
        _ = machine.nextAction(now: self.t0)
        machine.refreshSucceeded(value: "A", expiresIn: .seconds(100), requestedAt: self.t0, jitter: 0.5)
        do {
            let result = machine.nextAction(now: self.at(80))
            #expect(result == .refresh)
        }
        machine.refreshFailed(.transient("HTTP 503"), now: self.at(80), jitter: 1)
        #expect(machine.usableToken(now: self.at(81)) == "A")
        #expect(machine.readiness(now: self.at(81)) == .ready)
    }

    @Test("transient failures back off exponentially with equal jitter, capped")
    func exponentialBackoff() {
        let configuration = Machine.Configuration(initialBackoff: .seconds(1), maximumBackoff: .seconds(8))
        var machine = Machine(configuration: configuration)
        var now = self.t0
        // jitter 1 → the full backoff; doubling 1, 2, 4, 8, then capped at 8.
        for expected in [1, 2, 4, 8, 8, 8] {
            do {
                let result = machine.nextAction(now: now)
                #expect(result == .refresh)
            }
            machine.refreshFailed(.transient("timeout"), now: now, jitter: 1)
            do {
                let result = machine.nextAction(now: now)
                #expect(result == .sleep(until: now.advanced(by: .seconds(expected))))
            }
            now = now.advanced(by: .seconds(expected))
        }
        // jitter 0 → half the backoff, never zero.
        do {
            let result = machine.nextAction(now: now)
            #expect(result == .refresh)
        }
        machine.refreshFailed(.transient("timeout"), now: now, jitter: 0)
        do {
            let result = machine.nextAction(now: now)
            #expect(result == .sleep(until: now.advanced(by: .seconds(4))))
        }
        #expect(machine.readiness(now: now) == .notReady(reason: "the token endpoint is failing (timeout); retrying with backoff"))
    }

    @Test("success resets the backoff")
    func successResetsBackoff() {
        let configuration = Machine.Configuration(initialBackoff: .seconds(1), maximumBackoff: .seconds(8))
        var machine = Machine(configuration: configuration)
        for _ in 0..<3 {
            _ = machine.nextAction(now: self.t0)
            machine.refreshFailed(.transient("x"), now: self.t0, jitter: 1)
        }
        _ = machine.nextAction(now: self.at(10))
        machine.refreshSucceeded(value: "A", expiresIn: .seconds(10), requestedAt: self.at(10), jitter: 0.5)
        #expect(machine.consecutiveFailures == 0)
        do {
            let result = machine.nextAction(now: self.at(18))
            #expect(result == .refresh)
        }
        machine.refreshFailed(.transient("x"), now: self.at(18), jitter: 1)
        do {
            let result = machine.nextAction(now: self.at(18))
            #expect(result == .sleep(until: self.at(19)))
        }
    }

    @Test("invalid_client is a configuration error: reported, retried slowly, not in a hot loop")
    func invalidClient() {
        var machine = Machine()
        _ = machine.nextAction(now: self.t0)
        machine.refreshFailed(.invalidClient("invalid_client: Invalid client"), now: self.t0, jitter: 0)
        do {
            let result = machine.nextAction(now: self.at(1))
            #expect(result == .sleep(until: self.at(60)))
        }
        guard case .notReady(let reason) = machine.readiness(now: self.at(1)) else {
            Issue.record("expected not ready")
            return
        }
        #expect(reason.contains("SPOTIFY_CLIENT_ID"))
        #expect(reason.contains("invalid_client"))
    }

    /// One step of a 401 scenario: at `second`, a 401 for `token`, the expected verdict, and
    /// the token injected right after.
    struct UnauthorizedStep: Sendable, CustomStringConvertible {
        var second: Double
        var token: String
        var verdict: UnauthorizedVerdict
        var injectedAfter: String?
        var description: String { "401 for \(self.token) at \(self.second) s → \(self.verdict)" }
    }

    /// Token A is issued at 0 s; each step reports a 401, and a refresh that the machine asks
    /// for succeeds at once with the next letter.
    @Test("a 401 forces at most one refresh per interval (30 s); older tokens replay; the rest pass through", arguments: [
        // A revoked token: dropped, refreshed, replayed.
        [UnauthorizedStep(second: 10, token: "A", verdict: .refreshAndReplay, injectedAfter: "B")],
        // An endpoint that refuses every app token (/v1/me): one refresh, then the 401s pass through
        // until the interval is over, whatever the load.
        [
            UnauthorizedStep(second: 10, token: "A", verdict: .refreshAndReplay, injectedAfter: "B"),
            UnauthorizedStep(second: 10, token: "B", verdict: .passThrough, injectedAfter: "B"),
            UnauthorizedStep(second: 25, token: "B", verdict: .passThrough, injectedAfter: "B"),
            UnauthorizedStep(second: 39.9, token: "B", verdict: .passThrough, injectedAfter: "B"),
            UnauthorizedStep(second: 40, token: "B", verdict: .refreshAndReplay, injectedAfter: "C"),
            UnauthorizedStep(second: 41, token: "C", verdict: .passThrough, injectedAfter: "C"),
        ],
        // Requests that carried a token the machine has since replaced replay with the new one.
        [
            UnauthorizedStep(second: 10, token: "A", verdict: .refreshAndReplay, injectedAfter: "B"),
            UnauthorizedStep(second: 10.1, token: "A", verdict: .replay, injectedAfter: "B"),
            UnauthorizedStep(second: 11, token: "not-issued", verdict: .replay, injectedAfter: "B"),
        ],
    ])
    func unauthorized(steps: [UnauthorizedStep]) {
        self.run(steps, lifetime: .seconds(3600))
    }

    @Test("with 2-second tokens each expiry may force a refresh: the interval shrinks to the 0.4 s past a token's refresh", arguments: [
        [
            UnauthorizedStep(second: 1.0, token: "A", verdict: .refreshAndReplay, injectedAfter: "B"),
            UnauthorizedStep(second: 1.3, token: "B", verdict: .passThrough, injectedAfter: "B"),
            UnauthorizedStep(second: 2.6, token: "B", verdict: .refreshAndReplay, injectedAfter: "C"),
        ]
    ])
    func unauthorizedShortLived(steps: [UnauthorizedStep]) {
        self.run(steps, lifetime: .seconds(2))
    }

    func run(_ steps: [UnauthorizedStep], lifetime: Duration) {
        var machine = Machine()
        _ = machine.nextAction(now: self.t0)
        machine.refreshSucceeded(value: "A", expiresIn: lifetime, requestedAt: self.t0, jitter: 0.5)
        var next = Character("B")
        for step in steps {
            let now = self.at(step.second)
            let verdict = machine.unauthorized(value: step.token, now: now)
            #expect(verdict == step.verdict, "\(step)")
            if verdict == .refreshAndReplay {
                #expect(machine.usableToken(now: now) == nil, "\(step): the refused token is dropped")
                let action = machine.nextAction(now: now)
                #expect(action == .refresh, "\(step): the refresh is due at once")
                machine.refreshSucceeded(value: String(next), expiresIn: lifetime, requestedAt: now, jitter: 0.5)
                next = Character(UnicodeScalar(next.unicodeScalars.first!.value + 1)!)
            }
            #expect(machine.usableToken(now: now) == step.injectedAfter, "\(step)")
        }
    }

    @Test("a 401 for an older token changes nothing in the schedule")
    func staleTokenKeepsSchedule() {
        var machine = Machine()
        _ = machine.nextAction(now: self.t0)
        machine.refreshSucceeded(value: "B", expiresIn: .seconds(3600), requestedAt: self.t0, jitter: 0.5)
        #expect(machine.unauthorized(value: "A", now: self.at(10)) == .replay)
        #expect(machine.usableToken(now: self.at(10)) == "B")
        do {
            let result = machine.nextAction(now: self.at(10))
            #expect(result == .sleep(until: self.at(2880)))
        }
    }

    @Test("callers without a token are answered at once only after the credentials were refused", arguments: [
        (TokenFailure.invalidClient("invalid_client: Invalid client secret"), true),
        (TokenFailure.wrongEndpoint("HTTP 404 from the token URL"), true),
        (TokenFailure.transient("HTTP 503"), false),
    ])
    func failsFast(failure: TokenFailure, expected: Bool) {
        var machine = Machine()
        #expect(!machine.failsFast)
        _ = machine.nextAction(now: self.t0)
        machine.refreshFailed(failure, now: self.t0, jitter: 0.5)
        #expect(machine.failsFast == expected)
        _ = machine.nextAction(now: self.at(61))
        machine.refreshSucceeded(value: "A", expiresIn: .seconds(3600), requestedAt: self.at(61), jitter: 0.5)
        #expect(!machine.failsFast)
    }

    @Test("retry-after for waiting callers is the time to the next attempt, at least a second")
    func retryAfter() {
        var machine = Machine(configuration: .init(initialBackoff: .seconds(4)))
        _ = machine.nextAction(now: self.t0)
        machine.refreshFailed(.transient("x"), now: self.t0, jitter: 1)
        #expect(machine.retryAfter(now: self.t0) == .seconds(4))
        #expect(machine.retryAfter(now: self.at(3.9)) == .seconds(1))
    }
}
