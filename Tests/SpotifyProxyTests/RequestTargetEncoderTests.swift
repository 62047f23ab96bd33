import NIOCore
import SpotifyProxy
import Testing

@Suite("Request target encoder (raw non-ASCII bytes in targets)")
struct RequestTargetEncoderTests {
    /// Feeds `input` cut at `cut` (and, for the whole table, at every byte); returns what the parser gets.
    func encode(_ input: [UInt8], cuts: [Int]) -> [UInt8] {
        var encoder = RequestTargetEncoder()
        var output: [UInt8] = []
        var start = 0
        for cut in cuts + [input.count] where cut >= start {
            output += Array(encoder.process(ByteBuffer(bytes: input[start..<cut])).readableBytesView)
            start = cut
        }
        return output
    }

    static let cases: [(String, [UInt8], [UInt8])] = [
        (
            "a target with UTF-8 bytes is percent-encoded; headers are untouched",
            Array("GET /v1/search?q=Björk&type=artist HTTP/1.1\r\nHost: x\r\nX-Name: Björk\r\n\r\n".utf8),
            Array("GET /v1/search?q=Bj%C3%B6rk&type=artist HTTP/1.1\r\nHost: x\r\nX-Name: Björk\r\n\r\n".utf8)
        ),
        (
            "a Content-Length body is passed untouched, even where it looks like a request line; the next request is encoded",
            Array("POST /v1/ö HTTP/1.1\r\nContent-Length: 22\r\n\r\nGET /ö HTTP/1.1\r\n\r\nxxGET /é HTTP/1.1\r\n\r\n".utf8),
            Array("POST /v1/%C3%B6 HTTP/1.1\r\nContent-Length: 22\r\n\r\nGET /ö HTTP/1.1\r\n\r\nxxGET /%C3%A9 HTTP/1.1\r\n\r\n".utf8)
        ),
        (
            "leading empty lines pass; an ASCII request passes as it is",
            Array("\r\nGET /v1/artists/x?ids=a%2Cb HTTP/1.1\r\ncontent-length: 0\r\n\r\nGET /v1/ü HTTP/1.1\r\n\r\n".utf8),
            Array("\r\nGET /v1/artists/x?ids=a%2Cb HTTP/1.1\r\ncontent-length: 0\r\n\r\nGET /v1/%C3%BC HTTP/1.1\r\n\r\n".utf8)
        ),
        (
            "a chunked body makes it step aside for the rest of the connection",
            Array("POST /v1/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nö\r\n0\r\n\r\nGET /ö HTTP/1.1\r\n\r\n".utf8),
            Array("POST /v1/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nö\r\n0\r\n\r\nGET /ö HTTP/1.1\r\n\r\n".utf8)
        ),
        (
            "what cannot start a request line (a TLS handshake) passes at once, for the parser to refuse, with the rest",
            [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC] + Array("GET /ö\n".utf8),
            [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC] + Array("GET /ö\n".utf8)
        ),
        (
            // Held for an LF that may never come, it had the client wait for the idle timeout.
            "a CR followed by anything but LF ends no line: the bytes pass as they came, for the parser to refuse",
            Array("GET /readyz HTTP/1.1\rHost: x\r\r".utf8),
            Array("GET /readyz HTTP/1.1\rHost: x\r\r".utf8)
        ),
        (
            "the same with a target to encode: it is not encoded",
            Array("GET /ö HTTP/1.1\rX".utf8),
            Array("GET /ö HTTP/1.1\rX".utf8)
        ),
        (
            "stray CRs before a request line (the parser skips them) are no bare CR: the target is still encoded",
            Array("\r\rGET /ö HTTP/1.1\r\nHost: x\r\n\r\n".utf8),
            Array("\r\rGET /%C3%B6 HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        ),
    ]

    @Test("request lines only, whatever the reads", arguments: Self.cases.indices)
    func table(index: Int) {
        let (name, input, expected) = Self.cases[index]
        #expect(self.encode(input, cuts: []) == expected, "\(name)")
        for cut in 0...input.count {
            #expect(self.encode(input, cuts: [cut]) == expected, "\(name), cut at \(cut)")
        }
        #expect(self.encode(input, cuts: Array(1..<input.count)) == expected, "\(name), one byte at a time")
    }
}
