import Foundation
import SpotifyCatalog
import Synchronization

/// The tee's write-ahead log, which is also its queue while the sink is down (PostgreSQL's own
/// WAL discipline). Every due batch is written to a segment file of its own and fsynced, file
/// and directory entry, before the database is asked (`begin`); the segment is deleted once
/// the batch is stored (`commit`) or left for an in-order replay when it is not (`keep`). So a
/// crash at any moment, database up or down, loses only what had not reached a flush yet.
///
/// `begin` is called by the tee's extraction task, everything else by its storage task (and
/// `spotify-proxy-bench spool` measures `begin` and `commit`).
public final class Spool: Sendable {
    /// A batch written ahead of the database; `number` orders it among the segments.
    public struct Entry: Sendable {
        let number: Int
        fileprivate let url: URL
    }

    let directory: URL
    /// The last segment found at start (a previous run's, replayed first), if any.
    let recoveredThrough: Int?

    private struct State {
        var nextSegment: Int
        /// Whether kept segments wait for a replay. Kept in memory (the writer asks on every
        /// tick); the directory is listed only when opening and replaying.
        var hasPending: Bool
    }

    private let state: Mutex<State>

    public init(directory: String) throws {
        self.directory = URL(fileURLWithPath: directory, isDirectory: true)
        // A configuration error (exit 2), as check-config would have said.
        if let problem = FileAccess.makeDirectories(self.directory.path).problem {
            throw FileAccess.cannotCreate(directory, key: "sink.spool_dir", problem)
        }
        let existing = Self.segments(in: self.directory)
        self.recoveredThrough = existing.map(\.number).max()
        // Numbered after the segments set aside too, so a new one never takes their name.
        let setAside = Self.names(in: self.directory, suffix: ".jsonl.unreadable").map(\.number).max()
        let last = [self.recoveredThrough, setAside].compactMap { $0 }.max()
        self.state = Mutex(State(nextSegment: (last ?? -1) + 1, hasPending: !existing.isEmpty))
    }

    var hasPending: Bool { self.state.withLock { $0.hasPending } }

    /// Durably writes `batch` ahead of the database, in a new segment: when this returns, it
    /// survives a crash. Then either ``commit(_:)`` (stored) or ``keep(_:)`` (not stored).
    public func begin(_ batch: EntityBatch) throws -> Entry {
        var line = batch.serializedLine()
        line.append(UInt8(ascii: "\n"))
        let number = self.state.withLock { state in
            defer { state.nextSegment += 1 }
            return state.nextSegment
        }
        let url = self.directory.appendingPathComponent(String(format: "spool-%08d.jsonl", number))
        guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
            throw SinkError("cannot create spool file \(url.path) (sink.spool_dir): check that the directory is writable and the disk not full")
        }
        let handle = try FileHandle(forWritingTo: url)
        defer { try? handle.close() }
        try handle.write(contentsOf: line)
        try handle.synchronize()
        // The new name must survive a crash too, not only the bytes written under it.
        let directory = open(self.directory.path, O_RDONLY)
        if directory >= 0 {
            fsync(directory)
            close(directory)
        }
        return Entry(number: number, url: url)
    }

    /// The batch is in the database: its segment goes. (Should a crash undo the removal, the
    /// replay of a batch already stored changes nothing: upserts are idempotent.)
    public func commit(_ entry: Entry) {
        try? FileManager.default.removeItem(at: entry.url)
    }

    /// The batch could not be stored: its segment stays, in line for the replay.
    func keep(_ entry: Entry) {
        self.state.withLock { $0.hasPending = true }
    }

    /// What a replay did: the entities stored, and the lines it could not read.
    struct Replay: Equatable {
        var entities = 0
        /// Lines that are not a batch: a torn last line (a crash mid-write, never acknowledged),
        /// or a segment damaged on disk.
        var unreadableLines = 0
        /// Where the segments holding such lines were set aside (`….jsonl.unreadable`, never
        /// replayed again, kept for a person to look at) instead of deleted.
        var setAside: [String] = []
    }

    /// Replays the segments numbered up to `last` (all when nil) in order through `write`,
    /// deleting each once all of it is stored. Stops at the first failure (what was not stored
    /// stays for the next attempt). A segment with lines that are not a batch has its readable
    /// lines stored and is then set aside, not deleted: it may hold data only a person can save.
    func replay(through last: Int? = nil, _ write: (EntityBatch) async throws -> Void) async throws -> Replay {
        var replay = Replay()
        for segment in Self.segments(in: self.directory) where last.map({ segment.number <= $0 }) ?? true {
            let data = try Data(contentsOf: segment.url)
            var unreadable = 0
            for line in data.split(separator: UInt8(ascii: "\n")) {
                guard let batch = line.withUnsafeBytes({ EntityBatch(line: $0) }) else {
                    unreadable += 1
                    continue
                }
                try await write(batch)
                replay.entities += batch.entityCount
            }
            if unreadable == 0 {
                try FileManager.default.removeItem(at: segment.url)
            } else {
                let aside = segment.url.appendingPathExtension("unreadable")
                try FileManager.default.moveItem(at: segment.url, to: aside)
                replay.unreadableLines += unreadable
                replay.setAside.append(aside.path)
            }
        }
        self.state.withLock { $0.hasPending = false }
        return replay
    }

    /// Segment files in replay order.
    private static func segments(in directory: URL) -> [(number: Int, url: URL)] {
        self.names(in: directory, suffix: ".jsonl")
    }

    /// The files `spool-<number><suffix>` in `directory`, in number order.
    private static func names(in directory: URL, suffix: String) -> [(number: Int, url: URL)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasPrefix("spool-") && $0.hasSuffix(suffix) }
            .compactMap { name in Int(name.dropFirst("spool-".count).dropLast(suffix.count)).map { ($0, directory.appendingPathComponent(name)) } }
            .sorted { $0.number < $1.number }
    }
}
