import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import SpotifyCatalog
import Synchronization
import Testing

@testable import SpotifyProxy

/// The tee while storage lags behind, with a sink the test holds shut: what waits in memory is
/// bounded, the rest waits in the spool, and everything is stored in order once the sink opens.
@Suite("Tee backlog (storage lagging)")
struct TeeBacklogTests {
    /// Stores nothing until its gate opens; then records the artists of each batch, in order.
    final class GatedSink: EntitySink {
        let gate = Gate()
        let stored = Mutex<[String]>([])
        /// Each stored batch's `seenAt`.
        let seen = Mutex<[Date?]>([])
        func write(_ batch: EntityBatch) async throws {
            await self.gate.wait()
            self.stored.withLock { $0 += batch.artists.keys.sorted() }
            self.seen.withLock { $0.append(batch.seenAt) }
        }
        func migrate() async throws -> [Int] { [] }
        func list(_ kind: SpotifyEntity.Kind, nameContains: String?, limit: Int) async throws -> [StoredEntity] { [] }
        func counts() async throws -> [String: Int] { [:] }
        var service: (any Service)? { nil }
        func close() async {}
    }

    static func id(_ number: Int) -> String { "0ARTIST" + String(number).leftPadded(to: 15) }

    /// An answer with 10 new artists, `first` onwards.
    static func answer(first: Int) -> ByteBuffer {
        let artists = (first..<first + 10).map { #"{"type":"artist","id":"\#(Self.id($0))","name":"Artist \#($0)"}"# }
        return ByteBuffer(string: #"{"artists":["# + artists.joined(separator: ",") + "]}")
    }

    @Test("a sink that takes nothing while 40 batches come: at most 8 batches wait in memory, the rest in the spool; once it takes them, every entity is stored, in order, nothing dropped")
    func spilledWhileStorageLags() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        var settings = SinkSettings()
        settings.batchSize = 10
        settings.flushInterval = .milliseconds(50)
        settings.spoolDirectory = directory.path
        // The first write waits at the gate until every batch is written ahead: it must not time
        // out meanwhile on a slow disk (it would be kept, and stored twice once the gate opens).
        settings.writeTimeout = .seconds(120)
        let sink = GatedSink()
        let logger = Logger(label: "test")
        let tee = try TeeWriter(sink: sink, configuration: settings, logger: logger)
        let group = ServiceGroup(configuration: .init(services: [tee], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            let answers = 40
            for index in 0..<answers {
                let key = "/v1/test/\(index)"
                var capture = tee.capture(key: key)
                capture.append(Self.answer(first: index * 10))
                tee.submit(capture, key: key)
            }
            // Every batch written ahead (a segment each: none is stored yet).
            let spool = directory.path
            let written = try await eventually(10) { (try FileManager.default.contentsOfDirectory(atPath: spool)).count == answers }
            #expect(written)
            #expect(tee.entitiesInMemory <= TeeWriter.batchesInMemory * 10, "\(tee.entitiesInMemory)")
            let opened = Date()
            sink.gate.open()
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            let stats = tee.stats
            #expect(sink.stored.withLock { $0 } == (0..<answers * 10).map(Self.id))
            // Stored after the gate opened, from memory or the spool, each with the time it was seen.
            let seen = sink.seen.withLock { $0 }
            #expect(!seen.isEmpty && seen.allSatisfy { $0 != nil && $0! <= opened }, "\(seen)")
            #expect(stats.spilled >= (answers - TeeWriter.batchesInMemory - 1) * 10, "\(stats)")
            #expect(stats.replayed <= stats.spooled + stats.spilled, "\(stats)")
            #expect(stats.written + stats.replayed == answers * 10, "\(stats)")
            #expect(stats.dropped == 0)
            #expect(try FileManager.default.contentsOfDirectory(atPath: spool).isEmpty)
        }
    }
}

extension TeeBacklogTests {
    @Test("the counters of a proxy of the version before (no `spilled`) still read, as 0: `status` across an upgrade")
    func statsWithoutSpilled() throws {
        let earlier = #"{"deduplicated":1,"dropped":0,"queued":9,"replayed":2,"spoolPending":false,"spooled":2,"unparsable":0,"written":40}"#
        let stats = try JSONDecoder().decode(TeeWriter.Stats.self, from: Data(earlier.utf8))
        #expect(stats.spilled == 0)
        #expect(stats.written == 40 && stats.replayed == 2 && stats.queued == 9 && stats.deduplicated == 1)
        #expect(try JSONDecoder().decode(TeeWriter.Stats.self, from: JSONEncoder().encode(stats)) == stats)
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String { String(repeating: "0", count: max(0, width - self.count)) + self }
}
