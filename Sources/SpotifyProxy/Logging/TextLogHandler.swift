import Foundation
import Logging
import Synchronization

/// `--log-format text`: the lines of swift-log's `StreamLogHandler`, byte for byte
/// (`2026-11-30T14:15:26+0000 info spotify-proxy: bytes=804 method=GET [SpotifyProxy] request`),
/// made for a line per request: the timestamp is formatted once a second instead of once a line,
/// a line's own metadata is not copied into a merged dictionary when there is nothing to merge
/// it with, and the line's bytes are written straight into the ``BufferedLogWriter``'s batch.
public struct TextLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadataProvider: Logger.MetadataProvider?
    public var metadata: Logger.Metadata = [:]
    private let label: String
    /// Where a line goes: it is handed a function that appends the line's bytes to a buffer.
    private let output: Output
    private let clock: Timestamps

    typealias Output = @Sendable (_ write: (inout [UInt8]) -> Void) -> Void

    /// `output` takes whole lines; `now` (seconds since 1970) is for tests.
    public init(
        label: String, metadataProvider: Logger.MetadataProvider? = nil, output: @escaping @Sendable (String) -> Void,
        now: @escaping @Sendable () -> Int = { time(nil) }
    ) {
        self.init(label: label, metadataProvider: metadataProvider, now: now) { write in
            var line: [UInt8] = []
            write(&line)
            output(String(decoding: line, as: UTF8.self))
        }
    }

    /// Lines into `writer`'s batch, with the process's metadata provider (as `StreamLogHandler` takes it).
    public init(label: String, writer: BufferedLogWriter) {
        self.init(label: label, metadataProvider: LoggingSystem.metadataProvider, now: { time(nil) }) { write in writer.append(write) }
    }

    private init(label: String, metadataProvider: Logger.MetadataProvider?, now: @escaping @Sendable () -> Int, output: @escaping Output) {
        self.label = label
        self.metadataProvider = metadataProvider
        self.output = output
        self.clock = Timestamps(now: now)
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let provided = self.metadataProvider?.get() ?? [:]
        var metadata: Logger.Metadata?
        if provided.isEmpty, event.error == nil, self.metadata.isEmpty {
            // Its own metadata alone, nothing to merge.
            metadata = event.metadata
        } else {
            // The same precedence as StreamLogHandler: the logger's, the provider's, the line's, the error.
            var merged = self.metadata
            merged.merge(provided) { $1 }
            if let explicit = event.metadata { merged.merge(explicit) { $1 } }
            if let error = event.error {
                merged["error.message"] = "\(error)"
                merged["error.type"] = "\(String(reflecting: type(of: error)))"
            }
            metadata = merged
        }
        // The pairs sorted (no lookup per key), and their text made before the line is written:
        // a value's `description` is any code, never run under the writer's lock.
        let fields = (metadata?.sorted { $0.key < $1.key } ?? []).map { ($0.key, $0.value.description) }
        self.write(event.level, source: event.source, message: event.message.description) { line in
            for (key, value) in fields { Self.append(key, value, to: &line) }
        }
    }

    /// A request's line at `info` (nothing above that level): the bytes ``log(event:)`` writes
    /// for its ``RequestLogLine/metadata``, made from the fields in their order, with no
    /// dictionary to build, sort and look up, and numbers written as digits.
    public func log(request: RequestLogLine) {
        guard self.logLevel <= .info else { return }
        guard self.metadata.isEmpty, self.metadataProvider?.get().isEmpty ?? true else {
            // Metadata to merge with: the general way.
            return self.log(
                event: LogEvent(
                    level: .info, message: RequestLogLine.message, metadata: request.metadata, source: RequestLogLine.source,
                    file: #fileID, function: #function, line: #line))
        }
        self.write(.info, source: RequestLogLine.source, message: Self.requestMessage) { line in
            request.forEachField { key, value in
                switch value {
                case .text(let text): Self.append(key, text, to: &line)
                case .number(let number): Self.append(key, number, to: &line)
                case .flag(let flag): Self.append(key, flag ? "true" : "false", to: &line)
                }
            }
        }
    }

    private static let requestMessage = RequestLogLine.message.description

    /// `2026-11-30T14:15:26+0000 info spotify-proxy:`, the fields, ` [SpotifyProxy] request` and
    /// the newline, as one line to the output.
    private func write(_ level: Logger.Level, source: String, message: String, fields: (inout [UInt8]) -> Void) {
        let timestamp = self.clock.current()
        self.output { line in
            line.append(contentsOf: timestamp.utf8)
            line.append(UInt8(ascii: " "))
            line.append(contentsOf: level.rawValue.utf8)
            if !self.label.isEmpty { line.append(UInt8(ascii: " ")) }
            line.append(contentsOf: self.label.utf8)
            line.append(UInt8(ascii: ":"))
            fields(&line)
            line.append(contentsOf: " [".utf8)
            line.append(contentsOf: source.utf8)
            line.append(contentsOf: "] ".utf8)
            line.append(contentsOf: message.utf8)
            line.append(UInt8(ascii: "\n"))
        }
    }

    /// ` key=value`.
    private static func append(_ key: String, _ value: String, to line: inout [UInt8]) {
        line.append(UInt8(ascii: " "))
        line.append(contentsOf: key.utf8)
        line.append(UInt8(ascii: "="))
        line.append(contentsOf: value.utf8)
    }

    /// ` key=123`, the digits written in place.
    private static func append(_ key: String, _ value: Int64, to line: inout [UInt8]) {
        line.append(UInt8(ascii: " "))
        line.append(contentsOf: key.utf8)
        line.append(UInt8(ascii: "="))
        if value < 0 { line.append(UInt8(ascii: "-")) }
        var magnitude = value.magnitude
        // Made from the last digit back, on the stack (20 digits hold any UInt64).
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var start = digits.count
            repeat {
                start -= 1
                digits[start] = UInt8(ascii: "0") + UInt8(magnitude % 10)
                magnitude /= 10
            } while magnitude > 0
            line.append(contentsOf: UnsafeMutableBufferPointer(rebasing: digits[start...]))
        }
    }

    /// The local time as `%Y-%m-%dT%H:%M:%S%z`, formatted when the second changes.
    final class Timestamps: Sendable {
        private let now: @Sendable () -> Int
        private let last = Mutex<(second: Int, text: String)>((Int.min, ""))

        init(now: @escaping @Sendable () -> Int) {
            self.now = now
        }

        func current() -> String {
            let second = self.now()
            if let kept = self.last.withLock({ $0.second == second ? $0.text : nil }) { return kept }
            let text = Self.format(second)
            // A thread that read the clock earlier never puts an older second back.
            self.last.withLock { if second > $0.second { $0 = (second, text) } }
            return text
        }

        static func format(_ second: Int) -> String {
            var seconds = time_t(second)
            var parts = tm()
            guard localtime_r(&seconds, &parts) != nil else { return "<unknown>" }
            var buffer = [CChar](repeating: 0, count: 64)
            let count = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
            return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
    }
}
