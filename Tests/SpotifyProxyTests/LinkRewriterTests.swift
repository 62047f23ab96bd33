import NIOCore
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

    @Test("href, next and previous values move to the proxy; other URLs and mentions stay")
    func rewritesLinkValues() {
        let input = #"{"href":"https://api.spotify.com/v1/artists/x","next":"https://api.spotify.com/v1/a?offset=5&limit=5","previous":null,"external_urls":{"spotify":"https://open.spotify.com/artist/x"},"name":"see https://api.spotify.com/v1"}"#
        let expected = #"{"href":"http://127.0.0.1:8080/v1/artists/x","next":"http://127.0.0.1:8080/v1/a?offset=5&limit=5","previous":null,"external_urls":{"spotify":"https://open.spotify.com/artist/x"},"name":"see https://api.spotify.com/v1"}"#
        #expect(self.rewrite([input]) == expected)
    }

    @Test("a body split at every possible byte gives the same result as in one piece")
    func splitAnywhere() {
        let input = #"[{"href":"https://api.spotify.com/v1/x"},"https://api.spotify.co","\"https://api.spotify.com/v1/y"]"#
        let whole = self.rewrite([input])
        #expect(whole == #"[{"href":"http://127.0.0.1:8080/v1/x"},"https://api.spotify.co","\"http://127.0.0.1:8080/v1/y"]"#)
        let bytes = Array(input.utf8)
        for cut in 0...bytes.count {
            let parts = [String(decoding: bytes[..<cut], as: UTF8.self), String(decoding: bytes[cut...], as: UTF8.self)]
            #expect(self.rewrite(parts) == whole, "cut at \(cut)")
        }
        // And one byte at a time.
        #expect(self.rewrite(bytes.map { String(decoding: [$0], as: UTF8.self) }) == whole)
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

    @Test("a base that extends another wins for the links that start with it")
    func longerBaseFirst() {
        let bases = [Self.upstream, "https://api.spotify.com/mirror"]
        let input = #"["https://api.spotify.com/mirror/v1/a","https://api.spotify.com/v1/b"]"#
        let expected = #"["http://127.0.0.1:8080/v1/a","http://127.0.0.1:8080/v1/b"]"#
        let bytes = Array(input.utf8)
        for cut in 0...bytes.count {
            let parts = [String(decoding: bytes[..<cut], as: UTF8.self), String(decoding: bytes[cut...], as: UTF8.self)]
            #expect(self.rewrite(parts, upstreamBases: bases) == expected, "cut at \(cut)")
        }
    }
}
