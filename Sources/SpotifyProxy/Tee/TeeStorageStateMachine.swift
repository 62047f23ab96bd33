import SpotifyCatalog

/// The tee's storage decisions, free of I/O: whether a written-ahead batch goes to the sink, waits
/// behind the spool's older segments, stays in the spool or is lost; when the spool is replayed;
/// when the schema still needs its migrations. ``TeeWriter``'s storage loop performs what it
/// says and reports how it went; the caller owns the clock and the jitter and feeds both in, so
/// every decision is reproducible in a test (as ``TokenStateMachine`` is for the token).
///
/// Segments are named by their number in the spool (``Spool/Entry``): replays go in that order,
/// so a batch is never stored before one written ahead of it that is still waiting.
///
/// One batch is in hand at a time: ``batchWrittenAhead(segment:now:)`` starts it, and the
/// reports (``storeSucceeded()``, ``storeFailed(now:jitter:)``, ``replaySucceeded()``,
/// ``replayFailed(now:jitter:)``) answer with its next action until it is settled (``commit``,
/// ``storedByReplay``, ``keepInSpool`` or ``drop``).
public struct TeeStorageStateMachine<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    public struct Configuration: Sendable, Equatable {
        /// Between spool replays while the sink is down: `initialBackoff` doubling to `maximumBackoff`.
        public var initialBackoff: Duration
        public var maximumBackoff: Duration

        public init(initialBackoff: Duration = .milliseconds(250), maximumBackoff: Duration = .seconds(10)) {
            self.initialBackoff = initialBackoff
            self.maximumBackoff = maximumBackoff
        }
    }

    /// What to do with the batch in hand.
    public enum BatchAction: Sendable, Equatable {
        /// Older batches wait in the spool and a replay is due: replay the segments through
        /// `through` (nil: all of them), applying the migrations first when `migrateFirst`, then
        /// report the outcome. The batch waits behind them; its own segment, when it has one, is
        /// among them.
        case replayFirst(through: Int?, migrateFirst: Bool)
        /// Write the batch to the sink, after the migrations when `migrateFirst`; then report.
        case store(migrateFirst: Bool)
        /// Stored: its segment (if it has one) is deleted; it counts as written.
        case commit
        /// The replay just reported stored it, its segment being in line: nothing is left to do.
        case storedByReplay
        /// Not stored: its segment stays in the spool, in line for a replay.
        case keepInSpool
        /// Not stored and not in the spool (it could not be written ahead): lost.
        case drop(reason: String)
    }

    /// Whether to replay the spool now (outside a batch: on every tick, at start, at shutdown).
    public enum ReplayDecision: Sendable, Equatable {
        /// Replay the segments through `through` (nil: all of them), applying the migrations first
        /// when `migrateFirst`; then report the outcome.
        case replay(through: Int?, migrateFirst: Bool)
        /// Segments wait, but the sink failed moments ago: not before this instant.
        case wait(until: Instant)
        /// Nothing waits in the spool.
        case idle
    }

    /// Why a batch without a segment is lost when the sink fails too.
    public static var bothFailing: String { "the database and the spool are both failing" }

    /// Where the batch in hand is.
    private enum Phase: Sendable, Equatable {
        case idle
        /// Being written to the sink; `segment` is its spool segment, nil when it has none.
        case storing(segment: Int?)
        /// Waiting behind the replay it asked for.
        case behindReplay(segment: Int?)
        /// A replay outside a batch.
        case replaying
    }

    public let configuration: Configuration
    /// Whether the schema migrations have yet to be applied: the sink was down at start.
    public private(set) var needsMigration = true
    /// Whether kept segments wait for a replay.
    public private(set) var spoolPending: Bool
    /// The earliest instant of the next replay that is not forced; nil: at once.
    public private(set) var nextReplay: Instant?
    /// The last spool segment taken on: replays go no further (later ones are still on their
    /// way to storage, and would be stored ahead of batches written before them).
    public private(set) var lastTaken: Int?
    private var backoff: Backoff
    private var phase = Phase.idle
    /// Set by ``stop()``.
    public private(set) var stopping = false
    /// Whether the sink's last call (a store or a replay) failed.
    private var lastCallFailed = false

    /// Consecutive failures of the sink (stores and replays) since the last successful replay.
    public var consecutiveFailures: Int { self.backoff.failures }

    /// `spoolPending` and `recoveredThrough` are what the spool held when it was opened: a
    /// previous run's segments are replayed first, at once.
    public init(configuration: Configuration = .init(), spoolPending: Bool, recoveredThrough: Int?) {
        self.configuration = configuration
        self.spoolPending = spoolPending
        self.lastTaken = recoveredThrough
        self.backoff = Backoff(initial: configuration.initialBackoff, maximum: configuration.maximumBackoff)
    }

    /// The migrations were applied (at start, before a store, or during a replay).
    public mutating func migrationSucceeded() {
        self.needsMigration = false
    }

    /// Shutdown begins. From now on a sink whose last call failed is not asked again, by a
    /// store or a replay, forced or not: what would be asked is already durable in the spool,
    /// where the next start replays it, so stopping never waits out a `write_timeout` for a
    /// database known to be down. (A batch the spool could not take is then lost, as it is
    /// whenever it meets a failing sink.)
    public mutating func stop() {
        self.stopping = true
    }

    /// Stopping, and the sink's last call failed.
    private var sinkFailedWhileStopping: Bool { self.stopping && self.lastCallFailed }

    /// A batch written ahead (to `segment`; nil when the spool could not take it) reaches
    /// storage at `now`. Order matters: while anything waits in the spool, this batch waits
    /// behind it.
    public mutating func batchWrittenAhead(segment: Int?, now: Instant) -> BatchAction {
        assert(self.phase == .idle, "one batch at a time")
        if let segment { self.lastTaken = segment }
        if segment != nil, self.sinkFailedWhileStopping {
            self.spoolPending = true
            return .keepInSpool
        }
        guard self.spoolPending else {
            self.phase = .storing(segment: segment)
            return .store(migrateFirst: self.needsMigration)
        }
        guard self.replayIsDue(now: now) else { return self.keepOrDrop(segment: segment) }
        // A replay that succeeds stores this batch too when it has a segment (it is in line).
        self.phase = .behindReplay(segment: segment)
        return .replayFirst(through: self.lastTaken, migrateFirst: self.needsMigration)
    }

    /// A batch written ahead to `segment` and not kept in memory, because storage lags behind
    /// (``TeeWriter`` bounds what waits in memory): it waits in the spool like a kept one, and
    /// the next replay takes it, in order with the rest.
    public mutating func batchSpilled(segment: Int) {
        assert(self.phase == .idle, "one batch at a time")
        self.lastTaken = segment
        self.spoolPending = true
    }

    /// The batch being stored is in the sink.
    public mutating func storeSucceeded() -> BatchAction {
        assert(self.isStoring, "no store in flight")
        self.phase = .idle
        self.lastCallFailed = false
        return .commit
    }

    /// The batch being stored is not in the sink (an error or `write_timeout`) at `now`; the next
    /// replay is backed off. `jitter` is a number in 0..<1 (see ``Backoff``).
    public mutating func storeFailed(now: Instant, jitter: Double) -> BatchAction {
        guard case .storing(let segment) = self.phase else {
            assertionFailure("no store in flight")
            return .drop(reason: Self.bothFailing)
        }
        self.phase = .idle
        self.lastCallFailed = true
        self.nextReplay = now.advanced(by: self.backoff.fail(jitter: jitter))
        if segment != nil { self.spoolPending = true }
        return self.keepOrDrop(segment: segment)
    }

    /// Whether to replay the spool at `now`; `force` ignores the backoff (at start and at
    /// shutdown, unless the sink failed last: see ``stop()``).
    public mutating func replayIfDue(now: Instant, force: Bool) -> ReplayDecision {
        assert(self.phase == .idle, "a batch is in hand")
        guard self.spoolPending else { return .idle }
        if self.sinkFailedWhileStopping, let next = self.nextReplay { return .wait(until: next) }
        if !force, let next = self.nextReplay, now < next { return .wait(until: next) }
        self.phase = .replaying
        return .replay(through: self.lastTaken, migrateFirst: self.needsMigration)
    }

    /// The replay asked for stored every segment through its `through`: the spool is empty up to
    /// there and the backoff starts again. Returns the next action of the batch that waited
    /// behind the replay, if one did.
    public mutating func replaySucceeded() -> BatchAction? {
        let phase = self.phase
        self.phase = .idle
        self.spoolPending = false
        self.lastCallFailed = false
        self.backoff.succeed()
        switch phase {
        case .behindReplay(.some):
            return .storedByReplay
        case .behindReplay(.none):
            // Not in the spool, so not replayed: it goes to the sink now, behind what was.
            self.phase = .storing(segment: nil)
            return .store(migrateFirst: self.needsMigration)
        case .replaying:
            return nil
        case .idle, .storing:
            assertionFailure("no replay in flight")
            return nil
        }
    }

    /// The replay asked for stopped at a failure at `now` (what it stored is gone from the spool,
    /// the rest stays); the next one is backed off. Returns the next action of the batch that
    /// waited behind it, if one did. `jitter` is a number in 0..<1.
    public mutating func replayFailed(now: Instant, jitter: Double) -> BatchAction? {
        let phase = self.phase
        self.phase = .idle
        self.lastCallFailed = true
        self.nextReplay = now.advanced(by: self.backoff.fail(jitter: jitter))
        switch phase {
        case .behindReplay(let segment):
            return self.keepOrDrop(segment: segment)
        case .replaying:
            return nil
        case .idle, .storing:
            assertionFailure("no replay in flight")
            return nil
        }
    }

    private var isStoring: Bool {
        if case .storing = self.phase { true } else { false }
    }

    private func replayIsDue(now: Instant) -> Bool {
        guard let next = self.nextReplay else { return true }
        return now >= next
    }

    /// A batch the sink cannot take now: in line in the spool when it is there, lost otherwise.
    private func keepOrDrop(segment: Int?) -> BatchAction {
        segment == nil ? .drop(reason: Self.bothFailing) : .keepInSpool
    }
}

/// The tee's batching, free of I/O: extracted entities are merged (deduplicated by id) into one
/// pending batch, which is due for the write-ahead when it holds `batchSize` entities, when its
/// oldest entity is `flushInterval` old, or when forced (at shutdown). The interval bounds what a
/// kill -9 can lose; the size bounds a batch's cost.
public struct TeeBatching<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    public let batchSize: Int
    public let flushInterval: Duration
    /// Entities merged and waiting.
    public private(set) var pending = EntityBatch()
    /// When the oldest entity in `pending` arrived; nil while it is empty.
    public private(set) var since: Instant?

    public init(batchSize: Int, flushInterval: Duration) {
        self.batchSize = batchSize
        self.flushInterval = flushInterval
    }

    /// Merges the entities of one body, extracted at `now`. Merging dedupes by id: while storage
    /// is slow this grows with distinct entities only.
    public mutating func add(_ batch: EntityBatch, now: Instant) {
        guard !batch.isEmpty else { return }
        self.pending.merge(batch)
        if self.since == nil { self.since = now }
    }

    public func isDue(now: Instant, force: Bool) -> Bool {
        guard !self.pending.isEmpty, let since = self.since else { return false }
        return force || self.pending.entityCount >= self.batchSize || since.duration(to: now) >= self.flushInterval
    }

    /// The pending batch when it is due at `now` (it starts again empty), or nil.
    public mutating func takeIfDue(now: Instant, force: Bool) -> EntityBatch? {
        guard self.isDue(now: now, force: force) else { return nil }
        defer {
            self.pending = EntityBatch()
            self.since = nil
        }
        return self.pending
    }
}
