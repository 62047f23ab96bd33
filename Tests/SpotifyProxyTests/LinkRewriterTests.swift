import FakeSpotify
import Foundation
import NIOCore
import NIOHTTP1
import SpotifyProxy
import Testing

@Suite("Link rewriter")
struct LinkRewriterTests {
    static let upstream = "https://api.spotify.com"
    static let proxy = "http://127.0.0.1:8080"

    func rewrite(_ chunks: [String], upstreamBases: [String] = [Self.upstream]) -> String {
        var rewriter = LinkRewriter(upstreamBases: upstreamBases, proxyBase: Self.proxy)
        var out = ByteBuffer()
        for chunk in chunks { rewriter.rewrite(ByteBuffer(string: chunk), into: &out) }
        rewriter.finish(into: &out)
        return String(buffer: out)
    }

    @Test("links move to the authority the client named the proxy by: Host, or an absolute-form target's (whose Host is ignored, RFC 9112 §3.2.2); public_url over both")
    func baseFromTheRequest() {
        var configuration = ProxyConfiguration()
        let rendering = AnswerRendering(settings: ListenerSettings(configuration))
        let origin = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/v1/artists/x", headers: ["Host": "proxy.test:8080"])
        #expect(rendering.proxyBase(for: origin) == "http://proxy.test:8080")
        let absolute = HTTPRequestHead(version: .http1_1, method: .GET, uri: "http://127.0.0.1:8080/v1/artists/x?market=SE", headers: ["Host": "example.com"])
        #expect(rendering.proxyBase(for: absolute) == "http://127.0.0.1:8080")
        // Spotify's own name (a client using the proxy as a forward proxy), in the target or in
        // Host, or the upstream's: links would leave the proxy; the listen address instead.
        var mirrored = configuration
        mirrored.apiURL = "http://127.0.0.1:18301"
        let upstreamNamed = AnswerRendering(settings: ListenerSettings(mirrored))
        for (uri, host) in [
            ("http://127.0.0.1:18301/v1/artists/x", "127.0.0.1:18301"), ("http://API.spotify.com/v1/artists/x", "api.spotify.com"), ("/v1/artists/x", "api.spotify.com"),
            ("/v1/artists/x", "api.spotify.com:443"), ("/v1/artists/x", "api.spotify.com."), ("http://api.spotify.com.:80/v1/artists/x", "x"),
        ] {
            let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: ["Host": host])
            #expect(upstreamNamed.proxyBase(for: head) == "http://127.0.0.1:8080", "\(uri) Host \(host)")
        }
        configuration.publicURL = "https://proxy.example.test"
        #expect(AnswerRendering(settings: ListenerSettings(configuration)).proxyBase(for: absolute) == "https://proxy.example.test")
    }

    @Test("href, next and previous values move to the proxy; other URLs and mentions stay")
    func rewritesLinkValues() {
        let input = #"{"href":"https://api.spotify.com/v1/artists/x","next":"https://api.spotify.com/v1/a?offset=5&limit=5","previous":null,"external_urls":{"spotify":"https://open.spotify.com/artist/x"},"name":"see https://api.spotify.com/v1"}"#
        let expected = #"{"href":"http://127.0.0.1:8080/v1/artists/x","next":"http://127.0.0.1:8080/v1/a?offset=5&limit=5","previous":null,"external_urls":{"spotify":"https://open.spotify.com/artist/x"},"name":"see https://api.spotify.com/v1"}"#
        #expect(self.rewrite([input]) == expected)
    }

    @Test("a body split at every possible byte gives the same result as in one piece")
    func splitAnywhere() {
        let input = #"[{"href":"https://api.spotify.com/v1/x"},"https://api.spotify.co",{"previous" :\#n  "https://api.spotify.com/v1/y","name":"https://api.spotify.com/v1/z"}]"#
        let whole = self.rewrite([input])
        #expect(whole == #"[{"href":"http://127.0.0.1:8080/v1/x"},"https://api.spotify.co",{"previous" :\#n  "http://127.0.0.1:8080/v1/y","name":"https://api.spotify.com/v1/z"}]"#)
        let bytes = Array(input.utf8)
        for cut in 0...bytes.count {
            let parts = [String(decoding: bytes[..<cut], as: UTF8.self), String(decoding: bytes[cut...], as: UTF8.self)]
            #expect(self.rewrite(parts) == whole, "cut at \(cut)")
        }
        // And one byte at a time.
        #expect(self.rewrite(bytes.map { String(decoding: [$0], as: UTF8.self) }) == whole)
    }

    @Test("a user's text is not a link: a playlist's name or description that is one, an array's string, another member's value go as they came, so that saving what was read stores no proxy address")
    func userTextStays() {
        let input = #"{"name":"https://api.spotify.com/v1/playlists/abc","description":"https://api.spotify.com/v1/me","collaborative":false,"tags":["https://api.spotify.com/v1/x"],"myhref":"https://api.spotify.com/v1/y","href" : "https://api.spotify.com/v1/playlists/abc"}"#
        let expected = #"{"name":"https://api.spotify.com/v1/playlists/abc","description":"https://api.spotify.com/v1/me","collaborative":false,"tags":["https://api.spotify.com/v1/x"],"myhref":"https://api.spotify.com/v1/y","href" : "http://127.0.0.1:8080/v1/playlists/abc"}"#
        let bytes = Array(input.utf8)
        for cut in 0...bytes.count {
            let parts = [String(decoding: bytes[..<cut], as: UTF8.self), String(decoding: bytes[cut...], as: UTF8.self)]
            #expect(self.rewrite(parts) == expected, "cut at \(cut)")
        }
        #expect(self.rewrite(bytes.map { String(decoding: [$0], as: UTF8.self) }) == expected)
    }

    @Test("an audio features object's track_href and analysis_url are links too (official-openapi.yml's example)")
    func audioFeaturesLinks() {
        let input = #"{"analysis_url":"https://api.spotify.com/v1/audio-analysis/2takcwOaAZWiXQijPHIx7B","id":"2takcwOaAZWiXQijPHIx7B","track_href":"https://api.spotify.com/v1/tracks/2takcwOaAZWiXQijPHIx7B","type":"audio_features"}"#
        let expected = #"{"analysis_url":"http://127.0.0.1:8080/v1/audio-analysis/2takcwOaAZWiXQijPHIx7B","id":"2takcwOaAZWiXQijPHIx7B","track_href":"http://127.0.0.1:8080/v1/tracks/2takcwOaAZWiXQijPHIx7B","type":"audio_features"}"#
        #expect(self.rewrite([input]) == expected)
    }

    @Test("a partial match at the very end is flushed unchanged")
    func partialAtEnd() {
        #expect(self.rewrite([#"{"a":"https://api.spot"#]) == #"{"a":"https://api.spot"#)
    }

    @Test("Spotify's own links and the configured api_url's both move to the proxy, split anywhere")
    func twoBases() {
        let mirror = "http://10.1.2.3:9000/spotify"
        let bases = [Self.upstream, mirror]
        let input = #"{"href":"https://api.spotify.com/v1/albums/a/tracks?offset=0&limit=2","next":"http://10.1.2.3:9000/spotify/v1/albums/a/tracks?offset=2&limit=2","other":"http://10.1.2.3:9000/v1/x"}"#
        let expected = #"{"href":"http://127.0.0.1:8080/v1/albums/a/tracks?offset=0&limit=2","next":"http://127.0.0.1:8080/v1/albums/a/tracks?offset=2&limit=2","other":"http://10.1.2.3:9000/v1/x"}"#
        #expect(self.rewrite([input], upstreamBases: bases) == expected)
        let bytes = Array(input.utf8)
        for cut in 0...bytes.count {
            let parts = [String(decoding: bytes[..<cut], as: UTF8.self), String(decoding: bytes[cut...], as: UTF8.self)]
            #expect(self.rewrite(parts, upstreamBases: bases) == expected, "cut at \(cut)")
        }
    }

    @Test(
        "every recorded response comes out as replacing each quoted base would make it: whole, in chunks of many sizes, with bases that share their first bytes (skipped sixteen bytes at a time) and with one that does not",
        arguments: [[Self.upstream], [Self.upstream, "http://127.0.0.1:9"], [Self.upstream, "spotify-mirror:"]])
    func recordedResponses(bases: [String]) throws {
        var rewritten = 0
        for name in RecordedResponses.names {
            let text = String(decoding: try RecordedResponses.data(name), as: UTF8.self)
            // The rewriter's contract, done the slow way: `"<base>/` becomes `"<proxy>/` as the
            // value of a link member (no base here is a prefix of another).
            var expected = text
            for base in bases {
                let pattern = try NSRegularExpression(pattern: #"("(?:href|next|previous|track_href|analysis_url)"\s*:\s*)""# + NSRegularExpression.escapedPattern(for: base) + "/")
                expected = pattern.stringByReplacingMatches(
                    in: expected, range: NSRange(expected.startIndex..., in: expected), withTemplate: "$1\"" + NSRegularExpression.escapedTemplate(for: Self.proxy) + "/")
            }
            if expected != text { rewritten += 1 }
            let bytes = Array(text.utf8)
            for size in [bytes.count, 4096, 1000, 17, 16, 3] {
                var rewriter = LinkRewriter(upstreamBases: bases, proxyBase: Self.proxy)
                var out = ByteBuffer()
                for start in stride(from: 0, to: bytes.count, by: size) {
                    rewriter.rewrite(ByteBuffer(bytes: bytes[start..<min(start + size, bytes.count)]), into: &out)
                }
                rewriter.finish(into: &out)
                #expect(Array(out.readableBytesView) == Array(expected.utf8), "\(name) in chunks of \(size)")
            }
        }
        #expect(rewritten > 10)
    }

    @Test("a base that extends another wins for the links that start with it")
    func longerBaseFirst() {
        let bases = [Self.upstream, "https://api.spotify.com/mirror"]
        let input = #"{"href":"https://api.spotify.com/mirror/v1/a","next":"https://api.spotify.com/v1/b"}"#
        let expected = #"{"href":"http://127.0.0.1:8080/v1/a","next":"http://127.0.0.1:8080/v1/b"}"#
        let bytes = Array(input.utf8)
        for cut in 0...bytes.count {
            let parts = [String(decoding: bytes[..<cut], as: UTF8.self), String(decoding: bytes[cut...], as: UTF8.self)]
            #expect(self.rewrite(parts, upstreamBases: bases) == expected, "cut at \(cut)")
        }
    }
}
