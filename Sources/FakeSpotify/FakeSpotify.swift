import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A fake Spotify — accounts service and Web API — on a real socket, for tests, benchmarks and
/// the offline demo. It answers from a catalog of the recorded responses in `Fixtures/`
/// (``FakeCatalog``) with Spotify's own `https://api.spotify.com` links, as the real service
/// does whatever address it is reached by; checks bearer tokens the way the real one does; and
/// has knobs the tests turn and counters they read.
///
/// Its accounts service also logs users in (``FakeAccounts``): `/authorize` agrees at once for a
/// Spotify user (the Authorization Code flow with PKCE), `/api/token` exchanges the code and
/// refreshes, rotating refresh tokens; a user token reaches `/v1/me…`, an app token does not.
public final class FakeSpotify: Sendable {
    public enum TokenMode: Sendable, Equatable {
        case normal
        /// The token endpoint answers 500 until set back.
        case serverError
        /// The token endpoint answers 400 `invalid_client`.
        case invalidClient
    }

    public struct Counters: Sendable, Equatable, Encodable {
        /// Every request to `/api/token`, whatever its grant or answer.
        public var tokenRequests = 0
        /// Token requests with `grant_type=authorization_code`, whatever the answer.
        public var authorizationCodeGrants = 0
        /// Token requests with `grant_type=refresh_token`, whatever the answer.
        public var refreshGrants = 0
        /// Requests to `/authorize`, whatever the answer.
        public var authorizeRequests = 0
        public var apiRequests = 0
        /// 401s sent for a missing, unknown, expired or revoked token.
        public var unauthorized = 0
        public var connectionsOpened = 0
        public var connectionsClosed = 0
        /// 304s sent to an `If-None-Match` that named the current ETag.
        public var notModified = 0
        /// Requests to `/v1/test/cache-control/…`.
        public var cacheControlRequests = 0
        /// 429s sent by the rolling-window limit.
        public var windowLimited = 0
    }

    /// An access token the fake issued: until when it is good, and whose it is.
    struct AccessToken: Sendable, Equatable {
        var expiry: NIODeadline
        /// The Spotify user who logged in; nil for an app (client-credentials) token.
        var user: String?
        /// The scopes the user granted (none for an app token).
        var scopes: Set<String> = []
    }

    struct State {
        /// `expires_in` of app tokens.
        var tokenLifetime: Int = 3600
        var tokenMode: TokenMode = .normal
        var tokenDelay: TimeAmount = .zero
        var tokens: [String: AccessToken] = [:]
        /// App tokens issued.
        var issued = 0
        /// Users, codes and refresh tokens of the accounts service.
        var accounts = FakeAccounts()
        var counters = Counters()
        /// Every Web API request is answered 429 with this `Retry-After` and `reason` while set.
        var rateLimit: (retryAfter: Int, reason: String?)?
        /// At most `requests` Web API requests per rolling `window`; beyond, 429 with the rest of
        /// the window as `Retry-After` (Spotify's limit is counted over a rolling 30 s).
        var rollingLimit: (requests: Int, window: TimeAmount)?
        var recentRequests: [NIODeadline] = []
        /// Added before every Web API answer (a distant Spotify).
        var latency: TimeAmount = .zero
        /// Answer as a development-mode app is answered since 2026 (``setDevelopmentMode(_:)``).
        var developmentMode = false
        /// Every Web API request is answered with this 5xx while set (an outage).
        var outage: Int?
        /// Each playlist's version: its snapshot and ETag change when it does.
        var playlistVersions: [String: Int] = [:]
        /// The playlists created by `POST …/playlists`: their owner and fields, for their `GET`.
        var createdPlaylists: [String: FakeSpotifyHandler.CreatedPlaylist] = [:]
        /// Each playlist's entries, as its item edits left them.
        var playlistEntries: [String: PlaylistEntries] = [:]
        /// What each user (by Spotify id) saved or follows.
        var libraries: [String: UserLibrary] = [:]
        /// The cover image uploaded for a playlist: its URL.
        var playlistImages: [String: String] = [:]
    }

    public let clientID: String
    public let clientSecret: String
    public let baseURL: String
    public var tokenURL: String { self.baseURL + "/api/token" }
    /// The accounts service's login page (`https://accounts.spotify.com/authorize` at Spotify).
    public var authorizeURL: String { self.baseURL + "/authorize" }
    public var port: Int { self.channel.localAddress?.port ?? 0 }

    let state = Mutex(State())
    /// The open client connections, closed by ``shutdown()``.
    let connections = Mutex<[ObjectIdentifier: any Channel]>([:])
    let fixtures: Fixtures
    private let channel: any Channel

    private init(channel: any Channel, clientID: String, clientSecret: String, fixtures: Fixtures, baseURL: String) {
        self.channel = channel
        self.clientID = clientID
        self.clientSecret = clientSecret
        self.fixtures = fixtures
        self.baseURL = baseURL
    }

    /// Starts the fake on `host:port` (port 0 picks a free one).
    public static func start(
        group: any EventLoopGroup, host: String = "127.0.0.1", port: Int = 0,
        clientID: String = "fake-client-id", clientSecret: String = "fake-client-secret"
    ) async throws -> FakeSpotify {
        let fixtures = try Fixtures.shared.get()
        let box = Mutex<FakeSpotify?>(nil)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    guard let fake = box.withLock({ $0 }) else { throw ChannelError.ioOnClosedChannel }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(NIOHTTPServerRequestAggregator(maxContentLength: 256 * 1024 * 1024))
                    try channel.pipeline.syncOperations.addHandler(FakeSpotifyHandler(fake: fake))
                    let id = ObjectIdentifier(channel)
                    fake.connections.withLock { $0[id] = channel }
                    channel.closeFuture.whenComplete { _ in _ = fake.connections.withLock { $0.removeValue(forKey: id) } }
                }
            }
            .bind(host: host, port: port).get()
        let base = "http://\(host):\(channel.localAddress!.port!)"
        let fake = FakeSpotify(
            channel: channel, clientID: clientID, clientSecret: clientSecret,
            fixtures: fixtures, baseURL: base)
        box.withLock { $0 = fake }
        return fake
    }

    /// Stops listening and closes every connection: Spotify is gone (a test may do this early to
    /// play an unreachable Spotify; doing it again changes nothing).
    public func shutdown() async throws {
        do {
            try await self.channel.close()
        } catch ChannelError.alreadyClosed {}
        for connection in self.connections.withLock({ Array($0.values) }) { try? await connection.close() }
    }

    // MARK: Knobs

    /// `expires_in` of app (client-credentials) tokens issued from now on.
    public func setTokenLifetime(seconds: Int) { self.state.withLock { $0.tokenLifetime = seconds } }
    public func setTokenMode(_ mode: TokenMode) { self.state.withLock { $0.tokenMode = mode } }
    /// Delays every token answer (a slow accounts service).
    public func setTokenDelay(_ delay: TimeAmount) { self.state.withLock { $0.tokenDelay = delay } }
    /// Answers every Web API request 429 with `Retry-After: retryAfter` (and `reason` in the
    /// body, as Spotify's quota answers carry `QUOTA_EXCEEDED`); nil ends it.
    public func setRateLimited(retryAfter: Int?, reason: String? = nil) {
        self.state.withLock { $0.rateLimit = retryAfter.map { ($0, reason) } }
    }
    /// Limits Web API requests to `requests` per rolling `window` (nil: no limit), as Spotify does:
    /// beyond it, 429 with the seconds until the oldest request leaves the window.
    public func setRollingLimit(requests: Int, window: TimeAmount) {
        self.state.withLock {
            $0.rollingLimit = (requests, window)
            $0.recentRequests = []
        }
    }
    /// Answers as Spotify answers a development-mode app (since February 2026): batch `?ids=`
    /// endpoints and an artist's top tracks 403 "Forbidden"; search and artist albums 5 a page
    /// by default, `limit` above 10 400 "Invalid limit". The fields Spotify removed for such apps
    /// (an artist's `followers`, `genres`, `popularity`, …) are still given: clients read them
    /// as required (tekore's `FullArtist` fails without them), and the proxy passes answers on
    /// as they are.
    public func setDevelopmentMode(_ on: Bool) { self.state.withLock { $0.developmentMode = on } }
    /// Answers every Web API request with `status` (a 5xx: Spotify failing) while set; nil ends it.
    public func setOutage(status: Int?) { self.state.withLock { $0.outage = status } }
    /// Delays every Web API answer by `latency`.
    public func setLatency(_ latency: TimeAmount) { self.state.withLock { $0.latency = latency } }
    /// Changes playlist `id`: a new snapshot, so its ETag no longer matches what clients hold.
    public func changePlaylist(_ id: String) { self.state.withLock { $0.playlistVersions[id, default: 0] += 1 } }
    /// Makes every access token (app and user) issued so far invalid, as if Spotify revoked them
    /// early; refresh tokens stay good.
    public func revokeAllTokens() { self.state.withLock { $0.tokens.removeAll() } }
    public var counters: Counters { self.state.withLock { $0.counters } }
    /// App (client-credentials) tokens issued so far.
    public var tokensIssued: Int { self.state.withLock { $0.issued } }

    // MARK: Knobs of the login (users)

    /// `expires_in` of user tokens (code exchanges and refreshes) issued from now on; 3600 at first.
    public func setUserTokenLifetime(seconds: Int) { self.state.withLock { $0.accounts.userTokenLifetime = seconds } }
    /// On (default; PKCE refresh tokens are single-use): a refresh spends its token and answers a new one.
    public func setRefreshTokenRotation(_ on: Bool) { self.state.withLock { $0.accounts.rotation = on } }
    /// The user took the app's access back: their refresh tokens so far get "Refresh token revoked".
    public func revokeRefreshTokens(ofUser id: String) { self.state.withLock { $0.accounts.revokeRefreshTokens(ofUser: id) } }
    /// On: `/authorize` redirects with `error=access_denied`, as when the user refuses; off at first.
    public func setAuthorizeDenied(_ denied: Bool) { self.state.withLock { $0.accounts.denied = denied } }
    /// Who agrees at `/authorize` when the request names nobody (`fake_user`); `fakeuser` at first.
    public func setAuthorizeUser(_ id: String) { self.state.withLock { $0.accounts.defaultUser = id } }
    /// User tokens (code exchanges and refreshes) issued so far.
    public var userTokensIssued: Int { self.state.withLock { $0.accounts.userTokensIssued } }
    /// Refresh tokens issued so far (one per code exchange, one per rotating refresh).
    public var refreshTokensIssued: Int { self.state.withLock { $0.accounts.refreshTokensIssued } }

    /// PKCE's `code_challenge` of `verifier`: base64url without padding of its SHA-256 (S256), for
    /// tests that play the client or check the proxy's challenge on their own.
    public static func codeChallenge(verifier: String) -> String { FakeAccounts.challenge(verifier) }
}

/// What the fake serves, built once per process (every fake shares it).
struct Fixtures: Sendable {
    let catalog: FakeCatalog
    /// `artist.json` as recorded: the `/v1/test/slow/…` answer.
    let artist: [UInt8]

    init() throws {
        self.catalog = try FakeCatalog.recorded()
        self.artist = Array(try RecordedResponses.data("artist"))
    }

    static let shared = Result<Fixtures, any Error> { try Fixtures() }
}

/// The recorded responses as they were recorded (links untouched), for tests and benchmarks.
public enum RecordedResponses {
    public static func data(_ name: String) throws -> Data {
        guard let url = Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Fixtures") else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: "Fixtures/\(name).json"])
        }
        return try Data(contentsOf: url)
    }

    /// Names (without `.json`) of every recorded file.
    public static var names: [String] {
        guard let directory = Bundle.module.resourceURL?.appendingPathComponent("Fixtures"),
            let files = try? FileManager.default.contentsOfDirectory(atPath: directory.path)
        else { return [] }
        return files.filter { $0.hasSuffix(".json") }.map { String($0.dropLast(".json".count)) }.sorted()
    }
}
