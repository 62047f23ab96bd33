import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import SpotifyCatalog
import Synchronization

/// Takes copies of response bodies off the request path, extracts entities on its own task,
/// batches them by size and time, writes each batch ahead to the on-disk spool (fsynced), and
/// then to the sink. When the sink fails, the written-ahead batches stay in the spool and are
/// replayed in order once it is back. Nothing is lost: a kill -9 at any moment loses only the
/// bodies of the last `flush_interval`; the queue is drained on shutdown, the spool replayed at start.
public final class TeeWriter: Service, Sendable {
    public struct Stats: Sendable, Equatable, Codable {
        /// Response bodies accepted for extraction.
        public var queued = 0
        /// Entities stored by the sink directly.
        public var written = 0
        /// Entities put in the spool because the sink failed.
        public var spooled = 0
        /// Entities stored later from the spool.
        public var replayed = 0
        /// Response bodies dropped because the in-memory queue was full. Must stay 0.
        public var dropped = 0
        /// Bodies that were not JSON (nothing to extract).
        public var unparsable = 0
        /// Bodies identical to one extracted moments before: their entities are already in the
        /// batch (or stored, or spooled), so they were not parsed again.
        public var deduplicated = 0
        /// Whether spooled batches wait for the sink.
        public var spoolPending = false
    }

    /// What wakes the writer. Bodies do not travel through the stream one by one (that would
    /// wake the writer's task once per response): they wait in `inbox`, which the writer
    /// drains on every tick, or at once when it holds more than `drainThreshold` bytes.
    private enum Item: Sendable {
        case drain
        case tick
    }

    private struct Inbox {
        var bodies: [(key: String, chunks: [ByteBuffer])] = []
        var bytes = 0
        var wakeRequested = false
        var closed = false
    }

    static let drainThreshold = 1 << 20
    static let drainInterval: Duration = .milliseconds(20)

    private let sink: any EntitySink
    /// `[sink]`: batch size and interval, queue limit, write timeout, spool directory.
    private let configuration: SinkSettings
    private let logger: Logger
    private let stream: AsyncStream<Item>
    private let continuation: AsyncStream<Item>.Continuation
    private let inbox = Mutex(Inbox())
    /// Entities extracted and merged, waiting for storage; with when the oldest arrived.
    private let pending = Mutex<(batch: EntityBatch, since: ContinuousClock.Instant?)>((EntityBatch(), nil))
    private let state = Mutex(Stats())
    private let spool: Spool
    /// Batches due (full, or older than the flush interval), in order, for the write-ahead loop.
    private let due = Mutex<[EntityBatch]>([])
    /// Batches written ahead (in the spool), in order, for the storage loop; `entry` is nil when
    /// the spool could not take it (a full disk), so only the database has a chance.
    private let writtenAhead = Mutex<[(batch: EntityBatch, entry: Spool.Entry?)]>([])
    /// The last body extracted per resource: answers identical to it are counted, not parsed.
    private let recent = RecentBodies()

    public init(sink: any EntitySink, configuration: SinkSettings, logger: Logger) throws {
        self.sink = sink
        self.configuration = configuration
        self.logger = logger
        (self.stream, self.continuation) = AsyncStream.makeStream(of: Item.self)
        self.spool = try Spool(directory: configuration.spoolDirectory)
        self.state.withLock { $0.spoolPending = self.spool.hasPending }
    }

    public var stats: Stats { self.state.withLock { $0 } }

    struct SinkTimedOut: Error, CustomStringConvertible {
        var timeout: Duration
        var description: String { "the sink did not answer within \(self.timeout)" }
    }

    /// Runs a sink call, failing it with ``SinkTimedOut`` after `writeTimeout`. The call is
    /// cancelled, but not awaited: a database client waiting for a connection may not notice
    /// cancellation promptly, and the tee must not wait with it. A call that still succeeds
    /// later did so for a batch that was spooled meanwhile; the replay is idempotent.
    fileprivate func withTimeout<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let timeout = self.configuration.writeTimeout
        let race = Race<T>()
        return try await withCheckedThrowingContinuation { continuation in
            race.start(continuation)
            let call = Task {
                do { race.finish(.success(try await body())) } catch { race.finish(.failure(error)) }
            }
            let timer = Task {
                try? await Task.sleep(for: timeout)
                race.finish(.failure(SinkTimedOut(timeout: timeout)))
            }
            race.track([call, timer])
        }
    }

    /// The first of a call and its timer to finish resumes the caller; the other is cancelled.
    private final class Race<T: Sendable>: Sendable {
        private let state = Mutex<(continuation: CheckedContinuation<T, any Error>?, tasks: [Task<Void, Never>], done: Bool)>((nil, [], false))

        func start(_ continuation: CheckedContinuation<T, any Error>) {
            self.state.withLock { $0.continuation = continuation }
        }

        func track(_ tasks: [Task<Void, Never>]) {
            let done = self.state.withLock { state -> Bool in
                state.tasks = tasks
                return state.done
            }
            if done { for task in tasks { task.cancel() } }
        }

        func finish(_ result: Result<T, any Error>) {
            let (continuation, tasks) = self.state.withLock { state -> (CheckedContinuation<T, any Error>?, [Task<Void, Never>]) in
                guard !state.done else { return (nil, []) }
                state.done = true
                defer { state.continuation = nil }
                return (state.continuation, state.tasks)
            }
            guard let continuation else { return }
            for task in tasks { task.cancel() }
            continuation.resume(with: result)
        }
    }

    /// Closes the sink of a tee that never ran (the proxy failed to start).
    func abandon() async {
        await self.sink.close()
    }

    /// Starts the tee's copy of a response body for the resource `key` (the request target);
    /// hand it back with ``submit(_:key:)`` when the body is complete.
    func capture(key: String) -> TeeCapture {
        TeeCapture(recent: self.recent.body(for: key))
    }

    /// Hands a complete response body to the tee. Never blocks. A body byte-identical to the
    /// last one extracted for the same key moments before is counted and not parsed again.
    func submit(_ capture: TeeCapture, key: String) {
        switch capture.finish() {
        case .identical:
            self.state.withLock {
                $0.queued += 1
                $0.deduplicated += 1
            }
        case .body(let chunks):
            self.submit(chunks, key: key)
        }
    }

    /// Queues a body (its chunks, as received) for extraction. Never blocks.
    private func submit(_ chunks: [ByteBuffer], key: String) {
        let size = chunks.reduce(0) { $0 + $1.readableBytes }
        enum Outcome {
            case queued(wake: Bool), full, closed
            var isFull: Bool { if case .full = self { true } else { false } }
        }
        let outcome = self.inbox.withLock { inbox -> Outcome in
            guard !inbox.closed else { return .closed }
            guard inbox.bytes + size <= self.configuration.queueLimitBytes else { return .full }
            inbox.bodies.append((key, chunks))
            inbox.bytes += size
            guard inbox.bytes >= Self.drainThreshold, !inbox.wakeRequested else { return .queued(wake: false) }
            inbox.wakeRequested = true
            return .queued(wake: true)
        }
        switch outcome {
        case .queued(let wake):
            self.state.withLock { $0.queued += 1 }
            if wake { self.continuation.yield(.drain) }
        case .full, .closed:
            let dropped = self.state.withLock { state in
                state.dropped += 1
                return state.dropped
            }
            self.logger.error(
                "tee \(outcome.isFull ? "queue full" : "already stopped"): a response body was DROPPED and its entities will not be stored",
                metadata: ["dropped_total": "\(dropped)", "queue_limit_bytes": "\(self.configuration.queueLimitBytes)"])
        }
    }

    private func takeInbox(closing: Bool = false) -> [(key: String, chunks: [ByteBuffer])] {
        self.inbox.withLock { inbox in
            defer {
                inbox.bodies = []
                inbox.bytes = 0
                inbox.wakeRequested = false
                if closing { inbox.closed = true }
            }
            return inbox.bodies
        }
    }

    /// Three loops, each on its own task: extraction drains the inbox, dedupes, parses and
    /// merges into `pending`, and hands each due batch on; the write-ahead loop writes it to the
    /// spool (encoding and fsync, about as costly as extraction, so the two run side by side);
    /// storage migrates, replays what a previous run left, and takes the written-ahead batches
    /// to the sink. Neither of the first two ever waits for the database, so neither the inbox
    /// nor what a kill -9 could lose backs up behind a slow sink.
    public func run() async throws {
        let ticker = Task { [continuation] in
            while !Task.isCancelled {
                try? await Task.sleep(for: Self.drainInterval)
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
            }
            return storer
        }
        let (writeAheadTicks, writeAheadContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let writeAhead = Task {
            for await _ in writeAheadTicks {
                self.writeAheadDueBatches()
                storageContinuation.yield(())
            }
        }
        await withGracefulShutdownHandler {
            for await _ in self.stream {
                for body in self.takeInbox() { self.extract(body.chunks, key: body.key) }
                if self.handOnPending(force: false) { writeAheadContinuation.yield(()) }
                storageContinuation.yield(())
            }
        } onGracefulShutdown: {
            // Ends the loop after what is already queued; the inbox is drained below.
            self.continuation.finish()
        }
        ticker.cancel()
        // The listener stopped first, so no body arrives after this last drain.
        for body in self.takeInbox(closing: true) { self.extract(body.chunks, key: body.key) }
        _ = self.handOnPending(force: true)
        writeAheadContinuation.finish()
        await writeAhead.value
        self.writeAheadDueBatches()
        storageContinuation.finish()
        var storer = await storage.value
        // What is left is stored, or stays in the spool for the next start.
        await storer.storeWrittenAhead()
        await storer.replayIfDue(force: true)
        let stats = self.stats
        self.logger.notice(
            "tee stopped",
            metadata: [
                "queued": "\(stats.queued)", "written": "\(stats.written)", "spooled": "\(stats.spooled)",
                "replayed": "\(stats.replayed)", "dropped": "\(stats.dropped)", "spool_pending": "\(stats.spoolPending)",
            ])
        await self.sink.close()
    }

    /// The merged batch when it is due (full, or older than the flush interval), or when forced.
    private func takePending(force: Bool) -> EntityBatch? {
        self.pending.withLock { pending -> EntityBatch? in
            guard !pending.batch.isEmpty, let since = pending.since else { return nil }
            let due = force || pending.batch.entityCount >= self.configuration.batchSize
                || ContinuousClock.now - since >= self.configuration.flushInterval
            guard due else { return nil }
            defer { pending = (EntityBatch(), nil) }
            return pending.batch
        }
    }

    /// Hands the pending batch to the write-ahead loop when it is due; true when it did.
    private func handOnPending(force: Bool) -> Bool {
        guard let batch = self.takePending(force: force) else { return false }
        self.due.withLock { $0.append(batch) }
        return true
    }

    /// Writes the due batches ahead to the spool, in order, and queues them for storage.
    private func writeAheadDueBatches() {
        let batches = self.due.withLock { due in
            defer { due = [] }
            return due
        }
        for batch in batches {
            var entry: Spool.Entry?
            do {
                entry = try self.spool.begin(batch)
            } catch {
                self.logger.error(
                    "cannot write ahead to the spool; only the database can take this batch",
                    metadata: ["error": "\(error)", "entities": "\(batch.entityCount)", "spool_dir": "\(self.configuration.spoolDirectory)"])
            }
            self.writtenAhead.withLock { $0.append((batch, entry)) }
        }
    }

    /// Extracts one body into the pending batch; on `run()`'s task only.
    private func extract(_ chunks: [ByteBuffer], key: String) {
        // Bodies submitted before an identical one was extracted are caught here.
        var capture = self.capture(key: key)
        for chunk in chunks { capture.append(chunk) }
        if case .identical = capture.finish() {
            self.state.withLock { $0.deduplicated += 1 }
            return
        }
        var body = ByteBuffer()
        body.reserveCapacity(capture.bytes)
        for var chunk in chunks { body.writeBuffer(&chunk) }
        let now = ContinuousClock.now
        self.recent.remember(body, for: key, now: now)
        guard let value = try? body.withUnsafeReadableBytes({ try JSONValue.parse(bytes: $0) }) else {
            self.state.withLock { $0.unparsable += 1 }
            return
        }
        let batch = EntityExtractor.extract(from: value)
        guard !batch.isEmpty else { return }
        // Merging dedupes by id: while storage is slow this grows with distinct entities only.
        self.pending.withLock { pending in
            pending.batch.merge(batch)
            if pending.since == nil { pending.since = now }
        }
    }

    /// Storage's own state, owned by the storage loop.
    private struct Storer: Sendable {
        let owner: TeeWriter
        var migrated = false
        var nextReplay = ContinuousClock.now
        /// Between spool replays while the sink is down: 250 ms doubling to 10 s.
        var backoff = Backoff(initial: .milliseconds(250), maximum: .seconds(10))
        /// The last spool segment this loop has taken on: replays go no further (later ones
        /// are still on their way to it).
        var lastTaken: Int?

        init(owner: TeeWriter) {
            self.owner = owner
            self.lastTaken = owner.spool.recoveredThrough
        }

        /// Takes the written-ahead batches, in order, to the sink.
        mutating func storeWrittenAhead() async {
            let items = self.owner.writtenAhead.withLock { items in
                defer { items = [] }
                return items
            }
            for (batch, entry) in items where !batch.isEmpty {
                if let entry { self.lastTaken = entry.number }
                await self.flush(batch, entry: entry)
            }
        }

        private mutating func flush(_ batch: EntityBatch, entry: Spool.Entry?) async {
            let spool = self.owner.spool
            // Order matters: while anything waits in the spool, this batch waits behind it.
            if spool.hasPending {
                // A replay that succeeds stores this batch too (its segment is in line).
                await self.replayIfDue(force: false)
                if spool.hasPending {
                    if let entry {
                        spool.keep(entry)
                        self.owner.state.withLock { $0.spooled += batch.entityCount }
                    } else {
                        self.drop(batch, reason: "the database and the spool are both failing")
                    }
                    return
                }
                if entry != nil { return }
            }
            do {
                try await self.store(batch)
                if let entry { spool.commit(entry) }
                self.owner.state.withLock { $0.written += batch.entityCount }
            } catch {
                self.owner.logger.warning(
                    "sink write failed; the batch stays in the spool on disk and is retried in the background",
                    metadata: ["error": "\(String(reflecting: error))"])
                if let entry {
                    spool.keep(entry)
                    self.owner.state.withLock {
                        $0.spooled += batch.entityCount
                        $0.spoolPending = true
                    }
                } else {
                    self.drop(batch, reason: "the database and the spool are both failing")
                }
                self.nextReplay = .now + self.backoff.fail(jitter: 1)
            }
        }

        mutating func migrateAtStart() async {
            do {
                let sink = self.owner.sink
                let applied = try await self.owner.withTimeout { try await sink.migrate() }
                self.migrated = true
                if !applied.isEmpty { self.owner.logger.notice("schema migrations applied", metadata: ["versions": "\(applied)"]) }
            } catch {
                self.owner.logger.warning(
                    "sink unavailable at start; migrations will be applied when it is back", metadata: ["error": "\(String(reflecting: error))"])
            }
        }

        private mutating func store(_ batch: EntityBatch) async throws {
            let sink = self.owner.sink
            if !self.migrated {
                _ = try await self.owner.withTimeout { try await sink.migrate() }
                self.migrated = true
            }
            try await self.owner.withTimeout { try await sink.write(batch) }
        }

        private func drop(_ batch: EntityBatch, reason: String) {
            self.owner.state.withLock { $0.dropped += 1 }
            self.owner.logger.critical(
                "\(batch.entityCount) entities DROPPED: \(reason)", metadata: ["spool_dir": "\(self.owner.configuration.spoolDirectory)"])
        }

        mutating func replayIfDue(force: Bool) async {
            guard self.owner.spool.hasPending, force || ContinuousClock.now >= self.nextReplay else { return }
            do {
                var writer = self
                let (entities, torn) = try await self.owner.spool.replay(through: self.lastTaken) { batch in try await writer.store(batch) }
                self.migrated = writer.migrated
                self.backoff.succeed()
                self.owner.state.withLock {
                    $0.replayed += entities
                    $0.spoolPending = false
                }
                self.owner.logger.notice("spool replayed into the sink", metadata: ["entities": "\(entities)", "torn_lines": "\(torn)"])
            } catch {
                let delay = self.backoff.fail(jitter: 1)
                self.nextReplay = .now + delay
                self.owner.logger.debug("sink still unavailable; spool kept", metadata: ["retry_in_ms": "\(delay.milliseconds)"])
            }
        }
    }
}
