import CCurl
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
}

/// One request/response exchange through libcurl. Created on an event loop, driven by the
/// ``CurlLoop``'s thread; the two sides share only the `Shared` state behind a mutex.
public final class UpstreamTransfer: @unchecked Sendable {
    /// Bytes handed to the client but not yet written before curl is paused.
    static let responseHighWater = 256 * 1024
    static let responseLowWater = 64 * 1024
    /// Request body bytes buffered before the client stops being read.
    static let requestHighWater = 256 * 1024

    fileprivate struct Shared {
        var requestBody: ByteBuffer
        var requestBodyEnded = false
        var sendPaused = false
        var recvPaused = false
        var clientReadsHeld = false
        var responseBytesOutstanding = 0
        var finished = false
    }

    private(set) var easy: UnsafeMutableRawPointer?
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private let loop: CurlLoop
    public let eventLoop: any EventLoop
    private let delegate: NIOLoopBoundBox<(any UpstreamTransferDelegate)?>
    private let shared: Mutex<Shared>
    private let allocator = ByteBufferAllocator()

    // Written only by curl callbacks, on the loop thread.
    private var responseHeaders: [(name: String, value: String)] = []
    private var headDelivered = false

    init(
        request: UpstreamRequest,
        configuration: UpstreamConfiguration,
        loop: CurlLoop,
        eventLoop: any EventLoop,
        delegate: any UpstreamTransferDelegate
    ) {
        self.loop = loop
        self.eventLoop = eventLoop
        self.delegate = NIOLoopBoundBox(delegate, eventLoop: eventLoop)
        self.shared = Mutex(Shared(requestBody: ByteBufferAllocator().buffer(capacity: 0)))
        self.easy = loop.checkoutHandle()
        self.configure(request: request, configuration: configuration)
    }

    deinit {
        self.releaseHandle()
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
        var buffer = buffer
        let (resume, keepReading) = self.shared.withLock { shared -> (Bool, Bool) in
            shared.requestBody.writeBuffer(&buffer)
            let keepReading = shared.requestBody.readableBytes < Self.requestHighWater
            if !keepReading { shared.clientReadsHeld = true }
            return (shared.takeSendPause(), keepReading)
        }
        if resume { self.loop.submit(.resume(self)) }
        return keepReading
    }

    public func endRequestBody() {
        let resume = self.shared.withLock { shared -> Bool in
            shared.requestBodyEnded = true
            return shared.takeSendPause()
        }
        if resume { self.loop.submit(.resume(self)) }
    }

    /// `count` response bytes left the proxy: reopen the window if it had closed.
    public func consumed(_ count: Int) {
        let resume = self.shared.withLock { shared -> Bool in
            shared.responseBytesOutstanding -= count
            guard shared.recvPaused, shared.responseBytesOutstanding <= Self.responseLowWater else { return false }
            shared.recvPaused = false
            return true
        }
        if resume { self.loop.submit(.resume(self)) }
    }

    // MARK: - Loop thread

    func unpauseOnLoopThread() {
        guard let easy = self.easy else { return }
        curl_easy_pause(easy, CCURLPAUSE_CONT)
    }

    func complete(result: CURLcode) {
        if result == CURLE_OK {
            self.finish(nil)
            return
        }
        let message = String(cString: curl_easy_strerror(result))
        let kind: UpstreamError.Kind
        switch result {
        case CURLE_OPERATION_TIMEDOUT: kind = .timeout
        case CURLE_COULDNT_CONNECT, CURLE_COULDNT_RESOLVE_HOST, CURLE_SSL_CONNECT_ERROR,
            CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CACERT_BADFILE:
            kind = .connect
        default: kind = .protocolError
        }
        self.finish(UpstreamError(kind: kind, message: "upstream \(kind == .timeout ? "timed out" : "failed"): \(message)"))
    }

    func fail(_ error: UpstreamError) {
        self.finish(error)
    }

    private func finish(_ error: UpstreamError?) {
        let first = self.shared.withLock { shared -> Bool in
            defer { shared.finished = true }
            return !shared.finished
        }
        guard first else { return }
        self.releaseHandle()
        self.eventLoop.execute {
            let delegate = self.delegate.value
            self.delegate.value = nil
            delegate?.upstreamDidFinish(self, error: error)
        }
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

    fileprivate func onHeaderLine(_ bytes: UnsafeRawBufferPointer) {
        var line = String(decoding: bytes, as: UTF8.self)
        while line.last == "\n" || line.last == "\r" || line.last == "\r\n" { line.removeLast() }
        if line.hasPrefix("HTTP/") {
            self.responseHeaders.removeAll()
            return
        }
        if line.isEmpty {
            var status = 0
            if let easy = self.easy { ccurl_easy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &status) }
            // An informational answer (100 Continue) is followed by the real one.
            guard status >= 200, !self.headDelivered else {
                self.responseHeaders.removeAll()
                return
            }
            self.headDelivered = true
            let headers = self.responseHeaders
            let finalStatus = status
            self.eventLoop.execute {
                self.delegate.value?.upstreamDidReceiveHead(self, status: finalStatus, headers: headers)
            }
            return
        }
        if line.first == " " || line.first == "\t", let last = self.responseHeaders.indices.last {
            // obs-fold: a continuation of the previous header's value.
            self.responseHeaders[last].value += " " + line.trimmingSpaces()
            return
        }
        guard let colon = line.firstIndex(of: ":") else { return }
        let name = String(line[..<colon])
        let value = String(line[line.index(after: colon)...]).trimmingSpaces()
        self.responseHeaders.append((name, value))
    }

    fileprivate func onBody(_ bytes: UnsafeRawBufferPointer) -> Int {
        let count = bytes.count
        let accepted = self.shared.withLock { shared -> Bool in
            if shared.responseBytesOutstanding >= Self.responseHighWater {
                shared.recvPaused = true
                return false
            }
            shared.responseBytesOutstanding += count
            return true
        }
        guard accepted else { return CCURL_WRITEFUNC_PAUSE }
        var chunk = self.allocator.buffer(capacity: count)
        chunk.writeBytes(bytes)
        let buffer = chunk
        self.eventLoop.execute {
            if let delegate = self.delegate.value {
                delegate.upstreamDidReceiveBody(self, buffer)
            } else {
                self.consumed(count)
            }
        }
        return count
    }

    fileprivate func onReadRequestBody(into destination: UnsafeMutableRawBufferPointer) -> Int {
        let (count, wake) = self.shared.withLock { shared -> (Int, Bool) in
            let available = shared.requestBody.readableBytes
            if available == 0 {
                if shared.requestBodyEnded { return (0, false) }
                shared.sendPaused = true
                return (CCURL_READFUNC_PAUSE, false)
            }
            let count = min(available, destination.count)
            shared.requestBody.withUnsafeReadableBytes { source in
                destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: source.prefix(count)))
            }
            shared.requestBody.moveReaderIndex(forwardBy: count)
            if shared.requestBody.readableBytes == 0 { shared.requestBody.clear() }
            var wake = false
            if shared.clientReadsHeld, shared.requestBody.readableBytes < Self.requestHighWater / 2 {
                shared.clientReadsHeld = false
                wake = true
            }
            return (count, wake)
        }
        if wake {
            self.eventLoop.execute { self.delegate.value?.upstreamWantsRequestBody(self) }
        }
        return count
    }

    // MARK: - Setup

    private func configure(request: UpstreamRequest, configuration: UpstreamConfiguration) {
        guard let easy = self.easy else { return }
        let userdata = Unmanaged.passUnretained(self).toOpaque()
        ccurl_easy_setopt_string(easy, CURLOPT_URL, request.url)
        ccurl_easy_setopt_long(easy, CURLOPT_NOSIGNAL, 1)
        // Forward the path byte for byte: no dot-segment squashing.
        ccurl_easy_setopt_long(easy, CURLOPT_PATH_AS_IS, 1)
        ccurl_easy_setopt_long(easy, CURLOPT_HTTP_VERSION, CCURL_HTTP_VERSION_2TLS)
        // Ask for every encoding curl can decode; bodies reach the proxy decoded.
        ccurl_easy_setopt_string(easy, CURLOPT_ACCEPT_ENCODING, "")
        ccurl_easy_setopt_long(easy, CURLOPT_TCP_NODELAY, 1)
        ccurl_easy_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, configuration.connectTimeout.milliseconds)
        ccurl_easy_setopt_long(easy, CURLOPT_TIMEOUT_MS, configuration.totalTimeout.milliseconds)
        let idleSeconds = max(1, Int(configuration.idleTimeout.components.seconds))
        ccurl_easy_setopt_long(easy, CURLOPT_LOW_SPEED_LIMIT, 1)
        ccurl_easy_setopt_long(easy, CURLOPT_LOW_SPEED_TIME, idleSeconds)
        if let bundle = configuration.caBundle { ccurl_easy_setopt_string(easy, CURLOPT_CAINFO, bundle) }

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
            if name.caseInsensitiveEquals("accept") { sawAccept = true }
            // curl sends "Name;" as a header with an empty value ("Name:" would remove it).
            list = curl_slist_append(list, value.isEmpty ? "\(name);" : "\(name): \(value)")
        }
        // Headers curl would add on its own, which the client did not send.
        if !sawAccept { list = curl_slist_append(list, "Accept:") }
        list = curl_slist_append(list, "Expect:")
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

extension UpstreamTransfer.Shared {
    fileprivate mutating func takeSendPause() -> Bool {
        defer { self.sendPaused = false }
        return self.sendPaused
    }
}

private func curlHeaderCallback(_ data: UnsafeMutablePointer<CChar>?, _ size: Int, _ count: Int, _ userdata: UnsafeMutableRawPointer?) -> Int {
    guard let data, let userdata else { return 0 }
    let transfer = Unmanaged<UpstreamTransfer>.fromOpaque(userdata).takeUnretainedValue()
    transfer.onHeaderLine(UnsafeRawBufferPointer(start: data, count: size * count))
    return size * count
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

extension Duration {
    var milliseconds: Int {
        let (seconds, attoseconds) = self.components
        return Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    }
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        var slice = Substring(self)
        while let first = slice.first, first == " " || first == "\t" { slice.removeFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice.removeLast() }
        return String(slice)
    }

    func caseInsensitiveEquals(_ other: String) -> Bool {
        self.utf8.count == other.utf8.count && self.lowercased() == other.lowercased()
    }
}
