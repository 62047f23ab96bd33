import NIOCore
import SpotifyProxy
import Testing

@Suite("Link rewriter")
struct LinkRewriterTests {
    static let upstream = "https://api.spotify.com"
    static let proxy = "http://127.0.0.1:8080"

    func rewrite(_ chunks: [String]) -> String {
        var rewriter = LinkRewriter(upstreamBase: Self.upstream, proxyBase: Self.proxy)
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
}
