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
    let logger: Logger
    private let memory = Mutex<Memory>(Memory())

    private struct Memory {
        /// The refresh token Spotify refused.
        var refused: String?
        /// A rotated token that could not be written to disk: used until a write succeeds.
        var unsaved: StoredUser?
    }

    init(
        label: String, store: UserStore, grant: TokenGrant, clientID: String, clientSecret: String?, environmentRefreshToken: String?,
        logger: Logger
    ) {
        self.label = label
        self.store = store
        self.grant = grant
        self.clientID = clientID
        self.authorization = clientSecret.map { TokenGrant.basic(clientID: clientID, clientSecret: $0) }
        self.environmentRefreshToken = label == "default" ? environmentRefreshToken : nil
        self.logger = logger
    }

    var loginCommand: String { "spotify-proxy login --user \(self.label)" }

    /// The user as stored now (a login may have replaced the file since the last refresh).
    func currentUser() throws(TokenFetchError) -> StoredUser {
        if let unsaved = self.memory.withLock({ $0.unsaved }) { return unsaved }
        let stored: StoredUser?
        do { stored = try self.store.load(self.label) } catch { throw .transient(error.message) }
        if let stored { return stored }
        if let token = self.environmentRefreshToken {
            return StoredUser(label: self.label, refreshToken: token, scopes: [], spotifyUserID: nil, authorizedAt: Date())
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
            self.memory.withLock { $0.refused = user.refreshToken }
            throw TokenFetchError(.invalidGrant("Spotify refused user \(self.label)'s refresh token (\(detail)): run `\(self.loginCommand)`"))
        }
        if let rotated = answer.refreshToken, rotated != user.refreshToken {
            // The old refresh token is spent: the new one is on disk before the access token is used.
            var updated = user
            updated.refreshToken = rotated
            do {
                try self.store.save(updated)
                self.memory.withLock { $0.unsaved = nil }
            } catch {
                self.memory.withLock { $0.unsaved = updated }
                self.logger.critical(
                    "cannot persist user \(self.label)'s rotated refresh token; it is kept in memory only, and a restart will need `\(self.loginCommand)`",
                    metadata: ["error": "\(error.message)"])
            }
        }
        return FetchedToken(accessToken: answer.accessToken, expiresIn: answer.expiresIn)
    }
}
