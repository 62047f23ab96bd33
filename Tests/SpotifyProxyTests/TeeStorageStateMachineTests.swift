import SpotifyCatalog
import SpotifyProxy
import SpotifyProxyTestSupport
import Testing

/// The tee's storage decisions as a specification. Each row is a scenario: a fresh machine,
/// opened on what the spool held at start, takes the row's steps in order, and every step's
/// answer is checked, so a failure names one row and one step. Instants are seconds after t0.
@Suite("Tee storage (state machine, injected time)")
struct TeeStorageStateMachineTests {
    typealias Machine = TeeStorageStateMachine<ManualClock.Instant>
    typealias Action = Machine.BatchAction
    static let t0 = ManualClock.Instant(offset: .zero)

    static func at(_ seconds: Double) -> ManualClock.Instant { Self.t0.advanced(by: .milliseconds(Int64((seconds * 1000).rounded()))) }

    /// The replay backoff the tee uses: 250 ms doubling to 10 s.
    static let configuration = Machine.Configuration(initialBackoff: .milliseconds(250), maximumBackoff: .seconds(10))
    /// The writer waits the whole backoff (jitter 1).
    static let jitter = 1.0
    static let lost = Action.drop(reason: "the database and the spool are both failing")

    // MARK: - The language of the tables

    /// A replay decision, its instant in seconds after t0.
    enum Replay: Sendable, CustomStringConvertible {
        case replay(through: Int?, migrateFirst: Bool)
        case wait(until: Double)
        case idle

        var decision: Machine.ReplayDecision {
            switch self {
            case .replay(let through, let migrateFirst): .replay(through: through, migrateFirst: migrateFirst)
            case .wait(let until): .wait(until: TeeStorageStateMachineTests.at(until))
            case .idle: .idle
            }
        }

        var description: String { "\(self.decision)" }
    }

    /// One input to the machine and the answer it must give.
    enum Step: Sendable {
        /// The migrations were applied (no answer).
        case migrated
        /// A batch written ahead to `segment` (nil: the spool could not take it) reaches storage.
        case batch(segment: Int?, at: Double, expect: Action)
        /// A batch written ahead to `segment` and not kept in memory (storage lags) reaches storage.
        case spilled(segment: Int)
        case storeSucceeded(expect: Action)
        case storeFailed(at: Double, expect: Action)
        case replayIfDue(at: Double, force: Bool = false, expect: Replay)
        case replaySucceeded(expect: Action?)
        case replayFailed(at: Double, expect: Action?)
        /// Shutdown begins (no answer).
        case stop
        /// Questions without an input.
        case spoolPending(Bool)
        case needsMigration(Bool)

        /// The parts, in order (one list, without a chain of `+` for the type checker).
        static func sequence(_ parts: [Step]...) -> [Step] { parts.flatMap { $0 } }

        /// A replay of the segments through `through` is due at `second`, fails, and the next one
        /// is not before `retryAt`.
        static func replayFails(at second: Double, through: Int?, retryAt: Double) -> [Step] {
            [
                .replayIfDue(at: second, expect: .replay(through: through, migrateFirst: false)),
                .replayFailed(at: second, expect: nil),
                .replayIfDue(at: second, expect: .wait(until: retryAt)),
            ]
        }

        /// Migrated at start; the batch in segment 0 fails to store at `second`, so it is kept.
        static func firstStoreFails(at second: Double = 0) -> [Step] {
            [
                .migrated,
                .batch(segment: 0, at: second, expect: .store(migrateFirst: false)),
                .storeFailed(at: second, expect: .keepInSpool),
            ]
        }
    }

    struct Row: Sendable, CustomTestStringConvertible {
        var label: String
        /// The last segment a previous run left in the spool, if any.
        var recovered: Int?
        var steps: [Step]

        init(_ label: String, recovered: Int? = nil, _ steps: [Step]) {
            self.label = label
            self.recovered = recovered
            self.steps = steps
        }

        var testDescription: String { self.label }
    }

    func check(_ row: Row) {
        var machine = Machine(configuration: Self.configuration, spoolPending: row.recovered != nil, recoveredThrough: row.recovered)
        for (index, step) in row.steps.enumerated() {
            let comment: Comment = "step \(index + 1): \(step)"
            switch step {
            case .migrated:
                machine.migrationSucceeded()
            case .batch(let segment, let second, let expected):
                let action = machine.batchWrittenAhead(segment: segment, now: Self.at(second))
                #expect(action == expected, comment)
            case .spilled(let segment):
                machine.batchSpilled(segment: segment)
            case .storeSucceeded(let expected):
                let action = machine.storeSucceeded()
                #expect(action == expected, comment)
            case .storeFailed(let second, let expected):
                let action = machine.storeFailed(now: Self.at(second), jitter: Self.jitter)
                #expect(action == expected, comment)
            case .replayIfDue(let second, let force, let expected):
                let decision = machine.replayIfDue(now: Self.at(second), force: force)
                #expect(decision == expected.decision, comment)
            case .replaySucceeded(let expected):
                let action = machine.replaySucceeded()
                #expect(action == expected, comment)
            case .replayFailed(let second, let expected):
                let action = machine.replayFailed(now: Self.at(second), jitter: Self.jitter)
                #expect(action == expected, comment)
            case .stop:
                machine.stop()
            case .spoolPending(let expected):
                #expect(machine.spoolPending == expected, comment)
            case .needsMigration(let expected):
                #expect(machine.needsMigration == expected, comment)
            }
        }
    }

    // MARK: - Storing

    @Test("sink up: a batch is stored, then its segment committed", arguments: [
        Row("a batch in segment 0: store, then commit; nothing waits in the spool", [
            .migrated,
            .batch(segment: 0, at: 0, expect: .store(migrateFirst: false)),
            .storeSucceeded(expect: .commit),
            .spoolPending(false),
            .replayIfDue(at: 0, expect: .idle),
        ]),
        Row("batch after batch: each stored as it comes", [
            .migrated,
            .batch(segment: 0, at: 0, expect: .store(migrateFirst: false)),
            .storeSucceeded(expect: .commit),
            .batch(segment: 1, at: 0.2, expect: .store(migrateFirst: false)),
            .storeSucceeded(expect: .commit),
        ]),
        Row("a batch the spool could not take: stored all the same", [
            .migrated,
            .batch(segment: nil, at: 0, expect: .store(migrateFirst: false)),
            .storeSucceeded(expect: .commit),
        ]),
    ])
    func stores(row: Row) {
        self.check(row)
    }

    @Test("the migrations come before the first store (or replay) when the sink was down at start", arguments: [
        Row("not migrated at start: the first store migrates first, the next does not", [
            .needsMigration(true),
            .batch(segment: 0, at: 0, expect: .store(migrateFirst: true)),
            .migrated,
            .storeSucceeded(expect: .commit),
            .needsMigration(false),
            .batch(segment: 1, at: 1, expect: .store(migrateFirst: false)),
        ]),
        Row("migrated at start: the first store goes straight in", [
            .migrated,
            .needsMigration(false),
            .batch(segment: 0, at: 0, expect: .store(migrateFirst: false)),
        ]),
        Row("the store failed before migrating: the replay migrates first", [
            .batch(segment: 0, at: 0, expect: .store(migrateFirst: true)),
            .storeFailed(at: 0, expect: .keepInSpool),
            .replayIfDue(at: 0.25, expect: .replay(through: 0, migrateFirst: true)),
        ]),
        Row("a previous run's segments 0...4: replayed at start, forced, migrations first", recovered: 4, [
            .spoolPending(true),
            .replayIfDue(at: 0, force: true, expect: .replay(through: 4, migrateFirst: true)),
        ]),
    ])
    func migrations(row: Row) {
        self.check(row)
    }

    // MARK: - Failing, spooling, replaying

    @Test("sink fails: the batch stays in the spool, and the replay is due 250 ms later, not before", arguments: [
        Row("failed at 10 s: kept; the replay waits until 10.25 s, is due at 10.25 s", [
            .migrated,
            .batch(segment: 0, at: 10, expect: .store(migrateFirst: false)),
            .storeFailed(at: 10, expect: .keepInSpool),
            .spoolPending(true),
            .replayIfDue(at: 10, expect: .wait(until: 10.25)),
            .replayIfDue(at: 10.249, expect: .wait(until: 10.25)),
            .replayIfDue(at: 10.25, expect: .replay(through: 0, migrateFirst: false)),
        ]),
        Row("forced (start, shutdown): the replay ignores the backoff", Step.sequence(
            Step.firstStoreFails(),
            [.replayIfDue(at: 0.1, force: true, expect: .replay(through: 0, migrateFirst: false))])),
    ])
    func failureSpools(row: Row) {
        self.check(row)
    }

    @Test("stopping: a sink that failed last is not asked again, so shutdown never waits out a write_timeout for it; one that did not fail is", arguments: [
        Row("failed store, then stop: the forced replay and the next batch both stay in the spool",
            Step.sequence(Step.firstStoreFails(at: 5), [
                .stop,
                .replayIfDue(at: 20, force: true, expect: .wait(until: 5.25)),
                .batch(segment: 1, at: 20, expect: .keepInSpool),
                .spoolPending(true),
            ])),
        Row("failed replay, then stop: the same",
            Step.sequence(Step.firstStoreFails(), Step.replayFails(at: 0.25, through: 0, retryAt: 0.75), [
                .stop,
                .batch(segment: 1, at: 1, expect: .keepInSpool),
                .replayIfDue(at: 1, force: true, expect: .wait(until: 0.75)),
            ])),
        Row("a failed store of a batch the spool could not take, then stop: the next batch in the spool is kept, not stored ahead",
            [
                .migrated,
                .batch(segment: nil, at: 0, expect: .store(migrateFirst: false)),
                .storeFailed(at: 0, expect: Self.lost),
                .stop,
                .batch(segment: 1, at: 1, expect: .keepInSpool),
                .spoolPending(true),
            ]),
        Row("a failed store of a batch the spool could not take, then a store that succeeds, then stop: the sink is healthy, asked as usual",
            [
                .migrated,
                .batch(segment: nil, at: 0, expect: .store(migrateFirst: false)),
                .storeFailed(at: 0, expect: Self.lost),
                .batch(segment: 1, at: 1, expect: .store(migrateFirst: false)),
                .storeSucceeded(expect: .commit),
                .stop,
                .batch(segment: 2, at: 2, expect: .store(migrateFirst: false)),
            ]),
        Row("stopping with the sink healthy, segments spilled: stored as usual",
            [
                .migrated,
                .spilled(segment: 0),
                .stop,
                .batch(segment: 1, at: 0, expect: .replayFirst(through: 1, migrateFirst: false)),
                .replaySucceeded(expect: .storedByReplay),
                .batch(segment: 2, at: 0, expect: .store(migrateFirst: false)),
            ]),
        Row("stopping, a replay that recovered the sink: the forced replay goes ahead",
            Step.sequence(Step.firstStoreFails(), [
                .replayIfDue(at: 0.25, expect: .replay(through: 0, migrateFirst: false)),
                .replaySucceeded(expect: nil),
                .spilled(segment: 1),
                .stop,
                .replayIfDue(at: 0.3, force: true, expect: .replay(through: 1, migrateFirst: false)),
            ])),
    ])
    func stopping(row: Row) {
        self.check(row)
    }

    /// 250 ms after the failed store, then 500 ms, 1, 2, 4, 8 s, then 10 s (the maximum) after
    /// each failed replay.
    @Test("replays that fail back off, doubling from 250 ms to 10 s", arguments: [
        Row(
            "failed store at 0 s, then replays failing at 0.25, 0.75, 1.75, 3.75, 7.75, 15.75, 25.75 s",
            Step.sequence(
                Step.firstStoreFails(),
                [.replayIfDue(at: 0, expect: .wait(until: 0.25))],
                Step.replayFails(at: 0.25, through: 0, retryAt: 0.75),
                Step.replayFails(at: 0.75, through: 0, retryAt: 1.75),
                Step.replayFails(at: 1.75, through: 0, retryAt: 3.75),
                Step.replayFails(at: 3.75, through: 0, retryAt: 7.75),
                Step.replayFails(at: 7.75, through: 0, retryAt: 15.75),
                Step.replayFails(at: 15.75, through: 0, retryAt: 25.75),
                Step.replayFails(at: 25.75, through: 0, retryAt: 35.75))),
    ])
    func backoff(row: Row) {
        self.check(row)
    }

    @Test("a replay that succeeds empties the spool and starts the backoff again", arguments: [
        Row("two failures (250 ms, 500 ms), a success; the next failure waits 250 ms again",
            Step.sequence(
                Step.firstStoreFails(),
                Step.replayFails(at: 0.25, through: 0, retryAt: 0.75),
                [
                    .replayIfDue(at: 0.75, expect: .replay(through: 0, migrateFirst: false)),
                    .replaySucceeded(expect: nil),
                    .spoolPending(false),
                    .replayIfDue(at: 0.75, expect: .idle),
                    .batch(segment: 1, at: 1, expect: .store(migrateFirst: false)),
                    .storeFailed(at: 1, expect: .keepInSpool),
                    .replayIfDue(at: 1, expect: .wait(until: 1.25)),
                ])),
    ])
    func replaySuccessResets(row: Row) {
        self.check(row)
    }

    // MARK: - Order

    @Test("a batch that arrives while segments wait goes behind them", arguments: [
        Row("replay due: replayed first, its own segment among them",
            Step.sequence(Step.firstStoreFails(), [
                .batch(segment: 1, at: 0.3, expect: .replayFirst(through: 1, migrateFirst: false)),
                .replaySucceeded(expect: .storedByReplay),
                .spoolPending(false),
            ])),
        Row("replay due but failing: kept in line; the next replay, 500 ms later, takes both",
            Step.sequence(Step.firstStoreFails(), [
                .batch(segment: 1, at: 0.3, expect: .replayFirst(through: 1, migrateFirst: false)),
                .replayFailed(at: 0.3, expect: .keepInSpool),
                .spoolPending(true),
                .replayIfDue(at: 0.3, expect: .wait(until: 0.8)),
                .replayIfDue(at: 0.8, expect: .replay(through: 1, migrateFirst: false)),
            ])),
        Row("replay not due: kept at once, never stored ahead of the older segments",
            Step.sequence(Step.firstStoreFails(), [
                .batch(segment: 1, at: 0.1, expect: .keepInSpool),
                .batch(segment: 2, at: 0.2, expect: .keepInSpool),
                .replayIfDue(at: 0.25, expect: .replay(through: 2, migrateFirst: false)),
            ])),
        Row("a previous run's segments 0...4: the first new batch waits behind them", recovered: 4, [
            .migrated,
            .batch(segment: 5, at: 0, expect: .replayFirst(through: 5, migrateFirst: false)),
            .replaySucceeded(expect: .storedByReplay),
        ]),
        Row("a previous run's segments 0...4: a replay outside a batch goes no further than them", recovered: 4, [
            .migrated,
            .replayIfDue(at: 0, expect: .replay(through: 4, migrateFirst: false)),
            .replaySucceeded(expect: nil),
            .spoolPending(false),
        ]),
    ])
    func order(row: Row) {
        self.check(row)
    }

    @Test("storage lagging: a batch not kept in memory waits in the spool, and what follows waits behind it", arguments: [
        Row("sink up: replayed at once, the next batch behind it",
            Step.sequence([
                .migrated,
                .batch(segment: 0, at: 0, expect: .store(migrateFirst: false)),
                .storeSucceeded(expect: .commit),
                .spilled(segment: 1),
                .spoolPending(true),
                .spilled(segment: 2),
                .batch(segment: 3, at: 0.1, expect: .replayFirst(through: 3, migrateFirst: false)),
                .replaySucceeded(expect: .storedByReplay),
                .spoolPending(false),
                .batch(segment: 4, at: 0.2, expect: .store(migrateFirst: false)),
            ])),
        Row("nothing behind it: the next replay takes it, through its segment only",
            Step.sequence([
                .migrated,
                .spilled(segment: 0),
                .replayIfDue(at: 0, expect: .replay(through: 0, migrateFirst: false)),
                .replaySucceeded(expect: nil),
                .replayIfDue(at: 0, expect: .idle),
            ])),
        Row("the sink failing: it waits for the backoff like a kept batch",
            Step.sequence(Step.firstStoreFails(), [
                .spilled(segment: 1),
                .replayIfDue(at: 0.1, expect: .wait(until: 0.25)),
                .replayIfDue(at: 0.25, expect: .replay(through: 1, migrateFirst: false)),
            ])),
    ])
    func spilled(row: Row) {
        self.check(row)
    }

    // MARK: - Without a spool entry

    @Test("a batch the spool could not take is lost only when the sink fails too", arguments: [
        Row("sink fails: dropped, nothing waits in the spool", [
            .migrated,
            .batch(segment: nil, at: 0, expect: .store(migrateFirst: false)),
            .storeFailed(at: 0, expect: TeeStorageStateMachineTests.lost),
            .spoolPending(false),
        ]),
        Row("segments wait, no replay due: dropped",
            Step.sequence(Step.firstStoreFails(), [
                .batch(segment: nil, at: 0.1, expect: TeeStorageStateMachineTests.lost),
                .spoolPending(true),
            ])),
        Row("segments wait, the replay fails: dropped",
            Step.sequence(Step.firstStoreFails(), [
                .batch(segment: nil, at: 0.3, expect: .replayFirst(through: 0, migrateFirst: false)),
                .replayFailed(at: 0.3, expect: TeeStorageStateMachineTests.lost),
            ])),
        Row("segments wait, the replay succeeds: stored after them",
            Step.sequence(Step.firstStoreFails(), [
                .batch(segment: nil, at: 0.3, expect: .replayFirst(through: 0, migrateFirst: false)),
                .replaySucceeded(expect: .store(migrateFirst: false)),
                .storeSucceeded(expect: .commit),
                .spoolPending(false),
            ])),
    ])
    func withoutSegment(row: Row) {
        self.check(row)
    }
}

/// When the merged batch is due for the write-ahead: full (`batch_size` entities), older than
/// `flush_interval`, or forced (shutdown); never otherwise, never when empty.
@Suite("Tee batching (injected time)")
struct TeeBatchingTests {
    typealias Batching = TeeBatching<ManualClock.Instant>

    /// `[sink]` batch_size = 3, flush_interval = 0.2.
    static let batchSize = 3
    static let flushInterval = Duration.milliseconds(200)

    static func at(_ seconds: Double) -> ManualClock.Instant {
        ManualClock.Instant(offset: .milliseconds(Int64((seconds * 1000).rounded())))
    }

    /// One body's entities: artists with these ids.
    static func artists(_ ids: [String]) -> EntityBatch {
        EntityExtractor.extract(
            from: JSONValue.array(ids.map { id in JSONValue.object(["type": .string("artist"), "id": .string(id), "name": .string("Artist \(id)")]) }))
    }

    struct Addition: Sendable {
        var at: Double
        var artists: [String]
    }

    struct Row: Sendable, CustomTestStringConvertible {
        var label: String
        var additions: [Addition]
        var now: Double
        var force: Bool
        /// Entities in the batch taken; nil: not due.
        var expected: Int?

        init(_ label: String, _ additions: [(Double, [String])], at now: Double, force: Bool = false, expect expected: Int?) {
            self.label = label
            self.additions = additions.map { Addition(at: $0.0, artists: $0.1) }
            self.now = now
            self.force = force
            self.expected = expected
        }

        var testDescription: String { self.label }
    }

    @Test("a batch is due when full, when older than the flush interval, or when forced; not otherwise", arguments: [
        Row("nothing pending: not due, even forced", [], at: 1, force: true, expect: nil),
        Row("2 of 3 entities, 100 ms old: not due", [(0, ["a", "b"])], at: 0.1, expect: nil),
        Row("2 of 3 entities, 199 ms old: not due", [(0, ["a", "b"])], at: 0.199, expect: nil),
        Row("2 of 3 entities, 200 ms old (the flush interval): due", [(0, ["a", "b"])], at: 0.2, expect: 2),
        Row("2 of 3 entities, forced (shutdown): due at once", [(0, ["a", "b"])], at: 0, force: true, expect: 2),
        Row("3 of 3 entities: due at once (full)", [(0, ["a", "b", "c"])], at: 0, expect: 3),
        Row("full across two bodies", [(0, ["a", "b"]), (0.05, ["c"])], at: 0.05, expect: 3),
        Row("the age is the oldest entity's", [(0, ["a"]), (0.15, ["b"])], at: 0.2, expect: 2),
        Row("the same entities twice count once: 2 of 3, not due", [(0, ["a", "b"]), (0.01, ["a", "b"])], at: 0.01, expect: nil),
        Row("a body without entities does not start the clock", [(0, []), (0.15, ["a"])], at: 0.2, expect: nil),
    ])
    func due(row: Row) {
        var batching = Batching(batchSize: Self.batchSize, flushInterval: Self.flushInterval)
        for addition in row.additions { batching.add(Self.artists(addition.artists), now: Self.at(addition.at)) }
        let taken = batching.takeIfDue(now: Self.at(row.now), force: row.force)
        #expect(taken?.entityCount == row.expected)
        // A batch is taken whole: nothing is left behind.
        #expect(taken == nil || batching.pending.isEmpty)
    }

    @Test("once taken, the batching starts empty and the interval counts from the next entity")
    func startsAgain() {
        var batching = Batching(batchSize: Self.batchSize, flushInterval: Self.flushInterval)
        batching.add(Self.artists(["a"]), now: Self.at(0))
        let first = batching.takeIfDue(now: Self.at(0.2), force: false)
        #expect(first?.entityCount == 1)
        let again = batching.takeIfDue(now: Self.at(0.3), force: true)
        #expect(again == nil)
        batching.add(Self.artists(["b"]), now: Self.at(1))
        let early = batching.takeIfDue(now: Self.at(1.1), force: false)
        #expect(early == nil)
        let due = batching.takeIfDue(now: Self.at(1.2), force: false)
        #expect(due?.entityCount == 1)
    }
}
