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
    let store: UserStore
    let grant: TokenGrant
    let clientID: String
    /// HTTP Basic, when a client secret is configured (accepted beside PKCE's `client_id`).
    let authorization: String?
    /// `SPOTIFY_REFRESH_TOKEN`, for the user `default` when no file holds one.
    let environmentRefreshToken: String?
    /// How the login it suggests names the configuration.
    let commands: CommandHint
    let logger: Logger
    /// When the proxy started: the six months of a `SPOTIFY_REFRESH_TOKEN` are counted from its
    /// first use, its real authorization time being unknown.
    private let started = Date()
    private let memory = Mutex<Memory>(Memory())

    private struct Memory {
        /// The refresh token Spotify refused.
        var refused: String?
        /// A rotated token that could not be written to disk, with the spent token it replaces:
        /// used (and its write retried) while the file still holds that spent token.
        var unsaved: (user: StoredUser, replaces: String)?
        /// The user as last read, without its token: for status displays, read off the event loops.
        var known: UserStatus.Profile?
    }

    init(
        label: String, store: UserStore, grant: TokenGrant, clientID: String, clientSecret: String?, environmentRefreshToken: String?,
        commands: CommandHint = CommandHint(), logger: Logger
    ) {
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

    /// The user as stored now (a login may have replaced the file since the last refresh).
    func currentUser() throws(TokenFetchError) -> StoredUser {
        let stored: StoredUser?
        do {
            stored = try self.store.load(self.label)
        } catch where error.notALogin && self.environmentRefreshToken != nil {
            // Not a login (the listing does not count it): `SPOTIFY_REFRESH_TOKEN` is the user.
            stored = nil
        } catch {
            throw .transient(error.message)
        }
        if let (unsaved, replaces) = self.memory.withLock({ $0.unsaved }) {
            if stored?.refreshToken == replaces {
                // The file still holds the spent token: try the write again; use the new one either way.
                self.persist(unsaved, replacing: replaces)
                self.remember(unsaved)
                return unsaved
            }
            // A login (or logout) since: the file is the truth again.
            self.memory.withLock { $0.unsaved = nil }
        }
        if let stored {
            self.remember(stored)
            return stored
        }
        if let token = self.environmentRefreshToken {
            let user = StoredUser(label: self.label, refreshToken: token, scopes: [], spotifyUserID: nil, authorizedAt: self.started)
            self.remember(user)
            return user
        }
        throw TokenFetchError(.invalidGrant("no Spotify user \(self.label) is logged in: run `\(self.loginCommand)`"))
    }

    func fetchToken() async throws(TokenFetchError) -> FetchedToken {
        let user = try self.currentUser()
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
            self.persist(updated, replacing: user.refreshToken)
        }
        return FetchedToken(accessToken: answer.accessToken, expiresIn: answer.expiresIn)
    }

    /// Writes `user` unless the file changed since `replacing` was read from it (a login or a
    /// logout meanwhile wins: it is not overwritten with the older grant). A write that fails
    /// keeps `user` in memory, retried at the next refresh.
    private func persist(_ user: StoredUser, replacing spent: String) {
        do {
            let onDisk = try self.store.load(self.label)
            guard onDisk == nil && self.environmentRefreshToken == spent || onDisk?.refreshToken == spent else {
                self.memory.withLock { $0.unsaved = nil }
                self.logger.notice(
                    "user \(self.label) logged in (or out) during a refresh; the new login's file is kept", metadata: ["user": "\(self.label)"])
                return
            }
            try self.store.save(user)
            self.memory.withLock { $0.unsaved = nil }
        } catch {
            self.memory.withLock { $0.unsaved = (user, spent) }
            self.logger.critical(
                "cannot persist user \(self.label)'s rotated refresh token; it is kept in memory and the write retried at the next refresh (a restart before then needs `\(self.loginCommand)`)",
                metadata: ["error": "\(error)"])
        }
    }

    private func remember(_ user: StoredUser) {
        self.memory.withLock { $0.known = UserStatus.Profile(spotifyUserID: user.spotifyUserID, authorizedAt: user.authorizedAt) }
    }
}
