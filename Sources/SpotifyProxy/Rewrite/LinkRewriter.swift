import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Rewrites the values of the members that link to the Web API in Spotify's objects (`href`,
/// `next`, `previous`, and an audio features object's `track_href` and `analysis_url`: the spec's
/// "link to the Web API endpoint") that start with an upstream base URL
/// (`"href":"https://api.spotify.com/…`) to start with the proxy's base instead,
/// streaming: a match split across two chunks is held back until the next chunk decides it.
/// Those are where Spotify's bodies link to its API; any other string — text that mentions one,
/// or a playlist's name or description that is one — is a user's, and goes as it came (read
/// back and saved, a rewritten name would store the proxy's address at Spotify).
public struct LinkRewriter: Sendable {
    /// Spotify's bodies always link to this, whatever address the proxy reaches Spotify by.
    public static let spotifyBase = "https://api.spotify.com"

    /// The bases that links may start with (``spotifyBase`` and the configured `api_url`, which
    /// differ when Spotify is reached through a mirror, gateway or fake), prepared once.
    public struct Bases: Sendable {
        let patterns: [[UInt8]]
        /// The byte after the opening quote in any pattern (`h` for every `http` base).
        let secondBytes: [UInt8]
        /// The two bytes after the opening quote, when every pattern starts with the same ones
        /// (`ht` for `http` bases): then blocks of bytes are skipped sixteen at a time.
        let lead: (UInt8, UInt8)?

        public init(_ bases: [String]) {
            var patterns: [[UInt8]] = []
            for base in bases where !patterns.contains(Array("\"\(base)/".utf8)) {
                patterns.append(Array("\"\(base)/".utf8))
            }
            // Longest first: a link that starts with a longer base is that base's, and a partial
            // match of a longer base waits for the next chunk even where a shorter one matches.
            self.patterns = patterns.sorted { $0.count > $1.count }
            self.secondBytes = Array(Set(self.patterns.map { $0[1] }))
            let leads = Set(self.patterns.map { $0.count >= 3 ? [$0[1], $0[2]] : [] })
            self.lead = leads.count == 1 && leads.first!.count == 2 ? (leads.first![0], leads.first![1]) : nil
        }
    }

    private let patterns: [[UInt8]]
    private let secondBytes: [UInt8]
    private let lead: (UInt8, UInt8)?
    private let replacement: [UInt8]
    private var carry: [UInt8] = []
    /// The last bytes before the current chunk (`tailCount` of them, the last at the end): a
    /// link's member name may have come in an earlier chunk. Inline, so that a response's
    /// rewriter allocates nothing for it.
    private var tail = SIMD64<UInt8>()
    private var tailCount = 0
    /// The members whose values are links, as they end before the value: `href"`, …
    private static let linkMembers: [[UInt8]] = ["\"href\"", "\"next\"", "\"previous\"", "\"track_href\"", "\"analysis_url\""].map { Array($0.utf8) }

    public init(bases: Bases, proxyBase: String) {
        self.patterns = bases.patterns
        self.secondBytes = bases.secondBytes
        self.lead = bases.lead
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
        let count = bytes.count
        guard count > 0 else { return }
        var start = 0
        var index = 0
        while index < count {
            // Only a quote followed by a pattern's second byte (or ending the chunk) can start
            // a link: most quotes open a key or a value that is no link.
            guard let found = self.nextCandidate(in: bytes, from: index) else { break }
            index = found
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
            if let length = matched, !self.isLinkMember(before: index, in: bytes) {
                index += length
                continue
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
                self.keepTail(bytes, upTo: index)
                self.carry = Array(bytes[index..<count])
                return
            }
            index += 1
        }
        output.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[start..<count]))
        self.keepTail(bytes, upTo: count)
    }

    /// Keeps the last bytes before `end` for the next chunk's ``isLinkMember(before:in:)``.
    private mutating func keepTail(_ bytes: UnsafeRawBufferPointer, upTo end: Int) {
        let length = SIMD64<UInt8>.scalarCount
        if end >= length, let base = bytes.baseAddress {
            self.tail = base.loadUnaligned(fromByteOffset: end - length, as: SIMD64<UInt8>.self)
            self.tailCount = length
            return
        }
        // Shifted left by `end`, the chunk's bytes after what was kept.
        var kept = SIMD64<UInt8>()
        for index in 0..<length {
            let from = index + end
            kept[index] = from < length ? self.tail[from] : bytes[from - length]
        }
        self.tail = kept
        self.tailCount = min(length, self.tailCount + end)
    }

    /// Whether the string opening at `quote` is the value of a link member: before it, JSON
    /// whitespace, `:`, whitespace, and one of ``linkMembers``.
    private func isLinkMember(before quote: Int, in bytes: UnsafeRawBufferPointer) -> Bool {
        // Read backwards, through the chunk and then the tail.
        var offset = quote
        func previous() -> UInt8? {
            offset -= 1
            if offset >= 0 { return bytes[offset] }
            // offset -1 is the tail's last byte.
            return -offset <= self.tailCount ? self.tail[SIMD64<UInt8>.scalarCount + offset] : nil
        }
        func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 }
        var byte = previous()
        while let b = byte, isSpace(b) { byte = previous() }
        guard byte == UInt8(ascii: ":") else { return false }
        byte = previous()
        while let b = byte, isSpace(b) { byte = previous() }
        guard byte == UInt8(ascii: "\"") else { return false }
        let closing = offset
        member: for name in Self.linkMembers {
            offset = closing + 1
            for expected in name.reversed() {
                guard previous() == expected else { continue member }
            }
            return true
        }
        return false
    }

    /// The first index at or after `from` holding a quote that is followed by one of
    /// `secondBytes` or is the chunk's last byte. JSON has a quote every few bytes, so finding
    /// each with `memchr` cost more in calls than in scanning: when every pattern starts with the
    /// same two bytes after its quote, blocks of sixteen bytes holding no quote followed by them
    /// are skipped at once (a match, or a partial one at the chunk's end, needs those bytes).
    private func nextCandidate(in bytes: UnsafeRawBufferPointer, from: Int) -> Int? {
        let quote = UInt8(ascii: "\"")
        let count = bytes.count
        var index = from
        if let (second, third) = self.lead, let base = bytes.baseAddress {
            let quotes = SIMD16<UInt8>(repeating: quote)
            let seconds = SIMD16<UInt8>(repeating: second)
            let thirds = SIMD16<UInt8>(repeating: third)
            // The block and the two blocks one and two bytes later must fit.
            while index + 18 <= count {
                let block = base.loadUnaligned(fromByteOffset: index, as: SIMD16<UInt8>.self)
                let next = base.loadUnaligned(fromByteOffset: index + 1, as: SIMD16<UInt8>.self)
                let after = base.loadUnaligned(fromByteOffset: index + 2, as: SIMD16<UInt8>.self)
                if any((block .== quotes) .& (next .== seconds) .& (after .== thirds)) { break }
                index += 16
            }
        }
        while index < count {
            if bytes[index] == quote, index + 1 == count || self.secondBytes.contains(bytes[index + 1]) { return index }
            index += 1
        }
        return nil
    }

    private static func matches(_ bytes: UnsafeRawBufferPointer, at offset: Int, _ pattern: [UInt8], length: Int) -> Bool {
        for position in 0..<length where bytes[offset + position] != pattern[position] {
            return false
        }
        return true
    }
}
