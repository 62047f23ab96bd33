import CSQLite
import Foundation
import NIOPosix
import SpotifyCatalog
import Synchronization

/// The embedded default: the same schema in a SQLite file, written on a thread of its own
/// (SQLite calls block). Upserts merge `raw` with JSON merge-patch; nulls were stripped before,
/// so nothing stored is ever removed by a poorer response.
public final class SQLiteSink: EntitySink {
    private let database: Connection
    private let thread: NIOThreadPool

    /// The one connection, touched only on `thread`.
    private final class Connection: @unchecked Sendable {
        var handle: OpaquePointer?
    }

    public struct SQLiteError: Error, CustomStringConvertible {
        public var description: String
    }

    public init(path: String) throws {
        self.thread = NIOThreadPool(numberOfThreads: 1)
        self.thread.start()
        self.database = Connection()
        var handle: OpaquePointer?
        guard sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nil) == SQLITE_OK else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(handle)
            try? self.thread.syncShutdownGracefully()
            throw SQLiteError(description: "cannot open SQLite database \(path) (sink.path): \(message)")
        }
        self.database.handle = handle
        do {
            // The first statements read the file: one that is not SQLite's fails here.
            try Self.exec(handle, "PRAGMA journal_mode=WAL")
            try Self.exec(handle, "PRAGMA synchronous=NORMAL")
            try Self.exec(handle, "PRAGMA busy_timeout=5000")
        } catch {
            sqlite3_close(handle)
            try? self.thread.syncShutdownGracefully()
            throw SQLiteError(description: "cannot open SQLite database \(path) (sink.path): \(error); name a new file, or one this proxy made")
        }
    }

    private func onThread<T: Sendable>(_ body: @escaping @Sendable (OpaquePointer?) throws -> T) async throws -> T {
        let database = self.database
        return try await self.thread.runIfActive { try body(database.handle) }
    }

    public func write(_ batch: EntityBatch) async throws {
        // Relations come only with their album or track, so a batch without entities has none.
        guard !batch.isEmpty else { return }
        try await self.onThread { db in
            try Self.exec(db, "BEGIN IMMEDIATE")
            do {
                try Self.upsert(db, batch)
                try Self.exec(db, "COMMIT")
            } catch {
                try? Self.exec(db, "ROLLBACK")
                throw error
            }
        }
    }

    private static func upsert(_ db: OpaquePointer?, _ batch: EntityBatch) throws {
        // The batch's time (a batch stored late, from the spool, keeps it), as SQLite's own strftime writes it.
        let seen = StoredEntity.timestamp(batch.seenTime)
        for (kind, entities) in batch.byKind {
            let rows = EntityRow.rows(entities)
            guard !rows.isEmpty else { continue }
            let columns = EntityRow.columns(for: kind)
            let table = kind.table
            let names = (["id", "name"] + columns.map(\.name) + ["raw", "first_seen", "last_seen"]).joined(separator: ", ")
            let placeholders = Array(repeating: "?", count: columns.count + 5).joined(separator: ", ")
            let updates = (["name = excluded.name"] + columns.map { "\($0.name) = COALESCE(excluded.\($0.name), \(table).\($0.name))" }
                + ["raw = json_patch(\(table).raw, excluded.raw)", "first_seen = min(\(table).first_seen, excluded.first_seen)", "last_seen = max(\(table).last_seen, excluded.last_seen)"]).joined(separator: ", ")
            let statement = try Statement(db, "INSERT INTO \(table) (\(names)) VALUES (\(placeholders)) ON CONFLICT(id) DO UPDATE SET \(updates)")
            for row in rows {
                var values: [SQLValue] = [.text(row.id), .text(row.name)]
                for column in columns { values.append(SQLValue(row.columns[column.name])) }
                values.append(.text(row.raw.serialized()))
                values.append(.text(seen))
                values.append(.text(seen))
                try statement.run(values)
            }
        }
        for (table, owner, links) in [("album_artists", "album_id", batch.albumArtists), ("track_artists", "track_id", batch.trackArtists)] where !links.isEmpty {
            // Each owner's artists as this batch lists them: an artist no longer listed goes.
            let delete = try Statement(db, "DELETE FROM \(table) WHERE \(owner) = ?")
            for owned in Set(links.values.map(\.ownerID)) { try delete.run([.text(owned)]) }
            let statement = try Statement(
                db, "INSERT INTO \(table) (\(owner), artist_id, position) VALUES (?, ?, ?) ON CONFLICT(\(owner), artist_id) DO UPDATE SET position = excluded.position")
            for link in links.values { try statement.run([.text(link.ownerID), .text(link.artistID), .integer(Int64(link.position))]) }
        }
    }

    public func migrate() async throws -> [Int] {
        try await self.onThread { db in
            try Self.exec(db, "BEGIN IMMEDIATE")
            do {
                try Self.exec(db, "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
                let applied = Set(try Statement(db, "SELECT version FROM schema_migrations").rows().compactMap { Int($0[0] ?? "") })
                var now: [Int] = []
                for migration in Schema.sqlite where !applied.contains(migration.version) {
                    for statement in migration.statements { try Self.exec(db, statement) }
                    try Statement(db, "INSERT INTO schema_migrations (version, applied_at) VALUES (?, strftime('%Y-%m-%dT%H:%M:%SZ','now'))")
                        .run([.integer(Int64(migration.version))])
                    now.append(migration.version)
                }
                try Self.exec(db, "COMMIT")
                return now
            } catch {
                try? Self.exec(db, "ROLLBACK")
                throw error
            }
        }
    }

    public func list(_ kind: SpotifyEntity.Kind, nameContains: String?, limit: Int) async throws -> [StoredEntity] {
        try await self.onThread { db in
            let columns = EntityRow.columns(for: kind).map { column -> String in
                let value = column.type == .textArray ? "json(\(column.name))" : column.type == .boolean ? "json(CASE \(column.name) WHEN 1 THEN 'true' WHEN 0 THEN 'false' END)" : column.name
                return "'\(column.name)', \(value)"
            }.joined(separator: ", ")
            let sql = """
                SELECT json_object('id', id, 'name', name, 'columns', json_object(\(columns)), 'first_seen', first_seen, 'last_seen', last_seen, 'raw', json(raw))
                FROM \(kind.table) WHERE ?1 IS NULL OR instr(lower(name), lower(?1)) > 0 ORDER BY name COLLATE NOCASE, id LIMIT ?2
                """
            let rows = try Statement(db, sql).rows([nameContains.map(SQLValue.text) ?? .null, .integer(Int64(limit))])
            return try rows.map { row in
                var entity = try JSONDecoder().decode(StoredEntity.self, from: Data((row[0] ?? "{}").utf8))
                entity.columns = entity.columns.filter { $0.value != .null }
                return entity
            }
        }
    }

    public func counts() async throws -> [String: Int] {
        try await self.onThread { db in
            var out: [String: Int] = [:]
            for table in StoredEntity.tables {
                out[table] = Int(try Statement(db, "SELECT count(*) FROM \(table)").rows().first?[0] ?? "0") ?? 0
            }
            return out
        }
    }

    public func close() async {
        let database = self.database
        _ = try? await self.thread.runIfActive {
            sqlite3_close_v2(database.handle)
            database.handle = nil
        }
        try? await self.thread.shutdownGracefully()
    }

    // MARK: - A thin statement wrapper

    enum SQLValue {
        case null, text(String), integer(Int64), real(Double)

        init(_ value: JSONValue?) {
            switch value {
            case .string(let text): self = .text(text)
            case .bool(let flag): self = .integer(flag ? 1 : 0)
            case .number(let number): self = number.rounded() == number ? .integer(Int64(number)) : .real(number)
            case .array, .object: self = .text(value!.serialized())
            case .null, nil: self = .null
            }
        }
    }

    static func exec(_ db: OpaquePointer?, _ sql: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        guard sqlite3_exec(db, sql, nil, nil, &message) == SQLITE_OK else {
            defer { sqlite3_free(message) }
            throw SQLiteError(description: message.map { String(cString: $0) } ?? "SQLite error")
        }
    }

    final class Statement {
        private var handle: OpaquePointer?
        private let db: OpaquePointer?

        init(_ db: OpaquePointer?, _ sql: String) throws {
            self.db = db
            guard sqlite3_prepare_v2(db, sql, -1, &self.handle, nil) == SQLITE_OK else {
                throw SQLiteError(description: String(cString: sqlite3_errmsg(db)))
            }
        }

        deinit { sqlite3_finalize(self.handle) }

        private func bind(_ values: [SQLValue]) {
            sqlite3_reset(self.handle)
            sqlite3_clear_bindings(self.handle)
            for (index, value) in values.enumerated() {
                let position = Int32(index + 1)
                switch value {
                case .null: sqlite3_bind_null(self.handle, position)
                case .text(let text): csqlite_bind_text(self.handle, position, text, -1)
                case .integer(let integer): sqlite3_bind_int64(self.handle, position, integer)
                case .real(let real): sqlite3_bind_double(self.handle, position, real)
                }
            }
        }

        func run(_ values: [SQLValue]) throws {
            self.bind(values)
            guard sqlite3_step(self.handle) == SQLITE_DONE else { throw SQLiteError(description: String(cString: sqlite3_errmsg(self.db))) }
        }

        /// Every row, each column as text (nil for NULL).
        func rows(_ values: [SQLValue] = []) throws -> [[String?]] {
            self.bind(values)
            var out: [[String?]] = []
            while true {
                let step = sqlite3_step(self.handle)
                if step == SQLITE_DONE { return out }
                guard step == SQLITE_ROW else { throw SQLiteError(description: String(cString: sqlite3_errmsg(self.db))) }
                out.append((0..<sqlite3_column_count(self.handle)).map { column in
                    sqlite3_column_text(self.handle, column).map { String(cString: $0) }
                })
            }
        }
    }
}
