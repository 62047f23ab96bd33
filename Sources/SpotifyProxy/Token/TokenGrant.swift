import Foundation
import NIOCore

/// One `POST` to the accounts service's token endpoint and the reading of its answer, shared by
/// every grant the proxy makes: client credentials (the app), authorization code with PKCE
/// (`login`) and refresh token (each user).
public struct TokenGrant: Sendable {
    /// A successful answer.
    public struct Answer: Sendable, Equatable {
        public var accessToken: String
        public var expiresIn: Duration
        /// Present in code exchanges, and in refreshes that rotate the refresh token.
        public var refreshToken: String?
        public var scope: String?
    }

    public let tokenURL: String
    let client: UpstreamClient
    let eventLoopGroup: any EventLoopGroup

    public init(tokenURL: String, client: UpstreamClient, eventLoopGroup: any EventLoopGroup) {
        self.tokenURL = tokenURL
        self.client = client
        self.eventLoopGroup = eventLoopGroup
    }

    /// `Basic base64(id:secret)`.
    public static func basic(clientID: String, clientSecret: String) -> String {
        "Basic " + Data("\(clientID):\(clientSecret)".utf8).base64EncodedString()
    }

    /// An `application/x-www-form-urlencoded` body.
    public static func form(_ fields: [(String, String)]) -> String {
        fields.map { "\(QueryString.encode($0.0))=\(QueryString.encode($0.1))" }.joined(separator: "&")
    }

    /// Posts `form` (with `authorization` when given) and reads the answer.
    public func post(form: String, authorization: String?) async throws(TokenFetchError) -> Answer {
        var headers: [(name: String, value: String)] = [("Content-Type", "application/x-www-form-urlencoded")]
        if let authorization { headers.insert(("Authorization", authorization), at: 0) }
        let response: UpstreamClient.BufferedResponse
        do {
            response = try await self.client.perform(
                method: "POST", url: self.tokenURL, headers: headers, body: ByteBuffer(string: form), on: self.eventLoopGroup.next(),
                servesClient: false)
        } catch {
            throw .transient("token endpoint unreachable: \(error.message)")
        }
        return try Self.parse(status: response.status, body: response.body, sent: Self.credentials(in: form, authorization: authorization))
    }

    /// What a request to the token endpoint carried that must never be repeated: the
    /// `Authorization` value (and its Base64 part), and the form's secret values.
    static func credentials(in form: String, authorization: String?) -> [String] {
        var sent: [String] = []
        if let authorization {
            sent.append(authorization)
            if let space = authorization.firstIndex(of: " ") {
                let encoded = String(authorization[authorization.index(after: space)...])
                sent.append(encoded)
                // Basic: "id:secret", and the secret alone.
                if let decoded = Data(base64Encoded: encoded).flatMap({ String(data: $0, encoding: .utf8) }) {
                    sent.append(decoded)
                    if let colon = decoded.firstIndex(of: ":") { sent.append(String(decoded[decoded.index(after: colon)...])) }
                }
            }
        }
        for field in form.split(separator: "&") {
            let parts = field.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, ["refresh_token", "code", "code_verifier", "client_secret"].contains(parts[0]) else { continue }
            let value = String(parts[1]).removingPercentEncoding ?? String(parts[1])
            sent.append(value)
            sent.append(String(parts[1]))
        }
        return sent.filter { $0.count >= 8 }
    }

    /// The longest text of the accounts service's own quoted in a message (its error code and
    /// description; Spotify's are a few words): its text reaches clients' 503s and the log.
    static let quotedLimit = 200

    /// `text` from the token endpoint, fit to be quoted to clients and in the log: control
    /// characters (a forged log line, a terminal escape) as spaces, at most ``quotedLimit``
    /// characters, and not at all when it repeats a credential the request carried (`sent`).
    static func quoted(_ text: String, sent: [String]) -> String {
        if sent.contains(where: { text.contains($0) }) { return "(its words not shown: they repeat a credential the proxy sent)" }
        var quoted = String(String.UnicodeScalarView(text.unicodeScalars.map { $0.properties.generalCategory == .control ? " " : $0 }))
        if quoted.count > Self.quotedLimit { quoted = String(quoted.prefix(Self.quotedLimit)) + "… (\(text.utf8.count) bytes)" }
        return quoted
    }

    private struct Success: Decodable {
        var access_token: String
        var expires_in: Int
        var refresh_token: String?
        var scope: String?
    }

    private struct Failure: Decodable {
        var error: String
        var error_description: String?
    }

    /// The longest `expires_in` taken as given (Spotify's are 3600 s): a token said to live longer
    /// is refreshed within a day all the same. Beyond ~292 years its expiry would overflow the
    /// clock's nanoseconds and stop the process.
    public static let longestLifetime = 86_400

    /// Interprets the accounts service's answer; separate from I/O so tests can feed it bytes.
    public static func parse(status: Int, body: ByteBuffer, sent: [String] = []) throws(TokenFetchError) -> Answer {
        let data = Data(body.readableBytesView)
        if status == 200 {
            guard let success = try? JSONDecoder().decode(Success.self, from: data), !success.access_token.isEmpty,
                success.expires_in > 0
            else {
                throw .transient("token endpoint answered 200 without access_token and expires_in")
            }
            return Answer(
                accessToken: success.access_token, expiresIn: .seconds(min(success.expires_in, Self.longestLifetime)),
                refreshToken: success.refresh_token.flatMap { $0.isEmpty ? nil : $0 }, scope: success.scope)
        }
        let failure = try? JSONDecoder().decode(Failure.self, from: data)
        // A body that is not an OAuth error (a wrong URL's page) is not quoted: it is not ours.
        let detail =
            failure.map { "\(Self.quoted($0.error, sent: sent)): \(Self.quoted($0.error_description ?? "", sent: sent))" }
            ?? (data.isEmpty ? "no error body" : "a body that is not an OAuth error")
        if status == 404 || status == 405 {
            throw TokenFetchError(.wrongEndpoint("HTTP \(status) from the token URL"))
        }
        if failure?.error == "invalid_grant" {
            throw TokenFetchError(.invalidGrant(detail))
        }
        // A refused grant (invalid_client, unsupported_grant_type, a 401 or 403) will be refused
        // again until the configuration changes; 408 and 429 are the service's load, not ours.
        if failure?.error == "invalid_client" || ((400..<500).contains(status) && status != 408 && status != 429) {
            throw .invalidClient(failure == nil ? "HTTP \(status), \(detail)" : detail)
        }
        throw .transient("token endpoint answered HTTP \(status) (\(detail))")
    }
}
