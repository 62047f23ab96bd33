import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// The fake accounts service's memory of logins: the codes `/authorize` handed out and the
/// refresh tokens `/api/token` issued, each with its Spotify user. Pure (no sockets): the
/// handler asks it inside the fake's lock and answers what it decides.
///
/// It behaves as Spotify does (the facts sheet, §3), not as the proxy would like: a code is
/// single-use and short-lived, PKCE is checked (S256 only, verifier 43–128 unreserved
/// characters), plain-HTTP redirect URIs are refused unless to a loopback IP literal, and a
/// rotating refresh token works once.
struct FakeAccounts: Sendable {
    /// An accounts-service error (RFC 6749), `{"error":…,"error_description":…}`, which is not
    /// the Web API's `{"error":{"status":…,"message":…}}`.
    struct Refusal: Error, Sendable, Equatable {
        var error: String
        var description: String

        init(_ error: String, _ description: String) {
            self.error = error
            self.description = description
        }

        var body: [UInt8] {
            var body = Array(#"{"error":"#.utf8) + FakeCatalog.jsonString(self.error)
            body += Array(#","error_description":"#.utf8) + FakeCatalog.jsonString(self.description)
            body.append(UInt8(ascii: "}"))
            return body
        }

        static let invalidClient = Refusal("invalid_client", "Invalid client")
        static let invalidClientSecret = Refusal("invalid_client", "Invalid client secret")
        static let invalidCode = Refusal("invalid_grant", "Invalid authorization code")
        static let invalidRedirectURI = Refusal("invalid_grant", "Invalid redirect URI")
        static let incorrectVerifier = Refusal("invalid_grant", "code_verifier was incorrect")
        static let invalidRefreshToken = Refusal("invalid_grant", "Invalid refresh token")
        static let revokedRefreshToken = Refusal("invalid_grant", "Refresh token revoked")
        static let unsupportedGrantType = Refusal("unsupported_grant_type", "grant_type parameter is missing")
        static let onlyPOST = Refusal("invalid_request", "Only POST")
        static let onlyGET = Refusal("invalid_request", "Only GET")
        static let outage = Refusal("server_error", "fake outage")
        static func invalidRequest(_ description: String) -> Refusal { Refusal("invalid_request", description) }
    }

    /// What `/authorize` remembers about a code until it is exchanged.
    struct Code: Sendable, Equatable {
        var clientID: String
        var redirectURI: String
        var challenge: String
        var scope: String
        var user: String
        var expiry: NIODeadline
    }

    /// A refresh token: whose, for which scopes, and whether the user took the access back.
    struct RefreshToken: Sendable, Equatable {
        var user: String
        var scope: String
        var revoked = false
    }

    /// A user token to issue: the handler makes the access token, this says for whom.
    struct Grant: Sendable, Equatable {
        var user: String
        var scope: String
        /// The refresh token to answer; nil when a refresh without rotation keeps the old one.
        var refreshToken: String?
    }

    /// `/authorize`'s answer.
    enum Authorization: Sendable, Equatable {
        /// 302 Found to this `Location` (the code, or `error=access_denied`).
        case redirect(String)
        /// 400 with this refusal (the request cannot be redirected safely).
        case refused(Refusal)
    }

    /// RFC 6749 §4.1.2 recommends at most 10 minutes; an old code is as unknown as a wrong one.
    static let codeLifetime: TimeAmount = .minutes(10)

    var codes: [String: Code] = [:]
    var refreshTokens: [String: RefreshToken] = [:]
    /// Who agrees at `/authorize` when the request does not say (`fake_user`).
    var defaultUser = "fakeuser"
    /// The user refuses at `/authorize`.
    var denied = false
    /// `expires_in` of user tokens.
    var userTokenLifetime = 3600
    /// A refresh spends its refresh token and answers a new one (PKCE refresh tokens are single-use).
    var rotation = true
    var userTokensIssued = 0
    var refreshTokensIssued = 0

    // MARK: Authorize

    /// `GET /authorize?client_id=…&response_type=code&redirect_uri=…&code_challenge_method=S256`
    /// `&code_challenge=…&state=…&scope=…`, answered at once as if the user (`fake_user`, else
    /// ``defaultUser``) agreed, or refused when ``denied``. Problems a redirect cannot carry
    /// safely (wrong client, bad redirect URI, no PKCE) are a 400 on the page itself.
    mutating func authorize(_ query: [String: String], clientID: String, now: NIODeadline) -> Authorization {
        guard query["client_id"] == clientID else { return .refused(.invalidClient) }
        guard query["response_type"] == "code" else {
            return .refused(.invalidRequest("response_type must be code"))
        }
        guard let redirectURI = query["redirect_uri"], !redirectURI.isEmpty else {
            return .refused(.invalidRequest("Missing redirect_uri"))
        }
        if let problem = Self.redirectProblem(redirectURI) { return .refused(.invalidRequest(problem)) }
        guard query["code_challenge_method"] == "S256" else {
            return .refused(.invalidRequest("code_challenge_method must be S256"))
        }
        guard let challenge = query["code_challenge"], !challenge.isEmpty else {
            return .refused(.invalidRequest("Missing code_challenge"))
        }
        var parameters: [(String, String)]
        if self.denied {
            parameters = [("error", "access_denied")]
        } else {
            // Forget codes nobody exchanged in time.
            self.codes = self.codes.filter { $0.value.expiry > now }
            let user = query["fake_user"].flatMap { $0.isEmpty ? nil : $0 } ?? self.defaultUser
            let code = Self.randomToken()
            self.codes[code] = Code(
                clientID: clientID, redirectURI: redirectURI, challenge: challenge, scope: query["scope"] ?? "", user: user,
                expiry: now + Self.codeLifetime)
            parameters = [("code", code)]
        }
        if let state = query["state"] { parameters.append(("state", state)) }
        return .redirect(Self.appending(parameters, to: redirectURI))
    }

    /// Why Spotify would refuse `uri` as a redirect URI, or nil. Since 2025-11-27 it takes plain
    /// HTTP only to a loopback IP literal (`http://127.0.0.1:PORT/…`, `http://[::1]:PORT/…`),
    /// not `localhost`; other schemes are the app's business. A redirect URI is absolute and
    /// has no fragment (RFC 6749 §3.1.2).
    static func redirectProblem(_ uri: String) -> String? {
        guard !uri.contains("#"), let components = URLComponents(string: uri), let scheme = components.scheme, !scheme.isEmpty
        else { return "Invalid redirect URI" }
        guard scheme.lowercased() == "http" else { return nil }
        let host = components.host ?? ""
        return host == "127.0.0.1" || host == "[::1]" || host == "::1" ? nil : "Insecure redirect URI"
    }

    /// `uri` with `parameters` added to its query, each value percent-encoded.
    static func appending(_ parameters: [(String, String)], to uri: String) -> String {
        let query = parameters.map { $0.0 + "=" + FakeCatalog.percentEncoded($0.1) }.joined(separator: "&")
        let separator: String
        if !uri.contains("?") {
            separator = "?"
        } else if uri.hasSuffix("?") || uri.hasSuffix("&") {
            separator = ""
        } else {
            separator = "&"
        }
        return uri + separator + query
    }

    // MARK: Token grants

    /// `grant_type=authorization_code` (the client already checked by ``clientRefusal``). A code
    /// is spent by the first exchange that names it, even a refused one: a retried exchange gets
    /// `invalid_grant`, as from Spotify.
    mutating func exchange(_ form: [String: String], now: NIODeadline) -> Result<Grant, Refusal> {
        guard let value = form["code"], let code = self.codes.removeValue(forKey: value), code.expiry > now else {
            return .failure(.invalidCode)
        }
        if let clientID = form["client_id"], clientID != code.clientID { return .failure(.invalidClient) }
        guard form["redirect_uri"] == code.redirectURI else { return .failure(.invalidRedirectURI) }
        guard let verifier = form["code_verifier"], Self.isVerifier(verifier), Self.challenge(verifier) == code.challenge else {
            return .failure(.incorrectVerifier)
        }
        let refreshToken = self.issueRefreshToken(user: code.user, scope: code.scope)
        return .success(Grant(user: code.user, scope: code.scope, refreshToken: refreshToken))
    }

    /// `grant_type=refresh_token` (the client already checked). With ``rotation`` the token is
    /// spent and a new one answered; without, none is answered and the old one stays good.
    mutating func refresh(_ form: [String: String]) -> Result<Grant, Refusal> {
        guard let value = form["refresh_token"], let token = self.refreshTokens[value] else {
            return .failure(.invalidRefreshToken)
        }
        guard !token.revoked else { return .failure(.revokedRefreshToken) }
        var next: String? = nil
        if self.rotation {
            self.refreshTokens[value] = nil
            next = self.issueRefreshToken(user: token.user, scope: token.scope)
        }
        return .success(Grant(user: token.user, scope: token.scope, refreshToken: next))
    }

    mutating func revokeRefreshTokens(ofUser id: String) {
        for (value, token) in self.refreshTokens where token.user == id {
            self.refreshTokens[value]?.revoked = true
        }
    }

    private mutating func issueRefreshToken(user: String, scope: String) -> String {
        let value = Self.randomToken()
        self.refreshTokens[value] = RefreshToken(user: user, scope: scope)
        self.refreshTokensIssued += 1
        return value
    }

    /// Who the client is for the user grants: PKCE clients send `client_id` in the form and no
    /// secret; the plain code flow sends the app's Basic header (then a `client_id` in the form,
    /// if any, must agree); a `client_secret` in the form must be the right one. Nil when all is
    /// well.
    static func clientRefusal(authorization: String?, form: [String: String], clientID: String, clientSecret: String) -> Refusal? {
        if let authorization {
            guard authorization == Self.basic(clientID: clientID, clientSecret: clientSecret) else { return .invalidClient }
            if let formID = form["client_id"], formID != clientID { return .invalidClient }
            return nil
        }
        guard form["client_id"] == clientID else { return .invalidClient }
        if let secret = form["client_secret"], secret != clientSecret { return .invalidClientSecret }
        return nil
    }

    /// The app's `Authorization` header value.
    static func basic(clientID: String, clientSecret: String) -> String {
        "Basic " + Data("\(clientID):\(clientSecret)".utf8).base64EncodedString()
    }

    // MARK: PKCE

    /// RFC 7636 §4.1: 43–128 characters, letters, digits, `-`, `.`, `_`, `~`.
    static func isVerifier(_ text: String) -> Bool {
        guard (43...128).contains(text.utf8.count) else { return false }
        return text.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                return true
            default:
                return false
            }
        }
    }

    /// S256: base64url, without padding, of SHA-256 of the verifier.
    static func challenge(_ verifier: String) -> String {
        Self.base64URL(Data(SHA256.hash(data: Data(verifier.utf8))))
    }

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// 32 random bytes, base64url (43 characters), as opaque as Spotify's codes and tokens.
    static func randomToken() -> String {
        Self.base64URL(Data((0..<32).map { _ in UInt8.random(in: 0...255) }))
    }

    // MARK: Bodies

    /// A user token answer, keys as in Spotify's code exchange (`token-authorization-code.json`);
    /// `refresh_token` only when one is issued.
    static func tokenBody(accessToken: String, scope: String, lifetime: Int, refreshToken: String?) -> [UInt8] {
        var body = Array(#"{"access_token":"#.utf8) + FakeCatalog.jsonString(accessToken)
        body += Array(#","token_type":"Bearer","scope":"#.utf8) + FakeCatalog.jsonString(scope)
        body += Array(#","expires_in":\#(lifetime)"#.utf8)
        if let refreshToken {
            body += Array(#","refresh_token":"#.utf8) + FakeCatalog.jsonString(refreshToken)
        }
        body.append(UInt8(ascii: "}"))
        return body
    }

    /// `GET /v1/me`: Spotify's private user object; `country`, `product` and `explicit_content`
    /// only for a token granted `user-read-private` (`account`), `email` only for one granted
    /// `user-read-email` (Spotify's reference of the user object says so of each); `followers`
    /// not for a development-mode app.
    static func privateUser(_ id: String, account: Bool = true, email: Bool = true, followers: Bool = true) -> [UInt8] {
        Self.user(id, isPrivate: true, account: account, email: email, followers: followers)
    }

    /// `GET /v1/users/{id}`: the public user object, without the private one's account fields.
    static func publicUser(_ id: String) -> [UInt8] { Self.user(id, isPrivate: false) }

    private static func user(_ id: String, isPrivate: Bool, account: Bool = false, email: Bool = false, followers: Bool = true) -> [UInt8] {
        let escaped = FakeCatalog.percentEncoded(id)
        var body = Array("{".utf8)
        if isPrivate {
            body += Array(#""account_id":"#.utf8) + FakeCatalog.jsonString(Self.accountID(of: id)) + Array((account ? #","country":"SE","# : ",").utf8)
        }
        body += Array(#""display_name":"#.utf8) + FakeCatalog.jsonString(id)
        if isPrivate {
            if email { body += Array(#","email":"#.utf8) + FakeCatalog.jsonString(id + "@example.com") }
            if account { body += Array(#","explicit_content":{"filter_enabled":false,"filter_locked":false}"#.utf8) }
        }
        body += Array(#","external_urls":{"spotify":"#.utf8) + FakeCatalog.jsonString("https://open.spotify.com/user/" + escaped)
        body += Array((followers ? #"},"followers":{"href":null,"total":0},"href":"# : #"},"href":"#).utf8)
        body += FakeCatalog.jsonString(FakeCatalog.apiBase + "/users/" + escaped)
        body += Array(#","id":"#.utf8) + FakeCatalog.jsonString(id)
        body += Array(#","images":[],"#.utf8)
        if isPrivate && account { body += Array(#""product":"premium","#.utf8) }
        body += Array(#""type":"user","uri":"#.utf8) + FakeCatalog.jsonString("spotify:user:" + id)
        body.append(UInt8(ascii: "}"))
        return body
    }
}

extension FakeAccounts {
    /// `account_id` (Spotify's spec since 2026-05-30): a stable, pseudonymous id of ten base-62
    /// characters, here derived from the user's id.
    static func accountID(of id: String) -> String {
        let digits = FakeCatalog.base62Digits
        var value = FNV1a.hash(id.utf8)
        var out = ""
        for _ in 0..<10 {
            out.append(digits[Int(value % 62)])
            value /= 62
        }
        return out
    }
}

// MARK: The accounts service's routes

extension FakeSpotifyHandler {
    /// `GET /authorize`: the login page, which agrees (or refuses) at once.
    func authorize(_ request: NIOHTTPServerRequestFull, context: ChannelHandlerContext) {
        let clientID = self.fake.clientID
        let query = Self.query(request.head.uri)
        let isGET = request.head.method == .GET
        let outcome: FakeAccounts.Authorization? = self.fake.state.withLock { state in
            state.counters.authorizeRequests += 1
            guard isGET else { return nil }
            return state.accounts.authorize(query, clientID: clientID, now: .now())
        }
        switch outcome {
        case .redirect(let location)?:
            let headers = HTTPHeaders([
                ("Location", location), ("Cache-Control", "no-cache, no-store, must-revalidate"), ("Content-Length", "0"),
            ])
            self.send(status: .found, headers: headers, body: [], context: context)
        case .refused(let refusal)?:
            self.accountsAnswer(.badRequest, refusal.body, context: context)
        case nil:
            self.accountsAnswer(.methodNotAllowed, FakeAccounts.Refusal.onlyGET.body, context: context)
        }
    }

    /// `POST /api/token`, form-encoded: `client_credentials` (Basic header), and for a user's
    /// login `authorization_code` (PKCE) and `refresh_token`. The knobs (mode, delay) apply to
    /// every grant.
    func token(_ request: NIOHTTPServerRequestFull, context: ChannelHandlerContext) {
        let isPOST = request.head.method == .POST
        let form: [String: String] = isPOST ? FakeCatalog.queryItems(request.body.map { String(buffer: $0) } ?? "") : [:]
        let grant = form["grant_type"] ?? ""
        let (mode, delay) = self.fake.state.withLock { state in
            state.counters.tokenRequests += 1
            if grant == "authorization_code" { state.counters.authorizationCodeGrants += 1 }
            if grant == "refresh_token" { state.counters.refreshGrants += 1 }
            return (state.tokenMode, state.tokenDelay)
        }
        let authorization = request.head.headers.first(name: "authorization")
        let answer: (HTTPResponseStatus, [UInt8])
        if !isPOST {
            answer = (.methodNotAllowed, FakeAccounts.Refusal.onlyPOST.body)
        } else if mode == .serverError {
            answer = (.internalServerError, FakeAccounts.Refusal.outage.body)
        } else if mode == .invalidClient {
            answer = (.badRequest, FakeAccounts.Refusal.invalidClient.body)
        } else if grant == "client_credentials" {
            answer = self.clientCredentials(authorization: authorization, form: form)
        } else if grant == "authorization_code" || grant == "refresh_token" {
            answer = self.userGrant(grant, form: form, authorization: authorization)
        } else {
            let refusal = FakeAccounts.clientRefusal(
                authorization: authorization, form: form, clientID: self.fake.clientID, clientSecret: self.fake.clientSecret)
            answer = (.badRequest, (refusal ?? .unsupportedGrantType).body)
        }
        let reply = {
            self.accountsAnswer(answer.0, answer.1, context: context)
        }
        if delay > .zero {
            context.eventLoop.assumeIsolated().scheduleTask(in: delay) { reply() }
        } else {
            reply()
        }
    }

    /// An app token for the app's Basic header, or its `client_id` and `client_secret` in the
    /// form (RFC 6749 §2.3.1; Spotify takes both).
    private func clientCredentials(authorization: String?, form: [String: String]) -> (HTTPResponseStatus, [UInt8]) {
        let refusal: FakeAccounts.Refusal? =
            authorization == nil && form["client_secret"] == nil
            ? .invalidClient
            : FakeAccounts.clientRefusal(authorization: authorization, form: form, clientID: self.fake.clientID, clientSecret: self.fake.clientSecret)
        if let refusal { return (.badRequest, refusal.body) }
        let token = "fake-at-" + UUID().uuidString
        let lifetime: Int = self.fake.state.withLock { state in
            state.issued += 1
            state.tokens[token] = FakeSpotify.AccessToken(expiry: .now() + .seconds(Int64(state.tokenLifetime)), user: nil)
            return state.tokenLifetime
        }
        return (.ok, Array(#"{"access_token":"\#(token)","token_type":"Bearer","expires_in":\#(lifetime),"scope":""}"#.utf8))
    }

    /// A user token from a code or a refresh token, or Spotify's refusal.
    private func userGrant(_ grant: String, form: [String: String], authorization: String?) -> (HTTPResponseStatus, [UInt8]) {
        if let refusal = FakeAccounts.clientRefusal(
            authorization: authorization, form: form, clientID: self.fake.clientID, clientSecret: self.fake.clientSecret)
        {
            return (.badRequest, refusal.body)
        }
        let isCode = grant == "authorization_code"
        let answer: (HTTPResponseStatus, [UInt8]) = self.fake.state.withLock { state in
            let now = NIODeadline.now()
            let result = isCode ? state.accounts.exchange(form, now: now) : state.accounts.refresh(form)
            switch result {
            case .failure(let refusal):
                return (.badRequest, refusal.body)
            case .success(let issued):
                let token = "fake-at-" + UUID().uuidString
                let lifetime = state.accounts.userTokenLifetime
                state.tokens[token] = FakeSpotify.AccessToken(
                    expiry: now + .seconds(Int64(lifetime)), user: issued.user, scopes: Set(issued.scope.split(separator: " ").map(String.init)))
                state.accounts.userTokensIssued += 1
                let body = FakeAccounts.tokenBody(
                    accessToken: token, scope: issued.scope, lifetime: lifetime, refreshToken: issued.refreshToken)
                return (.ok, body)
            }
        }
        return answer
    }

    /// An accounts-service answer: JSON that no cache may keep (as Spotify's token answers).
    private func accountsAnswer(_ status: HTTPResponseStatus, _ body: [UInt8], context: ChannelHandlerContext) {
        var headers = HTTPHeaders([("Content-Type", "application/json"), ("Cache-Control", "no-cache, no-store, must-revalidate")])
        headers.add(name: "Content-Length", value: String(body.count))
        self.send(status: status, headers: headers, body: body, context: context)
    }
}
