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
    /// The incomplete request line (held back), or a copy of an incomplete header line that
    /// may name the framing (one starting with C, T or a line end).
    private var line: [UInt8] = []
    /// Within a header line: whether `line` is collecting it.
    private var keepingHeaderLine = false
    /// Within a header line (false at its start).
    private var insideHeaderLine = false
    /// Whether the held request line has begun: bytes other than the stray CRs the parser skips
    /// before a request line.
    private var requestLineBegun = false
    /// A longer line than this is the parser's to refuse.
    static let lineLimit = 64 * 1024

    public init() {}

    /// The bytes to hand to the parser for `input`: `input` itself unless a request line in it
    /// changed or is held back (the common case costs a scan of the head, no copy).
    public mutating func process(_ input: ByteBuffer) -> ByteBuffer {
        if case .passThrough = self.state { return input }
        if case .body(let remaining) = self.state, remaining >= input.readableBytes {
            self.state = remaining == input.readableBytes ? .requestLine : .body(remaining: remaining - input.readableBytes)
            return input
        }
        var output: ByteBuffer?
        input.withUnsafeReadableBytes { bytes in
            var index = 0
            // bytes[passed..<index] go out unchanged; copied into `output` once it exists.
            var passed = 0
            func divert() {
                if output == nil { output = ByteBuffer(); output!.reserveCapacity(bytes.count + 64) }
                output!.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[passed..<index]))
            }
            while index < bytes.count {
                switch self.state {
                case .passThrough:
                    index = bytes.count
                case .body(let remaining):
                    let count = min(remaining, bytes.count - index)
                    index += count
                    self.state = remaining == count ? .requestLine : .body(remaining: remaining - count)
                case .requestLine:
                    if self.line.isEmpty, bytes[index] < 0x20, bytes[index] != UInt8(ascii: "\r"), bytes[index] != UInt8(ascii: "\n") {
                        // No request line starts so (a TLS handshake's 0x16, say): the parser
                        // refuses it at once, instead of waiting for a line end that never comes.
                        self.state = .passThrough
                        index = bytes.count
                        continue
                    }
                    let end = bytes[index...].firstIndex(of: UInt8(ascii: "\n"))
                    let stop = end.map { $0 + 1 } ?? bytes.count
                    let piece = UnsafeRawBufferPointer(rebasing: bytes[index..<stop])
                    if end != nil, self.line.isEmpty, !piece.contains(where: { $0 >= 0x80 }) {
                        // Whole in this read and plain ASCII: it passes as it is.
                        self.requestLineEnded(piece)
                        index = stop
                        continue
                    }
                    divert()
                    // Within the request line, a CR followed by anything but LF (here no LF is in
                    // the piece) is no line end: the line may never end, and the parser refuses
                    // it at once. (Stray CRs before the line are skipped by the parser.)
                    var bareCR = false
                    if end == nil {
                        var start = 0
                        if !self.requestLineBegun { while start < piece.count, piece[start] == UInt8(ascii: "\r") { start += 1 } }
                        if start < piece.count {
                            bareCR = self.requestLineBegun && self.line.last == UInt8(ascii: "\r")
                                || UnsafeRawBufferPointer(rebasing: piece[start..<(piece.count - 1)]).contains(UInt8(ascii: "\r"))
                            self.requestLineBegun = true
                        }
                    }
                    self.line.append(contentsOf: piece)
                    index = stop
                    passed = stop
                    if end != nil {
                        Self.writeEncoded(self.line, into: &output!)
                        self.requestLineEnded(self.line)
                        self.line = []
                        self.requestLineBegun = false
                    } else if self.line.count > Self.lineLimit || bareCR {
                        // Not a request line this encoder can help with: the parser decides.
                        output!.writeBytes(self.line)
                        self.line = []
                        self.state = .passThrough
                    }
                case .headers:
                    if !self.insideHeaderLine {
                        let first = bytes[index]
                        self.keepingHeaderLine = [UInt8(ascii: "C"), UInt8(ascii: "c"), UInt8(ascii: "T"), UInt8(ascii: "t"),
                                                  UInt8(ascii: "\r"), UInt8(ascii: "\n")].contains(first)
                        self.insideHeaderLine = true
                    }
                    let end = bytes[index...].firstIndex(of: UInt8(ascii: "\n"))
                    let stop = end.map { $0 + 1 } ?? bytes.count
                    if self.keepingHeaderLine { self.line.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[index..<stop])) }
                    index = stop
                    if end != nil {
                        self.insideHeaderLine = false
                        if self.keepingHeaderLine { self.headerLineEnded() }
                    } else if self.line.count > Self.lineLimit {
                        self.line = []
                        self.state = .passThrough
                    }
                }
            }
            if output != nil { output!.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[passed..<bytes.count])) }
        }
        return output ?? input
    }

    /// A whole request line went out: on to its headers, unless it was an empty line before one.
    private mutating func requestLineEnded<Line: Collection<UInt8>>(_ line: Line) {
        let isEmpty = line.elementsEqual([UInt8(ascii: "\n")]) || line.elementsEqual([UInt8(ascii: "\r"), UInt8(ascii: "\n")])
        if !isEmpty { self.state = .headers(contentLength: nil) }
    }

    /// `line` with every byte of 0x80 and above as `%XX`.
    private static func writeEncoded(_ line: [UInt8], into output: inout ByteBuffer) {
        for byte in line {
            if byte >= 0x80 {
                output.writeInteger(UInt8(ascii: "%"))
                output.writeInteger(Self.hexDigits[Int(byte >> 4)])
                output.writeInteger(Self.hexDigits[Int(byte & 0x0F)])
            } else {
                output.writeInteger(byte)
            }
        }
    }

    private static let hexDigits = Array("0123456789ABCDEF".utf8)

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
        if name.equalsIgnoringASCIICase("transfer-encoding") {
            self.state = .passThrough
        } else if name.equalsIgnoringASCIICase("content-length") {
            // Two lengths, or one that is no number: the parser refuses it; nothing to follow.
            let value = String(decoding: text[text.index(after: colon)...], as: UTF8.self).trimmingSpaces()
            guard contentLength == nil, let length = Int(value), length >= 0 else {
                self.state = .passThrough
                return
            }
            self.state = .headers(contentLength: length)
        }
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
