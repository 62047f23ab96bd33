import FakeSpotify
import Foundation
import Logging
import SpotifyCatalog
@testable import SpotifyProxy
import SpotifyProxyTestSupport
import Testing

/// What the tee stores for one album lookup (`album.json`): counted by reading the file — one
/// album by one artist (Epica) with 11 tracks, each by that artist.
let albumLookupCounts = ["artists": 1, "albums": 1, "tracks": 11, "album_artists": 1, "track_artists": 11]

/// Runs the proxy with `sink` against the fake, looks up one album through it, stops it
/// (which drains the tee) and returns what the sink then holds.
func teeAlbumLookup(_ configureSink: (inout SinkSettings) -> Void) async throws -> (counts: [String: Int], album: StoredEntity?, stats: TeeWriter.Stats?) {
    let spool = try temporaryDirectory()
    defer { try? FileManager.default.removeItem(at: spool) }
    let harness = try await withProxy(configure: { config in
        config.sink.kind = .sqlite
        config.sink.spoolDirectory = spool.path
        // The tee's own deduplication is the subject: with the cache on, the second answer would
        // be a hit that never reaches the tee.
        config.cache.maxBytes = 0
        configureSink(&config.sink)
    }) { harness in
        let client = try await harness.client()
        var response = try await client.request("GET", "/v1/albums/3IqzqH6ShrRtie9Yd2ODyG", headers: [("Accept-Encoding", "gzip")])
        #expect(response.status == 200)
        // The same answer again: parsed once (deduplicated), stored once.
        response = try await client.request("GET", "/v1/albums/3IqzqH6ShrRtie9Yd2ODyG")
        #expect(response.status == 200)
        // The client's copy has the proxy's links; the tee must keep Spotify's.
        #expect(response.text.contains("\"http://127.0.0.1/v1/albums/3IqzqH6ShrRtie9Yd2ODyG\""))
        await client.close()
        return harness
    }
    let stats = harness.runtime.tee?.stats
    let sink = try #require(try harness.configuration.sink.makeSink(logger: Logger(label: "test")))
    let (counts, album) = try await withRunningSink(sink) {
        (try await sink.counts(), try await sink.list(.album, nameContains: nil, limit: 10).first)
    }
    await sink.close()
    return (counts, album, stats)
}

@Suite("Sinks end to end through the proxy")
struct SinkTests {
    @Test("a burst of new entities is spooled in batches of batch_size, not in one merged batch of all of it (each segment, one per batch while the database is down, holds at most batch_size and one answer's entities)")
    func burstMakesBatchesOfBatchSize() async throws {
        let spool = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: spool) }
        let answers = 60
        try await withProxy(configure: { config in
            // Nothing listens there: every batch stays in the spool, in a segment of its own.
            config.sink.kind = .postgres
            config.sink.url = "postgres://nobody:nothing@127.0.0.1:\(try! LoopbackPort.free())/none?sslmode=disable"
            config.sink.spoolDirectory = spool.path
            config.sink.batchSize = 100
            // Each failed call in the tee waits for no more than this.
            config.sink.writeTimeout = .milliseconds(300)
            config.sink.connectTimeout = .milliseconds(300)
            config.cache.maxBytes = 0
        }) { harness in
            // 60 answers of 50 distinct generated artists each (17 KB), pipelined: the tee's
            // inbox passes 1 MiB and is drained in one go, while the database is down.
            let client = try await harness.client()
            let pipelined = (0..<answers).map { "GET /v1/test/artists/\($0 + 1) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" }.joined()
            try await client.send(pipelined, requests: answers)
            for _ in 0..<answers { #expect(try await client.response().status == 200) }
            await client.close()
        }
        var sizes: [Int] = []
        for name in try FileManager.default.contentsOfDirectory(atPath: spool.path).sorted() where name.hasPrefix("spool-") {
            let data = try Data(contentsOf: spool.appendingPathComponent(name))
            for line in data.split(separator: UInt8(ascii: "\n")) {
                sizes.append(try JSONDecoder().decode(EntityBatch.self, from: Data(line)).entityCount)
            }
        }
        #expect(sizes.reduce(0, +) == answers * 50)
        #expect(sizes.allSatisfy { $0 <= 100 + 50 }, "\(sizes)")
    }

    @Test("SQLite: a reload does not drop the running proxy's locks on its database (closing any descriptor of the file would): a library command run after it leaves the WAL the proxy writes to, and sees its rows")
    func sqliteReloadKeepsLocks() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let database = directory.appendingPathComponent("library.sqlite").path
        let config = directory.appendingPathComponent("library.conf")
        try "[sink]\nkind = \"sqlite\"\npath = \"\(database)\"\n".write(to: config, atomically: true, encoding: .utf8)
        try await withProxy(configure: { config in
            config.sink.kind = .sqlite
            config.sink.path = database
            config.sink.flushInterval = .milliseconds(20)
            config.cache.maxBytes = 0
        }) { harness in
            let tee = try #require(harness.runtime.tee)
            let client = try await harness.client()
            #expect(try await client.request("GET", "/v1/test/artists/1").status == 200)
            #expect(try await eventually { tee.stats.written >= 50 })
            #expect(harness.runtime.reload() == nil)
            let listed = try await CommandRun.run(["library", "artists", "--config", config.path, "--limit", "1"])
            #expect(listed.status == 0, "\(listed.stderr)")
            #expect(try await client.request("GET", "/v1/test/artists/2").status == 200)
            #expect(try await eventually { tee.stats.written >= 100 })
            await client.close()
            // The proxy's own descriptors of the WAL: still the file on disk, not one removed under it.
            let descriptors = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").compactMap {
                try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)")
            }
            #expect(descriptors.contains(database + "-wal"), "\(descriptors.filter { $0.contains("library") })")
            #expect(!descriptors.contains { $0.contains("library.sqlite") && $0.hasSuffix("(deleted)") }, "\(descriptors.filter { $0.contains("library") })")
            // Another reader sees every row written so far.
            let counted = try await CommandRun.run(["library", "artists", "--config", config.path, "--limit", "1000", "--json"])
            #expect(counted.status == 0, "\(counted.stderr)")
            #expect(counted.stdout.components(separatedBy: "\"id\"").count - 1 >= 100, "\(counted.stdout.prefix(300))")
        }
    }

    @Test("SQLite: rows and relations present, original links stored")
    func sqlite() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try await teeAlbumLookup { $0.path = directory.appendingPathComponent("library.sqlite").path }
        #expect(result.counts == albumLookupCounts)
        #expect(result.album?.raw?["href"]?.string == "https://api.spotify.com/v1/albums/3IqzqH6ShrRtie9Yd2ODyG")
        #expect(result.album?.columns["label"] != nil)
        #expect(result.stats?.written == 13)
        #expect(result.stats?.queued == 2)
        #expect(result.stats?.deduplicated == 1)
        #expect(result.stats?.dropped == 0)
    }

    @Test("SQLite: a file that is not a database is refused when the sink opens, naming it and the key")
    func sqliteNotADatabase() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("bad.sqlite").path
        try "garbage, not a database, and long enough to be read as one".write(toFile: path, atomically: true, encoding: .utf8)
        do {
            _ = try SQLiteSink(path: path)
            Issue.record("opened")
        } catch {
            #expect("\(error)" == "cannot open SQLite database \(path) (sink.path): file is not a database; name a new file, or one this proxy made")
        }
    }

    @Test("JSON lines: one object per entity per line, relations inline")
    func jsonLines() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let result = try await teeAlbumLookup { sink in
            sink.kind = .jsonl
            sink.path = directory.appendingPathComponent("library.jsonl").path
        }
        #expect(result.counts == albumLookupCounts)
        #expect(result.album?.raw?["href"]?.string == "https://api.spotify.com/v1/albums/3IqzqH6ShrRtie9Yd2ODyG")
        let lines = try String(contentsOf: directory.appendingPathComponent("library.jsonl"), encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 13)
    }

    @Test(
        "PostgreSQL: rows and relations present, original links stored",
        .enabled(if: PostgresCluster.sharedURL != nil || PostgresCluster.required, "no SPOTIFY_PROXY_TEST_DATABASE_URL (scripts/test sets it)"))
    func postgres() async throws {
        let url = try #require(PostgresCluster.sharedURL, "SPOTIFY_PROXY_TEST_DATABASE_URL is not set: run the tests with scripts/test")
        let database = try await PostgresTestDatabase.create(adminURL: url)
        let result = try await teeAlbumLookup { sink in
            sink.kind = .postgres
            sink.url = database.url
        }
        #expect(result.counts == albumLookupCounts)
        #expect(result.album?.raw?["href"]?.string == "https://api.spotify.com/v1/albums/3IqzqH6ShrRtie9Yd2ODyG")
        #expect(result.album?.columns["release_date"]?.string == "2020-12-18")
        try await database.drop()
    }

    /// Runs `body` with an empty, migrated sink of `kind` (sqlite, postgres, jsonl), then
    /// closes and removes it. Without a PostgreSQL to test against, the postgres case passes
    /// outside CI and fails in it.
    func withEmptySink(_ kind: String, _ body: (any EntitySink) async throws -> Void) async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        var settings = SinkSettings()
        settings.kind = try #require(SinkSettings.Kind(rawValue: kind))
        settings.path = directory.appendingPathComponent("sink.\(kind)").path
        var database: PostgresTestDatabase?
        if settings.kind == .postgres {
            guard let url = PostgresCluster.sharedURL else {
                #expect(!PostgresCluster.required, "SPOTIFY_PROXY_TEST_DATABASE_URL is not set in CI")
                return
            }
            database = try await PostgresTestDatabase.create(adminURL: url)
            settings.url = database!.url
        }
        // A JSON-lines sink appends every sighting; its `list` merges them when read back.
        let sink = try #require(try settings.makeSink(logger: Logger(label: "test")))
        do {
            try await withRunningSink(sink) {
                _ = try await sink.migrate()
                try await body(sink)
            }
        } catch {
            await sink.close()
            try await database?.drop()
            throw error
        }
        await sink.close()
        try await database?.drop()
    }

    @Test("merge in the database: a poorer sighting later never erases what a richer one stored", arguments: ["sqlite", "postgres", "jsonl"])
    func mergeInDatabase(kind: String) async throws {
        try await self.withEmptySink(kind) { sink in
            let full = try EntityExtractor.extract(from: try RecordedResponses.data("artist"))
            let poorer = try EntityExtractor.extract(from: Data(#"{"type":"artist","id":"0TnOYISbd1XYRBk9myaseg","name":"Pitbull","popularity":null,"uri":"spotify:artist:0TnOYISbd1XYRBk9myaseg"}"#.utf8))
            try await sink.write(full)
            try await sink.write(poorer)
            try await sink.write(poorer)
            let stored = try #require(try await sink.list(.artist, nameContains: "pit", limit: 5).first)
            #expect(stored.columns["followers"]?.int == 12_425_030)
            #expect(stored.columns["popularity"]?.int == 85)
            #expect(stored.raw?["images"]?.array?.count == 3)
            #expect(try await sink.counts()["artists"] == 1)
            // At every depth, across batches: a poorer track's album and external_ids erase nothing.
            try await sink.write(try EntityExtractor.extract(from: try RecordedResponses.data("track")))
            try await sink.write(try EntityExtractor.extract(from: Data(poorerTrackSighting.utf8)))
            let track = try #require(try await sink.list(.track, nameContains: "brightside", limit: 5).first)
            #expect(track.raw?["external_ids"]?["isrc"]?.string == "GBFFP0300052")
            #expect(track.raw?["album"]?["images"]?.array?.count == 3)
            #expect(track.raw?["album"]?["available_markets"]?.array?.count == 57)
            #expect(track.raw?["album"]?["release_date"]?.string == "2004-06-15")
            #expect(track.columns["isrc"]?.string == "GBFFP0300052")
        }
    }

    @Test("values a database refuses are stored as it can take them, and the rest of the batch with them: a NUL in a name, a count over 32 bits, a name over the index's limit", arguments: ["sqlite", "postgres"])
    func valuesADatabaseRefuses(kind: String) async throws {
        try await self.withEmptySink(kind) { sink in
            let long = String(repeating: "x", count: 8_000)
            let body = #"{"artists":[{"type":"artist","id":"00000000000000000000a1","name":"nul \u0000 char","genres":["a\u0000b"]},"#
                + #"{"type":"artist","id":"00000000000000000000a2","name":"Big","followers":{"href":null,"total":3000000000}},"#
                + #"{"type":"artist","id":"00000000000000000000a3","name":"\#(long)"},"#
                + #"{"type":"artist","id":"00000000000000000000a4","name":"Plain","popularity":50}]}"#
            try await sink.write(try EntityExtractor.extract(from: Data(body.utf8)))
            let stored = Dictionary(uniqueKeysWithValues: try await sink.list(.artist, nameContains: nil, limit: 10).map { ($0.id, $0) })
            #expect(stored.count == 4)
            #expect(stored["00000000000000000000a1"]?.name == "nul \u{FFFD} char")
            #expect(stored["00000000000000000000a2"]?.columns["followers"] == nil && stored["00000000000000000000a2"]?.raw?["followers"]?["total"]?.int == 3_000_000_000)
            #expect(stored["00000000000000000000a3"]?.name.count == EntityRow.nameLimit && stored["00000000000000000000a3"]?.raw?["name"]?.string == long)
            #expect(stored["00000000000000000000a4"]?.columns["popularity"]?.int == 50)
        }
    }

    @Test("a track or album's artists are those it lists last: one no longer listed goes, in the batch and in the database (a sighting without artists changes none)", arguments: ["sqlite", "postgres"])
    func artistsReplaced(kind: String) async throws {
        func sighting(_ artists: [String]?) throws -> EntityBatch {
            let listed = artists.map { ids in ",\"artists\":[" + ids.map { #"{"type":"artist","id":"\#($0)","name":"\#($0)"}"# }.joined(separator: ",") + "]" } ?? ""
            return try EntityExtractor.extract(from: Data(#"{"type":"track","id":"0000000000000000000t01","name":"T"\#(listed)}"#.utf8))
        }
        var merged = try sighting(["A1", "A3"])
        merged.merge(try sighting(["A3"]))
        #expect(merged.trackArtists.values.map(\.artistID) == ["A3"], "within a batch")
        try await self.withEmptySink(kind) { sink in
            try await sink.write(try sighting(["A1", "A2", "A3"]))
            try await sink.write(try sighting(["A3", "A1"]))
            try await sink.write(try sighting(nil))
            #expect(try await sink.counts()["track_artists"] == 2)
            try await sink.write(try sighting(["A3"]))
            #expect(try await sink.counts()["track_artists"] == 1)
        }
    }

    @Test("JSON lines: a file removed or moved away under the sink is made again at its path for the next batch; one that cannot be made fails the write (the batch stays in the spool)")
    func jsonLinesFileReplaced() async throws {
        let directory = try temporaryDirectory()
        let path = directory.appendingPathComponent("out/ents.jsonl").path
        try FileManager.default.createDirectory(atPath: directory.appendingPathComponent("out").path, withIntermediateDirectories: true)
        let sink = try JSONLinesSink(path: path)
        let batch = try EntityExtractor.extract(from: try RecordedResponses.data("artist"))
        try await sink.write(batch)
        try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
        try await sink.write(batch)
        #expect(try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").count == 1, "the next batch is at the path")
        try FileManager.default.removeItem(atPath: directory.appendingPathComponent("out").path)
        await #expect(throws: SinkError.self) { try await sink.write(batch) }
        await sink.close()
    }

    @Test("a NUL escaped in JSON becomes U+FFFD for jsonb; an escaped backslash followed by u0000 is text and stays")
    func jsonWithoutNUL() {
        #expect(PostgresSink.withoutNUL(#"{"a":"x\u0000y","b":"\\u0000","c":"\\\u0000"}"#) == #"{"a":"x\ufffdy","b":"\\u0000","c":"\\\ufffd"}"#)
        let plain = #"{"a":"plain"}"#
        #expect(PostgresSink.withoutNUL(plain) == plain)
    }

    @Test("first_seen and last_seen are when the proxy saw the entities, not when a late batch (replayed from the spool) was stored; an older batch never moves last_seen back", arguments: ["sqlite", "postgres", "jsonl"])
    func seenTimes(kind: String) async throws {
        try await self.withEmptySink(kind) { sink in
            func sighting(at text: String) throws -> EntityBatch {
                var batch = try EntityExtractor.extract(from: try RecordedResponses.data("artist"))
                batch.seenAt = try #require(ISO8601DateFormatter().date(from: text))
                // As the spool keeps it and a replay reads it back.
                return try #require(batch.serializedLine().withUnsafeBytes { EntityBatch(line: $0) })
            }
            try await sink.write(try sighting(at: "2026-11-02T10:00:00Z"))
            var stored = try #require(try await sink.list(.artist, nameContains: "pit", limit: 5).first)
            #expect(stored.firstSeen == "2026-11-02T10:00:00Z" && stored.lastSeen == "2026-11-02T10:00:00Z", "\(stored.firstSeen) \(stored.lastSeen)")
            try await sink.write(try sighting(at: "2026-11-03T10:00:00Z"))
            try await sink.write(try sighting(at: "2026-11-02T12:00:00Z"))
            stored = try #require(try await sink.list(.artist, nameContains: "pit", limit: 5).first)
            #expect(stored.firstSeen == "2026-11-02T10:00:00Z" && stored.lastSeen == "2026-11-03T10:00:00Z", "\(stored.firstSeen) \(stored.lastSeen)")
            // Seen earlier by another proxy sharing the database, stored last.
            try await sink.write(try sighting(at: "2026-11-01T09:00:00Z"))
            stored = try #require(try await sink.list(.artist, nameContains: "pit", limit: 5).first)
            #expect(stored.firstSeen == "2026-11-01T09:00:00Z" && stored.lastSeen == "2026-11-03T10:00:00Z", "\(stored.firstSeen) \(stored.lastSeen)")
        }
    }

    @Test("every sink merges `raw` exactly as the tee merges within a batch: 300 random pairs of mutated recorded objects", arguments: ["sqlite", "postgres", "jsonl"])
    func mergeAgreesWithTheTee(kind: String) async throws {
        var rng = SplitMix64(state: 7)
        let sources = try ["artist", "album", "track", "several-artists"].map { try JSONValue.parse(try RecordedResponses.data($0)) }
        // One entity per pair, the mutated object under "data": stored first, then a later sighting.
        func wrapper(_ index: Int, _ data: JSONValue) -> JSONValue {
            .object(["type": .string("artist"), "id": .string("merge-\(index)"), "name": .string("merge pair \(index)"), "data": data])
        }
        var stored: [JSONValue] = []
        var later: [JSONValue] = []
        for index in 0..<300 {
            let source = sources[index % sources.count]
            stored.append(wrapper(index, FuzzTests.mutateTree(source, &rng)))
            later.append(wrapper(index, FuzzTests.mutateTree(source, &rng)))
        }
        try await self.withEmptySink(kind) { sink in
            let batches = [EntityExtractor.extract(from: .array(stored)), EntityExtractor.extract(from: .array(later))]
            for batch in batches { try await sink.write(batch) }
            // Every row arrived (over 256 artists: PostgreSQL writes them in several statements).
            var all = batches[0]
            all.merge(batches[1])
            #expect(all.artists.count > 256)
            let counts = try await sink.counts()
            #expect([counts["artists"], counts["albums"], counts["tracks"]] == [all.artists.count, all.albums.count, all.tracks.count])
            let raws = Dictionary(uniqueKeysWithValues: try await sink.list(.artist, nameContains: "merge pair", limit: 1000).map { ($0.id, $0.raw) })
            #expect(raws.count == 300)
            for index in 0..<300 {
                let expected = stored[index].strippingNulls().merging(later[index].strippingNulls())
                #expect(raws["merge-\(index)"] == expected, "pair \(index) differs in the \(kind) sink")
            }
        }
    }
}
