/// Exponential backoff with "equal jitter": after the n-th consecutive failure the delay is
/// min(`initial` × 2ⁿ⁻¹, `maximum`), of which at least half is waited, so retries never bunch at
/// zero. Pure; shared by the token refresher and the tee's spool replays.
public struct Backoff: Sendable, Equatable {
    public var initial: Duration
    public var maximum: Duration
    /// Consecutive failures since the last success.
    public private(set) var failures = 0

    public init(initial: Duration, maximum: Duration) {
        self.initial = initial
        self.maximum = maximum
    }

    /// Counts a failure and returns the delay before the next attempt. `jitter` is a random
    /// number in 0..<1 (1 waits the whole delay).
    public mutating func fail(jitter: Double) -> Duration {
        self.failures += 1
        let full = min(self.initial * Double(1 << min(self.failures - 1, 30)), self.maximum)
        return full.scaled(by: 0.5 + jitter / 2)
    }

    public mutating func succeed() {
        self.failures = 0
    }
}

extension Duration {
    /// `self × factor`, rounded to whole microseconds so schedules are exact and comparable.
    func scaled(by factor: Double) -> Duration {
        let (seconds, attoseconds) = self.components
        let microseconds = (Double(seconds) * 1e6 + Double(attoseconds) / 1e12) * factor
        return .microseconds(Int64(microseconds.rounded()))
    }
}
