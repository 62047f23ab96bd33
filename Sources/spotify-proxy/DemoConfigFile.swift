import FakeSpotify
import Foundation
import TOMLKit

/// A `proxy.conf` the demo writes for its fake Spotify: the fake's accounts service and API, and
/// where the users (and, in the demo's own file, its database) are. Encoded by TOMLKit, so that
/// any path is quoted as TOML wants.
struct DemoConfigFile: Encodable {
    struct Server: Encodable {
        var listen: String
        var tlsCert: String?
        var tlsKey: String?

        enum CodingKeys: String, CodingKey {
            case listen, tlsCert = "tls_cert", tlsKey = "tls_key"
        }
    }

    struct Spotify: Encodable {
        var apiURL: String
        var tokenURL: String
        var authorizeURL: String
        var clientID: String
        var clientSecret: String
        var redirectURI: String?
        var scopes: String?

        enum CodingKeys: String, CodingKey {
            case apiURL = "api_url", tokenURL = "token_url", authorizeURL = "authorize_url", clientID = "client_id"
            case clientSecret = "client_secret", redirectURI = "redirect_uri", scopes
        }
    }

    struct Sink: Encodable {
        var kind: String
        var path: String
        var spoolDir: String

        enum CodingKeys: String, CodingKey {
            case kind, path, spoolDir = "spool_dir"
        }
    }

    struct Users: Encodable {
        var dir: String
    }

    var server: Server?
    var spotify: Spotify
    var sink: Sink?
    var users: Users

    /// The `[spotify]` section that points at `fake`.
    static func spotify(_ fake: FakeSpotify, redirectURI: String? = nil, scopes: [String]? = nil) -> Spotify {
        Spotify(
            apiURL: fake.baseURL, tokenURL: fake.tokenURL, authorizeURL: fake.baseURL + "/authorize", clientID: fake.clientID,
            clientSecret: fake.clientSecret, redirectURI: redirectURI, scopes: scopes?.joined(separator: " "))
    }

    /// Writes the file into a new temporary directory (removed by the caller) under `name`, after
    /// `comment`'s lines; returns the directory and the file.
    func write(name: String, comment: String) throws -> (directory: URL, file: URL) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("spotify-proxy-demo-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let file = directory.appendingPathComponent(name)
        do {
            try self.write(to: file, comment: comment)
        } catch {
            try? FileManager.default.removeItem(at: directory)
            throw error
        }
        return (directory, file)
    }

    /// Writes (or replaces, atomically) `file`, after `comment`'s lines.
    func write(to file: URL, comment: String) throws {
        let comments = comment.split(separator: "\n").map { "# \($0)\n" }.joined()
        try (comments + TOMLEncoder().encode(self)).write(to: file, atomically: true, encoding: .utf8)
    }
}
