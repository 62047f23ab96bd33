import Foundation
import Synchronization

/// `GET /admin/status`, as `spotify-proxy status` reads it: one JSON document with what an
/// operator asks first. Encoded and decoded with snake_case keys and ISO 8601 dates.
public struct ProxyStatus: Codable, Sendable, Equatable {
    public struct Token: Codable, Sendable, Equatable {
        /// "app", or a user's label.
        public var name: String
        public var expiresInS: Int?
        public var refreshes: Int
        public var failures: Int

        init(figures: TokenFigures, name: String) {
            self.name = name
            self.expiresInS = figures.expiresInSeconds
            self.refreshes = figures.refreshes
            self.failures = figures.failures
        }
    }

    public struct GovernorState: Codable, Sendable, Equatable {
        /// Seconds Spotify still holds the app limited (nil: not limited).
        public var limitedForS: Int?
        public var reason: String?
        public var upstream429s: Int
        public var answeredLocally: [String: Int]
    }

    public struct CacheState: Codable, Sendable, Equatable {
        public var entries: Int
        public var bytes: Int
        public var maxBytes: Int
        public var hits: Int
        public var staleHits: Int
        public var forwarded: Int
        /// Hits (fresh and stale) over all lookups; nil before the first.
        public var hitRatio: Double?
    }

    public struct AccessState: Codable, Sendable, Equatable {
        /// How many keys are in force; nil: keys are off.
        public var keys: Int?
        public var allowOpen: Bool
    }

    public var pid: Int32
    public var version: String
    public var ready: Bool
    public var problem: String?
    public var tokens: [Token]
    public var governor: GovernorState?
    public var cache: CacheState?
    public var tee: TeeWriter.Stats?
    /// Requests per key label ("-": without a key) over the last hour.
    public var requestsLastHour: [String: Int]
    public var openConnections: Int
    public var access: AccessState?
    public var reload: ReloadRecord.Status?

    public static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }

    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}

/// The configuration reloads (SIGHUP or `spotify-proxy reload`): how many were applied, when,
/// and why the last one was refused, if it was.
public final class ReloadRecord: Sendable {
    public struct Status: Codable, Sendable, Equatable {
        /// Reloads applied since the start.
        public var generation = 0
        /// When the last reload was attempted.
        public var at: Date?
        /// Why the last attempt was refused (the old configuration stays); nil when it was applied.
        public var error: String?
    }

    private let state = Mutex(Status())

    public init() {}

    public var status: Status { self.state.withLock { $0 } }

    func applied() { self.state.withLock { $0 = Status(generation: $0.generation + 1, at: Date(), error: nil) } }
    func refused(_ error: String) { self.state.withLock { $0 = Status(generation: $0.generation, at: Date(), error: error) } }
}
