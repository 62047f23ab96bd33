import CWorkerIO
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import SpotifyCatalog
import Synchronization

/// Takes copies of response bodies off the request path, extracts entities on its own task,
/// batches them by size and time, writes each batch ahead to the on-disk spool (fsynced), and
/// then to the sink. When the sink fails, the written-ahead batches stay in the spool and are
/// replayed in order once it is back. Nothing is lost: a kill -9 at any moment loses only the
/// bodies of the last `flush_interval`; the queue is drained on shutdown, the spool replayed at start.
///
/// The decisions are pure and tested with injected time: batching in ``TeeBatching``, storage
/// (store, spool, replay, back off, drop) in ``TeeStorageStateMachine``. This class performs
/// them: its loops read the injected clock, do the I/O, and report back.
public final class TeeWriter: Service, Sendable {
    public struct Stats: Sendable, Equatable, Codable {
        /// Response bodies accepted for extraction.
        public var queued = 0
        /// Entities stored by the sink directly.
        public var written = 0
        /// Entities that waited in the spool because the sink failed (stored later, by a replay).
        public var spooled = 0
        /// Entities stored later from the spool.
        public var replayed = 0
        /// Entities written ahead and not kept in memory, because storage lagged behind: they
        /// waited in the spool and are stored from it (then counted in `replayed`).
        public var spilled = 0
        /// Response bodies dropped because the in-memory queue was full. Must stay 0.
        public var dropped = 0
        /// Entities lost because the sink and the spool both failed to take their batch. Must
        /// stay 0.
        public var lost = 0
        /// Bodies that were not JSON (nothing to extract).
        public var unparsable = 0
        /// Bodies identical to one extracted moments before: their entities are already in the
        /// batch (or stored, or spooled), so they were not parsed again.
        public var deduplicated = 0
        /// Whether spooled batches wait for the sink.
        public var spoolPending = false

        public init() {}

        /// A counter a proxy of an earlier version does not report is 0: `spotify-proxy status`
        /// reads a running proxy's counters across an upgrade.
        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            func count(_ key: CodingKeys) throws -> Int { try container.decodeIfPresent(Int.self, forKey: key) ?? 0 }
            self.queued = try count(.queued)
            self.written = try count(.written)
            self.spooled = try count(.spooled)
            self.replayed = try count(.replayed)
            self.spilled = try count(.spilled)
            self.dropped = try count(.dropped)
            self.lost = try count(.lost)
            self.unparsable = try count(.unparsable)
            self.deduplicated = try count(.deduplicated)
            self.spoolPending = try container.decodeIfPresent(Bool.self, forKey: .spoolPending) ?? false
        }
    }

    typealias Machine = TeeStorageStateMachine<TeeInstant>
    typealias Batching = TeeBatching<TeeInstant>

    /// What wakes the writer. Bodies do not travel through the stream one by one (that would
    /// wake the writer's task once per response): they wait in the inbox, which the writer
    /// drains on every tick, or at once when it holds more than `drainThreshold` bytes.
    private enum Item: Sendable {
        case drain
        case tick
    }

    /// A complete body waiting for extraction.
    private struct Body: Sendable {
        var key: String
        var chunks: [ByteBuffer]
        var bytes: Int
        /// Whether its capture compared it with a recent body already (so it differs from that
        /// one): extraction compares only the bodies that were not.
        var compared: Bool
    }

    private struct Inbox {
        var bodies: [Body] = []
        var bytes = 0
        /// Bodies taken for extraction and not extracted yet, and their bytes: with the inbox's
        /// own, what `queue_limit_bytes` bounds.
        var takenBodies = 0
        var takenBytes = 0
        var wakeRequested = false
        var closed = false
    }

    /// Everything the event loops and the tee's three loops share, under one lock: each takes
    /// it only to move items in or out (or count), and does its work outside it.
    private struct Shared {
        var inbox = Inbox()
        /// Batches due (full, or older than the flush interval), in order, for the write-ahead loop.
        var due: [EntityBatch] = []
        /// Batches written ahead (in the spool), in order, for the storage loop.
        var writtenAhead: [WrittenAhead] = []
        /// Entities of the `.inMemory` batches written ahead and not yet settled by storage.
        var writtenAheadEntities = 0
        var stats = Stats()
        var drops = TeeDropReport()
    }

    /// A batch written ahead, on its way to storage.
    private enum WrittenAhead {
        /// In memory too; `entry` is nil when the spool could not take it (a full disk), so only
        /// the database has a chance.
        case inMemory(EntityBatch, entry: Spool.Entry?)
        /// Only in the spool: storage lags behind, so it is read back from there (a replay).
        case spilled(Spool.Entry, entities: Int)
    }

    static let drainThreshold = 1 << 20
    /// Batches (of `batch_size`) that wait in memory at each step: past this many waiting for
    /// storage, a batch written ahead waits in the spool only; past this many waiting for the
    /// write-ahead, bodies wait unextracted in the inbox. A burst of new entities (each about
    /// 2 KB extracted, a few hundred bytes in its body) otherwise held them all in memory.
    static let batchesInMemory = 8
    static let drainInterval: Duration = .milliseconds(20)

    private let sink: any EntitySink
    /// `[sink]`: batch size and interval, queue limit, write timeout, spool directory.
    private let configuration: SinkSettings
    private let logger: Logger
    private let clock: TeeClock
    private let stream: AsyncStream<Item>
    private let continuation: AsyncStream<Item>.Continuation
    private let shared: Mutex<Shared>
    private let spool: Spool
    /// The last body extracted per resource: answers identical to it are counted, not parsed.
    private let recent = RecentBodies()
    /// Whether batches are being spilled (logged once per episode).
    private let spilling = Atomic<Bool>(false)
    /// Whether storage or the write-ahead lagged (a batch spilled, extraction paused) since memory
    /// was last given back: only then is it given back, not under steady traffic.
    private let backlogged = Atomic<Bool>(false)

    public convenience init(sink: any EntitySink, configuration: SinkSettings, logger: Logger) throws {
        try self.init(sink: sink, configuration: configuration, logger: logger, clock: ContinuousClock())
    }

    /// `clock` times the batching, the spool replays' backoff, `write_timeout` and the drain
    /// ticks (a `ManualClock` in a test).
    public init<C: Clock>(sink: any EntitySink, configuration: SinkSettings, logger: Logger, clock: C) throws where C.Duration == Duration {
        self.sink = sink
        self.configuration = configuration
        self.logger = logger
        self.clock = TeeClock(clock)
        (self.stream, self.continuation) = AsyncStream.makeStream(of: Item.self)
        let spool = try Spool(directory: configuration.spoolDirectory)
        self.spool = spool
        var shared = Shared()
        shared.stats.spoolPending = spool.hasPending
        self.shared = Mutex(shared)
    }

    public var stats: Stats { self.shared.withLock { $0.stats } }

    /// Entities extracted and waiting in memory for the write-ahead or for storage.
    var entitiesInMemory: Int { self.shared.withLock { $0.writtenAheadEntities + $0.due.reduce(0) { $0 + $1.entityCount } } }

    /// What waits now: bodies not yet extracted, and batches not yet stored (in the spool or not).
    public struct Backlog: Sendable, Equatable, Codable {
        public var bodies: Int
        public var bytes: Int
        public var batches: Int
    }

    public var backlog: Backlog {
        self.shared.withLock {
            Backlog(
                bodies: $0.inbox.bodies.count + $0.inbox.takenBodies, bytes: $0.inbox.bytes + $0.inbox.takenBytes,
                batches: $0.due.count + $0.writtenAhead.count)
        }
    }

    struct SinkTimedOut: Error, CustomStringConvertible {
        var timeout: Duration
        var description: String { "the sink did not answer within \(self.timeout)" }
    }

    /// A failed sink call in words: a timeout says why the sink did not answer when a quick
    /// check can tell (PostgreSQL's pool retries a refused connection in silence until then).
    func explain(_ error: any Error) async -> String {
        guard error is SinkTimedOut else { return String(reflecting: error) }
        do {
            try await self.sink.checkReachable()
        } catch {
            return "\(String(reflecting: SinkTimedOut(timeout: self.configuration.writeTimeout))): \(error)"
        }
        return String(reflecting: error)
    }

    /// Runs a sink call, failing it with ``SinkTimedOut`` after `write_timeout` on the tee's clock.
    ///
    /// The call runs in a task of its own, which is cancelled but not awaited once the timer
    /// wins: a database client waiting for a connection may not notice cancellation promptly,
    /// and the tee must not wait with it (a task group would, since it awaits every child). A
    /// call that still succeeds later did so for a batch that was spooled meanwhile; the replay
    /// is idempotent. The call and the timer each deliver their outcome to a stream that keeps
    /// only the first one: that is the answer, and the other is cancelled.
    private func withTimeout<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let timeout = self.configuration.writeTimeout
        let clock = self.clock
        let deadline = clock.now().advanced(by: timeout)
        let (outcomes, outcome) = AsyncStream.makeStream(of: Result<T, any Error>.self, bufferingPolicy: .bufferingOldest(1))
        let call = Task {
            do { outcome.yield(.success(try await body())) } catch { outcome.yield(.failure(error)) }
        }
        let timer = Task {
            do { try await clock.sleep(until: deadline) } catch { return }  // cancelled: the call answered
            outcome.yield(.failure(SinkTimedOut(timeout: timeout)))
        }
        defer {
            call.cancel()
            timer.cancel()
            outcome.finish()
        }
        var first = outcomes.makeAsyncIterator()
        // nil only when the caller itself is cancelled.
        guard let result = await first.next() else { throw CancellationError() }
        return try result.get()
    }

    /// Closes the sink of a tee that never ran (the proxy failed to start).
    func abandon() async {
        await self.sink.close()
    }

    /// Starts the tee's copy of a response body for the resource `key` (the request target);
    /// hand it back with ``submit(_:key:)`` when the body is complete.
    func capture(key: String) -> TeeCapture {
        TeeCapture(recent: self.recent.body(for: key, now: self.clock.now()))
    }

    /// Hands a complete response body to the tee. Never blocks. A body byte-identical to the
    /// last one extracted for the same key moments before is counted and not parsed again.
    func submit(_ capture: TeeCapture, key: String) {
        switch capture.finish() {
        case .identical:
            self.shared.withLock {
                $0.stats.queued += 1
                $0.stats.deduplicated += 1
            }
        case .body(let chunks):
            self.submit(chunks, key: key, compared: capture.comparedWithRecent)
        }
    }

    /// Queues a body (its chunks, as received) for extraction. Never blocks.
    private func submit(_ chunks: [ByteBuffer], key: String, compared: Bool) {
        let size = chunks.reduce(0) { $0 + $1.readableBytes }
        enum Outcome {
            case queued(wake: Bool)
            case dropped(report: (count: Int, why: String, total: Int)?)
        }
        let outcome = self.shared.withLock { shared -> Outcome in
            func drop(_ why: String) -> Outcome {
                shared.stats.dropped += 1
                return .dropped(report: shared.drops.dropped(now: self.clock.now(), why: why).map { ($0.count, $0.why, shared.stats.dropped) })
            }
            guard !shared.inbox.closed else { return drop("already stopped") }
            guard shared.inbox.bytes + shared.inbox.takenBytes + size <= self.configuration.queueLimitBytes else { return drop("queue full") }
            shared.inbox.bodies.append(Body(key: key, chunks: chunks, bytes: size, compared: compared))
            shared.inbox.bytes += size
            shared.stats.queued += 1
            guard shared.inbox.bytes >= Self.drainThreshold, !shared.inbox.wakeRequested else { return .queued(wake: false) }
            shared.inbox.wakeRequested = true
            return .queued(wake: true)
        }
        switch outcome {
        case .queued(let wake):
            if wake { self.continuation.yield(.drain) }
        case .dropped(let report):
            if let report { self.logDrops(report.count, why: report.why, total: report.total) }
        }
    }

    /// At most one line a second (``TeeDropReport``), with the count since the last one.
    private func logDrops(_ count: Int, why: String, total: Int) {
        self.logger.error(
            "tee \(why): \(count == 1 ? "a response body was" : "\(count) response bodies were") DROPPED and their entities will not be stored",
            metadata: [
                "dropped": .stringConvertible(count), "dropped_total": .stringConvertible(total),
                "queue_limit_bytes": .stringConvertible(self.configuration.queueLimitBytes),
            ])
    }

    /// Drops not logged yet, logged once their line is due (the tee's ticks ask), or at once
    /// when the tee stops.
    private func logPendingDrops(stopping: Bool = false) {
        let now = self.clock.now()
        guard
            let report = self.shared.withLock({ shared in
                (stopping ? shared.drops.remaining() : shared.drops.due(now: now)).map { ($0.count, $0.why, shared.stats.dropped) }
            })
        else { return }
        self.logDrops(report.0, why: report.1, total: report.2)
    }

    private func takeInbox(closing: Bool = false) -> [Body] {
        self.shared.withLock { shared in
            defer {
                shared.inbox.takenBodies += shared.inbox.bodies.count
                shared.inbox.takenBytes += shared.inbox.bytes
                shared.inbox.bodies = []
                shared.inbox.bytes = 0
                shared.inbox.wakeRequested = false
                if closing { shared.inbox.closed = true }
            }
            return shared.inbox.bodies
        }
    }

    /// Three loops, each on its own task: extraction drains the inbox, dedupes, parses and
    /// merges into its batching, and hands each due batch on; the write-ahead loop writes it to
    /// the spool (encoding and fsync, about as costly as extraction, so the two run side by side);
    /// storage migrates, replays what a previous run left, and takes the written-ahead batches
    /// to the sink. Neither of the first two ever waits for the database, so neither the inbox
    /// nor what a kill -9 could lose backs up behind a slow sink.
    public func run() async throws {
        let clock = self.clock
        let ticker = Task { [continuation] in
            while !Task.isCancelled {
                try? await clock.sleep(for: Self.drainInterval)
                continuation.yield(.tick)
            }
        }
        let (storageTicks, storageContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let storage = Task {
            var storer = Storer(owner: self)
            await storer.migrateAtStart()
            await storer.replayIfDue(force: true)
            for await _ in storageTicks {
                await storer.storeWrittenAhead()
                await storer.replayIfDue(force: false)
                storer.releaseMemoryIfDrained()
            }
            return storer
        }
        let (writeAheadTicks, writeAheadContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        // The spool's writes and fsyncs block: they get a thread of their own, not one of the
        // cooperative pool's few, which the listener's token waits and every other task share.
        let disk = NIOThreadPool(numberOfThreads: 1)
        disk.start()
        let writeAhead = Task {
            for await _ in writeAheadTicks {
                try? await disk.runIfActive { self.writeAheadDueBatches() }
                storageContinuation.yield(())
            }
        }
        // Owned by this task (the extraction loop): no lock.
        var batching = Batching(batchSize: self.configuration.batchSize, flushInterval: self.configuration.flushInterval)
        await withGracefulShutdownHandler {
            for await _ in self.stream {
                self.logPendingDrops()
                // Batches due by size are handed on as they fill; one due by time, after.
                self.extractInbox(into: &batching) { writeAheadContinuation.yield(()) }
                if self.handOn(&batching, force: false) { writeAheadContinuation.yield(()) }
                storageContinuation.yield(())
            }
        } onGracefulShutdown: {
            // Ends the loop after what is already queued; the inbox is drained below.
            self.continuation.finish()
        }
        ticker.cancel()
        // The listener stopped first, so no body arrives after this last drain.
        self.extractInbox(into: &batching, closing: true) {}
        _ = self.handOn(&batching, force: true)
        writeAheadContinuation.finish()
        await writeAhead.value
        try? await disk.runIfActive { self.writeAheadDueBatches() }
        try? await disk.shutdownGracefully()
        storageContinuation.finish()
        var storer = await storage.value
        // What is left is stored, or stays in the spool for the next start: at once when the
        // sink failed last (the machine does not ask it again).
        storer.machine.stop()
        await storer.storeWrittenAhead()
        await storer.replayIfDue(force: true)
        self.logPendingDrops(stopping: true)
        let stats = self.stats
        self.logger.notice(
            "tee stopped",
            metadata: [
                "queued": .stringConvertible(stats.queued), "written": .stringConvertible(stats.written), "spooled": .stringConvertible(stats.spooled),
                "replayed": .stringConvertible(stats.replayed), "dropped": .stringConvertible(stats.dropped), "lost": .stringConvertible(stats.lost),
                "spool_pending": .stringConvertible(stats.spoolPending),
            ])
        await self.sink.close()
    }

    /// Hands the pending batch to the write-ahead loop when it is due; true when it did.
    private func handOn(_ batching: inout Batching, force: Bool) -> Bool {
        guard var batch = batching.takeIfDue(now: self.clock.now(), force: force) else { return false }
        batch.seenAt = Date()
        self.shared.withLock { $0.due.append(batch) }
        return true
    }

    /// Writes the due batches ahead to the spool, in order, and queues them for storage.
    private func writeAheadDueBatches() {
        let batches = self.shared.withLock { shared in
            defer { shared.due = [] }
            return shared.due
        }
        let limit = Self.batchesInMemory * self.configuration.batchSize
        for batch in batches {
            var entry: Spool.Entry?
            do {
                entry = try self.spool.begin(batch)
            } catch {
                self.logger.error(
                    "cannot write ahead to the spool; only the database can take this batch",
                    metadata: ["error": "\(error)", "entities": .stringConvertible(batch.entityCount), "spool_dir": "\(self.configuration.spoolDirectory)"])
            }
            let spilled = self.shared.withLock { shared in
                // Never the only batch waiting (a batch larger than the limit, storage idle).
                if let entry, shared.writtenAheadEntities > 0, shared.writtenAheadEntities + batch.entityCount > limit {
                    shared.writtenAhead.append(.spilled(entry, entities: batch.entityCount))
                    return true
                }
                shared.writtenAhead.append(.inMemory(batch, entry: entry))
                shared.writtenAheadEntities += batch.entityCount
                return false
            }
            guard spilled else { continue }
            self.backlogged.store(true, ordering: .relaxed)
            if !self.spilling.exchange(true, ordering: .relaxed) {
                self.logger.notice(
                    "storage lags behind the traffic: batches wait in the spool on disk until the sink catches up",
                    metadata: ["spool_dir": "\(self.configuration.spoolDirectory)"])
            }
        }
    }

    /// Extracts the bodies waiting in the inbox into `batching`, handing each batch on as soon
    /// as it is due (then `handedOn`); on `run()`'s task only. A large inbox (a burst of new
    /// entities while storage lags) so makes batches of `batch_size`, not one merged batch of
    /// all of it, which the spool and the sink would each take in one piece.
    ///
    /// While `batchesInMemory` batches wait for the write-ahead (the disk lags behind), bodies
    /// wait in the inbox instead: there they take a fraction of their extracted size, and
    /// `queue_limit_bytes` bounds them. Not when closing: then everything is extracted.
    private func extractInbox(into batching: inout Batching, closing: Bool = false, handedOn: () -> Void) {
        guard closing || !self.writeAheadLags else { return }
        var bodies = self.takeInbox(closing: closing)
        for index in bodies.indices {
            let now = self.clock.now()
            let batch = self.extract(bodies[index], now: now)
            // Its bytes are let go as they stop counting against the limit.
            let bytes = bodies[index].bytes
            bodies[index].chunks = []
            self.shared.withLock { shared in
                shared.inbox.takenBodies -= 1
                shared.inbox.takenBytes -= bytes
            }
            guard let batch else { continue }
            batching.add(batch, now: now)
            guard self.handOn(&batching, force: false) else { continue }
            handedOn()
            if !closing, self.writeAheadLags {
                self.backlogged.store(true, ordering: .relaxed)
                self.putBack(bodies[(index + 1)...])
                return
            }
        }
    }

    private var writeAheadLags: Bool { self.shared.withLock { $0.due.count >= Self.batchesInMemory } }

    /// Returns `bodies` (taken from the inbox and not extracted) to its front, in order; the
    /// drain tick takes them again.
    private func putBack(_ bodies: ArraySlice<Body>) {
        guard !bodies.isEmpty else { return }
        self.shared.withLock { shared in
            let bytes = bodies.reduce(0) { $0 + $1.bytes }
            shared.inbox.bodies.insert(contentsOf: bodies, at: 0)
            shared.inbox.bytes += bytes
            shared.inbox.takenBodies -= bodies.count
            shared.inbox.takenBytes -= bytes
            // No wake per body meanwhile: the tick comes within `drainInterval`.
            shared.inbox.wakeRequested = true
        }
    }

    /// The entities of one body, or nil when it has none (or is identical to a recent one).
    private func extract(_ body: Body, now: TeeInstant) -> EntityBatch? {
        // A body that streamed while no recent one existed is compared here, once: an identical
        // one may have been extracted since (two lookups of the same resource moments apart).
        if !body.compared, let recent = self.recent.body(for: body.key, now: now) {
            var capture = TeeCapture(recent: recent)
            for chunk in body.chunks { capture.append(chunk) }
            if case .identical = capture.finish() {
                self.shared.withLock { $0.stats.deduplicated += 1 }
                return nil
            }
        }
        var joined = ByteBuffer()
        joined.reserveCapacity(body.bytes)
        for var chunk in body.chunks { joined.writeBuffer(&chunk) }
        self.recent.remember(joined, for: body.key, now: now)
        guard let value = try? joined.withUnsafeReadableBytes({ try JSONValue.parse(bytes: $0) }) else {
            self.shared.withLock { $0.stats.unparsable += 1 }
            return nil
        }
        let batch = EntityExtractor.extract(from: value)
        return batch.isEmpty ? nil : batch
    }

    /// The storage loop: performs what its ``TeeStorageStateMachine`` decides, on that loop's
    /// task only (so the machine needs no lock), and mirrors the outcomes into the stats.
    private struct Storer: Sendable {
        let owner: TeeWriter
        var machine: Machine
        /// Given back once more then (if drained): the burst's last bodies kept
        /// for comparison will have expired.
        var releaseAgainAt: TeeInstant?

        init(owner: TeeWriter) {
            self.owner = owner
            self.machine = Machine(spoolPending: owner.spool.hasPending, recoveredThrough: owner.spool.recoveredThrough)
        }

        mutating func migrateAtStart() async {
            guard self.machine.needsMigration else { return }
            let sink = self.owner.sink
            do {
                let applied = try await self.owner.withTimeout { try await sink.migrate() }
                self.machine.migrationSucceeded()
                if !applied.isEmpty { self.owner.logger.notice("schema migrations applied", metadata: ["versions": "\(applied)"]) }
            } catch {
                let explained = await self.owner.explain(error)
                self.owner.logger.warning(
                    "sink unavailable at start; migrations will be applied when it is back", metadata: ["error": "\(explained)"])
            }
        }

        /// Once a backlog (a batch spilled, or extraction paused) has drained and nothing waits:
        /// the bodies kept for comparison that have expired go, and glibc gives back what was
        /// freed; again when the last of them have expired. Its per-thread arenas keep it
        /// otherwise: after 450,000 new entities RSS stayed at 352 MB with 67 MB in use, 124 MB
        /// after a `malloc_trim`. Not under steady traffic: the trim locks glibc's arenas.
        mutating func releaseMemoryIfDrained() {
            let owner = self.owner
            let drained = owner.shared.withLock { $0.inbox.bodies.isEmpty && $0.due.isEmpty && $0.writtenAhead.isEmpty }
            guard drained, !self.machine.spoolPending else { return }
            let now = owner.clock.now()
            if owner.backlogged.exchange(false, ordering: .relaxed) {
                self.releaseAgainAt = now.advanced(by: RecentBodies.window)
            } else if let again = self.releaseAgainAt, now >= again {
                self.releaseAgainAt = nil
            } else {
                return
            }
            owner.recent.forgetExpired(now: now)
            spx_malloc_trim()
        }

        /// Takes the written-ahead batches, in order, to the sink; a spilled one is left in the
        /// spool for the replay that follows (or the one the next batch asks for).
        mutating func storeWrittenAhead() async {
            let owner = self.owner
            let items = owner.shared.withLock { shared in
                defer { shared.writtenAhead = [] }
                return shared.writtenAhead
            }
            for item in items {
                switch item {
                case .inMemory(let batch, let entry):
                    if !batch.isEmpty { await self.settle(batch, entry: entry) }
                    owner.shared.withLock { $0.writtenAheadEntities -= batch.entityCount }
                case .spilled(let entry, let entities):
                    owner.spool.keep(entry)
                    self.machine.batchSpilled(segment: entry.number)
                    owner.shared.withLock {
                        $0.stats.spilled += entities
                        $0.stats.spoolPending = true
                    }
                }
            }
            if owner.shared.withLock({ $0.writtenAhead.isEmpty }) { owner.spilling.store(false, ordering: .relaxed) }
        }

        /// Carries one written-ahead batch through the machine's actions until it is stored,
        /// kept in the spool, or lost.
        private mutating func settle(_ batch: EntityBatch, entry: Spool.Entry?) async {
            let owner = self.owner
            let sink = owner.sink
            var action = self.machine.batchWrittenAhead(segment: entry?.number, now: owner.clock.now())
            while true {
                switch action {
                case .replayFirst(let through, let migrateFirst):
                    guard let next = await self.replay(through: through, migrateFirst: migrateFirst) else { return }
                    action = next
                case .store(let migrateFirst):
                    do {
                        if migrateFirst {
                            _ = try await owner.withTimeout { try await sink.migrate() }
                            self.machine.migrationSucceeded()
                        }
                        try await owner.withTimeout { try await sink.write(batch) }
                        action = self.machine.storeSucceeded()
                    } catch {
                        let explained = await owner.explain(error)
                        owner.logger.warning(
                            entry == nil
                                ? "sink write failed, and the batch could not be written to the spool either"
                                : "sink write failed; the batch stays in the spool on disk and is retried in the background",
                            metadata: ["error": "\(explained)"])
                        // Jitter 1: the whole backoff (one proxy's own spool; nothing to spread).
                        action = self.machine.storeFailed(now: owner.clock.now(), jitter: 1)
                    }
                case .commit:
                    if let entry { owner.spool.commit(entry) }
                    owner.shared.withLock { $0.stats.written += batch.entityCount }
                    return
                case .storedByReplay:
                    // It waited in the spool for the sink, as a batch kept there does: counted
                    // with them, so every entity replayed was spooled or spilled first.
                    owner.shared.withLock { $0.stats.spooled += batch.entityCount }
                    return
                case .keepInSpool:
                    if let entry { owner.spool.keep(entry) }
                    let pending = self.machine.spoolPending
                    owner.shared.withLock {
                        $0.stats.spooled += batch.entityCount
                        $0.stats.spoolPending = pending
                    }
                    return
                case .drop(let reason):
                    owner.shared.withLock { $0.stats.lost += batch.entityCount }
                    owner.logger.critical(
                        "\(batch.entityCount) entities DROPPED: \(reason)", metadata: ["spool_dir": "\(owner.configuration.spoolDirectory)"])
                    return
                }
            }
        }

        /// Replays the spool when the machine says it is due (`force`: whatever the backoff).
        mutating func replayIfDue(force: Bool) async {
            guard case .replay(let through, let migrateFirst) = self.machine.replayIfDue(now: self.owner.clock.now(), force: force) else {
                return
            }
            _ = await self.replay(through: through, migrateFirst: migrateFirst)
        }

        /// Replays the segments through `through` into the sink, in order, and reports how it
        /// went; returns the machine's next action for the batch that waited behind it, if any.
        private mutating func replay(through: Int?, migrateFirst: Bool) async -> Machine.BatchAction? {
            let owner = self.owner
            let sink = owner.sink
            // Migrated before the first batch written, as a store would.
            var migrate = migrateFirst
            var migrated = false
            let result: Result<Spool.Replay, any Error>
            do {
                result = .success(
                    try await owner.spool.replay(through: through) { batch in
                        if migrate {
                            _ = try await owner.withTimeout { try await sink.migrate() }
                            migrate = false
                            migrated = true
                        }
                        try await owner.withTimeout { try await sink.write(batch) }
                    })
            } catch {
                result = .failure(error)
            }
            if migrated { self.machine.migrationSucceeded() }
            switch result {
            case .success(let replay):
                let next = self.machine.replaySucceeded()
                let pending = self.machine.spoolPending
                owner.shared.withLock {
                    $0.stats.replayed += replay.entities
                    $0.stats.spoolPending = pending
                }
                owner.logger.notice("spool replayed into the sink", metadata: ["entities": .stringConvertible(replay.entities)])
                if !replay.setAside.isEmpty {
                    owner.logger.warning(
                        "spool lines that are not a batch were not stored; their segments were set aside, not deleted: a line cut short by a crash mid-write is expected, any other is damage on disk worth a look",
                        metadata: ["unreadable_lines": .stringConvertible(replay.unreadableLines), "files": "\(replay.setAside.joined(separator: ", "))"])
                }
                return next
            case .failure:
                let now = owner.clock.now()
                // Jitter 1: the whole backoff, as for a failed store.
                let next = self.machine.replayFailed(now: now, jitter: 1)
                let delay = self.machine.nextReplay.map { now.duration(to: $0) } ?? .zero
                owner.logger.debug(
                    "sink still unavailable; spool kept", metadata: ["retry_in_ms": .stringConvertible(Int((delay / .milliseconds(1)).rounded()))])
                return next
            }
        }
    }
}
