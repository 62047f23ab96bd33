import FakeSpotify
import Logging
import NIOCore
import NIOPosix
import SpotifyProxy

/// A fake Spotify and a real proxy in front of it, both on port 0, for one test.
public final class ProxyHarness: Sendable {
    public let fake: FakeSpotify
    public let runtime: ProxyRuntime
    public let logs: LogCapture
    public let configuration: ProxyConfiguration
    private let running: Task<Void, any Error>

    public var port: Int { self.runtime.port }
    public var baseURL: String { "http://127.0.0.1:\(self.port)" }

    /// `configure` adjusts the proxy's configuration after it has been pointed at the fake.
    public static func start(
        tokenLifetime: Int = 3600,
        configure: (inout ProxyConfiguration) -> Void = { _ in },
        prepareFake: (FakeSpotify) -> Void = { _ in }
    ) async throws -> ProxyHarness {
        let group = MultiThreadedEventLoopGroup.singleton
        let fake = try await FakeSpotify.start(group: group)
        fake.setTokenLifetime(seconds: tokenLifetime)
        prepareFake(fake)
        var config = ProxyConfiguration.pointing(at: fake)
        configure(&config)
        let logs = LogCapture()
        let runtime = try await ProxyRuntime(configuration: config, eventLoopGroup: group, logger: logs.logger(label: "spotify-proxy"))
        return ProxyHarness(fake: fake, runtime: runtime, logs: logs, configuration: config)
    }

    private init(fake: FakeSpotify, runtime: ProxyRuntime, logs: LogCapture, configuration: ProxyConfiguration) {
        self.fake = fake
        self.runtime = runtime
        self.logs = logs
        self.configuration = configuration
        self.running = Task { try await runtime.run() }
    }

    public func client() async throws -> RawHTTPClient {
        try await RawHTTPClient.connect(port: self.port)
    }

    /// Gracefully stops the proxy and waits for it to return, then stops the fake.
    public func stop() async throws {
        await self.runtime.shutdown()
        try await self.running.value
        try await self.fake.shutdown()
    }

    /// Waits for the proxy's ``ProxyRuntime/run()`` to return (after a shutdown).
    public func waitUntilStopped() async throws {
        try await self.running.value
    }
}

/// Runs `body` with a fake Spotify and the real proxy in front of it (both on port 0), and
/// stops both afterwards, whether `body` returns or throws: a failed `#require` cannot leak a
/// server. `configure` adjusts the proxy's configuration after it has been pointed at the fake.
public func withProxy<T>(
    tokenLifetime: Int = 3600,
    configure: (inout ProxyConfiguration) -> Void = { _ in },
    prepareFake: (FakeSpotify) -> Void = { _ in },
    _ body: (ProxyHarness) async throws -> T
) async throws -> T {
    let harness = try await ProxyHarness.start(tokenLifetime: tokenLifetime, configure: configure, prepareFake: prepareFake)
    do {
        let result = try await body(harness)
        try await harness.stop()
        return result
    } catch {
        try? await harness.stop()
        throw error
    }
}

extension ProxyConfiguration {
    /// A proxy on port 0 in front of `fake` (its API, its accounts service, its credentials), no sink.
    public static func pointing(at fake: FakeSpotify) -> ProxyConfiguration {
        var config = ProxyConfiguration()
        config.listenPort = 0
        config.apiURL = fake.baseURL
        config.tokenURL = fake.tokenURL
        config.clientID = fake.clientID
        config.clientSecret = fake.clientSecret
        config.sink.kind = .none
        return config
    }
}
