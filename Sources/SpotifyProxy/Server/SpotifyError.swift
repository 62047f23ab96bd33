import NIOCore
import NIOHTTP1

/// An answer made by the proxy itself, in Spotify's error shape:
/// `{"error":{"status":N,"message":"..."}}`.
public struct SpotifyError: Sendable, Equatable {
    public var status: Int
    public var message: String
    /// Extra headers such as `Retry-After` or `Allow`.
    public var headers: [(String, String)]
    /// Spotify's `reason` member (`QUOTA_EXCEEDED`, `PREMIUM_REQUIRED`), when there is one.
    public var reason: String?

    public init(status: Int, message: String, headers: [(String, String)] = [], reason: String? = nil) {
        self.status = status
        self.message = message
        self.headers = headers
        self.reason = reason
    }

    public static func == (lhs: SpotifyError, rhs: SpotifyError) -> Bool {
        lhs.status == rhs.status && lhs.message == rhs.message && lhs.reason == rhs.reason
            && lhs.headers.map { "\($0.0):\($0.1)" } == rhs.headers.map { "\($0.0):\($0.1)" }
    }

    public var body: ByteBuffer {
        let reason = self.reason.map { #","reason":"\#(Self.escape($0))""# } ?? ""
        return ByteBuffer(string: #"{"error":{"status":\#(self.status),"message":"\#(Self.escape(self.message))"\#(reason)}}"#)
    }

    /// Content type, length, cache policy and the extra headers; no connection management. A
    /// 401 (an access key, or a Spotify user, is missing) carries the challenge RFC 9110
    /// §15.5.2 requires of it. `Access-Control-Allow-Origin: *` as on Spotify's own errors
    /// (headers-observed.json): a browser app reads the proxy's message, not a network error.
    public var responseHeaders: HTTPHeaders {
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json; charset=utf-8")
        headers.add(name: "Content-Length", value: String(self.body.readableBytes))
        headers.add(name: "Cache-Control", value: "private, max-age=0")
        headers.add(name: "Access-Control-Allow-Origin", value: "*")
        for (name, value) in self.headers { headers.add(name: name, value: value) }
        if self.status == 401, !headers.contains(name: "www-authenticate") { headers.add(name: "WWW-Authenticate", value: Self.challenge) }
        return headers
    }

    /// The proxy's own `WWW-Authenticate` challenge.
    static let challenge = #"Bearer realm="spotify-proxy""#

    public func responseHead(version: HTTPVersion, keepAlive: Bool) -> HTTPResponseHead {
        var headers = self.responseHeaders
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        return HTTPResponseHead(version: version, status: HTTPResponseStatus(statusCode: self.status), headers: headers)
    }

    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
