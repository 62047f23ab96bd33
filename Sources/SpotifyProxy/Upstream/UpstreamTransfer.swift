import CCurl
import CWorkerIO
import Glibc
import NIOCore
import Synchronization

/// Receives a transfer's events, on the transfer's event loop, in order.
public protocol UpstreamTransferDelegate: AnyObject {
    func upstreamDidReceiveHead(_ transfer: UpstreamTransfer, status: Int, headers: [(name: String, value: String)])
    /// `buffer` must be handed back through ``UpstreamTransfer/consumed(_:)`` once written out;
    /// until then it counts against the transfer's back-pressure window.
    func upstreamDidReceiveBody(_ transfer: UpstreamTransfer, _ buffer: ByteBuffer)
    func upstreamDidFinish(_ transfer: UpstreamTransfer, error: UpstreamError?)
    /// The request body buffer drained: the client may be read again.
    func upstreamWantsRequestBody(_ transfer: UpstreamTransfer)
    /// The events of one curl loop iteration were delivered (and the transfer has not
    /// finished): the place to flush what they wrote.
    func upstreamDidDeliverEvents(_ transfer: UpstreamTransfer)
}

/// One request/response exchange through libcurl. Created on an event loop, driven by the
/// ``CurlLoop``'s thread; the two sides share only the ``UpstreamFlowControl`` behind a mutex.
///
/// Curl's callbacks do not hop to the event loop one by one: they queue ``Event``s, and the
/// loop hands each event loop all the events of one iteration in one task (see
/// ``CurlLoop/post(_:)``), so a small response costs one hop, not three.
public final class UpstreamTransfer: @unchecked Sendable {
    enum Event {
        /// The final response head; the header lines are parsed on the event loop.
        case head(status: Int, headerBlock: [UInt8])
        case body(ByteBuffer)
        case wantsRequestBody
        case finished(UpstreamError?)
    }

    private(set) var easy: UnsafeMutableRawPointer?
    /// ``UpstreamRequest/servesClient``.
    let servesClient: Bool
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private let loop: any CurlDriver
    public let eventLoop: any EventLoop
    private let delegate: NIOLoopBoundBox<(any UpstreamTransferDelegate)?>
    /// Back-pressure both ways; the event loop and the curl thread both feed it.
    private let flow = Mutex(UpstreamFlowControl())
    private let finished = Atomic<Bool>(false)
    private let allocator = ByteBufferAllocator()

    // Loop thread only.
    private var headerBlock: [UInt8] = []
    /// Why the header callback stopped the transfer: what in the final head may not be
    /// forwarded (``UpstreamHeaderBlock/problem(inBlock:codings:)``).
    private var invalidHead: UpstreamHeaderBlock.Problem?
    /// Whether an answer to this request can have a body (not one to a HEAD).
    private var answerMayHaveBody = true
    /// curl's own words for a failure (`CURLOPT_ERRORBUFFER`), more precise than its error
    /// code's ("Failed to connect to host port 443 after 2 ms: Connection refused", not
    /// "Couldn't connect to server"). Set on the handle for each transfer: a reset clears it.
    private let errorBuffer: UnsafeMutablePointer<CChar> = {
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE))
        buffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE))
        return buffer
    }()
    private var headDelivered = false
    /// `spotify.total_timeout` (a timeout before it is curl's low-speed check).
    private var totalTimeout: Duration = .zero
    private var pendingEvents: [Event] = []

    init(
        request: UpstreamRequest,
        configuration: UpstreamConfiguration,
        loop: any CurlDriver,
        eventLoop: any EventLoop,
        delegate: any UpstreamTransferDelegate
    ) {
        self.loop = loop
        self.servesClient = request.servesClient
        self.eventLoop = eventLoop
        self.delegate = NIOLoopBoundBox(delegate, eventLoop: eventLoop)
        self.easy = loop.checkoutHandle()
        self.configure(request: request, configuration: configuration)
    }

    deinit {
        self.releaseHandle()
        self.errorBuffer.deallocate()
    }

    func start() {
        self.loop.submit(.add(self))
    }

    /// Aborts the transfer; the delegate is told with a `.cancelled` error unless it already finished.
    public func cancel(reason: String) {
        self.loop.submit(.cancel(self, UpstreamError(kind: .cancelled, message: reason)))
    }

    /// Queues request body bytes. Returns false when the client should not be read until
    /// ``UpstreamTransferDelegate/upstreamWantsRequestBody(_:)``.
    public func appendRequestBody(_ buffer: ByteBuffer) -> Bool {
        let (keepReading, resume) = self.flow.withLock { $0.appendRequestBody(buffer) }
        if resume { self.loop.submit(.resume(self)) }
        return keepReading
    }

    public func endRequestBody() {
        if self.flow.withLock({ $0.endRequestBody() }) { self.loop.submit(.resume(self)) }
    }

    /// `count` response bytes left the proxy: reopen the window if it had closed.
    public func consumed(_ count: Int) {
        if self.flow.withLock({ $0.responseConsumed(count) }) { self.loop.submit(.resume(self)) }
    }

    // MARK: - Loop thread

    func unpauseOnLoopThread() {
        guard let easy = self.easy else { return }
        curl_easy_pause(easy, CCURLPAUSE_CONT)
    }

    func complete(result: CURLcode) {
        if let problem = self.invalidHead {
            // The header callback stopped the transfer (curl says only that a write failed).
            self.finish(UpstreamError(kind: .protocolError, message: "upstream sent \(problem.words)"))
            return
        }
        if result == CURLE_OK {
            self.finish(nil)
            return
        }
        // The code's words, with curl's own when they say more (curl clears its buffer when a
        // transfer starts; the first failure of the transfer is kept, perhaps one before a retry,
        // so the code's words lead). Not with a proxy from the environment: curl's words may
        // then quote the proxy's URL, credentials and all, and they reach clients and logs.
        let words = String(cString: curl_easy_strerror(result))
        var message = words
        if self.errorBuffer[0] == 0 {
            // curl 7.88 gives up on a head line over 100 KB with this code and no words.
            if result == CURLE_OUT_OF_MEMORY, !self.headDelivered { message += " (curl also says this of a header line over 100 KB, its limit)" }
        } else if !Self.environmentNamesProxy {
            let detail = String(cString: self.errorBuffer)
            message = detail.contains(words) ? detail : "\(words) (\(detail))"
        }
        let kind: UpstreamError.Kind
        switch result {
        case CURLE_OPERATION_TIMEDOUT: kind = .timeout
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_SSL_CONNECT_ERROR,
            CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_CACERT_BADFILE:
            kind = .connect
        default: kind = .protocolError
        }
        var error = UpstreamError(kind: kind, message: "upstream \(kind == .timeout ? "timed out" : "failed"): \(message)")
        error.certificateRefused = result == CURLE_PEER_FAILED_VERIFICATION || result == CURLE_SSL_PINNEDPUBKEYNOTMATCH
        if kind == .timeout, self.flow.withLock({ $0.waitsForRequestBody }), let easy = self.easy {
            var seconds = 0.0
            let known = ccurl_easy_getinfo_double(easy, CURLINFO_TOTAL_TIME, &seconds) == CURLE_OK
            // The low-speed check fires before the total timeout; past it, the total timeout fired.
            if known { error.clientStall = .seconds(seconds) < self.totalTimeout ? .idle : .total }
        }
        self.finish(error)
    }

    func fail(_ error: UpstreamError) {
        self.finish(error)
    }

    /// Fails a transfer the loop never took (it was shutting down); any thread.
    func reject(_ error: UpstreamError) {
        guard self.markFinished() else { return }
        self.releaseHandle()
        self.eventLoop.execute { self.deliver([.finished(error)]) }
    }

    private func finish(_ error: UpstreamError?) {
        guard self.markFinished() else { return }
        self.releaseHandle()
        self.emit(.finished(error))
    }

    private func markFinished() -> Bool {
        !self.finished.exchange(true, ordering: .acquiringAndReleasing)
    }

    /// Queues an event for the event loop; loop thread only.
    private func emit(_ event: Event) {
        if self.pendingEvents.isEmpty {
            self.loop.post(self)
            // A whole small answer (head, body, end) usually arrives in one batch: one allocation.
            self.pendingEvents.reserveCapacity(4)
        }
        self.pendingEvents.append(event)
    }

    /// The events queued since the last call; loop thread only.
    func takePendingEvents() -> [Event] {
        defer { self.pendingEvents = [] }
        return self.pendingEvents
    }

    /// Hands `events` to the delegate, in order; on the event loop.
    func deliver(_ events: [Event]) {
        for event in events {
            switch event {
            case .head(let status, let block):
                self.delegate.value?.upstreamDidReceiveHead(self, status: status, headers: UpstreamHeaderBlock.parse(block))
            case .body(let buffer):
                if let delegate = self.delegate.value {
                    delegate.upstreamDidReceiveBody(self, buffer)
                } else {
                    self.consumed(buffer.readableBytes)
                }
            case .wantsRequestBody:
                self.delegate.value?.upstreamWantsRequestBody(self)
            case .finished(let error):
                let delegate = self.delegate.value
                self.delegate.value = nil
                delegate?.upstreamDidFinish(self, error: error)
            }
        }
        self.delegate.value?.upstreamDidDeliverEvents(self)
    }

    private func releaseHandle() {
        if let easy = self.easy {
            self.loop.returnHandle(easy)
            self.easy = nil
        }
        if let list = self.headerList {
            curl_slist_free_all(list)
            self.headerList = nil
        }
    }

    /// Takes one line of the answer's head; false to stop the transfer (a final head that may
    /// not be forwarded, its problem kept in ``invalidHead`` for ``complete(result:)`` to report).
    fileprivate func onHeaderLine(_ bytes: UnsafeRawBufferPointer) -> Bool {
        if bytes.starts(with: "HTTP/".utf8) {
            // A new response (after 100 Continue, or a redirect curl does not follow): start over.
            self.headerBlock.removeAll(keepingCapacity: true)
            return true
        }
        guard bytes.first == UInt8(ascii: "\r") || bytes.first == UInt8(ascii: "\n") else {
            // Room for a usual head at once, not grown a line at a time. With the array's own
            // header this stays within glibc's per-thread cache of small blocks (1,032 bytes);
            // a larger block is taken from the arena, which first merges every freed small block.
            if self.headerBlock.capacity == 0 { self.headerBlock.reserveCapacity(960) }
            self.headerBlock.append(contentsOf: bytes)
            return true
        }
        // The empty line: the head is complete.
        var status = 0
        if let easy = self.easy { ccurl_easy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status) }
        // A switch to another protocol is followed by no answer at all (the proxy asks for
        // none: the client's Upgrade is not forwarded); curl would wait for one until timed out.
        if status == 101, !self.headDelivered {
            self.invalidHead = .switchingProtocols
            return false
        }
        // An informational answer (100 Continue) is followed by the real one.
        guard status >= 200, !self.headDelivered else {
            self.headerBlock.removeAll(keepingCapacity: true)
            return true
        }
        // The final head (a 1xx head, or a proxy's CONNECT answer, is dropped unchecked; trailers
        // come after it and are not forwarded): a line that is not valid HTTP, or a coding curl
        // would fail on once the body starts, is not forwarded. curl stops the transfer, and
        // ``complete(result:)`` says why.
        let hasBody = self.answerMayHaveBody && AnswerRendering.carriesBody(status)
        if let problem = UpstreamHeaderBlock.problem(inBlock: self.headerBlock, codings: hasBody ? Self.codings : nil) {
            self.invalidHead = problem
            return false
        }
        self.headDelivered = true
        self.emit(.head(status: status, headerBlock: self.headerBlock))
        self.headerBlock = []
        return true
    }

    fileprivate func onBody(_ bytes: UnsafeRawBufferPointer) -> Int {
        let count = bytes.count
        guard self.flow.withLock({ $0.responseArrived(count) }) else { return CCURL_WRITEFUNC_PAUSE }
        // Small pieces arriving before the last ones were handed over join them while they fit
        // (one write, not several); large ones get a buffer of their own size: growing one
        // buffer by doubling would hold up to twice the body in memory. A small piece's buffer
        // is 1,024 bytes (ByteBuffer rounds up to a power of two): within glibc's per-thread
        // cache, as the header block above.
        if case .body(var chunk) = self.pendingEvents.last, chunk.writableBytes >= count {
            self.pendingEvents.removeLast()
            chunk.writeBytes(bytes)
            self.pendingEvents.append(.body(chunk))
        } else {
            var chunk = self.allocator.buffer(capacity: max(count, 1024))
            chunk.writeBytes(bytes)
            self.emit(.body(chunk))
        }
        return count
    }

    fileprivate func onReadRequestBody(into destination: UnsafeMutableRawBufferPointer) -> Int {
        switch self.flow.withLock({ $0.sendRequestBody(into: destination) }) {
        case .pause:
            return CCURL_READFUNC_PAUSE
        case .end:
            return 0
        case .copied(let count, let wakeClient):
            if wakeClient { self.emit(.wantsRequestBody) }
            return count
        }
    }

    // MARK: - Setup

    /// Whether one of the variables curl takes a proxy from is set (read once, at first use).
    private static let environmentNamesProxy: Bool = {
        ["http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"].contains { name in
            guard let value = getenv(name) else { return false }
            return value.pointee != 0
        }
    }()

    /// The codings the running libcurl decodes (read once, at first use).
    private static let codings: UpstreamHeaderBlock.Codings = {
        let features = ccurl_runtime_features()
        return UpstreamHeaderBlock.Codings(
            zlib: features & CCURL_VERSION_LIBZ != 0, brotli: features & CCURL_VERSION_BROTLI != 0,
            zstd: features & CCURL_VERSION_ZSTD != 0)
    }()

    private func configure(request: UpstreamRequest, configuration: UpstreamConfiguration) {
        guard let easy = self.easy else { return }
        self.totalTimeout = configuration.totalTimeout
        self.answerMayHaveBody = request.method != "HEAD"
        let userdata = Unmanaged.passUnretained(self).toOpaque()
        ccurl_easy_setopt_string(easy, CURLOPT_URL, request.url)
        self.errorBuffer[0] = 0
        ccurl_easy_setopt_pointer(easy, CURLOPT_ERRORBUFFER, self.errorBuffer)
        ccurl_easy_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        // DNS answers and TLS sessions are shared by every loop's handles (connections are not).
        if let share = spx_curl_share() { ccurl_easy_setopt_pointer(easy, CURLOPT_SHARE, share) }
        // Forward the path byte for byte: no dot-segment squashing.
        ccurl_easy_setopt_long(easy, CURLOPT_PATH_AS_IS, 1)
        ccurl_easy_setopt_long(easy, CURLOPT_HTTP_VERSION, CCURL_HTTP_VERSION_2TLS)
        // Ask for every encoding curl can decode; bodies reach the proxy decoded.
        ccurl_easy_setopt_string(easy, CURLOPT_ACCEPT_ENCODING, StaticString("").cString)
        ccurl_easy_setopt_long(easy, CURLOPT_TCP_NODELAY, 1)
        ccurl_easy_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, configuration.connectTimeout.milliseconds)
        ccurl_easy_setopt_long(easy, CURLOPT_TIMEOUT_MS, configuration.totalTimeout.milliseconds)
        let idleSeconds = max(1, Int(configuration.idleTimeout.components.seconds))
        ccurl_easy_setopt_long(easy, CURLOPT_LOW_SPEED_LIMIT, 1)
        ccurl_easy_setopt_long(easy, CURLOPT_LOW_SPEED_TIME, idleSeconds)
        if let bundle = configuration.caBundle { ccurl_easy_setopt_string(easy, CURLOPT_CAINFO, bundle) }
        if let pin = configuration.pinnedPublicKey {
            // The key alone vouches for the server (curl checks a pin whatever VERIFYPEER says):
            // not its name, nor its chain, nor its dates (the proxy's own certificate, expired,
            // still tells the commands they reached that proxy).
            ccurl_easy_setopt_string(easy, CURLOPT_PINNEDPUBLICKEY, pin)
            ccurl_easy_setopt_long(easy, CURLOPT_SSL_VERIFYHOST, 0)
            ccurl_easy_setopt_long(easy, CURLOPT_SSL_VERIFYPEER, 0)
        }
        // With no proxy in the environment, "" says so once: curl would otherwise call getenv
        // five times for every transfer. An operator's proxy is still honoured.
        if !Self.environmentNamesProxy {
            ccurl_easy_setopt_string(easy, CURLOPT_PROXY, StaticString("").cString)
            ccurl_easy_setopt_string(easy, CURLOPT_NOPROXY, StaticString("").cString)
        } else {
            // A proxy's answer to CONNECT is not Spotify's head: not handed to the header callback.
            ccurl_easy_setopt_long(easy, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1)
        }

        switch (request.method, request.body) {
        case ("GET", .none):
            ccurl_easy_setopt_long(easy, CURLOPT_HTTPGET, 1)
        case ("HEAD", .none):
            ccurl_easy_setopt_long(easy, CURLOPT_NOBODY, 1)
        case (_, .none):
            ccurl_easy_setopt_string(easy, CURLOPT_CUSTOMREQUEST, request.method)
        case (_, .known(let length)):
            ccurl_easy_setopt_long(easy, CURLOPT_UPLOAD, 1)
            ccurl_easy_setopt_int64(easy, CURLOPT_INFILESIZE_LARGE, curl_off_t(length))
            ccurl_easy_setopt_string(easy, CURLOPT_CUSTOMREQUEST, request.method)
        case (_, .streamed):
            ccurl_easy_setopt_long(easy, CURLOPT_UPLOAD, 1)
            ccurl_easy_setopt_int64(easy, CURLOPT_INFILESIZE_LARGE, -1)
            ccurl_easy_setopt_string(easy, CURLOPT_CUSTOMREQUEST, request.method)
        }

        var list: UnsafeMutablePointer<curl_slist>?
        var sawAccept = false
        for (name, value) in request.headers {
            if name.equalsIgnoringASCIICase("accept") { sawAccept = true }
            list = Self.append(name: name, value: value, to: list)
        }
        // Headers curl would add on its own, which the client did not send. (curl adds `Expect`
        // only to an upload: a request without a body needs no line against it, and is spared
        // its two allocations.)
        if !sawAccept { list = curl_slist_append(list, StaticString("Accept:").cString) }
        if request.body != .none { list = curl_slist_append(list, StaticString("Expect:").cString) }
        self.headerList = list
        ccurl_easy_setopt_slist(easy, CURLOPT_HTTPHEADER, list)

        ccurl_easy_setopt_callback(easy, CURLOPT_HEADERFUNCTION, curlHeaderCallback)
        ccurl_easy_setopt_pointer(easy, CURLOPT_HEADERDATA, userdata)
        ccurl_easy_setopt_callback(easy, CURLOPT_WRITEFUNCTION, curlWriteCallback)
        ccurl_easy_setopt_pointer(easy, CURLOPT_WRITEDATA, userdata)
        ccurl_easy_setopt_callback(easy, CURLOPT_READFUNCTION, curlReadCallback)
        ccurl_easy_setopt_pointer(easy, CURLOPT_READDATA, userdata)
    }
}

extension UpstreamTransfer {
    /// Appends the header line `Name: value` to `list` (curl copies it), made in temporary
    /// memory rather than as a `String`. curl sends `Name;` as a header with an empty value
    /// (`Name:` would remove the header).
    fileprivate static func append(
        name: String, value: String, to list: UnsafeMutablePointer<curl_slist>?
    ) -> UnsafeMutablePointer<curl_slist>? {
        var name = name
        var value = value
        return name.withUTF8 { name in
            value.withUTF8 { value in
                withUnsafeTemporaryAllocation(of: UInt8.self, capacity: name.count + value.count + 3) { line in
                    var end = line.initialize(fromContentsOf: name)
                    if value.isEmpty {
                        line[end] = UInt8(ascii: ";")
                        end += 1
                    } else {
                        line[end] = UInt8(ascii: ":")
                        line[end + 1] = UInt8(ascii: " ")
                        end = UnsafeMutableBufferPointer(rebasing: line[(end + 2)...]).initialize(fromContentsOf: value) + end + 2
                    }
                    line[end] = 0
                    return line.withMemoryRebound(to: CChar.self) { curl_slist_append(list, $0.baseAddress!) }
                }
            }
        }
    }
}

private func curlHeaderCallback(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ userdata: UnsafeMutableRawPointer?) -> Int {
    guard let data, let userdata else { return 0 }
    let transfer = Unmanaged<UpstreamTransfer>.fromOpaque(userdata).takeUnretainedValue()
    // Anything but the count given stops the transfer.
    return transfer.onHeaderLine(UnsafeRawBufferPointer(start: data, count: size * count)) ? size * count : 0
}

private func curlWriteCallback(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ userdata: UnsafeMutableRawPointer?) -> Int {
    guard let data, let userdata else { return 0 }
    let transfer = Unmanaged<UpstreamTransfer>.fromOpaque(userdata).takeUnretainedValue()
    return transfer.onBody(UnsafeRawBufferPointer(start: data, count: size * count))
}

private func curlReadCallback(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ userdata: UnsafeMutableRawPointer?) -> Int {
    guard let data, let userdata else { return CCURL_READFUNC_ABORT }
    let transfer = Unmanaged<UpstreamTransfer>.fromOpaque(userdata).takeUnretainedValue()
    return transfer.onReadRequestBody(into: UnsafeMutableRawBufferPointer(start: data, count: size * count))
}

extension StaticString {
    /// The literal's own NUL-terminated bytes, for C. A short `String` passed as a C string is
    /// copied to the heap first, and these go with every transfer.
    var cString: UnsafePointer<CChar> {
        UnsafeRawPointer(self.utf8Start).assumingMemoryBound(to: CChar.self)
    }
}

extension Duration {
    var milliseconds: Int {
        let (seconds, attoseconds) = self.components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }
}
