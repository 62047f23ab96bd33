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
public final class FakeSpotify: Sendable {
    public enum TokenMode: Sendable, Equatable {
        case normal
        /// The token endpoint answers 500 until set back.
        case serverError
        /// The token endpoint answers 400 `invalid_client`.
        case invalidClient
    }

    public struct Counters: Sendable, Equatable {
        public var tokenRequests = 0
        public var apiRequests = 0
        /// 401s sent for a missing, unknown, expired or revoked token.
        public var unauthorized = 0
        public var connectionsOpened = 0
        public var connectionsClosed = 0
    }

    struct State {
        var tokenLifetime: Int = 3600
        var tokenMode: TokenMode = .normal
        var tokenDelay: TimeAmount = .zero
        var tokens: [String: NIODeadline] = [:]
        var issued = 0
        var counters = Counters()
    }

    public let clientID: String
    public let clientSecret: String
    public let baseURL: String
    public var tokenURL: String { self.baseURL + "/api/token" }
    public var port: Int { self.channel.localAddress?.port ?? 0 }

    let state = Mutex(State())
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

    public func shutdown() async throws {
        try await self.channel.close()
    }

    // MARK: Knobs

    /// `expires_in` of tokens issued from now on.
    public func setTokenLifetime(seconds: Int) { self.state.withLock { $0.tokenLifetime = seconds } }
    public func setTokenMode(_ mode: TokenMode) { self.state.withLock { $0.tokenMode = mode } }
    /// Delays every token answer (a slow accounts service).
    public func setTokenDelay(_ delay: TimeAmount) { self.state.withLock { $0.tokenDelay = delay } }
    /// Makes every token issued so far invalid, as if Spotify revoked them early.
    public func revokeAllTokens() { self.state.withLock { $0.tokens.removeAll() } }
    public var counters: Counters { self.state.withLock { $0.counters } }
    public var tokensIssued: Int { self.state.withLock { $0.issued } }
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
