import NIOHTTP1
@testable import SpotifyProxy
import Testing

@Suite("Request routing: only /v1/ goes upstream, never an open proxy")
struct RequestRouterTests {
    func route(_ uri: String, method: HTTPMethod = .GET) -> RequestRouter.Route {
        RequestRouter.route(method: method, uri: uri, ownAuthorities: ["api.spotify.com", "proxy.example.test:8080"])
    }

    func status(_ route: RequestRouter.Route) -> Int? {
        if case .reject(let error) = route { return error.status }
        return nil
    }

    @Test("Spotify paths are forwarded byte for byte", arguments: [
        "/v1/artists/0TnOYISbd1XYRBk9myaseg",
        "/v1/tracks/?ids=a,b",
        "/v1/tracks?ids=a%2Cb",
        "/v1/search?q=abba+gold&type=album",
        "/v1/albums/x/tracks/",
        "/v1/me/playlists?limit=50",
        "/v1/a%2Fb",
        "/v1",
    ])
    func forwards(uri: String) {
        #expect(self.route(uri) == .forward(uri: uri))
    }

    @Test("health endpoints are answered by the proxy")
    func health() {
        #expect(self.route("/healthz") == .healthz)
        #expect(self.route("/readyz") == .readyz)
        #expect(self.route("/metrics") == .metrics)
        #expect(self.route("/healthz", method: .HEAD) == .healthz)
        // Another method: 405, saying which it takes (RFC 9110 §15.5.6).
        #expect(self.status(self.route("/healthz", method: .POST)) == 405)
        #expect(self.status(self.route("/admin/cache/purge", method: .GET)) == 405)
        #expect(self.status(self.route("/nowhere", method: .POST)) == 404)
    }

    @Test("CONNECT is refused with 405")
    func connect() {
        #expect(self.status(self.route("api.spotify.com:443", method: .CONNECT)) == 405)
        #expect(self.status(self.route("evil.example:443", method: .CONNECT)) == 405)
    }

    @Test("TRACE is refused with 405 and the methods allowed: forwarded, it would come back echoed with the proxy's token")
    func trace() {
        for uri in ["/v1/artists/0TnOYISbd1XYRBk9myaseg", "/healthz", "http://api.spotify.com/v1/me"] {
            guard case .reject(let error) = self.route(uri, method: .TRACE) else {
                Issue.record("\(uri) was not refused")
                continue
            }
            #expect(error.status == 405)
            #expect(error.message.hasPrefix("TRACE is not supported"))
            // The proxy's own paths take their own methods, as any other method on them is told.
            #expect(error.responseHeaders["Allow"] == [uri == "/healthz" ? "GET, HEAD" : "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"])
        }
    }

    @Test("absolute-form for another host is refused; for this proxy or Spotify it is served", arguments: [
        ("http://evil.example/v1/artists/x", 403),
        ("https://evil.example:443/v1/x", 403),
        ("http://169.254.169.254/latest/meta-data", 403),
        ("http://api.spotify.com.evil.example/v1/x", 403),
    ])
    func absoluteOtherHost(uri: String, expected: Int) {
        #expect(self.status(self.route(uri)) == expected)
    }

    @Test("absolute-form with user information is a 400 that does not repeat it, whichever host it names; the log shows the target without it", arguments: [
        "http://api.spotify.com@evil.example/v1/x", "http://alice:S3CRET@api.spotify.com/v1/artists/x?token=Q", "https://alice:S3CRET@proxy.example.test:8080/v1/x",
        "http://alice:S3C@RET@api.spotify.com/v1/x", "http://api.spotify.com@alice:S3CRET@evil.example/v1",
    ])
    func absoluteWithUserInformation(uri: String) throws {
        guard case .reject(let error) = self.route(uri) else { Issue.record("not refused: \(uri)"); return }
        #expect(error.status == 400)
        #expect(error.message.hasPrefix("the request target carries user information (user:password@)"))
        #expect(!error.message.contains("S3CRET") && !error.message.contains("evil"))
        #expect(!uri.loggedPath.contains("S3C") && !uri.loggedPath.contains("RET@") && !uri.loggedPath.contains("api.spotify.com@"), "\(uri.loggedPath)")
        #expect(!uri.loggedPath.contains("?"))
    }

    @Test("the logged path: origin-form and absolute-form targets without their query and user information")
    func loggedPath() {
        #expect("/v1/artists/x?market=SE".loggedPath == "/v1/artists/x")
        #expect("/v1/a@b".loggedPath == "/v1/a@b")
        #expect("http://alice:pw@api.spotify.com/v1/artists/x?q=1".loggedPath == "http://api.spotify.com/v1/artists/x")
        // Anything up to the last @ goes, in the path too: no parse of where a password ends is
        // trusted. (A forwarded absolute-form request is logged as the origin-form target it names.)
        #expect("http://api.spotify.com/v1/a@b".loggedPath == "http://b")
        #expect("http://u@h".loggedPath == "http://h")
        #expect("http://a:p@ss@h/v1/x".loggedPath == "http://h/v1/x")
        #expect("u:p@h:443".loggedPath == "h:443", "a CONNECT's authority form")
        #expect("h:443".loggedPath == "h:443")
        // A password holding / or ?, a network-path reference, a scheme with one slash.
        #expect("http://alice:pa/ss@evil/v1/x".loggedPath == "http://evil/v1/x")
        #expect("http://alice:pa?ss@h/v1/x".loggedPath == "http://h/v1/x")
        #expect("//alice:pw@h/v1/x".loggedPath == "//h/v1/x")
        #expect("http:/alice:pw@h/x".loggedPath == "http:/h/x")
        #expect("u:p@h/x/http://y".loggedPath == "h/x/http://y")
        #expect("//h/v1/x?q=1".loggedPath == "//h/v1/x")
    }

    @Test("absolute-form naming the upstream or the public URL is turned into origin-form")
    func absoluteOwnHost() {
        #expect(self.route("http://proxy.example.test:8080/v1/artists/x?y=1") == .forward(uri: "/v1/artists/x?y=1"))
        #expect(self.route("https://API.spotify.com/v1/search?q=a") == .forward(uri: "/v1/search?q=a"))
        #expect(self.status(self.route("http://proxy.example.test:8080")) == 404)
        #expect(self.status(self.route("http://localhost:8080/v1/x")) == 403)
    }

    @Test("paths outside /v1/ get 404", arguments: ["/", "/v2/x", "/v1x", "/api/token", "/metrics.json"])
    func outside(uri: String) {
        #expect(self.status(self.route(uri)) == 404)
    }

    @Test("dot segments, encoded traversal and NUL bytes get 400", arguments: [
        "/v1/../admin", "/v1/./x", "/v1/%2e%2e/admin", "/v1/%2E%2e/x", "/v1/artists/%2e", "/v1/a/..",
        "/v1/x%2f..%2fadmin", "/v1/x%2F%2E%2E%2Fadmin", "/v1/x%5c..%5cadmin", "/v1/x%00y",
    ])
    func traversal(uri: String) {
        #expect(self.status(self.route(uri)) == 400)
        if case .reject(let error) = self.route(uri) {
            #expect(error.message.contains("send the path without it"), "what to do: \(error.message)")
        }
    }

    @Test("the request target must be a path", arguments: ["*", "v1/x", "ftp://x/y"])
    func notAPath(uri: String) {
        #expect(self.status(self.route(uri)) == 400)
    }
}
