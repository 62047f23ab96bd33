import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Rewrites JSON string values that start with an upstream base URL (`"https://api.spotify.com/…`)
/// to start with the proxy's base instead, streaming: a match split across two chunks is held
/// back until the next chunk decides it. Anchoring on the opening quote limits the rewrite to
/// values that *are* API links (`href`, `next`, `previous`), never text that merely mentions one.
public struct LinkRewriter: Sendable {
    /// Spotify's bodies always link to this, whatever address the proxy reaches Spotify by.
    public static let spotifyBase = "https://api.spotify.com"

    /// The bases that links may start with (``spotifyBase`` and the configured `api_url`, which
    /// differ when Spotify is reached through a mirror, gateway or fake), prepared once.
    public struct Bases: Sendable {
        let patterns: [[UInt8]]
        /// The byte after the opening quote in any pattern (`h` for every `http` base).
        let secondBytes: [UInt8]

        public init(_ bases: [String]) {
            var patterns: [[UInt8]] = []
            for base in bases where !patterns.contains(Array("\"\(base)/".utf8)) {
                patterns.append(Array("\"\(base)/".utf8))
            }
            // Longest first: a link that starts with a longer base is that base's, and a partial
            // match of a longer base waits for the next chunk even where a shorter one matches.
            self.patterns = patterns.sorted { $0.count > $1.count }
            self.secondBytes = Array(Set(self.patterns.map { $0[1] }))
        }
    }

    private let patterns: [[UInt8]]
    private let secondBytes: [UInt8]
    private let replacement: [UInt8]
    private var carry: [UInt8] = []

    public init(bases: Bases, proxyBase: String) {
        self.patterns = bases.patterns
        self.secondBytes = bases.secondBytes
        self.replacement = Array("\"\(proxyBase)/".utf8)
    }

    public init(upstreamBases: [String], proxyBase: String) {
        self.init(bases: Bases(upstreamBases), proxyBase: proxyBase)
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

    /// A partial match is held back: ``finish(into:)`` has bytes to write.
    public var holdsBytes: Bool { !self.carry.isEmpty }

    /// Flushes a held-back partial match at the end of the body.
    public mutating func finish(into output: inout ByteBuffer) {
        output.writeBytes(self.carry)
        self.carry = []
    }

    private mutating func scan(_ bytes: UnsafeRawBufferPointer, into output: inout ByteBuffer) {
        let quote = UInt8(ascii: "\"")
        let count = bytes.count
        guard count > 0 else { return }
        var start = 0
        var index = 0
        let base = bytes.baseAddress!
        while index < count {
            // Quotes are found with memchr; most open a key or a value that is no link, and
            // the byte after the quote rules those out before any pattern is compared.
            guard let found = memchr(base + index, Int32(quote), count - index) else { break }
            index = base.distance(to: UnsafeRawPointer(found))
            if index + 1 < count, !self.secondBytes.contains(bytes[index + 1]) {
                index += 1
                continue
            }
            let available = count - index
            var partial = false
            var matched: Int?
            for pattern in self.patterns {
                if available >= pattern.count {
                    if Self.matches(bytes, at: index, pattern, length: pattern.count) {
                        matched = pattern.count
                        break
                    }
                } else if Self.matches(bytes, at: index, pattern, length: available) {
                    partial = true
                    break
                }
            }
            if let length = matched {
                output.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
                output.writeBytes(self.replacement)
                index += length
                start = index
                continue
            }
            if partial {
                // A possible match runs off the end: decide with the next chunk.
                output.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
                self.carry = Array(bytes[index..<count])
                return
            }
            index += 1
        }
        output.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[start..<count]))
    }

    private static func matches(_ bytes: UnsafeRawBufferPointer, at offset: Int, _ pattern: [UInt8], length: Int) -> Bool {
        for position in 0..<length where bytes[offset + position] != pattern[position] {
            return false
        }
        return true
    }
}
