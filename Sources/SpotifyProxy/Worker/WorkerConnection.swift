import CWorkerIO
import NIOCore
import NIOHTTP1

/// One client connection on a worker loop: its socket (edge-triggered in the loop's epoll set),
/// llhttp parsing, response bytes and their back-pressure. It is the ``ClientChannel`` of a
/// ``ProxyConnection`` and behaves as the NIO pipeline did for it: reads whenever the
/// connection's state machine lets it (NIO's auto-read through `ProxyHandler.read`), one
/// request at a time (the next pipelined one waits until this one's answer has ended, as with
/// NIO's pipelining assistance, and until no more than ``heldOutputLimit`` of answers is left
/// to write), framing as NIO's encoder, closing on the client's EOF.
final class WorkerConnection: ClientChannel, WorkerIOHandler, WorkerDeferred {
    let fd: Int32
    private unowned let worker: Worker
    private let connection: ProxyConnection
    private let parser: RequestParser
    private var encoder = ResponseEncoder()
    private var targetEncoder = RequestTargetEncoder()

    /// Bytes read and not parsed yet.
    private var input = ByteBuffer()
    /// Bytes queued and not written yet; `written` counts what has left since the start.
    private var output = OutputQueue()
    private var written = 0
    /// What waits on writes, each with the count of bytes written when it runs (oldest first;
    /// `waitersDone` of them have run).
    private var waiters: [(upTo: Int, done: () -> Void)] = []
    private var waitersDone = 0

    private var readable = false
    /// The peer's half-close (or a hang-up) was reported: the socket is read until EOF.
    private var peerHungUp = false
    private var writable = true
    /// The connection asked to be read.
    private var wantRead = false
    /// Parsing stopped after a complete request until its answer ends.
    private var parserStopped = false
    /// Answered, but the next pipelined request waits for the answers' bytes to be written.
    private var parseOnWhenWritten = false
    private var parserFailed = false
    /// Requests whose answer has not ended.
    private var unanswered = 0
    private var closed = false
    /// Closed for the connection, with the socket left open to read and drop what the client
    /// still sends (``close()``).
    private var lingering = false
    /// A lingering close's end: the timer that ends it, cancelled when the client's EOF does.
    private var lingerTimer: Scheduled<Void>?
    private var lingerDeadline = NIODeadline.distantFuture
    private var quiescing = false
    private var closeWhenWritten = false
    private var scheduled = false
    /// Reads and parses left to this connection in the loop's turn `stepsTurn`.
    private var stepsLeft = 0
    private var stepsTurn: UInt64 = 0
    /// Queued for the next turn, its steps in this one spent.
    private var inNextTurn = false
    /// Reads and parses a connection may do in one turn of its loop (each parse is one request:
    /// parsing stops after each until it is answered).
    static let stepsPerTurn = 64
    /// When the client last sent something, or the idle timeout last fired.
    private(set) var idleSince: NIODeadline
    /// When the first bytes of the head being read came (nil between heads and in bodies).
    private var headSince: NIODeadline?
    /// When the client's socket was last found full with nothing taken since (nil while it
    /// takes what is written).
    private var blockedSince: NIODeadline?

    /// Pipelined bytes held (unparsed) before the client is no longer read.
    private static let heldInputLimit = 64 * 1024
    /// Answer bytes queued and not written above which the next pipelined request waits: a
    /// client that pipelines many requests and does not read would otherwise have all their
    /// answers held here (an answer's own body is paused at the same mark while it streams).
    static let heldOutputLimit = UpstreamFlowControl.responseHighWater

    init(fd: Int32, worker: Worker, context: ProxyContext) {
        self.fd = fd
        self.worker = worker
        self.connection = ProxyConnection(context: context)
        self.parser = RequestParser(maxBodyBytes: context.settings.limits.maxBodyBytes)
        self.idleSince = .now()
    }

    /// Starts watching the socket and reading it (NIO's auto-read on a new channel).
    func start(remote: SocketAddress?) -> Bool {
        let events = SPX_EPOLLIN | SPX_EPOLLOUT | SPX_EPOLLRDHUP | SPX_EPOLLET
        guard self.worker.loop.register(fd: self.fd, events: events, handler: self) == 0 else { return false }
        self.connection.attached(to: self, remote: remote)
        self.connection.readRequested()
        return true
    }

    // MARK: - ClientChannel

    var eventLoop: any EventLoop { self.worker.loop }
    var allocator: ByteBufferAllocator { ByteBufferAllocator() }
    var isActive: Bool { !self.closed }

    func write(_ part: HTTPServerResponsePart, done: (() -> Void)?) {
        guard !self.closed else {
            done?()
            return
        }
        var part = part
        if self.quiescing, case .head(var head) = part, head.status.code >= 200, head.isKeepAlive {
            // Shutting down: the connection ends with this answer, and the client is told so
            // (as NIO's server pipeline tells it when quiescing), rather than finding out by
            // sending its next request to a closed socket.
            head.headers.replaceOrAdd(name: "Connection", value: "close")
            part = .head(head)
        }
        let ended: Bool
        do {
            ended = try self.encoder.encode(part, into: &self.output)
        } catch {
            done?()
            self.closeNow()
            return
        }
        if let done { self.waiters.append((self.written + self.output.readableBytes, done)) }
        if ended { self.answerEnded() }
    }

    func flush() {
        guard !self.closed else { return }
        self.writeOut()
    }

    func read() {
        guard !self.closed, !self.wantRead else { return }
        self.wantRead = true
        self.schedulePump()
    }

    /// Closes after writing what is queued. When the client may still be sending (a body
    /// refused with 413, a request the parser refused, pipelined bytes), closing would make the
    /// kernel reset the connection, and a reset can reach the client before it has read the
    /// answer. So, as nginx's lingering close: the write side is shut (the client reads the
    /// answer, then EOF), what still comes is read and dropped until the client's EOF or
    /// ``lingerTimeout``, then the socket closes.
    func close() {
        guard !self.closed else { return }
        self.writeOut()
        // Writing out may have closed it (a shutdown's answer fully written).
        guard !self.closed else { return }
        let mayStillSend = self.parser.inRequest || self.parserFailed || self.input.readableBytes > 0 || self.readable
        guard mayStillSend, self.output.isEmpty, spx_shutdown_write(self.fd) == 0 else { return self.closeNow() }
        self.lingering = true
        // Counted as lingering before it stops counting as a connection: a shutdown waiting for
        // the last connection must wait for the linger too.
        self.worker.lingerStarted(self)
        self.closeNow()
        // Level-triggered from now on, and only for what comes in: what a turn leaves unread is
        // reported again at the next, after the loop's timers and other sockets have had theirs.
        self.worker.loop.modify(fd: self.fd, events: SPX_EPOLLIN | SPX_EPOLLRDHUP)
        self.lingerDeadline = .now() + Self.lingerTimeout
        self.lingerTimer = self.worker.loop._scheduleTaskIsolatedUnsafeUnchecked(deadline: self.lingerDeadline) { self.endLingering() }
        self.dropLingeringInput()
    }

    /// How long a lingering close reads what the client still sends (nginx's `lingering_time`
    /// is 30 s, its `lingering_timeout` between reads 5 s).
    static let lingerTimeout = TimeAmount.seconds(5)

    /// Reads and drops what the client sends, a few reads a turn: a client that keeps the
    /// socket full does not hold the loop, and is closed once ``lingerTimeout`` has passed even
    /// if the timer cannot run meanwhile.
    private func dropLingeringInput() {
        guard NIODeadline.now() < self.lingerDeadline else { return self.endLingering() }
        for _ in 0..<Self.lingeringReadsPerTurn {
            guard self.lingering else { return }
            let count = self.worker.readAndDrop(self.fd)
            if count == -Int(EAGAIN) || count == -Int(EWOULDBLOCK) { return }
            if count == -Int(EINTR) { continue }
            if count <= 0 { return self.endLingering() }
        }
    }

    static let lingeringReadsPerTurn = 16

    /// The socket closes: the client's EOF came, the timer fired, or the proxy stops.
    func endLingering() {
        guard self.lingering else { return }
        self.lingering = false
        self.lingerTimer?.cancel()
        self.lingerTimer = nil
        self.worker.loop.deregister(fd: self.fd)
        _ = spx_close(self.fd)
        self.worker.lingerEnded(self)
    }

    // MARK: - Events

    func ready(fd: Int32, events: UInt32) {
        if self.lingering {
            return events & SPX_EPOLLERR != 0 ? self.endLingering() : self.dropLingeringInput()
        }
        if events & SPX_EPOLLERR != 0 { return self.closeNow() }
        if events & (SPX_EPOLLIN | SPX_EPOLLRDHUP | SPX_EPOLLHUP) != 0 {
            self.readable = true
            if events & (SPX_EPOLLRDHUP | SPX_EPOLLHUP) != 0 { self.peerHungUp = true }
            if self.wantRead { self.schedulePump() }
        }
        if events & SPX_EPOLLOUT != 0 {
            self.writable = true
            if !self.output.isEmpty { self.writeOut() }
        }
    }

    private func schedulePump() {
        guard !self.scheduled else { return }
        self.scheduled = true
        self.worker.loop.schedule(self)
    }

    /// Reads and parses while the connection wants it, up to ``stepsPerTurn`` reads and parses
    /// in a turn of the loop; then the rest waits for the next turn, so that a client pipelining
    /// requests the proxy answers itself (a 404, a cache hit) as fast as it reads the answers
    /// cannot hold the loop from its other clients.
    func runDeferred() {
        self.scheduled = false
        if self.stepsTurn != self.worker.loop.turn {
            self.stepsTurn = self.worker.loop.turn
            self.stepsLeft = Self.stepsPerTurn
            self.inNextTurn = false
        }
        while !self.closed, self.wantRead {
            guard self.stepsLeft > 0 else {
                // Once in the next turn's queue however often this turn asks again.
                self.scheduled = true
                if !self.inNextTurn {
                    self.inNextTurn = true
                    self.worker.loop.scheduleNextTurn(self)
                }
                return
            }
            self.stepsLeft -= 1
            if !self.parserStopped, !self.parserFailed, self.input.readableBytes > 0 {
                // One read's worth of parts, then NIO's auto-read asks again.
                self.wantRead = false
                self.parse()
                if !self.closed { self.connection.readRequested() }
                continue
            }
            guard self.readable, !self.parserFailed else { return }
            // Past a complete request the client is still read (its EOF is noticed, as NIO
            // notices it), but what it pipelines waits here, up to a limit.
            if self.parserStopped, self.input.readableBytes >= Self.heldInputLimit { return }
            var mayBeginHead = false
            let count = self.worker.readInto(self.fd) { bytes in
                // Looked at only while no head is on the clock (a body's bytes are never scanned).
                if self.headSince == nil { mayBeginHead = HeadDeadline.mayBeginHead(bytes) }
                let encoded = self.targetEncoder.process(bytes)
                // Nothing left unparsed (the usual case): the read's buffer is taken as it is.
                if self.input.readableBytes == 0 {
                    self.input = encoded
                } else {
                    self.input.writeImmutableBuffer(encoded)
                }
            }
            if count == -Int(EAGAIN) || count == -Int(EWOULDBLOCK) {
                self.readable = false
                return
            }
            if count <= 0 { return self.closeNow() }
            self.idleSince = .now()
            // Bytes outside a body begin a head (its request line may wait in the target encoder);
            // empty lines between requests do not.
            if self.headSince == nil, mayBeginHead, !self.parserStopped, !self.parser.inRequest || self.parser.inHead {
                self.headSince = self.idleSince
            }
            // A read that did not fill the buffer drained the socket: the next bytes raise a
            // new edge, so no read is spent on learning EAGAIN (as nginx does). Once the peer
            // has half-closed, no edge would announce the EOF: reading goes on until it.
            if count < self.worker.readSize, !self.peerHungUp { self.readable = false }
        }
    }

    private func parse() {
        let stop = self.input.withUnsafeReadableBytes { self.parser.parse($0) }
        if self.parser.inHead {
            // A pipelined head parsed once its turn came: its time starts now.
            if self.headSince == nil { self.headSince = .now() }
        } else if self.parser.inRequest || stop != .needMore {
            // In a body, or a request complete (or refused): no head is on the clock.
            self.headSince = nil
        }
        var failure: HTTPParserError?
        switch stop {
        case .needMore:
            self.input.clearReleasingLargeStorage()
        case .requestComplete(let consumed):
            self.input.moveReaderIndex(forwardBy: consumed)
            if self.input.readableBytes == 0 { self.input.clearReleasingLargeStorage() }
            self.parserStopped = true
        case .failed(let error):
            self.input.clearReleasingLargeStorage()
            self.parserFailed = true
            failure = error
        }
        let parts = self.parser.parts
        self.parser.parts.removeAll(keepingCapacity: true)
        for part in parts {
            guard !self.closed else { return }
            if case .head(let head) = part {
                self.encoder.requestArrived(head.method)
                self.unanswered += 1
            }
            self.connection.received(part)
        }
        if let failure, !self.closed { self.connection.failed(failure, reason: self.parser.failureReason) }
        // The answer may have ended before the request did (answered from its head, or by an
        // upstream that did not wait for the whole body): the next request is parsed now.
        self.parseOnIfAnswered()
    }

    /// An answer's end was queued: the next pipelined request may be parsed.
    private func answerEnded() {
        self.unanswered = max(0, self.unanswered - 1)
        self.parseOnIfAnswered()
    }

    /// Every request parsed so far is answered: parsing goes on (or, shutting down, the
    /// connection closes once the answer is written).
    private func parseOnIfAnswered() {
        guard self.unanswered == 0, !self.closed else { return }
        if self.quiescing {
            if !self.parser.inRequest { self.closeOnceWritten() }
            return
        }
        if self.parserStopped {
            guard self.output.readableBytes <= Self.heldOutputLimit else {
                self.parseOnWhenWritten = true
                return
            }
            self.parserStopped = false
            self.parser.resume()
            if self.wantRead { self.schedulePump() }
        }
    }

    private func writeOut() {
        while self.writable, !self.output.isEmpty {
            let count = self.output.write(to: self.fd)
            if count == -Int(EAGAIN) || count == -Int(EWOULDBLOCK) {
                self.writable = false
                if self.blockedSince == nil { self.blockedSince = .now() }
                break
            }
            guard count > 0 else { return self.closeNow() }
            self.blockedSince = nil
            self.written += count
        }
        self.runWaiters()
        if self.closeWhenWritten, self.output.isEmpty {
            self.closeWhenWritten = false
            return self.close()
        }
        if self.parseOnWhenWritten, self.output.readableBytes <= Self.heldOutputLimit {
            self.parseOnWhenWritten = false
            self.parseOnIfAnswered()
        }
    }

    /// Runs what waited on bytes now written (or, closed, on bytes that never will be). A
    /// waiter may write, adding waiters (or close): the list is walked by index, re-read each
    /// time, and trimmed after. It is emptied once all have run; a slow reader of a long body
    /// always has a waiter pending, so the ones run are also dropped once they are half of it.
    private func runWaiters() {
        while self.waitersDone < self.waiters.count, self.closed || self.waiters[self.waitersDone].upTo <= self.written {
            let done = self.waiters[self.waitersDone].done
            self.waitersDone += 1
            done()
        }
        if self.waitersDone > 0, self.waitersDone == self.waiters.count {
            // A burst's worth of room is given back, as the buffers give theirs.
            if self.waiters.capacity > 64 { self.waiters = [] } else { self.waiters.removeAll(keepingCapacity: true) }
            self.waitersDone = 0
        } else if self.waitersDone >= 8, self.waitersDone * 2 >= self.waiters.count {
            self.waiters.removeFirst(self.waitersDone)
            self.waitersDone = 0
        }
    }

    /// The connection ends; the socket closes too unless ``lingering``.
    private func closeNow() {
        guard !self.closed else { return }
        self.closed = true
        self.wantRead = false
        if !self.lingering {
            self.worker.loop.deregister(fd: self.fd)
            _ = spx_close(self.fd)
        }
        self.runWaiters()
        self.worker.connectionClosed(self)
        self.connection.inactive()
        self.connection.detached()
    }

    // MARK: - The worker's sweeps

    /// Nothing came from the client for `timeout`: the connection decides (NIO's `IdleStateHandler`).
    /// A head has `timeout` to arrive whole, however often its bytes come (nginx's
    /// `client_header_timeout`): a byte now and then does not keep a connection.
    /// A client that takes nothing of its answer for `timeout` is closed (nginx's `send_timeout`).
    func checkIdle(now: NIODeadline, timeout: TimeAmount) {
        guard !self.closed else { return }
        if let blocked = self.blockedSince, !self.output.isEmpty, now - blocked >= timeout {
            self.connection.stoppedReading()
            return self.closeNow()
        }
        if let since = self.headSince, now - since >= timeout {
            self.idleSince = now
            _ = self.connection.headTimedOut(since: since)
            return
        }
        guard now - self.idleSince >= timeout else { return }
        self.idleSince = now
        _ = self.connection.idleTimedOut()
    }

    /// Shutting down: an idle connection closes now, a busy one once its answer is written
    /// (NIO's quiescing of an HTTP server pipeline).
    func quiesce() {
        guard !self.closed else { return }
        self.quiescing = true
        // An idle connection's next request may be in the socket already, its readiness not yet
        // seen by the loop (the event comes in a later turn): read before closing, so that the
        // request is answered (with `Connection: close`), where closing on unread bytes would
        // make the kernel reset the connection in the client's face.
        if self.unanswered == 0, !self.parser.inRequest, self.wantRead, !self.parserFailed, !self.parserStopped {
            self.readable = true
            self.runDeferred()
            guard !self.closed else { return }
        }
        self.parseOnIfAnswered()
    }

    /// Closes now if everything queued is written; else once it is (a slow client's answer
    /// leaves first). Lingering, as any close, if the client may still be sending.
    private func closeOnceWritten() {
        if self.output.isEmpty {
            self.close()
        } else {
            self.closeWhenWritten = true
        }
    }

    /// The grace period is over: a request that never left for Spotify is answered first.
    func forceClose() {
        self.connection.graceEnded()
        self.closeNow()
    }
}
