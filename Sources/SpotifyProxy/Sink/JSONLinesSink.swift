import Foundation
import SpotifyCatalog
import Synchronization

/// Appends one JSON object per entity per line to a file, fsynced per batch:
/// `{"kind":"track","id":…,"name":…,"album_id":…,"artist_ids":[…],"columns":{…},"raw":{…},"seen":…}`.
/// Later lines for the same id carry what was seen later; readers merge them in order.
public final class JSONLinesSink: EntitySink {
    private let path: String
    private let handle: Mutex<FileHandle>

    public init(path: String) throws {
        self.path = path
        self.handle = Mutex(try Self.open(path, why: "cannot create"))
    }

    /// The file at `path` for appending, created if missing.
    private static func open(_ path: String, why: String) throws -> FileHandle {
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw SinkError("\(why) \(path) (sink.path): check that the directory exists and is writable")
            }
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        return handle
    }

    /// Whether `handle` is still the file at `path`: one removed, or moved away (a rotation),
    /// would take every later line where no reader finds it.
    private func stillNamed(_ handle: FileHandle) -> Bool {
        var open = stat()
        var named = stat()
        guard fstat(handle.fileDescriptor, &open) == 0 else { return true }
        return stat(self.path, &named) == 0 && named.st_ino == open.st_ino && named.st_dev == open.st_dev
    }

    public func write(_ batch: EntityBatch) async throws {
        let seen = StoredEntity.timestamp(batch.seenTime)
        var text = ""
        for (kind, entities) in batch.byKind {
            let links = kind == .album ? batch.albumArtists : kind == .track ? batch.trackArtists : [:]
            var artistsByOwner: [String: [EntityLink]] = [:]
            for link in links.values { artistsByOwner[link.ownerID, default: []].append(link) }
            for row in EntityRow.rows(entities) {
                var object: [String: JSONValue] = [
                    "kind": .string(kind.rawValue), "id": .string(row.id), "name": .string(row.name),
                    "columns": .object(row.columns), "raw": row.raw, "seen": .string(seen),
                ]
                if let artists = artistsByOwner[row.id] {
                    object["artist_ids"] = .array(artists.sorted { $0.position < $1.position }.map { .string($0.artistID) })
                }
                text += JSONValue.object(object).serialized() + "\n"
            }
        }
        guard !text.isEmpty else { return }
        try self.handle.withLock { handle in
            if !self.stillNamed(handle) {
                // Written to the file at `path` again (a failure keeps the batch in the spool).
                let fresh = try Self.open(self.path, why: "the file was removed or moved away, and cannot be created again at")
                try? handle.close()
                handle = fresh
            }
            try handle.write(contentsOf: Data(text.utf8))
            try handle.synchronize()
        }
    }

    public func migrate() async throws -> [Int] { [] }

    /// Every line of the file that names its entity's kind and id, in order.
    private func records() throws -> [(kind: SpotifyEntity.Kind, id: String, value: JSONValue)] {
        let data = try Data(contentsOf: URL(fileURLWithPath: self.path))
        return data.split(separator: UInt8(ascii: "\n")).compactMap { line in
            guard let value = try? JSONValue.parse(Data(line)), let kind = value["kind"]?.string.flatMap(SpotifyEntity.Kind.init),
                let id = value["id"]?.string
            else { return nil }
            return (kind, id, value)
        }
    }

    public func list(_ kind: SpotifyEntity.Kind, nameContains: String?, limit: Int) async throws -> [StoredEntity] {
        var byID: [String: StoredEntity] = [:]
        for (recordKind, id, value) in try self.records() where recordKind == kind {
            guard let name = value["name"]?.string, let seen = value["seen"]?.string else { continue }
            let columns = value["columns"]?.object ?? [:]
            let raw = value["raw"]?.object.map(JSONValue.object) ?? .object([:])
            if var known = byID[id] {
                known.name = name
                known.columns.merge(columns) { _, new in new }
                known.raw = known.raw.map { $0.merging(raw) } ?? raw
                // A batch appended late (replayed from the spool) may carry an earlier time.
                known.firstSeen = min(known.firstSeen, seen)
                known.lastSeen = max(known.lastSeen, seen)
                byID[id] = known
            } else {
                byID[id] = StoredEntity(id: id, name: name, columns: columns, firstSeen: seen, lastSeen: seen, raw: raw)
            }
        }
        let needle = nameContains?.lowercased()
        return byID.values.filter { needle == nil || $0.name.lowercased().contains(needle!) }
            .sorted { ($0.name.lowercased(), $0.id) < ($1.name.lowercased(), $1.id) }
            .prefix(limit).map { $0 }
    }

    /// Distinct ids per kind, and distinct relations, as the lines hold them.
    public func counts() async throws -> [String: Int] {
        var ids: [String: Set<String>] = [:]
        for (kind, id, value) in try self.records() {
            ids[kind.table, default: []].insert(id)
            let relation = kind == .album ? "album_artists" : kind == .track ? "track_artists" : nil
            if let relation, let artists = value["artist_ids"]?.array {
                for artist in artists.compactMap(\.string) { ids[relation, default: []].insert("\(id)/\(artist)") }
            }
        }
        return Dictionary(uniqueKeysWithValues: StoredEntity.tables.map { ($0, ids[$0]?.count ?? 0) })
    }

    public func close() async {
        self.handle.withLock { try? $0.close() }
    }
}
