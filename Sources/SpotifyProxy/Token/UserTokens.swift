import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// Every logged-in user's access token, each kept fresh by a ``TokenRefresher`` of its own
/// (the app token's rules: refresh ahead with jitter, single-flight, backoff, 401 handling).
/// Users are the files in `[users] dir` at start, and any that `login` adds while the proxy runs
/// (found when a request needs a user, or the status is read). A `Service`: the refreshers run while it does.
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
        public var commands: CommandHint
        /// When the proxy started: a `SPOTIFY_REFRESH_TOKEN` user's authorization time.
        public var started = Date()

        public init(_ configuration: ProxyConfiguration) {
            self.store = UserStore(directory: configuration.users.directory, commands: configuration.commands)
            self.defaultUser = configuration.users.defaultUser
            self.environmentRefreshToken = configuration.users.environmentRefreshToken
            self.tokenURL = configuration.tokenURL
            self.clientID = configuration.clientID ?? ""
            self.clientSecret = configuration.clientSecret
            self.refreshAhead = configuration.refreshAhead
            self.unauthorizedRefreshInterval = configuration.unauthorizedRefreshInterval
            self.tokenWait = configuration.tokenWait
            self.commands = configuration.commands
        }
    }

    public typealias Refresher = TokenRefresher<ContinuousClock>

    private let settings: Settings
    /// `[users] default`, which a reload replaces.
    private let defaultUser: Mutex<String?>
    private let grant: TokenGrant
    private let logger: Logger
    private let refreshers: Mutex<[String: (refresher: Refresher, fetcher: UserTokenFetcher)]>
    /// The users directory as last listed: request stages run on the event loops, so it is
    /// listed again only when it changed (its modification time) or, for a file system whose
    /// times are coarse, at most once per ``scanInterval``.
    private let listing = Mutex(Listing())
    static let scanInterval: Duration = .milliseconds(500)
    /// The files last found not to be logins (warned of once each).
    private let notLoginsWarned = Mutex(Set<String>())

    private struct Listing {
        var labels: [String] = []
        /// Which login each user's file holds (``login(of:)``): a new login over a label, even
        /// one never seen missing, is told from the proxy's own rotations of its refresh token.
        var logins: [String: String] = [:]
        var changed: timespec?
        var at: ContinuousClock.Instant?
    }
    private let added: AsyncStream<Refresher>
    private let addedContinuation: AsyncStream<Refresher>.Continuation

    public init(settings: Settings, client: UpstreamClient, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.settings = settings
        self.defaultUser = Mutex(settings.defaultUser)
        self.grant = TokenGrant(tokenURL: settings.tokenURL, client: client, eventLoopGroup: eventLoopGroup)
        self.logger = logger
        (self.added, self.addedContinuation) = AsyncStream.makeStream(of: Refresher.self)
        self.refreshers = Mutex([:])
        let (labels, logins) = self.scan()
        let initial = Dictionary(uniqueKeysWithValues: labels.map { ($0, self.makeRefresher($0)) })
        self.refreshers.withLock { $0 = initial }
        // Not yet listed (`at` nil), but what the next listing is compared with.
        self.listing.withLock { $0 = Listing(labels: labels, logins: logins) }
    }

    /// The users logged in, sorted: each file in the directory that is a user's (`default` too
    /// while `SPOTIFY_REFRESH_TOKEN` is set), with its login as the file says (when it was
    /// authorized, and as whom; none for a file that cannot be read now, which still counts).
    /// A file that is no login (not `login`'s JSON, a directory) neither makes "the only user"
    /// ambiguous nor takes requests; it is named in a warning once.
    private func scan() -> (labels: [String], logins: [String: String]) {
        var labels: [String] = []
        var logins: [String: String] = [:]
        var notLogins: [(label: String, problem: String)] = []
        for label in self.settings.store.labels() {
            do throws(UserStoreError) {
                guard let stored = try self.settings.store.load(label) else { continue }
                if let mode = self.settings.store.narrowMode(of: label) {
                    self.logger.warning(
                        "a user file its group or others could read is mode 0600 again", metadata: ["user": "\(label)", "was": "\(String(mode, radix: 8))"])
                }
                labels.append(label)
                // A new value of the variable is the user from its first refresh, which writes its
                // file as that user's: listed so now, not as a new login then.
                let replaced = self.settings.environmentRefreshToken.map { UserTokenFetcher.replaces(stored, environmentToken: $0) } ?? false
                logins[label] = label == "default" && replaced ? self.environmentLogin : Self.login(of: stored)
            } catch where error.notALogin {
                notLogins.append((label, error.message))
            } catch {
                labels.append(label)
            }
        }
        if self.settings.environmentRefreshToken != nil, !labels.contains("default") {
            labels.append("default")
            // As its file will read once a rotated token is written to it: not a new login.
            logins["default"] = self.environmentLogin
            notLogins.removeAll { $0.label == "default" }
        }
        let warn = self.notLoginsWarned.withLock { warned in
            defer { warned = Set(notLogins.map(\.label)) }
            return notLogins.filter { !warned.contains($0.label) }
        }
        for (label, problem) in warn {
            self.logger.warning("a file in the users directory is not a login, and is not counted as one", metadata: ["user": "\(label)", "problem": "\(problem)"])
        }
        return (labels.sorted(), logins)
    }

    /// The login of a `SPOTIFY_REFRESH_TOKEN` user, `default`: as its file reads once a rotated
    /// token is written to it.
    private var environmentLogin: String {
        Self.login(of: UserTokenFetcher.environmentUser(label: "default", refreshToken: "", started: self.settings.started))
    }

    /// Which login `user` is: when it was authorized and as whom (a rotation of its refresh
    /// token is the same login).
    static func login(of user: StoredUser) -> String {
        "\(Int(user.authorizedAt.timeIntervalSince1970)) \(user.spotifyUserID ?? "")"
    }

    private func makeRefresher(_ label: String) -> (refresher: Refresher, fetcher: UserTokenFetcher) {
        let fetcher = UserTokenFetcher(
            label: label, store: self.settings.store, grant: self.grant, clientID: self.settings.clientID,
            clientSecret: self.settings.clientSecret, environmentRefreshToken: self.settings.environmentRefreshToken,
            started: self.settings.started, commands: self.settings.commands, logger: self.logger)
        // Its lines say `kind=user user=LABEL` (one word a field, as the app's `kind=app`).
        var logger = self.logger
        logger[metadataKey: "user"] = "\(label)"
        let refresher = TokenRefresher(
            clock: ContinuousClock(), kind: "user", fetcher: fetcher,
            configuration: .init(refreshAheadFraction: self.settings.refreshAhead, unauthorizedRefreshInterval: self.settings.unauthorizedRefreshInterval),
            maximumWait: .milliseconds(Int64(self.settings.tokenWait.milliseconds)), logger: logger)
        return (refresher, fetcher)
    }

    /// Each logged-in user's token figures, by label (for `/metrics` and the status).
    public var figures: [(name: String, figures: TokenFigures)] {
        let labels = self.loggedIn()
        let refreshers = self.refreshers.withLock { refreshers in labels.compactMap { label in refreshers[label].map { (label, $0.refresher) } } }
        return refreshers.map { (name: $0.0, figures: $0.1.figures) }
    }

    public func spotifyUserID(of label: String) -> String? {
        self.refreshers.withLock { $0[label]?.fetcher }?.spotifyUserID
    }

    /// The scopes the login of `label` was granted, nil when not known.
    public func grantedScopes(of label: String) -> [String]? {
        guard let scopes = self.refreshers.withLock({ $0[label]?.fetcher })?.profile?.scopes, !scopes.isEmpty else { return nil }
        return scopes
    }

    /// The token source of a known user.
    public func tokens(for label: String) -> Refresher? {
        self.refreshers.withLock { $0[label]?.refresher }
    }

    /// Each user's state now, sorted by label (never a token).
    public func statuses(now: Date = Date()) -> [UserStatus] {
        let labels = self.loggedIn()
        let refreshers = self.refreshers.withLock { refreshers in labels.compactMap { label in refreshers[label].map { (label, $0) } } }
        return refreshers.map { label, entry in
            let status = entry.refresher.status
            let stored = entry.fetcher.profile
            let state: UserStatus.State
            if status.refused {
                state = .invalidGrant
            } else if status.refreshing {
                state = .refreshing
            } else if status.problem == nil {
                state = .fresh
            } else {
                state = .waiting
            }
            // A refresh token Spotify refused has no time left, whatever its age says.
            let refused = state == .invalidGrant
            return UserStatus(
                label: label, state: state, spotifyUserID: stored?.spotifyUserID,
                tokenExpiresInSeconds: status.expiresIn.map { Int($0.components.seconds) },
                refreshTokenDaysLeft: stored.map { refused ? 0 : StoredUser.daysLeft(authorizedAt: $0.authorizedAt, now: now) },
                problem: status.problem,
                refreshTokenExpiresInSeconds: stored.map {
                    refused ? 0 : Int($0.authorizedAt.addingTimeInterval(StoredUser.refreshTokenLifetime).timeIntervalSince(now).rounded(.down))
                })
        }
    }

    /// Refresh tokens expire six months after the login whatever refreshes happen: a warning
    /// once a day from two weeks before, per user.
    func warnOfExpiries(_ warnings: inout ExpiryWarnings, now: Date) {
        for status in self.statuses(now: now) {
            // A refused one was said so when Spotify refused it.
            guard status.state != .invalidGrant, let days = status.refreshTokenDaysLeft, warnings.due(status.label, daysLeft: days, now: now) else { continue }
            self.logger.warning(
                "user \(status.label)'s refresh token expires in \(max(days, 0)) days (Spotify's six months since the login): run `\(self.settings.commands.login(user: status.label))` before then",
                metadata: ["user": "\(status.label)", "days_left": .stringConvertible(days)])
        }
    }

    /// A reload's `[users] default`, in force from the next request on.
    func replaceDefaultUser(_ label: String?) {
        self.defaultUser.withLock { $0 = label }
    }

    public func resolve(_ requested: String?) -> UserResolution {
        if let label = requested ?? self.defaultUser.withLock({ $0 }) {
            // Logged in now: a `logout` takes effect at once, for requests that name the user too.
            return self.loggedIn().contains(label) ? .user(label) : .unknown(label)
        }
        // Who is logged in now, not at the start: a second login makes "the only user" ambiguous
        // at once, and a logout leaves the others.
        let labels = self.loggedIn()
        switch labels.count {
        case 0: return .none
        case 1: return .user(labels[0])
        default: return .ambiguous(labels)
        }
    }

    /// The users logged in now, sorted: the files in the directory, and `default` while
    /// `SPOTIFY_REFRESH_TOKEN` is set. Users whose files appeared since the start get their
    /// refreshers here.
    private func loggedIn() -> [String] {
        let changed = Self.modificationTime(of: self.settings.store.directory)
        let now = ContinuousClock.now
        let cached = self.listing.withLock { listing -> [String]? in
            guard let at = listing.at, now < at + Self.scanInterval, Self.same(listing.changed, changed) else { return nil }
            return listing.labels
        }
        if let cached { return cached }
        let (labels, logins) = self.scan()
        let previous = self.listing.withLock { $0 }
        // Refreshers first, then the listing: a request that reads the new listing finds its user's.
        for label in labels {
            let (added, existing) = self.refreshers.withLock { refreshers -> (Refresher?, Refresher?) in
                if let entry = refreshers[label] { return (nil, entry.refresher) }
                let made = self.makeRefresher(label)
                refreshers[label] = made
                return (made.refresher, nil)
            }
            if let added {
                self.logger.notice("user logged in since the start; keeping its token fresh", metadata: ["user": "\(label)"])
                self.addedContinuation.yield(added)
            } else if let existing {
                if !previous.labels.contains(label) {
                    // Logged in again after a logout: its new refresh token is tried now.
                    existing.credentialsReplaced()
                } else if let was = previous.logins[label], let login = logins[label], was != login {
                    // Logged in over itself (perhaps as another Spotify account): the token held
                    // is the old login's, never sent again; the new one is tried now.
                    existing.forgetToken()
                    existing.credentialsReplaced()
                }
            }
        }
        // Logged out: the token its refresher holds (perhaps another Spotify account's, should
        // the label log in again) is never sent again.
        for label in Set(previous.labels).subtracting(labels) {
            self.refreshers.withLock { $0[label]?.refresher }?.forgetToken()
        }
        // A login that cannot be read now keeps the one last read.
        let kept = logins.merging(previous.logins.filter { labels.contains($0.key) }) { new, _ in new }
        self.listing.withLock { $0 = Listing(labels: labels, logins: kept, changed: changed, at: now) }
        return labels
    }

    private static func modificationTime(of directory: String) -> timespec? {
        var status = stat()
        guard stat(directory, &status) == 0 else { return nil }
        return status.st_mtim
    }

    private static func same(_ a: timespec?, _ b: timespec?) -> Bool {
        a?.tv_sec == b?.tv_sec && a?.tv_nsec == b?.tv_nsec
    }

    public func run() async throws {
        let initial = self.refreshers.withLock { $0.values.map(\.refresher) }
        await withTaskGroup(of: Void.self) { group in
            for refresher in initial { group.addTask { try? await refresher.run() } }
            group.addTask {
                try? await cancelWhenGracefulShutdown {
                    var warnings = ExpiryWarnings()
                    while true {
                        self.warnOfExpiries(&warnings, now: Date())
                        try await Task.sleep(for: .seconds(3600))
                    }
                }
            }
            await withGracefulShutdownHandler {
                for await refresher in self.added { group.addTask { try? await refresher.run() } }
            } onGracefulShutdown: {
                self.addedContinuation.finish()
            }
        }
    }
}

/// One user's state, for `/readyz`, `/metrics` and `spotify-proxy users` (never a token).
public struct UserStatus: Sendable, Equatable, Codable {
    /// What is known of a user besides tokens.
    public struct Profile: Sendable, Equatable {
        public var spotifyUserID: String?
        public var authorizedAt: Date
        /// What the login was granted; empty when not known (a refresh token from the environment).
        public var scopes: [String] = []
    }

    public enum State: String, Sendable, Codable {
        /// A usable access token is held.
        case fresh
        case refreshing
        /// No usable token; retrying with backoff.
        case waiting
        /// The refresh token was refused: only `login` helps.
        case invalidGrant = "invalid_grant"
    }

    public var label: String
    public var state: State
    public var spotifyUserID: String?
    public var tokenExpiresInSeconds: Int?
    public var refreshTokenDaysLeft: Int?
    public var problem: String?
    /// For `/metrics` (in seconds, Prometheus' base unit); not in the status JSON, which has the days.
    public var refreshTokenExpiresInSeconds: Int? = nil

    enum CodingKeys: String, CodingKey {
        case label, state, problem
        case spotifyUserID = "spotify_user_id"
        case tokenExpiresInSeconds = "token_expires_in_s"
        case refreshTokenDaysLeft = "refresh_token_days_left"
    }
}

/// When to warn that a user's refresh token nears Spotify's six months: from 14 days before,
/// at most once a day per user. Pure: the caller gives the time.
public struct ExpiryWarnings: Sendable {
    public static let from = 14
    private var last: [String: Date] = [:]

    public init() {}

    public mutating func due(_ label: String, daysLeft: Int, now: Date) -> Bool {
        guard daysLeft <= Self.from else { return false }
        if let last = self.last[label], now.timeIntervalSince(last) < 86_400 { return false }
        self.last[label] = now
        return true
    }
}
