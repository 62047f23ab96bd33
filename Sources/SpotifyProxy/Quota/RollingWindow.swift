/// At most `limit` requests in any rolling `window` (an access key's `budget=N` per 30 s): the
/// times of the last `limit` admitted requests are kept; a request is admitted when the oldest
/// of them has left the window, else refused with the time until it does. Pure: the caller
/// gives the time.
public struct RollingWindow<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    public enum Admission: Sendable, Equatable {
        case admitted
        /// Over the limit: retry after this long.
        case refused(retryAfter: Duration)
    }

    public let limit: Int
    public let window: Duration
    /// The admitted requests' times, oldest first, at most `limit` of them.
    private var admitted: [Instant] = []
    /// Where the oldest is in `admitted` once it is full (a ring).
    private var oldest = 0

    public init(limit: Int, window: Duration = .seconds(30)) {
        precondition(limit > 0)
        self.limit = limit
        self.window = window
        self.admitted.reserveCapacity(min(limit, 1024))
    }

    /// The same window under another limit: its most recent admitted requests (up to `limit`)
    /// still count, so a budget changed by a reload does not start the key's 30 s anew.
    public func resized(to limit: Int) -> RollingWindow {
        guard limit != self.limit else { return self }
        var resized = RollingWindow(limit: limit, window: self.window)
        // Oldest first (`oldest` is 0 until the ring is full).
        resized.admitted = Array((self.admitted[self.oldest...] + self.admitted[..<self.oldest]).suffix(limit))
        return resized
    }

    public mutating func admit(now: Instant) -> Admission {
        guard self.admitted.count == self.limit else {
            self.admitted.append(now)
            return .admitted
        }
        let leaves = self.admitted[self.oldest].advanced(by: self.window)
        guard leaves <= now else { return .refused(retryAfter: now.duration(to: leaves)) }
        self.admitted[self.oldest] = now
        self.oldest = (self.oldest + 1) % self.limit
        return .admitted
    }
}
