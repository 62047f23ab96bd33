/// `[governor] budget`: at most about `budget` upstream requests per rolling 30 s, before
/// Spotify ever says 429. The generic cell rate algorithm: requests are spaced `30 s / budget`
/// apart on average, a burst of up to a tenth of the budget goes at once, and a request that
/// would have to wait longer than `max_wait` is refused (the proxy answers 429 itself) without
/// taking a slot. Pure: the caller gives the time.
public struct PacerStateMachine<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    public enum Admission: Sendable, Equatable {
        /// Go now.
        case now
        /// Go after this long (the slot is taken).
        case after(Duration)
        /// Waiting would exceed `max_wait`: answer 429 with this `Retry-After`.
        case refuse(retryAfter: Duration)
    }

    /// Spotify's window.
    public static var window: Duration { .seconds(30) }

    public let interval: Duration
    public let burst: Int
    /// The theoretical arrival time of the next request (nil: idle).
    private var next: Instant?

    public init(budget: Int) {
        precondition(budget > 0)
        self.interval = Self.window / budget
        self.burst = max(1, budget / 10)
    }

    public mutating func admit(now: Instant, maxWait: Duration) -> Admission {
        let start = self.next.map { $0 > now ? $0 : now } ?? now
        // A request may go up to (burst − 1) intervals before its theoretical time.
        let allowedAt = start.advanced(by: .zero - self.interval * (self.burst - 1))
        let wait = allowedAt > now ? now.duration(to: allowedAt) : .zero
        guard wait <= maxWait else { return .refuse(retryAfter: wait) }
        self.next = start.advanced(by: self.interval)
        return wait == .zero ? .now : .after(wait)
    }
}
