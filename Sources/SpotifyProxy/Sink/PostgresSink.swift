import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import ServiceLifecycle
import SpotifyCatalog
import Synchronization

/// Stores entities in PostgreSQL through postgres-nio's pooled client. A batch is a few
/// statements, each an `INSERT … SELECT FROM jsonb_to_recordset($1) … ON CONFLICT DO UPDATE`
/// carrying up to `rowsPerStatement` rows of one table in a single parameter (see `write`).
public final class PostgresSink: EntitySink {
    private let client: PostgresClient
    private let logger: Logger
    static let maximumConnections = 4

    private let endpoint: Endpoint
    private let connectTimeout: Duration

    public init(url: String, connectTimeout: Duration = .seconds(3), logger: Logger) throws(ConfigurationError) {
        self.endpoint = try Endpoint(url: url)
        self.connectTimeout = connectTimeout
        var configuration = self.endpoint.clientConfiguration
        configuration.options.connectTimeout = .milliseconds(Int64(connectTimeout.milliseconds))
        configuration.options.maximumConnections = Self.maximumConnections
        // The pool's own lines (a failed connection attempt is `info`, one per retry) would flood
        // the log while PostgreSQL is down: the sink reports the outage itself, once.
        var background = logger
        background.logLevel = max(logger.logLevel, .warning)
        let start = StartSignal()
        background.handler = LeaseRaceFilter(background.handler, start: start)
        self.client = PostgresClient(configuration: configuration, backgroundLogger: background)
        self.pool = Pool(self.client, start: start)
        self.logger = logger
    }

    /// The connection pool, which must run while the sink is used.
    public var service: (any Service)? { self.pool }
    private let pool: Pool

    /// Runs the pool; the sink's queries wait until it has been started.
    private final class Pool: Service {
        let client: PostgresClient
        let start: StartSignal

        init(_ client: PostgresClient, start: StartSignal) {
            self.client = client
            self.start = start
        }

        func run() async throws {
            self.start.signal()
            await self.client.run()
        }

        func started() async { await self.start.wait() }
    }

    /// Set once when the pool's `run()` is called; `wait()` returns from then on.
    final class StartSignal: Sendable {
        private let state = Mutex<(started: Bool, waiting: [CheckedContinuation<Void, Never>])>((false, []))

        var isSet: Bool { self.state.withLock { $0.started } }

        func signal() {
            let waiting = self.state.withLock { state in
                state.started = true
                defer { state.waiting = [] }
                return state.waiting
            }
            for waiter in waiting { waiter.resume() }
        }

        func wait() async {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = self.state.withLock { state in
                    if !state.started { state.waiting.append(continuation) }
                    return state.started
                }
                if now { continuation.resume() }
            }
        }
    }

    /// The pool's background logger, less postgres-nio's warning of a lease asked for before
    /// `PostgresClient.run()` once the sink has called `run()`. The client marks itself running
    /// on the first line of `run()`, which a query released by ``StartSignal`` can reach first on
    /// another thread (seen in CI as a stray warning from `migrate`); the query is queued and
    /// served all the same. Before `run()` is called the warning is a real mistake, and passes.
    struct LeaseRaceFilter: LogHandler {
        static let message = "Trying to lease connection from `PostgresClient`, but `PostgresClient.run()` hasn't been called yet."
        private var inner: any LogHandler
        let start: StartSignal

        init(_ inner: any LogHandler, start: StartSignal) {
            self.inner = inner
            self.start = start
        }

        var logLevel: Logger.Level {
            get { self.inner.logLevel }
            set { self.inner.logLevel = newValue }
        }

        var metadata: Logger.Metadata {
            get { self.inner.metadata }
            set { self.inner.metadata = newValue }
        }

        var metadataProvider: Logger.MetadataProvider? {
            get { self.inner.metadataProvider }
            set { self.inner.metadataProvider = newValue }
        }

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { self.inner[metadataKey: key] }
            set { self.inner[metadataKey: key] = newValue }
        }

        func log(event: LogEvent) {
            if event.level == .warning, event.message.description == Self.message, self.start.isSet { return }
            self.inner.log(event: event)
        }
    }

    /// Logs in once and asks `SELECT 1`, within `sink.connect_timeout` for each step. The pool
    /// would keep retrying in the background while a query waits (a minute, then an internal
    /// error); a command should say at once that the server is not there, or refuses the login.
    public func checkReachable() async throws {
        let (host, port) = (self.endpoint.host, self.endpoint.port)
        let timeout = TimeAmount.milliseconds(Int64(self.connectTimeout.milliseconds))
        do {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connectTimeout(timeout)
                .connect(host: host, port: port).get()
            try? await channel.close()
        } catch {
            throw SinkError(
                "cannot connect to PostgreSQL at \(host):\(port) (sink.url or DATABASE_URL): \(SinkError.cause(of: error)); "
                    + "is the server running there, and does the URL name the right host and port?")
        }
        var login = try self.endpoint.connectionConfiguration()
        login.options.connectTimeout = timeout
        let configuration = login
        let logger = self.logger
        do {
            try await Self.within(
                self.connectTimeout,
                else: SinkError(
                    "PostgreSQL at \(host):\(port) (sink.url or DATABASE_URL) accepted a connection but did not complete a login within "
                        + "\(self.connectTimeout) (sink.connect_timeout): is it a PostgreSQL server, and does the URL's sslmode fit it?")
            ) {
                let connection = try await PostgresConnection.connect(
                    on: MultiThreadedEventLoopGroup.singleton.next(), configuration: configuration, id: 0, logger: logger
                ).get()
                do {
                    for try await _ in try await connection.query("SELECT 1", logger: logger) {}
                    try await connection.close()
                } catch {
                    try? await connection.close()
                    throw error
                }
            }
        } catch let error as SinkError {
            throw error
        } catch {
            throw SinkError("PostgreSQL at \(host):\(port) (sink.url or DATABASE_URL) could not be used: \(SinkError.describe(error))")
        }
    }

    /// `body`'s outcome, or `failure` once `timeout` has passed; `body` is then left to end on
    /// its own (for commands, which exit right after).
    static func within(
        _ timeout: Duration, else failure: SinkError, _ body: @escaping @Sendable () async throws -> Void
    ) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let outcome = FirstOutcome(continuation)
            Task {
                do {
                    try await body()
                    outcome.finish(.success(()))
                } catch {
                    outcome.finish(.failure(error))
                }
            }
            Task {
                try? await Task.sleep(for: timeout)
                outcome.finish(.failure(failure))
            }
        }
    }

    /// Resumes a continuation with the first result it is given; later ones are dropped.
    private final class FirstOutcome: Sendable {
        private let pending: Mutex<CheckedContinuation<Void, any Error>?>
        init(_ continuation: CheckedContinuation<Void, any Error>) { self.pending = Mutex(continuation) }
        func finish(_ result: Result<Void, any Error>) {
            self.pending.withLock { pending in
                pending?.resume(with: result)
                pending = nil
            }
        }
    }

    /// `postgres://user:password@host:port/database?sslmode=disable|prefer|require`, checked.
    public static func configuration(from url: String) throws(ConfigurationError) -> PostgresClient.Configuration {
        try Endpoint(url: url).clientConfiguration
    }

    /// A PostgreSQL URL, parsed once: what the pool and a single login need.
    struct Endpoint: Sendable {
        enum TLSMode: Sendable { case disable, prefer, require }
        var host: String
        var port: Int
        var username: String
        var password: String?
        var database: String?
        var tls: TLSMode

        init(url: String) throws(ConfigurationError) {
            guard let components = URLComponents(string: url), ["postgres", "postgresql"].contains(components.scheme ?? ""),
                let host = components.host, !host.isEmpty
            else {
                throw ConfigurationError(
                    "sink.url (or DATABASE_URL) is not a PostgreSQL URL: expected postgres://USER:PASSWORD@HOST:PORT/DATABASE")
            }
            let mode = components.queryItems?.first { $0.name == "sslmode" }?.value ?? "prefer"
            switch mode {
            case "disable": self.tls = .disable
            case "prefer": self.tls = .prefer
            case "require", "verify-full": self.tls = .require
            default: throw ConfigurationError("sink.url: sslmode=\(mode) is not supported; use disable, prefer or require")
            }
            self.host = host
            self.port = components.port ?? 5432
            self.username = components.user ?? "postgres"
            self.password = components.password
            self.database = components.path.split(separator: "/").first.map(String.init)
        }

        var clientConfiguration: PostgresClient.Configuration {
            let tls: PostgresClient.Configuration.TLS
            switch self.tls {
            case .disable: tls = .disable
            case .prefer: tls = .prefer(.makeClientConfiguration())
            case .require: tls = .require(.makeClientConfiguration())
            }
            return PostgresClient.Configuration(
                host: self.host, port: self.port, username: self.username, password: self.password, database: self.database, tls: tls)
        }

        func connectionConfiguration() throws -> PostgresConnection.Configuration {
            let tls: PostgresConnection.Configuration.TLS
            switch self.tls {
            case .disable: tls = .disable
            case .prefer: tls = .prefer(try NIOSSLContext(configuration: .makeClientConfiguration()))
            case .require: tls = .require(try NIOSSLContext(configuration: .makeClientConfiguration()))
            }
            return PostgresConnection.Configuration(
                host: self.host, port: self.port, username: self.username, password: self.password, database: self.database, tls: tls)
        }
    }

    /// Rows per statement: small enough that serialising one overlaps the server's work on
    /// others, large enough that round trips stay few (a batch of 1,000 entities is about ten).
    static let rowsPerStatement = 256

    public func write(_ batch: EntityBatch) async throws {
        await self.pool.started()
        // Each table's rows, sorted by id (one lock order for every writer), cut into statements
        // run on up to four pooled connections at once. Each statement is atomic and an
        // idempotent upsert of its own rows, so a failure of any spools the whole batch for a
        // safe replay.
        let entities = [(SpotifyEntity.Kind.track, batch.tracks), (.artist, batch.artists), (.album, batch.albums)]
        let links = [("track_artists", "track_id", batch.trackArtists), ("album_artists", "album_id", batch.albumArtists)]
        // One time for every row of the batch.
        let seen = batch.seenTime
        var statements: [@Sendable () -> PostgresQuery] = []
        for (kind, table) in entities {
            for rows in EntityRow.rows(table).chunks(of: Self.rowsPerStatement) {
                statements.append { Self.entityStatement(kind, rows, seenAt: seen) }
            }
        }
        for (table, owner, tableLinks) in links {
            let sorted = tableLinks.values.sorted { ($0.ownerID, $0.artistID) < ($1.ownerID, $1.artistID) }
            for chunk in Self.ownerChunks(sorted) {
                statements.append { Self.linkStatement(table, owner: owner, chunk) }
            }
        }
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                var pending = statements[...]
                func startNext() {
                    guard let statement = pending.popFirst() else { return }
                    group.addTask { try await self.client.query(statement(), logger: self.logger) }
                }
                for _ in 0..<Self.maximumConnections { startNext() }
                while try await group.next() != nil { startNext() }
            }
        } catch let error as PSQLError where Self.refusesData(error) {
            // A value PostgreSQL will never take would hold this batch, and every batch after it,
            // in the spool for good: its rows go one at a time instead, and those refused are
            // left out, each named in an error line.
            try await self.writeOneByOne(entities, links, seenAt: seen)
        }
    }

    /// A refusal of the data itself (SQLSTATE class 22, a data exception; 23, a constraint; 54,
    /// a limit such as an index row's size), which no retry changes.
    static func refusesData(_ error: PSQLError) -> Bool {
        guard let state = error.serverInfo?[.sqlState] else { return false }
        return ["22", "23", "54"].contains(String(state.prefix(2)))
    }

    private func writeOneByOne(
        _ entities: [(SpotifyEntity.Kind, [String: SpotifyEntity])], _ links: [(String, String, [String: EntityLink])], seenAt seen: Date
    ) async throws {
        func refused(_ what: String, _ error: PSQLError) {
            self.logger.error(
                "PostgreSQL refused \(what); it is left out of the library (the answer itself was served)",
                metadata: ["error": "\(SinkError.describe(error))", "sqlstate": "\(error.serverInfo?[.sqlState] ?? "-")"])
        }
        for (kind, table) in entities {
            for row in EntityRow.rows(table) {
                do {
                    try await self.client.query(Self.entityStatement(kind, [row][...], seenAt: seen), logger: self.logger)
                } catch let error as PSQLError where Self.refusesData(error) {
                    refused("the \(kind.table.dropLast()) \(row.id)", error)
                }
            }
        }
        for (table, owner, tableLinks) in links {
            // One owner's links at a time: a statement replaces its owners' links whole.
            for owned in Dictionary(grouping: tableLinks.values, by: \.ownerID).sorted(by: { $0.key < $1.key }) {
                do {
                    try await self.client.query(Self.linkStatement(table, owner: owner, owned.value[...]), logger: self.logger)
                } catch let error as PSQLError where Self.refusesData(error) {
                    refused("the artists of \(owned.key) in \(table)", error)
                }
            }
        }
    }

    /// `INSERT … SELECT FROM jsonb_to_recordset($1) … ON CONFLICT DO UPDATE` for the given rows of one table.
    /// `seenAt` is the rows' `last_seen` and `first_seen`, neither moved the wrong way by a batch replayed late.
    static func entityStatement(_ kind: SpotifyEntity.Kind, _ rows: ArraySlice<EntityRow>, seenAt: Date) -> PostgresQuery {
        let columns = EntityRow.columns(for: kind)
        let names = (["id", "name"] + columns.map(\.name) + ["raw"]).joined(separator: ", ")
        let types = (["id text", "name text"] + columns.map { "\($0.name) \(Self.sqlType($0.type))" } + ["raw jsonb"]).joined(separator: ", ")
        let updates = (["name = EXCLUDED.name"] + columns.map { "\($0.name) = COALESCE(EXCLUDED.\($0.name), t.\($0.name))" }
            + ["raw = spotify_proxy_merge(t.raw, EXCLUDED.raw)", "first_seen = LEAST(t.first_seen, EXCLUDED.first_seen)", "last_seen = GREATEST(t.last_seen, EXCLUDED.last_seen)"]).joined(separator: ", ")
        let records = Self.withoutNUL(
            JSONValue.array(rows.map { row in
                var object = row.columns
                object["id"] = .string(row.id)
                object["name"] = .string(row.name)
                object["raw"] = row.raw
                return .object(object)
            }).serialized())
        var query = PostgresQuery(
            unsafeSQL:
                "INSERT INTO \(kind.table) AS t (\(names), first_seen, last_seen) SELECT \(names), $2::timestamptz, $2::timestamptz FROM jsonb_to_recordset($1::jsonb) AS x(\(types)) ON CONFLICT (id) DO UPDATE SET \(updates)"
        )
        query.binds.append(records)
        query.binds.append(seenAt)
        return query
    }

    /// `json` (as ``JSONValue/serialized()`` writes it) with each NUL in a string, `\u0000`,
    /// written as U+FFFD: `jsonb` refuses it (SQLSTATE 22P05), and one refused row would hold
    /// every later batch in the spool. An escaped backslash followed by `u0000` is text, and stays.
    static func withoutNUL(_ json: String) -> String {
        guard json.contains("\\u0000") else { return json }
        var bytes = Array(json.utf8)
        var index = 0
        while index < bytes.count - 1 {
            guard bytes[index] == UInt8(ascii: "\\") else {
                index += 1
                continue
            }
            if bytes[index + 1] == UInt8(ascii: "u"), bytes[(index + 2)...].starts(with: "0000".utf8) {
                bytes.replaceSubrange((index + 2)..<(index + 6), with: "fffd".utf8)
            }
            // The escape's next byte is never the start of another (`\\` is one backslash).
            index += 2
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Sorted links cut into statements of about ``rowsPerStatement``, never between two links of
    /// one owner: each statement replaces its owners' links whole (``linkStatement(_:owner:_:)``).
    static func ownerChunks(_ sorted: [EntityLink]) -> [ArraySlice<EntityLink>] {
        var chunks: [ArraySlice<EntityLink>] = []
        var start = 0
        for index in sorted.indices.dropFirst() where index - start >= Self.rowsPerStatement && sorted[index].ownerID != sorted[index - 1].ownerID {
            chunks.append(sorted[start..<index])
            start = index
        }
        if start < sorted.count { chunks.append(sorted[start...]) }
        return chunks
    }

    /// Upserts `links` and removes the other links of their owners (an artist an album or track
    /// no longer lists), in one statement: the delete and the insert touch different rows.
    static func linkStatement(_ table: String, owner: String, _ links: ArraySlice<EntityLink>) -> PostgresQuery {
        let records = JSONValue.array(links.map {
            .object([owner: .string($0.ownerID), "artist_id": .string($0.artistID), "position": .number(Double($0.position))])
        }).serialized()
        var query = PostgresQuery(
            unsafeSQL: "WITH x AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS x(\(owner) text, artist_id text, position integer)), "
                + "gone AS (DELETE FROM \(table) t WHERE t.\(owner) IN (SELECT \(owner) FROM x) AND NOT EXISTS (SELECT 1 FROM x WHERE x.\(owner) = t.\(owner) AND x.artist_id = t.artist_id)) "
                + "INSERT INTO \(table) (\(owner), artist_id, position) SELECT \(owner), artist_id, position FROM x ON CONFLICT (\(owner), artist_id) DO UPDATE SET position = EXCLUDED.position")
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
        await self.pool.started()
        return try await self.client.withTransaction(logger: self.logger) { connection in
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
        await self.pool.started()
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
        await self.pool.started()
        let sql = StoredEntity.tables.map { "SELECT '\($0)', count(*)::bigint FROM \($0)" }.joined(separator: " UNION ALL ")
        var out: [String: Int] = [:]
        for try await (table, count) in try await self.client.query(PostgresQuery(unsafeSQL: sql), logger: self.logger).decode((String, Int).self) {
            out[table] = count
        }
        return out
    }

    /// The pool stops with its service.
    public func close() async {}
}

extension Array {
    /// Consecutive slices of at most `size` elements.
    func chunks(of size: Int) -> [ArraySlice<Element>] {
        stride(from: 0, to: self.count, by: size).map { self[$0..<Swift.min($0 + size, self.count)] }
    }
}
