import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix

/// `spotify-proxy login`: the Authorization Code flow with PKCE. Prints the authorize URL,
/// receives the browser's return on the loopback redirect URI (or, for an HTTPS one, reads the
/// address the browser was sent to), checks `state`, exchanges the code with the verifier, reads
/// the user's id from `/v1/me`, and stores the refresh token (``UserStore``).
public struct LoginFlow: Sendable {
    public struct Settings: Sendable {
        public var label: String
        public var scopes: [String]
        public var redirectURI: RedirectURI
        public var authorizeURL: String
        public var tokenURL: String
        public var apiURL: String
        public var clientID: String
        public var clientSecret: String?
        public var store: UserStore
        /// How long to wait for the browser.
        public var timeout: Duration = .seconds(300)

        public init(
            label: String, scopes: [String], redirectURI: RedirectURI, authorizeURL: String, tokenURL: String, apiURL: String,
            clientID: String, clientSecret: String?, store: UserStore
        ) {
            self.label = label
            self.scopes = scopes
            self.redirectURI = redirectURI
            self.authorizeURL = authorizeURL
            self.tokenURL = tokenURL
            self.apiURL = apiURL
            self.clientID = clientID
            self.clientSecret = clientSecret
            self.store = store
        }
    }

    public struct LoginError: Error, Sendable, CustomStringConvertible {
        public var message: String
        public var description: String { self.message }
    }

    public let settings: Settings

    public init(settings: Settings) {
        self.settings = settings
    }

    /// The authorize URL for `pkce` and `state`.
    public func authorizeURL(pkce: PKCE, state: String) -> String {
        let query = TokenGrant.form([
            ("client_id", self.settings.clientID), ("response_type", "code"), ("redirect_uri", self.settings.redirectURI.text),
            ("code_challenge_method", PKCE.method), ("code_challenge", pkce.challenge), ("state", state),
            ("scope", self.settings.scopes.joined(separator: " ")),
        ])
        return self.settings.authorizeURL + (self.settings.authorizeURL.contains("?") ? "&" : "?") + query
    }

    /// Runs the whole login; `show` prints the URL (and instructions), `readLine` reads the
    /// browser's final address for HTTPS redirect URIs.
    public func run(
        client: UpstreamClient, group: any EventLoopGroup, show: @Sendable (String) -> Void,
        readLine: @Sendable () -> String? = { Swift.readLine() }
    ) async throws -> StoredUser {
        let pkce = PKCE.random()
        let state = PKCE.randomString(length: 32)
        let url = self.authorizeURL(pkce: pkce, state: state)
        let returned: String
        /// The page the browser waits for: nil once the user is stored, else why the login failed;
        /// and its write, awaited before the command goes on (and exits).
        var page: (outcome: EventLoopPromise<String?>, written: EventLoopFuture<Void>)?
        if let loopback = self.settings.redirectURI.loopback {
            let listener = try await CallbackListener.start(host: loopback.host, port: loopback.port, path: loopback.path, state: state, group: group)
            show("Open this URL in a browser and agree; this command waits up to \(self.settings.timeout.components.seconds / 60) minutes:")
            show(url)
            do {
                let callback = try await listener.awaitCallback(timeout: self.settings.timeout)
                (returned, page) = (callback.uri, (callback.page, callback.written))
            } catch {
                await listener.close()
                throw error
            }
            await listener.close()
        } else {
            show("Open this URL in a browser and agree, then paste here the address the browser was sent to:")
            show(url)
            guard let line = readLine(), !line.isEmpty else { throw LoginError(message: "no address was pasted; run the login again") }
            returned = line
        }
        do {
            let user = try await self.complete(returned: returned, state: state, verifier: pkce.verifier, client: client, group: group)
            page?.outcome.succeed(nil)
            try? await page?.written.get()
            return user
        } catch {
            page?.outcome.succeed((error as? LoginError)?.message ?? "\(error)")
            try? await page?.written.get()
            throw error
        }
    }

    /// The rest of the login once the browser is back: `state` checked, the code exchanged, the user stored.
    private func complete(returned: String, state: String, verifier: String, client: UpstreamClient, group: any EventLoopGroup) async throws
        -> StoredUser
    {
        let query = QueryString.parse(returned)
        // The state first: a redirect that is not this login's says nothing about it, error or not.
        guard let returned = query["state"] else {
            throw LoginError(
                message: "the address has no state: it is not the one Spotify sent the browser back to; run the login again and give that whole address")
        }
        guard returned == state else {
            throw LoginError(message: "the browser came back with a different state: refused (a stale or forged redirect); run the login again")
        }
        if let error = query["error"] {
            throw LoginError(message: "Spotify did not authorize the app (\(error)); run the login again and agree")
        }
        guard let code = query["code"], !code.isEmpty else {
            throw LoginError(message: "the browser came back without a code; run the login again")
        }
        let grant = TokenGrant(tokenURL: self.settings.tokenURL, client: client, eventLoopGroup: group)
        let answer: TokenGrant.Answer
        do {
            answer = try await self.exchange(code: code, verifier: verifier, grant: grant)
        } catch {
            throw Self.exchangeFailed(error)
        }
        guard let refreshToken = answer.refreshToken else {
            throw LoginError(message: "Spotify's answer to the code exchange had no refresh token; run the login again")
        }
        let userID = try? await self.userID(accessToken: answer.accessToken, client: client, group: group)
        let scopes = answer.scope.map { $0.split(separator: " ").map(String.init) } ?? self.settings.scopes
        let user = StoredUser(label: self.settings.label, refreshToken: refreshToken, scopes: scopes, spotifyUserID: userID, authorizedAt: Date())
        do {
            try self.settings.store.save(user)
        } catch {
            throw LoginError(message: error.message)
        }
        return user
    }

    /// A failed code exchange in words: not every failure is a refusal (the token endpoint may
    /// not have answered at all).
    static func exchangeFailed(_ error: TokenFetchError) -> LoginError {
        if case .transient = error.failure {
            return LoginError(message: "the code exchange with Spotify failed (\(error.description)); run the login again once Spotify's token endpoint answers")
        }
        return LoginError(message: "Spotify refused the code exchange (\(error.description)); run the login again")
    }

    /// The code exchange: PKCE's `client_id` and `code_verifier` in the form, plus HTTP Basic when a secret is configured.
    public func exchange(code: String, verifier: String, grant: TokenGrant) async throws(TokenFetchError) -> TokenGrant.Answer {
        let form = TokenGrant.form([
            ("grant_type", "authorization_code"), ("code", code), ("redirect_uri", self.settings.redirectURI.text),
            ("client_id", self.settings.clientID), ("code_verifier", verifier),
        ])
        let authorization = self.settings.clientSecret.map { TokenGrant.basic(clientID: self.settings.clientID, clientSecret: $0) }
        return try await grant.post(form: form, authorization: authorization)
    }

    private struct Me: Decodable { var id: String }

    private func userID(accessToken: String, client: UpstreamClient, group: any EventLoopGroup) async throws -> String {
        let response = try await client.perform(
            method: "GET", url: self.settings.apiURL + "/v1/me", headers: [("Authorization", "Bearer \(accessToken)")], body: nil,
            on: group.next())
        guard response.status == 200 else { throw LoginError(message: "GET /v1/me answered \(response.status)") }
        return try JSONDecoder().decode(Me.self, from: Data(response.body.readableBytesView)).id
    }
}

/// The loopback listener the browser returns to: the first request on the redirect path with
/// this login's `state` completes the login (its page waits for the outcome and says it);
/// another (an old tab reloaded, a probe) is told it is not this login, and the wait goes on.
final class CallbackListener: Sendable {
    /// The address the browser came back to, the page's outcome to give (nil: logged in), and
    /// the page's write, done (or failed) once the outcome is given.
    typealias Callback = (uri: String, page: EventLoopPromise<String?>, written: EventLoopFuture<Void>)

    private let channel: any Channel
    private let received: EventLoopPromise<Callback>

    private init(channel: any Channel, received: EventLoopPromise<Callback>) {
        self.channel = channel
        self.received = received
    }

    static func start(host: String, port: Int, path: String, state: String, group: any EventLoopGroup) async throws -> CallbackListener {
        let received = group.next().makePromise(of: Callback.self)
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(CallbackHandler(path: path, state: state, received: received))
                    }
                }
                .bind(host: host, port: port).get()
        } catch {
            received.fail(error)
            throw LoginFlow.LoginError(
                message: ProxyRuntime.bindProblem(
                    error, address: ProxyConfiguration.hostAndPort(host, port),
                    fix: "choose another port in --redirect-uri (and register that URI in your app's settings)"))
        }
        return CallbackListener(channel: channel, received: received)
    }

    func awaitCallback(timeout: Duration) async throws -> Callback {
        let timer = self.channel.eventLoop.scheduleTask(in: .milliseconds(Int64(timeout.milliseconds))) {
            self.received.fail(LoginFlow.LoginError(message: "no browser came back within \(timeout.components.seconds) s; run the login again"))
        }
        defer { timer.cancel() }
        return try await self.received.futureResult.get()
    }

    func close() async {
        try? await self.channel.close()
        self.received.fail(LoginFlow.LoginError(message: "the login stopped"))
    }
}

private final class CallbackHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let path: String
    private let state: String
    private let received: EventLoopPromise<CallbackListener.Callback>

    init(path: String, state: String, received: EventLoopPromise<CallbackListener.Callback>) {
        self.path = path
        self.state = state
        self.received = received
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(let head) = self.unwrapInboundIn(data) else { return }
        guard head.uri.pathWithoutQuery == self.path else {
            _ = Self.answer(context: context, version: head.version, status: .notFound, text: "Not the login's address.")
            return
        }
        guard QueryString.parse(head.uri)["state"] == self.state else {
            _ = Self.answer(
                context: context, version: head.version, status: .badRequest,
                text: "spotify-proxy: this is not the login in progress (no state, or another login's); it goes on waiting for the browser's return from the URL it printed.")
            return
        }
        let page = context.eventLoop.makePromise(of: String?.self)
        let written = context.eventLoop.makePromise(of: Void.self)
        page.futureResult.assumeIsolated().whenComplete { result in
            let write: EventLoopFuture<Void>
            switch result {
            case .success(nil):
                write = Self.answer(context: context, version: head.version, status: .ok, text: "spotify-proxy: logged in. You can close this tab.")
            case .success(let problem?):
                write = Self.answer(context: context, version: head.version, status: .badRequest, text: "spotify-proxy: the login failed: \(problem)")
            case .failure:
                write = Self.answer(context: context, version: head.version, status: .badRequest, text: "spotify-proxy: the login stopped; run it again")
            }
            write.whenComplete { _ in written.succeed() }
        }
        self.received.succeed((head.uri, page, written.futureResult))
        // A callback after the first (a second tab), or after the login gave up, has no outcome of its own.
        // (The listener's promise is on another event loop: only `page`, which is Sendable, is touched.)
        self.received.futureResult.whenComplete { result in
            switch result {
            case .success(let callback) where callback.page.futureResult === page.futureResult: break
            case .success: page.succeed("another request finished this login already")
            case .failure: page.succeed("this login is over; run spotify-proxy login again")
            }
        }
    }

    /// Writes the page and closes; the future completes once it is written (or could not be).
    private static func answer(context: ChannelHandlerContext, version: HTTPVersion, status: HTTPResponseStatus, text: String) -> EventLoopFuture<Void> {
        let page = "<!doctype html><title>spotify-proxy</title><p>\(Self.escaped(text))</p>"
        var headers = HTTPHeaders([("Content-Type", "text/html; charset=utf-8"), ("Connection", "close")])
        headers.add(name: "Content-Length", value: String(page.utf8.count))
        context.write(NIOAny(HTTPServerResponsePart.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(ByteBuffer(string: page)))), promise: nil)
        let flushed = context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)))
        flushed.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        return flushed
    }

    static func escaped(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
