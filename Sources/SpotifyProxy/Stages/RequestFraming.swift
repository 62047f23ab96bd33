import NIOHTTP1

/// `server.max_header_bytes`: checked before anything else looks at the request.
public struct HeaderLimitStage: RequestStage {
    let limits: RequestLimits

    public init(limits: RequestLimits) {
        self.limits = limits
    }

    public func decide(_ request: inout ProxyRequest) -> StageDecision {
        let head = request.head
        let headerBytes = head.uri.utf8.count + head.headers.reduce(0) { $0 + $1.name.utf8.count + $1.value.utf8.count + 4 }
        guard headerBytes > self.limits.maxHeaderBytes else { return .continue }
        return .answer(
            LocalAnswer(
                SpotifyError(
                    status: 431,
                    message: "request headers too large: \(headerBytes) bytes, the limit is \(self.limits.maxHeaderBytes) (server.max_header_bytes)")))
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
