import Foundation
import NIOCore
import NIOHTTP1
@testable import SpotifyProxy
import Testing

@Suite("User tokens: the pure parts")
struct UserTokenUnitTests {
    @Test("PKCE: the S256 challenge of RFC 7636's example verifier")
    func pkceVector() {
        // RFC 7636 appendix B.
        #expect(PKCE.challenge(for: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    }

    @Test("PKCE: verifiers are 43-128 unreserved characters, and differ every time")
    func pkceRandom() {
        let a = PKCE.random()
        let b = PKCE.random()
        #expect((43...128).contains(a.verifier.count))
        #expect(a.verifier.allSatisfy { $0.isLetter || $0.isNumber || "-._~".contains($0) })
        #expect(a.verifier != b.verifier)
    }

    struct RedirectRow: Sendable, CustomTestStringConvertible {
        var testDescription: String
        var uri: String
        /// nil: accepted; else a phrase the refusal must contain.
        var refusal: String?
    }

    static let redirects: [RedirectRow] = [
        RedirectRow(testDescription: "the default loopback URI", uri: "http://127.0.0.1:8888/callback", refusal: nil),
        RedirectRow(testDescription: "IPv6 loopback", uri: "http://[::1]:9000/cb", refusal: nil),
        RedirectRow(testDescription: "any HTTPS URI", uri: "https://example.com/spotify/callback", refusal: nil),
        RedirectRow(testDescription: "localhost is refused, and why", uri: "http://localhost:8888/callback", refusal: "no longer accepts localhost"),
        RedirectRow(testDescription: "plain HTTP to another host", uri: "http://192.168.1.5:8888/callback", refusal: "only for the loopback addresses"),
        RedirectRow(testDescription: "loopback without a port", uri: "http://127.0.0.1/callback", refusal: "needs a port"),
        RedirectRow(testDescription: "not a URL", uri: "callback", refusal: "is not a URL"),
        RedirectRow(testDescription: "a port above 65535", uri: "http://127.0.0.1:99999/cb", refusal: "has a port above 65535"),
        RedirectRow(testDescription: "a fragment (RFC 6749 §3.1.2)", uri: "http://127.0.0.1:8888/callback#frag", refusal: "has a fragment"),
        RedirectRow(testDescription: "an empty fragment too", uri: "https://example.com/cb#", refusal: "has a fragment"),
    ]

    @Test("redirect URIs as Spotify accepts them since 2025-11-27", arguments: redirects)
    func redirectURIs(_ row: RedirectRow) {
        do {
            let uri = try RedirectURI(row.uri)
            #expect(row.refusal == nil, "accepted \(uri.text)")
        } catch {
            guard let refusal = row.refusal else {
                Issue.record("refused: \(error.message)")
                return
            }
            #expect(error.message.contains(refusal))
            #expect(error.message.contains("spotify.redirect_uri"))
        }
    }

    struct PathRow: Sendable, CustomTestStringConvertible {
        var testDescription: String
        var method: String
        var path: String
        var user: Bool
    }

    static let paths: [PathRow] = [
        PathRow(testDescription: "the profile", method: "GET", path: "/v1/me", user: true),
        PathRow(testDescription: "below /v1/me", method: "GET", path: "/v1/me/player/currently-playing", user: true),
        PathRow(testDescription: "a write to the library", method: "PUT", path: "/v1/me/tracks", user: true),
        PathRow(testDescription: "a trailing slash", method: "GET", path: "/v1/me/", user: true),
        PathRow(testDescription: "not a prefix match by letters", method: "GET", path: "/v1/meteor", user: false),
        PathRow(testDescription: "adding tracks to a playlist", method: "POST", path: "/v1/playlists/37i9dQZF1DXcBWIGoYBM5M/tracks", user: true),
        PathRow(testDescription: "reading a playlist is catalog", method: "GET", path: "/v1/playlists/37i9dQZF1DXcBWIGoYBM5M", user: false),
        PathRow(testDescription: "creating a playlist", method: "POST", path: "/v1/users/alice/playlists", user: true),
        PathRow(testDescription: "reading a user's playlists", method: "GET", path: "/v1/users/alice/playlists", user: false),
        PathRow(testDescription: "an artist", method: "GET", path: "/v1/artists/0TnOYISbd1XYRBk9myaseg", user: false),
        PathRow(testDescription: "whether the user follows a playlist", method: "GET", path: "/v1/playlists/37i9dQZF1DXcBWIGoYBM5M/followers/contains", user: true),
        PathRow(testDescription: "whether the user follows a playlist, as a HEAD", method: "HEAD", path: "/v1/playlists/37i9dQZF1DXcBWIGoYBM5M/followers/contains", user: true),
        PathRow(testDescription: "a playlist's followers are catalog", method: "GET", path: "/v1/playlists/37i9dQZF1DXcBWIGoYBM5M/followers", user: false),
    ]

    @Test("the default user paths", arguments: paths)
    func defaultUserPaths(_ row: PathRow) {
        #expect(UserPathRule.defaults.contains { $0.matches(method: row.method, path: row.path[...]) } == row.user)
    }

    @Test("a user path rule that is not METHOD /path, or names a method no forwarded request has, names the key and shows one")
    func badRule() throws {
        #expect(throws: ConfigurationError.self) { try UserPathRule("/v1/me") }
        #expect(throws: ConfigurationError.self) { try UserPathRule("FOO /v1/me") }
        #expect(try UserPathRule("put /v1/playlists/{id}/tracks").matches(method: "PUT", path: "/v1/playlists/x/tracks"))
    }

    struct FixedUsers: UserDirectory {
        var answer: @Sendable (String?) -> UserResolution
        func resolve(_ requested: String?) -> UserResolution { self.answer(requested) }
        func spotifyUserID(of label: String) -> String? { nil }
    }

    static func decide(
        _ method: HTTPMethod, _ uri: String, headers: [(String, String)] = [], key: AccessKey? = nil, users: FixedUsers,
        commands: CommandHint = CommandHint()
    ) -> (StageDecision, Credential) {
        var request = ProxyRequest(head: HTTPRequestHead(version: .http1_1, method: method, uri: uri, headers: HTTPHeaders(headers)))
        request.key = key
        let decision = TokenChoiceStage(rules: UserPathRule.defaults, users: users, commands: commands).decide(&request)
        return (decision, request.credential)
    }

    @Test("the token choice: a user path gets the named or default user; anything else the app")
    func tokenChoice() {
        let users = FixedUsers { requested in
            switch requested {
            case nil: .user("alice")
            case "bob"?: .user("bob")
            case let other?: .unknown(other)
            }
        }
        #expect(Self.decide(.GET, "/v1/me", users: users) == (.continue, .user("alice")))
        #expect(Self.decide(.GET, "/v1/me?market=SE", headers: [("X-Spotify-User", "bob")], users: users) == (.continue, .user("bob")))
        #expect(Self.decide(.GET, "/v1/artists/x", headers: [("X-Spotify-User", "bob")], users: users) == (.continue, .app))
        #expect(
            Self.decide(.GET, "/v1/me", headers: [("X-Spotify-User", "carol")], users: users)
                == (.answer(LocalAnswer(SpotifyError(status: 401, message: "no Spotify user carol is logged in: run `spotify-proxy login --user carol`"))), .app))
        // A teammate with an access key cannot run the command on the proxy's machine: ask whoever
        // runs it, without the server's configuration path.
        let hint = CommandHint(configFile: "/srv/proxy/proxy.conf")
        let teammate = AccessKey(label: "dana", hash: [])
        #expect(
            Self.decide(.GET, "/v1/me", headers: [("X-Spotify-User", "carol")], key: teammate, users: users, commands: hint)
                == (
                    .answer(
                        LocalAnswer(
                            SpotifyError(
                                status: 401,
                                message: "no Spotify user carol is logged in: ask whoever runs this proxy to log carol in (`spotify-proxy login --user carol` with the proxy's --config)"))),
                    .app
                ))
        let nobody = FixedUsers { _ in .none }
        #expect(
            Self.decide(.GET, "/v1/me", key: teammate, users: nobody, commands: hint)
                == (
                    .answer(
                        LocalAnswer(
                            SpotifyError(
                                status: 401,
                                message:
                                    "this endpoint needs a Spotify user: ask whoever runs this proxy to log a Spotify user in (`spotify-proxy login` with the proxy's --config) (the app's token cannot read or change a user's data)"
                            ))), .app
                ))
        #expect(
            Self.decide(.GET, "/v1/me", users: nobody, commands: hint).0
                == .answer(
                    LocalAnswer(
                        SpotifyError(
                            status: 401,
                            message:
                                "this endpoint needs a Spotify user: run `spotify-proxy login --config /srv/proxy/proxy.conf` (the app's token cannot read or change a user's data)"
                        ))), "on one's own proxy, the command with its --config")
        // Whitespace around the value is not part of it (RFC 9110 §5.5).
        for padded in ["bob ", "bob\t", " bob"] {
            #expect(Self.decide(.GET, "/v1/me", headers: [("X-Spotify-User", padded)], users: users) == (.continue, .user("bob")), "\(padded)")
        }
        #expect(Self.decide(.GET, "/v1/me", headers: [("X-Spotify-User", "")], users: users) == (.continue, .user("alice")), "empty: nobody named")
        // Named twice: the same user is that user; two users are a 400, not the first one silently.
        #expect(Self.decide(.GET, "/v1/me", headers: [("X-Spotify-User", "bob"), ("X-Spotify-User", "bob ")], users: users) == (.continue, .user("bob")))
        #expect(Self.decide(.GET, "/v1/me", headers: [("X-Spotify-User", ""), ("X-Spotify-User", "bob")], users: users) == (.continue, .user("bob")))
        #expect(
            Self.decide(.GET, "/v1/me", headers: [("X-Spotify-User", "bob"), ("X-Spotify-User", "carol"), ("X-Spotify-User", "bob")], users: users)
                == (.answer(LocalAnswer(SpotifyError(status: 400, message: "X-Spotify-User names 2 users (bob, carol): send it once"))), .app))
        // A label no login could make: 400 saying so, not a login hint that `login` would refuse.
        for label in ["../evil", "a/b", ".hidden"] {
            let (decision, credential) = Self.decide(.GET, "/v1/me", headers: [("X-Spotify-User", label)], users: users)
            guard case .answer(let answer) = decision else {
                Issue.record("\(label) was not refused")
                continue
            }
            #expect(answer.status == 400 && credential == .app, "\(label)")
            #expect(String(buffer: answer.body).contains(#"X-Spotify-User: the user label \"\#(label)\" is not usable"#), "\(label)")
        }
    }

    @Test("the login a 401 suggests names the configuration the proxy was started with")
    func loginHintNamesTheConfiguration() {
        let commands = CommandHint(configFile: "/tmp/demo/proxy.conf")
        for (users, expected) in [
            (FixedUsers { _ in .none }, "run `spotify-proxy login --config /tmp/demo/proxy.conf`"),
            (FixedUsers { .unknown($0 ?? "default") }, "run `spotify-proxy login --config /tmp/demo/proxy.conf --user default`"),
        ] {
            var request = ProxyRequest(head: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/v1/me", headers: HTTPHeaders()))
            guard case .answer(let answer) = TokenChoiceStage(rules: UserPathRule.defaults, users: users, commands: commands).decide(&request) else {
                Issue.record("a user path without its user was not answered")
                continue
            }
            #expect(String(buffer: answer.body).contains(expected), "\(String(buffer: answer.body))")
        }
    }

    @Test("no user, or several without a default: 401 saying what to do")
    func tokenChoiceWithoutUser() {
        let none = FixedUsers { _ in .none }
        guard case .answer(let noUser) = Self.decide(.GET, "/v1/me", users: none).0 else {
            Issue.record("a user path without users was not answered")
            return
        }
        #expect(noUser.status == 401)
        #expect(String(buffer: noUser.body).contains("run `spotify-proxy login`"))
        let several = FixedUsers { _ in .ambiguous(["alice", "bob"]) }
        guard case .answer(let ambiguous) = Self.decide(.GET, "/v1/me", users: several).0 else {
            Issue.record("several users without a default were not answered")
            return
        }
        #expect(String(buffer: ambiguous.body).contains("X-Spotify-User"))
    }

    @Test("the accounts service's invalid_grant is final for that refresh token")
    func invalidGrantParse() {
        #expect(throws: TokenFetchError(.invalidGrant("invalid_grant: Refresh token revoked"))) {
            try TokenGrant.parse(status: 400, body: ByteBuffer(string: #"{"error":"invalid_grant","error_description":"Refresh token revoked"}"#))
        }
        let rotated = try? TokenGrant.parse(
            status: 200, body: ByteBuffer(string: #"{"access_token":"A","token_type":"Bearer","expires_in":3600,"refresh_token":"R2","scope":"user-read-private"}"#))
        #expect(rotated?.refreshToken == "R2")
        let kept = try? TokenGrant.parse(status: 200, body: ByteBuffer(string: #"{"access_token":"A","token_type":"Bearer","expires_in":3600}"#))
        #expect(kept?.refreshToken == nil)
        #expect(kept?.expiresIn == .seconds(3600))
        // A lifetime past the clock's range (it stopped the process) is taken as a day.
        let endless = try? TokenGrant.parse(status: 200, body: ByteBuffer(string: #"{"access_token":"A","token_type":"Bearer","expires_in":9223372036854775807}"#))
        #expect(endless?.expiresIn == .seconds(86_400))
    }

    @Test("the token endpoint's words reach clients and the log only fit to quote: control characters as spaces, 200 characters at most, never when they repeat a credential sent")
    func tokenEndpointWordsQuoted() {
        let authorization = TokenGrant.basic(clientID: "fake-client-id", clientSecret: "fake-client-secret")
        let sent = TokenGrant.credentials(in: "grant_type=refresh_token&refresh_token=R%2Fsecret-refresh&client_id=abc", authorization: authorization)
        func refusal(_ description: String) -> TokenFetchError? {
            let body = try! JSONSerialization.data(withJSONObject: ["error": "invalid_client", "error_description": description])
            do {
                _ = try TokenGrant.parse(status: 400, body: ByteBuffer(bytes: body), sent: sent)
                return nil
            } catch { return error }
        }
        #expect(refusal("Invalid client secret") == .invalidClient("invalid_client: Invalid client secret"))
        #expect(refusal("bad\r\n2026-01-01 notice forged line\u{1B}[31m\u{0}") == .invalidClient("invalid_client: bad  2026-01-01 notice forged line [31m "))
        let long = refusal(String(repeating: "A", count: 2_000_000))?.description ?? ""
        #expect(long.count < 300 && long.hasSuffix("… (2000000 bytes)"), "\(long.prefix(300))")
        for echoed in [authorization, String(authorization.dropFirst(6)), "fake-client-secret", "R/secret-refresh", "R%2Fsecret-refresh"] {
            let words = refusal("you sent \(echoed) to us")?.description ?? ""
            #expect(words == "invalid_client: (its words not shown: they repeat a credential the proxy sent)", "\(echoed): \(words)")
        }
        // Short or public values are not taken for credentials: the client id, the grant type.
        #expect(refusal("abc refresh_token") == .invalidClient("invalid_client: abc refresh_token"))
    }

    @Test("user files: directory 0700, file 0600, written atomically, read back; labels are checked")
    func store() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("users-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = UserStore(directory: directory + "/users")
        let user = StoredUser(
            label: "alice", refreshToken: "R1", scopes: ["user-read-private"], spotifyUserID: "alice-id",
            authorizedAt: Date(timeIntervalSince1970: 1_790_000_000))
        try store.save(user)
        #expect(try store.load("alice") == user)
        let directoryMode = try FileManager.default.attributesOfItem(atPath: store.directory)[.posixPermissions] as? Int
        let fileMode = try FileManager.default.attributesOfItem(atPath: store.path(of: "alice"))[.posixPermissions] as? Int
        #expect(directoryMode == 0o700)
        #expect(fileMode == 0o600)
        #expect(store.labels() == ["alice"])
        // A file given a wider mode is 0600 again at the next write, or when listed.
        let path = store.path(of: "alice")
        func mode() throws -> Int? { try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int }
        chmod(path, 0o644)
        try store.save(user)
        #expect(try mode() == 0o600)
        #expect(store.narrowMode(of: "alice") == nil)
        chmod(path, 0o640)
        #expect(store.narrowMode(of: "alice") == 0o640)
        #expect(try mode() == 0o600)
        // No temporary file is left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.directory) == ["alice.json"])
        #expect(try store.delete("alice"))
        #expect(store.labels().isEmpty)
        #expect(throws: ConfigurationError.self) { try UserStore.checkLabel("../etc") }
        #expect(throws: ConfigurationError.self) { try UserStore.checkLabel(".hidden") }
    }

    @Test("a refresh token lives six months from authorization; days left are counted from it")
    func daysLeft() {
        let authorized = Date(timeIntervalSince1970: 1_790_000_000)
        let user = StoredUser(label: "a", refreshToken: "R", scopes: [], spotifyUserID: nil, authorizedAt: authorized)
        #expect(user.daysLeft(now: authorized) == 182)
        #expect(user.daysLeft(now: authorized.addingTimeInterval(170 * 86_400)) == 12)
        #expect(user.daysLeft(now: authorized.addingTimeInterval(183 * 86_400)) < 0)
    }

    @Test("`users` says a refresh token Spotify refused must be replaced, whatever its age")
    func usersTableRefused() {
        let authorized = Date(timeIntervalSince1970: 1_790_000_000)
        let now = authorized.addingTimeInterval(10 * 86_400)
        let users: [(label: String, file: Result<StoredUser?, any Error>)] = [("a", now), ("b", now), ("c", authorized.addingTimeInterval(-200 * 86_400))].map {
            ($0, .success(StoredUser(label: $0, refreshToken: "refresh-secret", scopes: [], spotifyUserID: nil, authorizedAt: $1)))
        }
        func status(_ label: String, _ state: UserStatus.State) -> UserStatus {
            UserStatus(label: label, state: state, spotifyUserID: nil, tokenExpiresInSeconds: nil, refreshTokenDaysLeft: 0, problem: nil)
        }
        let table = UsersTable.render(
            users, live: .states(["a": status("a", .invalidGrant), "b": status("b", .waiting), "c": status("c", .invalidGrant)]), now: now)
        let rows = table.split(separator: "\n")
        #expect(rows.count == 4)
        #expect(rows[1].hasPrefix("a ") && rows[1].contains("invalid_grant") && rows[1].contains("refused: log in again"), "fresh, but refused")
        #expect(rows[2].hasPrefix("b ") && rows[2].contains("182 days left"))
        #expect(rows[3].hasPrefix("c ") && rows[3].contains("refused: log in again"), "old and refused")
        #expect(!table.contains("refresh-secret"))
    }

    @Test("Spotify's 403 Insufficient client scope to a user's request, explained: what the login lacks of the default scopes, the command (or for a teammate, whom to ask); other 403s are not it")
    func scopeRefusal() {
        let commands = CommandHint(configFile: "/etc/proxy.conf")
        let scopes = UserSettings.defaultScopes
        let lacking = ScopeRefusal.message(user: "alice", granted: scopes.filter { $0 != "user-follow-read" && $0 != "ugc-image-upload" }, commands: commands, viaKey: false)
        #expect(lacking == "Insufficient client scope: Spotify says user alice's login was not granted a scope this request needs; of the default scopes (every /v1/me endpoint's) it lacks user-follow-read ugc-image-upload: to log it in again with them, run `spotify-proxy login --config /etc/proxy.conf --user alice`")
        let every = ScopeRefusal.message(user: "alice", granted: scopes, commands: commands, viaKey: true)
        #expect(every.contains("it has every default scope, so add the one Spotify's reference names for this endpoint to spotify.scopes") && every.contains("ask whoever runs this proxy"))
        #expect(!every.contains("/etc/proxy.conf"), "a teammate is not told the server's paths")
        let unknown = ScopeRefusal.message(user: "default", granted: nil, commands: CommandHint(), viaKey: false)
        #expect(unknown == "Insufficient client scope: Spotify says user default's login was not granted a scope this request needs: to log it in again with them, run `spotify-proxy login --user default`")
        func answer(_ status: Int, _ body: String) -> UpstreamAnswer { UpstreamAnswer(status: status, headers: HTTPHeaders(), body: Array(body.utf8)) }
        #expect(ScopeRefusal.isInsufficientScope(answer(403, #"{"error":{"status":403,"message":"Insufficient client scope"}}"#)))
        #expect(!ScopeRefusal.isInsufficientScope(answer(403, #"{"error":{"status":403,"message":"Forbidden"}}"#)))
        #expect(!ScopeRefusal.isInsufficientScope(answer(401, #"{"error":{"status":401,"message":"Insufficient client scope"}}"#)))
        #expect(!ScopeRefusal.isInsufficientScope(answer(403, "Insufficient client scope")), "not JSON: passed as it is")
    }
}
