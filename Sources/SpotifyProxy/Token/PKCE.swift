import Crypto
import Foundation

/// Proof Key for Code Exchange (RFC 7636) as Spotify asks for it: a random verifier of 43–128
/// unreserved characters, and its `S256` challenge, base64url(SHA-256(verifier)) without padding.
public struct PKCE: Sendable, Equatable {
    public let verifier: String
    public var challenge: String { Self.challenge(for: self.verifier) }
    public static let method = "S256"

    public init(verifier: String) {
        self.verifier = verifier
    }

    /// A fresh verifier: 64 characters from the unreserved set, from the system's CSPRNG.
    public static func random() -> PKCE {
        PKCE(verifier: Self.randomString(length: 64))
    }

    public static func challenge(for verifier: String) -> String {
        Self.base64URL(Data(SHA256.hash(data: Data(verifier.utf8))))
    }

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Random characters from `[A-Za-z0-9-._~]`; also the login's `state`.
    public static func randomString(length: Int) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
        var generator = SystemRandomNumberGenerator()
        return String((0..<length).map { _ in alphabet[Int(generator.next(upperBound: UInt64(alphabet.count)))] })
    }
}
