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
        /// Requests that waited for an identical one already on its way to Spotify (nil from a
        /// proxy older than this field: `status` still reads it).
        public var collapsed: Int?
        public var forwarded: Int
        /// The lookups answered without a Spotify request of their own (fresh and stale hits,
        /// collapsed ones) over all lookups; nil before the first.
        public var hitRatio: Double?

        public init(entries: Int, bytes: Int, maxBytes: Int, hits: Int, staleHits: Int, collapsed: Int?, forwarded: Int, hitRatio: Double?) {
            (self.entries, self.bytes, self.maxBytes, self.hits, self.staleHits) = (entries, bytes, maxBytes, hits, staleHits)
            (self.collapsed, self.forwarded, self.hitRatio) = (collapsed, forwarded, hitRatio)
        }

        /// The cache's figures now, `maxBytes` its bound.
        public init(_ stats: ResponseCache.Stats, maxBytes: Int) {
            let answered = stats.hits + stats.staleHits + stats.collapsed
            let lookups = answered + stats.misses
            self.init(
                entries: stats.entries, bytes: stats.bytes, maxBytes: maxBytes, hits: stats.hits, staleHits: stats.staleHits,
                collapsed: stats.collapsed, forwarded: stats.misses, hitRatio: lookups == 0 ? nil : Double(answered) / Double(lookups))
        }
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
    /// What the tee holds now, waiting to be extracted or stored.
    public var teeBacklog: TeeWriter.Backlog?
    /// Requests per key label ("-": without a key) over the last hour.
    public var requestsLastHour: [String: Int]
    public var openConnections: Int
    public var access: AccessState?
    public var reload: ReloadRecord.Status?
    /// What the proxy knows of development mode (``DevMode``).
    public var devMode: DevMode.Status?

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
        /// Reloads attempted since the start (applied or refused).
        public var attempts = 0
        /// When the last reload was attempted.
        public var at: Date?
        /// Why the last attempt was refused (the old configuration stays); nil when it was applied.
        public var error: String?
        /// Settings the file changes that the running proxy keeps until it restarts (the
        /// listener's address, the sink, …), as of the last reload applied; nil when none.
        public var atRestart: [String]?
    }

    private let state = Mutex(Status())

    public init() {}

    public var status: Status { self.state.withLock { $0 } }

    func applied(atRestart: [String]) {
        self.state.withLock {
            $0 = Status(generation: $0.generation + 1, attempts: $0.attempts + 1, at: Date(), error: nil, atRestart: atRestart.isEmpty ? nil : atRestart)
        }
    }

    func refused(_ error: String) {
        self.state.withLock { $0 = Status(generation: $0.generation, attempts: $0.attempts + 1, at: Date(), error: error, atRestart: $0.atRestart) }
    }
}

/// `spotify-proxy status` as text: one line per subject, figures as the proxy reported them.
public enum StatusText {
    public static func render(_ status: ProxyStatus, base: String) -> String {
        var lines = ["spotify-proxy \(status.version) (pid \(status.pid)) at \(base): " + (status.ready ? "ready" : "NOT READY: \(status.problem ?? "?")")]
        var tokenRows = [["TOKEN", "EXPIRES IN", "REFRESHES", "FAILURES"]]
        for token in status.tokens {
            tokenRows.append([token.name, token.expiresInS.map { "\($0) s" } ?? "no token", String(token.refreshes), String(token.failures)])
        }
        lines.append(TextTable.render(tokenRows))
        if let governor = status.governor {
            let limited = governor.limitedForS.map { "LIMITED by Spotify for \($0) s more" + (governor.reason.map { " (\($0))" } ?? "") } ?? "not limited"
            let local = governor.answeredLocally.isEmpty
                ? "none" : governor.answeredLocally.sorted { $0.key < $1.key }.map { "\($0.value) \($0.key)" }.joined(separator: ", ")
            lines.append("governor:  \(limited); 429s from Spotify: \(governor.upstream429s); answered 429 locally: \(local)")
        }
        if let cache = status.cache {
            let ratio = cache.hitRatio.map { String(format: "%.2f", $0) } ?? "-"
            lines.append(
                "cache:     \(cache.entries) entries, \(Self.bytes(cache.bytes)) of \(Self.bytes(cache.maxBytes)); hit ratio \(ratio) "
                    + "(\(cache.hits) fresh hits, \(cache.staleHits) stale, \(cache.collapsed ?? 0) collapsed, \(cache.forwarded) forwarded)")
        } else {
            lines.append("cache:     off")
        }
        if let tee = status.tee {
            let backlog = status.teeBacklog.map { "backlog \($0.bodies) bodies (\(Self.bytes($0.bytes))) and \($0.batches) batches to store; " } ?? ""
            lines.append(
                "tee:       \(backlog)\(tee.queued) bodies taken, \(tee.written) entities written, \(tee.spooled) spooled, \(tee.spilled) spilled, \(tee.replayed) replayed, "
                    + "\(tee.dropped) bodies dropped, \(tee.lost) entities lost; spool \(tee.spoolPending ? "has entities waiting for the database" : "empty")")
        } else {
            lines.append("tee:       off")
        }
        if let devMode = status.devMode {
            let state =
                if devMode.active {
                    "answering as for a development-mode app\(devMode.detected ? " (learned from Spotify's refusals)" : ""): "
                        + "assembled so far \(devMode.batchesAssembled) batches and \(devMode.pagesAssembled) pages beyond the limit cap of \(devMode.limitCap)"
                } else if devMode.setting == "auto" {
                    "not seen yet: no refusal from Spotify says this is a development-mode app"
                } else {
                    "forwarding as for an extended-quota app"
                }
            lines.append("dev mode:  \(devMode.setting); \(state)")
        }
        lines.append("connections: \(status.openConnections) open")
        if let access = status.access {
            lines.append("access:    " + (access.keys.map { "\($0) key\($0 == 1 ? "" : "s")" } ?? "keys off") + (access.allowOpen ? " (allow_open)" : ""))
        }
        if let reload = status.reload, let at = reload.at {
            lines.append(
                "reload:    \(reload.generation) applied since start; last at \(ISO8601DateFormatter().string(from: at))"
                    + (reload.error.map { ", REFUSED: \($0)" } ?? ""))
            if let atRestart = reload.atRestart { lines.append("           changed in the file, in force at the next restart: \(atRestart.joined(separator: ", "))") }
        }
        if status.requestsLastHour.isEmpty {
            lines.append("requests in the last hour: none")
        } else {
            var rows = [["KEY", "REQUESTS (LAST HOUR)"]]
            for (key, count) in status.requestsLastHour.sorted(by: { $0.value > $1.value }) { rows.append([key == "-" ? "(no key)" : key, String(count)]) }
            lines.append(TextTable.render(rows))
        }
        return lines.joined(separator: "\n")
    }

    static func bytes(_ count: Int) -> String {
        count >= 1 << 20 ? String(format: "%.1f MiB", Double(count) / 1048576) : String(format: "%.1f KiB", Double(count) / 1024)
    }
}
