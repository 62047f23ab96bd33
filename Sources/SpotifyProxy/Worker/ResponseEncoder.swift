import NIOCore
import NIOHTTP1

/// Response parts as HTTP/1.1 bytes, framed the way NIO's `HTTPResponseEncoder` frames them
/// (so the worker loops answer exactly as the NIO listener does): a response that may carry a
/// body and has no `Content-Length` is chunked for HTTP/1.1 clients (close-delimited for 1.0);
/// 1xx, 204 and 304 carry no framing headers; a `HEAD` request's answer keeps its framing
/// headers and carries no body. A head NIO's outbound validation refuses is refused: a header name
/// that is not a token, a control byte other than HTAB (or DEL) in a value or the reason phrase;
/// CR, LF and NUL among them would split the response. A final answer's head without `Date` gets
/// one (RFC 9110 §6.6.1: the proxy's own answers, and an upstream's that lacked it).
struct ResponseEncoder {
    struct InvalidHeader: Error {}

    /// Methods of the requests whose answers have not started, oldest first.
    private var methods: [HTTPMethod] = []
    private var chunked = false
    private var suppressBody = false
    private var date = HTTPDate()

    mutating func requestArrived(_ method: HTTPMethod) {
        self.methods.append(method)
    }

    /// Appends `part` to `out`. Returns true for the end of a final answer.
    mutating func encode(_ part: HTTPServerResponsePart, into out: inout OutputQueue) throws(InvalidHeader) -> Bool {
        switch part {
        case .head(let head):
            let code = head.status.code
            let informational = (100..<200).contains(code) && code != 101
            if !informational, !self.methods.isEmpty {
                self.suppressBody = self.methods.removeFirst() == .HEAD
            } else if !informational {
                self.suppressBody = false
            }
            // The framing headers are dropped or added as the bytes are written: the head is
            // not copied to be edited.
            var framing = Framing.asIs
            if informational || !head.status.mayHaveResponseBody {
                framing = .none
            } else if head.headers.contains(name: "content-length") {
                framing = .length
            } else if head.version.major == 1, head.version.minor >= 1 {
                framing = .chunked
            }
            try Self.write(head, framing: framing, date: informational ? nil : self.date.now(), into: &out)
            if !informational { self.chunked = framing == .chunked && !self.suppressBody }
            return false
        case .body(let body):
            guard !self.suppressBody, case .byteBuffer(let buffer) = body, buffer.readableBytes > 0 else { return false }
            if self.chunked {
                Self.writeChunkSize(buffer.readableBytes, into: &out)
                out.append(buffer)
                out.writeStaticString("\r\n")
            } else {
                out.append(buffer)
            }
            return false
        case .end:
            if self.chunked { out.writeStaticString("0\r\n\r\n") }
            self.chunked = false
            self.suppressBody = false
            return true
        }
    }

    /// A chunk's size line: the size in hex, then CRLF (written in place: a `String` of it cost
    /// an allocation per chunk).
    static func writeChunkSize(_ size: Int, into out: inout OutputQueue) {
        out.write(reserving: 18) { bytes in
            var digits = 1
            while size >> (4 * digits) != 0 { digits += 1 }
            for index in 0..<digits {
                let nibble = UInt8(truncatingIfNeeded: size >> (4 * (digits - 1 - index))) & 0xF
                bytes[index] = nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "a") + nibble - 10
            }
            bytes[digits] = UInt8(ascii: "\r")
            bytes[digits + 1] = UInt8(ascii: "\n")
            return digits + 2
        }
    }

    /// How a head's body is framed, so which of its framing headers go out.
    private enum Framing {
        /// No body: neither `Content-Length` nor `Transfer-Encoding`.
        case none
        /// By its `Content-Length`: no `Transfer-Encoding`.
        case length
        /// Chunked: any `Transfer-Encoding` replaced by `chunked`.
        case chunked
        /// An HTTP/1.0 answer without a length: delimited by the close, headers as they are.
        case asIs
    }

    /// Writes `head` in one pass into memory reserved for it: a guess that fits nearly every
    /// head, or, for a head that does not fit, its size measured. A refused header leaves
    /// nothing written. (Measuring every head would copy, so retain and release, every header
    /// name and value once more.)
    private static func write(_ head: HTTPResponseHead, framing: Framing, date: String?, into out: inout OutputQueue) throws(InvalidHeader) {
        let reason = head.status.reasonPhrase
        func write(reserving size: Int) throws(HeadFailure) {
            try out.write(reserving: size) { (memory) throws(HeadFailure) -> Int in
                try Self.write(head, reason: reason, framing: framing, date: date, into: memory)
            }
        }
        do throws(HeadFailure) {
            return try write(reserving: 512 + 64 * head.headers.count)
        } catch {
            guard error == .needsRoom else { throw InvalidHeader() }
        }
        // "HTTP/", three decimals of at most 20 digits, ".", " ", " ", CRLF; a CRLF at the end.
        var size = 5 + 3 * 20 + 3 + 2 + reason.utf8.count + 2
        for (name, value) in head.headers { size += name.utf8.count + value.utf8.count + 4 }
        if framing == .chunked { size += Self.chunkedHeader.utf8CodeUnitCount }
        size += HTTPDate.headerLineSize
        do throws(HeadFailure) {
            try write(reserving: size)
        } catch {
            // Every refusal happened in the first pass, and with its size measured the head fits.
            assertionFailure("a head did not fit in its measured size, \(size) bytes")
            throw InvalidHeader()
        }
    }

    private enum HeadFailure: Error {
        case invalid
        case needsRoom
    }

    /// `head`'s bytes in `memory`: their count.
    private static func write(
        _ head: HTTPResponseHead, reason: String, framing: Framing, date: String?, into memory: UnsafeMutableRawBufferPointer
    ) throws(HeadFailure) -> Int {
        var writer = HeadWriter(memory: memory)
        writer.append("HTTP/")
        writer.append(decimal: UInt(head.version.major))
        writer.append(".")
        writer.append(decimal: UInt(head.version.minor))
        writer.append(" ")
        writer.append(decimal: head.status.code)
        writer.append(" ")
        guard Self.accepts(reason, refusing: Self.isNotFieldByte) else { throw .invalid }
        writer.append(reason)
        writer.append("\r\n")
        var dated = false
        for (name, value) in head.headers {
            // Every header is checked, those dropped below too, as NIO checks them before its
            // encoder drops them.
            guard !name.isEmpty, Self.accepts(name, refusing: Self.isNotTokenByte), Self.accepts(value, refusing: Self.isNotFieldByte)
            else { throw .invalid }
            switch framing {
            case .none where name.equalsIgnoringASCIICase("content-length"):
                continue
            case .none, .length, .chunked:
                if name.equalsIgnoringASCIICase("transfer-encoding") { continue }
            case .asIs:
                break
            }
            if !dated, name.utf8.count == 4, name.equalsIgnoringASCIICase("date") { dated = true }
            writer.append(name)
            writer.append(": ")
            writer.append(value)
            writer.append("\r\n")
        }
        if framing == .chunked { writer.append(Self.chunkedHeader) }
        if !dated, let date {
            writer.append("Date: ")
            writer.append(date)
            writer.append("\r\n")
        }
        writer.append("\r\n")
        guard !writer.overflowed else { throw .needsRoom }
        return writer.count
    }

    /// As NIO's server pipeline writes it (the answers are byte for byte NIO's).
    private static let chunkedHeader: StaticString = "transfer-encoding: chunked\r\n"

    /// A byte that may not be in a header name: RFC 9110 §5.6.2 `token`. (Also the test of an
    /// upstream's final head, ``UpstreamHeaderBlock/problem(inLine:)``.)
    @inline(__always)
    static func isNotTokenByte(_ byte: UInt8) -> Bool {
        // One bit per token byte below 0x80: letters, digits and !#$%&'*+-.^_`|~ (a bit test, not
        // a chain of range checks: every byte of every header name passes here).
        guard byte < 0x80 else { return true }
        let mask: UInt64 = byte < 64 ? 0x03FF_6CFA_0000_0000 : 0x57FF_FFFF_C7FF_FFFE
        return (mask >> UInt64(byte & 63)) & 1 == 0
    }

    /// A byte that may not be in a header value or the reason phrase (RFC 9110 §5.5, RFC 9112
    /// §4): a control byte other than HTAB, or DEL, as NIO's validation has it.
    @inline(__always)
    static func isNotFieldByte(_ byte: UInt8) -> Bool {
        (byte < 0x20 && byte != UInt8(ascii: "\t")) || byte == 0x7F
    }

    /// No byte of `string` is `refused`; read in place (a copy of the string would retain it).
    private static func accepts(_ string: String, refusing refused: (UInt8) -> Bool) -> Bool {
        if let accepted = string.utf8.withContiguousStorageIfAvailable({ !$0.contains(where: refused) }) { return accepted }
        return !string.utf8.contains(where: refused)
    }
}

extension ResponseEncoder {
    /// Bytes appended to memory reserved for them (a head). Bytes that do not fit are not
    /// written, and the writer says it overflowed.
    private struct HeadWriter {
        let memory: UnsafeMutableRawBufferPointer
        private(set) var count = 0
        private(set) var overflowed = false

        init(memory: UnsafeMutableRawBufferPointer) {
            self.memory = memory
        }

        mutating func append(_ string: StaticString) {
            self.copy(UnsafeRawBufferPointer(start: string.utf8Start, count: string.utf8CodeUnitCount))
        }

        mutating func append(_ string: String) {
            // A native string's bytes are read in place; copying the string would retain it.
            if string.utf8.withContiguousStorageIfAvailable({ self.copy(UnsafeRawBufferPointer($0)) }) == nil {
                var string = string
                string.withUTF8 { self.copy(UnsafeRawBufferPointer($0)) }
            }
        }

        mutating func append(decimal value: UInt) {
            var digits = 1
            var rest = value / 10
            while rest > 0 {
                digits += 1
                rest /= 10
            }
            guard !self.overflowed, self.count + digits <= self.memory.count else {
                self.overflowed = true
                return
            }
            var number = value
            for index in stride(from: self.count + digits - 1, through: self.count, by: -1) {
                self.memory[index] = UInt8(ascii: "0") + UInt8(number % 10)
                number /= 10
            }
            self.count += digits
        }

        private mutating func copy(_ bytes: UnsafeRawBufferPointer) {
            guard !self.overflowed, self.count + bytes.count <= self.memory.count else {
                self.overflowed = true
                return
            }
            guard let source = bytes.baseAddress, bytes.count > 0 else { return }
            (self.memory.baseAddress! + self.count).copyMemory(from: source, byteCount: bytes.count)
            self.count += bytes.count
        }
    }
}
