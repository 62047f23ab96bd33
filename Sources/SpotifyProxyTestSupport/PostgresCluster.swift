import Foundation

/// A throwaway PostgreSQL cluster of a test's own, on a free loopback port, that the test can
/// stop and start (fault tests). Needs the server binaries (`apt-get install postgresql`,
/// which `scripts/test` does).
public final class PostgresCluster: Sendable {
    public let port: Int
    public let directory: String
    public var url: String { "postgres://postgres@127.0.0.1:\(self.port)/postgres?sslmode=disable" }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// The environment's shared test database (`scripts/test` starts it), if any.
    public static var sharedURL: String? { ProcessInfo.processInfo.environment["SPOTIFY_PROXY_TEST_DATABASE_URL"] }
    /// In CI a missing database fails the Postgres tests instead of skipping them.
    public static var required: Bool { ProcessInfo.processInfo.environment["CI"] != nil }

    public static var binaries: String? {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted()
        return versions.last.map { "\(root)/\($0)/bin" }
    }

    /// Runs `body` with a cluster of its own, destroyed afterwards whether `body` returns or throws.
    public static func with<T>(_ body: (PostgresCluster) async throws -> T) async throws -> T {
        let cluster = try await Self.start()
        do {
            let result = try await body(cluster)
            await cluster.destroy()
            return result
        } catch {
            await cluster.destroy()
            throw error
        }
    }

    public static func start() async throws -> PostgresCluster {
        guard let bin = Self.binaries else { throw Failure(description: "PostgreSQL server binaries not found: apt-get install postgresql (scripts/test does)") }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("spotify-proxy-pg-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if getuid() == 0 { try await Self.run("/bin/chown", ["postgres", directory], asPostgres: false) }
        try await Self.run("\(bin)/initdb", ["-D", "\(directory)/data", "-U", "postgres", "-A", "trust", "--no-sync"])
        let cluster = PostgresCluster(port: try LoopbackPort.free(), directory: directory)
        try await cluster.startServer()
        return cluster
    }

    private init(port: Int, directory: String) {
        self.port = port
        self.directory = directory
    }

    /// Starts (again) the stopped server, on the same port and data.
    public func startServer() async throws {
        do {
            try await self.startServerOnce()
        } catch {
            let log = (try? String(contentsOfFile: "\(self.directory)/log", encoding: .utf8)) ?? ""
            throw Failure(description: "\(error)\nserver log:\n\(log.suffix(2000))")
        }
    }

    private func startServerOnce() async throws {
        try await Self.run(
            "\(Self.binaries!)/pg_ctl",
            ["-D", "\(self.directory)/data", "-l", "\(self.directory)/log", "-w", "-o",
             "-c listen_addresses=127.0.0.1 -p \(self.port) -k \(self.directory) -c fsync=off -c max_files_per_process=\(Self.maxFiles)",
             "start"])
    }

    /// The server inherits every descriptor the test process has open (hundreds, with the other
    /// suites' sockets) and counts them against `max_files_per_process` (1000) and the soft
    /// descriptor limit: with too many it refuses to start ("insufficient file descriptors", seen
    /// in CI). Both are raised so that what it inherited leaves it room.
    static let maxFiles = 10_000

    /// Stops the server (fast shutdown: open connections are cut), keeping the data.
    public func stopServer() async throws {
        try await Self.run("\(Self.binaries!)/pg_ctl", ["-D", "\(self.directory)/data", "-m", "fast", "-w", "stop"])
    }

    public func destroy() async {
        try? await self.stopServer()
        try? FileManager.default.removeItem(atPath: self.directory)
    }

    private static func run(_ tool: String, _ arguments: [String], asPostgres: Bool = true) async throws {
        // PostgreSQL refuses to run as root.
        if asPostgres && getuid() == 0 {
            // runuser's PAM session lowers the soft descriptor limit to 1024; the server inherits
            // the test process's hundreds of descriptors (see maxFiles) and needs room beside them.
            try await ChildProcess.run(
                "/usr/sbin/runuser", ["-u", "postgres", "--", "/bin/sh", "-c", #"ulimit -n "$(ulimit -Hn)"; exec "$0" "$@""#, tool] + arguments)
        } else {
            try await ChildProcess.run(tool, arguments)
        }
    }
}
