import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// Every logged-in user's access token, each kept fresh by a ``TokenRefresher`` of its own
/// (the app token's rules: refresh ahead with jitter, single-flight, backoff, 401 handling).
/// Users are the files in `[users] dir` at start, and any that `login` adds while the proxy runs
/// (found when a request names them). A `Service`: the refreshers run while it does.
public final class UserTokens: Service, UserDirectory, Sendable {
    public struct Settings: Sendable {
        public var store: UserStore
        public var defaultUser: String?
        public var environmentRefreshToken: String?
        public var tokenURL: String
        public var clientID: String
        public var clientSecret: String?
        public var refreshAhead: Double
        public var unauthorizedRefreshInterval: Duration
        public var tokenWait: Duration

        public init(_ configuration: ProxyConfiguration) {
            self.store = UserStore(directory: configuration.users.directory)
            self.defaultUser = configuration.users.defaultUser
            self.environmentRefreshToken = configuration.users.environmentRefreshToken
            self.tokenURL = configuration.tokenURL
            self.clientID = configuration.clientID ?? ""
            self.clientSecret = configuration.clientSecret
            self.refreshAhead = configuration.refreshAhead
            self.unauthorizedRefreshInterval = configuration.unauthorizedRefreshInterval
            self.tokenWait = configuration.tokenWait
        }
    }

    public typealias Refresher = TokenRefresher<ContinuousClock>

    private let settings: Settings
    private let grant: TokenGrant
    private let logger: Logger
    private let refreshers: Mutex<[String: Refresher]>
    private let added: AsyncStream<Refresher>
    private let addedContinuation: AsyncStream<Refresher>.Continuation

    public init(settings: Settings, client: UpstreamClient, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.settings = settings
        self.grant = TokenGrant(tokenURL: settings.tokenURL, client: client, eventLoopGroup: eventLoopGroup)
        self.logger = logger
        (self.added, self.addedContinuation) = AsyncStream.makeStream(of: Refresher.self)
        self.refreshers = Mutex([:])
        var labels = settings.store.labels()
        if settings.environmentRefreshToken != nil, !labels.contains("default") { labels.append("default") }
        let initial = Dictionary(uniqueKeysWithValues: labels.map { ($0, self.makeRefresher($0)) })
        self.refreshers.withLock { $0 = initial }
    }

    private func makeRefresher(_ label: String) -> Refresher {
        let fetcher = UserTokenFetcher(
            label: label, store: self.settings.store, grant: self.grant, clientID: self.settings.clientID,
            clientSecret: self.settings.clientSecret, environmentRefreshToken: self.settings.environmentRefreshToken, logger: self.logger)
        return TokenRefresher(
            clock: ContinuousClock(), kind: "user \(label)", fetcher: fetcher,
            configuration: .init(refreshAheadFraction: self.settings.refreshAhead, unauthorizedRefreshInterval: self.settings.unauthorizedRefreshInterval),
            maximumWait: .milliseconds(Int64(self.settings.tokenWait.milliseconds)), logger: self.logger)
    }

    /// The labels of the users known now, sorted.
    public var labels: [String] { self.refreshers.withLock { $0.keys.sorted() } }

    /// The token source of a known user.
    public func tokens(for label: String) -> Refresher? {
        self.refreshers.withLock { $0[label] }
    }

    /// Each user's readiness, by label: `nil` when a token is held, else why not.
    public var problems: [(label: String, problem: String?)] {
        self.refreshers.withLock { $0.sorted { $0.key < $1.key }.map { ($0.key, $0.value.readinessProblem) } }
    }

    public func resolve(_ requested: String?) -> UserResolution {
        if let label = requested ?? self.settings.defaultUser {
            return self.known(label) ? .user(label) : .unknown(label)
        }
        var labels = self.labels
        if labels.isEmpty {
            // A login since the start?
            labels = self.settings.store.labels().filter { self.known($0) }
        }
        switch labels.count {
        case 0: return .none
        case 1: return .user(labels[0])
        default: return .ambiguous(labels)
        }
    }

    /// Whether `label` is a user: known, or logged in since the start (then it is added).
    private func known(_ label: String) -> Bool {
        if self.refreshers.withLock({ $0[label] != nil }) { return true }
        guard (try? UserStore.checkLabel(label)) != nil, FileManager.default.fileExists(atPath: self.settings.store.path(of: label)) else {
            return false
        }
        let (refresher, isNew) = self.refreshers.withLock { refreshers -> (Refresher, Bool) in
            if let existing = refreshers[label] { return (existing, false) }
            let refresher = self.makeRefresher(label)
            refreshers[label] = refresher
            return (refresher, true)
        }
        if isNew {
            self.logger.notice("user logged in since the start; keeping its token fresh", metadata: ["user": "\(label)"])
            self.addedContinuation.yield(refresher)
        }
        return true
    }

    public func run() async throws {
        let initial = self.refreshers.withLock { Array($0.values) }
        await withTaskGroup(of: Void.self) { group in
            for refresher in initial { group.addTask { try? await refresher.run() } }
            await withGracefulShutdownHandler {
                for await refresher in self.added { group.addTask { try? await refresher.run() } }
            } onGracefulShutdown: {
                self.addedContinuation.finish()
            }
        }
    }
}
