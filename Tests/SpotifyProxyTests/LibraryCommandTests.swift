import FakeSpotify
import Foundation
import Logging
import PostgresNIO
import SpotifyCatalog
@testable import SpotifyProxy
import SpotifyProxyTestSupport
import Testing

@Suite("spotify-proxy migrate and library")
struct LibraryCommandTests {
    static let binary = proxyExecutable

    /// Runs the built executable; returns its exit status and standard output.
    func run(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        let run = try await CommandRun.run(arguments)
        return (run.status, run.stdout)
    }

    @Test("migrate applies the schema once; library prints what the tee stored, as a table and as JSON")
    func migrateAndLibrary() async throws {
        try #require(FileManager.default.isExecutableFile(atPath: Self.binary), "build the executable first (scripts/test does)")
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let database = directory.appendingPathComponent("library.sqlite").path
        let config = directory.appendingPathComponent("proxy.conf").path
        try "[sink]\nkind = \"sqlite\"\npath = \"\(database)\"\n".write(toFile: config, atomically: true, encoding: .utf8)

        let first = try await self.run(["migrate", "--config", config])
        #expect(first.status == 0)
        #expect(first.output.contains("applied migrations: 1"))
        #expect(try await self.run(["migrate", "--config", config]).output.contains("schema is up to date"))

        let sink = try SQLiteSink(path: database)
        try await sink.write(try EntityExtractor.extract(from: try RecordedResponses.data("album")))
        await sink.close()

        let table = try await self.run(["library", "tracks", "--name", "CURTAIN", "--config", config])
        #expect(table.status == 0)
        #expect(table.output.contains("Curtain Fall"))
        #expect(table.output.contains("(1 track)\n"))
        #expect(!table.output.contains("more are stored"))
        let firstTwo = try await self.run(["library", "tracks", "--limit", "2", "--config", config])
        #expect(firstTwo.output.contains("(2 tracks)\n(more are stored than --limit 2"), "\(firstTwo.output)")
        let json = try await self.run(["library", "albums", "--json", "--config", config])
        let row = try #require(try JSONValue.parse(Data(json.output.utf8))["name"]?.string)
        #expect(row == "SINGLARITY")
        #expect(try await self.run(["library", "songs", "--config", config]).status != 0)
    }

    @Test("migrate and library with a sink path they cannot use: exit 2 and the key to fix, as check-config says it (not Foundation's error)", arguments: ["jsonl", "sqlite"])
    func unusableSinkPath(kind: String) async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("proxy.conf").path
        try "[sink]\nkind = \"\(kind)\"\npath = \"\(directory.path)\"\n".write(toFile: config, atomically: true, encoding: .utf8)
        for arguments in [["migrate"], ["library", "tracks"]] {
            let run = try await CommandRun.run(arguments + ["--config", config])
            #expect(run.status == 2, "\(arguments): \(run.stderr)")
            #expect(run.stderr.contains("sink.path = \"\(directory.path)\" is a directory"), "\(arguments): \(run.stderr)")
            #expect(!run.stderr.contains("NSCocoaErrorDomain"), "\(arguments): \(run.stderr)")
        }
    }

    @Test("migrate and library against PostgreSQL: no warning from the pool (its queries wait for it to run)")
    func postgresQuiet() async throws {
        guard let admin = PostgresCluster.sharedURL else {
            #expect(!PostgresCluster.required, "SPOTIFY_PROXY_TEST_DATABASE_URL is not set in CI")
            return
        }
        let database = try await PostgresTestDatabase.create(adminURL: admin)
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("proxy.conf").path
        try "[sink]\nkind = \"postgres\"\nurl = \"\(database.url)\"\n".write(toFile: config, atomically: true, encoding: .utf8)
        for arguments in [["migrate"], ["library", "artists"], ["library", "tracks", "--json"]] {
            let run = try await CommandRun.run(arguments + ["--config", config])
            #expect(run.status == 0, "\(arguments): \(run.stderr)")
            #expect(!run.stderr.contains("warning"), "\(arguments): \(run.stderr)")
        }
        try await database.drop()
    }

    @Test("the sink's pool filter drops postgres-nio's warning of a lease before run() only once run() was called, and knows its wording")
    func leaseRaceFilter() async throws {
        let capture = LogCapture()
        let start = PostgresSink.StartSignal()
        var logger = capture.logger(level: .warning)
        logger.handler = PostgresSink.LeaseRaceFilter(logger.handler, start: start)
        logger.warning("\(PostgresSink.LeaseRaceFilter.message)")
        start.signal()
        logger.warning("\(PostgresSink.LeaseRaceFilter.message)")
        logger.warning("another warning")
        #expect(capture.all == ["warning \(PostgresSink.LeaseRaceFilter.message) ", "warning another warning "])

        // postgres-nio's own line, from a query asked of a client that is not running.
        let real = LogCapture()
        let client = PostgresClient(
            configuration: .init(host: "127.0.0.1", port: 9, username: "nobody", password: nil, database: nil, tls: .disable),
            backgroundLogger: real.logger(level: .warning))
        let query = Task { try await client.query("SELECT 1") }
        while real.all.isEmpty { await Task.yield() }
        let logged = real.all
        // Then the query is ended by the pool's shutdown: a cancel alone may come between the
        // warning and postgres-nio queuing the lease, which then waits for ever (a full run hung
        // on it once). A pool run and stopped fails whatever waits for it.
        query.cancel()
        let run = Task { await client.run() }
        run.cancel()
        _ = await query.result
        _ = await run.result
        #expect(logged == ["warning \(PostgresSink.LeaseRaceFilter.message) "])
    }
}
