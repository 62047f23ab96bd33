import Foundation
import NIOCore
import NIOHTTP1
import SpotifyCatalog
import Synchronization

/// Turns a whole upstream answer (from the cache, or held for a transform) into what the client
/// gets: links rewritten to the proxy's base for this request's `Host`, the simple search's
/// compaction, a conditional request's 304, the cache's `Cache-Status` and `Age`, and a length.
public struct AnswerRendering: Sendable {
    let bases: LinkRewriter.Bases
    let rewriteLinks: Bool
    let publicURL: String?
    let listenDescription: String
    /// `http` or `https` (a TLS listener).
    let scheme: String
    /// The upstream's names (`api.spotify.com`, `spotify.api_url`'s), lower-cased: never the
    /// proxy's, whatever a request's target or `Host` says.
    let upstreamAuthorities: [String]

    public init(settings: ListenerSettings) {
        self.scheme = settings.tls ? "https" : "http"
        self.bases = LinkRewriter.Bases([LinkRewriter.spotifyBase, settings.apiURL])
        self.upstreamAuthorities = [LinkRewriter.spotifyBase, settings.apiURL].map(ProxyConfiguration.authority(of:))
        self.rewriteLinks = settings.rewriteLinks
        self.publicURL = settings.publicURL
        self.listenDescription = settings.listenDescription
    }

    /// What links in bodies become for a client that reached the proxy with `head`'s `Host`.
    /// A name of the upstream's (an absolute-form target naming Spotify, as a client using the
    /// proxy as a forward proxy sends, and its `Host`) is not the proxy's: then its listen address.
    public func proxyBase(for head: HTTPRequestHead) -> String {
        if let url = self.publicURL { return url }
        return "\(self.scheme)://\(self.clientAuthority(of: head) ?? self.listenDescription)"
    }

    /// The authority ``proxyBase(for:)`` takes from `head`; nil when it takes none (the public
    /// URL, or the listen address).
    func clientAuthority(of head: HTTPRequestHead) -> String? {
        guard self.publicURL == nil, let host = Self.authority(of: head), Self.isPlainAuthority(host), !self.isUpstream(host) else { return nil }
        return host
    }

    /// Whether `host` names the upstream: one of its authorities, in any case, with the default
    /// port or a final dot written out (`api.spotify.com:443`, `api.spotify.com.`) or not.
    func isUpstream(_ host: String) -> Bool {
        var name = Substring(host)
        for port in [":443", ":80"] where name.hasSuffix(port) {
            name = name.dropLast(port.count)
            break
        }
        if name.hasSuffix(".") { name = name.dropLast() }
        return self.upstreamAuthorities.contains { name.equalsIgnoringASCIICase($0) }
    }

    /// The authority `head` names the proxy by: an absolute-form target's (RFC 9112 §3.2.2: then
    /// `Host` is ignored; the router has let through only the proxy's own), else `Host`.
    static func authority(of head: HTTPRequestHead) -> String? {
        guard head.uri.utf8.first != UInt8(ascii: "/"), let rest = RequestRouter.stripScheme(head.uri) else { return head.headers.first(name: "host") }
        return String(rest.prefix { $0 != "/" && $0 != "?" })
    }

    public func rewriter(for head: HTTPRequestHead) -> LinkRewriter {
        LinkRewriter(bases: self.bases, proxyBase: self.proxyBase(for: head))
    }

    /// `answer` as the client of `head` gets it. `cache` adds `Cache-Status` (and `Age` for a
    /// stored answer); `memo` keeps a stored answer's rewritten body, so that a hit from a client
    /// of the same base neither rewrites nor copies it.
    public func render(
        _ answer: UpstreamAnswer, for head: HTTPRequestHead, transform: ResponseTransform?, cache: (status: CacheStatus, age: Int?)? = nil,
        memo: RenderedBodies? = nil
    ) -> LocalAnswer {
        var status = answer.status
        var headers = answer.headers
        var body: ByteBuffer
        if let transform {
            let (transformedStatus, transformedHeaders, transformed) = transform.apply(status: status, headers: headers, body: answer.body)
            (status, headers) = (transformedStatus, transformedHeaders)
            // A page in another shape keeps Spotify's links, rewritten as any answer's.
            body =
                transform.keepsLinks && self.rewriteLinks && headers.first(name: "content-type")?.containsIgnoringASCIICase("json") == true
                ? self.rewritten(transformed, base: self.proxyBase(for: head)) : ByteBuffer(bytes: transformed)
        } else if self.rewriteLinks, headers.first(name: "content-type")?.containsIgnoringASCIICase("json") == true {
            let base = self.proxyBase(for: head)
            body = memo?.body(for: base) { self.rewritten(answer.body, base: base) } ?? self.rewritten(answer.body, base: base)
        } else {
            body = memo?.body(for: "") { ByteBuffer(bytes: answer.body) } ?? ByteBuffer(bytes: answer.body)
        }
        if let cache {
            headers.set("Cache-Status", to: cache.status.description)
            if let age = cache.age { headers.set("Age", to: String(age)) }
        }
        if status == 200, head.method == .GET || head.method == .HEAD, Self.matches(headers.first(name: "etag"), clientTags: head.headers) {
            // The client holds this very answer: 304, with the validators and cache fields only.
            status = 304
            body = ByteBuffer()
            for name in ["content-type", "content-length"] { headers.remove(name: name) }
        }
        if Self.carriesBody(status) {
            headers.set("Content-Length", to: String(body.readableBytes))
        } else {
            headers.remove(name: "Content-Length")
            body = ByteBuffer()
        }
        return LocalAnswer(status: status, headers: headers, body: body, counted: true)
    }

    private func rewritten(_ body: [UInt8], base: String) -> ByteBuffer {
        var rewriter = LinkRewriter(bases: self.bases, proxyBase: base)
        var out = ByteBuffer()
        out.reserveCapacity(body.count + 256)
        rewriter.rewrite(ByteBuffer(bytes: body), into: &out)
        rewriter.finish(into: &out)
        return out
    }

    /// The client's `If-None-Match` (or tekore's `ETag` request header, which it sends in its
    /// place) names `etag`, or is `*`, which any current answer matches, with an entity tag or
    /// without; weak comparison (RFC 9110 §13.1.2).
    static func matches(_ etag: String?, clientTags headers: HTTPHeaders) -> Bool {
        let tags = (headers["if-none-match"] + headers["etag"]).flatMap { $0.split(separator: ",") }.map { Self.opaque($0) }
        guard !tags.isEmpty else { return false }
        return tags.contains("*") || etag.map { tags.contains(Self.opaque(Substring($0))) } ?? false
    }

    private static func opaque(_ tag: Substring) -> String {
        let trimmed = tag.trimmingSpaces()
        return trimmed.hasPrefix("W/") ? String(trimmed.dropFirst(2)) : trimmed
    }

    /// Only host[:port] characters, so a hostile `Host` cannot inject anything into a body.
    static func isPlainAuthority(_ host: String) -> Bool {
        !host.isEmpty && host.utf8.count < 256
            && host.utf8.allSatisfy { byte in
                (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                    || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
                    || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-") || byte == UInt8(ascii: ":")
                    || byte == UInt8(ascii: "[") || byte == UInt8(ascii: "]")
            }
    }

    /// 1xx, 204 and 304 carry no body and no length of one (RFC 9110 §8.6).
    static func carriesBody(_ status: Int) -> Bool {
        status >= 200 && status != 204 && status != 304
    }
}

/// A stored answer's body as last rendered, for the base it was rendered for: most hits come
/// from clients that name the proxy the same way, and then share these bytes.
public final class RenderedBodies: Sendable {
    private let slot = Mutex<(base: String, body: ByteBuffer)?>(nil)

    public init() {}

    func body(for base: String, render: () -> ByteBuffer) -> ByteBuffer {
        if let kept = self.slot.withLock({ $0 }), kept.base == base { return kept.body }
        let body = render()
        self.slot.withLock { $0 = (base, body) }
        return body
    }
}

extension ResponseTransform {
    /// The transformed answer still carries Spotify's links (to rewrite to the proxy).
    var keepsLinks: Bool {
        switch self {
        case .simpleSearch: false
        case .playlistTracks, .refusal: true
        }
    }

    /// Whether an answer of `status` is held whole to be transformed. Any other goes to the
    /// client streaming, as an untransformed answer does: an error of the search, a playlist's
    /// 304, a removed endpoint's success (an app that still has it) does not wait for its end.
    func holdsAnswer(status: Int) -> Bool {
        switch self {
        case .simpleSearch, .playlistTracks: status == 200
        // Spotify's refusals: 403 "Forbidden" or "Insufficient client scope", or for the 2024
        // removals 404 "Not Found" (``Removal``).
        case .refusal: status == 403 || status == 404
        }
    }

    /// The 502's message when the answer to transform is larger than the proxy holds.
    var overflowMessage: String {
        switch self {
        case .simpleSearch: "Spotify's answer was too large to turn into a simple list; ask for a smaller limit"
        case .playlistTracks: "Spotify's page of the playlist's items was too large to turn into its tracks; ask for a smaller limit"
        case .refusal: "Spotify's refusal was too large to read; try again"
        }
    }

    /// Spotify's answer made into the transformed one: a 200 JSON search becomes the compact
    /// list, a 200 search that is not JSON a 502 (the client asked for the compact list, never
    /// for Spotify's body); anything else (an error, a playlist page that is not JSON) goes to
    /// the client as Spotify sent it.
    func apply(status: Int, headers: HTTPHeaders, body: [UInt8]) -> (Int, HTTPHeaders, [UInt8]) {
        switch self {
        case .simpleSearch(let kind, let query):
            guard status == 200 else { return (status, headers, body) }
            guard let value = try? JSONValue.parse(Data(body)) else {
                let error = SpotifyError(
                    status: 502,
                    message: "Spotify answered the search with \(body.count) bytes that are not JSON the proxy can read, so there is no list to make; try again (GET /v1/search shows Spotify's answer as it is)")
                var replaced = error.responseHeaders
                // The held head's `Connection` (hop-by-hop, the proxy's own) still holds.
                for connection in headers["connection"] { replaced.add(name: "Connection", value: connection) }
                return (error.status, replaced, Array(error.body.readableBytesView))
            }
            var headers = headers
            headers.replaceOrAdd(name: "Content-Type", value: "application/json; charset=utf-8")
            // The compact list is the proxy's: Spotify's validators do not describe it.
            headers.remove(name: "ETag")
            return (status, headers, SimpleSearchStage.compact(value, kind: kind, query: query))
        case .playlistTracks:
            // Spotify renamed each entry's `track` to `item` there (facts sheet: the February 2026
            // migration guide); its links go on to /tracks, where this turns the next page too.
            guard status == 200, case .object(var page)? = try? JSONValue.parse(Data(body)) else { return (status, headers, body) }
            if case .array(let entries)? = page["items"] {
                page["items"] = .array(
                    entries.map { entry in
                        guard case .object(var fields) = entry, fields["track"] == nil, let item = fields.removeValue(forKey: "item") else { return entry }
                        fields["track"] = item
                        return .object(fields)
                    })
            }
            for key in ["href", "next", "previous"] {
                if case .string(let link)? = page[key] { page[key] = .string(RemovedEndpoint.tracksLink(link)) }
            }
            var headers = headers
            headers.replaceOrAdd(name: "Content-Type", value: "application/json; charset=utf-8")
            headers.remove(name: "ETag")
            // Sorted: the same page each time (Spotify's paging objects list their keys so too).
            return (status, headers, JSONValue.object(page).serializedBytes(sortedKeys: true))
        case .refusal:
            return (status, headers, body)
        }
    }
}
