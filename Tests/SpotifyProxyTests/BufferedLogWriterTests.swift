import Foundation
import Logging
import SpotifyProxy
import Synchronization
import Testing

/// The request log's batching writer: lines leave whole, in order, in one write per batch.
@Suite struct BufferedLogWriterTests {
    /// Every batch the writer hands to its output, as text.
    final class Batches: Sendable {
        let written = Mutex<[String]>([])
        var all: [String] { self.written.withLock { $0 } }
        func output(_ bytes: UnsafeRawBufferPointer) { self.written.withLock { $0.append(String(decoding: bytes, as: UTF8.self)) } }
    }

    @Test("lines wait for a flush and then leave in one write, in order")
    func oneWritePerBatch() {
        let batches = Batches()
        let writer = BufferedLogWriter { batches.output($0) }
        for index in 0..<100 { writer.append("line \(index)\n") }
        #expect(batches.all.isEmpty, "no flusher and no flush: nothing written yet")
        writer.flush()
        #expect(batches.all == [(0..<100).map { "line \($0)\n" }.joined()])
        writer.flush()
        #expect(batches.all.count == 1, "an empty flush writes nothing")
    }

    @Test("a batch that reaches the limit is written at once, whole lines only")
    func batchLimit() {
        let batches = Batches()
        let writer = BufferedLogWriter(batchLimit: 1000) { batches.output($0) }
        let line = String(repeating: "x", count: 99) + "\n"
        for _ in 0..<9 { writer.append(line) }
        #expect(batches.all.isEmpty)
        writer.append(line)
        #expect(batches.all == [String(repeating: line, count: 10)])
    }

    @Test("lines appended from many threads at once all arrive whole, each thread's in its order")
    func concurrentAppends() async {
        let batches = Batches()
        let writer = BufferedLogWriter(batchLimit: 4096) { batches.output($0) }
        await withTaskGroup(of: Void.self) { group in
            for thread in 0..<8 {
                group.addTask { for index in 0..<2000 { writer.append("t\(thread) \(index)\n") } }
            }
        }
        writer.flush()
        let lines = batches.all.joined().split(separator: "\n")
        #expect(lines.count == 16_000)
        for thread in 0..<8 {
            let mine = lines.filter { $0.hasPrefix("t\(thread) ") }
            #expect(mine == (0..<2000).map { Substring("t\(thread) \($0)") })
        }
        #expect(batches.all.allSatisfy { $0.hasSuffix("\n") }, "a batch never ends mid-line")
    }

    @Test("the flusher writes pending lines without a flush call; close writes the rest, and later lines at once")
    func flusherAndClose() async throws {
        let batches = Batches()
        let writer = BufferedLogWriter(flushInterval: .milliseconds(20)) { batches.output($0) }
        writer.startFlusher()
        writer.append("first\n")
        #expect(try await eventually(10) { batches.all == ["first\n"] })
        writer.append("second\n")
        writer.close()
        #expect(batches.all.joined() == "first\nsecond\n")
        writer.append("third\n")
        #expect(batches.all.joined() == "first\nsecond\nthird\n", "after close, a line is written at once")
    }

    @Test("through the log handler: info lines are batched, a warning flushes them with it")
    func warningsFlush() {
        let batches = Batches()
        let writer = BufferedLogWriter { batches.output($0) }
        var logger = Logger(label: "spotify-proxy") { label in
            FlushingLogHandler(TextLogHandler(label: label, writer: writer), writer: writer)
        }
        logger.logLevel = .info
        logger.info("request", metadata: ["path": "/v1/artists/x"])
        logger.debug("not written")
        #expect(batches.all.isEmpty)
        logger.warning("upstream failing")
        let written = batches.all
        #expect(written.count == 1)
        let lines = written.joined().split(separator: "\n")
        #expect(lines.count == 2)
        #expect(lines[0].contains("path=/v1/artists/x") && lines[0].hasSuffix("request"))
        #expect(lines[1].contains("warning") && lines[1].hasSuffix("upstream failing"))
    }
}
