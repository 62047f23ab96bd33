import Synchronization

/// Requests per access key over the last hour, for `spotify-proxy status`: one counter per key
/// per minute, 60 minutes kept.
public final class KeyActivity: Sendable {
    private struct State {
        /// Per key label ("-" without a key): counts per minute, indexed by minute number % 60.
        var counts: [String: [Int]] = [:]
        /// Per key label: the minute number each slot was last written in.
        var minutes: [String: [Int]] = [:]
    }

    private let state = Mutex(State())
    private let minute: @Sendable () -> Int

    /// `minute` is the current minute number (a test moves it).
    public init(minute: @escaping @Sendable () -> Int = { KeyActivity.uptimeMinutes() }) {
        self.minute = minute
    }

    static let start = ContinuousClock.now
    /// Minutes since this process first asked.
    public static func uptimeMinutes() -> Int { Int((ContinuousClock.now - Self.start).components.seconds / 60) }

    public func record(_ key: String?) {
        let now = self.minute()
        let slot = now % 60
        let label = key ?? "-"
        self.state.withLock { state in
            if state.counts[label] == nil {
                state.counts[label] = Array(repeating: 0, count: 60)
                state.minutes[label] = Array(repeating: -1, count: 60)
            }
            // In place: no copy of the arrays per request.
            if state.minutes[label]![slot] != now {
                state.minutes[label]![slot] = now
                state.counts[label]![slot] = 0
            }
            state.counts[label]![slot] += 1
        }
    }

    /// Requests per key label in the last 60 minutes (this one included); keys with none are left out.
    public func lastHour() -> [String: Int] {
        let now = self.minute()
        return self.state.withLock { state in
            var totals: [String: Int] = [:]
            for (label, counts) in state.counts {
                let minutes = state.minutes[label]!
                let total = zip(counts, minutes).reduce(0) { sum, pair in pair.1 > now - 60 ? sum + pair.0 : sum }
                if total > 0 { totals[label] = total }
            }
            return totals
        }
    }
}
