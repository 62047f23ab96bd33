import NIOCore
import NIOHTTP1

/// An answer the proxy makes by itself (its own endpoints, refusals, errors), whole in memory.
public struct LocalAnswer: Sendable, Equatable {
    public var status: Int
    /// Everything but connection management, which the connection decides.
    public var headers: HTTPHeaders
    public var body: ByteBuffer
    /// Counted in `/metrics`' request figures (every answer is logged; health checks, status
    /// reads and scrapes are not counted, so that the figures are the clients' traffic).
    public var counted: Bool
    /// The problem logged with it: the proxy's own 5xx say why.
    public var note: String?
    /// Made for a request that went to Spotify and failed there (not one that never left, for
    /// want of a token, say): its log line has the upstream time.
    public var failedUpstream = false

    public init(status: Int, headers: HTTPHeaders, body: ByteBuffer, counted: Bool, note: String? = nil) {
        self.status = status
        self.headers = headers
        self.body = body
        self.counted = counted
        self.note = note
    }

    /// An error in Spotify's shape.
    public init(_ error: SpotifyError) {
        self.init(
            status: error.status, headers: error.responseHeaders, body: error.body, counted: true,
            note: error.status >= 500 ? error.message : nil)
    }

    /// A 200 with a small JSON body, never cached.
    static func json(_ body: String) -> LocalAnswer {
        LocalAnswer(
            status: 200,
            headers: HTTPHeaders([("Content-Type", "application/json"), ("Content-Length", String(body.utf8.count)), ("Cache-Control", "no-store")]),
            body: ByteBuffer(string: body), counted: false)
    }
}

extension LocalAnswer {
    /// No token for the request: 401 naming the login when only a new one helps, else 503 with
    /// the time of the next attempt.
    static func noToken(_ unavailable: TokenUnavailable) -> LocalAnswer {
        if unavailable.needsLogin {
            // Only a new login helps: no Retry-After, and the message names the command.
            return LocalAnswer(SpotifyError(status: 401, message: unavailable.reason))
        }
        return LocalAnswer(
            SpotifyError(
                status: 503,
                message: "no Spotify access token available: \(unavailable.reason); retry later",
                headers: [("Retry-After", String(unavailable.retryAfterSeconds))]))
    }

    /// Spotify could not be reached, or did not answer in time: 502 or 504. The proxy's own
    /// shutdown is not the gateway's failure: 503, to retry when `method` is idempotent (RFC 9110
    /// §9.2.2); a POST or PATCH already sent may have taken effect, and is not said to be safe to
    /// send again. One never sent, or stopped before its body was sent whole (`bodyWhole` false:
    /// Spotify cannot have acted on half a request), is safe to send again, whatever its method.
    static func upstreamFailure(_ error: UpstreamError, method: HTTPMethod = .GET, bodyWhole: Bool = true) -> LocalAnswer {
        if error == .shutdown, !bodyWhole {
            return LocalAnswer(
                SpotifyError(
                    status: 503,
                    message: "the proxy is shutting down and stopped this request before its body was sent whole, so Spotify cannot have acted on it; retry it",
                    headers: [("Retry-After", "1")]))
        }
        if error == .shutdown, method == .POST || method == .PATCH {
            return LocalAnswer(
                SpotifyError(
                    status: 503,
                    message:
                        "the proxy is shutting down and stopped this \(method.rawValue) before Spotify answered; it may have reached Spotify, so check before sending it again"
                ))
        }
        if error == .shutdown {
            return LocalAnswer(
                SpotifyError(
                    status: 503, message: "the proxy is shutting down and stopped this request before Spotify answered; retry it",
                    headers: [("Retry-After", "1")]))
        }
        if error == .notSent {
            return LocalAnswer(
                SpotifyError(
                    status: 503, message: "the proxy is shutting down and did not send this request to Spotify; retry it",
                    headers: [("Retry-After", "1")]))
        }
        let message =
            switch error.kind {
            case .timeout: "the Spotify API did not answer in time (\(error.message)); retry later"
            // Reached, but the connection broke or the answer could not be read.
            case .protocolError: "the Spotify API's answer broke off or could not be read (\(error.message)); retry later"
            case .connect, .cancelled, .tooLarge: "the proxy could not reach the Spotify API (\(error.message)); retry later"
            }
        return .afterUpstream(SpotifyError(status: error.status, message: message))
    }

    /// The proxy's error about what Spotify answered (or failed to): logged with the upstream time.
    static func afterUpstream(_ error: SpotifyError) -> LocalAnswer {
        var answer = LocalAnswer(error)
        answer.failedUpstream = true
        return answer
    }
}
