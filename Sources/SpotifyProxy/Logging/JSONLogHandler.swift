import Foundation
import Logging
import Synchronization

/// `--log-format json`: one JSON object per line — `ts`, `level`, `label`, `message`, then the
/// metadata as string fields, whole numbers as numbers — for log shippers. Lines are written whole, in batches.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let output: Output

    /// Where lines go: standard error, or a closure (tests).
    public final class Output: Sendable {
        private let lock = Mutex(())
        private let write: @Sendable (String) -> Void

        public init(_ write: @escaping @Sendable (String) -> Void) {
            self.write = write
        }

        /// Standard error, in batches (``BufferedLogWriter/standardError``).
        public static let standardError = Output { BufferedLogWriter.standardError.append($0) }

        func emit(_ line: String) { self.lock.withLock { _ in self.write(line) } }
    }

    public init(label: String, output: Output = .standardError) {
        self.label = label
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields = self.metadata
        if let extra = event.metadata { fields.merge(extra) { $1 } }
        var line = #"{"ts":"\#(Self.timestamp())","level":"\#(event.level.rawValue)","label":"\#(SpotifyError.escape(self.label))","message":"\#(SpotifyError.escape("\(event.message)"))""#
        for key in fields.keys.sorted() where !["ts", "level", "label", "message"].contains(key) {
            // A whole number is written as a JSON number (a request line's status, ms, bytes), a
            // Bool as true or false.
            if case .stringConvertible(let value) = fields[key]!, value is any BinaryInteger || value is Bool {
                line += #","\#(SpotifyError.escape(key))":\#(value)"#
            } else {
                line += #","\#(SpotifyError.escape(key))":"\#(SpotifyError.escape("\(fields[key]!)"))""#
            }
        }
        line += "}\n"
        self.output.emit(line)
    }

    /// UTC with milliseconds: `2026-11-30T09:00:00.123Z`.
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var parts = tm()
        gmtime_r(&seconds, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min,
            parts.tm_sec, now.tv_nsec / 1_000_000)
    }
}

/// `--log-format`: text lines (`TextLogHandler`, in swift-log's `StreamLogHandler` format) or JSON lines.
public enum LogFormat: String, Sendable, CaseIterable {
    case text, json
}
