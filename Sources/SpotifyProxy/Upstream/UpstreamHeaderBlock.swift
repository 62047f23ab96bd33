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

    /// The first of the head's lines that ``problem(inLine:)`` refuses, in its words; nil when
    /// every line may be forwarded.
    public static func problem(inBlock block: [UInt8]) -> String? {
        block.withUnsafeBufferPointer { bytes in
            var found: String?
            Self.forEachLine(in: bytes) { line in
                found = Self.problem(inLine: UnsafeRawBufferPointer(line))
                return found == nil
            }
            return found
        }
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
        var bytes = bytes
        while let first = bytes.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") { bytes.removeFirst() }
        while let last = bytes.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { bytes.removeLast() }
        return String(decoding: UnsafeBufferPointer(rebasing: bytes), as: UTF8.self)
    }
}
