import CWorkerIO
import Dispatch
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Synchronization

/// Something a ``WorkerLoop`` watches a file descriptor for (a client connection, the
/// listening socket, one of curl's sockets). Called on the loop's thread.
protocol WorkerIOHandler: AnyObject {
    func ready(fd: Int32, events: UInt32)
}

/// Work a ``WorkerLoop`` runs once after the current event, before it waits again (a
/// connection's parsing, the curl driver's queued commands). Called on the loop's thread.
protocol WorkerDeferred: AnyObject {
    func runDeferred()
}

/// One thread with its own epoll set: the hot path of the proxy. A worker's client connections,
/// its curl multi handle's sockets and its timers all live here, so a request is accepted,
/// parsed, forwarded, answered and logged on one thread, with no hand-off.
///
/// It is a NIO `EventLoop` too, so everything the proxy already does through futures (the
/// cache, the token sources, the governor's holds) runs here unchanged: a future completed on
/// another thread comes back through ``execute(_:)`` (a queue and an `eventfd`).
final class WorkerLoop: EventLoop, @unchecked Sendable {
    /// The epoll set's descriptor (tests read the kernel's view of it from `/proc`).
    let epoll: Int32
    private let wakeFD: Int32
    /// The loop's thread, as a `pthread_t` (0 until it runs).
    private let threadID = Atomic<UInt>(0)
    private let thread = NIOThreadPool(numberOfThreads: 1)

    /// Tasks from other threads, and whether the loop has been woken for them.
    private struct Remote {
        var tasks: [@Sendable () -> Void] = []
        var woken = false
        var stopping = false
        /// The thread has ended: nothing queued now would run.
        var closed = false
    }
    private let remote = Mutex(Remote())
    /// The remote tasks taken in one turn; swapped with `Remote.tasks` so that neither array is
    /// copied or reallocated (loop thread only).
    private var takenRemoteTasks: [@Sendable () -> Void] = []
    /// The worker's curl multi handle: transfers started on this loop run on it. Set before the loop starts.
    var curl: WorkerCurl?
    /// Swift concurrency's way onto this loop: a `Task` preferring it runs its code here, and
    /// resumes here after an `await`, instead of hopping to the global pool and back.
    private(set) var taskExecutor: WorkerTaskExecutor!

    // Loop thread only.
    /// Each watched descriptor's handler and the generation it was registered with (in the
    /// upper half of its epoll data): an event still queued for a descriptor closed and reused
    /// within one batch does not reach the new handler.
    private var handlers: [Int32: (handler: any WorkerIOHandler, generation: UInt32)] = [:]
    private var generation: UInt32 = 0
    private var localTasks: [() -> Void] = []
    private var deferred: [any WorkerDeferred] = []
    /// The batch being run: swapped with `deferred`, so neither array is copied or reallocated.
    private var running: [any WorkerDeferred] = []
    /// Work put off to the next turn (``scheduleNextTurn(_:)``), and the work put off by earlier
    /// turns, due in this one (swapped at each turn's start, so neither array is reallocated).
    private var nextTurn: [any WorkerDeferred] = []
    private var nextTurnDue: [any WorkerDeferred] = []
    /// The loop's turns so far: a component that bounds its work per turn counts by it.
    private(set) var turn: UInt64 = 0
    private var timers = TimerHeap()
    private var timerSequence: UInt64 = 0
    /// Timers of the loop's own components, each a single deadline (curl's timer, the idle sweep).
    private var slots: [WorkerTimerSlot] = []

    init() throws {
        let epoll = spx_epoll_create()
        guard epoll >= 0 else { throw IOError(errnoCode: -epoll, reason: "epoll_create1") }
        let wake = spx_eventfd()
        guard wake >= 0 else {
            _ = spx_close(epoll)
            throw IOError(errnoCode: -wake, reason: "eventfd")
        }
        self.epoll = epoll
        self.wakeFD = wake
        _ = spx_epoll_ctl(epoll, EPOLL_CTL_ADD, wake, SPX_EPOLLIN, UInt64(UInt32(bitPattern: wake)))
        self.taskExecutor = WorkerTaskExecutor(loop: self)
    }

    deinit {
        _ = spx_close(self.wakeFD)
        _ = spx_close(self.epoll)
    }

    // MARK: - Running

    /// Starts the loop's thread.
    func start() {
        self.thread.start()
        self.thread.submit { [self] _ in self.run() }
    }

    /// Asks the loop to stop after the current event; ``run()`` returns.
    func stop() async {
        self.remote.withLock { state in
            state.stopping = true
            spx_eventfd_signal(self.wakeFD)
        }
        try? await self.thread.shutdownGracefully()
    }

    private func run() {
        self.threadID.store(UInt(bitPattern: Int(bitPattern: UInt(pthread_self()))), ordering: .releasing)
        var events = [spx_event](repeating: spx_event(), count: 256)
        while true {
            let timeout = self.nextTimeout()
            let count = events.withUnsafeMutableBufferPointer { spx_epoll_wait(self.epoll, $0.baseAddress, Int32($0.count), timeout) }
            self.turn &+= 1
            // What earlier turns put off is due in this one; what this one puts off waits.
            swap(&self.nextTurn, &self.nextTurnDue)
            for index in 0..<max(0, Int(count)) {
                let event = events[index]
                let fd = Int32(truncatingIfNeeded: event.data)
                if fd == self.wakeFD {
                    spx_eventfd_drain(fd)
                } else if let entry = self.handlers[fd], entry.generation == UInt32(truncatingIfNeeded: event.data >> 32) {
                    entry.handler.ready(fd: fd, events: event.events)
                }
                self.runDeferred()
            }
            self.runNextTurn()
            if self.takeRemoteTasks() { break }
            self.runLocalTasks()
            self.runTimers()
        }
        // Timers not due fail, as NIO's do when their loop shuts down; then every task queued
        // until the loop is marked closed still runs (their promises complete). Later ones are
        // refused (`execute` drops them as NIO's closed loops do; a Task's jobs go to the
        // global executor instead).
        while let timer = self.timers.first {
            self.timers.removeFirst()
            timer.shutDown()
        }
        while true {
            while !self.localTasks.isEmpty { self.runLocalTasks() }
            let tasks = self.remote.withLock { state -> [@Sendable () -> Void] in
                if state.tasks.isEmpty { state.closed = true }
                defer { state.tasks.removeAll() }
                return state.tasks
            }
            guard !tasks.isEmpty else { break }
            for task in tasks { self.localTasks.append(task) }
        }
        self.threadID.store(0, ordering: .releasing)
    }

    /// epoll_wait's timeout: 0 with work queued, else until the next timer (at most a second).
    private func nextTimeout() -> Int32 {
        if !self.localTasks.isEmpty || !self.deferred.isEmpty || !self.nextTurn.isEmpty { return 0 }
        var next = self.timers.first?.deadline
        for slot in self.slots {
            if let deadline = slot.deadline, next == nil || deadline < next! { next = deadline }
        }
        guard let next else { return 1000 }
        let nanoseconds = next.uptimeNanoseconds &- NIODeadline.now().uptimeNanoseconds
        if nanoseconds <= 0 || next.uptimeNanoseconds < NIODeadline.now().uptimeNanoseconds { return 0 }
        return Int32(min(1000, (nanoseconds + 999_999) / 1_000_000))
    }

    /// Moves the tasks other threads queued to the local queue; true when the loop should stop.
    private func takeRemoteTasks() -> Bool {
        // Returning `state.tasks` and then emptying it would share its storage, and so allocate
        // new storage at every turn of the loop once it had ever held a task: swapped instead.
        let stopping = self.remote.withLock { state in
            state.woken = false
            if !state.tasks.isEmpty { swap(&state.tasks, &self.takenRemoteTasks) }
            return state.stopping
        }
        guard !self.takenRemoteTasks.isEmpty else { return stopping }
        // One by one: `append(contentsOf:)` would cast the array of `@Sendable` closures to one
        // of plain closures at run time, which the Swift runtime fails.
        for task in self.takenRemoteTasks { self.localTasks.append(task) }
        self.takenRemoteTasks.removeAll(keepingCapacity: true)
        return stopping
    }

    private func runLocalTasks() {
        // Tasks queued by these tasks run in this turn too, up to a bound (I/O is not starved).
        var budget = 4096
        while !self.localTasks.isEmpty, budget > 0 {
            let tasks = self.localTasks
            self.localTasks.removeAll(keepingCapacity: true)
            for task in tasks {
                task()
                self.runDeferred()
            }
            budget -= tasks.count
        }
    }

    private func runTimers() {
        let now = NIODeadline.now()
        for slot in self.slots {
            if let deadline = slot.deadline, deadline <= now {
                slot.deadline = nil
                slot.fire()
                self.runDeferred()
            }
        }
        while let first = self.timers.first, first.deadline <= now {
            self.timers.removeFirst()
            guard !first.isCancelled else { continue }
            first.task()
            self.runDeferred()
        }
    }

    /// Runs the work put off by earlier turns, after this turn's events: what it (or anything
    /// in this turn) puts off waits for the next. Never what this turn put off: that work has
    /// spent its share of this turn, and would find nothing left to do it with.
    private func runNextTurn() {
        guard !self.nextTurnDue.isEmpty else { return }
        for item in self.nextTurnDue { self.deferred.append(item) }
        self.nextTurnDue.removeAll(keepingCapacity: true)
        self.runDeferred()
    }

    private func runDeferred() {
        while !self.deferred.isEmpty {
            swap(&self.deferred, &self.running)
            for item in self.running { item.runDeferred() }
            self.running.removeAll(keepingCapacity: true)
        }
    }

    // MARK: - The loop's own components (loop thread only)

    /// Watches `fd` for `events` (edge- or level-triggered as `events` says).
    func register(fd: Int32, events: UInt32, handler: any WorkerIOHandler) -> Int32 {
        self.generation &+= 1
        let result = spx_epoll_ctl(self.epoll, EPOLL_CTL_ADD, fd, events, Self.data(fd, self.generation))
        if result == 0 { self.handlers[fd] = (handler, self.generation) }
        return result
    }

    /// Changes what `fd` is watched for; 0 or -errno (`-ENOENT`: it left the set, closed).
    @discardableResult
    func modify(fd: Int32, events: UInt32) -> Int32 {
        guard let entry = self.handlers[fd] else { return -ENOENT }
        return spx_epoll_ctl(self.epoll, EPOLL_CTL_MOD, fd, events, Self.data(fd, entry.generation))
    }

    private static func data(_ fd: Int32, _ generation: UInt32) -> UInt64 {
        UInt64(generation) << 32 | UInt64(UInt32(bitPattern: fd))
    }

    /// Whether `handler` is the one watching `fd`.
    func isWatching(_ fd: Int32, by handler: any WorkerIOHandler) -> Bool {
        self.handlers[fd]?.handler === handler
    }

    /// Stops watching `fd` (before it is closed).
    func deregister(fd: Int32) {
        guard self.handlers.removeValue(forKey: fd) != nil else { return }
        _ = spx_epoll_ctl(self.epoll, EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Forgets `fd`, which already left the set: it was closed (the kernel drops a closed
    /// socket from every epoll set) and its number may be another socket's now.
    func forget(fd: Int32) {
        self.handlers[fd] = nil
    }

    /// Runs `work` after the current event, once however often it is asked for meanwhile
    /// (the caller keeps a flag).
    func schedule(_ work: any WorkerDeferred) {
        self.deferred.append(work)
    }

    /// Runs `work` in the next turn, after that turn's events and timers' due work has had its
    /// chance: for a component that has done its share of this turn (the caller keeps a flag).
    func scheduleNextTurn(_ work: any WorkerDeferred) {
        self.nextTurn.append(work)
    }

    /// A single-deadline timer that fires on this loop; set its `deadline` to arm it.
    func makeTimerSlot(_ fire: @escaping () -> Void) -> WorkerTimerSlot {
        let slot = WorkerTimerSlot(fire: fire)
        self.slots.append(slot)
        return slot
    }

    // MARK: - EventLoop

    var inEventLoop: Bool {
        self.threadID.load(ordering: .relaxed) == UInt(bitPattern: Int(bitPattern: UInt(pthread_self())))
    }

    func execute(_ task: @escaping @Sendable () -> Void) {
        _ = self.tryExecute(task)
    }

    /// Queues `task`; false when the loop has ended and it will never run.
    func tryExecute(_ task: @escaping @Sendable () -> Void) -> Bool {
        if self.inEventLoop {
            self.localTasks.append(task)
            return true
        }
        return self.remote.withLock { state in
            guard !state.closed else { return false }
            state.tasks.append(task)
            if !state.woken {
                state.woken = true
                spx_eventfd_signal(self.wakeFD)
            }
            return true
        }
    }

    func _executeIsolatedUnsafeUnchecked(_ task: @escaping () -> Void) {
        if self.inEventLoop {
            self.localTasks.append(task)
        } else {
            let box = UnsafeTransfer(task)
            self.execute { box.wrappedValue() }
        }
    }

    @discardableResult
    func scheduleTask<T>(deadline: NIODeadline, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        let promise = self.makePromise(of: T.self)
        let timer = ScheduledTimer(deadline: deadline) {
            do { promise.assumeIsolatedUnsafeUnchecked().succeed(try task()) } catch { promise.fail(error) }
        } shutDown: {
            promise.fail(EventLoopError.shutdown)
        }
        let scheduled = Scheduled(promise: promise) {
            timer.cancel()
            promise.fail(EventLoopError.cancelled)
        }
        if self.inEventLoop {
            self.insert(timer)
        } else if !self.tryExecute({ self.insert(timer) }) {
            promise.fail(EventLoopError.shutdown)
        }
        return scheduled
    }

    @discardableResult
    func scheduleTask<T>(in delay: TimeAmount, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        self.scheduleTask(deadline: .now() + delay, task)
    }

    @discardableResult
    func _scheduleTaskIsolatedUnsafeUnchecked<T>(deadline: NIODeadline, _ task: @escaping () throws -> T) -> Scheduled<T> {
        let box = UnsafeTransfer(task)
        return self.scheduleTask(deadline: deadline) { try box.wrappedValue() }
    }

    @discardableResult
    func _scheduleTaskIsolatedUnsafeUnchecked<T>(in delay: TimeAmount, _ task: @escaping () throws -> T) -> Scheduled<T> {
        self._scheduleTaskIsolatedUnsafeUnchecked(deadline: .now() + delay, task)
    }

    private func insert(_ timer: ScheduledTimer) {
        guard !timer.isCancelled else { return }
        self.timerSequence &+= 1
        timer.sequence = self.timerSequence
        self.timers.insert(timer)
    }

    func preconditionInEventLoop(file: StaticString, line: UInt) {
        precondition(self.inEventLoop, "not on the worker loop", file: file, line: line)
    }

    func preconditionNotInEventLoop(file: StaticString, line: UInt) {
        precondition(!self.inEventLoop, "on the worker loop", file: file, line: line)
    }

    func shutdownGracefully(queue: DispatchQueue, _ callback: @escaping @Sendable ((any Error)?) -> Void) {
        Task {
            await self.stop()
            queue.async { callback(nil) }
        }
    }
}

/// Runs a task's jobs on a ``WorkerLoop`` (`Task(executorPreference:)`).
final class WorkerTaskExecutor: TaskExecutor {
    private unowned let loop: WorkerLoop

    init(loop: WorkerLoop) {
        self.loop = loop
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let queued = self.loop.tryExecute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
        // The loop has ended (shutdown): the task goes on in the global pool rather than never.
        if !queued { globalConcurrentExecutor.enqueue(job) }
    }
}

extension EventLoop {
    /// The task executor that keeps a `Task` on this loop: a worker loop's, else none (NIO's
    /// own loops; the task runs on the global pool as before).
    var preferredTaskExecutor: (any TaskExecutor)? { (self as? WorkerLoop)?.taskExecutor }
}

/// A deadline one component of a ``WorkerLoop`` keeps (curl's single timer); loop thread only.
final class WorkerTimerSlot {
    var deadline: NIODeadline?
    let fire: () -> Void

    init(fire: @escaping () -> Void) {
        self.fire = fire
    }
}

/// A task scheduled on a ``WorkerLoop``; cancelled from any thread.
private final class ScheduledTimer: @unchecked Sendable {
    let deadline: NIODeadline
    var sequence: UInt64 = 0
    let task: () -> Void
    let shutDown: () -> Void
    private let cancelled = Atomic<Bool>(false)

    init(deadline: NIODeadline, task: @escaping () -> Void, shutDown: @escaping () -> Void) {
        self.deadline = deadline
        self.task = task
        self.shutDown = shutDown
    }

    var isCancelled: Bool { self.cancelled.load(ordering: .relaxed) }
    func cancel() { self.cancelled.store(true, ordering: .relaxed) }

    func precedes(_ other: ScheduledTimer) -> Bool {
        self.deadline < other.deadline || (self.deadline == other.deadline && self.sequence < other.sequence)
    }
}

/// A binary min-heap of timers by deadline (then by the order they were scheduled in).
private struct TimerHeap {
    private var items: [ScheduledTimer] = []

    var first: ScheduledTimer? { self.items.first }

    mutating func insert(_ timer: ScheduledTimer) {
        // Cancelled timers wait for their deadline to leave; when the heap doubles past 1,024,
        // they are dropped at once (a waiter's 10 s timeout is cancelled as its token comes).
        if self.items.count >= 1024, self.items.count & (self.items.count - 1) == 0 {
            let live = self.items.filter { !$0.isCancelled }
            if live.count < self.items.count {
                self.items = []
                for item in live { self.siftIn(item) }
            }
        }
        self.siftIn(timer)
    }

    private mutating func siftIn(_ timer: ScheduledTimer) {
        self.items.append(timer)
        var child = self.items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard self.items[child].precedes(self.items[parent]) else { break }
            self.items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func removeFirst() {
        let last = self.items.removeLast()
        guard !self.items.isEmpty else { return }
        self.items[0] = last
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < self.items.count, self.items[left].precedes(self.items[smallest]) { smallest = left }
            if right < self.items.count, self.items[right].precedes(self.items[smallest]) { smallest = right }
            guard smallest != parent else { return }
            self.items.swapAt(parent, smallest)
            parent = smallest
        }
    }
}

/// Carries a value the compiler cannot prove `Sendable` to the one thread that uses it.
struct UnsafeTransfer<Value>: @unchecked Sendable {
    var wrappedValue: Value
    init(_ value: Value) { self.wrappedValue = value }
}
