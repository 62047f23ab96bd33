import CWorkerIO
import NIOCore
import Synchronization

/// Gives the memory of closed HTTPS connections back to the system. Each one's buffers (TLS
/// records decrypted, a request body read past an early answer: about 110 KiB for a 200 KB
/// upload) are freed once it closes (within a few seconds: TLS's close), but glibc keeps what
/// NIO's threads freed in their arenas: after a few thousand connections with large bodies the
/// process stayed at 625 MB through 15 s of idleness, and 400 of them left it at 228 MB until
/// `malloc_trim` brought it back to 41 MB. So: at most once per `period`, when connections have
/// closed since the last look, the heap is trimmed (it locks glibc's arenas for a few
/// milliseconds). The plain listener's worker loops read into one scratch buffer each and do not
/// need it.
final class ClosedConnectionsTrim: Sendable {
    static let period = TimeAmount.seconds(30)

    private let closed = Atomic<Int>(0)
    private let task = Mutex<RepeatedTask?>(nil)

    /// A connection closed: the next look trims.
    func connectionClosed() {
        self.closed.add(1, ordering: .relaxed)
    }

    /// Whether a look now trims (connections closed since the last one), and the count reset.
    func due() -> Bool {
        self.closed.exchange(0, ordering: .relaxed) > 0
    }

    func start(on eventLoop: any EventLoop) {
        let scheduled = eventLoop.scheduleRepeatedTask(initialDelay: Self.period, delay: Self.period) { _ in
            if self.due() { spx_malloc_trim() }
        }
        self.task.withLock { $0 = scheduled }
    }

    func stop() {
        self.task.withLock { task in
            task?.cancel()
            task = nil
        }
    }
}
