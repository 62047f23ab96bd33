import NIOHTTP1

/// `server.max_header_bytes`, and the one `Host` header HTTP/1.1 requires: checked before
/// anything else looks at the request.
public struct HeaderLimitStage: RequestStage {
    let limits: RequestLimits

    public init(limits: RequestLimits) {
        self.limits = limits
    }

    public func decide(_ request: inout ProxyRequest) -> StageDecision {
        let head = request.head
        var headerBytes = head.uri.utf8.count
        var hosts = 0
        for (name, value) in head.headers {
            headerBytes += name.utf8.count + value.utf8.count + 4
            if name.utf8.count == 4, name.equalsIgnoringASCIICase("host") { hosts += 1 }
        }
        if headerBytes > self.limits.maxHeaderBytes {
            return .answer(
                LocalAnswer(
                    SpotifyError(
                        status: 431,
                        message: "request headers too large: \(headerBytes) bytes, the limit is \(self.limits.maxHeaderBytes) (server.max_header_bytes)")))
        }
        // RFC 9112 §3.2: an HTTP/1.1 request without a Host header, or with more than one, is refused.
        if head.version.major == 1, head.version.minor >= 1, hosts != 1 {
            let message =
                hosts == 0
                ? "the request has no Host header, which HTTP/1.1 requires: send one (Host: the proxy's host and port)"
                : "the request has \(hosts) Host headers; HTTP/1.1 allows exactly one: send one"
            return .answer(LocalAnswer(SpotifyError(status: 400, message: message)))
        }
        return .continue
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

    public func decide(_ request: inout ProxyRequest) -> StageDecision {
        let headers = request.head.headers
        let lengths = headers["content-length"]
        let chunked = headers["transfer-encoding"].contains { $0.lowercased().contains("chunked") }
        if lengths.count > 1 && Set(lengths).count > 1 || (chunked && !lengths.isEmpty) {
            return .answer(LocalAnswer(SpotifyError(status: 400, message: "conflicting Content-Length / Transfer-Encoding headers")))
        }
        if chunked {
            request.body = .streamed
        } else if let text = lengths.first {
            guard let length = Int64(text), length >= 0 else {
                return .answer(LocalAnswer(SpotifyError(status: 400, message: "invalid Content-Length")))
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
        request.expectContinue =
            request.body != .none && headers["expect"].contains(where: { $0.lowercased() == "100-continue" })
        return .continue
    }
}
