import NIOCore

/// What goes upstream: everything already decided (URL, headers to send, body framing).
public struct UpstreamRequest: Sendable {
    public enum Body: Sendable, Equatable {
        case none
        /// A body of exactly this many bytes (sent with `Content-Length`).
        case known(Int64)
        /// A body of unknown length (sent chunked).
        case streamed
    }

    public var method: String
    public var url: String
    /// Header lines to send as they are; curl adds `Host` and the body framing.
    public var headers: [(name: String, value: String)]
    public var body: Body
    /// For a client's request (forwarded, or filling the cache), not the proxy's own exchange
    /// with the accounts service: stopped when the listener's shutdown grace period ends.
    public var servesClient: Bool

    public init(method: String, url: String, headers: [(name: String, value: String)], body: Body, servesClient: Bool = true) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.servesClient = servesClient
    }
}

/// Timeouts and TLS settings for upstream transfers.
public struct UpstreamConfiguration: Sendable, Equatable {
    public var connectTimeout: Duration
    /// Abort a transfer when no byte moved for this long.
    public var idleTimeout: Duration
    /// Abort a transfer that takes longer than this in all; zero means no limit.
    public var totalTimeout: Duration
    /// A PEM bundle of CA certificates; `nil` uses the system's.
    public var caBundle: String?
    /// The one public key the server may present (curl's `sha256//BASE64`). With it, the name
    /// the server's certificate carries is not checked against the URL's host: the key pins the
    /// server (the commands that dial the proxy by its loopback address use it).
    public var pinnedPublicKey: String?
    /// Maximum idle connections kept per upstream host.
    public var maxConnectionsPerHost: Int

    public init(
        connectTimeout: Duration = .seconds(5),
        idleTimeout: Duration = .seconds(30),
        totalTimeout: Duration = .seconds(120),
        caBundle: String? = nil,
        maxConnectionsPerHost: Int = 0
    ) {
        self.connectTimeout = connectTimeout
        self.idleTimeout = idleTimeout
        self.totalTimeout = totalTimeout
        self.caBundle = caBundle
        self.maxConnectionsPerHost = maxConnectionsPerHost
    }
}

/// Why a transfer failed before it completed.
public struct UpstreamError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable, CaseIterable {
        /// No connection could be made (refused, DNS, TLS handshake).
        case connect
        /// A timeout passed (connect, idle or total).
        case timeout
        /// The connection broke or the answer was malformed.
        case protocolError
        /// The transfer was cancelled by the proxy (client gone, replay, shutdown).
        case cancelled
        /// A whole answer outgrew what its caller holds in memory (a buffered exchange).
        case tooLarge
    }

    public var kind: Kind
    public var message: String
    /// A timeout while curl waited for request body bytes the client had not sent: the
    /// client's stall, not the upstream's.
    public var clientStall: ClientStall?
    /// The upstream's TLS certificate was refused (curl's `CURLE_PEER_FAILED_VERIFICATION`): not
    /// one the CA bundle vouches for, or not for that host. (`reload` reads it: a proxy serving
    /// a certificate its files no longer hold.)
    public var certificateRefused = false

    public enum ClientStall: Sendable, Equatable {
        /// curl's low-speed check (`spotify.idle_timeout`): none of the body came for that long.
        case idle
        /// curl's total timeout (`spotify.total_timeout`): the body had not all come by then.
        case total
    }

    public init(kind: Kind, message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { self.message }

    /// The transfer was stopped because the proxy stops, past `shutdown_grace`: its request may
    /// have reached the upstream.
    public static let shutdown = UpstreamError(kind: .cancelled, message: "the proxy is shutting down")
    /// The transfer never started because the proxy stops: nothing of it was sent.
    public static let notSent = UpstreamError(kind: .cancelled, message: "the proxy is shutting down; the request was not sent")
    /// libcurl could not make a handle for the transfer: nothing of it was sent.
    static let noHandle = UpstreamError(
        kind: .protocolError, message: "libcurl could not allocate a transfer (curl_easy_init failed: out of memory?); the request was not sent, retry")

    /// The status the proxy answers with when nothing was sent to the client yet.
    public var status: HTTPResponseStatusCode {
        switch self.kind {
        case .timeout: 504
        case .connect, .protocolError, .cancelled, .tooLarge: 502
        }
    }
}

public typealias HTTPResponseStatusCode = Int
