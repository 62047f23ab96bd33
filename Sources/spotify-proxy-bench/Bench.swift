import FakeSpotify
import Foundation
import Logging
import SpotifyCatalog
import SpotifyProxy

/// Measures a sink alone: entity upserts per second with batches built from the recorded
/// responses, the way the tee builds them (merged, up to `batch_size` entities): each batch is
/// inserted, then merged with the same entities as a development-mode answer shows them.
///   spotify-proxy-bench sink postgres URL [seconds] [batch_size]
///   spotify-proxy-bench sink sqlite PATH [seconds] [batch_size]
@main
enum Bench {
    static func main() async throws {
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "extract" {
            try Self.extract(seconds: arguments.count > 1 ? Double(arguments[1]) ?? 5 : 5)
            return
        }
        if arguments.first == "quota", arguments.count >= 4 {
            try await Quota.run(
                label: arguments[1], proxy: arguments[2], fake: arguments[3],
                seconds: arguments.count > 4 ? Double(arguments[4]) ?? 45 : 45, clients: arguments.count > 5 ? Int(arguments[5]) ?? 16 : 16)
            return
        }
        if arguments.first == "spool", arguments.count >= 2 {
            try Self.spool(
                directory: arguments[1], seconds: arguments.count > 2 ? Double(arguments[2]) ?? 10 : 10,
                batchSize: arguments.count > 3 ? Int(arguments[3]) ?? 1000 : 1000)
            return
        }
        guard arguments.count >= 3, arguments[0] == "sink" else {
            FileHandle.standardError.write(Data("usage: spotify-proxy-bench sink postgres|sqlite URL|PATH [seconds] [batch_size] | extract [seconds] | spool DIR [seconds] [batch_size] | quota LABEL PROXY_URL FAKE_URL [seconds] [clients]\n".utf8))
            exit(2)
        }
        let seconds = arguments.count > 3 ? Double(arguments[3]) ?? 10 : 10
        let batchSize = arguments.count > 4 ? Int(arguments[4]) ?? 1000 : 1000
        let sink: any EntitySink = arguments[1] == "postgres"
            ? try PostgresSink(url: arguments[2], logger: Logger(label: "bench"))
            : try SQLiteSink(path: arguments[2])
        // The connection pool runs while the sink is measured.
        let (totals, elapsed, counts) = try await withRunningSink(sink) {
            _ = try await sink.migrate()

            // Every recorded response with entities, parsed once.
            let sources = try ["album", "album-tracks", "artist-albums", "artist-top-tracks", "search-all-types", "several-albums", "several-artists", "several-tracks"]
                .map { try RecordedResponses.data($0) }
                .map { try JSONValue.parse($0) }
            let poorerSources = sources.map { Self.removing(["popularity", "followers", "genres", "label", "available_markets"], from: $0) }
            var generation = 0
            var totals = (inserted: 0, updated: 0, batches: 0)
            var elapsed: Duration = .zero
            let clock = ContinuousClock()
            let deadline = clock.now + .milliseconds(Int64(seconds * 1000))
            while clock.now < deadline {
                // New ids each generation (inserts), then the same entities as a 2026 development-mode
                // answer shows them (updates that merge a poorer object into the stored one).
                let batches = [sources, poorerSources].map { Self.batch($0, generation: generation, size: batchSize) }
                for (pass, batch) in batches.enumerated() {
                    let started = clock.now
                    try await sink.write(batch)
                    elapsed += clock.now - started
                    if pass == 0 { totals.inserted += batch.entityCount } else { totals.updated += batch.entityCount }
                    totals.batches += 1
                }
                generation += 1
            }
            let counts = try await sink.counts()
            return (totals, elapsed, counts)
        }
        await sink.close()
        let secondsSpent = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let upserts = totals.inserted + totals.updated
        print(String(
            format: "%@ sink: %d entity upserts (%d inserts, %d merges of a poorer sighting) in %d batches of ~%d, %.2f s in write(): %.0f upserts/s; rows now %@",
            arguments[1], upserts, totals.inserted, totals.updated, totals.batches, batchSize, secondsSpent, Double(upserts) / secondsSpent,
            StoredEntity.tables.map { "\($0)=\(counts[$0] ?? 0)" }.joined(separator: " ")))
    }

    /// How fast the tee's extraction runs on distinct bodies (no deduplication): the recorded
    /// responses parsed in turn on one task, as the writer does.
    static func extract(seconds: Double) throws {
        let bodies = try ["album", "album-tracks", "artist-albums", "artist-top-tracks", "search-artist-album-track", "several-albums", "track"]
            .map { try RecordedResponses.data($0) }
        let clock = ContinuousClock()
        let started = clock.now
        var (count, bytes, entities) = (0, 0, 0)
        while clock.now - started < .milliseconds(Int64(seconds * 1000)) {
            for body in bodies {
                entities += try EntityExtractor.extract(from: body).entityCount
                bytes += body.count
                count += 1
            }
        }
        let elapsed = clock.now - started
        let spent = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print(String(format: "extract: %d bodies (%.1f MB, %d entities) in %.2f s: %.0f bodies/s, %.1f MB/s, %.0f entities/s",
            count, Double(bytes) / 1e6, entities, spent, Double(count) / spent, Double(bytes) / 1e6 / spent, Double(entities) / spent))
    }

    /// The tee's write-ahead cost alone: each batch written to the spool (encoded, fsynced, file
    /// and directory) and committed (its segment deleted), as every flush does before and after
    /// the database; in the directory given (the disk the spool would be on).
    static func spool(directory: String, seconds: Double, batchSize: Int) throws {
        let spool = try Spool(directory: directory)
        let sources = try ["album", "album-tracks", "artist-albums", "artist-top-tracks", "search-all-types", "several-albums", "several-artists", "several-tracks"]
            .map { try JSONValue.parse(try RecordedResponses.data($0)) }
        let batches = (0..<8).map { Self.batch(sources, generation: $0, size: batchSize) }
        let clock = ContinuousClock()
        let started = clock.now
        var (count, entities) = (0, 0)
        while clock.now - started < .milliseconds(Int64(seconds * 1000)) {
            let batch = batches[count % batches.count]
            spool.commit(try spool.begin(batch))
            entities += batch.entityCount
            count += 1
        }
        let elapsed = clock.now - started
        let spent = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        print(String(format: "spool: %d batches of ~%d written ahead and committed in %.2f s: %.1f ms per batch, %.0f entities/s",
            count, batchSize, spent, spent * 1000 / Double(count), Double(entities) / spent))
    }

    /// Entities from the fixtures with ids made unique per generation, merged into one batch
    /// of about `size` entities.
    static func batch(_ sources: [JSONValue], generation: Int, size: Int) -> EntityBatch {
        var batch = EntityBatch()
        var copy = 0
        while batch.entityCount < size {
            for source in sources where batch.entityCount < size {
                batch.merge(EntityExtractor.extract(from: Self.renamingIDs(source, suffix: "-\(generation)-\(copy)")))
            }
            copy += 1
        }
        return batch
    }

    static func renamingIDs(_ value: JSONValue, suffix: String) -> JSONValue {
        Self.rewritingMembers(value) { key, child in
            if key == "id", case .string(let id) = child { return .string(id + suffix) }
            return Self.renamingIDs(child, suffix: suffix)
        }
    }

    /// `value` without the members named `keys`, at every depth.
    static func removing(_ keys: Set<String>, from value: JSONValue) -> JSONValue {
        Self.rewritingMembers(value) { key, child in keys.contains(key) ? nil : Self.removing(keys, from: child) }
    }

    /// Each member of the outermost objects in `value` (looking through arrays) replaced by
    /// `transform(key, member)`, nil dropping it; the transforms above recurse through it.
    static func rewritingMembers(_ value: JSONValue, _ transform: (String, JSONValue) -> JSONValue?) -> JSONValue {
        switch value {
        case .object(let object):
            var out: [String: JSONValue] = [:]
            for (key, child) in object { out[key] = transform(key, child) }
            return .object(out)
        case .array(let items):
            return .array(items.map { Self.rewritingMembers($0, transform) })
        default:
            return value
        }
    }
}
