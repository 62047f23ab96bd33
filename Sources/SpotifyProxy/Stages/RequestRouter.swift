import NIOHTTP1

/// Decides, from the request line and `Host` alone, what the proxy does with a request.
/// Pure: the open-proxy and traversal rules are tested as a table.
public enum RequestRouter {
    public enum Route: Equatable, Sendable {
        case healthz
        case readyz
        /// Prometheus' text format.
        case metrics
        /// `/simple/search`, answered from Spotify's search.
        case simpleSearch
        /// `POST /admin/cache/purge[?prefix=…]`.
        case cachePurge
        /// `GET /admin/status`: what `spotify-proxy status` prints.
        case status
        /// Forward upstream; `uri` is the origin-form target, byte for byte as received.
        case forward(uri: String)
        case reject(SpotifyError)
    }

    /// The proxy's own paths and the methods each takes.
    static let ownPathMethods = [
        "/healthz": "GET, HEAD", "/readyz": "GET, HEAD", "/metrics": "GET, HEAD", "/simple/search": "GET, HEAD", "/admin/status": "GET, HEAD",
        "/admin/cache/purge": "POST",
    ]

    /// The methods the Spotify Web API is sent (an `Allow` header's value).
    public static let allowedMethods = "GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS"

    /// `ownAuthorities` are the host[:port] names an absolute-form target may carry: the
    /// upstream's, the configured public URL's and the listener's own
    /// (``ProxyConfiguration/ownAuthorities``). The `Host` header never counts: the client
    /// chooses it.
    public static func route(method: HTTPMethod, uri: String, ownAuthorities: Set<String>) -> Route {
        if method == .CONNECT || method == .TRACE {
            // On one of the proxy's own paths, the methods that path takes.
            let allowed = Self.ownPathMethods[String(uri.pathWithoutQuery)] ?? Self.allowedMethods
            let why =
                method == .CONNECT
                ? "CONNECT is not supported: this is a reverse proxy for the Spotify Web API, not a forward proxy. Send requests like GET /v1/artists/{id} to it directly"
                // A TRACE is echoed back whole, with the token the proxy would add to it.
                : "TRACE is not supported: the Spotify Web API does not answer it, and the proxy does not echo requests. Send \(allowed)"
            return .reject(SpotifyError(status: 405, message: why, headers: [("Allow", allowed)]))
        }
        var target = uri
        // Origin-form ("/v1/...") is what clients send; only anything else can carry a scheme.
        if uri.utf8.first != UInt8(ascii: "/"), let authorityAndPath = Self.stripScheme(uri) {
            let authority = String(authorityAndPath.prefix { $0 != "/" && $0 != "?" })
            // RFC 9110 §4.2.1: an http URI with an empty host is invalid, and is refused.
            guard !authority.isEmpty, authority.first != ":" else {
                return .reject(
                    SpotifyError(status: 400, message: "the request target names no host after its scheme: send the path alone, such as /v1/artists/{id}"))
            }
            // RFC 9110 §4.2.4: userinfo in an http(s) URI is an error. It is not repeated back.
            guard !authority.contains("@") else {
                return .reject(
                    SpotifyError(
                        status: 400,
                        message: "the request target carries user information (user:password@): credentials do not belong in a URL, and the proxy adds Spotify's; send the path alone, such as /v1/artists/{id}"))
            }
            guard ownAuthorities.contains(authority.lowercased()) else {
                return .reject(
                    SpotifyError(
                        status: 403,
                        message: "absolute-form request for \(authority) refused: this proxy only forwards to the Spotify Web API and is not an open proxy"))
            }
            target = String(authorityAndPath.dropFirst(authority.count))
            if target.isEmpty || target.first == "?" { target = "/" + target }
        }
        guard target.utf8.first == UInt8(ascii: "/") else {
            return .reject(SpotifyError(status: 400, message: "the request target must be a path such as /v1/search?q=..."))
        }
        let path = target.pathWithoutQuery
        // Compared as bytes first: every request passes here, and none of the proxy's own paths is below /v1.
        guard path.hasUTF8Prefix("/v1/") || path == "/v1" else {
            if method == .GET || method == .HEAD {
                if path == "/healthz" { return .healthz }
                if path == "/readyz" { return .readyz }
                if path == "/metrics" { return .metrics }
                if path == "/simple/search" { return .simpleSearch }
                if path == "/admin/status" { return .status }
            }
            if method == .POST, path == "/admin/cache/purge" { return .cachePurge }
            // One of the proxy's own paths with another method: which ones it takes (RFC 9110 §15.5.6).
            if let allowed = Self.ownPathMethods[String(path)] {
                return .reject(
                    SpotifyError(status: 405, message: "\(path) takes \(allowed) only, not \(method.rawValue)", headers: [("Allow", allowed)]))
            }
            return .reject(
                SpotifyError(
                    status: 404,
                    message: "no such path: the proxy forwards Spotify Web API paths under /v1/ (e.g. /v1/search?q=abba&type=artist); /simple/search?q=NAME&type=artist|album|track|song searches simply; /healthz, /readyz, /metrics and /admin/status report its state; POST /admin/cache/purge[?prefix=/v1/...] empties the cache"))
        }
        if let problem = Self.traversalProblem(in: path) {
            return .reject(SpotifyError(status: 400, message: problem))
        }
        return .forward(uri: target)
    }

    static func stripScheme(_ uri: String) -> Substring? {
        for scheme in ["http://", "https://"] where uri.utf8.count >= scheme.utf8.count {
            if uri.prefix(scheme.count).lowercased() == scheme { return uri.dropFirst(scheme.count) }
        }
        return nil
    }

    /// Dot segments (plain or percent-encoded) and NUL bytes would let a path leave `/v1/`
    /// upstream, or mean different things to different parsers: refused rather than normalised.
    static func traversalProblem(in path: Substring) -> String? {
        // Without '.', '%' or NUL no segment can be (or decode to) a dot segment or NUL.
        if !path.withUTF8Bytes({ $0.contains { $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "%") || $0 == 0 } }) { return nil }
        for segment in path.split(separator: "/", omittingEmptySubsequences: false) {
            let decoded = Self.percentDecoded(segment)
            if decoded.contains(0) {
                return "the path contains a NUL byte (%00): send the path without it (no Spotify id or path holds one)"
            }
            if decoded == Array(".".utf8) || decoded == Array("..".utf8) {
                return "the path contains a dot segment (. or ..): send the path without it"
            }
            if decoded.contains(UInt8(ascii: "/")) || decoded.contains(UInt8(ascii: "\\")),
                String(decoding: decoded, as: UTF8.self).split(whereSeparator: { $0 == "/" || $0 == "\\" })
                    .contains(where: { $0 == ".." || $0 == "." })
            {
                return "the path contains an encoded dot segment: send the path without it"
            }
        }
        return nil
    }

    private static func percentDecoded(_ segment: Substring) -> [UInt8] {
        var out: [UInt8] = []
        var bytes = segment.utf8[...]
        while let byte = bytes.popFirst() {
            if byte == UInt8(ascii: "%"), bytes.count >= 2,
                let value = UInt8(String(decoding: bytes.prefix(2), as: UTF8.self), radix: 16)
            {
                out.append(value)
                bytes = bytes.dropFirst(2)
            } else {
                out.append(byte)
            }
        }
        return out
    }
}

extension String {
    /// Origin form (`/v1/...`), not a network-path reference (`//host/...`).
    var isOriginForm: Bool {
        var bytes = self.utf8.makeIterator()
        return bytes.next() == UInt8(ascii: "/") && bytes.next() != UInt8(ascii: "/")
    }

    /// A request target as logged: without its query; and a target in any other form than
    /// origin form (absolute `http://user:password@host/...`, a CONNECT's `user:password@host:443`,
    /// `//user@host/...`), which is refused but still logged, without anything up to its last
    /// `@`: a password may hold `@`, `/` or `?`, so no parse of the authority is trusted. Its
    /// scheme and slashes are kept (`http://host/...`).
    var loggedPath: Substring {
        guard !self.isOriginForm, let at = self.lastIndex(of: "@") else { return self.pathWithoutQuery }
        let kept = self[..<Self.schemeAndSlashesEnd(self)]
        let rest = self[self.index(after: at)...]
        let redacted = (kept.endIndex <= at ? String(kept) : "") + rest
        return redacted.pathWithoutQuery
    }

    /// Where `target`'s leading `scheme:` and slashes (or its leading slashes) end: a scheme
    /// counts only when a `/` follows its colon (`alice:pw@host` has none).
    private static func schemeAndSlashesEnd(_ target: String) -> String.Index {
        var index = target.startIndex
        if let first = target.first, first.isASCII, first.isLetter {
            var scan = target.index(after: index)
            while scan < target.endIndex, let c = target[scan].asciiValue,
                (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
                    || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "+") || c == UInt8(ascii: "-") || c == UInt8(ascii: ".")
            {
                scan = target.index(after: scan)
            }
            guard scan < target.endIndex, target[scan] == ":", target.index(after: scan) < target.endIndex,
                target[target.index(after: scan)] == "/"
            else { return target.startIndex }
            index = target.index(after: scan)
        }
        while index < target.endIndex, target[index] == "/" { index = target.index(after: index) }
        return index
    }

    /// A request target without its query. Searched as bytes: `prefix(while:)` on the string
    /// walks grapheme clusters (1.5% of a forwarded request's CPU).
    var pathWithoutQuery: Substring {
        guard let mark = self.utf8.firstIndex(of: UInt8(ascii: "?")) else { return self[...] }
        return self[..<mark]
    }
}
