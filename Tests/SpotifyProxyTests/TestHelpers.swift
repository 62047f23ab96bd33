import Foundation
import SpotifyProxyTestSupport
import Testing

/// Polls `condition` every 20 ms for at most `seconds`: for state that changes in another
/// process (PostgreSQL, the proxy), where no event can be injected.
func eventually(_ seconds: Double = 20, _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}

func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("spotify-proxy-test-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

/// The `spotify-proxy` executable of this build, for tests that need the proxy in its own
/// process (kill -9, its own file descriptors, the CLI).
let proxyExecutable = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../../.build/debug/spotify-proxy").standardized.path

func requireProxyExecutable() throws -> String {
    try #require(
        FileManager.default.isExecutableFile(atPath: proxyExecutable),
        "build the executable first (scripts/test does: swift build --build-tests)")
    return proxyExecutable
}

/// Writes a `proxy.conf` that points the proxy at `fake` and listens on `port`; `spotify` adds
/// lines to the `[spotify]` section, `sections` appends further sections.
func writeProxyConfig(in directory: URL, port: Int, fake: FakeSpotify, spotify: String = "", sections: String) throws -> URL {
    let config = directory.appendingPathComponent("proxy.conf")
    try """
        [server]
        listen = "127.0.0.1:\(port)"
        [spotify]
        api_url = "\(fake.baseURL)"
        token_url = "\(fake.tokenURL)"
        client_id = "\(fake.clientID)"
        client_secret = "\(fake.clientSecret)"
        \(spotify)
        \(sections)
        """.write(to: config, atomically: true, encoding: .utf8)
    return config
}

/// Starts `spotify-proxy serve --config config` (this build's executable) as a child process,
/// its output discarded.
func launchProxy(config: URL) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try requireProxyExecutable())
    process.arguments = ["serve", "--config", config.path]
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    return process
}
