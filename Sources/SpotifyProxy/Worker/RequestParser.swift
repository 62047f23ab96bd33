import CLLHTTP
import NIOCore
import NIOHTTP1

/// HTTP/1.1 requests parsed with llhttp (the parser swift-nio itself uses, vendored as
/// `CLLHTTP`), into NIO's request parts. It stops after each complete request (the next one
/// of a pipelining client waits until the answer to this one is written) and refuses heads
/// over 80 KiB, as NIO's decoder does.
final class RequestParser {
    enum Stop: Equatable {
        /// Every byte was taken; more are needed.
        case needMore
        /// A request is complete; `consumed` bytes were taken. ``resume()`` before parsing on.
        case requestComplete(consumed: Int)
        case failed(HTTPParserError)
    }

    /// The parts parsed so far, in order; the caller takes them.
    var parts: [HTTPServerRequestPart] = []
    /// The limit NIO's decoder has: the request line and headers together.
    static let maximumHeadBytes = 80 * 1024

    private let parser: UnsafeMutablePointer<spx_llhttp_t>
    private var url: [UInt8] = []
    private var name: [UInt8] = []
    private var value: [UInt8] = []
    private var inValue = false
    private var headers: [(String, String)] = []
    private var headBytes = 0
    private var overflowed = false
    /// Why the last ``Stop/failed(_:)`` happened, in words (llhttp's, or the version refused).
    private(set) var failureReason = ""
    /// The head's version was not 1.x (HTTP/0.9 has no head to answer with; 2 is not spoken here).
    private var refusedVersion: HTTPVersion?
    /// The request line's version has been read.
    private var versionRead = false
    /// `server.max_body_bytes`: a chunked body whose chunk sizes add up past it is refused at
    /// the chunk-size line that does (as nginx refuses it), not once that much has come.
    private let maxBodyBytes: Int
    /// The chunk sizes of the request's chunked body so far.
    private var chunkedBytes = 0
    private var chunkedOverLimit = false
    /// ``failureReason`` for a chunked body over ``maxBodyBytes`` (a `.invalidChunkSize`).
    static let bodyOverLimit = "chunked body over the limit"

    private nonisolated(unsafe) static let settings: UnsafeMutablePointer<spx_llhttp_settings_t> = {
        let settings = UnsafeMutablePointer<spx_llhttp_settings_t>.allocate(capacity: 1)
        spx_llhttp_settings_init(settings)
        settings.pointee.on_message_begin = { parser in RequestParser.of(parser).messageBegin() }
        settings.pointee.on_url = { parser, at, length in RequestParser.of(parser).url(at, length) }
        settings.pointee.on_version_complete = { parser in
            RequestParser.of(parser).versionRead = true
            return 0
        }
        settings.pointee.on_header_field = { parser, at, length in RequestParser.of(parser).headerField(at, length) }
        settings.pointee.on_header_value = { parser, at, length in RequestParser.of(parser).headerValue(at, length) }
        settings.pointee.on_headers_complete = { parser in RequestParser.of(parser).headersComplete() }
        settings.pointee.on_body = { parser, at, length in RequestParser.of(parser).body(at, length) }
        settings.pointee.on_chunk_header = { parser in RequestParser.of(parser).chunkHeader() }
        settings.pointee.on_message_complete = { parser in RequestParser.of(parser).messageComplete() }
        return settings
    }()

    init(maxBodyBytes: Int = .max) {
        self.maxBodyBytes = maxBodyBytes
        self.parser = .allocate(capacity: 1)
        spx_llhttp_init(self.parser, SPX_HTTP_REQUEST, Self.settings)
        self.parser.pointee.data = Unmanaged.passUnretained(self).toOpaque()
    }

    deinit {
        self.parser.deallocate()
    }

    private static func of(_ parser: UnsafeMutablePointer<spx_llhttp_t>?) -> RequestParser {
        Unmanaged<RequestParser>.fromOpaque(parser!.pointee.data).takeUnretainedValue()
    }

    /// True between a request's first byte and its end.
    private(set) var inRequest = false
    /// True between a request's first byte and the end of its head.
    private(set) var inHead = false

    /// Parses `bytes`, collecting parts in ``parts``.
    func parse(_ bytes: UnsafeRawBufferPointer) -> Stop {
        guard let base = bytes.baseAddress else { return .needMore }
        let code = spx_llhttp_execute_bytes(self.parser, base, bytes.count)
        switch code {
        case SPX_HPE_OK:
            // An HTTP/0.9 request is its request line alone, with no version: llhttp reads on for
            // headers (or waits for the byte after the line), and the client for an answer. It
            // is refused once the line has ended.
            // (Before any version, a line end can only end a target: llhttp's HTTP/0.9 path
            // reports no end of the target.)
            if self.inHead, !self.url.isEmpty, !self.versionRead,
                bytes.last == UInt8(ascii: "\n") || (self.parser.pointee.http_major == 0 && self.parser.pointee.http_minor == 9)
            {
                self.refusedVersion = HTTPVersion(major: 0, minor: 9)
                self.failureReason = "HTTP/0.9 is not supported"
                return .failed(.invalidVersion)
            }
            return .needMore
        case SPX_HPE_PAUSED, SPX_HPE_PAUSED_UPGRADE:
            let position = UnsafeRawPointer(spx_llhttp_get_error_pos(self.parser)!)
            return .requestComplete(consumed: position - base)
        default:
            if self.overflowed { return .failed(.headerOverflow) }
            if self.chunkedOverLimit {
                self.failureReason = Self.bodyOverLimit
                return .failed(.invalidChunkSize)
            }
            if let version = self.refusedVersion {
                self.failureReason = "HTTP/\(version.major).\(version.minor) is not supported"
                return .failed(.invalidVersion)
            }
            if code == SPX_HPE_INVALID_METHOD, let position = spx_llhttp_get_error_pos(self.parser).map(UnsafeRawPointer.init),
                position >= base, position + 2 <= base + bytes.count, position.load(as: UInt8.self) == 0x16,
                position.load(fromByteOffset: 1, as: UInt8.self) == 0x03
            {
                self.failureReason = Self.tlsHandshake
                return .failed(.invalidMethod)
            }
            self.failureReason = Self.explained(String(cString: spx_llhttp_get_error_reason(self.parser)))
            return .failed(Self.error(code))
        }
    }

    /// Parses on after a complete request.
    func resume() {
        if spx_llhttp_get_errno(self.parser) == SPX_HPE_PAUSED_UPGRADE {
            spx_llhttp_resume_after_upgrade(self.parser)
        } else {
            spx_llhttp_resume(self.parser)
        }
    }

    // MARK: - llhttp's callbacks

    private func count(_ length: Int) -> Bool {
        self.headBytes += length
        if self.headBytes > Self.maximumHeadBytes {
            self.overflowed = true
            return false
        }
        return true
    }

    private func messageBegin() -> Int32 {
        self.chunkedBytes = 0
        self.chunkedOverLimit = false
        self.inRequest = true
        self.inHead = true
        self.versionRead = false
        self.url.removeAll(keepingCapacity: true)
        self.name.removeAll(keepingCapacity: true)
        self.value.removeAll(keepingCapacity: true)
        self.inValue = false
        self.headers.removeAll(keepingCapacity: true)
        self.headBytes = 0
        return 0
    }

    private func url(_ at: UnsafePointer<CChar>?, _ length: Int) -> Int32 {
        guard self.count(length) else {
            self.failureReason = Self.requestLineOverflow
            return -1
        }
        guard let at else { return -1 }
        self.url.append(contentsOf: UnsafeRawBufferPointer(start: at, count: length))
        return 0
    }

    private func headerField(_ at: UnsafePointer<CChar>?, _ length: Int) -> Int32 {
        guard self.count(length), let at else { return -1 }
        if self.inValue { self.commitHeader() }
        self.name.append(contentsOf: UnsafeRawBufferPointer(start: at, count: length))
        return 0
    }

    private func headerValue(_ at: UnsafePointer<CChar>?, _ length: Int) -> Int32 {
        guard self.count(length), let at else { return -1 }
        self.inValue = true
        self.value.append(contentsOf: UnsafeRawBufferPointer(start: at, count: length))
        return 0
    }

    /// llhttp leaves a value's trailing whitespace in it; RFC 9110 §5.5 says it is not part of
    /// the value (`Content-Length: 3 ` is 3).
    private func commitHeader() {
        while let last = self.value.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { self.value.removeLast() }
        self.headers.append((String(decoding: self.name, as: UTF8.self), String(decoding: self.value, as: UTF8.self)))
        self.name.removeAll(keepingCapacity: true)
        self.value.removeAll(keepingCapacity: true)
        self.inValue = false
    }

    /// A header (or trailer) whose value was still being read ends with the head (or trailers).
    private func commitPendingHeader() {
        if self.inValue || !self.name.isEmpty { self.commitHeader() }
    }

    private func headersComplete() -> Int32 {
        self.inHead = false
        guard self.parser.pointee.http_major == 1 else {
            self.refusedVersion = HTTPVersion(major: Int(self.parser.pointee.http_major), minor: Int(self.parser.pointee.http_minor))
            return -1
        }
        self.commitPendingHeader()
        var method = HTTPMethod(rawValue: String(cString: spx_llhttp_method_name(spx_llhttp_method_t(UInt32(self.parser.pointee.method)))))
        // NIO reads M-SEARCH as its `.MSEARCH`, whose raw value drops the dash: the client's is sent.
        if case .MSEARCH = method { method = .RAW(value: "M-SEARCH") }
        let version = HTTPVersion(major: Int(self.parser.pointee.http_major), minor: Int(self.parser.pointee.http_minor))
        // A fragment is the client's own (RFC 9110 §4.2.5): not part of the target that is
        // routed, cached, searched for or logged (libcurl would not send it either).
        let target = self.url.firstIndex(of: UInt8(ascii: "#")).map { self.url[..<$0] } ?? self.url[...]
        let head = HTTPRequestHead(
            version: version, method: method, uri: String(decoding: target, as: UTF8.self), headers: HTTPHeaders(self.headers))
        self.parts.append(.head(head))
        self.url.removeAll(keepingCapacity: true)
        self.headers.removeAll(keepingCapacity: true)
        self.headBytes = 0
        return 0
    }

    private func body(_ at: UnsafePointer<CChar>?, _ length: Int) -> Int32 {
        guard let at else { return 0 }
        let bytes = UnsafeRawBufferPointer(start: at, count: length)
        if case .body(var buffer) = self.parts.last {
            self.parts.removeLast()
            buffer.writeBytes(bytes)
            self.parts.append(.body(buffer))
        } else {
            var buffer = ByteBuffer()
            buffer.reserveCapacity(length)
            buffer.writeBytes(bytes)
            self.parts.append(.body(buffer))
        }
        return 0
    }

    /// A chunk's size line: llhttp holds the size in `content_length`.
    private func chunkHeader() -> Int32 {
        let size = Int(clamping: self.parser.pointee.content_length)
        let (total, overflow) = self.chunkedBytes.addingReportingOverflow(size)
        self.chunkedBytes = overflow ? .max : total
        guard self.chunkedBytes <= self.maxBodyBytes else {
            self.chunkedOverLimit = true
            return -1
        }
        return 0
    }

    private func messageComplete() -> Int32 {
        // A chunked body's trailers come through the header callbacks, with no headers-complete.
        self.commitPendingHeader()
        self.parts.append(.end(self.headers.isEmpty ? nil : HTTPHeaders(self.headers)))
        self.headers.removeAll(keepingCapacity: true)
        self.inRequest = false
        // Stop here: the next request waits until this one is answered.
        return Int32(SPX_HPE_PAUSED.rawValue)
    }

    /// A request that begins as a TLS handshake record does (0x16 0x03): an https:// URL for
    /// this plain-HTTP listener.
    static let tlsHandshake = "a TLS handshake came to a plain-HTTP listener"

    /// The head's limit was passed within the request line's target: the URL is what to shorten.
    static let requestLineOverflow = "the request line alone is over the limit"

    /// llhttp's reasons that do not say what the client did, in words that do.
    static func explained(_ reason: String) -> String {
        switch reason {
        case "Expected HTTP/, RTSP/ or ICE/": "the request line has no HTTP/1.x after the target (a space in the target must be sent as %20)"
        // A bare LF, and anything after the version (`HTTP/1.01`, `HTTP/1.1 extra`).
        case "Expected CRLF after version": "the request line does not end with CRLF right after its version (HTTP/1.1 or HTTP/1.0, nothing after it)"
        case "Invalid HTTP version": "the request's HTTP version is not HTTP/1.1 or HTTP/1.0, the ones this proxy speaks"
        case "Pause on PRI/Upgrade": "HTTP/2 with prior knowledge (the PRI preface) is not supported"
        default: reason
        }
    }

    /// NIO's name for llhttp's error (the answer's message names it).
    private static func error(_ code: spx_llhttp_errno_t) -> HTTPParserError {
        switch code {
        case SPX_HPE_INTERNAL: .invalidInternalState
        case SPX_HPE_STRICT: .strictModeAssertion
        case SPX_HPE_LF_EXPECTED: .lfExpected
        case SPX_HPE_UNEXPECTED_CONTENT_LENGTH: .unexpectedContentLength
        case SPX_HPE_CLOSED_CONNECTION: .closedConnection
        case SPX_HPE_INVALID_METHOD: .invalidMethod
        case SPX_HPE_INVALID_URL: .invalidURL
        case SPX_HPE_INVALID_CONSTANT: .invalidConstant
        case SPX_HPE_INVALID_VERSION: .invalidVersion
        case SPX_HPE_INVALID_HEADER_TOKEN, SPX_HPE_UNEXPECTED_SPACE: .invalidHeaderToken
        case SPX_HPE_INVALID_CONTENT_LENGTH: .invalidContentLength
        case SPX_HPE_INVALID_CHUNK_SIZE: .invalidChunkSize
        case SPX_HPE_INVALID_STATUS: .invalidStatus
        case SPX_HPE_INVALID_EOF_STATE: .invalidEOFState
        default: .unknown
        }
    }
}
