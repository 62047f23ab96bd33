import NIOHTTP1
@testable import SpotifyProxy
import Testing

@Suite("Header policy")
struct HeaderPolicyTests {
    @Test("client headers go upstream in order; hop-by-hop, Host and the client's Authorization do not")
    func upstream() {
        let client = HTTPHeaders([
            ("Host", "localhost:8080"), ("Authorization", "Bearer None"), ("X-B", "2"), ("Accept", "application/json"),
            ("Connection", "keep-alive, X-Hop"), ("X-Hop", "secret-hop"), ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"), ("TE", "trailers"), ("Upgrade", "h2c"), ("Proxy-Authorization", "Basic x"),
            ("X-A", "1"), ("x-a", "dup"), ("Accept-Encoding", "gzip"), ("Content-Length", "5"), ("Expect", "100-continue"),
            ("Accept-Language", "en"), ("X-Request-Id", "abc"), ("Connection", "X-Request-Id"),
        ])
        let out = HeaderPolicy.upstreamHeaders(from: client, token: "T")
        // The request id, though `Connection` lists it: it is the proxy's, forwarded always.
        #expect(out.map { "\($0.name): \($0.value)" } == [
            "X-B: 2", "Accept: application/json", "X-A: 1", "x-a: dup", "Accept-Language: en", "X-Request-Id: abc", "Authorization: Bearer T",
        ])
    }

    @Test("a name set keeps a bit per length of its names, finds them in any case, and no other name of their lengths or any other")
    func nameSet() {
        func bits(_ lengths: [Int]) -> UInt64 { lengths.reduce(0) { $0 | (1 << UInt64($1)) } }
        #expect(HeaderPolicy.hopByHop.lengths == bits([2, 7, 10, 16, 17, 18, 19]))
        #expect(HeaderPolicy.setUpstream.lengths == bits([4, 6, 11, 13, 14, 15]))
        for set in [HeaderPolicy.hopByHop, HeaderPolicy.setUpstream] {
            for name in set.names {
                #expect(set.contains(name))
                #expect(set.contains(name.uppercased()))
                #expect(set.contains(String(name.enumerated().map { $0.offset.isMultiple(of: 2) ? Character($0.element.uppercased()) : $0.element })))
                // The same length, one byte changed (the first, then the last).
                #expect(!set.contains("#" + name.dropFirst()))
                #expect(!set.contains(name.dropLast() + "#"))
            }
        }
        #expect(!HeaderPolicy.hopByHop.contains(""))
        #expect(!HeaderPolicy.hopByHop.contains("Content-Type"))
        let wide = HeaderPolicy.NameSet([String(repeating: "a", count: 63)])
        #expect(wide.contains(String(repeating: "A", count: 63)))
        #expect(!wide.contains(String(repeating: "a", count: 64)))
        #expect(!wide.contains(String(repeating: "a", count: 127)))
    }

    @Test("an upstream header block parses into ordered pairs: CRLF or LF, spaces trimmed, obs-fold joined, junk skipped")
    func headerBlock() {
        let block = "Content-Type:  application/json \r\nX-Empty:\r\nX-Fold: one\r\n \t two\r\nno colon here\r\nx-lf:\tlast\t\n:\r\n"
        let parsed = UpstreamHeaderBlock.parse(Array(block.utf8))
        #expect(parsed.map { "\($0.name)=\($0.value)" } == [
            "Content-Type=application/json", "X-Empty=", "X-Fold=one two", "x-lf=last",
        ])
        #expect(UpstreamHeaderBlock.parse([]).isEmpty)
        #expect(UpstreamHeaderBlock.parse(Array(" orphan continuation\r\n".utf8)).isEmpty)
    }

    @Test("an upstream head line that is not valid HTTP is named: a name that is not a token, a control byte in a value or a folded value")
    func headLineProblems() {
        func problem(_ line: [UInt8]) -> String? { line.withUnsafeBytes { UpstreamHeaderBlock.problem(inLine: $0) } }
        // Valid, or not a header line at all (``parse`` skips those): nothing to say.
        for line in ["Content-Type: application/json\r\n", "X-Empty:\r\n", "x-lf:\tlast\t\n", " \t folded\r\n", "no colon here\r\n", ":\r\n", "\r\n", ""] {
            #expect(problem(Array(line.utf8)) == nil, "\(line.debugDescription)")
        }
        // obs-text (bytes from 0x80) is allowed in a value (RFC 9110 §5.5), as NIO's validation has it.
        #expect(problem(Array("X-Name: Beyonc\u{E9}\r\n".utf8)) == nil)
        #expect(problem(Array("X-Caf\u{E9}: 1\r\n".utf8)) == "a byte (0xC3) that a header's name cannot hold")
        #expect(problem(Array("X Space: 1\r\n".utf8)) == "a byte (0x20) that a header's name cannot hold")
        #expect(problem(Array("Name : 1\r\n".utf8)) == "a byte (0x20) that a header's name cannot hold")
        #expect(problem(Array("X-Note: a".utf8) + [0x01] + Array("b\r\n".utf8)) == "a control byte (0x01) in the value of its X-Note header")
        #expect(problem(Array("X-Nul: a".utf8) + [0x00] + Array("\r\n".utf8)) == "a control byte (0x00) in the value of its X-Nul header")
        #expect(problem(Array("X-Del: a".utf8) + [0x7F] + Array("\r\n".utf8)) == "a control byte (0x7F) in the value of its X-Del header")
        #expect(problem(Array(" more".utf8) + [0x1B] + Array("\r\n".utf8)) == "a control byte (0x1B) in a header's folded value")
        // The token test, a bit mask, against RFC 9110 §5.6.2's tchar, for every byte.
        let tchar = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~".utf8)
        for byte in UInt8.min...UInt8.max { #expect(ResponseEncoder.isNotTokenByte(byte) == !tchar.contains(byte), "\(byte)") }
        // A lone CR inside a value is a control byte too (only the line's own CRLF is not).
        #expect(problem(Array("X-Cr: a\rb\r\n".utf8)) == "a control byte (0x0D) in the value of its X-Cr header")
    }

    @Test("a coding curl cannot decode is named, as curl splits the list; only when the answer has a body, and does not say it is empty")
    func undecodableCodings() {
        let curl = UpstreamHeaderBlock.Codings(zlib: true, brotli: true, zstd: false)
        func problem(_ block: String, _ codings: UpstreamHeaderBlock.Codings? = curl) -> UpstreamHeaderBlock.Problem? {
            UpstreamHeaderBlock.problem(inBlock: Array(block.utf8), codings: codings)
        }
        // What curl decodes, in any case and spacing; several lines; other headers that merely look alike.
        for block in [
            "Transfer-Encoding: chunked\r\n", "transfer-encoding: GZIP, Chunked\r\n", "Transfer-Encoding:x-gzip ,, chunked \r\n",
            "Content-Encoding: br\r\nContent-Encoding: deflate\r\n", "Content-Encoding: identity\r\n", "Content-Encoding:\r\n",
            "Content-Encoding: , \r\n", "X-Transfer-Encoding: foo\r\n", "Content-Encodings: foo\r\n", "Content-Type: foo\r\n",
        ] {
            #expect(problem(block) == nil, "\(block.debugDescription)")
        }
        #expect(problem("Transfer-Encoding: foo, chunked\r\n") == .undecodable(header: "Transfer-Encoding", value: "foo, chunked", decodable: "chunked, gzip, deflate, br"))
        #expect(problem("content-encoding:  gzip, zstd \r\n") == .undecodable(header: "content-encoding", value: "gzip, zstd", decodable: "gzip, deflate, br"))
        // An answer that says it is empty gives curl nothing to decode (unless it is chunked: then
        // curl reads chunks whatever the length says).
        #expect(problem("Content-Encoding: foo\r\nContent-Length: 0\r\n") == nil)
        #expect(problem("content-length:0\r\nContent-Encoding: foo\r\n") == nil)
        #expect(problem("Content-Encoding: foo\r\nContent-Length: 2\r\n") != nil)
        #expect(problem("Transfer-Encoding: foo, chunked\r\nContent-Length: 0\r\n") != nil)
        #expect(problem("Transfer-Encoding: chunked\r\nContent-Encoding: foo\r\nContent-Length: 0\r\n") != nil)
        // chunked is a transfer coding only; a parameter makes another name, as curl reads it.
        #expect(problem("Content-Encoding: chunked\r\n") != nil)
        #expect(problem("Content-Encoding: gzip;q=1\r\n") != nil)
        #expect(problem("Content-Encoding: zstd\r\n", UpstreamHeaderBlock.Codings(zlib: false, brotli: false, zstd: true)) == nil)
        // A bodiless answer (to a HEAD, a 204, a 304) is not decoded: its codings are not checked.
        #expect(problem("Content-Encoding: foo\r\n", nil) == nil)
        // A line that is not valid HTTP is named first.
        #expect(problem("X-Caf\u{E9}: 1\r\nContent-Encoding: foo\r\n") == .invalidLine("a byte (0xC3) that a header's name cannot hold"))
        #expect(problem("Content-Encoding: foo\r\n")?.words == "a Content-Encoding the proxy cannot decode (foo); its libcurl decodes gzip, deflate, br")
    }

    @Test("upstream headers come back minus hop-by-hop; decoding and rewriting drop the stale length")
    func client() {
        let upstream: [(name: String, value: String)] = [
            ("content-type", "application/json; charset=utf-8"), ("content-encoding", "gzip"), ("content-length", "120"),
            ("cache-control", "public, max-age=7200"), ("connection", "keep-alive"), ("retry-after", "7"),
            ("transfer-encoding", "chunked"), ("x-spotify", "y"),
        ]
        let (headers, framing) = HeaderPolicy.clientHeaders(from: upstream, rewriteLinks: true)
        #expect(framing.rewrite)
        #expect(headers.map { "\($0.name): \($0.value)" } == [
            "content-type: application/json; charset=utf-8", "cache-control: public, max-age=7200", "retry-after: 7",
            "x-spotify: y",
        ])
    }

    @Test("names and media types match in any case; headers a Connection header lists stay behind")
    func caseInsensitive() {
        let upstream: [(name: String, value: String)] = [
            ("Content-Type", "Application/JSON; charset=utf-8"), ("CONNECTION", "close, X-Hop"), ("x-hop", "1"),
            ("Content-Encoding", " Identity "), ("Content-Length", "7"), ("X-Kept", "2"),
        ]
        let (headers, framing) = HeaderPolicy.clientHeaders(from: upstream, rewriteLinks: false)
        #expect(!framing.rewrite && framing.isJSON)
        #expect(headers.map { "\($0.name): \($0.value)" } == [
            "Content-Type: Application/JSON; charset=utf-8", "Content-Encoding:  Identity ", "Content-Length: 7", "X-Kept: 2",
        ])
        #expect(!HeaderPolicy.clientHeaders(from: [("Content-Type", "text/html")], rewriteLinks: true).1.isJSON)
        #expect(!HeaderPolicy.clientHeaders(from: [("Content-Type", "js")], rewriteLinks: true).1.isJSON)
    }

    @Test("a plain body that is not rewritten keeps its length")
    func plainKeepsLength() {
        let upstream: [(name: String, value: String)] = [("Content-Type", "image/jpeg"), ("Content-Length", "10")]
        let (headers, framing) = HeaderPolicy.clientHeaders(from: upstream, rewriteLinks: true)
        #expect(!framing.rewrite)
        #expect(headers["content-length"] == ["10"])
        let (json, jsonFraming) = HeaderPolicy.clientHeaders(from: [("Content-Type", "application/json"), ("Content-Length", "10")], rewriteLinks: false)
        #expect(!jsonFraming.rewrite)
        #expect(json["content-length"] == ["10"])
    }
}
