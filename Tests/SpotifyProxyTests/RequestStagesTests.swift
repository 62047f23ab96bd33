import NIOCore
import NIOHTTP1
import SpotifyProxy
import Testing

/// The request stages as tables: a request head in, a decision out, no sockets.
@Suite("Request stages")
struct RequestStagesTests {
    /// A token source whose readiness a test sets.
    final class FixedTokens: AccessTokenSource {
        let readinessProblem: TokenUnavailable?
        init(readinessProblem: String?) { self.readinessProblem = readinessProblem.map { TokenUnavailable(reason: $0, retryAfterSeconds: 1) } }
        func token(on eventLoop: any EventLoop) -> TokenLookup { .ready("unused") }
        func unauthorized(token: String) -> UnauthorizedVerdict { .passThrough }
        var figures: TokenFigures { TokenFigures(refreshes: 0, failures: 0, expiresInSeconds: nil) }
    }

    /// Nobody logged in.
    struct NoUsers: UserDirectory {
        func resolve(_ requested: String?) -> UserResolution { .none }
        func spotifyUserID(of label: String) -> String? { nil }
    }

    static func settings(rewriteLinks: Bool = true) -> ListenerSettings {
        var configuration = ProxyConfiguration()
        configuration.maxHeaderBytes = 200
        configuration.maxBodyBytes = 1000
        configuration.rewriteLinks = rewriteLinks
        return ListenerSettings(configuration)
    }

    static func stages(ready: Bool = true, rewriteLinks: Bool = true) -> RequestStages {
        .standard(
            settings: Self.settings(rewriteLinks: rewriteLinks),
            endpoints: OwnEndpoints(
                tokens: FixedTokens(readinessProblem: ready ? nil : "no access token has been obtained yet"), tee: nil, metrics: ProxyMetrics()),
            users: NoUsers(), governor: Governor())
    }

    struct Row: Sendable, CustomTestStringConvertible {
        var testDescription: String
        var method: HTTPMethod
        var uri: String
        var headers: [(String, String)] = []
        var version = HTTPVersion.http1_1
        var expected: RequestStages.Decision
    }

    static func forward(
        _ method: String = "GET", _ target: String = "/v1/artists/0TnOYISbd1XYRBk9myaseg", body: UpstreamRequest.Body = .none,
        expectContinue: Bool = false, headViaGET: Bool = false
    ) -> RequestStages.Decision {
        .forward(ForwardPlan(method: method, target: target, body: body, expectContinue: expectContinue, headViaGET: headViaGET))
    }

    static func refuse(_ status: Int, _ message: String, headers: [(String, String)] = []) -> RequestStages.Decision {
        .answer(LocalAnswer(SpotifyError(status: status, message: message, headers: headers)))
    }

    static let rows: [Row] = [
        Row(
            testDescription: "the simple search becomes Spotify's search, its answer to be compacted", method: .GET,
            uri: "/simple/search?q=Mr.+Brightside&type=song&limit=5",
            expected: .forward(
                ForwardPlan(
                    method: "GET", target: "/v1/search?q=Mr.%20Brightside&type=track&limit=5", body: .none, expectContinue: false,
                    headViaGET: false, transform: .simpleSearch(kind: "track", query: "Mr. Brightside")))),
        Row(testDescription: "a Spotify path is forwarded as is", method: .GET, uri: "/v1/artists/0TnOYISbd1XYRBk9myaseg", expected: forward()),
        Row(
            testDescription: "a user path without a logged-in user: 401 saying to log in", method: .GET, uri: "/v1/me",
            expected: refuse(401, "this endpoint needs a Spotify user: run `spotify-proxy login` (the app's token cannot read or change a user's data)")),
        Row(
            testDescription: "an absolute-form target for Spotify is forwarded in origin form", method: .GET,
            uri: "https://api.spotify.com/v1/artists/0TnOYISbd1XYRBk9myaseg", expected: forward()),
        Row(
            testDescription: "a HEAD goes as GET so the rewritten length can be counted", method: .HEAD, uri: "/v1/artists/0TnOYISbd1XYRBk9myaseg",
            expected: forward("GET", headViaGET: true)),
        Row(
            testDescription: "a body with Content-Length", method: .PUT, uri: "/v1/test/echo", headers: [("Content-Length", "12")],
            expected: forward("PUT", "/v1/test/echo", body: .known(12))),
        Row(
            testDescription: "a chunked body with Expect: 100-continue", method: .POST, uri: "/v1/test/echo/chunked",
            headers: [("Transfer-Encoding", "chunked"), ("Expect", "100-continue")],
            expected: forward("POST", "/v1/test/echo/chunked", body: .streamed, expectContinue: true)),
        Row(
            testDescription: "Expect: 100-continue from an HTTP/1.0 client is ignored (RFC 9110 §10.1.1): no 100 is sent to it",
            method: .POST, uri: "/v1/test/echo", headers: [("Content-Length", "5"), ("Expect", "100-continue")], version: .http1_0,
            expected: forward("POST", "/v1/test/echo", body: .known(5))),
        Row(
            testDescription: "Expect with Content-Length: 0 asks for nothing", method: .POST, uri: "/v1/test/echo",
            headers: [("Content-Length", "0"), ("Expect", "100-continue")], expected: forward("POST", "/v1/test/echo", body: .known(0))),
        Row(
            testDescription: "Expect without a body asks for nothing", method: .GET, uri: "/v1/artists/0TnOYISbd1XYRBk9myaseg",
            headers: [("Expect", "100-continue")], expected: forward()),
        Row(
            testDescription: "headers over server.max_header_bytes: 431, before anything else", method: .GET, uri: "/nowhere",
            headers: [("X-Big", String(repeating: "a", count: 200))],
            // "GET /nowhere HTTP/1.1" 21, Host 20, X-Big 207, each with its CRLF, and the blank line's.
            expected: refuse(
                431,
                "request head too large: 256 bytes (request line and headers), the limit is 200 (server.max_header_bytes): send fewer or shorter headers, or a shorter URL"
            )),
        Row(
            testDescription: "a request line alone over server.max_header_bytes: 414, the URL to shorten", method: .GET,
            uri: "/v1/search?q=" + String(repeating: "a", count: 200),
            expected: refuse(
                414,
                "request line too long: 228 bytes, the limit for the whole head is 200 (server.max_header_bytes): send a shorter URL (fewer ids, a shorter q)"
            )),
        Row(
            testDescription: "a path outside /v1/: 404 saying what is served", method: .GET, uri: "/v2/x",
            expected: refuse(
                404,
                "no such path: the proxy forwards Spotify Web API paths under /v1/ (e.g. /v1/search?q=abba&type=artist); /simple/search?q=NAME&type=artist|album|track|song searches simply; /healthz, /readyz, /metrics and /admin/status report its state; POST /admin/cache/purge[?prefix=/v1/...] empties the cache"
            )),
        Row(
            testDescription: "an absolute-form target with no host: invalid (RFC 9110 §4.2.1)", method: .GET, uri: "http:///v1/x",
            expected: refuse(400, "the request target names no host after its scheme: send the path alone, such as /v1/artists/{id}")),
        Row(
            testDescription: "an absolute-form target with a port and no host: invalid", method: .GET, uri: "http://:80/v1/x",
            expected: refuse(400, "the request target names no host after its scheme: send the path alone, such as /v1/artists/{id}")),
        Row(
            testDescription: "another host in absolute form: not an open proxy", method: .GET, uri: "http://example.com/v1/x",
            expected: refuse(403, "absolute-form request for example.com refused: this proxy only forwards to the Spotify Web API and is not an open proxy")),
        Row(
            testDescription: "conflicting Content-Length and Transfer-Encoding: refused", method: .POST, uri: "/v1/x",
            headers: [("Content-Length", "3"), ("Transfer-Encoding", "chunked")],
            expected: refuse(400, "conflicting Content-Length / Transfer-Encoding headers: send one Content-Length, or Transfer-Encoding: chunked alone")),
        Row(
            testDescription: "a transfer coding the proxy does not decode: 501, not forwarded as if it were the body", method: .POST, uri: "/v1/x",
            headers: [("Transfer-Encoding", "gzip, chunked")],
            expected: refuse(501, "Transfer-Encoding gzip is not supported: send the body as it is, with Content-Length or Transfer-Encoding: chunked")),
        Row(
            testDescription: "a Transfer-Encoding that names no coding: refused (read as no body, a body sent would be taken for the next request)",
            method: .POST, uri: "/v1/x", headers: [("Transfer-Encoding", "")],
            expected: refuse(400, "Transfer-Encoding names no coding: send Transfer-Encoding: chunked with a chunked body, or Content-Length")),
        Row(
            testDescription: "chunked twice: refused", method: .POST, uri: "/v1/x", headers: [("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "Chunked")],
            expected: refuse(400, "Transfer-Encoding names chunked more than once: name it once")),
        Row(
            testDescription: "chunked, in any case and with spaces", method: .POST, uri: "/v1/test/echo/chunked", headers: [("Transfer-Encoding", " CHUNKED ")],
            expected: forward("POST", "/v1/test/echo/chunked", body: .streamed)),
        Row(
            testDescription: "one of the proxy's own paths with a method it does not take: 405 with Allow", method: .POST, uri: "/healthz",
            expected: refuse(405, "/healthz takes GET, HEAD only, not POST", headers: [("Allow", "GET, HEAD")])),
        Row(
            testDescription: "the cache purge is a POST: a GET is 405 with Allow", method: .GET, uri: "/admin/cache/purge?prefix=/v1/",
            expected: refuse(405, "/admin/cache/purge takes POST only, not GET", headers: [("Allow", "POST")])),
        Row(
            testDescription: "two different Content-Lengths: refused", method: .POST, uri: "/v1/x", headers: [("Content-Length", "3"), ("Content-Length", "4")],
            expected: refuse(400, "conflicting Content-Length / Transfer-Encoding headers: send one Content-Length, or Transfer-Encoding: chunked alone")),
        Row(
            testDescription: "a Content-Length that is not a number", method: .POST, uri: "/v1/x", headers: [("Content-Length", "-1")],
            expected: refuse(400, "invalid Content-Length: send the body's length in bytes, as digits")),
        Row(
            testDescription: "a declared body over server.max_body_bytes: 413", method: .POST, uri: "/v1/x", headers: [("Content-Length", "1001")],
            expected: refuse(413, "request body too large: 1001 bytes, the limit is 1000 (server.max_body_bytes)")),
        Row(
            testDescription: "a path outside /v1/ is refused before its body is looked at", method: .POST, uri: "/x",
            headers: [("Content-Length", "1001")],
            expected: refuse(
                404,
                "no such path: the proxy forwards Spotify Web API paths under /v1/ (e.g. /v1/search?q=abba&type=artist); /simple/search?q=NAME&type=artist|album|track|song searches simply; /healthz, /readyz, /metrics and /admin/status report its state; POST /admin/cache/purge[?prefix=/v1/...] empties the cache"
            )),
    ]

    @Test("what the standard stages decide", arguments: rows)
    func standard(_ row: Row) {
        var request = ProxyRequest(head: HTTPRequestHead(version: row.version, method: row.method, uri: row.uri, headers: HTTPHeaders([("Host", "127.0.0.1:8080")] + row.headers)))
        #expect(Self.stages().decide(&request) == row.expected)
    }

    @Test("HTTP/1.1 needs exactly one Host header (RFC 9112 §3.2): none or two is a 400 saying so; HTTP/1.0 needs none; one that is not host[:port] is a 400")
    func host() {
        func decide(_ version: HTTPVersion, _ headers: [(String, String)]) -> RequestStages.Decision {
            var request = ProxyRequest(head: HTTPRequestHead(version: version, method: .GET, uri: "/v1/artists/0TnOYISbd1XYRBk9myaseg", headers: HTTPHeaders(headers)))
            return Self.stages().decide(&request)
        }
        #expect(decide(.http1_1, []) == Self.refuse(400, "the request has no Host header, which HTTP/1.1 requires: send one (Host: the proxy's host and port)"))
        #expect(decide(.http1_1, [("Host", "a"), ("host", "b")]) == Self.refuse(400, "the request has 2 Host headers; HTTP/1.1 allows exactly one: send one"))
        #expect(decide(.http1_1, [("HOST", "127.0.0.1:8080")]) == decide(.http1_0, []))
        // A Host that is not host[:port] (RFC 9112 §3.2, RFC 3986's authority without user info).
        let invalid = Self.refuse(400, "the Host header is not a host[:port]: send the host and port you reach the proxy at, such as Host: 127.0.0.1:8080")
        for host in [
            "evil.com/x", "a@b.com", #"a b"<>"#, "a b", "h?q", "h#f", "h\\x", "caf\u{E9}.example",
            // Its structure: one port of 1–65535 after the host, an IP literal closed.
            "h:80:80", "[::1", "host:", "host:99999", "host:0", "host:8o", ":8080", "[::1]x", "[::1]:", "[zz]", "[]", "h]:80", "a[b", "h:123456",
        ] {
            #expect(decide(.http1_1, [("Host", host)]) == invalid, "\(host)")
            #expect(decide(.http1_0, [("Host", host)]) == invalid, "\(host)")
        }
        for host in ["", "localhost", "127.0.0.1:8080", "[::1]:8080", "my-host.example_1~:80", "xn--caf-dma.example", "a%2Eb", "127.0.0.1:8080 ", " a", "[::1]", "[::ffff:127.0.0.1]:1", "h:65535"] {
            #expect(decide(.http1_1, [("Host", host)]) == decide(.http1_0, []), "\(host)")
        }
        guard case .forward = decide(.http1_0, []) else {
            Issue.record("an HTTP/1.0 request without Host was not forwarded")
            return
        }
    }

    /// A request from this machine (the proxy's own endpoints answer it while keys are off).
    static func local(_ uri: String) -> ProxyRequest {
        var request = ProxyRequest(head: HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: ["Host": "127.0.0.1:8080"]))
        request.fromLoopback = true
        return request
    }

    @Test("the proxy's own endpoints are answered from memory, logged but not counted, never cached; with keys off, only to this machine")
    func ownEndpoints() throws {
        for (uri, body) in [("/healthz", #"{"status":"ok"}"#), ("/readyz", #"{"status":"ready"}"#)] {
            var request = Self.local(uri)
            guard case .answer(let answer) = Self.stages().decide(&request) else {
                Issue.record("\(uri) was not answered by the proxy")
                continue
            }
            #expect(answer.status == 200)
            #expect(String(buffer: answer.body) == body)
            #expect(answer.headers["Cache-Control"] == ["no-store"])
            #expect(!answer.counted)
        }
        var metrics = Self.local("/metrics")
        guard case .answer(let answer) = Self.stages().decide(&metrics) else {
            Issue.record("/metrics was not answered by the proxy")
            return
        }
        #expect(answer.headers["Content-Type"] == ["text/plain; version=0.0.4; charset=utf-8"])
        for uri in ["/readyz", "/metrics", "/admin/status"] {
            var remote = ProxyRequest(head: HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: ["Host": "127.0.0.1:8080"]))
            guard case .answer(let refused) = Self.stages().decide(&remote) else {
                Issue.record("\(uri) from another machine was not refused")
                continue
            }
            #expect(refused.status == 403)
        }
        var health = ProxyRequest(head: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/healthz", headers: ["Host": "127.0.0.1:8080"]))
        guard case .answer(let healthy) = Self.stages().decide(&health) else {
            Issue.record("/healthz was not answered")
            return
        }
        #expect(healthy.status == 200, "/healthz is open to every address")
    }

    @Test("/readyz is 503 in Spotify's shape, logged, until a token is held")
    func notReady() {
        var request = Self.local("/readyz")
        #expect(
            Self.stages(ready: false).decide(&request)
                == Self.refuse(503, "not ready: no access token has been obtained yet", headers: [("Retry-After", "1")]))
    }

    @Test("with link rewriting off, a HEAD goes upstream as a HEAD")
    func headWithoutRewriting() {
        var request = ProxyRequest(head: HTTPRequestHead(version: .http1_1, method: .HEAD, uri: "/v1/artists/0TnOYISbd1XYRBk9myaseg", headers: ["Host": "127.0.0.1:8080"]))
        #expect(Self.stages(rewriteLinks: false).decide(&request) == Self.forward("HEAD"))
    }

    /// A stage added to the list runs in its place: the first to answer wins.
    struct Refuse: RequestStage {
        func decide(_ request: inout ProxyRequest) -> StageDecision {
            request.target == "/v1/forbidden" ? .answer(LocalAnswer(SpotifyError(status: 403, message: "forbidden"))) : .continue
        }
    }

    @Test("a stage is one type put in the list")
    func addedStage() {
        let base = Self.stages()
        let stages = RequestStages(Array(base.stages.dropLast()) + [Refuse()] + [base.stages.last!])
        #expect(stages.stages.count == 13)
        var refused = ProxyRequest(head: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/v1/forbidden", headers: ["Host": "127.0.0.1:8080"]))
        #expect(stages.decide(&refused) == Self.refuse(403, "forbidden"))
        var passed = ProxyRequest(head: HTTPRequestHead(version: .http1_1, method: .GET, uri: "/v1/artists/0TnOYISbd1XYRBk9myaseg", headers: ["Host": "127.0.0.1:8080"]))
        #expect(stages.decide(&passed) == Self.forward())
    }
}
