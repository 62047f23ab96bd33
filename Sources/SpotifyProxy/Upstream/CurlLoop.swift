import CCurl
import Foundation
import NIOCore
import Synchronization

/// libcurl for one ``UpstreamClient``: a multi handle per event loop (``CurlLoop``), created when
/// the loop starts its first transfer, all sharing one DNS cache and TLS session cache.
final class CurlEngine: Sendable {
    private static let globalInit: Void = {
        curl_global_init(Int(CURL_GLOBAL_ALL))
    }()

    let configuration: UpstreamConfiguration
    let watcher: CurlSocketWatcher
    /// The DNS and TLS-session share (an address: raw pointers are not Sendable).
    private let shared: UInt
    private let loops = Mutex<(byEventLoop: [ObjectIdentifier: CurlLoop], stopping: Bool)>(([:], false))
    init(configuration: UpstreamConfiguration) {
        _ = Self.globalInit
        self.configuration = configuration
        self.watcher = CurlSocketWatcher()
        self.shared = UInt(bitPattern: ccurl_share_new())
    }

    /// The share's handle, for `CURLOPT_SHARE`. The share lives as long as the process: a
    /// transfer made after shutdown still names it before it is refused.
    var share: UnsafeMutableRawPointer? {
        UnsafeMutablePointer<ccurl_share>(bitPattern: self.shared)?.pointee.share
    }

    /// The multi handle that runs `eventLoop`'s transfers (once stopping, one that refuses them).
    func loop(for eventLoop: any EventLoop) -> CurlLoop {
        self.loops.withLock { state in
            if let loop = state.byEventLoop[ObjectIdentifier(eventLoop)] { return loop }
            let loop = CurlLoop(eventLoop: eventLoop, engine: self, stopped: state.stopping)
            state.byEventLoop[ObjectIdentifier(eventLoop)] = loop
            return loop
        }
    }

    /// Stops every loop (transfers still running fail as cancelled) and the socket watcher.
    func shutdown() async {
        let loops = self.loops.withLock { state in
            state.stopping = true
            return Array(state.byEventLoop.values)
        }
        for loop in loops {
            do {
                try await loop.eventLoop.submit { loop.stop() }.get()
            } catch {
                // The event loop is gone: nothing else can touch its multi handle now.
                loop.stop()
            }
        }
        self.watcher.stop()
    }
}

final class CurlLoop: @unchecked Sendable {
    enum Command {
        case add(UpstreamTransfer)
        case resume(UpstreamTransfer)
        case cancel(UpstreamTransfer, UpstreamError)
    }

    let eventLoop: any EventLoop
    let engine: CurlEngine
    private let multi: UnsafeMutableRawPointer
    /// The epoll set of curl's sockets.
    let epoll: Int32
    /// This loop's number in the watcher's registrations.
    private(set) var index: UInt32 = 0

    /// The sockets curl wants watched now (a parked connection's is still in the set).
    private var wanted: Set<Int32> = []
    /// The transfers added to the multi handle, which keeps them alive.
    private var active: [ObjectIdentifier: UpstreamTransfer] = [:]
    /// Transfers with events queued, in the order they first queued one.
    private var outbox: [UpstreamTransfer] = []
    private var delivering = false
    private var deliveryScheduled = false
    /// Inside a call into curl: commands wait (curl must not be re-entered from its callbacks).
    private var inCurl = false
    private var deferred: [Command] = []
    /// Curl asked for its timeouts to be run now.
    private var timeoutDue = false
    private var timer: (task: Scheduled<Void>, at: NIODeadline)?
    private var stopped = false
    /// Easy handles of finished transfers, ready for the next: creating one per request costs
    /// an allocation of curl's buffers and state. Per loop, so that a handle's memory is
    /// allocated and freed by the same thread.
    private var idleHandles: [UnsafeMutableRawPointer] = []
    private static let maximumIdleHandles = 256

    fileprivate init(eventLoop: any EventLoop, engine: CurlEngine, stopped: Bool) {
        self.eventLoop = eventLoop
        self.engine = engine
        self.stopped = stopped
        self.multi = curl_multi_init()
        self.epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        let configuration = engine.configuration
        ccurl_multi_setopt_long(self.multi, CURLMOPT_PIPELINING, Int(CURLPIPE_MULTIPLEX))
        ccurl_multi_setopt_long(self.multi, CURLMOPT_MAX_HOST_CONNECTIONS, configuration.maxConnectionsPerHost)
        ccurl_multi_setopt_long(self.multi, CURLMOPT_MAXCONNECTS, 1024)
        let me = Unmanaged.passUnretained(self).toOpaque()
        ccurl_multi_setopt_socket_callback(self.multi, curlSocketCallback)
        ccurl_multi_setopt_pointer(self.multi, CURLMOPT_SOCKETDATA, me)
        ccurl_multi_setopt_timer_callback(self.multi, curlTimerCallback)
        ccurl_multi_setopt_pointer(self.multi, CURLMOPT_TIMERDATA, me)
        if !stopped { self.index = engine.watcher.register(self) }
    }

    /// A fresh (or reset) easy handle; any thread (a pooled one only on the loop).
    func checkoutHandle() -> UnsafeMutableRawPointer? {
        if self.eventLoop.inEventLoop, let handle = self.idleHandles.popLast() { return handle }
        return curl_easy_init()
    }

    /// Takes back a handle no multi handle holds any more; any thread (pooled only on the loop).
    func returnHandle(_ handle: UnsafeMutableRawPointer) {
        if self.eventLoop.inEventLoop, !self.stopped, self.idleHandles.count < Self.maximumIdleHandles {
            curl_easy_reset(handle)
            self.idleHandles.append(handle)
        } else {
            curl_easy_cleanup(handle)
        }
    }

    /// Runs `command` on the loop; from any thread.
    func submit(_ command: Command) {
        if self.eventLoop.inEventLoop {
            self.run(command)
        } else {
            self.eventLoop.execute { self.run(command) }
        }
    }

    private func run(_ command: Command) {
        if self.stopped {
            if case .add(let transfer) = command {
                transfer.reject(UpstreamError(kind: .cancelled, message: "the proxy is shutting down"))
            }
            return
        }
        if self.inCurl {
            self.deferred.append(command)
            return
        }
        self.execute(command)
        self.settle()
        // Called from a delegate (or a handler): its events go out in a task of their own.
        self.scheduleDelivery()
    }

    private func execute(_ command: Command) {
        switch command {
        case .add(let transfer):
            guard let easy = transfer.easy else { return }
            ccurl_easy_setopt_pointer(easy, CURLOPT_PRIVATE, Unmanaged.passUnretained(transfer).toOpaque())
            self.inCurl = true
            let code = curl_multi_add_handle(self.multi, easy)
            self.inCurl = false
            guard code == CURLM_OK else {
                transfer.fail(UpstreamError(kind: .protocolError, message: String(cString: curl_multi_strerror(code))))
                return
            }
            self.active[ObjectIdentifier(transfer)] = transfer
            // Start it now (curl asks for its timeout at once): the request leaves in this call.
            self.timeoutDue = true
        case .resume(let transfer):
            guard self.active[ObjectIdentifier(transfer)] != nil else { return }
            self.inCurl = true
            transfer.unpauseOnLoopThread()
            self.inCurl = false
        case .cancel(let transfer, let error):
            guard self.active[ObjectIdentifier(transfer)] != nil, let easy = transfer.easy else { return }
            self.detach(easy, result: nil, cancelledWith: error)
        }
    }

    /// Runs what curl asked for while it was busy: queued commands, due timeouts, finished
    /// transfers. Bounded: a curl that keeps asking for "now" gets a scheduled task instead.
    private func settle() {
        var rounds = 0
        repeat {
            while !self.deferred.isEmpty {
                let commands = self.deferred
                self.deferred = []
                for command in commands { self.execute(command) }
            }
            if self.timeoutDue {
                self.timeoutDue = false
                self.action(socket: CCURL_SOCKET_TIMEOUT, events: 0)
            }
            self.collectFinished()
            rounds += 1
        } while (self.timeoutDue || !self.deferred.isEmpty) && rounds < 16
        if self.timeoutDue {
            self.timeoutDue = false
            self.scheduleTimer(at: .now())
        }
    }

    private func action(socket: Int32, events: Int32) {
        var running: Int32 = 0
        self.inCurl = true
        curl_multi_socket_action(self.multi, socket, events, &running)
        self.inCurl = false
    }

    // MARK: - Sockets and timers

    /// Curl's `CURLMOPT_SOCKETFUNCTION`: watch `fd` for `what`, or stop watching it.
    fileprivate func socketChanged(_ fd: Int32, what: Int32) {
        if what == CURL_POLL_REMOVE {
            // Left in the set: the connection is usually parked and reused by the next request.
            // Should it become readable meanwhile (the upstream closed it), it leaves the set
            // then (see `drain`); a closed descriptor leaves it by itself.
            self.wanted.remove(fd)
            return
        }
        self.wanted.insert(fd)
        var events: UInt32 = 0
        if what & CURL_POLL_IN != 0 { events |= EPOLLIN.rawValue }
        if what & CURL_POLL_OUT != 0 { events |= EPOLLOUT.rawValue }
        // Modify first (a reused connection), add if the set does not hold it (a new one, or a
        // number reused after a close).
        if ccurl_epoll_set(self.epoll, EPOLL_CTL_MOD, fd, events, UInt64(UInt32(bitPattern: fd))) != 0 {
            _ = ccurl_epoll_set(self.epoll, EPOLL_CTL_ADD, fd, events, UInt64(UInt32(bitPattern: fd)))
        }
    }

    /// Curl's `CURLMOPT_TIMERFUNCTION`: run its timeouts in `milliseconds` (-1: none pending).
    fileprivate func timerChanged(_ milliseconds: Int) {
        if milliseconds < 0 { return }  // a pending task that fires early costs one idle call
        if milliseconds == 0 {
            self.timeoutDue = true
            return
        }
        self.scheduleTimer(at: .now() + .milliseconds(Int64(milliseconds)))
    }

    private func scheduleTimer(at deadline: NIODeadline) {
        // One task at a time: an earlier one stays (it fires, and curl names the next time).
        if let timer = self.timer, timer.at <= deadline { return }
        self.timer?.task.cancel()
        let task = self.eventLoop.scheduleTask(deadline: deadline) { [self] in
            self.timer = nil
            guard !self.stopped else { return }
            self.action(socket: CCURL_SOCKET_TIMEOUT, events: 0)
            self.settle()
            self.deliverOutbox()
        }
        self.timer = (task, deadline)
    }

    /// The set is ready (the watcher saw it): acts on every ready socket, delivers what came
    /// of it, and asks the watcher to report the set again.
    func drain() {
        guard !self.stopped else { return }
        var rounds = 0
        while self.actOnReadySockets() == self.readyBuffer.count && rounds < 4 { rounds += 1 }
        self.deliverOutbox()
        if !self.stopped { self.engine.watcher.rearm(self) }
    }

    /// Acts on the sockets of the set that are ready now (without waiting); how many there were.
    private func actOnReadySockets() -> Int {
        let count = self.readyBuffer.withUnsafeMutableBufferPointer { ready in
            self.readyEvents.withUnsafeMutableBufferPointer { events in
                ccurl_epoll_wait(self.epoll, ready.baseAddress, events.baseAddress, Int32(ready.count), 0)
            }
        }
        guard count > 0 else { return 0 }
        for index in 0..<Int(count) {
            let fd = Int32(bitPattern: UInt32(truncatingIfNeeded: self.readyBuffer[index]))
            guard self.wanted.contains(fd) else {
                // A parked connection that the upstream closed (or sent to): curl finds out
                // when it next tries it; until then it must not keep the set ready.
                _ = ccurl_epoll_remove(self.epoll, fd)
                continue
            }
            let events = self.readyEvents[index]
            var mask: Int32 = 0
            if events & EPOLLIN.rawValue != 0 { mask |= CURL_CSELECT_IN }
            if events & EPOLLOUT.rawValue != 0 { mask |= CURL_CSELECT_OUT }
            if events & (EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 { mask |= CURL_CSELECT_ERR }
            self.action(socket: fd, events: mask)
        }
        self.settle()
        return Int(count)
    }

    private var readyBuffer = [UInt64](repeating: 0, count: 256)
    private var readyEvents = [UInt32](repeating: 0, count: 256)

    // MARK: - Events to delegates

    /// `transfer` queued events; they go out once curl has returned. Loop only.
    func post(_ transfer: UpstreamTransfer) {
        self.outbox.append(transfer)
    }

    private func scheduleDelivery() {
        guard !self.outbox.isEmpty, !self.delivering, !self.deliveryScheduled else { return }
        self.deliveryScheduled = true
        self.eventLoop.execute {
            self.deliveryScheduled = false
            self.deliverOutbox()
        }
    }

    /// Hands every queued event to its delegate; what the delegates start meanwhile (the next
    /// pipelined request, a resume) is delivered in the same pass.
    private func deliverOutbox() {
        guard !self.delivering else { return }
        self.delivering = true
        while !self.outbox.isEmpty {
            let batch = self.outbox
            self.outbox = []
            for transfer in batch { transfer.deliver(transfer.takePendingEvents()) }
        }
        self.delivering = false
    }

    // MARK: - Finishing

    private func collectFinished() {
        var remaining: Int32 = 0
        while let message = curl_multi_info_read(self.multi, &remaining) {
            guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle else { continue }
            // The message is freed with the handle: read the result first.
            let result = message.pointee.data.result
            self.detach(easy, result: result, cancelledWith: nil)
        }
    }

    private func detach(_ easy: UnsafeMutableRawPointer, result: CURLcode?, cancelledWith error: UpstreamError?) {
        var pointer: UnsafeMutableRawPointer?
        ccurl_easy_getinfo_pointer(easy, CURLINFO_PRIVATE, &pointer)
        self.inCurl = true
        curl_multi_remove_handle(self.multi, easy)
        self.inCurl = false
        guard let pointer else { return }
        let id = ObjectIdentifier(Unmanaged<UpstreamTransfer>.fromOpaque(pointer).takeUnretainedValue())
        guard let transfer = self.active.removeValue(forKey: id) else { return }
        if let error {
            transfer.fail(error)
        } else if let result {
            transfer.complete(result: result)
        }
    }

    /// Fails what still runs as cancelled, delivers it, and frees the multi handle; on the loop
    /// (or after it has shut down).
    func stop() {
        guard !self.stopped else { return }
        self.stopped = true
        for transfer in Array(self.active.values) {
            guard let easy = transfer.easy else { continue }
            self.detach(easy, result: nil, cancelledWith: UpstreamError(kind: .cancelled, message: "the proxy is shutting down"))
        }
        self.deliverOutbox()
        self.timer?.task.cancel()
        self.timer = nil
        self.inCurl = true
        curl_multi_cleanup(self.multi)
        self.inCurl = false
        self.wanted = []
        self.engine.watcher.unregister(self)
        close(self.epoll)
        for handle in self.idleHandles { curl_easy_cleanup(handle) }
        self.idleHandles = []
    }
}

private func curlSocketCallback(
    _ easy: UnsafeMutableRawPointer?, _ fd: curl_socket_t, _ what: Int32, _ clientp: UnsafeMutableRawPointer?, _ socketp: UnsafeMutableRawPointer?
) -> Int32 {
    guard let clientp else { return 0 }
    Unmanaged<CurlLoop>.fromOpaque(clientp).takeUnretainedValue().socketChanged(fd, what: what)
    return 0
}

private func curlTimerCallback(_ multi: UnsafeMutableRawPointer?, _ milliseconds: Int, _ clientp: UnsafeMutableRawPointer?) -> Int32 {
    guard let clientp else { return 0 }
    Unmanaged<CurlLoop>.fromOpaque(clientp).takeUnretainedValue().timerChanged(milliseconds)
    return 0
}

/// The one thread that watches, for every ``CurlLoop``, its set of curl's sockets (NIO offers
/// no way to watch a descriptor it does not own): each set is in this thread's epoll set as
/// one one-shot registration; when one is ready, its loop is asked to drain it, and re-arms it
/// when done. The thread does no other work.
final class CurlSocketWatcher: @unchecked Sendable {
    private let epoll: Int32
    /// Written to stop the thread.
    private let stopEvent: Int32
    private static let stopMarker = UInt64.max
    private let owners = Mutex<[CurlLoop?]>([])
    private let started = Atomic<Bool>(false)
    private let stopped = Atomic<Bool>(false)

    init() {
        self.epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        self.stopEvent = ccurl_eventfd()
        _ = ccurl_epoll_set(self.epoll, EPOLL_CTL_ADD, self.stopEvent, EPOLLIN.rawValue, Self.stopMarker)
    }

    /// Watches `loop`'s set; its number for the registrations. Starts the thread with the first.
    func register(_ loop: CurlLoop) -> UInt32 {
        let index = self.owners.withLock { owners in
            owners.append(loop)
            return UInt32(owners.count - 1)
        }
        _ = ccurl_epoll_set(self.epoll, EPOLL_CTL_ADD, loop.epoll, EPOLLIN.rawValue | EPOLLONESHOT.rawValue, UInt64(index))
        if !self.started.exchange(true, ordering: .acquiringAndReleasing) {
            let thread = Thread { [self] in self.run() }
            thread.name = "curl-sockets"
            thread.start()
        }
        return index
    }

    /// Report `loop`'s set again when it is (or stays) ready.
    func rearm(_ loop: CurlLoop) {
        _ = ccurl_epoll_set(self.epoll, EPOLL_CTL_MOD, loop.epoll, EPOLLIN.rawValue | EPOLLONESHOT.rawValue, UInt64(loop.index))
    }

    func unregister(_ loop: CurlLoop) {
        _ = ccurl_epoll_remove(self.epoll, loop.epoll)
        self.owners.withLock { $0[Int(loop.index)] = nil }
    }

    /// Ends the thread (which closes the descriptors), or closes them if it never started.
    func stop() {
        guard !self.stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        if self.started.load(ordering: .acquiring) {
            var one: UInt64 = 1
            _ = Glibc.write(self.stopEvent, &one, 8)
        } else {
            close(self.epoll)
            close(self.stopEvent)
        }
    }

    private func run() {
        let capacity: Int32 = 64
        var data = [UInt64](repeating: 0, count: Int(capacity))
        var events = [UInt32](repeating: 0, count: Int(capacity))
        running: while true {
            let count = ccurl_epoll_wait(self.epoll, &data, &events, capacity, -1)
            if count < 0 {
                if errno == EINTR { continue }
                break
            }
            let owners = self.owners.withLock { $0 }
            for index in 0..<Int(count) {
                if data[index] == Self.stopMarker { break running }
                let owner = Int(data[index])
                guard owner < owners.count, let loop = owners[owner] else { continue }
                loop.eventLoop.execute { loop.drain() }
            }
        }
        self.owners.withLock { $0 = [] }
        close(self.epoll)
        close(self.stopEvent)
    }
}
