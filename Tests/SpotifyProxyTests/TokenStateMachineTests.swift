import SpotifyProxy
import SpotifyProxyTestSupport
import Testing

/// The token schedule as a specification. Each row reads: after these input events, this
/// question at this instant has this answer. Every row replays its events on a fresh machine,
/// so a failure names one row and one row only.
@Suite("Token schedule (state machine, injected time)")
struct TokenStateMachineTests {
    typealias Machine = TokenStateMachine<ManualClock.Instant>
    let t0 = ManualClock.Instant(offset: .zero)

    func at(_ seconds: Double) -> ManualClock.Instant { self.t0.advanced(by: .milliseconds(Int64(seconds * 1000))) }

    // MARK: - The language of the tables

    /// An input to the machine. Instants are seconds after t0; lifetimes are durations.
    enum Event: Sendable {
        /// `nextAction(now:)` answered `.refresh` (the replay checks that it did).
        case refreshStarted(at: Double)
        case refreshSucceeded(value: String, expiresIn: Duration, requestedAt: Double, jitter: Double)
        case refreshFailed(TokenFailure, at: Double, jitter: Double)
        /// An upstream 401 for a request that carried `value` (the verdict is not looked at).
        case unauthorized(value: String, at: Double)
        /// A reload replaced the app's credentials (or a new login a user's refresh token).
        case credentialsReplaced(at: Double)
        /// The grant was withdrawn (a user's logout).
        case forgotten(at: Double)

        /// A refresh started and failed transiently ("timeout") at each of `seconds`, then `then`.
        static func failedRefreshes(at seconds: [Double], jitter: Double, then: [Event] = []) -> [Event] {
            var events: [Event] = []
            for second in seconds {
                events.append(.refreshStarted(at: second))
                events.append(.refreshFailed(.transient("timeout"), at: second, jitter: jitter))
            }
            return events + then
        }
    }

    /// The question asked at the row's instant, with the answer it must get.
    enum Expected: Sendable {
        // nextAction(now:)
        case refresh
        case awaitRefresh
        case sleep(until: Double)
        // usableToken(now:)
        case injects(String?)
        // readiness(now:)
        case ready
        case notReady(String)
        case notReadyMentioning([String])
        // unauthorized(value:now:)
        case unauthorized(value: String, verdict: UnauthorizedVerdict)
        // failsFast, retryAfter(now:), consecutiveFailures
        case failsFast(Bool)
        case retryAfter(Duration)
        case consecutiveFailures(Int)
    }

    struct Row: Sendable, CustomTestStringConvertible {
        var label: String
        var configuration: Machine.Configuration
        var events: [Event]
        var now: Double
        var expected: Expected

        init(
            _ label: String, configuration: Machine.Configuration = .init(), after events: [Event], at now: Double, expect expected: Expected
        ) {
            self.label = label
            self.configuration = configuration
            self.events = events
            self.now = now
            self.expected = expected
        }

        var testDescription: String { self.label }
    }

    /// A fresh machine that has been through `events`.
    func machine(after events: [Event], configuration: Machine.Configuration = .init()) -> Machine {
        var machine = Machine(configuration: configuration)
        for event in events {
            switch event {
            case .refreshStarted(let second):
                let action = machine.nextAction(now: self.at(second))
                #expect(action == .refresh, "replaying \(event): a refresh must start here")
            case .refreshSucceeded(let value, let expiresIn, let requestedAt, let jitter):
                machine.refreshSucceeded(value: value, expiresIn: expiresIn, requestedAt: self.at(requestedAt), jitter: jitter)
            case .refreshFailed(let failure, let second, let jitter):
                machine.refreshFailed(failure, now: self.at(second), jitter: jitter)
            case .unauthorized(let value, let second):
                _ = machine.unauthorized(value: value, now: self.at(second))
            case .credentialsReplaced(let second):
                machine.credentialsReplaced(now: self.at(second))
            case .forgotten(let second):
                machine.forgetToken(now: self.at(second))
            }
        }
        return machine
    }

    func check(_ row: Row) {
        var machine = self.machine(after: row.events, configuration: row.configuration)
        let now = self.at(row.now)
        switch row.expected {
        case .refresh:
            let action = machine.nextAction(now: now)
            #expect(action == .refresh)
        case .awaitRefresh:
            let action = machine.nextAction(now: now)
            #expect(action == .awaitRefresh)
        case .sleep(let until):
            let action = machine.nextAction(now: now)
            #expect(action == .sleep(until: self.at(until)))
        case .injects(let value):
            #expect(machine.usableToken(now: now) == value)
        case .ready:
            #expect(machine.readiness(now: now) == .ready)
        case .notReady(let reason):
            #expect(machine.readiness(now: now) == .notReady(reason: reason))
        case .notReadyMentioning(let words):
            guard case .notReady(let reason) = machine.readiness(now: now) else {
                Issue.record("expected not ready")
                return
            }
            for word in words {
                #expect(reason.contains(word))
            }
        case .unauthorized(let value, let expected):
            let verdict = machine.unauthorized(value: value, now: now)
            #expect(verdict == expected)
        case .failsFast(let expected):
            #expect(machine.failsFast == expected)
        case .retryAfter(let expected):
            #expect(machine.retryAfter(now: now) == expected)
        case .consecutiveFailures(let expected):
            #expect(machine.consecutiveFailures == expected)
        }
    }

    // MARK: - Refresh and injection

    @Test("the first action is a refresh, and nothing may be injected before it succeeds", arguments: [
        Row("a fresh machine injects nothing", after: [], at: 0, expect: .injects(nil)),
        Row("a fresh machine's first action is a refresh", after: [], at: 0, expect: .refresh),
        Row(
            "while the first refresh is in flight: not ready, no token yet", after: [.refreshStarted(at: 0)], at: 0,
            expect: .notReady("no access token has been obtained yet")),
    ])
    func startsWithRefresh(row: Row) {
        self.check(row)
    }

    @Test("only one refresh is in flight at a time", arguments: [
        Row("a refresh in flight: the next caller awaits it", after: [.refreshStarted(at: 0)], at: 0, expect: .awaitRefresh),
        Row("a refresh in flight: 100 s later a caller still awaits it", after: [.refreshStarted(at: 0)], at: 100, expect: .awaitRefresh),
        Row(
            "the refresh succeeded: sleep until the next one",
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(3600), requestedAt: 0, jitter: 0.5)],
            at: 1, expect: .sleep(until: 2880)),
    ])
    func singleFlight(row: Row) {
        self.check(row)
    }

    @Test("refreshes at 80% of the lifetime, spread by the jitter (±5% of the lifetime)", arguments: [
        Row(
            "jitter 0: sleep until 75% of 3600 s",
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(3600), requestedAt: 0, jitter: 0)],
            at: 0, expect: .sleep(until: 2700)),
        Row(
            "jitter 0: refresh at 2700 s",
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(3600), requestedAt: 0, jitter: 0)],
            at: 2700, expect: .refresh),
        Row(
            "jitter 0.5: sleep until 80% of 3600 s",
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(3600), requestedAt: 0, jitter: 0.5)],
            at: 0, expect: .sleep(until: 2880)),
        Row(
            "jitter 0.5: refresh at 2880 s",
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(3600), requestedAt: 0, jitter: 0.5)],
            at: 2880, expect: .refresh),
        Row(
            "jitter 1: sleep until 85% of 3600 s",
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(3600), requestedAt: 0, jitter: 1)],
            at: 0, expect: .sleep(until: 3060)),
        Row(
            "jitter 1: refresh at 3060 s",
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(3600), requestedAt: 0, jitter: 1)],
            at: 3060, expect: .refresh),
        // refresh_ahead 0.95: the token is injected until 3570 s (a 30 s margin); the jitter
        // would put the refresh as late as 3600 s: it comes a margin before, at 3540 s.
        Row(
            "ahead 0.95, jitter 1: sleep until 3540 s, not 3600 s",
            configuration: .init(refreshAheadFraction: 0.95),
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(3600), requestedAt: 0, jitter: 1)],
            at: 0, expect: .sleep(until: 3540)),
        Row(
            "ahead 0.95, jitter 0.5: sleep until 3420 s (95%)",
            configuration: .init(refreshAheadFraction: 0.95),
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(3600), requestedAt: 0, jitter: 0.5)],
            at: 0, expect: .sleep(until: 3420)),
    ])
    func refreshAhead(row: Row) {
        self.check(row)
    }

    /// A 100 s token requested at 0 s (however late the answer came: the lifetime counts from the
    /// request). Margin: half of the 20% ahead window = 10 s, so it is usable until 90 s.
    @Test("a token is injected only until a margin before expiry, counted from when it was requested", arguments: [
        Row(
            "answered at 3 s: injected",
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(100), requestedAt: 0, jitter: 0.5)],
            at: 3, expect: .injects("A")),
        Row(
            "at 89.9 s: still injected",
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(100), requestedAt: 0, jitter: 0.5)],
            at: 89.9, expect: .injects("A")),
        Row(
            "at 90 s (expiry minus the 10 s margin): not injected",
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(100), requestedAt: 0, jitter: 0.5)],
            at: 90, expect: .injects(nil)),
        Row(
            "at 100 s (expiry): not injected",
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(100), requestedAt: 0, jitter: 0.5)],
            at: 100, expect: .injects(nil)),
        Row(
            "at 95 s: not ready, the token expired",
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(100), requestedAt: 0, jitter: 0.5)],
            at: 95, expect: .notReady("the access token expired; refreshing")),
    ])
    func neverInjectsExpired(row: Row) {
        self.check(row)
    }

    // MARK: - Failures

    @Test("a refresh failure keeps the current token while it is valid", arguments: [
        Row(
            "a 100 s token: refresh due at 80 s",
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(100), requestedAt: 0, jitter: 0.5)],
            at: 80, expect: .refresh),
        Row(
            "the refresh at 80 s failed: the token is still injected",
            after: [
                .refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(100), requestedAt: 0, jitter: 0.5),
                .refreshStarted(at: 80), .refreshFailed(.transient("HTTP 503"), at: 80, jitter: 1),
            ],
            at: 81, expect: .injects("A")),
        Row(
            "the refresh at 80 s failed: still ready",
            after: [
                .refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(100), requestedAt: 0, jitter: 0.5),
                .refreshStarted(at: 80), .refreshFailed(.transient("HTTP 503"), at: 80, jitter: 1),
            ],
            at: 81, expect: .ready),
    ])
    func failureKeepsValidToken(row: Row) {
        self.check(row)
    }

    /// Backoff from 1 s to 8 s. Each failure's retry starts when its wait is over (the replay
    /// checks that each of those is a refresh); jitter 1 waits the full backoff.
    @Test("transient failures back off exponentially with equal jitter, capped", arguments: [
        Row(
            "1st failure (jitter 1): wait 1 s", configuration: .init(initialBackoff: .seconds(1), maximumBackoff: .seconds(8)),
            after: Event.failedRefreshes(at: [0], jitter: 1), at: 0, expect: .sleep(until: 1)),
        Row(
            "2nd failure (jitter 1): wait 2 s", configuration: .init(initialBackoff: .seconds(1), maximumBackoff: .seconds(8)),
            after: Event.failedRefreshes(at: [0, 1], jitter: 1), at: 1, expect: .sleep(until: 3)),
        Row(
            "3rd failure (jitter 1): wait 4 s", configuration: .init(initialBackoff: .seconds(1), maximumBackoff: .seconds(8)),
            after: Event.failedRefreshes(at: [0, 1, 3], jitter: 1), at: 3, expect: .sleep(until: 7)),
        Row(
            "3rd failure's wait is over: refresh", configuration: .init(initialBackoff: .seconds(1), maximumBackoff: .seconds(8)),
            after: Event.failedRefreshes(at: [0, 1, 3], jitter: 1), at: 7, expect: .refresh),
        Row(
            "4th failure (jitter 1): wait 8 s", configuration: .init(initialBackoff: .seconds(1), maximumBackoff: .seconds(8)),
            after: Event.failedRefreshes(at: [0, 1, 3, 7], jitter: 1), at: 7, expect: .sleep(until: 15)),
        Row(
            "5th failure (jitter 1): capped at 8 s", configuration: .init(initialBackoff: .seconds(1), maximumBackoff: .seconds(8)),
            after: Event.failedRefreshes(at: [0, 1, 3, 7, 15], jitter: 1), at: 15, expect: .sleep(until: 23)),
        Row(
            "6th failure (jitter 1): capped at 8 s", configuration: .init(initialBackoff: .seconds(1), maximumBackoff: .seconds(8)),
            after: Event.failedRefreshes(at: [0, 1, 3, 7, 15, 23], jitter: 1), at: 23, expect: .sleep(until: 31)),
        Row(
            "7th failure (jitter 0): half the 8 s backoff, never zero",
            configuration: .init(initialBackoff: .seconds(1), maximumBackoff: .seconds(8)),
            after: Event.failedRefreshes(at: [0, 1, 3, 7, 15, 23], jitter: 1, then: Event.failedRefreshes(at: [31], jitter: 0)),
            at: 31, expect: .sleep(until: 35)),
        Row(
            "7th failure: not ready, the endpoint is failing",
            configuration: .init(initialBackoff: .seconds(1), maximumBackoff: .seconds(8)),
            after: Event.failedRefreshes(at: [0, 1, 3, 7, 15, 23], jitter: 1, then: Event.failedRefreshes(at: [31], jitter: 0)),
            at: 31, expect: .notReady("the token endpoint is failing (timeout); retrying with backoff")),
    ])
    func exponentialBackoff(row: Row) {
        self.check(row)
    }

    /// Backoff from 1 s to 8 s; three failures (jitter 1) at 0, 1 and 3 s, then a 10 s token at 10 s.
    @Test("success resets the backoff", arguments: [
        Row(
            "three failures are counted", configuration: .init(initialBackoff: .seconds(1), maximumBackoff: .seconds(8)),
            after: Event.failedRefreshes(at: [0, 1, 3], jitter: 1), at: 3, expect: .consecutiveFailures(3)),
        Row(
            "a success after three failures: the count is 0",
            configuration: .init(initialBackoff: .seconds(1), maximumBackoff: .seconds(8)),
            after: Event.failedRefreshes(
                at: [0, 1, 3], jitter: 1,
                then: [.refreshStarted(at: 10), .refreshSucceeded(value: "A", expiresIn: .seconds(10), requestedAt: 10, jitter: 0.5)]),
            at: 10, expect: .consecutiveFailures(0)),
        Row(
            "the new token's refresh is due at 18 s", configuration: .init(initialBackoff: .seconds(1), maximumBackoff: .seconds(8)),
            after: Event.failedRefreshes(
                at: [0, 1, 3], jitter: 1,
                then: [.refreshStarted(at: 10), .refreshSucceeded(value: "A", expiresIn: .seconds(10), requestedAt: 10, jitter: 0.5)]),
            at: 18, expect: .refresh),
        Row(
            "the next failure (jitter 1) waits the initial 1 s again",
            configuration: .init(initialBackoff: .seconds(1), maximumBackoff: .seconds(8)),
            after: Event.failedRefreshes(
                at: [0, 1, 3], jitter: 1,
                then: [
                    .refreshStarted(at: 10), .refreshSucceeded(value: "A", expiresIn: .seconds(10), requestedAt: 10, jitter: 0.5),
                    .refreshStarted(at: 18), .refreshFailed(.transient("x"), at: 18, jitter: 1),
                ]),
            at: 18, expect: .sleep(until: 19)),
    ])
    func successResetsBackoff(row: Row) {
        self.check(row)
    }

    @Test("invalid_client is a configuration error: reported, retried slowly, not in a hot loop", arguments: [
        Row(
            "invalid_client at 0 s (jitter 0): no retry before 60 s",
            after: [.refreshStarted(at: 0), .refreshFailed(.invalidClient("invalid_client: Invalid client"), at: 0, jitter: 0)],
            at: 1, expect: .sleep(until: 60)),
        Row(
            "invalid_client: not ready, naming the error and the settings to fix",
            after: [.refreshStarted(at: 0), .refreshFailed(.invalidClient("invalid_client: Invalid client"), at: 0, jitter: 0)],
            at: 1, expect: .notReadyMentioning(["SPOTIFY_CLIENT_ID", "invalid_client"])),
        Row(
            "invalid_client, then new credentials at 5 s: the refresh is due at once, not at 60 s",
            after: [
                .refreshStarted(at: 0), .refreshFailed(.invalidClient("invalid_client: Invalid client"), at: 0, jitter: 0), .credentialsReplaced(at: 5),
            ],
            at: 5, expect: .refresh),
        Row(
            "invalid_client, then new credentials: a client is told to retry in 1 s",
            after: [
                .refreshStarted(at: 0), .refreshFailed(.invalidClient("invalid_client: Invalid client"), at: 0, jitter: 0), .credentialsReplaced(at: 5),
            ],
            at: 5, expect: .retryAfter(.seconds(1))),
        Row(
            "new credentials while a refresh with the old ones is under way: refused, it is retried at once",
            after: [
                .refreshStarted(at: 0), .credentialsReplaced(at: 0.5), .refreshFailed(.invalidClient("invalid_client: Invalid client"), at: 1, jitter: 0),
            ],
            at: 1, expect: .refresh),
        Row(
            "a transient failure's backoff is not cut short by new credentials",
            configuration: .init(initialBackoff: .seconds(1), maximumBackoff: .seconds(8)),
            after: [.refreshStarted(at: 0), .refreshFailed(.transient("timeout"), at: 0, jitter: 1), .credentialsReplaced(at: 0.5)],
            at: 0.5, expect: .sleep(until: 1)),
        Row(
            "new credentials while the token is good change nothing: the refresh stays where it was",
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(10), requestedAt: 0, jitter: 0.5), .credentialsReplaced(at: 1)],
            at: 1, expect: .sleep(until: 8)),
    ])
    func invalidClient(row: Row) {
        self.check(row)
    }

    static let refused = TokenFailure.invalidGrant("no Spotify user alice is logged in: run `spotify-proxy login --user alice`")

    @Test("a logout drops the token at once; a login after it is tried at once, not after the refused grant's recheck", arguments: [
        Row(
            "a good token, then a logout at 1 s: nothing is injected",
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(10), requestedAt: 0, jitter: 0.5), .forgotten(at: 1)],
            at: 1, expect: .injects(nil)),
        Row(
            "a good token, then a logout at 1 s: the next refresh is now",
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(10), requestedAt: 0, jitter: 0.5), .forgotten(at: 1)],
            at: 1, expect: .refresh),
        Row(
            "a logout while a refresh is under way: the token it brings is not kept",
            after: [.refreshStarted(at: 0), .forgotten(at: 0.5), .refreshSucceeded(value: "A", expiresIn: .seconds(10), requestedAt: 0, jitter: 0.5)],
            at: 1, expect: .injects(nil)),
        Row(
            "a logout while a refresh is under way: the next refresh is at once",
            after: [.refreshStarted(at: 0), .forgotten(at: 0.5), .refreshSucceeded(value: "A", expiresIn: .seconds(10), requestedAt: 0, jitter: 0.5)],
            at: 1, expect: .refresh),
        Row(
            "after the logout the refresh finds no user: not ready, the login command named",
            after: [
                .refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: .seconds(10), requestedAt: 0, jitter: 0.5), .forgotten(at: 1),
                .refreshStarted(at: 1), .refreshFailed(Self.refused, at: 1, jitter: 0),
            ],
            at: 1, expect: .notReadyMentioning(["spotify-proxy login --user alice"])),
        Row(
            "a new login after the refused grant: the refresh is due at once",
            after: [.refreshStarted(at: 0), .refreshFailed(Self.refused, at: 0, jitter: 0), .credentialsReplaced(at: 1)],
            at: 1, expect: .refresh),
        Row(
            "a new login after the refused grant: callers wait for its refresh instead of a 401 at once",
            after: [.refreshStarted(at: 0), .refreshFailed(Self.refused, at: 0, jitter: 0), .credentialsReplaced(at: 1)],
            at: 1, expect: .failsFast(false)),
        Row(
            "a new login while the refused one's refresh is under way: retried at once",
            after: [.refreshStarted(at: 0), .credentialsReplaced(at: 0.5), .refreshFailed(Self.refused, at: 1, jitter: 0)],
            at: 1, expect: .refresh),
        Row(
            "a new login while the refused one's refresh is under way: callers wait for the retry",
            after: [.refreshStarted(at: 0), .credentialsReplaced(at: 0.5), .refreshFailed(Self.refused, at: 1, jitter: 0)],
            at: 1, expect: .failsFast(false)),
    ])
    func logout(row: Row) {
        self.check(row)
    }

    // MARK: - Upstream 401s

    /// One step of a 401 scenario: at `second`, a 401 for `token`, the expected verdict, and
    /// the token injected right after.
    struct UnauthorizedStep: Sendable, CustomStringConvertible {
        var second: Double
        var token: String
        var verdict: UnauthorizedVerdict
        var injectedAfter: String?
        var description: String { "401 for \(self.token) at \(self.second) s → \(self.verdict)" }
    }

    struct UnauthorizedScenario: Sendable, CustomTestStringConvertible {
        var label: String
        var steps: [UnauthorizedStep]
        init(_ label: String, _ steps: [UnauthorizedStep]) {
            self.label = label
            self.steps = steps
        }
        var testDescription: String { self.label }
    }

    /// Token A is issued at 0 s; each step reports a 401, and a refresh that the machine asks
    /// for succeeds at once with the next letter.
    @Test("a 401 forces at most one refresh per interval (30 s); older tokens replay; the rest pass through", arguments: [
        UnauthorizedScenario(
            "a revoked token: dropped, refreshed, replayed",
            [UnauthorizedStep(second: 10, token: "A", verdict: .refreshAndReplay, injectedAfter: "B")]),
        UnauthorizedScenario(
            "an endpoint that refuses every app token (/v1/me): one refresh, then the 401s pass through until the interval is over",
            [
                UnauthorizedStep(second: 10, token: "A", verdict: .refreshAndReplay, injectedAfter: "B"),
                UnauthorizedStep(second: 10, token: "B", verdict: .passThrough, injectedAfter: "B"),
                UnauthorizedStep(second: 25, token: "B", verdict: .passThrough, injectedAfter: "B"),
                UnauthorizedStep(second: 39.9, token: "B", verdict: .passThrough, injectedAfter: "B"),
                UnauthorizedStep(second: 40, token: "B", verdict: .refreshAndReplay, injectedAfter: "C"),
                UnauthorizedStep(second: 41, token: "C", verdict: .passThrough, injectedAfter: "C"),
            ]),
        UnauthorizedScenario(
            "requests that carried a token since replaced replay with the new one",
            [
                UnauthorizedStep(second: 10, token: "A", verdict: .refreshAndReplay, injectedAfter: "B"),
                UnauthorizedStep(second: 10.1, token: "A", verdict: .replay, injectedAfter: "B"),
                UnauthorizedStep(second: 11, token: "not-issued", verdict: .replay, injectedAfter: "B"),
            ]),
    ])
    func unauthorized(scenario: UnauthorizedScenario) {
        self.run(scenario.steps, lifetime: .seconds(3600))
    }

    @Test("with 2-second tokens each expiry may force a refresh: the interval shrinks to the 0.4 s past a token's refresh", arguments: [
        UnauthorizedScenario(
            "2 s tokens: a forced refresh, a 401 within 0.4 s passes through, one after it forces the next",
            [
                UnauthorizedStep(second: 1.0, token: "A", verdict: .refreshAndReplay, injectedAfter: "B"),
                UnauthorizedStep(second: 1.3, token: "B", verdict: .passThrough, injectedAfter: "B"),
                UnauthorizedStep(second: 2.6, token: "B", verdict: .refreshAndReplay, injectedAfter: "C"),
            ])
    ])
    func unauthorizedShortLived(scenario: UnauthorizedScenario) {
        self.run(scenario.steps, lifetime: .seconds(2))
    }

    func run(_ steps: [UnauthorizedStep], lifetime: Duration) {
        var machine = self.machine(after: [
            .refreshStarted(at: 0), .refreshSucceeded(value: "A", expiresIn: lifetime, requestedAt: 0, jitter: 0.5),
        ])
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

    @Test("a 401 for an older token changes nothing in the schedule", arguments: [
        Row(
            "B is current: a 401 for A replays",
            after: [.refreshStarted(at: 0), .refreshSucceeded(value: "B", expiresIn: .seconds(3600), requestedAt: 0, jitter: 0.5)],
            at: 10, expect: .unauthorized(value: "A", verdict: .replay)),
        Row(
            "after a 401 for A: B is still injected",
            after: [
                .refreshStarted(at: 0), .refreshSucceeded(value: "B", expiresIn: .seconds(3600), requestedAt: 0, jitter: 0.5),
                .unauthorized(value: "A", at: 10),
            ],
            at: 10, expect: .injects("B")),
        Row(
            "after a 401 for A: B's refresh is still at 2880 s",
            after: [
                .refreshStarted(at: 0), .refreshSucceeded(value: "B", expiresIn: .seconds(3600), requestedAt: 0, jitter: 0.5),
                .unauthorized(value: "A", at: 10),
            ],
            at: 10, expect: .sleep(until: 2880)),
    ])
    func staleTokenKeepsSchedule(row: Row) {
        self.check(row)
    }

    // MARK: - Callers without a token

    @Test("callers without a token are answered at once only after the credentials were refused", arguments: [
        Row("a fresh machine: callers wait", after: [], at: 0, expect: .failsFast(false)),
        Row(
            "invalid_client: answered at once",
            after: [.refreshStarted(at: 0), .refreshFailed(.invalidClient("invalid_client: Invalid client secret"), at: 0, jitter: 0.5)],
            at: 0, expect: .failsFast(true)),
        Row(
            "invalid_client, then a token: callers wait again",
            after: [
                .refreshStarted(at: 0), .refreshFailed(.invalidClient("invalid_client: Invalid client secret"), at: 0, jitter: 0.5),
                .refreshStarted(at: 61), .refreshSucceeded(value: "A", expiresIn: .seconds(3600), requestedAt: 61, jitter: 0.5),
            ],
            at: 61, expect: .failsFast(false)),
        Row(
            "no token endpoint (404): answered at once",
            after: [.refreshStarted(at: 0), .refreshFailed(.wrongEndpoint("HTTP 404 from the token URL"), at: 0, jitter: 0.5)],
            at: 0, expect: .failsFast(true)),
        Row(
            "no token endpoint (404), then a token: callers wait again",
            after: [
                .refreshStarted(at: 0), .refreshFailed(.wrongEndpoint("HTTP 404 from the token URL"), at: 0, jitter: 0.5),
                .refreshStarted(at: 61), .refreshSucceeded(value: "A", expiresIn: .seconds(3600), requestedAt: 61, jitter: 0.5),
            ],
            at: 61, expect: .failsFast(false)),
        Row(
            "a transient failure (503): callers wait",
            after: [.refreshStarted(at: 0), .refreshFailed(.transient("HTTP 503"), at: 0, jitter: 0.5)],
            at: 0, expect: .failsFast(false)),
        Row(
            "a transient failure (503), then a token: callers wait",
            after: [
                .refreshStarted(at: 0), .refreshFailed(.transient("HTTP 503"), at: 0, jitter: 0.5),
                .refreshStarted(at: 61), .refreshSucceeded(value: "A", expiresIn: .seconds(3600), requestedAt: 61, jitter: 0.5),
            ],
            at: 61, expect: .failsFast(false)),
    ])
    func failsFast(row: Row) {
        self.check(row)
    }

    /// Initial backoff 4 s; a transient failure (jitter 1) at 0 s: the next attempt is at 4 s.
    @Test("retry-after for waiting callers is the time to the next attempt, at least a second", arguments: [
        Row(
            "at 0 s: 4 s to the next attempt", configuration: .init(initialBackoff: .seconds(4)),
            after: [.refreshStarted(at: 0), .refreshFailed(.transient("x"), at: 0, jitter: 1)],
            at: 0, expect: .retryAfter(.seconds(4))),
        Row(
            "at 3.9 s: 0.1 s to go, rounded up to 1 s", configuration: .init(initialBackoff: .seconds(4)),
            after: [.refreshStarted(at: 0), .refreshFailed(.transient("x"), at: 0, jitter: 1)],
            at: 3.9, expect: .retryAfter(.seconds(1))),
    ])
    func retryAfter(row: Row) {
        self.check(row)
    }
}
