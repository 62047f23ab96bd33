import Foundation
import NIOCore
import ServiceLifecycle
import SpotifyCatalog
import SpotifyProxyTestSupport
import Testing

@testable import SpotifyProxy

@Suite("Tee drop report")
struct TeeDropReportTests {
    static func at(_ milliseconds: Int64) -> TeeInstant { TeeInstant(sinceStart: .milliseconds(milliseconds)) }

    @Test("the first drop is logged at once; then at most one line a second, with the count since the last; a tick logs what waits once due")
    func burst() {
        var report = TeeDropReport()
        #expect(report.dropped(now: Self.at(0), why: "queue full")! == (1, "queue full"))
        for ms in stride(from: 10, to: 1000, by: 10) { #expect(report.dropped(now: Self.at(Int64(ms)), why: "queue full") == nil) }
        #expect(report.due(now: Self.at(999)) == nil)
        #expect(report.pending == 99)
        #expect(report.due(now: Self.at(1000))! == (99, "queue full"))
        #expect(report.due(now: Self.at(5000)) == nil, "nothing waits")
        // Long after the last line: at once again, with the last reason.
        #expect(report.dropped(now: Self.at(6000), why: "already stopped")! == (1, "already stopped"))
        #expect(report.dropped(now: Self.at(6500), why: "already stopped") == nil)
        #expect(report.dropped(now: Self.at(7000), why: "already stopped")! == (2, "already stopped"))
        // The tee stopping: what waits is logged whether or not its line is due.
        #expect(report.dropped(now: Self.at(7100), why: "already stopped") == nil)
        #expect(report.remaining()! == (1, "already stopped"))
        #expect(report.remaining() == nil)
    }
}

@Suite("Tee drops, logged")
struct TeeDropLoggingTests {
    @Test("a burst of bodies over queue_limit_bytes: each is counted, and one line says so at once, not one per body")
    func burstLoggedOnce() throws {
        let capture = LogCapture()
        var settings = SinkSettings()
        settings.queueLimitBytes = 64
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        settings.spoolDirectory = directory.path
        let tee = try TeeWriter(sink: JSONLinesSink(path: settings.spoolDirectory + "/x.jsonl"), configuration: settings, logger: capture.logger())
        for index in 0..<50 {
            let key = "/v1/test/\(index)"
            var body = tee.capture(key: key)
            body.append(ByteBuffer(string: #"{"type":"artist","id":"0ARTIST\#(index)","name":"Artist \#(index)","padding":"\#(String(repeating: "x", count: 40))"}"#))
            tee.submit(body, key: key)
        }
        #expect(tee.stats.dropped == 50)
        let lines = capture.all.filter { $0.contains("DROPPED") }
        #expect(lines.count == 1, "\(lines)")
        #expect(lines.first?.contains("a response body was DROPPED") == true && lines.first?.contains("dropped_total=1") == true, "\(lines)")
    }
}

extension TeeDropLoggingTests {
    /// Refuses every batch.
    final class FailingSink: EntitySink {
        struct Refused: Error {}
        func write(_ batch: EntityBatch) async throws { throw Refused() }
        func migrate() async throws -> [Int] { [] }
        func list(_ kind: SpotifyEntity.Kind, nameContains: String?, limit: Int) async throws -> [StoredEntity] { [] }
        func counts() async throws -> [String: Int] { [:] }
        var service: (any Service)? { nil }
        func close() async {}
    }

    @Test("the sink and the spool both failing: the batch's entities are counted as lost (not as dropped bodies), and the log does not say the batch stays in the spool")
    func bothFailing() async throws {
        let capture = LogCapture()
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        var settings = SinkSettings()
        settings.batchSize = 1
        settings.flushInterval = .milliseconds(20)
        settings.spoolDirectory = directory.appendingPathComponent("spool").path
        let tee = try TeeWriter(sink: FailingSink(), configuration: settings, logger: capture.logger())
        // The spool's directory replaced by a file: nothing can be written there.
        try FileManager.default.removeItem(atPath: settings.spoolDirectory)
        try "not a directory".write(toFile: settings.spoolDirectory, atomically: true, encoding: .utf8)
        let logger = capture.logger()
        let group = ServiceGroup(configuration: .init(services: [tee], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            for index in 0..<3 {
                let key = "/v1/test/\(index)"
                var body = tee.capture(key: key)
                body.append(ByteBuffer(string: #"{"artists":[{"type":"artist","id":"0ARTIST\#(index)a","name":"A"},{"type":"artist","id":"0ARTIST\#(index)b","name":"B"}]}"#))
                tee.submit(body, key: key)
            }
            #expect(try await eventually(10) { tee.stats.lost == 6 }, "\(tee.stats)")
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
        }
        #expect(tee.stats.dropped == 0)
        let lines = capture.all
        #expect(lines.contains { $0.contains("entities DROPPED") }, "\(lines)")
        #expect(!lines.contains { $0.contains("stays in the spool") }, "\(lines)")
    }
}
