import Foundation
import Logging
import NIOCore
import PostgresNIO

/// Stores entities in PostgreSQL through postgres-nio's pooled client. A batch is up to five
/// statements, each an `INSERT … SELECT FROM jsonb_to_recordset($1) … ON CONFLICT DO UPDATE`
/// carrying every row of its table in a single parameter, in two transactions (see `write`).
public final class PostgresSink: EntitySink {
    private let client: PostgresClient
    private let running: Task<Void, Never>
    private let logger: Logger

    public init(url: String, logger: Logger) throws(ConfigurationError) {
        var configuration = try Self.configuration(from: url)
        configuration.options.connectTimeout = .seconds(3)
        configuration.options.maximumConnections = 4
        self.client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.logger = logger
        let client = self.client
        self.running = Task { await client.run() }
    }

    /// `postgres://user:password@host:port/database?sslmode=disable|prefer|require`.
    public static func configuration(from url: String) throws(ConfigurationError) -> PostgresClient.Configuration {
        guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme ?? ""),
            let host = components.host, !host.isEmpty
        else {
            throw ConfigurationError(
                "sink.url (or DATABASE_URL) is not a PostgreSQL URL: expected postgres://USER:PASSWORD@HOST:PORT/DATABASE")
        }
        let mode = components.queryItems?.first { $0.name == "sslmode" }?.value ?? "prefer"
        let tls: PostgresClient.Configuration.TLS
        switch mode {
        case "disable": tls = .disable
        case "prefer": tls = .prefer(.makeClientConfiguration())
        case "require", "verify-full": tls = .require(.makeClientConfiguration())
        default: throw ConfigurationError("sink.url: sslmode=\(mode) is not supported; use disable, prefer or require")
        }
        let database = components.path.split(separator: "/").first.map(String.init)
        return PostgresClient.Configuration(
            host: host, port: components.port ?? 5432, username: components.user ?? "postgres",
            password: components.password, database: database, tls: tls)
    }

    public func write(_ batch: EntityBatch) async throws {
        // Two transactions on two connections at once: serialising one half overlaps the
        // server's work on the other, and each half is an idempotent upsert of its own rows,
        // so a failure of either spools the whole batch for a safe replay.
        let halves: [@Sendable () -> [PostgresQuery]] = [
            { Self.entityStatement(.track, batch.tracks).map { [$0] } ?? [] },
            {
                [Self.entityStatement(.artist, batch.artists), Self.entityStatement(.album, batch.albums),
                 Self.linkStatement("album_artists", owner: "album_id", batch.albumArtists),
                 Self.linkStatement("track_artists", owner: "track_id", batch.trackArtists)].compactMap { $0 }
            },
        ]
        try await withThrowingTaskGroup(of: Void.self) { group in
            for half in halves {
                group.addTask {
                    let statements = half()
                    guard !statements.isEmpty else { return }
                    try await self.client.withTransaction(logger: self.logger) { connection in
                        for statement in statements { try await connection.query(statement, logger: self.logger) }
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// `INSERT … SELECT FROM jsonb_to_recordset($1) … ON CONFLICT DO UPDATE` for every row of one table.
    static func entityStatement(_ kind: SpotifyEntity.Kind, _ entities: [String: SpotifyEntity]) -> PostgresQuery? {
        let rows = EntityRow.rows(entities)
        guard !rows.isEmpty else { return nil }
        let columns = EntityRow.columns(for: kind)
        let names = (["id", "name"] + columns.map(\.name) + ["raw"]).joined(separator: ", ")
        let types = (["id text", "name text"] + columns.map { "\($0.name) \(Self.sqlType($0.type))" } + ["raw jsonb"]).joined(separator: ", ")
        let updates = (["name = EXCLUDED.name"] + columns.map { "\($0.name) = COALESCE(EXCLUDED.\($0.name), t.\($0.name))" }
            + ["raw = spotify_proxy_merge(t.raw, EXCLUDED.raw)", "last_seen = now()"]).joined(separator: ", ")
        let records = JSONValue.array(rows.map { row in
            var object = row.columns
            object["id"] = .string(row.id)
            object["name"] = .string(row.name)
            object["raw"] = row.raw
            return .object(object)
        }).serialized()
        var query = PostgresQuery(
            unsafeSQL: "INSERT INTO \(kind.table) AS t (\(names)) SELECT \(names) FROM jsonb_to_recordset($1::jsonb) AS x(\(types)) ON CONFLICT (id) DO UPDATE SET \(updates)")
        query.binds.append(records)
        return query
    }

    static func linkStatement(_ table: String, owner: String, _ links: [String: EntityLink]) -> PostgresQuery? {
        guard !links.isEmpty else { return nil }
        let records = JSONValue.array(links.values.sorted { ($0.ownerID, $0.artistID) < ($1.ownerID, $1.artistID) }.map {
            .object([owner: .string($0.ownerID), "artist_id": .string($0.artistID), "position": .number(Double($0.position))])
        }).serialized()
        var query = PostgresQuery(
            unsafeSQL: "INSERT INTO \(table) (\(owner), artist_id, position) SELECT \(owner), artist_id, position FROM jsonb_to_recordset($1::jsonb) AS x(\(owner) text, artist_id text, position integer) ON CONFLICT (\(owner), artist_id) DO UPDATE SET position = EXCLUDED.position")
        query.binds.append(records)
        return query
    }

    private static func sqlType(_ type: EntityRow.ColumnType) -> String {
        switch type {
        case .text: "text"
        case .integer: "integer"
        case .boolean: "boolean"
        case .textArray: "text[]"
        }
    }

    public func migrate() async throws -> [Int] {
        try await self.client.withTransaction(logger: self.logger) { connection in
            // One migrator at a time, even with several proxies starting together.
            try await connection.query("SELECT pg_advisory_xact_lock(727001)", logger: self.logger)
            try await connection.query(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                logger: self.logger)
            var applied = Set<Int>()
            for try await version in try await connection.query("SELECT version FROM schema_migrations", logger: self.logger).decode(Int.self) {
                applied.insert(version)
            }
            var now: [Int] = []
            for migration in Schema.postgres where !applied.contains(migration.version) {
                for statement in migration.statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: self.logger)
                }
                try await connection.query("INSERT INTO schema_migrations (version) VALUES (\(migration.version))", logger: self.logger)
                now.append(migration.version)
            }
            return now
        }
    }

    public func list(_ kind: SpotifyEntity.Kind, nameContains: String?, limit: Int) async throws -> [StoredEntity] {
        let columns = EntityRow.columns(for: kind).map { "'\($0.name)', \($0.name)" }.joined(separator: ", ")
        var query = PostgresQuery(
            unsafeSQL: """
                SELECT jsonb_build_object('id', id, 'name', name, 'columns', jsonb_strip_nulls(jsonb_build_object(\(columns))),
                  'first_seen', to_char(first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                  'last_seen', to_char(last_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), 'raw', raw)::text
                FROM \(kind.table) WHERE $1::text IS NULL OR strpos(lower(name), lower($1::text)) > 0
                ORDER BY lower(name), id LIMIT $2
                """)
        query.binds.append(nameContains)
        query.binds.append(limit)
        var out: [StoredEntity] = []
        for try await text in try await self.client.query(query, logger: self.logger).decode(String.self) {
            out.append(try JSONDecoder().decode(StoredEntity.self, from: Data(text.utf8)))
        }
        return out
    }

    public func counts() async throws -> [String: Int] {
        let sql = StoredEntity.tables.map { "SELECT '\($0)', count(*)::bigint FROM \($0)" }.joined(separator: " UNION ALL ")
        var out: [String: Int] = [:]
        for try await (table, count) in try await self.client.query(PostgresQuery(unsafeSQL: sql), logger: self.logger).decode((String, Int).self) {
            out[table] = count
        }
        return out
    }

    public func close() async {
        self.running.cancel()
        _ = await self.running.value
    }
}
