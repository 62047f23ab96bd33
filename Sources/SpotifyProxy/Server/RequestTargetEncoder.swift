import NIOCore

/// Percent-encodes raw bytes of 0x80 and above in request targets before the HTTP parser sees
/// them, as browsers do (`?q=Björk` becomes `?q=Bj%C3%B6rk`): the parser refuses them, and a
/// person who types a name into curl should get an answer, not a 400.
///
/// Pure: it follows the request framing just far enough to touch request lines only. A request
/// line is held until it is complete; header lines pass at once (a copy of each is read for
/// `Content-Length` and `Transfer-Encoding`); a `Content-Length` body is counted past. A request
/// with `Transfer-Encoding`, or with anything it does not follow, makes it step aside for the rest
/// of the connection: the bytes then reach the parser untouched, as without it.
public struct RequestTargetEncoder: Sendable {
    enum State: Equatable {
        /// Before (or inside) a request line; leading empty lines pass.
        case requestLine
        case headers(contentLength: Int?)
        case body(remaining: Int)
        case passThrough
    }

    private(set) var state = State.requestLine
    /// The incomplete request line (held back), or a copy of the incomplete header line.
    private var line: [UInt8] = []
    /// A longer line than this is the parser's to refuse.
    static let lineLimit = 64 * 1024

    public init() {}

    /// The bytes to hand to the parser for `input`: `input` itself when nothing changes.
    public mutating func process(_ input: ByteBuffer) -> ByteBuffer {
        if case .passThrough = self.state { return input }
        if case .body(let remaining) = self.state, remaining >= input.readableBytes {
            self.state = remaining == input.readableBytes ? .requestLine : .body(remaining: remaining - input.readableBytes)
            return input
        }
        var output = ByteBuffer()
        output.reserveCapacity(input.readableBytes + 32)
        var changed = false
        input.withUnsafeReadableBytes { bytes in
            var index = 0
            while index < bytes.count {
                switch self.state {
                case .passThrough:
                    output.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[index...]))
                    index = bytes.count
                case .body(let remaining):
                    let count = min(remaining, bytes.count - index)
                    output.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[index..<(index + count)]))
                    index += count
                    self.state = remaining == count ? .requestLine : .body(remaining: remaining - count)
                case .requestLine:
                    let end = bytes[index...].firstIndex(of: UInt8(ascii: "\n"))
                    let piece = UnsafeRawBufferPointer(rebasing: bytes[index..<(end.map { $0 + 1 } ?? bytes.count)])
                    index += piece.count
                    // A line begun in an earlier read was held back: what goes out now differs.
                    if !self.line.isEmpty { changed = true }
                    self.line.append(contentsOf: piece)
                    guard end != nil else {
                        // Held back until the line is whole (or too long to be ours).
                        changed = true
                        if self.line.count > Self.lineLimit { self.stepAside(flushingInto: &output) }
                        continue
                    }
                    changed = self.emitRequestLine(into: &output) || changed
                case .headers:
                    let end = bytes[index...].firstIndex(of: UInt8(ascii: "\n"))
                    let piece = UnsafeRawBufferPointer(rebasing: bytes[index..<(end.map { $0 + 1 } ?? bytes.count)])
                    index += piece.count
                    output.writeBytes(piece)
                    self.line.append(contentsOf: piece)
                    if end != nil {
                        self.headerLineEnded()
                    } else if self.line.count > Self.lineLimit {
                        self.line = []
                        self.state = .passThrough
                    }
                }
            }
        }
        return changed ? output : input
    }

    /// A whole request line in `line`: written with its high bytes encoded. True when that changed it.
    private mutating func emitRequestLine(into output: inout ByteBuffer) -> Bool {
        defer { self.line = [] }
        let isEmpty = self.line == [UInt8(ascii: "\n")] || self.line == [UInt8(ascii: "\r"), UInt8(ascii: "\n")]
        if !isEmpty { self.state = .headers(contentLength: nil) }
        guard self.line.contains(where: { $0 >= 0x80 }) else {
            output.writeBytes(self.line)
            return false
        }
        let hex = Array("0123456789ABCDEF".utf8)
        for byte in self.line {
            if byte >= 0x80 {
                output.writeBytes([UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]])
            } else {
                output.writeInteger(byte)
            }
        }
        return true
    }

    /// A whole header line in `line` (already passed on): reads the framing headers.
    private mutating func headerLineEnded() {
        defer { self.line = [] }
        guard case .headers(let contentLength) = self.state else { return }
        var text = self.line[...]
        while let last = text.last, last == UInt8(ascii: "\n") || last == UInt8(ascii: "\r") { text = text.dropLast() }
        if text.isEmpty {
            // The end of the head: past the body, the next request line.
            self.state = contentLength.map { $0 > 0 ? .body(remaining: $0) : .requestLine } ?? .requestLine
            return
        }
        guard let colon = text.firstIndex(of: UInt8(ascii: ":")) else { return }
        let name = text[..<colon]
        let value = String(decoding: text[text.index(after: colon)...], as: UTF8.self).trimmingSpaces()
        if name.equalsIgnoringASCIICase("transfer-encoding") {
            self.state = .passThrough
        } else if name.equalsIgnoringASCIICase("content-length") {
            // Two lengths, or one that is no number: the parser refuses it; nothing to follow.
            guard contentLength == nil, let length = Int(value), length >= 0 else {
                self.state = .passThrough
                return
            }
            self.state = .headers(contentLength: length)
        }
    }

    private mutating func stepAside(flushingInto output: inout ByteBuffer) {
        output.writeBytes(self.line)
        self.line = []
        self.state = .passThrough
    }
}

/// Runs every inbound byte of a connection through a ``RequestTargetEncoder``, before the HTTP parser.
final class RequestTargetEncodingHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private var encoder = RequestTargetEncoder()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let output = self.encoder.process(self.unwrapInboundIn(data))
        if output.readableBytes > 0 { context.fireChannelRead(self.wrapInboundOut(output)) }
    }
}
