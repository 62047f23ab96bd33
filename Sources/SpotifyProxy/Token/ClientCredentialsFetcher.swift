import Foundation
import NIOCore

/// The client-credentials grant (RFC 6749 §4.4) against Spotify's accounts service:
/// `POST token_url` with Basic auth and `grant_type=client_credentials`.
public struct ClientCredentialsFetcher: TokenFetching {
    private let grant: TokenGrant
    private let authorization: String

    public var tokenURL: String { self.grant.tokenURL }

    public init(tokenURL: String, clientID: String, clientSecret: String, client: UpstreamClient, eventLoopGroup: any EventLoopGroup) {
        self.grant = TokenGrant(tokenURL: tokenURL, client: client, eventLoopGroup: eventLoopGroup)
        self.authorization = TokenGrant.basic(clientID: clientID, clientSecret: clientSecret)
    }

    public func fetchToken() async throws(TokenFetchError) -> FetchedToken {
        let answer = try await self.grant.post(form: "grant_type=client_credentials", authorization: self.authorization)
        return FetchedToken(accessToken: answer.accessToken, expiresIn: answer.expiresIn)
    }

    /// Interprets the accounts service's answer (see ``TokenGrant/parse(status:body:)``).
    public static func parse(status: Int, body: ByteBuffer) throws(TokenFetchError) -> FetchedToken {
        let answer = try TokenGrant.parse(status: status, body: body)
        return FetchedToken(accessToken: answer.accessToken, expiresIn: answer.expiresIn)
    }
}
