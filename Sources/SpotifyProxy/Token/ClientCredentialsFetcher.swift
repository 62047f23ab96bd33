import Foundation
import NIOCore

/// The client-credentials grant (RFC 6749 §4.4) against Spotify's accounts service:
/// `POST token_url` with Basic auth and `grant_type=client_credentials`.
public struct ClientCredentialsFetcher: TokenFetching {
    public var tokenURL: String
    private let basicCredentials: String
    private let client: UpstreamClient
    private let eventLoopGroup: any EventLoopGroup

    public init(tokenURL: String, clientID: String, clientSecret: String, client: UpstreamClient, eventLoopGroup: any EventLoopGroup) {
        self.tokenURL = tokenURL
        self.basicCredentials = Data("\(clientID):\(clientSecret)".utf8).base64EncodedString()
        self.client = client
        self.eventLoopGroup = eventLoopGroup
    }

    private struct Success: Decodable {
        var access_token: String
        var expires_in: Int
    }

    private struct Failure: Decodable {
        var error: String
        var error_description: String?
    }

    public func fetchToken() async throws(TokenFetchError) -> FetchedToken {
        let response: UpstreamClient.BufferedResponse
        do {
            response = try await self.client.perform(
                method: "POST", url: self.tokenURL,
                headers: [
                    ("Authorization", "Basic \(self.basicCredentials)"),
                    ("Content-Type", "application/x-www-form-urlencoded"),
                ],
                body: ByteBuffer(string: "grant_type=client_credentials"),
                on: self.eventLoopGroup.next())
        } catch {
            throw .transient("token endpoint unreachable: \(error.message)")
        }
        return try Self.parse(status: response.status, body: response.body)
    }

    /// Interprets the accounts service's answer; separate from I/O so tests can feed it bytes.
    public static func parse(status: Int, body: ByteBuffer) throws(TokenFetchError) -> FetchedToken {
        let data = Data(body.readableBytesView)
        if status == 200 {
            guard let success = try? JSONDecoder().decode(Success.self, from: data), !success.access_token.isEmpty,
                success.expires_in > 0
            else {
                throw .transient("token endpoint answered 200 without access_token and expires_in")
            }
            return FetchedToken(accessToken: success.access_token, expiresIn: .seconds(success.expires_in))
        }
        let failure = try? JSONDecoder().decode(Failure.self, from: data)
        let detail = failure.map { "\($0.error): \($0.error_description ?? "")" } ?? "no error body"
        if status == 404 || status == 405 {
            throw TokenFetchError(.wrongEndpoint("HTTP \(status) from the token URL"))
        }
        // A refused grant (invalid_client, unsupported_grant_type, a 401 or 403) will be refused
        // again until the configuration changes; 408 and 429 are the service's load, not ours.
        if failure?.error == "invalid_client" || ((400..<500).contains(status) && status != 408 && status != 429) {
            throw .invalidClient(failure == nil ? "HTTP \(status), no error body" : detail)
        }
        throw .transient("token endpoint answered HTTP \(status) (\(detail))")
    }
}
