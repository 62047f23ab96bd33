/// When to log bodies the tee drops (its inbox full, or the tee stopped): the first at once,
/// then at most one line a second with the count since the last one, so a burst of drops is a
/// few lines, not one per response. Pure: the tee gives it the time.
struct TeeDropReport {
    static let interval: Duration = .seconds(1)

    private var lastLine: TeeInstant?
    /// Drops not logged yet, and why the last of them was dropped.
    private(set) var pending = 0
    private var why = ""

    /// A body was dropped at `now`, `why`: the count to log now (this one included), or nil
    /// when it waits for the next line.
    mutating func dropped(now: TeeInstant, why: String) -> (count: Int, why: String)? {
        self.pending += 1
        self.why = why
        return self.due(now: now)
    }

    /// The drops not logged yet, whether or not their line is due (when the tee stops).
    mutating func remaining() -> (count: Int, why: String)? {
        guard self.pending > 0 else { return nil }
        defer { self.pending = 0 }
        return (self.pending, self.why)
    }

    /// The count to log now, when drops wait and a line is due (the tee asks on its ticks).
    mutating func due(now: TeeInstant) -> (count: Int, why: String)? {
        guard self.pending > 0 else { return nil }
        if let last = self.lastLine, now < last.advanced(by: Self.interval) { return nil }
        defer {
            self.pending = 0
            self.lastLine = now
        }
        return (self.pending, self.why)
    }
}
