import Foundation
import NIOCore
import NIOPosix
import PostgresNIO
import ServiceLifecycle
import SpotifyCatalog

/// Where extracted entities are stored. Writes are idempotent upserts, so a batch that is
/// written twice (a replay after a crash) changes nothing the second time.
public protocol EntitySink: Sendable {
    /// Applies `batch`; throws when it was not stored (the tee then spools it).
    func write(_ batch: EntityBatch) async throws
    /// Applies pending schema migrations; returns the versions applied now.
    func migrate() async throws -> [Int]
    /// Reads stored entities back, for `spotify-proxy library`.
    func list(_ kind: SpotifyEntity.Kind, nameContains: String?, limit: Int) async throws -> [StoredEntity]
    /// Rows per table (`artists`, `albums`, `tracks`, `album_artists`, `track_artists`).
    func counts() async throws -> [String: Int]
    /// Fails quickly, with a sentence a person can act on, when the database cannot be reached
    /// (commands call it first instead of waiting on a connection pool's retries).
    func checkReachable() async throws
    /// What must run in the background while the sink is used (PostgreSQL's connection pool):
    /// a service of the proxy's `ServiceGroup`, or run by ``withRunningSink(_:isolation:_:)``. Nil for
    /// sinks that need nothing.
    var service: (any Service)? { get }
    func close() async
}

extension EntitySink {
    public func checkReachable() async throws {}
    public var service: (any Service)? { nil }
}

/// Runs `body` with `sink`'s background service running, stopped when `body` ends: for
/// commands and tests, which use a sink without the proxy's `ServiceGroup`.
public func withRunningSink<T>(
    _ sink: any EntitySink, isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> T
) async throws -> T {
    guard let service = sink.service else { return try await body() }
    // `body` runs where it was called; the service beside it, awaited before returning.
    let running = Task { try await service.run() }
    do {
        let result = try await body()
        running.cancel()
        _ = try? await running.value
        return result
    } catch {
        running.cancel()
        _ = try? await running.value
        throw error
    }
}

/// A database that could not be used, with a message that says where and why.
public struct SinkError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { self.message }

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
}

extension EntityBatch {
    /// When its entities were seen, for a sink's `first_seen`/`last_seen`: the batch's time, or
    /// now for a batch that has none (spooled before batches carried it). Read once per write.
    var seenTime: Date { self.seenAt ?? Date() }
}

/// One stored row, as `spotify-proxy library` prints it.
public struct StoredEntity: Sendable, Equatable, Codable {
    enum CodingKeys: String, CodingKey {
        case id, name, columns
        case firstSeen = "first_seen"
        case lastSeen = "last_seen"
        case raw
    }

    /// The tables `counts()` reports, in this order.
    public static let tables = ["artists", "albums", "tracks", "album_artists", "track_artists"]

    public var id: String
    public var name: String
    /// The typed columns of the row's table, by column name (absent when NULL).
    public var columns: [String: JSONValue]
    public var firstSeen: String
    public var lastSeen: String

    /// A time as `firstSeen` and `lastSeen` hold it, `2026-12-03T08:10:03Z`: UTC to the second,
    /// as SQLite's `strftime('%Y-%m-%dT%H:%M:%SZ')` writes it, text that sorts as time does.
    static func timestamp(_ date: Date) -> String {
        ISO8601DateFormatter().string(from: date)
    }
    /// The richest object seen, merged, with Spotify's own links.
    public var raw: JSONValue?
}

/// The typed columns of each table, projected from an entity's fields. Shared by every sink,
/// so Postgres, SQLite and JSON lines agree on what a column means.
struct EntityRow: Sendable {
    var id: String
    var name: String
    var raw: JSONValue
    var columns: [String: JSONValue]

    static func columns(for kind: SpotifyEntity.Kind) -> [(name: String, type: ColumnType)] {
        switch kind {
        case .artist: [("popularity", .integer), ("followers", .integer), ("genres", .textArray)]
        case .album: [("album_type", .text), ("release_date", .text), ("total_tracks", .integer), ("label", .text)]
        case .track:
            [
                ("album_id", .text), ("duration_ms", .integer), ("explicit", .boolean), ("popularity", .integer),
                ("track_number", .integer), ("disc_number", .integer), ("isrc", .text),
            ]
        }
    }

    enum ColumnType { case text, integer, boolean, textArray }

    /// The most characters the `name` column keeps (the whole name stays in `raw`): PostgreSQL's
    /// index of the lowered name refuses a row over 2,704 bytes, and 500 characters of UTF-8 are
    /// at most 2,000.
    static let nameLimit = 500

    init?(_ entity: SpotifyEntity) {
        guard let name = entity.name else { return nil }
        self.id = entity.id
        // A NUL is no character of a name: PostgreSQL's text refuses it, SQLite's C string ends at it.
        let named = name.contains("\u{0}") ? name.replacingOccurrences(of: "\u{0}", with: "\u{FFFD}") : name
        self.name = named.count > Self.nameLimit ? String(named.prefix(Self.nameLimit)) : named
        self.raw = .object(entity.fields)
        let fields = entity.fields
        var columns: [String: JSONValue] = [:]
        switch entity.kind {
        case .artist:
            columns["popularity"] = fields["popularity"]
            columns["followers"] = fields["followers"]?["total"]
            columns["genres"] = fields["genres"]
        case .album:
            columns["album_type"] = fields["album_type"]
            columns["release_date"] = fields["release_date"]
            columns["total_tracks"] = fields["total_tracks"]
            columns["label"] = fields["label"]
        case .track:
            columns["album_id"] = entity.albumID.map(JSONValue.string)
            columns["duration_ms"] = fields["duration_ms"]
            columns["explicit"] = fields["explicit"]
            columns["popularity"] = fields["popularity"]
            columns["track_number"] = fields["track_number"]
            columns["disc_number"] = fields["disc_number"]
            columns["isrc"] = fields["external_ids"]?["isrc"]
        }
        // Keep only values of the column's type: a surprising shape becomes NULL, never an error.
        var typed: [String: JSONValue] = [:]
        for (column, type) in Self.columns(for: entity.kind) {
            guard let value = columns[column] else { continue }
            switch (type, value) {
            case (.text, .string), (.boolean, .bool): typed[column] = value
            // The columns are 32-bit (PostgreSQL's `integer`): a larger number is no count Spotify gives.
            case (.integer, _) where value.int.flatMap(Int32.init(exactly:)) != nil: typed[column] = value
            case (.textArray, .array(let items)) where items.allSatisfy({ $0.string != nil }): typed[column] = value
            default: continue
            }
        }
        self.columns = typed
    }

    static func rows(_ entities: [String: SpotifyEntity]) -> [EntityRow] {
        entities.values.compactMap(EntityRow.init).sorted { $0.id < $1.id }
    }
}

extension SpotifyEntity.Kind {
    /// The table of this kind (also the word `spotify-proxy library` takes).
    public var table: String {
        switch self {
        case .artist: "artists"
        case .album: "albums"
        case .track: "tracks"
        }
    }
}
