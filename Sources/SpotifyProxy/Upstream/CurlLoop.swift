import CCurl
import NIOCore
import NIOPosix
import Synchronization

/// What an ``UpstreamTransfer`` needs of whatever drives its multi handle: easy handles, a
/// way to send it commands, and a place to queue its events for its event loop.
protocol CurlDriver: AnyObject, Sendable {
    /// A fresh (or reset) easy handle; any thread.
    func checkoutHandle() -> UnsafeMutableRawPointer?
    /// Takes back a handle no multi handle holds any more; any thread.
    func returnHandle(_ handle: UnsafeMutableRawPointer)
    /// Any thread.
    func submit(_ command: CurlCommand)
    /// `transfer` has events for its event loop; the driver's thread only.
    func post(_ transfer: UpstreamTransfer)
}

enum CurlCommand {
    case add(UpstreamTransfer)
    case resume(UpstreamTransfer)
    case cancel(UpstreamTransfer, UpstreamError)
    /// The listener's grace period is over: every transfer serving a client fails as
    /// ``UpstreamError/shutdown`` (answered 503, to retry), and one added later is refused as
    /// never sent; token grants go on.
    case stopClientTransfers
}

/// Easy handles of finished transfers, reset and ready for the next one: creating one per
/// request costs an allocation of curl's buffers and state each time. Any thread.
///
/// Every handle is reset, even a GET's whose options the next transfer would all set again:
/// libcurl (7.88.1) counts the retries a handle made after finding a kept-alive connection dead
/// (`state.retrycount`, `Curl_retry_request`) over the handle's whole life, and only
/// `curl_easy_reset` sets it back. A handle kept without it would fail its sixth such retry with
/// "Connection died, tried 5 times" (a 502 to the client) however long ago the first five were.
final class EasyHandlePool: Sendable {
    /// Stored as addresses: raw pointers are not Sendable.
    private let idle = Mutex<[UInt]>([])
    private static let maximumIdleHandles = 512

    func checkout() -> UnsafeMutableRawPointer? {
        if let address = self.idle.withLock({ $0.popLast() }) { return UnsafeMutableRawPointer(bitPattern: address) }
        return curl_easy_init()
    }

    func giveBack(_ handle: UnsafeMutableRawPointer) {
        curl_easy_reset(handle)
        let kept = self.idle.withLock { handles -> Bool in
            guard handles.count < Self.maximumIdleHandles else { return false }
            handles.append(UInt(bitPattern: handle))
            return true
        }
        if !kept { curl_easy_cleanup(handle) }
    }

    func cleanup() {
        let idle = self.idle.withLock { handles in
            defer { handles = [] }
            return handles
        }
        for address in idle { curl_easy_cleanup(UnsafeMutableRawPointer(bitPattern: address)) }
    }
}

/// One libcurl multi handle and the transfers on it, whoever drives it: every call on the
/// driver's thread. The driver decides when curl runs (a thread polling it, or a worker loop's
/// epoll set); this does what both do with it.
final class CurlMulti {
    let handle: UnsafeMutableRawPointer
    /// The transfers added to the multi handle, which keeps them alive.
    private var active: [ObjectIdentifier: UpstreamTransfer] = [:]
    /// ``CurlCommand/stopClientTransfers`` came: a client's transfer added later (its token or
    /// its governor slot came meanwhile) is refused as never sent, answered 503 to retry.
    private var clientTransfersStopped = false

    static let globalInit: Void = {
        curl_global_init(Int(CURL_GLOBAL_ALL))
    }()

    init(configuration: UpstreamConfiguration) {
        _ = Self.globalInit
        self.handle = curl_multi_init()
        ccurl_multi_setopt_long(self.handle, CURLMOPT_PIPELINING, Int(CURLPIPE_MULTIPLEX))
        ccurl_multi_setopt_long(self.handle, CURLMOPT_MAX_HOST_CONNECTIONS, configuration.maxConnectionsPerHost)
        ccurl_multi_setopt_long(self.handle, CURLMOPT_MAXCONNECTS, 1024)
    }

    func execute(_ command: CurlCommand) {
        switch command {
        case .add(let transfer):
            if self.clientTransfersStopped, transfer.servesClient { return transfer.reject(UpstreamError.notSent) }
            guard let easy = transfer.easy else {
                // curl_easy_init failed (out of memory): the client is answered, not left waiting.
                return transfer.reject(UpstreamError.noHandle)
            }
            ccurl_easy_setopt_pointer(easy, CURLOPT_PRIVATE, Unmanaged.passUnretained(transfer).toOpaque())
            let code = curl_multi_add_handle(self.handle, easy)
            guard code == CURLM_OK else {
                transfer.fail(UpstreamError(kind: .protocolError, message: String(cString: curl_multi_strerror(code))))
                return
            }
            self.active[ObjectIdentifier(transfer)] = transfer
        case .resume(let transfer):
            guard self.active[ObjectIdentifier(transfer)] != nil else { return }
            transfer.unpauseOnLoopThread()
        case .cancel(let transfer, let error):
            guard self.active[ObjectIdentifier(transfer)] != nil, let easy = transfer.easy else { return }
            self.detach(easy, result: nil, cancelledWith: error)
        case .stopClientTransfers:
            self.clientTransfersStopped = true
            self.cancelAll(servingClientsOnly: true)
        }
    }

    /// Completes the transfers curl has finished.
    func collectFinished() {
        var remaining: Int32 = 0
        while let message = curl_multi_info_read(self.handle, &remaining) {
            guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle else { continue }
            // The message is freed with the handle: read the result first.
            let result = message.pointee.data.result
            self.detach(easy, result: result, cancelledWith: nil)
        }
    }

    private func detach(_ easy: UnsafeMutableRawPointer, result: CURLcode?, cancelledWith error: UpstreamError?) {
        var pointer: UnsafeMutableRawPointer?
        ccurl_easy_getinfo_pointer(easy, CURLINFO_PRIVATE, &pointer)
        curl_multi_remove_handle(self.handle, easy)
        guard let pointer else { return }
        let id = ObjectIdentifier(Unmanaged<UpstreamTransfer>.fromOpaque(pointer).takeUnretainedValue())
        guard let transfer = self.active.removeValue(forKey: id) else { return }
        if let error {
            transfer.fail(error)
        } else if let result {
            transfer.complete(result: result)
        }
    }

    /// Fails every running transfer (or every one serving a client) as cancelled by the
    /// shutdown: the driver is stopping, or the listener's grace period is over.
    func cancelAll(servingClientsOnly: Bool = false) {
        for transfer in Array(self.active.values) where transfer.servesClient || !servingClientsOnly {
            guard let easy = transfer.easy else { continue }
            self.detach(easy, result: nil, cancelledWith: UpstreamError.shutdown)
        }
    }

    func cleanup() {
        curl_multi_cleanup(self.handle)
    }
}

/// One libcurl multi handle driven by one dedicated thread, for transfers started on NIO
/// event loops (the token endpoint, the HTTPS listener's connections). Every curl call happens
/// on that thread; other threads talk to it only through `submit`, which queues a command and
/// wakes the loop with `curl_multi_wakeup` (the one call libcurl allows from another thread).
///
/// The thread runs between ``start()`` and ``shutdown()`` (``UpstreamClient/run()``, a
/// `Service`); commands submitted before it starts wait in the queue. A loop that never
/// started frees its handles when it is released.
final class CurlLoop: CurlDriver, @unchecked Sendable {
    private struct Commands {
        var queue: [CurlCommand] = []
        var stopping = false
        /// A `curl_multi_wakeup` is on its way and the queue not yet drained: another is not needed.
        var wakeupPending = false
        /// The multi handle is freed: nothing may wake it.
        var cleanedUp = false
    }

    private let multi: CurlMulti
    private let commands = Mutex(Commands())
    /// The loop's thread, once started.
    private let thread = Mutex<NIOThreadPool?>(nil)
    private let started = Atomic<Bool>(false)
    private let handles = EasyHandlePool()

    func checkoutHandle() -> UnsafeMutableRawPointer? { self.handles.checkout() }
    func returnHandle(_ handle: UnsafeMutableRawPointer) { self.handles.giveBack(handle) }

    /// Transfers with events queued in this iteration, by event loop. Loop thread only.
    private var outbox: [(eventLoop: any EventLoop, transfers: [UpstreamTransfer])] = []

    init(configuration: UpstreamConfiguration) {
        self.multi = CurlMulti(configuration: configuration)
    }

    deinit {
        // Started loops clean up on their own thread as they stop.
        if !self.started.load(ordering: .acquiring) { self.releaseResources() }
    }

    /// Starts the loop's thread (once).
    func start() {
        guard !self.started.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
        self.thread.withLock { $0 = thread }
        thread.submit { [self] _ in self.run() }
    }

    func submit(_ command: CurlCommand) {
        // The wake-up happens under the lock, which the loop takes to mark the multi handle
        // cleaned up: it is never woken once freed.
        let accepted = self.commands.withLock { state -> Bool in
            guard !state.stopping else { return false }
            state.queue.append(command)
            if !state.wakeupPending {
                state.wakeupPending = true
                curl_multi_wakeup(self.multi.handle)
            }
            return true
        }
        if !accepted, case .add(let transfer) = command {
            transfer.reject(UpstreamError.notSent)
        }
    }

    /// `transfer` has events for its event loop; they go out at the end of this iteration,
    /// with every other transfer's on the same event loop, in one task. Loop thread only.
    func post(_ transfer: UpstreamTransfer) {
        if let index = self.outbox.firstIndex(where: { $0.eventLoop === transfer.eventLoop }) {
            self.outbox[index].transfers.append(transfer)
        } else {
            self.outbox.append((transfer.eventLoop, [transfer]))
        }
    }

    private func deliverOutbox() {
        for index in self.outbox.indices {
            let batch = self.outbox[index].transfers.map { ($0, $0.takePendingEvents()) }
            self.outbox[index].transfers.removeAll(keepingCapacity: true)
            guard !batch.isEmpty else { continue }
            self.outbox[index].eventLoop.execute {
                for (transfer, events) in batch { transfer.deliver(events) }
            }
        }
    }

    /// Stops the loop; transfers still running are failed as cancelled.
    func shutdown() async {
        self.commands.withLock { state in
            state.stopping = true
            if !state.cleanedUp { curl_multi_wakeup(self.multi.handle) }
        }
        if let thread = self.thread.withLock({ $0 }) { try? await thread.shutdownGracefully() }
    }

    private func run() {
        var running: Int32 = 0
        while true {
            let (queue, stopping) = self.commands.withLock { state in
                defer {
                    state.queue.removeAll(keepingCapacity: true)
                    state.wakeupPending = false
                }
                return (state.queue, state.stopping)
            }
            for command in queue {
                // Stopping: a transfer not yet added is refused as never sent, not cancelled as if it might have been.
                if stopping, case .add(let transfer) = command {
                    transfer.reject(UpstreamError.notSent)
                } else {
                    self.multi.execute(command)
                }
            }
            if stopping { break }
            curl_multi_perform(self.multi.handle, &running)
            self.multi.collectFinished()
            self.deliverOutbox()
            curl_multi_poll(self.multi.handle, nil, 0, 1000, nil)
        }
        self.multi.cancelAll()
        self.deliverOutbox()
        self.releaseResources()
    }

    /// Fails what is still queued (nobody will drive it again) and frees the handles; on the
    /// loop's thread as it stops, or at release when it never started.
    private func releaseResources() {
        let leftovers = self.commands.withLock { state in
            state.stopping = true
            state.cleanedUp = true
            defer { state.queue = [] }
            return state.queue
        }
        for case .add(let transfer) in leftovers {
            transfer.reject(UpstreamError.notSent)
        }
        self.multi.cleanup()
        self.handles.cleanup()
    }
}
