/// An instant on the tee's clock: the time elapsed since the writer was made. ``TeeWriter`` is
/// not generic (`TeeWriter.Stats` is named across the package), so the instant type of the clock
/// it is given is erased once, in ``TeeClock``, and its pure parts (``TeeStorageStateMachine``,
/// ``TeeBatching``, ``RecentBodies``) run on this one.
struct TeeInstant: InstantProtocol, CustomStringConvertible {
    var sinceStart: Duration

    init(sinceStart: Duration) {
        self.sinceStart = sinceStart
    }

    func advanced(by duration: Duration) -> TeeInstant { TeeInstant(sinceStart: self.sinceStart + duration) }
    func duration(to other: TeeInstant) -> Duration { other.sinceStart - self.sinceStart }
    static func < (lhs: TeeInstant, rhs: TeeInstant) -> Bool { lhs.sinceStart < rhs.sinceStart }
    var description: String { "tee+\(self.sinceStart)" }
}

/// The clock the tee was given (`ContinuousClock` in the proxy, a `ManualClock` in a test), read
/// and slept on in ``TeeInstant``s.
struct TeeClock: Sendable {
    private let read: @Sendable () -> TeeInstant
    private let wait: @Sendable (TeeInstant) async throws -> Void

    init<C: Clock>(_ clock: C) where C.Duration == Duration {
        let start = clock.now
        self.read = { TeeInstant(sinceStart: start.duration(to: clock.now)) }
        self.wait = { deadline in try await clock.sleep(until: start.advanced(by: deadline.sinceStart), tolerance: nil) }
    }

    func now() -> TeeInstant { self.read() }

    /// Returns at `deadline`, or throws when the task is cancelled first.
    func sleep(until deadline: TeeInstant) async throws { try await self.wait(deadline) }

    func sleep(for duration: Duration) async throws { try await self.sleep(until: self.now().advanced(by: duration)) }
}
