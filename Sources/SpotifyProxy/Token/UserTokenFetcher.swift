import Crypto
import Foundation
import Logging
import Synchronization

/// Refreshes one user's access token with the refresh token `login` stored. Spotify's refresh
/// tokens for PKCE clients are single-use, so a rotated one is persisted (atomically) before the
/// new access token is handed out, and only one refresh per user is ever in flight (the
/// ``TokenRefresher`` driving this is single-flight). A refused refresh token (`invalid_grant`) is
/// never sent again: the next attempt waits for a new login to store another.
final class UserTokenFetcher: TokenFetching {
    let label: String
    let store: any UserFiles
    let grant: TokenGrant
    let clientID: String
    /// HTTP Basic, when a client secret is configured (accepted beside PKCE's `client_id`).
    let authorization: String?
    /// `SPOTIFY_REFRESH_TOKEN`, for the user `default` when no file holds one, or when the file's
    /// chain of rotations began with another value of it (``currentUser()``).
    let environmentRefreshToken: String?
    /// How the login it suggests names the configuration.
    let commands: CommandHint
    let logger: Logger
    /// When the proxy started: the six months of a `SPOTIFY_REFRESH_TOKEN` are counted from its
    /// first use, its real authorization time being unknown.
    private let started: Date
    private let memory = Mutex<Memory>(Memory())

    private struct Memory {
        /// The refresh token Spotify refused.
        var refused: String?
        /// The newest rotated token, not yet written to disk, and the token the file held when
        /// the first write failed (nil: no file, a `SPOTIFY_REFRESH_TOKEN` user's case): used (and
        /// its write retried) while the file still holds that, across any number of rotations.
        var unsaved: (user: StoredUser, fileHolds: String?)?
        /// The user as last read, without its token: for status displays, read off the event loops.
        var known: UserStatus.Profile?
        /// Which of the variable's two cases was logged (``currentUser()``), to log each once.
        var environmentNoted: String?
    }

    init(
        label: String, store: any UserFiles, grant: TokenGrant, clientID: String, clientSecret: String?, environmentRefreshToken: String?,
        started: Date = Date(), commands: CommandHint = CommandHint(), logger: Logger
    ) {
        self.started = started
        self.commands = commands
        self.label = label
        self.store = store
        self.grant = grant
        self.clientID = clientID
        self.authorization = clientSecret.map { TokenGrant.basic(clientID: clientID, clientSecret: $0) }
        self.environmentRefreshToken = label == "default" ? environmentRefreshToken : nil
        self.logger = logger
    }

    var loginCommand: String { self.commands.login(user: self.label) }

    /// The Spotify id and authorization time last read (nil before the first read).
    var profile: UserStatus.Profile? { self.memory.withLock { $0.known } }

    /// The login's Spotify id: as last read, else (before the user's first token) from its file,
    /// read without remembering it (the refresh reads it as the truth).
    var spotifyUserID: String? {
        if let known = self.profile { return known.spotifyUserID }
        return (try? self.store.load(self.label))?.spotifyUserID
    }

    /// The user as stored now (a login may have replaced the file since the last refresh), and
    /// the refresh token the file holds (nil: no file).
    func currentUser() throws(TokenFetchError) -> (user: StoredUser, fileHolds: String?) {
        let stored: StoredUser?
        do {
            stored = try self.store.load(self.label)
        } catch where error.notALogin && self.environmentRefreshToken != nil {
            // Not a login (the listing does not count it): `SPOTIFY_REFRESH_TOKEN` is the user.
            stored = nil
        } catch {
            throw .transient(error.message)
        }
        if let (unsaved, fileHolds) = self.memory.withLock({ $0.unsaved }) {
            if stored?.refreshToken == fileHolds {
                // The file still holds what it held when the write failed: try the write again;
                // use the newest token either way (the file's was spent).
                let written = self.persist(unsaved, fileHolds: fileHolds)
                self.remember(unsaved)
                return (unsaved, written ? unsaved.refreshToken : fileHolds)
            }
            // A login (or logout) since: the file is the truth again.
            self.memory.withLock { $0.unsaved = nil }
        }
        if let stored, let token = self.environmentRefreshToken {
            if stored.isLogin {
                self.noteEnvironment(
                    "SPOTIFY_REFRESH_TOKEN is set, but user \(self.label) has a login of its own in its file, which is used; to use the variable's token instead, run `\(self.commands.logout(user: self.label))` (or unset the variable)")
            } else if Self.replaces(stored, environmentToken: token) {
                // The file's chain began with an older value of the variable: the new one is the user now.
                self.noteEnvironment("SPOTIFY_REFRESH_TOKEN holds a new refresh token; it replaces user \(self.label)'s stored one", notice: true)
                let user = Self.environmentUser(label: self.label, refreshToken: token, started: self.started)
                self.remember(user)
                return (user, stored.refreshToken)
            }
        }
        if let stored {
            self.remember(stored)
            return (stored, stored.refreshToken)
        }
        if let token = self.environmentRefreshToken {
            let user = Self.environmentUser(label: self.label, refreshToken: token, started: self.started)
            self.remember(user)
            return (user, nil)
        }
        // Users are found by their files: a refresher without one is a user who logged out.
        var loggedOut = TokenFetchError(.invalidGrant("user \(self.label) logged out; its token is no longer used (to log in again: `\(self.loginCommand)`)"))
        loggedOut.loggedOut = true
        throw loggedOut
    }

    /// A `SPOTIFY_REFRESH_TOKEN` user, authorized (as far as the proxy knows) when it started.
    static func environmentUser(label: String, refreshToken: String, started: Date) -> StoredUser {
        StoredUser(
            label: label, refreshToken: refreshToken, scopes: [], spotifyUserID: nil, authorizedAt: started,
            environmentTokenSHA256: Self.fingerprint(refreshToken))
    }

    /// Whether `token`, the variable's, is not the one `stored`'s chain began with (a file
    /// written before the proxy kept that, with no fingerprint, is taken to be its chain).
    static func replaces(_ stored: StoredUser, environmentToken token: String) -> Bool {
        stored.environmentTokenSHA256.map { $0 != Self.fingerprint(token) } ?? false
    }

    /// A refresh token's SHA-256, in hex: what a file keeps of the variable's token.
    static func fingerprint(_ token: String) -> String {
        SHA256.hash(data: Array(token.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// Logs `message` once for as long as it stays the same.
    private func noteEnvironment(_ message: String, notice: Bool = false) {
        let first = self.memory.withLock { memory in
            defer { memory.environmentNoted = message }
            return memory.environmentNoted != message
        }
        guard first else { return }
        if notice { self.logger.notice("\(message)", metadata: ["user": "\(self.label)"]) } else { self.logger.warning("\(message)", metadata: ["user": "\(self.label)"]) }
    }

    func fetchToken() async throws(TokenFetchError) -> FetchedToken {
        let (user, fileHolds) = try self.currentUser()
        if self.memory.withLock({ $0.refused }) == user.refreshToken {
            throw TokenFetchError(
                .invalidGrant("Spotify refused user \(self.label)'s refresh token (revoked, or past its six months): run `\(self.loginCommand)`"))
        }
        let form = TokenGrant.form([("grant_type", "refresh_token"), ("refresh_token", user.refreshToken), ("client_id", self.clientID)])
        let answer: TokenGrant.Answer
        do {
            answer = try await self.grant.post(form: form, authorization: self.authorization)
        } catch {
            guard case .invalidGrant(let detail) = error.failure else { throw error }
            self.memory.withLock {
                $0.refused = user.refreshToken
                $0.unsaved = nil
            }
            throw TokenFetchError(.invalidGrant("Spotify refused user \(self.label)'s refresh token (\(detail)): run `\(self.loginCommand)`"))
        }
        if let rotated = answer.refreshToken, rotated != user.refreshToken {
            // The old refresh token is spent: the new one is on disk before the access token is used.
            var updated = user
            updated.refreshToken = rotated
            // A `SPOTIFY_REFRESH_TOKEN` user's scopes are known from its first answer on.
            if updated.scopes.isEmpty, let scope = answer.scope { updated.scopes = scope.split(separator: " ").map(String.init) }
            self.persist(updated, fileHolds: fileHolds)
        }
        return FetchedToken(accessToken: answer.accessToken, expiresIn: answer.expiresIn)
    }

    /// Writes `user` unless the file no longer holds `fileHolds`, what it held when `user`'s
    /// chain of rotations was read from it (a login or a logout meanwhile wins: it is not
    /// overwritten with the older grant). A write that fails keeps `user` in memory, used and
    /// its write retried at the next refresh, for as long as the file is unchanged.
    @discardableResult
    private func persist(_ user: StoredUser, fileHolds: String?) -> Bool {
        do {
            let onDisk = try self.store.load(self.label)
            guard onDisk?.refreshToken == fileHolds else {
                self.memory.withLock { $0.unsaved = nil }
                self.logger.notice(
                    "user \(self.label) logged in (or out) during a refresh; the new login's file is kept", metadata: ["user": "\(self.label)"])
                return false
            }
            try self.store.save(user)
            self.memory.withLock { $0.unsaved = nil }
            return true
        } catch {
            self.memory.withLock { $0.unsaved = (user, fileHolds) }
            self.logger.critical(
                "cannot persist user \(self.label)'s rotated refresh token; it is kept in memory and the write retried at the next refresh (a restart before then needs `\(self.loginCommand)`)",
                metadata: ["error": "\(error)"])
            return false
        }
    }

    private func remember(_ user: StoredUser) {
        self.memory.withLock { $0.known = UserStatus.Profile(spotifyUserID: user.spotifyUserID, authorizedAt: user.authorizedAt, scopes: user.scopes) }
    }
}
