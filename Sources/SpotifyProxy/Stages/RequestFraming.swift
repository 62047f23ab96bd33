import NIOHTTP1

/// `server.max_header_bytes`, and the one `Host` header HTTP/1.1 requires: checked before
/// anything else looks at the request.
public struct HeaderLimitStage: RequestStage {
    let limits: RequestLimits

    public init(limits: RequestLimits) {
        self.limits = limits
    }

    /// The size of `head` as a client sends it: its request line, its header lines (`name: value`)
    /// and the blank line, each ended by CRLF.
    public static func bytes(of head: HTTPRequestHead) -> Int {
        // "METHOD SP target SP HTTP/x.y CRLF", then "CRLF".
        var bytes = head.method.rawValue.utf8.count + 1 + head.uri.utf8.count + 1 + 8 + 2 + 2
        for (name, value) in head.headers { bytes += name.utf8.count + 2 + value.utf8.count + 2 }
        return bytes
    }

    public func decide(_ request: inout ProxyRequest) -> StageDecision {
        let head = request.head
        let headerBytes = request.receivedHeadBytes ?? Self.bytes(of: head)
        var hosts = 0
        var hostIsValid = true
        for (name, value) in head.headers {
            if name.utf8.count == 4, name.equalsIgnoringASCIICase("host") {
                hosts += 1
                hostIsValid = hostIsValid && Self.isAuthority(value)
            }
        }
        // The request line alone over the limit: the URL is what to shorten (414, as nginx).
        let lineBytes = head.method.rawValue.utf8.count + 1 + head.uri.utf8.count + 1 + 8 + 2
        if lineBytes > self.limits.maxHeaderBytes {
            return .answer(
                LocalAnswer(
                    SpotifyError(
                        status: 414,
                        message:
                            "request line too long: \(lineBytes) bytes, the limit for the whole head is \(self.limits.maxHeaderBytes) (server.max_header_bytes): send a shorter URL (fewer ids, a shorter q)"
                    )))
        }
        if headerBytes > self.limits.maxHeaderBytes {
            return .answer(
                LocalAnswer(
                    SpotifyError(
                        status: 431,
                        message:
                            "request head too large: \(headerBytes) bytes (request line and headers), the limit is \(self.limits.maxHeaderBytes) (server.max_header_bytes): send fewer or shorter headers, or a shorter URL")))
        }
        // RFC 9112 §3.2: an HTTP/1.1 request without a Host header, or with more than one, is refused.
        if head.version.major == 1, head.version.minor >= 1, hosts != 1 {
            let message =
                hosts == 0
                ? "the request has no Host header, which HTTP/1.1 requires: send one (Host: the proxy's host and port)"
                : "the request has \(hosts) Host headers; HTTP/1.1 allows exactly one: send one"
            return .answer(LocalAnswer(SpotifyError(status: 400, message: message)))
        }
        // RFC 9112 §3.2: a Host that is not a host and port (a path, user info, spaces) is refused.
        if !hostIsValid {
            return .answer(
                LocalAnswer(
                    SpotifyError(status: 400, message: "the Host header is not a host[:port]: send the host and port you reach the proxy at, such as Host: 127.0.0.1:8080")))
        }
        return .continue
    }

    /// RFC 3986's `host [ ":" port ]`: an IP literal in brackets, or a registered name or IPv4
    /// address (letters, digits, `-._~`, `%`-escapes, sub-delimiters), then a port of 1–65535 if
    /// there is a colon (stricter than RFC 3986's `*DIGIT`: an empty port or 0 names no server
    /// the links could point at). Empty is allowed (RFC 9112 §3.2, a target without an authority);
    /// whitespace around the value is not part of it.
    static func isAuthority(_ value: String) -> Bool {
        // On the value's contiguous bytes: every request with a `Host` passes here.
        value.withUTF8Bytes { Self.isAuthority(bytes: $0[...]) }
    }

    private static func isAuthority(bytes: Slice<UnsafeBufferPointer<UInt8>>) -> Bool {
        var bytes = bytes
        while let first = bytes.first, first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") { bytes.removeFirst() }
        while let last = bytes.last, last == UInt8(ascii: " ") || last == UInt8(ascii: "\t") { bytes.removeLast() }
        guard !bytes.isEmpty else { return true }
        let port: Slice<UnsafeBufferPointer<UInt8>>
        if bytes.first == UInt8(ascii: "[") {
            guard let close = bytes.firstIndex(of: UInt8(ascii: "]")) else { return false }
            let literal = bytes[bytes.index(after: bytes.startIndex)..<close]
            guard !literal.isEmpty, literal.allSatisfy(Self.isIPLiteralByte) else { return false }
            let rest = bytes[bytes.index(after: close)...]
            guard let colon = rest.first else { return true }
            guard colon == UInt8(ascii: ":") else { return false }
            port = rest.dropFirst()
        } else {
            let colon = bytes.firstIndex(of: UInt8(ascii: ":"))
            let name = bytes[..<(colon ?? bytes.endIndex)]
            guard !name.isEmpty, name.allSatisfy(Self.isRegisteredNameByte) else { return false }
            guard let colon else { return true }
            port = bytes[bytes.index(after: colon)...]
        }
        guard (1...5).contains(port.count), port.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return false }
        let number = port.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
        return (1...65535).contains(number)
    }

    /// An IPv6 (or IPv4-in-IPv6) literal's bytes: hex digits, colons, dots.
    private static func isIPLiteralByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"), UInt8(ascii: "A")...UInt8(ascii: "F"),
            UInt8(ascii: ":"), UInt8(ascii: "."):
            true
        default: false
        }
    }

    /// A registered name's (or IPv4 address's) bytes: unreserved, `%`-escapes, sub-delimiters.
    private static func isRegisteredNameByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "%"):
            true
        case UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="):
            true
        default: false
        }
    }
}

/// How the request body is framed (`Content-Length`, `Transfer-Encoding: chunked`, `Expect`),
/// and `server.max_body_bytes` for a declared length. Ambiguous framing is refused, never
/// forwarded: it is how requests are smuggled. A chunked body's limit is enforced as it streams
/// (``ProxyConnectionStateMachine``).
public struct BodyFramingStage: RequestStage {
    let limits: RequestLimits

    public init(limits: RequestLimits) {
        self.limits = limits
    }

    /// The request's transfer codings, in order, in lower case, from its `Transfer-Encoding`
    /// values (`values`: none without the header).
    static func transferCodings(_ values: [String]) -> [String] {
        values.flatMap { $0.split(separator: ",") }.map { $0.trimmingSpaces().lowercased() }.filter { !$0.isEmpty }
    }

    /// True when the body can be read (and dropped) after an early answer: its framing is
    /// `Content-Length`, one `chunked`, or none. A `Transfer-Encoding` that names no coding is
    /// not known: the parser reads no body, so what the client sent as one would be taken for
    /// the next request.
    static func framingIsKnown(_ headers: HTTPHeaders) -> Bool {
        let values = headers["transfer-encoding"]
        return values.isEmpty || Self.transferCodings(values) == ["chunked"]
    }

    public func decide(_ request: inout ProxyRequest) -> StageDecision {
        let headers = request.head.headers
        let lengths = headers["content-length"]
        let transferEncodings = headers["transfer-encoding"]
        let codings = Self.transferCodings(transferEncodings)
        // RFC 9112 §6.1: a transfer coding the proxy does not decode (gzip, deflate, …) is a 501;
        // forwarded, its bytes would reach Spotify as if they were the body itself.
        if let unknown = codings.first(where: { $0 != "chunked" }) {
            return .answer(
                LocalAnswer(
                    SpotifyError(
                        status: 501,
                        message: "Transfer-Encoding \(unknown) is not supported: send the body as it is, with Content-Length or Transfer-Encoding: chunked")))
        }
        // An empty one is not "no coding": a client that sends it may mean a body, which the
        // parser would take for the next request (smuggling), as with a coding it cannot decode.
        if codings.isEmpty, !transferEncodings.isEmpty {
            return .answer(
                LocalAnswer(
                    SpotifyError(status: 400, message: "Transfer-Encoding names no coding: send Transfer-Encoding: chunked with a chunked body, or Content-Length")))
        }
        let chunked = !codings.isEmpty
        if codings.count > 1 {
            return .answer(LocalAnswer(SpotifyError(status: 400, message: "Transfer-Encoding names chunked more than once: name it once")))
        }
        if lengths.count > 1 && Set(lengths).count > 1 || (chunked && !lengths.isEmpty) {
            return .answer(LocalAnswer(SpotifyError(status: 400, message: "conflicting Content-Length / Transfer-Encoding headers: send one Content-Length, or Transfer-Encoding: chunked alone")))
        }
        if chunked {
            request.body = .streamed
        } else if let text = lengths.first {
            guard let length = Int64(text), length >= 0 else {
                return .answer(LocalAnswer(SpotifyError(status: 400, message: "invalid Content-Length: send the body's length in bytes, as digits")))
            }
            guard length <= self.limits.maxBodyBytes else {
                return .answer(
                    LocalAnswer(
                        SpotifyError(
                            status: 413,
                            message: "request body too large: \(length) bytes, the limit is \(self.limits.maxBodyBytes) (server.max_body_bytes)")))
            }
            request.body = .known(length)
        }
        // No 1xx to a request whose body is empty: there is nothing to wait for.
        request.expectContinue = request.body != .none && request.body != .known(0) && Self.expectsContinue(request.head)
        return .continue
    }

    /// Whether the client asks to be told to go on before it sends a body (`Expect:
    /// 100-continue`). An HTTP/1.0 client's Expect is ignored, and no 1xx is sent to it (RFC
    /// 9110 §10.1.1, §15.2).
    static func expectsContinue(_ head: HTTPRequestHead) -> Bool {
        (head.version.major, head.version.minor) >= (1, 1) && head.headers["expect"].contains { $0.trimmingSpaces().lowercased() == "100-continue" }
    }

    /// Whether the client may still be holding back a body this head declares, until told to
    /// go on: a body that may never come after an early answer.
    static func mayHoldBodyBack(_ head: HTTPRequestHead) -> Bool {
        guard Self.expectsContinue(head) else { return false }
        if let length = head.headers.first(name: "content-length") { return length != "0" }
        return head.headers.contains(name: "transfer-encoding")
    }
}
