/// The header lines of an upstream response, as libcurl handed them over (status line and
/// empty line excluded), parsed into name/value pairs. Pure, and run on the event loops so the
/// single curl thread only copies bytes.
public enum UpstreamHeaderBlock {
    public static func parse(_ block: [UInt8]) -> [(name: String, value: String)] {
        var headers: [(name: String, value: String)] = []
        headers.reserveCapacity(16)
        block.withUnsafeBufferPointer { bytes in
            var start = 0
            while start < bytes.count {
                var end = start
                while end < bytes.count, bytes[end] != UInt8(ascii: "\n") { end += 1 }
                let next = end + 1
                if end > start, bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                Self.addLine(UnsafeBufferPointer(rebasing: bytes[start..<end]), to: &headers)
                start = next
            }
        }
        return headers
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

    private static func trimmed(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) -> String {
        var bytes = bytes
        while let first = bytes.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") { bytes.removeFirst() }
        while let last = bytes.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { bytes.removeLast() }
        return String(decoding: UnsafeBufferPointer(rebasing: bytes), as: UTF8.self)
    }
}
