import NIOCore
import NIOHTTP1

/// Response parts as HTTP/1.1 bytes, framed the way NIO's `HTTPResponseEncoder` frames them
/// (so the worker loops answer exactly as the NIO listener does): a response that may carry a
/// body and has no `Content-Length` is chunked for HTTP/1.1 clients (close-delimited for 1.0);
/// 1xx, 204 and 304 carry no framing headers; a `HEAD` request's answer keeps its framing
/// headers and carries no body. Header names and values that could split the response (CR,
/// LF, NUL, or a name that is not a token) are refused, as NIO's outbound validation refuses them.
struct ResponseEncoder {
    struct InvalidHeader: Error {}

    /// Methods of the requests whose answers have not started, oldest first.
    private var methods: [HTTPMethod] = []
    private var chunked = false
    private var suppressBody = false

    mutating func requestArrived(_ method: HTTPMethod) {
        self.methods.append(method)
    }

    /// Appends `part` to `out`. Returns true for the end of a final answer.
    mutating func encode(_ part: HTTPServerResponsePart, into out: inout OutputQueue) throws -> Bool {
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
            try Self.write(head, framing: framing, into: &out)
            if !informational { self.chunked = framing == .chunked && !self.suppressBody }
            return false
        case .body(let body):
            guard !self.suppressBody, case .byteBuffer(let buffer) = body, buffer.readableBytes > 0 else { return false }
            if self.chunked {
                out.writeString(String(buffer.readableBytes, radix: 16))
                out.writeStaticString("\r\n")
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

    private static func write(_ head: HTTPResponseHead, framing: Framing, into out: inout OutputQueue) throws {
        out.writeStaticString("HTTP/")
        out.writeString(String(head.version.major))
        out.writeStaticString(".")
        out.writeString(String(head.version.minor))
        out.writeStaticString(" ")
        out.writeString(String(head.status.code))
        out.writeStaticString(" ")
        out.writeString(head.status.reasonPhrase)
        out.writeStaticString("\r\n")
        for (name, value) in head.headers {
            switch framing {
            case .none where name.equalsIgnoringASCIICase("content-length"):
                continue
            case .none, .length, .chunked:
                if name.equalsIgnoringASCIICase("transfer-encoding") { continue }
            case .asIs:
                break
            }
            guard Self.isToken(name), Self.isFieldValue(value) else { throw InvalidHeader() }
            out.writeString(name)
            out.writeStaticString(": ")
            out.writeString(value)
            out.writeStaticString("\r\n")
        }
        if framing == .chunked { out.writeStaticString("transfer-encoding: chunked\r\n") }
        out.writeStaticString("\r\n")
    }

    /// RFC 9110 §5.6.2 `token`.
    static func isToken(_ name: String) -> Bool {
        guard !name.isEmpty else { return false }
        for byte in name.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                continue
            case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
                UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
                UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
                continue
            default:
                return false
            }
        }
        return true
    }

    /// No CR, LF or NUL: nothing that ends the line early.
    static func isFieldValue(_ value: String) -> Bool {
        for byte in value.utf8 where byte == 0x0D || byte == 0x0A || byte == 0x00 { return false }
        return true
    }
}
