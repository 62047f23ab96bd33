import FakeSpotify
import Foundation
import SpotifyCatalog
import SpotifyProxyTestSupport
import Testing

@testable import SpotifyProxy

/// The write-ahead spool on its own: what a replay stores, deletes and keeps.
@Suite("Spool")
struct SpoolTests {
    @Test("a replay stores every readable batch in order and deletes its segment; a segment that does not read back (cut short, damaged) is set aside as .unreadable, never deleted nor replayed again")
    func unreadableSegmentsAreSetAside() async throws {
        let directory = try temporaryDirectory()
        let spool = try Spool(directory: directory.path)
        let first = try EntityExtractor.extract(from: try RecordedResponses.data("artist"))
        let second = try EntityExtractor.extract(from: try RecordedResponses.data("several-tracks"))
        let a = try spool.begin(first)
        spool.keep(a)
        // A crash mid-write: half of a batch's line.
        let line = second.serializedLine()
        let torn = directory.appendingPathComponent(String(format: "spool-%08d.jsonl", a.number + 1))
        try Data(line.prefix(line.count / 2)).write(to: torn)
        // Damage on disk after a readable line.
        let damaged = directory.appendingPathComponent(String(format: "spool-%08d.jsonl", a.number + 2))
        try Data(line + Array("\n\u{0}\u{0}garbage\n".utf8)).write(to: damaged)

        var stored: [EntityBatch] = []
        let replay = try await spool.replay { stored.append($0) }
        #expect(stored == [first, second])
        #expect(replay.entities == first.entityCount + second.entityCount)
        #expect(replay.unreadableLines == 2)
        #expect(replay.setAside == [torn.path + ".unreadable", damaged.path + ".unreadable"])
        let left = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(left == [torn.lastPathComponent + ".unreadable", damaged.lastPathComponent + ".unreadable"])
        #expect(try Data(contentsOf: URL(fileURLWithPath: torn.path + ".unreadable")) == Data(line.prefix(line.count / 2)))
        #expect(!spool.hasPending)

        // Set aside means out of the queue: the next replay (and the next start) leaves them be.
        let restarted = try Spool(directory: directory.path)
        let again = try await restarted.replay { stored.append($0) }
        #expect(again == Spool.Replay())
        #expect(stored.count == 2)
        // And a new segment never takes a set-aside one's number.
        #expect(try restarted.begin(first).number == a.number + 3)
    }
}
