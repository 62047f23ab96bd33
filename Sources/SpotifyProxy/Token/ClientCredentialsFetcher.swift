import Foundation
import NIOCore
import Synchronization

/// The client-credentials grant (RFC 6749 §4.4) against Spotify's accounts service:
/// `POST token_url` with Basic auth and `grant_type=client_credentials`.
public struct ClientCredentialsFetcher: TokenFetching {
    private let grant: TokenGrant
    /// The Basic authorization of the app's credentials; replaced when a reload brings new ones
    /// (the next refresh uses them; the current token stays until then).
    private let authorization: Credentials

    private final class Credentials: Sendable {
        let basic: Mutex<String>
        init(_ basic: String) { self.basic = Mutex(basic) }
    }

    public var tokenURL: String { self.grant.tokenURL }

    public init(tokenURL: String, clientID: String, clientSecret: String, client: UpstreamClient, eventLoopGroup: any EventLoopGroup) {
        self.grant = TokenGrant(tokenURL: tokenURL, client: client, eventLoopGroup: eventLoopGroup)
        self.authorization = Credentials(TokenGrant.basic(clientID: clientID, clientSecret: clientSecret))
    }

    /// New app credentials, for the refreshes from now on.
    public func replaceCredentials(clientID: String, clientSecret: String) {
        self.authorization.basic.withLock { $0 = TokenGrant.basic(clientID: clientID, clientSecret: clientSecret) }
    }

    public func fetchToken() async throws(TokenFetchError) -> FetchedToken {
        let authorization = self.authorization.basic.withLock { $0 }
        let answer = try await self.grant.post(form: "grant_type=client_credentials", authorization: authorization)
        return FetchedToken(accessToken: answer.accessToken, expiresIn: answer.expiresIn)
    }

    /// Interprets the accounts service's answer (see ``TokenGrant/parse(status:body:)``).
    public static func parse(status: Int, body: ByteBuffer) throws(TokenFetchError) -> FetchedToken {
        let answer = try TokenGrant.parse(status: status, body: body)
        return FetchedToken(accessToken: answer.accessToken, expiresIn: answer.expiresIn)
    }
}
