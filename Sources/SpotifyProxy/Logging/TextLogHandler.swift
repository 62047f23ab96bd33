import Foundation
import Logging
import Synchronization

/// `--log-format text`: the lines of swift-log's `StreamLogHandler`, byte for byte
/// (`2026-11-30T14:15:26+0000 info spotify-proxy: bytes=804 method=GET [SpotifyProxy] request`),
/// made for a line per request: the timestamp is formatted once a second instead of once a line,
/// a line's own metadata is not copied into a merged dictionary when there is nothing to merge
/// it with, and the line is built in one string and handed to the ``BufferedLogWriter``.
public struct TextLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadataProvider: Logger.MetadataProvider?
    public var metadata: Logger.Metadata = [:]
    private let label: String
    private let output: @Sendable (String) -> Void
    private let clock: Timestamps

    /// `output` takes whole lines; `now` (seconds since 1970) is for tests.
    public init(
        label: String, metadataProvider: Logger.MetadataProvider? = nil, output: @escaping @Sendable (String) -> Void,
        now: @escaping @Sendable () -> Int = { time(nil) }
    ) {
        self.label = label
        self.metadataProvider = metadataProvider
        self.output = output
        self.clock = Timestamps(now: now)
    }

    /// Lines into `writer`, with the process's metadata provider (as `StreamLogHandler` takes it).
    public init(label: String, writer: BufferedLogWriter) {
        self.init(label: label, metadataProvider: LoggingSystem.metadataProvider, output: { writer.append($0) })
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.metadata[key] }
        set { self.metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var line = self.start(event.level)
        let provided = self.metadataProvider?.get() ?? [:]
        if provided.isEmpty, event.error == nil, self.metadata.isEmpty {
            // Its own metadata alone, nothing to merge.
            if let explicit = event.metadata { Self.append(explicit, to: &line) }
        } else {
            // The same precedence as StreamLogHandler: the logger's, the provider's, the line's, the error.
            var merged = self.metadata
            merged.merge(provided) { $1 }
            if let explicit = event.metadata { merged.merge(explicit) { $1 } }
            if let error = event.error {
                merged["error.message"] = "\(error)"
                merged["error.type"] = "\(String(reflecting: type(of: error)))"
            }
            Self.append(merged, to: &line)
        }
        self.finish(&line, source: event.source, message: event.message)
    }

    /// A request's line at `info` (nothing above that level): the bytes ``log(event:)`` writes
    /// for its ``RequestLogLine/metadata``, made from the fields in their order, with no
    /// dictionary to build, sort and look up.
    public func log(request: RequestLogLine) {
        guard self.logLevel <= .info else { return }
        guard self.metadata.isEmpty, self.metadataProvider?.get().isEmpty ?? true else {
            // Metadata to merge with: the general way.
            return self.log(
                event: LogEvent(
                    level: .info, message: RequestLogLine.message, metadata: request.metadata, source: RequestLogLine.source,
                    file: #fileID, function: #function, line: #line))
        }
        var line = self.start(.info)
        request.forEachField { key, value in
            line += " "
            line += key
            line += "="
            line += value
        }
        self.finish(&line, source: RequestLogLine.source, message: RequestLogLine.message)
    }

    /// `2026-11-30T14:15:26+0000 info spotify-proxy:`
    private func start(_ level: Logger.Level) -> String {
        var line = self.clock.current()
        line.reserveCapacity(256)
        line += " "
        line += level.rawValue
        if !self.label.isEmpty { line += " " }
        line += self.label
        line += ":"
        return line
    }

    /// ` [SpotifyProxy] request` and the newline; the line goes out.
    private func finish(_ line: inout String, source: String, message: Logger.Message) {
        line += " ["
        line += source
        line += "] "
        line += message.description
        line += "\n"
        self.output(line)
    }

    /// ` key=value` for each field, keys in order (the pairs sorted: no lookup per key).
    private static func append(_ metadata: Logger.Metadata, to line: inout String) {
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            line += " "
            line += key
            line += "="
            line += value.description
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
