import NIOCore

/// Rewrites JSON string values that start with the upstream's base URL (`"https://api.spotify.com/…`)
/// to start with the proxy's base instead, streaming: a match split across two chunks is held
/// back until the next chunk decides it. Anchoring on the opening quote limits the rewrite to
/// values that *are* API links (`href`, `next`, `previous`), never text that merely mentions one.
public struct LinkRewriter: Sendable {
    private let pattern: [UInt8]
    private let replacement: [UInt8]
    private var carry: [UInt8] = []

    public init(upstreamBase: String, proxyBase: String) {
        self.pattern = Array("\"\(upstreamBase)/".utf8)
        self.replacement = Array("\"\(proxyBase)/".utf8)
    }

    /// Rewrites `input`, appending to `output` everything that can be decided now.
    public mutating func rewrite(_ input: ByteBuffer, into output: inout ByteBuffer) {
        if self.carry.isEmpty {
            input.withUnsafeReadableBytes { self.scan($0, into: &output) }
        } else {
            var joined = self.carry
            self.carry = []
            joined.append(contentsOf: input.readableBytesView)
            joined.withUnsafeBytes { self.scan($0, into: &output) }
        }
    }

    /// Flushes a held-back partial match at the end of the body.
    public mutating func finish(into output: inout ByteBuffer) {
        output.writeBytes(self.carry)
        self.carry = []
    }

    private mutating func scan(_ bytes: UnsafeRawBufferPointer, into output: inout ByteBuffer) {
        let quote = UInt8(ascii: "\"")
        let count = bytes.count
        var start = 0
        var index = 0
        while index < count {
            guard bytes[index] == quote else {
                index += 1
                continue
            }
            let available = count - index
            if available >= self.pattern.count {
                if self.matches(bytes, at: index, length: self.pattern.count) {
                    output.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
                    output.writeBytes(self.replacement)
                    index += self.pattern.count
                    start = index
                    continue
                }
            } else if self.matches(bytes, at: index, length: available) {
                // A possible match runs off the end: decide with the next chunk.
                output.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
                self.carry = Array(bytes[index..<count])
                return
            }
            index += 1
        }
        output.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[start..<count]))
    }

    private func matches(_ bytes: UnsafeRawBufferPointer, at offset: Int, length: Int) -> Bool {
        for position in 0..<length where bytes[offset + position] != self.pattern[position] {
            return false
        }
        return true
    }
}
