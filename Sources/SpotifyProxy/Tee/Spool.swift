import Foundation
import SpotifyCatalog

/// An append-only on-disk queue of entity batches, for when the sink is down: one batch per
/// line, fsynced before `append` returns, in numbered segment files replayed in order.
/// Used by one task at a time (the tee's writer).
final class Spool {
    let directory: URL
    private var current: FileHandle?
    private var nextSegment: Int

    init(directory: String) throws {
        self.directory = URL(fileURLWithPath: directory, isDirectory: true)
        try FileManager.default.createDirectory(at: self.directory, withIntermediateDirectories: true)
        let existing = Self.segments(in: self.directory)
        self.nextSegment = (existing.compactMap { Self.number(of: $0) }.max() ?? -1) + 1
        self.hasPending = !existing.isEmpty
    }

    /// Segment files in replay order.
    private static func segments(in directory: URL) -> [URL] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { $0.hasPrefix("spool-") && $0.hasSuffix(".jsonl") }
            .map { directory.appendingPathComponent($0) }
            .sorted { (Self.number(of: $0) ?? 0) < (Self.number(of: $1) ?? 0) }
    }

    /// Kept in memory (the writer asks on every tick); the directory is listed only when
    /// opening and replaying.
    private(set) var hasPending = false

    /// Durably appends `batch`: when this returns, it survives a crash.
    func append(_ batch: EntityBatch) throws {
        if self.current == nil {
            let url = self.directory.appendingPathComponent(String(format: "spool-%08d.jsonl", self.nextSegment))
            self.nextSegment += 1
            guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
                throw SinkError("cannot create spool file \(url.path) (sink.spool_dir): check that the directory is writable and the disk not full")
            }
            self.current = try FileHandle(forWritingTo: url)
        }
        var line = try JSONEncoder().encode(batch)
        line.append(UInt8(ascii: "\n"))
        try self.current!.write(contentsOf: line)
        try self.current!.synchronize()
        self.hasPending = true
    }

    /// Replays every segment in order through `write`, deleting each once all of it is stored.
    /// Stops at the first failure (what was not stored stays for the next attempt).
    /// Returns the number of entities replayed; a torn last line (a crash mid-append, never
    /// acknowledged) is skipped and counted in `torn`.
    func replay(_ write: (EntityBatch) async throws -> Void) async throws -> (entities: Int, torn: Int) {
        try self.current?.close()
        self.current = nil
        var entities = 0
        var torn = 0
        for segment in Self.segments(in: self.directory) {
            let data = try Data(contentsOf: segment)
            for line in data.split(separator: UInt8(ascii: "\n")) {
                guard let batch = try? JSONDecoder().decode(EntityBatch.self, from: Data(line)) else {
                    torn += 1
                    continue
                }
                try await write(batch)
                entities += batch.entityCount
            }
            try FileManager.default.removeItem(at: segment)
        }
        self.hasPending = false
        return (entities, torn)
    }

    private static func number(of url: URL) -> Int? {
        let name = url.deletingPathExtension().lastPathComponent
        return Int(name.dropFirst("spool-".count))
    }
}
