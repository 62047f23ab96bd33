import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO

/// Stores entities in PostgreSQL through postgres-nio's pooled client. A batch is a few
/// statements, each an `INSERT … SELECT FROM jsonb_to_recordset($1) … ON CONFLICT DO UPDATE`
/// carrying up to `rowsPerStatement` rows of one table in a single parameter (see `write`).
public final class PostgresSink: EntitySink {
    private let client: PostgresClient
    private let running: Task<Void, Never>
    private let logger: Logger
    static let maximumConnections = 4

    private let host: String
    private let port: Int
    private let connectTimeout: Duration

    public init(url: String, connectTimeout: Duration = .seconds(3), logger: Logger) throws(ConfigurationError) {
        var configuration = try Self.configuration(from: url)
        self.host = configuration.host ?? "localhost"
        self.port = configuration.port ?? 5432
        self.connectTimeout = connectTimeout
        configuration.options.connectTimeout = .milliseconds(Int64(connectTimeout.milliseconds))
        configuration.options.maximumConnections = Self.maximumConnections
        self.client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        self.logger = logger
        let client = self.client
        self.running = Task { await client.run() }
    }

    /// Opens (and closes) one TCP connection to the server within `sink.connect_timeout`. The
    /// pool would keep retrying in the background while a query waits; a command should say at
    /// once that the server is not there.
    public func checkReachable() async throws {
        do {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.milliseconds(Int64(self.connectTimeout.milliseconds)))
                .connect(host: self.host, port: self.port).get()
            try? await channel.close()
        } catch {
            throw SinkError(
                "cannot connect to PostgreSQL at \(self.host):\(self.port) (sink.url or DATABASE_URL): \(Self.cause(of: error)); "
                    + "is the server running there, and does the URL name the right host and port?")
        }
    }

    /// Any error of a sink operation in words a person can act on (never a type's internals).
    public static func describe(_ error: any Error) -> String {
        switch error {
        case let error as PSQLError:
            if let message = error.serverInfo?[.message] { return "PostgreSQL said: \(message)" }
            return "\(error.code)" + (error.underlying.map { ": \(Self.cause(of: $0))" } ?? "")
        case let error as SinkError: return error.message
        case let error as ConfigurationError: return error.message
        case let error as SQLiteSink.SQLiteError: return error.description
        default:
            return Self.cause(of: error)
        }
    }

    /// A connection failure in words: the socket error, not NIO's type names.
    static func cause(of error: any Error) -> String {
        switch error {
        case let error as NIOConnectionError:
            if let failure = error.connectionErrors.first { return Self.cause(of: failure.error) }
            if let dns = error.dnsAAAAError ?? error.dnsAError { return "cannot resolve \(error.host): \(dns)" }
            return "no address found for \(error.host)"
        case let error as IOError:
            return String(cString: strerror(error.errnoCode)).lowercased()
        case ChannelError.connectTimeout(let timeout):
            return "no answer within \(Double(timeout.nanoseconds) / 1e9) s (sink.connect_timeout)"
        default:
            return "\(error)"
        }
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

    /// Rows per statement: small enough that serialising one overlaps the server's work on
    /// others, large enough that round trips stay few (a batch of 1,000 entities is about ten).
    static let rowsPerStatement = 256

    public func write(_ batch: EntityBatch) async throws {
        // Each table's rows, sorted by id (one lock order for every writer), cut into statements
        // run on up to four pooled connections at once. Each statement is atomic and an
        // idempotent upsert of its own rows, so a failure of any spools the whole batch for a
        // safe replay.
        let entities = [(SpotifyEntity.Kind.track, batch.tracks), (.artist, batch.artists), (.album, batch.albums)]
        let links = [("track_artists", "track_id", batch.trackArtists), ("album_artists", "album_id", batch.albumArtists)]
        var statements: [@Sendable () -> PostgresQuery] = []
        for (kind, table) in entities {
            for rows in EntityRow.rows(table).chunks(of: Self.rowsPerStatement) {
                statements.append { Self.entityStatement(kind, rows) }
            }
        }
        for (table, owner, tableLinks) in links {
            let sorted = tableLinks.values.sorted { ($0.ownerID, $0.artistID) < ($1.ownerID, $1.artistID) }
            for chunk in sorted.chunks(of: Self.rowsPerStatement) {
                statements.append { Self.linkStatement(table, owner: owner, chunk) }
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            var pending = statements[...]
            func startNext() {
                guard let statement = pending.popFirst() else { return }
                group.addTask { try await self.client.query(statement(), logger: self.logger) }
            }
            for _ in 0..<Self.maximumConnections { startNext() }
            while try await group.next() != nil { startNext() }
        }
    }

    /// `INSERT … SELECT FROM jsonb_to_recordset($1) … ON CONFLICT DO UPDATE` for the given rows of one table.
    static func entityStatement(_ kind: SpotifyEntity.Kind, _ rows: ArraySlice<EntityRow>) -> PostgresQuery {
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

    static func linkStatement(_ table: String, owner: String, _ links: ArraySlice<EntityLink>) -> PostgresQuery {
        let records = JSONValue.array(links.map {
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

extension Array {
    /// Consecutive slices of at most `size` elements.
    func chunks(of size: Int) -> [ArraySlice<Element>] {
        stride(from: 0, to: self.count, by: size).map { self[$0..<Swift.min($0 + size, self.count)] }
    }
}
