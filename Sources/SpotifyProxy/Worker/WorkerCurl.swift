import CCurl
import CWorkerIO
import Glibc
import NIOCore

/// A worker loop's own curl multi handle, driven with `curl_multi_socket_action`: curl's
/// sockets join the worker's epoll set (`CURLMOPT_SOCKETFUNCTION`) and its one timeout is a
/// timer of the loop (`CURLMOPT_TIMERFUNCTION`), as in curl's `multi-uv.c` example. A transfer
/// started on the worker runs on its thread from start to finish: its events reach the
/// connection directly, with no hop between threads.
///
/// Curl is never re-entered: commands (add, resume, cancel) and the events curl's callbacks
/// queue are handled after curl returns, in ``runDeferred()``, until none are left.
final class WorkerCurl: CurlDriver, WorkerIOHandler, WorkerDeferred, @unchecked Sendable {
    private unowned let loop: WorkerLoop
    private let multi: CurlMulti
    private let handles = EasyHandlePool()
    private var timer: WorkerTimerSlot!

    // Loop thread only.
    private var commands: [CurlCommand] = []
    private var outbox: [UpstreamTransfer] = []
    /// The batches being run: swapped with the queues, so no array is copied or reallocated.
    private var runningCommands: [CurlCommand] = []
    private var delivering: [UpstreamTransfer] = []
    private var scheduled = false
    /// The events each of curl's sockets is watched for, or ``idle`` for an idle connection's
    /// socket, which stays in the epoll set (for `EPOLLIN`) between transfers.
    private var sockets: [Int32: UInt32] = [:]
    private static let idle = UInt32.max
    /// The sockets curl made for connections (``created(_:)``) and has not closed through its
    /// close callback: the only ones kept in the set while idle.
    private var connectionSockets: Set<Int32> = []

    /// The numbers of curl's sockets the loop watches (idle or not).
    var watchedSockets: [Int32] { Array(self.sockets.keys) }
    /// Stopping: new transfers are refused.
    private var stopping = false
    /// Stopped: curl's handle is freed; nothing calls into it.
    private var stopped = false

    init(loop: WorkerLoop, configuration: UpstreamConfiguration) {
        self.loop = loop
        self.multi = CurlMulti(configuration: configuration)
        let me = Unmanaged.passUnretained(self).toOpaque()
        ccurl_multi_setopt_socketfunction(self.multi.handle, workerCurlSocketCallback)
        ccurl_multi_setopt_pointer(self.multi.handle, CURLMOPT_SOCKETDATA, me)
        ccurl_multi_setopt_timerfunction(self.multi.handle, workerCurlTimerCallback)
        ccurl_multi_setopt_pointer(self.multi.handle, CURLMOPT_TIMERDATA, me)
    }

    /// Made on the loop's thread, before the loop serves anything.
    func attach() {
        self.timer = self.loop.makeTimerSlot { [unowned self] in
            self.socketAction(CCURL_SOCKET_TIMEOUT, mask: 0)
        }
    }

    // MARK: - CurlDriver

    func checkoutHandle() -> UnsafeMutableRawPointer? {
        guard let easy = self.handles.checkout() else { return nil }
        // Connections the handle opens outlive it in the multi handle's pool: their sockets'
        // births and closes are reported to this driver, which lives as long as that pool.
        let me = Unmanaged.passUnretained(self).toOpaque()
        ccurl_easy_setopt_closesocketfunction(easy, workerCurlCloseSocketCallback)
        ccurl_easy_setopt_pointer(easy, CURLOPT_CLOSESOCKETDATA, me)
        ccurl_easy_setopt_sockoptfunction(easy, workerCurlSocketOptionsCallback)
        ccurl_easy_setopt_pointer(easy, CURLOPT_SOCKOPTDATA, me)
        return easy
    }
    func returnHandle(_ handle: UnsafeMutableRawPointer) { self.handles.giveBack(handle) }

    func submit(_ command: CurlCommand) {
        guard self.loop.inEventLoop else {
            let command = UnsafeTransfer(command)
            self.loop.execute { self.submit(command.wrappedValue) }
            return
        }
        guard !self.stopping else {
            if case .add(let transfer) = command {
                transfer.reject(UpstreamError.notSent)
            }
            return
        }
        self.commands.append(command)
        self.scheduleDrain()
    }

    func post(_ transfer: UpstreamTransfer) {
        self.outbox.append(transfer)
        self.scheduleDrain()
    }

    private func scheduleDrain() {
        guard !self.scheduled else { return }
        self.scheduled = true
        self.loop.schedule(self)
    }

    /// Runs the queued commands and hands the transfers their events, until neither is left
    /// (a delegate answering an event may queue a command, which may queue events).
    func runDeferred() {
        self.scheduled = false
        while !self.commands.isEmpty || !self.outbox.isEmpty {
            swap(&self.commands, &self.runningCommands)
            for command in self.runningCommands { self.multi.execute(command) }
            self.runningCommands.removeAll(keepingCapacity: true)
            self.multi.collectFinished()
            swap(&self.outbox, &self.delivering)
            for transfer in self.delivering { transfer.deliver(transfer.takePendingEvents()) }
            self.delivering.removeAll(keepingCapacity: true)
        }
    }

    // MARK: - Curl's sockets and timer

    func ready(fd: Int32, events: UInt32) {
        guard !self.stopped else { return }
        if self.sockets[fd] == Self.idle {
            // An idle connection's socket woke (the upstream closed it, or sent what nobody
            // asked for): it leaves the set, and curl finds out when it next looks at it.
            self.sockets[fd] = nil
            self.loop.deregister(fd: fd)
            return
        }
        var mask: Int32 = 0
        if events & SPX_EPOLLIN != 0 { mask |= Int32(CCURL_CSELECT_IN) }
        if events & SPX_EPOLLOUT != 0 { mask |= Int32(CCURL_CSELECT_OUT) }
        if events & (SPX_EPOLLERR | SPX_EPOLLHUP) != 0 { mask |= Int32(CCURL_CSELECT_ERR) }
        self.socketAction(fd, mask: mask)
    }

    private func socketAction(_ fd: curl_socket_t, mask: Int32) {
        guard !self.stopped else { return }
        var running: Int32 = 0
        curl_multi_socket_action(self.multi.handle, fd, mask, &running)
        self.multi.collectFinished()
        if !self.outbox.isEmpty { self.scheduleDrain() }
    }

    /// What curl's socket callback asks: watch `fd` for `what`, or (`CURL_POLL_REMOVE`) no
    /// longer.
    ///
    /// A connection's socket curl is done with for now (the connection went back to the pool,
    /// or its transfer paused reading) stays in the set, watched for input only, so the next
    /// transfer on that connection costs one `epoll_ctl` instead of a delete and an add. Only
    /// sockets curl reported making (``created(_:)``) are kept so: its resolver's socketpair,
    /// closed without the close callback (and, like every socket curl makes, inherited by any
    /// child process), leaves the set on `CURL_POLL_REMOVE`, while it is still open. A losing
    /// connect attempt is closed without the callback too, before its `CURL_POLL_REMOVE`: the
    /// kernel's `ENOENT` or `EBADF` then says it is gone. An idle socket wanted again is always
    /// modified, so that an entry left stale by a close curl did not report is found out.
    func watch(_ fd: Int32, what: Int32) {
        guard !self.stopped else { return }
        var events: UInt32 = 0
        if what & Int32(CCURL_POLL_IN) != 0 { events |= SPX_EPOLLIN }
        if what & Int32(CCURL_POLL_OUT) != 0 { events |= SPX_EPOLLOUT }
        let idle = what == Int32(CCURL_POLL_REMOVE)
        guard let current = self.sockets[fd], self.loop.isWatching(fd, by: self) else {
            guard !idle else { return }
            _ = self.loop.register(fd: fd, events: events, handler: self)
            self.sockets[fd] = events
            return
        }
        if idle {
            guard self.connectionSockets.contains(fd) else {
                self.sockets[fd] = nil
                self.loop.deregister(fd: fd)
                return
            }
            if current != Self.idle, current != SPX_EPOLLIN, Self.isGone(self.loop.modify(fd: fd, events: SPX_EPOLLIN)) {
                self.forget(fd)
                return
            }
            self.sockets[fd] = Self.idle
            return
        }
        if current == Self.idle || current != events {
            if Self.isGone(self.loop.modify(fd: fd, events: events)) {
                // A new socket took the number of one closed unreported.
                self.forget(fd)
                _ = self.loop.register(fd: fd, events: events, handler: self)
            }
        }
        self.sockets[fd] = events
    }

    /// Whether an `epoll_ctl` result says the socket it named was closed (the number no longer
    /// open, or open as another socket that is not in the set).
    private static func isGone(_ result: Int32) -> Bool {
        result == -ENOENT || result == -EBADF
    }

    /// Forgets `fd`, closed without curl's close callback.
    private func forget(_ fd: Int32) {
        self.loop.forget(fd: fd)
        self.sockets[fd] = nil
        self.connectionSockets.remove(fd)
    }

    /// Curl made the socket `fd` for a connection: whatever entry the number had names a socket
    /// closed since (the kernel dropped it from the set). An idle one is forgotten; an active
    /// one is watched anew as it was, since curl, seeing the same number wanted for the same
    /// thing, will not ask again.
    func created(_ fd: Int32) {
        guard !self.stopped else { return }
        defer { self.connectionSockets.insert(fd) }
        guard let current = self.sockets.removeValue(forKey: fd), self.loop.isWatching(fd, by: self) else { return }
        self.loop.forget(fd: fd)
        if current != Self.idle, self.loop.register(fd: fd, events: current, handler: self) == 0 {
            self.sockets[fd] = current
        }
    }

    /// Curl closes `fd`: it leaves the epoll set first, so that its number, once reused, is
    /// not taken for it.
    func closing(_ fd: Int32) {
        self.connectionSockets.remove(fd)
        guard self.sockets.removeValue(forKey: fd) != nil, !self.stopped else { return }
        if self.loop.isWatching(fd, by: self) { self.loop.deregister(fd: fd) }
    }

    fileprivate func setTimer(milliseconds: Int) {
        guard !self.stopped else { return }
        self.timer.deadline = milliseconds < 0 ? nil : .now() + .milliseconds(Int64(milliseconds))
    }

    /// Fails the running transfers and frees curl's handles; on the loop's thread, as it stops.
    func stop() {
        guard !self.stopping else { return }
        self.stopping = true
        // A transfer not yet added was never sent: refused as such, not cancelled as if it might have been.
        self.commands.removeAll { command in
            guard case .add(let transfer) = command else { return false }
            transfer.reject(UpstreamError.notSent)
            return true
        }
        self.runDeferred()
        self.multi.cancelAll()
        self.runDeferred()
        // From here on nothing calls into curl: its timer and sockets are forgotten first.
        self.stopped = true
        self.timer.deadline = nil
        for fd in self.sockets.keys where self.loop.isWatching(fd, by: self) { self.loop.deregister(fd: fd) }
        self.sockets = [:]
        self.multi.cleanup()
        self.handles.cleanup()
    }
}

private func workerCurlSocketCallback(
    _ easy: UnsafeMutableRawPointer?, _ fd: curl_socket_t, _ what: Int32, _ userdata: UnsafeMutableRawPointer?,
    _ socketData: UnsafeMutableRawPointer?
) -> Int32 {
    guard let userdata else { return 0 }
    Unmanaged<WorkerCurl>.fromOpaque(userdata).takeUnretainedValue().watch(fd, what: what)
    return 0
}

private func workerCurlCloseSocketCallback(_ userdata: UnsafeMutableRawPointer?, _ fd: curl_socket_t) -> Int32 {
    if let userdata { Unmanaged<WorkerCurl>.fromOpaque(userdata).takeUnretainedValue().closing(fd) }
    return close(fd)
}

private func workerCurlSocketOptionsCallback(_ userdata: UnsafeMutableRawPointer?, _ fd: curl_socket_t, _ purpose: curlsocktype) -> Int32 {
    if let userdata { Unmanaged<WorkerCurl>.fromOpaque(userdata).takeUnretainedValue().created(fd) }
    return Int32(CURL_SOCKOPT_OK)
}

private func workerCurlTimerCallback(_ multi: UnsafeMutableRawPointer?, _ milliseconds: Int, _ userdata: UnsafeMutableRawPointer?) -> Int32 {
    guard let userdata else { return 0 }
    Unmanaged<WorkerCurl>.fromOpaque(userdata).takeUnretainedValue().setTimer(milliseconds: milliseconds)
    return 0
}
