import Foundation
import Logging
import SpotifyProxy
import Synchronization
import Testing

/// The text log handler writes what swift-log's `StreamLogHandler` writes, line for line.
@Suite struct TextLogHandlerTests {
    final class Lines: TextOutputStream, Sendable {
        let text = Mutex("")
        func write(_ string: String) { self.text.withLock { $0 += string } }
        var all: String { self.text.withLock { $0 } }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String { "the upstream reset the connection" }
    }

    /// The same statements through both handlers; each line without its timestamp (its first
    /// field: the two handlers may read the clock in different seconds).
    static func bothWrite(
        provider: Logger.MetadataProvider?, loggerMetadata: Logger.Metadata, _ statements: (inout Logger) -> Void
    ) -> (reference: [Substring], ours: [Substring]) {
        let reference = Lines()
        let ours = Lines()
        for (lines, useReference) in [(reference, true), (ours, false)] {
            var logger = Logger(label: "spotify-proxy") { label -> any LogHandler in
                useReference
                    ? StreamLogHandler(label: label, stream: lines, metadataProvider: provider)
                    : TextLogHandler(label: label, metadataProvider: provider, output: { lines.write($0) })
            }
            logger.logLevel = .debug
            for (key, value) in loggerMetadata { logger[metadataKey: key] = value }
            statements(&logger)
        }
        return (Self.withoutTimestamps(reference.all), Self.withoutTimestamps(ours.all))
    }

    /// Each line without its timestamp (its first field).
    static func withoutTimestamps(_ text: String) -> [Substring] {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.drop { $0 != " " } }
    }

    @Test("a request line written from its fields is the line the logger writes for its metadata: every field, the optional ones left out, metadata to merge")
    func requestLineFromFields() {
        var full = RequestLogLine(
            method: "GET", path: "/v1/artists/0TnOYISbd1XYRBk9myaseg", status: 200, bytes: 804, milliseconds: 2, client: "127.0.0.1:33964",
            requestID: "0c9f4ca5ddb1a0ff0000000000019dfa")
        let plain = full
        var numbers = plain
        (numbers.bytes, numbers.milliseconds, numbers.upstreamMilliseconds) = (100_000_000, 0, 0)
        var extremes = plain
        (extremes.bytes, extremes.milliseconds, extremes.upstreamMilliseconds) = (Int.max, -7, Int64.min)
        extremes.path = "/v1/search?q=Beyoncé"
        full.key = "alice"
        full.upstreamMilliseconds = 1
        full.replayed = true
        full.error = "the upstream reset the connection"
        var keys: [String] = []
        full.forEachField { key, _ in keys.append(key) }
        #expect(keys == keys.sorted())
        #expect(keys.count == 11)
        // The names and values themselves, as the proxy has always logged them.
        let literal = Lines()
        var handler = TextLogHandler(label: "spotify-proxy", output: { literal.write($0) })
        handler.log(request: full)
        #expect(
            literal.all.drop { $0 != " " }
                == " info spotify-proxy: bytes=804 client=127.0.0.1:33964 error=the upstream reset the connection key=alice method=GET ms=2"
                + " path=/v1/artists/0TnOYISbd1XYRBk9myaseg replayed=true request_id=0c9f4ca5ddb1a0ff0000000000019dfa status=200 upstream_ms=1"
                + " [SpotifyProxy] request\n")
        // Above `info`, nothing.
        handler.logLevel = .warning
        handler.log(request: full)
        #expect(literal.all.split(separator: "\n").count == 1)

        let providers: [Logger.MetadataProvider?] = [nil, Logger.MetadataProvider { ["trace": "t-1"] }]
        for provider in providers {
            for loggerMetadata: Logger.Metadata in [[:], ["worker": "1"]] {
                let reference = Lines()
                let ours = Lines()
                var logger = Logger(label: "spotify-proxy") { StreamLogHandler(label: $0, stream: reference, metadataProvider: provider) }
                var handler = TextLogHandler(label: "spotify-proxy", metadataProvider: provider, output: { ours.write($0) })
                for (key, value) in loggerMetadata {
                    logger[metadataKey: key] = value
                    handler[metadataKey: key] = value
                }
                for line in [full, plain, numbers, extremes] {
                    logger.log(level: .info, RequestLogLine.message, metadata: line.metadata, source: RequestLogLine.source)
                    handler.log(request: line)
                }
                #expect(Self.withoutTimestamps(ours.all) == Self.withoutTimestamps(reference.all))
                #expect(Self.withoutTimestamps(ours.all).count == 5)
                #expect(ours.all.contains(" bytes=100000000 client=") && ours.all.contains(" ms=0 ") && ours.all.contains(" upstream_ms=0 "))
            }
        }
    }

    @Test("request lines are written from their fields for a text handler (also inside the flushing one), through the logger otherwise")
    func requestLineWriterFollowsTheHandler() {
        let lines = Lines()
        let text = TextLogHandler(label: "spotify-proxy", output: { lines.write($0) })
        let writer = BufferedLogWriter { _ in }
        #expect(RequestLogLine.writer(for: Logger(label: "spotify-proxy") { _ in text }) != nil)
        #expect(RequestLogLine.writer(for: Logger(label: "spotify-proxy") { _ in FlushingLogHandler(text, writer: writer) }) != nil)
        #expect(RequestLogLine.writer(for: Logger(label: "spotify-proxy") { label in FlushingLogHandler(JSONLogHandler(label: label), writer: writer) }) == nil)
        #expect(RequestLogLine.writer(for: Logger(label: "spotify-proxy") { StreamLogHandler.standardError(label: $0) }) == nil)
        let line = RequestLogLine(method: "GET", path: "/v1/me", status: 200, bytes: 2, milliseconds: 1, client: "127.0.0.1:1", requestID: "r")
        RequestLogLine.writer(for: Logger(label: "spotify-proxy") { _ in FlushingLogHandler(text, writer: writer) })?(line)
        #expect(lines.all.hasSuffix(" info spotify-proxy: bytes=2 client=127.0.0.1:1 method=GET ms=1 path=/v1/me request_id=r status=200 [SpotifyProxy] request\n"))
        // Into a writer's batch, as `serve` sets it up: the same line.
        let batches = Lines()
        let batched = BufferedLogWriter { batches.write(String(decoding: $0, as: UTF8.self)) }
        RequestLogLine.writer(for: Logger(label: "spotify-proxy") { label in FlushingLogHandler(TextLogHandler(label: label, writer: batched), writer: batched) })?(line)
        #expect(batches.all.isEmpty)
        batched.flush()
        #expect(batches.all.hasSuffix(" info spotify-proxy: bytes=2 client=127.0.0.1:1 method=GET ms=1 path=/v1/me request_id=r status=200 [SpotifyProxy] request\n"))
        #expect(batches.all.split(separator: "\n").count == 1)
    }

    @Test("a request line, lines without metadata, with the logger's own, with a provider's, with an error")
    func sameAsStreamLogHandler() {
        // Built once: a dictionary value prints in its hash order, which differs between two
        // dictionaries of the same contents.
        let nested: Logger.MetadataValue = ["a": "1", "b": ["x", "y"]]
        let statements: (inout Logger) -> Void = { logger in
            logger.info(
                "request",
                metadata: [
                    "method": "GET", "path": "/v1/artists/0TnOYISbd1XYRBk9myaseg", "status": "200", "bytes": "804", "ms": "2",
                    "client": "127.0.0.1:33964", "request_id": "0c9f4ca5ddb1a0ff0000000000019dfa",
                ])
            logger.notice("listening")
            logger.warning("upstream failing", metadata: ["nested": nested])
            logger.debug("token refreshed", metadata: ["expires_in": .stringConvertible(3600)])
            logger.error("sink failed", error: Failure())
        }
        let plain = Self.bothWrite(provider: nil, loggerMetadata: [:], statements)
        #expect(plain.ours == plain.reference)
        #expect(plain.ours.count == 6)
        #expect(plain.ours[0] == " info spotify-proxy: bytes=804 client=127.0.0.1:33964 method=GET ms=2 path=/v1/artists/0TnOYISbd1XYRBk9myaseg request_id=0c9f4ca5ddb1a0ff0000000000019dfa status=200 [SpotifyProxyTests] request")

        let provider = Logger.MetadataProvider { ["trace": "t-1", "path": "overridden by the line"] }
        let merged = Self.bothWrite(provider: provider, loggerMetadata: ["listener": "127.0.0.1:8080"], statements)
        #expect(merged.ours == merged.reference)
        #expect(merged.ours[0].contains("listener=127.0.0.1:8080") && merged.ours[0].contains("trace=t-1"))
    }

    /// A value whose text logs through the logger that is writing it.
    struct LogsWhenPrinted: CustomStringConvertible, Sendable {
        let logger: Logger
        var description: String {
            self.logger.info("from a description")
            return "printed"
        }
    }

    @Test("through a writer, as `serve` sets it up: StreamLogHandler's lines, with an empty label too; a value whose text logs does not deadlock")
    func throughAWriter() {
        for label in ["spotify-proxy", ""] {
            let reference = Lines()
            let batches = Lines()
            let writer = BufferedLogWriter { batches.write(String(decoding: $0, as: UTF8.self)) }
            let loggers = [
                Logger(label: label) { StreamLogHandler(label: $0, stream: reference, metadataProvider: nil) },
                Logger(label: label) { FlushingLogHandler(TextLogHandler(label: $0, writer: writer), writer: writer) },
            ]
            for logger in loggers {
                logger.info("plain")
                logger.warning("Beyoncé", metadata: ["é": "ü", "n": "1"])
                logger.info("outer", metadata: ["value": .stringConvertible(LogsWhenPrinted(logger: logger))])
                logger.error("failed", error: Failure())
            }
            writer.flush()
            #expect(Self.withoutTimestamps(batches.all) == Self.withoutTimestamps(reference.all))
            #expect(Self.withoutTimestamps(batches.all).count == 6)
        }
    }

    @Test("the timestamp is local time to the second, formatted again only when the second changes")
    func timestamps() {
        let lines = Lines()
        let second = Mutex(1_764_504_000)
        let handler = TextLogHandler(label: "l", output: { lines.write($0) }, now: { second.withLock { $0 } })
        let logger = Logger(label: "l") { _ in handler }
        logger.info("a")
        logger.info("b")
        second.withLock { $0 += 1 }
        logger.info("c")
        let stamps = lines.all.split(separator: "\n").map { $0.prefix { $0 != " " } }
        func expected(_ seconds: Int) -> String {
            var time = time_t(seconds)
            var parts = tm()
            localtime_r(&time, &parts)
            var buffer = [CChar](repeating: 0, count: 64)
            let count = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
            return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        #expect(stamps == [Substring(expected(1_764_504_000)), Substring(expected(1_764_504_000)), Substring(expected(1_764_504_001))])
    }
}
