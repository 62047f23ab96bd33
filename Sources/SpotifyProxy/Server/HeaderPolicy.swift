import NIOHTTP1

/// Which headers cross the proxy, in each direction. Pure, so the rules are tested as tables.
public enum HeaderPolicy {
    /// RFC 9110 §7.6.1 hop-by-hop headers, plus the proxy-only ones.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
        "proxy-authorization", "proxy-authenticate",
    ]

    /// Set by libcurl from the transfer itself (Host, body framing, encodings it can decode),
    /// or replaced by the proxy (Authorization).
    static let setUpstream: Set<String> = ["host", "authorization", "content-length", "accept-encoding", "expect"]

    /// The client's headers as they go upstream: in order, byte for byte, minus hop-by-hop and
    /// what the proxy sets, with the client's `Authorization` always replaced by `token`.
    public static func upstreamHeaders(from headers: HTTPHeaders, token: String) -> [(name: String, value: String)] {
        let dropped = Self.droppedNames(headers).union(Self.setUpstream)
        var out: [(name: String, value: String)] = []
        out.reserveCapacity(headers.count + 1)
        for (name, value) in headers where !dropped.contains(name.lowercased()) {
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
        var names = Set<String>()
        var connectionListed = Set<String>()
        var isJSON = false
        var encoded = false
        for (name, value) in headers {
            let lower = name.lowercased()
            names.insert(lower)
            switch lower {
            case "connection":
                for token in value.split(separator: ",") { connectionListed.insert(token.trimmingSpaces().lowercased()) }
            case "content-type":
                isJSON = value.lowercased().contains("json")
            case "content-encoding":
                encoded = encoded || value.trimmingSpaces().lowercased() != "identity"
            default:
                break
            }
        }
        let rewrite = rewriteLinks && isJSON
        var out = HTTPHeaders()
        for (name, value) in headers {
            let lower = name.lowercased()
            if Self.hopByHop.contains(lower) || connectionListed.contains(lower) { continue }
            if lower == "content-encoding" && encoded { continue }
            if lower == "content-length" && (encoded || rewrite) { continue }
            out.add(name: name, value: value)
        }
        return (out, ResponseFraming(rewrite: rewrite, isJSON: isJSON))
    }

    private static func droppedNames(_ headers: HTTPHeaders) -> Set<String> {
        var names = Self.hopByHop
        for value in headers["connection"] {
            for token in value.split(separator: ",") { names.insert(token.trimmingSpaces().lowercased()) }
        }
        return names
    }
}
