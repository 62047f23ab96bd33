import NIOHTTP1

/// Which headers cross the proxy, in each direction. Pure, so the rules are tested as tables.
public enum HeaderPolicy {
    /// RFC 9110 §7.6.1 hop-by-hop headers, plus the proxy-only ones.
    static let hopByHop = NameSet([
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "proxy-authorization", "proxy-authenticate",
    ])

    /// Set by libcurl from the transfer itself (Host, body framing, encodings it can decode),
    /// replaced by the proxy (Authorization, which may carry the client's access key), or meant
    /// for the proxy alone (X-Spotify-User, X-Proxy-Key).
    static let setUpstream = NameSet(["host", "authorization", "content-length", "accept-encoding", "expect", "x-spotify-user", "x-proxy-key"])

    // These run for every request and every response: names are compared in place (ASCII
    // case folding on the UTF-8 bytes), without building lowercased copies; the name sets above
    // are built once.

    /// The client's headers as they go upstream: in order, byte for byte, minus hop-by-hop and
    /// what the proxy sets, with the client's `Authorization` always replaced by `token`.
    public static func upstreamHeaders(from headers: HTTPHeaders, token: String) -> [(name: String, value: String)] {
        var connectionListed: [String] = []
        for value in headers["connection"] { Self.addConnectionTokens(value, to: &connectionListed) }
        var out: [(name: String, value: String)] = []
        out.reserveCapacity(headers.count + 1)
        for (name, value) in headers {
            if Self.hopByHop.contains(name) || Self.setUpstream.contains(name) { continue }
            // The proxy's request id goes upstream whatever `Connection` lists: logged, forwarded, returned.
            if connectionListed.contains(where: { name.equalsIgnoringASCIICase($0) }), !name.equalsIgnoringASCIICase("x-request-id") { continue }
            out.append((name, value))
        }
        out.append(("Authorization", "Bearer \(token)"))
        return out
    }

    public struct ResponseFraming: Equatable, Sendable {
        /// The body must be streamed through the link rewriter.
        public var rewrite: Bool
        /// The body is JSON (what the tee reads).
        public var isJSON: Bool
    }

    /// The upstream's headers as they go to the client. libcurl has already decoded any
    /// `Content-Encoding`, so that header and a length that described the encoded body go.
    public static func clientHeaders(
        from headers: [(name: String, value: String)], rewriteLinks: Bool
    ) -> (HTTPHeaders, ResponseFraming) {
        var isJSON = false
        var encoded = false
        var connectionListed: [String] = []
        for (name, value) in headers {
            if name.equalsIgnoringASCIICase("content-type") {
                isJSON = value.containsIgnoringASCIICase("json")
            } else if name.equalsIgnoringASCIICase("content-encoding") {
                encoded = encoded || !value.trimmingSpaces().equalsIgnoringASCIICase("identity")
            } else if name.equalsIgnoringASCIICase("connection") {
                Self.addConnectionTokens(value, to: &connectionListed)
            }
        }
        let rewrite = rewriteLinks && isJSON
        var out = HTTPHeaders()
        // Room for what the proxy adds (`X-Request-Id`, perhaps `Connection: close`).
        out.reserveCapacity(headers.count + 2)
        for (name, value) in headers {
            if Self.hopByHop.contains(name) || connectionListed.contains(where: { name.equalsIgnoringASCIICase($0) }) { continue }
            if encoded && name.equalsIgnoringASCIICase("content-encoding") { continue }
            if (encoded || rewrite) && name.equalsIgnoringASCIICase("content-length") { continue }
            out.add(name: name, value: value)
        }
        return (out, ResponseFraming(rewrite: rewrite, isJSON: isJSON))
    }

    /// The header names a `Connection` header's value lists (they are hop-by-hop too), lowercased.
    /// The usual value, `keep-alive`, names a header that is hop-by-hop already: nothing is split
    /// or allocated for it (every answer of an HTTP/1.1 upstream such as nginx carries it).
    private static func addConnectionTokens(_ value: String, to tokens: inout [String]) {
        if value.equalsIgnoringASCIICase("keep-alive") { return }
        for token in value.split(separator: ",") { tokens.append(token.trimmingSpaces().lowercased()) }
    }
}

extension HeaderPolicy {
    /// Lowercase ASCII header names, looked up ignoring ASCII case. A name is ruled out by its
    /// length alone (one bit test) unless a name of the set has that length: most headers a
    /// request or an answer carries meet no comparison at all.
    struct NameSet: Sendable {
        let names: [String]
        /// Bit n is set when a name of the set is n bytes long.
        let lengths: UInt64

        init(_ names: [String]) {
            precondition(
                names.allSatisfy { $0.utf8.count < 64 && !$0.utf8.contains { (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains($0) } },
                "lowercase names under 64 bytes")
            self.names = names
            self.lengths = names.reduce(0) { $0 | (1 << UInt64($1.utf8.count)) }
        }

        func contains(_ name: String) -> Bool {
            // `equalsIgnoringASCIICase` compares byte counts first: the filter is exact.
            let count = name.utf8.count
            guard count < 64, self.lengths & (1 << UInt64(count)) != 0 else { return false }
            return self.names.contains { name.equalsIgnoringASCIICase($0) }
        }
    }
}

extension HTTPHeaders {
    /// `replaceOrAdd(name:value:)` that leaves the headers as they are when `name` is absent
    /// (the usual case) instead of rebuilding them: NIO's removal rewrites, and so copies
    /// shared, storage even when nothing matches.
    mutating func set(_ name: String, to value: String) {
        if self.contains(name: name) {
            self.replaceOrAdd(name: name, value: value)
        } else {
            self.add(name: name, value: value)
        }
    }
}

extension StringProtocol {
    /// Equal to `lowercase` (already lowercase ASCII) ignoring ASCII case; no allocation.
    func equalsIgnoringASCIICase(_ lowercase: String) -> Bool {
        self.utf8.equalsIgnoringASCIICase(lowercase)
    }

    /// Contains `lowercase` (already lowercase ASCII) ignoring ASCII case; no allocation.
    func containsIgnoringASCIICase(_ lowercase: String) -> Bool {
        self.utf8.containsIgnoringASCIICase(lowercase)
    }

    /// Without leading and trailing spaces and tabs.
    func trimmingSpaces() -> String {
        var slice = Substring(self)
        while let first = slice.first, first == " " || first == "\t" { slice.removeFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice.removeLast() }
        return String(slice)
    }
}

extension Collection<UInt8> {
    func equalsIgnoringASCIICase(_ lowercase: String) -> Bool {
        // Over contiguous bytes on both sides (every native String's UTF-8 view, and every
        // literal's): stepping a String's UTF-8 view by index cost more than the comparison on
        // the response path (each upstream header meets several).
        if let equal = self.withContiguousStorageIfAvailable({ bytes in lowercase.withUTF8Bytes { Self.equalIgnoringCase(bytes, $0) } }) {
            return equal
        }
        guard self.count == lowercase.utf8.count else { return false }
        var other = lowercase.utf8.makeIterator()
        for byte in self where byte.asciiLowercased != other.next() { return false }
        return true
    }

    private static func equalIgnoringCase(_ bytes: UnsafeBufferPointer<UInt8>, _ lowercase: UnsafeBufferPointer<UInt8>) -> Bool {
        guard bytes.count == lowercase.count else { return false }
        for index in 0..<bytes.count where bytes[index].asciiLowercased != lowercase[index] { return false }
        return true
    }

    fileprivate func containsIgnoringASCIICase(_ lowercase: String) -> Bool {
        // Over contiguous bytes (every native String's UTF-8 view): index arithmetic on a
        // generic collection cost more than the search itself on the request path.
        if let found = self.withContiguousStorageIfAvailable({ haystack in lowercase.withUTF8Bytes { Self.search(haystack, for: $0) } }) {
            return found
        }
        let haystack = Array(self)
        let needle = Array(lowercase.utf8)
        return haystack.withUnsafeBufferPointer { haystack in needle.withUnsafeBufferPointer { Self.search(haystack, for: $0) } }
    }

    private static func search(_ haystack: UnsafeBufferPointer<UInt8>, for needle: UnsafeBufferPointer<UInt8>) -> Bool {
        guard needle.count <= haystack.count else { return false }
        guard let first = needle.first else { return true }
        var start = 0
        while start <= haystack.count - needle.count {
            if haystack[start].asciiLowercased == first {
                var offset = 1
                while offset < needle.count, haystack[start + offset].asciiLowercased == needle[offset] { offset += 1 }
                if offset == needle.count { return true }
            }
            start += 1
        }
        return false
    }
}

extension UInt8 {
    fileprivate var asciiLowercased: UInt8 {
        self >= UInt8(ascii: "A") && self <= UInt8(ascii: "Z") ? self | 0x20 : self
    }
}
