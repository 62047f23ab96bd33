import Atomics
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// Obtains one access token from the accounts service.
public protocol TokenFetching: Sendable {
    func fetchToken() async throws(TokenFetchError) -> FetchedToken
}

public struct FetchedToken: Sendable, Equatable {
    public var accessToken: String
    public var expiresIn: Duration
    public init(accessToken: String, expiresIn: Duration) {
        self.accessToken = accessToken
        self.expiresIn = expiresIn
    }
}

public struct TokenFetchError: Error, Sendable, Equatable, CustomStringConvertible {
    public var failure: TokenFailure
    /// A user's refresh found no login: it logged out (a `logout`, its file removed). Said as a
    /// notice, not an error: nothing is wrong, and the next login is tried at once.
    public var loggedOut = false
    public init(_ failure: TokenFailure) { self.failure = failure }
    public static func transient(_ message: String) -> Self { .init(.transient(message)) }
    public static func invalidClient(_ message: String) -> Self { .init(.invalidClient(message)) }
    public var description: String {
        switch self.failure {
        case .transient(let message), .invalidClient(let message), .wrongEndpoint(let message), .invalidGrant(let message): message
        }
    }
}

/// Why a request could not be given a token in time: answered as 503 with `Retry-After`, or as
/// 401 when only a new login can help (a user's refresh token was refused).
public struct TokenUnavailable: Error, Sendable {
    public var reason: String
    public var retryAfterSeconds: Int
    /// The user must log in again: no retry can help.
    public var needsLogin = false

    public init(reason: String, retryAfterSeconds: Int, needsLogin: Bool = false) {
        self.reason = reason
        self.retryAfterSeconds = retryAfterSeconds
        self.needsLogin = needsLogin
    }
}

/// The outcome of asking for a token on the request path.
public enum TokenLookup: Sendable {
    case ready(String)
    case wait(EventLoopFuture<String>)
    /// No token, and none can come before `retryAfterSeconds` (the credentials were refused):
    /// answer at once instead of making the client wait for nothing.
    case unavailable(TokenUnavailable)
}

/// Drives a ``TokenStateMachine`` with a real (or injected) clock and a fetcher; a `Service`
/// whose `run()` refreshes in the background until cancelled or shut down gracefully.
public final class TokenRefresher<C: Clock>: Service, Sendable where C.Duration == Duration {
    public typealias Machine = TokenStateMachine<C.Instant>

    private struct Waiter {
        var promise: EventLoopPromise<String>
        var timeout: Scheduled<Void>?
    }

    private struct State {
        var machine: Machine
        var waiters: [Int: Waiter] = [:]
        var nextWaiterID = 0
        var sleeper: Task<Void, Never>?
        var wakePending = false
        var refreshes = 0
        var failedRefreshes = 0
        var stopped = false
        /// Ends the refresh under way, if any, when the refresher stops.
        var abandonFetch: (@Sendable () -> Void)?

        mutating func wakeDriver() {
            if let sleeper = self.sleeper {
                sleeper.cancel()
            } else {
                self.wakePending = true
            }
        }
    }

    private let clock: C
    /// What the token is for, in log lines ("app").
    private let kind: String
    private let fetcher: any TokenFetching
    private let maximumWait: TimeAmount
    private let logger: Logger
    private let random: @Sendable () -> Double
    private let state: Mutex<State>
    /// The machine's token as the request path reads it: an atomic reference, replaced under
    /// the state's lock whenever the token changes, loaded with no lock by every event loop.
    private let published = ManagedAtomic<PublishedToken<C.Instant>?>(nil)

    public init(
        clock: C,
        kind: String = "app",
        fetcher: any TokenFetching,
        configuration: Machine.Configuration = .init(),
        maximumWait: TimeAmount = .seconds(10),
        logger: Logger,
        random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }
    ) {
        self.clock = clock
        self.kind = kind
        self.fetcher = fetcher
        self.maximumWait = maximumWait
        self.logger = logger
        self.random = random
        self.state = Mutex(State(machine: Machine(configuration: configuration)))
    }

    /// Number of refreshes that completed successfully.
    public var successfulRefreshes: Int { self.state.withLock { $0.refreshes } }

    /// Refreshes done and failed, and the current token's seconds to expiry (for `/metrics`).
    public var figures: TokenFigures {
        let now = self.clock.now
        return self.state.withLock { state in
            TokenFigures(
                refreshes: state.refreshes, failures: state.failedRefreshes,
                expiresInSeconds: state.machine.token.map { max(0, Int(now.duration(to: $0.expiresAt).components.seconds)) })
        }
    }

    /// `nil` while a usable token is held; else why not, and when a retry could succeed (the
    /// next refresh attempt: a `/readyz` poller is told the same wait as a proxied request).
    public var unreadiness: TokenUnavailable? {
        let now = self.clock.now
        return self.state.withLock { state in
            guard case .notReady = state.machine.readiness(now: now) else { return nil }
            return Self.unavailable(state.machine, now: now)
        }
    }

    /// For status displays: how long the current token has left (nil without one; zero once it
    /// has expired, held while no refresh succeeds), whether a
    /// refresh is under way, what stops the token from being ready (nil when it is), and whether
    /// the grant was refused for good (`invalid_grant`).
    public var status: (expiresIn: Duration?, refreshing: Bool, problem: String?, refused: Bool) {
        let now = self.clock.now
        return self.state.withLock { state in
            let machine = state.machine
            let problem: String?
            switch machine.readiness(now: now) {
            case .ready: problem = nil
            case .notReady(let reason): problem = reason
            }
            var refused = false
            if case .invalidGrant = machine.lastFailure { refused = true }
            return (machine.token.map { max(.zero, now.duration(to: $0.expiresAt)) }, machine.isRefreshing, problem, refused)
        }
    }

    /// The token to inject now, or a future that completes when one exists (or fails with
    /// ``TokenUnavailable`` after the configured maximum wait).
    public func token(on eventLoop: any EventLoop) -> TokenLookup {
        let now = self.clock.now
        if let token = self.published.load(ordering: .acquiring), now < token.usableUntil { return .ready(token.value) }
        return self.state.withLock { state -> TokenLookup in
            if let token = state.machine.usableToken(now: now) { return .ready(token) }
            if state.machine.failsFast { return .unavailable(Self.unavailable(state.machine, now: now)) }
            let promise = eventLoop.makePromise(of: String.self)
            if state.stopped {
                promise.fail(TokenUnavailable(reason: "the proxy is shutting down", retryAfterSeconds: 1))
                return .wait(promise.futureResult)
            }
            let id = state.nextWaiterID
            state.nextWaiterID += 1
            let timeout = eventLoop.scheduleTask(in: self.maximumWait) { [weak self] () -> Void in
                self?.expireWaiter(id)
            }
            state.waiters[id] = Waiter(promise: promise, timeout: timeout)
            // A token that lapsed without a pending refresh (e.g. a clock jump) is refreshed now.
            state.wakeDriver()
            return .wait(promise.futureResult)
        }
    }

    /// Reports that the upstream answered 401 to a request carrying `token`, and says what to
    /// do with the request (see ``UnauthorizedVerdict``).
    public func unauthorized(token: String) -> UnauthorizedVerdict {
        let now = self.clock.now
        return self.state.withLock { state in
            let verdict = state.machine.unauthorized(value: token, now: now)
            self.publish(state.machine)
            if verdict == .refreshAndReplay { state.wakeDriver() }
            return verdict
        }
    }

    /// Makes `machine`'s token the one the request path reads; under the state's lock, so that
    /// publications follow the machine's order.
    private func publish(_ machine: Machine) {
        self.published.store(machine.token.map { PublishedToken(value: $0.value, usableUntil: $0.usableUntil) }, ordering: .releasing)
    }

    public func run() async throws {
        await withGracefulShutdownHandler {
            await self.loop()
        } onGracefulShutdown: {
            let abandon = self.state.withLock { state in
                state.stopped = true
                state.wakeDriver()
                return state.abandonFetch
            }
            abandon?()
        }
        self.failAllWaiters(reason: "the proxy is shutting down")
    }

    /// New app credentials are in the fetcher: if the old ones were refused, the next refresh
    /// is now (the driver is woken), so a fixed secret takes effect at once.
    public func credentialsReplaced() {
        let now = self.clock.now
        self.state.withLock { state in
            state.machine.credentialsReplaced(now: now)
            state.wakeDriver()
        }
    }

    /// The grant was withdrawn (a user's logout): the token held is dropped from the request
    /// path at once, and the driver woken to find out what is there now.
    public func forgetToken() {
        let now = self.clock.now
        self.state.withLock { state in
            state.machine.forgetToken(now: now)
            self.publish(state.machine)
            state.wakeDriver()
        }
    }

    private func loop() async {
        while !Task.isCancelled {
            let now = self.clock.now
            let action = self.state.withLock { state -> Machine.Action? in
                state.stopped ? nil : state.machine.nextAction(now: now)
            }
            switch action {
            case nil:
                return
            case .refresh:
                await self.refreshOnce()
            case .sleep(let deadline):
                await self.sleep(until: deadline)
            case .awaitRefresh:
                // Only this loop starts refreshes, so this cannot happen; do not spin if it does.
                assertionFailure("refresh in flight outside the driver loop")
                return
            }
        }
    }

    /// The fetcher's token, or nil when the refresher stopped first: a token endpoint that does
    /// not answer must not hold the shutdown for its timeout (the fetch is left to fail on its
    /// own when the curl loop stops).
    private func fetchUnlessStopped() async throws(TokenFetchError) -> FetchedToken? {
        let (outcomes, outcome) = AsyncStream.makeStream(of: Result<FetchedToken, TokenFetchError>?.self, bufferingPolicy: .bufferingOldest(1))
        let fetch = Task {
            do throws(TokenFetchError) { outcome.yield(.success(try await self.fetcher.fetchToken())) } catch { outcome.yield(.failure(error)) }
        }
        let stoppedAlready = self.state.withLock { state -> Bool in
            state.abandonFetch = { outcome.yield(nil) }
            return state.stopped
        }
        if stoppedAlready { outcome.yield(nil) }
        var first = outcomes.makeAsyncIterator()
        let result = await first.next() ?? nil
        self.state.withLock { $0.abandonFetch = nil }
        outcome.finish()
        guard let result else {
            fetch.cancel()
            return nil
        }
        return try result.get()
    }

    private func refreshOnce() async {
        let requestedAt = self.clock.now
        do {
            guard let fetched = try await self.fetchUnlessStopped() else { return }
            let waiters = self.state.withLock { state -> [Waiter]? in
                state.machine.refreshSucceeded(
                    value: fetched.accessToken, expiresIn: fetched.expiresIn,
                    requestedAt: requestedAt, jitter: self.random())
                self.publish(state.machine)
                // Not kept (the grant was withdrawn while it ran): nobody waiting gets it either;
                // they wait for the refresh that follows at once.
                guard state.machine.token?.value == fetched.accessToken else { return nil }
                state.refreshes += 1
                defer { state.waiters = [:] }
                return Array(state.waiters.values)
            }
            guard let waiters else {
                self.logger.notice("a refresh under way when the grant was withdrawn (a logout) was not used", metadata: ["kind": "\(self.kind)"])
                return
            }
            self.logger.info(
                "access token refreshed",
                metadata: [
                    "kind": "\(self.kind)", "expires_in_s": .stringConvertible(fetched.expiresIn.components.seconds),
                    "took_ms": .stringConvertible(requestedAt.duration(to: self.clock.now).milliseconds),
                ])
            for waiter in waiters {
                waiter.timeout?.cancel()
                waiter.promise.succeed(fetched.accessToken)
            }
        } catch {
            let now = self.clock.now
            let (failures, refused, repeated) = self.state.withLock { state -> (Int, (waiters: [Waiter], error: TokenUnavailable)?, Bool) in
                // The same refused grant, found again at each recheck: said once, not every 2 s.
                let repeated = state.machine.lastFailure == error.failure
                state.machine.refreshFailed(error.failure, now: now, jitter: self.random())
                // No login to refresh (logged out) is no failed refresh: nothing was asked of Spotify.
                if !error.loggedOut { state.failedRefreshes += 1 }
                // Refused credentials or a refused refresh token: nobody waiting can get a token
                // before the next attempt, so they are answered now, not after `token_wait`.
                guard state.machine.failsFast, !state.waiters.isEmpty else { return (state.machine.consecutiveFailures, nil, repeated) }
                defer { state.waiters = [:] }
                return (state.machine.consecutiveFailures, (Array(state.waiters.values), Self.unavailable(state.machine, now: now)), repeated)
            }
            if let refused {
                for waiter in refused.waiters {
                    waiter.timeout?.cancel()
                    waiter.promise.fail(refused.error)
                }
            }
            switch error.failure {
            case .invalidClient(let message):
                self.logger.error(
                    "configuration error: Spotify's accounts service refused the app's credentials (\(message)); set SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET to your app's values from https://developer.spotify.com/dashboard",
                    metadata: ["kind": "\(self.kind)"])
            case .wrongEndpoint(let message):
                self.logger.error(
                    "configuration error: no token endpoint at spotify.token_url (\(message)); Spotify's is https://accounts.spotify.com/api/token",
                    metadata: ["kind": "\(self.kind)"])
            case .transient(let message):
                self.logger.warning(
                    "token refresh failed; retrying with backoff", metadata: ["kind": "\(self.kind)", "error": "\(message)", "failures": .stringConvertible(failures)])
            case .invalidGrant(let message):
                self.logger.log(level: repeated ? .debug : error.loggedOut ? .notice : .error, "\(message)", metadata: ["kind": "\(self.kind)"])
            }
        }
    }

    private func sleep(until deadline: C.Instant) async {
        let task = self.state.withLock { state -> Task<Void, Never>? in
            if state.wakePending {
                state.wakePending = false
                return nil
            }
            let task = Task { [clock] () -> Void in _ = try? await clock.sleep(until: deadline, tolerance: nil) }
            state.sleeper = task
            return task
        }
        await task?.value
        self.state.withLock { state in
            state.sleeper = nil
            state.wakePending = false
        }
    }

    private func expireWaiter(_ id: Int) {
        let now = self.clock.now
        let expired = self.state.withLock { state -> (Waiter, TokenUnavailable)? in
            guard let waiter = state.waiters.removeValue(forKey: id) else { return nil }
            return (waiter, Self.unavailable(state.machine, now: now))
        }
        if let (waiter, error) = expired { waiter.promise.fail(error) }
    }

    /// Why a caller gets no token at `now`, and when to try again.
    private static func unavailable(_ machine: Machine, now: C.Instant) -> TokenUnavailable {
        let reason: String
        switch machine.readiness(now: now) {
        case .ready: reason = "no access token was available in time"
        case .notReady(let why): reason = why
        }
        let seconds = machine.retryAfter(now: now).components.seconds
        var needsLogin = false
        if case .invalidGrant = machine.lastFailure { needsLogin = true }
        return TokenUnavailable(reason: reason, retryAfterSeconds: Int(max(1, seconds)), needsLogin: needsLogin)
    }

    private func failAllWaiters(reason: String) {
        let waiters = self.state.withLock { state -> [Waiter] in
            state.stopped = true
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters {
            waiter.timeout?.cancel()
            waiter.promise.fail(TokenUnavailable(reason: reason, retryAfterSeconds: 1))
        }
    }
}


/// A token's refresh counts and time left, as `/metrics` shows them.
public struct TokenFigures: Sendable, Equatable {
    public var refreshes: Int
    public var failures: Int
    /// nil without a token.
    public var expiresInSeconds: Int?

    public init(refreshes: Int, failures: Int, expiresInSeconds: Int?) {
        self.refreshes = refreshes
        self.failures = failures
        self.expiresInSeconds = expiresInSeconds
    }
}

/// A token as published to the request path (see ``TokenRefresher/token(on:)``).
final class PublishedToken<Instant: InstantProtocol>: AtomicReference, Sendable {
    let value: String
    let usableUntil: Instant

    init(value: String, usableUntil: Instant) {
        self.value = value
        self.usableUntil = usableUntil
    }
}
