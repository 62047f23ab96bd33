import FakeSpotify
import Foundation
import SpotifyProxy
import SpotifyProxyTestSupport
import Synchronization
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

/// One directory per test process, holding every `temporaryDirectory()`; removed, with all in it,
/// when the process exits.
private let temporaryRoot: URL = {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("spotify-proxy-tests-\(UUID().uuidString)")
    atexit { try? FileManager.default.removeItem(at: temporaryRoot) }
    return root
}()

/// A new empty directory for one test's files (see `temporaryRoot`).
func temporaryDirectory() throws -> URL {
    let url = temporaryRoot.appendingPathComponent(UUID().uuidString)
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
/// its output discarded, or its log written to `log`.
func launchProxy(config: URL, log: URL? = nil) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try requireProxyExecutable())
    process.arguments = ["serve", "--config", config.path]
    process.standardOutput = FileHandle.nullDevice
    if let log {
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        process.standardError = try FileHandle(forWritingTo: log)
    } else {
        process.standardError = FileHandle.nullDevice
    }
    try process.runTiedToTestProcess()
    return process
}

/// A response body as a JSON object.
func jsonObject(_ response: RawHTTPClient.Response) throws -> [String: Any] {
    try #require(JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any], "not a JSON object: \(response.text.prefix(200))")
}

/// This build's `spotify-proxy` run as a child process, its standard output and error
/// collected as they arrive (so a test can wait for a line while it runs). `Process` is used
/// from one test at a time; the collected bytes are behind a mutex.
final class CommandRun: @unchecked Sendable {
    let process = Process()
    private final class Output: Sendable {
        let state = Mutex<(stdout: [UInt8], stderr: [UInt8], closed: Int)>(([], [], 0))
    }

    private let output = Output()

    /// The environment without anything that would override the test's proxy.conf.
    static let cleanEnvironment = ProcessInfo.processInfo.environment.filter {
        !["DATABASE_URL", "SPOTIFY_CLIENT_ID", "SPOTIFY_CLIENT_SECRET"].contains($0.key)
    }

    /// `executable`: another path to the proxy's executable (a link under another name).
    init(_ arguments: [String], in directory: URL? = nil, executable: String? = nil) throws {
        self.process.executableURL = URL(fileURLWithPath: try executable ?? requireProxyExecutable())
        self.process.arguments = arguments
        self.process.environment = Self.cleanEnvironment
        if let directory { self.process.currentDirectoryURL = directory }
        let out = Pipe()
        let err = Pipe()
        self.process.standardOutput = out
        self.process.standardError = err
        self.process.standardInput = FileHandle.nullDevice
        try self.process.runTiedToTestProcess()
        // One reader thread per pipe, blocking reads until end of file: what the process wrote
        // is all here once both have ended.
        for (pipe, isError) in [(out, false), (err, true)] {
            let output = self.output
            let handle = pipe.fileHandleForReading
            Thread.detachNewThread {
                var chunk = [UInt8](repeating: 0, count: 65536)
                while true {
                    let count = chunk.withUnsafeMutableBytes { read(handle.fileDescriptor, $0.baseAddress, $0.count) }
                    if count < 0 && errno == EINTR { continue }
                    guard count > 0 else { break }
                    output.state.withLock { isError ? $0.stderr.append(contentsOf: chunk[..<count]) : $0.stdout.append(contentsOf: chunk[..<count]) }
                }
                output.state.withLock { $0.closed += 1 }
            }
        }
    }

    var stdout: String { self.output.state.withLock { String(decoding: $0.stdout, as: UTF8.self) } }
    var stderr: String { self.output.state.withLock { String(decoding: $0.stderr, as: UTF8.self) } }

    /// The exit status, once the process has exited within `seconds`; nil if it is still running.
    func exitStatus(within seconds: Double) async throws -> Int32? {
        // Exited, and both pipes read to their end (nothing of its output still in flight).
        guard try await eventually(seconds, { !self.process.isRunning && self.output.state.withLock { $0.closed == 2 } }) else { return nil }
        return self.process.terminationStatus
    }

    /// Runs to completion (at most `seconds`, then it is killed): status, stdout, stderr.
    static func run(
        _ arguments: [String], in directory: URL? = nil, executable: String? = nil, seconds: Double = 30
    ) async throws -> (status: Int32, stdout: String, stderr: String) {
        let run = try CommandRun(arguments, in: directory, executable: executable)
        guard let status = try await run.exitStatus(within: seconds) else {
            run.process.terminate()
            Issue.record("spotify-proxy \(arguments.joined(separator: " ")) still running after \(seconds) s")
            return (-1, run.stdout, run.stderr)
        }
        return (status, run.stdout, run.stderr)
    }

    deinit { if self.process.isRunning { self.process.terminate() } }
}
