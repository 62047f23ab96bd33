import Dispatch
import Synchronization

/// Requests per access key over the last hour, for `spotify-proxy status`: one counter per key
/// per minute, 60 minutes kept.
public final class KeyActivity: Sendable {
    /// One key's last 60 minutes: counts per minute, indexed by minute number % 60, and the
    /// minute number each slot was last written in.
    private struct Slots {
        var counts = [Int](repeating: 0, count: 60)
        var minutes = [Int](repeating: -1, count: 60)

        mutating func count(at slot: Int, minute: Int) {
            if self.minutes[slot] != minute {
                self.minutes[slot] = minute
                self.counts[slot] = 0
            }
            self.counts[slot] += 1
        }
    }

    private struct State {
        /// Per key label ("-" without a key).
        var slots: [String: Slots] = [:]
    }

    private let state = Mutex(State())
    private let minute: @Sendable () -> Int

    /// `minute` is the current minute number (a test moves it).
    public init(minute: @escaping @Sendable () -> Int = { KeyActivity.uptimeMinutes() }) {
        self.minute = minute
    }

    /// Minutes of the monotonic clock (what `NIODeadline.now()` reads, so the handler passes its own).
    public static func uptimeMinutes() -> Int { Int(DispatchTime.now().uptimeNanoseconds / 60_000_000_000) }

    public func record(_ key: String?) {
        self.record(key, minute: self.minute())
    }

    /// Counts a request of `key` in minute number `now` (callers that have the time at hand pass it).
    public func record(_ key: String?, minute now: Int) {
        let slot = now % 60
        let label = key ?? "-"
        self.state.withLock { state in
            // One lookup, modified in place: no copy of the slots per request.
            state.slots[label, default: Slots()].count(at: slot, minute: now)
        }
    }

    /// Requests per key label in the last 60 minutes (this one included); keys with none are left out.
    public func lastHour() -> [String: Int] {
        let now = self.minute()
        return self.state.withLock { state in
            var totals: [String: Int] = [:]
            for (label, slots) in state.slots {
                let total = zip(slots.counts, slots.minutes).reduce(0) { sum, pair in pair.1 > now - 60 ? sum + pair.0 : sum }
                if total > 0 { totals[label] = total }
            }
            return totals
        }
    }
}
