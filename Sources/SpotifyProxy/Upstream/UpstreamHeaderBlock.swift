/// The header lines of an upstream response, as libcurl handed them over (status line and
/// empty line excluded), parsed into name/value pairs. Pure, and run on the event loops so the
/// single curl thread only copies bytes.
public enum UpstreamHeaderBlock {
    public static func parse(_ block: [UInt8]) -> [(name: String, value: String)] {
        var headers: [(name: String, value: String)] = []
        headers.reserveCapacity(16)
        block.withUnsafeBufferPointer { bytes in
            Self.forEachLine(in: bytes) { line in
                var line = line
                if line.last == UInt8(ascii: "\r") { line = UnsafeBufferPointer(rebasing: line.dropLast()) }
                Self.addLine(line, to: &headers)
                return true
            }
        }
        return headers
    }

    /// What makes an upstream's final head unfit to forward.
    public enum Problem: Equatable, Sendable {
        /// A line that is not valid HTTP, in ``problem(inLine:)``'s words.
        case invalidLine(String)
        /// A `Transfer-Encoding` or `Content-Encoding` (`header`, as sent, with its `value`)
        /// naming a coding libcurl cannot decode. curl fails such a transfer only once body
        /// bytes arrive, after the head has gone to the client, who would get a 200 and then a
        /// cut connection.
        case undecodable(header: String, value: String, decodable: String)
        /// A 101 Switching Protocols, to a request that asked for no upgrade.
        case switchingProtocols

        /// The words that follow "upstream sent " in the client's 502 and the log.
        public var words: String {
            switch self {
            case .invalidLine(let words):
                "a head that is not valid HTTP: \(words)"
            case .undecodable(let header, let value, let decodable):
                "a \(header) the proxy cannot decode (\(value)); its libcurl decodes \(decodable)"
            case .switchingProtocols:
                "101 Switching Protocols to a request that asked for no upgrade"
            }
        }
    }

    /// The codings a libcurl decodes (`identity` and `none` always; the compressions of its
    /// build), as curl matches them: whole names, any case.
    public struct Codings: Sendable {
        var names: [String]

        public init(zlib: Bool, brotli: Bool, zstd: Bool) {
            self.names = ["identity", "none"]
            if zlib { self.names += ["gzip", "x-gzip", "deflate"] }
            if brotli { self.names.append("br") }
            if zstd { self.names.append("zstd") }
        }

        func decodes(_ name: UnsafeBufferPointer<UInt8>) -> Bool {
            self.names.contains { name.equalsIgnoringASCIICase($0) }
        }

        /// For the message: the compressions, as a list.
        var decodable: String {
            self.names.filter { $0 != "identity" && $0 != "none" && $0 != "x-gzip" }.joined(separator: ", ")
        }
    }

    /// The first thing in the final head (`block`) that may not be forwarded: a line that
    /// ``problem(inLine:)`` refuses, or, when the answer has a body (`codings` is not nil), a
    /// coding that libcurl (decoding with `codings`) cannot undo. An answer that says it is
    /// empty (`Content-Length: 0`, not chunked) gives curl nothing to decode, and goes.
    /// Nil when the head may go.
    public static func problem(inBlock block: [UInt8], codings: Codings?) -> Problem? {
        block.withUnsafeBufferPointer { bytes in
            var invalid: Problem?
            var undecodable: Problem?
            var transferCoded = false
            var emptyByLength = false
            Self.forEachLine(in: bytes) { line in
                if let words = Self.problem(inLine: UnsafeRawBufferPointer(line)) {
                    invalid = .invalidLine(words)
                    return false
                }
                guard let codings, let header = FramingHeader(of: line) else { return true }
                let value = Self.value(of: line, after: header.colon)
                switch header {
                case .transferEncoding, .contentEncoding:
                    if header == .transferEncoding { transferCoded = true }
                    if undecodable == nil, !Self.decodes(value, transfer: header == .transferEncoding, codings: codings) {
                        undecodable = .undecodable(
                            header: String(decoding: UnsafeBufferPointer(rebasing: line[..<header.colon]), as: UTF8.self),
                            value: String(decoding: value, as: UTF8.self),
                            decodable: (header == .transferEncoding ? "chunked, " : "") + codings.decodable)
                    }
                case .contentLength:
                    emptyByLength = value.count == 1 && value[0] == UInt8(ascii: "0")
                }
                return true
            }
            if let invalid { return invalid }
            return emptyByLength && !transferCoded ? nil : undecodable
        }
    }

    /// The headers that say how an answer's body is framed and coded, found by their names'
    /// lengths first: every line of every answer passes here. A valid line has no blank before
    /// its colon (``problem(inLine:)``), so the colon is at the name's end.
    private enum FramingHeader: String, CaseIterable {
        case transferEncoding = "transfer-encoding", contentEncoding = "content-encoding", contentLength = "content-length"

        init?(of line: UnsafeBufferPointer<UInt8>) {
            let found = Self.allCases.first { header in
                let count = header.colon
                return line.count > count && line[count] == UInt8(ascii: ":")
                    && UnsafeBufferPointer(rebasing: line[..<count]).equalsIgnoringASCIICase(header.rawValue)
            }
            guard let found else { return nil }
            self = found
        }

        /// Where the colon is: the name's length.
        var colon: Int { self.rawValue.utf8.count }
    }

    /// The value of `line` (a line of the block, its LF gone) after its colon, without blanks
    /// around it or the line's CR.
    private static func value(of line: UnsafeBufferPointer<UInt8>, after colon: Int) -> UnsafeBufferPointer<UInt8> {
        var line = UnsafeBufferPointer(rebasing: line[(colon + 1)...])
        if line.last == UInt8(ascii: "\r") { line = UnsafeBufferPointer(rebasing: line.dropLast()) }
        return Self.trimmedBytes(line[...])
    }

    /// Whether curl decodes every coding in `value`, split as curl splits the list: at commas,
    /// blanks around a name dropped; `chunked` is a transfer coding only.
    private static func decodes(_ value: UnsafeBufferPointer<UInt8>, transfer: Bool, codings: Codings) -> Bool {
        var index = 0
        while index < value.count {
            while index < value.count, Self.isBlank(value[index]) || value[index] == UInt8(ascii: ",") { index += 1 }
            let start = index
            var nameEnd = index
            while index < value.count, value[index] != UInt8(ascii: ",") {
                if !Self.isBlank(value[index]) { nameEnd = index + 1 }
                index += 1
            }
            guard nameEnd > start else { continue }
            let name = UnsafeBufferPointer(rebasing: value[start..<nameEnd])
            if transfer, name.equalsIgnoringASCIICase("chunked") { continue }
            if !codings.decodes(name) { return false }
        }
        return true
    }

    private static func isBlank(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t")
    }

    /// Calls `body` with each line of `block`, without its LF, while it returns true.
    private static func forEachLine(in block: UnsafeBufferPointer<UInt8>, _ body: (UnsafeBufferPointer<UInt8>) -> Bool) {
        var start = 0
        while start < block.count {
            var end = start
            while end < block.count, block[end] != UInt8(ascii: "\n") { end += 1 }
            guard body(UnsafeBufferPointer(rebasing: block[start..<end])) else { return }
            start = end + 1
        }
    }

    private static func addLine(_ line: UnsafeBufferPointer<UInt8>, to headers: inout [(name: String, value: String)]) {
        guard let first = line.first else { return }
        if first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") {
            // obs-fold: a continuation of the previous header's value.
            guard let last = headers.indices.last else { return }
            headers[last].value += " " + Self.trimmed(line[...])
            return
        }
        // No colon, or no name: not a header line; never forwarded.
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > 0 else { return }
        let name = String(decoding: UnsafeBufferPointer(rebasing: line[..<colon]), as: UTF8.self)
        headers.append((name, Self.trimmed(line[(colon + 1)...])))
    }

    /// What makes `line` (one line of an answer's head as libcurl hands it over, its CRLF
    /// included) not valid HTTP, in words; nil when it is valid, or is not a header line at all
    /// (no colon, or no name: ``parse(_:)`` skips it). A header name that is not an RFC 9110
    /// token, or a value with a control byte other than HTAB, cannot be forwarded (NIO's header
    /// types trap on a name that is not ASCII): the transfer is failed with this, as nginx
    /// fails an upstream's invalid header with a 502.
    public static func problem(inLine line: UnsafeRawBufferPointer) -> String? {
        // Index loops over the bytes with direct calls: every line of every answer passes here.
        let bytes = line.assumingMemoryBound(to: UInt8.self)
        var end = bytes.count
        if end > 0, bytes[end - 1] == UInt8(ascii: "\n") { end -= 1 }
        if end > 0, bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        guard end > 0 else { return nil }
        if bytes[0] == UInt8(ascii: " ") || bytes[0] == UInt8(ascii: "\t") {
            // obs-fold: more of the previous header's value.
            var index = 0
            while index < end {
                if ResponseEncoder.isNotFieldByte(bytes[index]) { return "a control byte (\(Self.hex(bytes[index]))) in a header's folded value" }
                index += 1
            }
            return nil
        }
        var colon = 0
        while colon < end, bytes[colon] != UInt8(ascii: ":") { colon += 1 }
        guard colon < end, colon > 0 else { return nil }
        var index = 0
        while index < colon {
            if ResponseEncoder.isNotTokenByte(bytes[index]) { return "a byte (\(Self.hex(bytes[index]))) that a header's name cannot hold" }
            index += 1
        }
        index = colon + 1
        while index < end {
            if ResponseEncoder.isNotFieldByte(bytes[index]) {
                let name = String(decoding: UnsafeBufferPointer(rebasing: bytes[..<colon]), as: UTF8.self)
                return "a control byte (\(Self.hex(bytes[index]))) in the value of its \(name) header"
            }
            index += 1
        }
        return nil
    }

    private static func hex(_ byte: UInt8) -> String {
        "0x" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
    }

    private static func trimmed(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) -> String {
        String(decoding: Self.trimmedBytes(bytes), as: UTF8.self)
    }

    /// `bytes` without the spaces and tabs around them.
    private static func trimmedBytes(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) -> UnsafeBufferPointer<UInt8> {
        var bytes = bytes
        while let first = bytes.first, Self.isBlank(first) { bytes.removeFirst() }
        while let last = bytes.last, Self.isBlank(last) { bytes.removeLast() }
        return UnsafeBufferPointer(rebasing: bytes)
    }
}
