import NIOCore

/// Back-pressure between a client connection and its upstream transfer, both ways, decided in
/// one place. Request direction: body bytes queue here for curl; above the high-water mark the
/// client is no longer read, and when curl has drained them to the low-water mark the client is
/// read again; curl pauses when it finds the queue empty and resumes when bytes (or the end)
/// arrive. Response direction: bytes handed to the client but not yet written count against a
/// window; curl pauses when it is full and resumes when the client has taken enough.
///
/// Pure: no locks, no curl, no channel. ``UpstreamTransfer`` keeps one behind its mutex, as the
/// event loop and the curl thread both feed it; the connection keeps the client's read demand
/// (``ProxyConnectionStateMachine``) and follows what this type says.
struct UpstreamFlowControl {
    /// Request body bytes queued before the client stops being read.
    static let requestHighWater = 256 * 1024
    /// Queued request body bytes below which a held client is read again.
    static let requestLowWater = requestHighWater / 2
    /// Response bytes handed to the client but not yet written before curl is paused.
    static let responseHighWater = 256 * 1024
    /// Outstanding response bytes at or below which a paused curl resumes.
    static let responseLowWater = 64 * 1024

    /// What curl's read callback should do.
    enum Send: Equatable {
        /// Nothing queued yet: pause until ``appendRequestBody(_:)`` or ``endRequestBody()``.
        case pause
        /// The body is complete and sent.
        case end
        /// `count` bytes were copied; `wakeClient`: the queue drained enough to read the client again.
        case copied(count: Int, wakeClient: Bool)
    }

    private var requestBody = ByteBuffer()
    private var requestBodyEnded = false
    /// Curl found the queue empty and is paused.
    private var sendPaused = false
    /// The client was told to stop being read.
    private var clientHeld = false
    private var responseBytesOutstanding = 0
    /// Curl is paused because the client is slow to take the answer.
    private var receivePaused = false

    var queuedRequestBytes: Int { self.requestBody.readableBytes }
    /// Curl found the request body queue empty and waits for the client's next bytes.
    var waitsForRequestBody: Bool { self.sendPaused && !self.requestBodyEnded }
    /// The request body queue's memory (what an upload holds in the proxy).
    var queuedRequestCapacity: Int { self.requestBody.capacity }

    // MARK: - The connection's side

    /// Queues request body bytes. `keepReading` false: do not read the client until
    /// ``Send/copied(count:wakeClient:)`` says so; `resumeCurl`: curl was waiting for them.
    mutating func appendRequestBody(_ buffer: ByteBuffer) -> (keepReading: Bool, resumeCurl: Bool) {
        var buffer = buffer
        // What curl already took is given back before more is queued. A steady upload keeps the
        // queue near the high-water mark and never drains it to empty, so without this the
        // buffer would keep every byte sent until the request ends (one copy of at most the
        // high-water mark and a read, per high-water mark sent).
        if self.requestBody.readerIndex >= Self.requestHighWater { self.requestBody.discardReadBytes() }
        self.requestBody.writeBuffer(&buffer)
        let keepReading = self.requestBody.readableBytes < Self.requestHighWater
        if !keepReading { self.clientHeld = true }
        return (keepReading, self.takeSendPause())
    }

    /// The request body is complete; true when curl was waiting for it.
    mutating func endRequestBody() -> Bool {
        self.requestBodyEnded = true
        return self.takeSendPause()
    }

    /// `count` response bytes left the proxy; true when curl should resume receiving.
    mutating func responseConsumed(_ count: Int) -> Bool {
        self.responseBytesOutstanding -= count
        guard self.receivePaused, self.responseBytesOutstanding <= Self.responseLowWater else { return false }
        self.receivePaused = false
        return true
    }

    // MARK: - Curl's side

    /// Curl has `count` response bytes for the client: false pauses it (the window is full).
    mutating func responseArrived(_ count: Int) -> Bool {
        if self.responseBytesOutstanding >= Self.responseHighWater {
            self.receivePaused = true
            return false
        }
        self.responseBytesOutstanding += count
        return true
    }

    /// Curl asks for request body bytes to send; they are copied into `destination`.
    mutating func sendRequestBody(into destination: UnsafeMutableRawBufferPointer) -> Send {
        let available = self.requestBody.readableBytes
        if available == 0 {
            if self.requestBodyEnded { return .end }
            self.sendPaused = true
            return .pause
        }
        let count = min(available, destination.count)
        self.requestBody.withUnsafeReadableBytes { source in
            destination.copyMemory(from: UnsafeRawBufferPointer(rebasing: source.prefix(count)))
        }
        self.requestBody.moveReaderIndex(forwardBy: count)
        if self.requestBody.readableBytes == 0 { self.requestBody.clear() }
        var wakeClient = false
        if self.clientHeld, self.requestBody.readableBytes < Self.requestLowWater {
            self.clientHeld = false
            wakeClient = true
        }
        return .copied(count: count, wakeClient: wakeClient)
    }

    private mutating func takeSendPause() -> Bool {
        defer { self.sendPaused = false }
        return self.sendPaused
    }
}
