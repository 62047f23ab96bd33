import Foundation
import Logging
import NIOConcurrencyHelpers
import Synchronization

/// Log lines gathered in memory and written in batches: one `write(2)` per batch instead of one
/// per line (each request logs a line at `info`). A batch goes out when it reaches
/// ``batchLimit`` bytes, when a line at `warning` or above is logged (through
/// ``FlushingLogHandler``), at most ``flushInterval`` after its first line (a flusher thread,
/// asleep while nothing is pending), on ``flush()``, and at process exit for the standard-error
/// writer. Lines are never split or reordered: appends take a short lock, and batches are
/// written one at a time in the order they were taken.
///
/// A crash (not an exit) loses what is pending, at most one interval of lines.
public final class BufferedLogWriter: Sendable {
    public static let defaultFlushInterval: Duration = .milliseconds(100)
    public static let defaultBatchLimit = 64 << 10

    /// The writer every command's log handler uses: standard error, flushed at exit.
    public static let standardError: BufferedLogWriter = {
        let writer = BufferedLogWriter(descriptor: STDERR_FILENO)
        writer.startFlusher()
        atexit { BufferedLogWriter.standardError.flush() }
        standardErrorCreated.store(true, ordering: .releasing)
        return writer
    }()
    private static let standardErrorCreated = Atomic<Bool>(false)

    /// Writes the lines standard error's writer holds (if anything ever used it): call before
    /// writing to standard error directly, so that the log keeps its order.
    public static func flushStandardError() {
        if standardErrorCreated.load(ordering: .acquiring) { standardError.flush() }
    }

    public let flushInterval: Duration
    public let batchLimit: Int
    /// Where a batch goes: whole, in one call (tests pass a closure).
    private let output: @Sendable (UnsafeRawBufferPointer) -> Void
    private let pending = Mutex<[UInt8]>([])
    /// Held while a batch is taken and written, so batches leave in order; holds the buffer
    /// the next batch is swapped into (so a batch's storage is reused, not reallocated).
    private let writing = Mutex<[UInt8]>([])
    private let flusherStarted = Atomic<Bool>(false)
    /// True while lines wait for the flusher (or it should stop); the flusher sleeps on false.
    private let wake = ConditionLock(value: false)
    private let stopping = Atomic<Bool>(false)

    public init(
        flushInterval: Duration = BufferedLogWriter.defaultFlushInterval, batchLimit: Int = BufferedLogWriter.defaultBatchLimit,
        output: @escaping @Sendable (UnsafeRawBufferPointer) -> Void
    ) {
        self.flushInterval = flushInterval
        self.batchLimit = batchLimit
        self.output = output
    }

    /// Writes to `descriptor`, retrying short writes and `EINTR`; gives up on other errors (a
    /// closed standard error must not stop the proxy).
    public convenience init(descriptor: Int32, flushInterval: Duration = BufferedLogWriter.defaultFlushInterval) {
        self.init(flushInterval: flushInterval) { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = Foundation.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 && errno == EINTR { continue }
                guard written > 0 else { return }
                offset += written
            }
        }
    }

    /// Adds `line` (which ends with its newline) to the pending batch.
    public func append(_ line: String) {
        self.append { $0.append(contentsOf: line.utf8) }
    }

    /// Adds what `write` appends to the pending batch: a line's bytes are made in place, under
    /// the batch's lock, without a copy of their own. `write` must only append whole lines (each
    /// ending with its newline) and must not log: the lock is not reentrant. For the module's own
    /// handlers, which make every value's text before calling this.
    func append(_ write: (inout [UInt8]) -> Void) {
        let (wasEmpty, full) = self.pending.withLock { pending -> (Bool, Bool) in
            let wasEmpty = pending.isEmpty
            write(&pending)
            return (wasEmpty, pending.count >= self.batchLimit)
        }
        if full || self.stopping.load(ordering: .relaxed) {
            self.flush()
        } else if wasEmpty {
            self.wake.lock()
            self.wake.unlock(withValue: true)
        }
    }

    /// Writes what is pending now, on the calling thread.
    public func flush() {
        self.writing.withLock { spare in
            var batch = spare
            self.pending.withLock { swap(&batch, &$0) }
            defer {
                batch.removeAll(keepingCapacity: true)
                spare = batch
            }
            guard !batch.isEmpty else { return }
            batch.withUnsafeBytes { self.output($0) }
        }
    }

    /// Starts the thread that writes each batch at most ``flushInterval`` after its first line.
    public func startFlusher() {
        guard !self.flusherStarted.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let thread = Thread { [self] in
            while true {
                self.wake.lock(whenValue: true)
                self.wake.unlock(withValue: false)
                if self.stopping.load(ordering: .relaxed) { break }
                // Lines keep arriving while this sleeps; they all leave in one write.
                let (seconds, attoseconds) = self.flushInterval.components
                var pause = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
                var left = timespec()
                while nanosleep(&pause, &left) != 0 && errno == EINTR { pause = left }
                self.flush()
            }
        }
        thread.name = "log-flusher"
        thread.start()
    }

    /// Stops the flusher thread (if any) and writes what is pending; lines appended later are
    /// written at once.
    public func close() {
        self.stopping.store(true, ordering: .relaxed)
        self.wake.lock()
        self.wake.unlock(withValue: true)
        self.flush()
    }
}

/// A log handler that writes through a ``BufferedLogWriter`` and flushes it after anything at
/// `warning` or above, so that problems reach the log at once while request lines are batched.
public struct FlushingLogHandler: LogHandler {
    private var inner: any LogHandler
    private let writer: BufferedLogWriter

    public init(_ inner: any LogHandler, writer: BufferedLogWriter) {
        self.inner = inner
        self.writer = writer
    }

    public var logLevel: Logger.Level {
        get { self.inner.logLevel }
        set { self.inner.logLevel = newValue }
    }

    public var metadata: Logger.Metadata {
        get { self.inner.metadata }
        set { self.inner.metadata = newValue }
    }

    public var metadataProvider: Logger.MetadataProvider? {
        get { self.inner.metadataProvider }
        set { self.inner.metadataProvider = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { self.inner[metadataKey: key] }
        set { self.inner[metadataKey: key] = newValue }
    }

    public func log(event: LogEvent) {
        self.inner.log(event: event)
        if event.level >= .warning { self.writer.flush() }
    }
}

extension FlushingLogHandler: RequestLineWriting {
    /// The wrapped handler's: request lines are `info`, which this handler only passes on.
    public var requestLineWriter: RequestLogLine.Writer? {
        (self.inner as? any RequestLineWriting)?.requestLineWriter
    }
}
