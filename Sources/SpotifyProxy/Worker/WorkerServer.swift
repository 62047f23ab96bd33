import CWorkerIO
import Logging
import NIOCore
import NIOPosix

/// The plain-HTTP listener: N worker loops (one per core by default), each accepting from one
/// shared listening socket, owning the connections it accepted and its own curl multi handle.
///
/// One listening socket watched by every worker with `EPOLLEXCLUSIVE` (the kernel wakes one
/// idle worker per connection) rather than one `SO_REUSEPORT` socket per worker: with
/// `SO_REUSEPORT` a second proxy started by the same user on the same port would bind too and
/// silently take half the connections, where now it fails with "address in use".
final class WorkerServer: @unchecked Sendable {
    let workers: [Worker]
    private let listenFD: Int32
    let localAddress: SocketAddress

    private init(workers: [Worker], listenFD: Int32, localAddress: SocketAddress) {
        self.workers = workers
        self.listenFD = listenFD
        self.localAddress = localAddress
    }

    /// Binds the listening socket and starts the loops; nothing is accepted until ``accept()``.
    static func bind(context: ProxyContext, workers count: Int) throws -> WorkerServer {
        let settings = context.settings
        let address = try SocketAddress.makeAddressResolvingHost(settings.listenHost, port: settings.listenPort)
        let fd = address.withSockAddr { pointer, length in spx_listen(pointer, socklen_t(length), 4096) }
        guard fd >= 0 else { throw IOError(errnoCode: -fd, reason: "bind") }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        let local = Worker.socketAddress(storage) ?? address
        var workers: [Worker] = []
        do {
            for _ in 0..<max(1, count) {
                workers.append(try Worker(listenFD: fd, context: context))
            }
        } catch {
            _ = spx_close(fd)
            throw error
        }
        for worker in workers { worker.start() }
        return WorkerServer(workers: workers, listenFD: fd, localAddress: local)
    }

    /// Starts accepting connections.
    func accept() {
        for worker in self.workers { worker.loop.execute { worker.startAccepting() } }
    }

    /// Stops accepting; idle connections close now, busy ones after their answer. Completes
    /// when every connection is closed, or when `grace` has passed or `endedEarly` calls back
    /// (the rest are closed then); then the loops stop. Returns false when the grace period ran out.
    func shutdown(grace: Duration, endedEarly: (@escaping @Sendable () -> Void) -> Void = { _ in }) async -> Bool {
        // Every loop stops watching the listening socket; then it is closed, so new clients are
        // refused at once instead of waiting in the backlog for the grace period.
        var drained: [EventLoopFuture<Void>] = []
        for worker in self.workers {
            if let future = try? await worker.loop.submit({ worker.quiesce() }).get() { drained.append(future) }
        }
        _ = spx_close(self.listenFD)
        var inTime = await EventLoopFuture.andAllComplete(drained, on: self.workers[0].loop).completes(within: grace, endedEarly: endedEarly)
        if !inTime {
            // Nothing open is in time, however early a second signal ended the wait (before the
            // drained loops could say so).
            var open = 0
            for worker in self.workers { open += (try? await worker.loop.submit { worker.openConnections }.get()) ?? 0 }
            inTime = open == 0
        }
        // Every curl handle first (their transfers' failures may complete promises of other
        // loops): a request still waiting for Spotify is answered 503, to retry, where nothing of
        // its answer was written yet. Then, past the grace period, what is left is closed; then
        // every loop stops.
        for worker in self.workers { try? await worker.loop.submit { worker.curl.stop() }.get() }
        if !inTime {
            for worker in self.workers { try? await worker.loop.submit { worker.forceCloseAll() }.get() }
        }
        // Sockets still lingering after their connection's close are closed before the loops stop.
        for worker in self.workers { try? await worker.loop.submit { worker.endLingering() }.get() }
        for worker in self.workers { await worker.loop.stop() }
        return inTime
    }
}

/// One worker loop with its connections and its curl handle.
final class Worker: WorkerIOHandler, @unchecked Sendable {
    let loop: WorkerLoop
    let curl: WorkerCurl
    private let listenFD: Int32
    private let context: ProxyContext

    // Loop thread only.
    private var connections: [Int32: WorkerConnection] = [:]
    private var accepting = false
    private var drained: EventLoopPromise<Void>?
    private var idleSweep: WorkerTimerSlot!
    /// What each read lands in before it is parsed: one buffer for all of this worker's clients.
    private let scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)

    init(listenFD: Int32, context: ProxyContext) throws {
        self.listenFD = listenFD
        self.context = context
        self.loop = try WorkerLoop()
        self.curl = WorkerCurl(loop: self.loop, configuration: context.upstream.configuration)
        self.loop.curl = self.curl
    }

    deinit {
        self.scratch.deallocate()
    }

    func start() {
        self.loop.start()
        self.loop.execute {
            self.curl.attach()
            self.idleSweep = self.loop.makeTimerSlot { [unowned self] in self.sweepIdle() }
            self.armIdleSweep()
        }
    }

    // MARK: - Accepting

    func startAccepting() {
        guard !self.accepting else { return }
        self.accepting = true
        _ = self.loop.register(fd: self.listenFD, events: SPX_EPOLLIN | SPX_EPOLLEXCLUSIVE, handler: self)
    }

    func ready(fd: Int32, events: UInt32) {
        // A batch at a time: other workers take their share of a burst.
        for _ in 0..<64 {
            var peer = sockaddr_storage()
            var length = socklen_t(0)
            let client = spx_accept(self.listenFD, &peer, &length)
            if client == -EAGAIN || client == -EWOULDBLOCK { return }
            if client == -EMFILE || client == -ENFILE || client == -ENOBUFS || client == -ENOMEM {
                // Out of descriptors: stop accepting for a moment instead of spinning on the socket.
                self.context.logger.warning("cannot accept connections: out of file descriptors; retrying in 100 ms")
                self.pauseAccepting()
                return
            }
            guard client >= 0 else { continue }
            let connection = WorkerConnection(fd: client, worker: self, context: self.context)
            self.connections[client] = connection
            if !connection.start(remote: Self.socketAddress(peer)) {
                self.connections[client] = nil
                _ = spx_close(client)
            }
        }
    }

    private func pauseAccepting() {
        self.loop.deregister(fd: self.listenFD)
        self.accepting = false
        self.loop.scheduleTask(in: .milliseconds(100)) { [self] in
            if self.drained == nil { self.startAccepting() }
        }
    }

    /// The most one ``readInto(_:_:)`` reads.
    var readSize: Int { self.scratch.count }

    /// Reads the socket `fd` into the scratch buffer and hands the bytes to `body`; returns
    /// the count read, 0 at EOF, or -errno.
    func readInto(_ fd: Int32, _ body: (ByteBuffer) -> Void) -> Int {
        let count = spx_read(fd, self.scratch.baseAddress, self.scratch.count)
        if count > 0 {
            var buffer = ByteBuffer()
            buffer.reserveCapacity(count)
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: self.scratch[..<count]))
            body(buffer)
        }
        return count
    }

    /// Reads the socket `fd` into the scratch buffer and drops what came; returns the count
    /// read, 0 at EOF, or -errno.
    func readAndDrop(_ fd: Int32) -> Int {
        spx_read(fd, self.scratch.baseAddress, self.scratch.count)
    }

    /// Connections closed by the proxy whose sockets still read what the client sends
    /// (``WorkerConnection/close()``): closed at the latest when the worker stops.
    private var lingering: [Int32: WorkerConnection] = [:]

    func lingerStarted(_ connection: WorkerConnection) { self.lingering[connection.fd] = connection }

    func lingerEnded(_ connection: WorkerConnection) {
        self.lingering[connection.fd] = nil
        self.succeedDrainedIfDone()
    }

    func endLingering() {
        for connection in Array(self.lingering.values) { connection.endLingering() }
    }

    func connectionClosed(_ connection: WorkerConnection) {
        self.connections[connection.fd] = nil
        self.succeedDrainedIfDone()
    }

    /// Shutting down, the worker is drained once no connection is left, lingering ones
    /// included (each at most ``WorkerConnection/lingerTimeout``): closing one early would
    /// reset it, and its client might lose the answer that lingering keeps for it.
    private func succeedDrainedIfDone() {
        if self.connections.isEmpty, self.lingering.isEmpty, let drained = self.drained { drained.succeed() }
    }

    // MARK: - Idle connections

    private var idleTimeout: TimeAmount { .milliseconds(Int64(self.context.settings.clientIdleTimeout.milliseconds)) }

    /// A quarter of `timeout` between looks at idle connections: one closes within 1.25 timeouts.
    /// (The HTTPS listener's head deadline looks again as often.)
    static func idleSweepPeriod(for timeout: TimeAmount) -> TimeAmount {
        .nanoseconds(max(10_000_000, timeout.nanoseconds / 4))
    }

    private func armIdleSweep() {
        self.idleSweep.deadline = .now() + Self.idleSweepPeriod(for: self.idleTimeout)
    }

    private func sweepIdle() {
        let now = NIODeadline.now()
        let timeout = self.idleTimeout
        for connection in Array(self.connections.values) { connection.checkIdle(now: now, timeout: timeout) }
        self.armIdleSweep()
    }

    // MARK: - Shutdown

    func quiesce() -> EventLoopFuture<Void> {
        if self.accepting {
            self.loop.deregister(fd: self.listenFD)
            self.accepting = false
        }
        // Once: a second call waits for the same drain.
        if let drained = self.drained { return drained.futureResult }
        let promise = self.loop.makePromise(of: Void.self)
        self.drained = promise
        for connection in Array(self.connections.values) { connection.quiesce() }
        self.succeedDrainedIfDone()
        return promise.futureResult
    }

    func forceCloseAll() {
        for connection in Array(self.connections.values) { connection.forceClose() }
    }

    /// Connections not closed yet (lingering ones are).
    var openConnections: Int { self.connections.count }

    /// `storage` as NIO's address type (for the connection's log line and loopback check).
    static func socketAddress(_ storage: sockaddr_storage) -> SocketAddress? {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafeBytes(of: &storage) { raw -> SocketAddress? in
                var address = raw.load(as: sockaddr_in.self)
                var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
                inet_ntop(AF_INET, &address.sin_addr, &text, socklen_t(text.count))
                return SocketAddress(address, host: text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
            }
        case AF_INET6:
            return withUnsafeBytes(of: &storage) { raw -> SocketAddress? in
                var address = raw.load(as: sockaddr_in6.self)
                var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
                inet_ntop(AF_INET6, &address.sin6_addr, &text, socklen_t(text.count))
                return SocketAddress(address, host: text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) })
            }
        default:
            return nil
        }
    }
}
