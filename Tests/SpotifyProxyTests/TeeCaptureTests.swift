import NIOCore
import SpotifyProxy
import Testing

@Suite("Tee capture: identical answers are compared, not kept")
struct TeeCaptureTests {
    let recent = ByteBuffer(string: #"{"id":"a","name":"Epica","type":"artist"}"#)

    /// Feeds `body` in chunks of `size` bytes.
    func capture(_ body: String, chunkSize size: Int, recent: ByteBuffer?) -> TeeCapture.Outcome {
        var capture = TeeCapture(recent: recent)
        var rest = Substring(body)
        while !rest.isEmpty {
            capture.append(ByteBuffer(string: String(rest.prefix(size))))
            rest = rest.dropFirst(size)
        }
        return capture.finish()
    }

    func joined(_ outcome: TeeCapture.Outcome) -> String? {
        guard case .body(let chunks) = outcome else { return nil }
        return chunks.map { String(buffer: $0) }.joined()
    }

    @Test("the same bytes, in any chunking, are identical", arguments: [1, 3, 7, 1000])
    func identical(chunkSize: Int) {
        #expect(self.capture(String(buffer: self.recent), chunkSize: chunkSize, recent: self.recent) == .identical)
    }

    @Test("a body that differs anywhere is copied whole, however it is chunked", arguments: [1, 5, 16, 1000])
    func differs(chunkSize: Int) {
        for body in [
            #"{"id":"a","name":"Epica!","type":"artist"}"#,  // differs in the middle, longer
            #"{"id":"a","name":"Epic","type":"artist"}"#,  // shorter, differs near the end
            #"{"id":"a","name":"Epica","type":"artist"}  "#,  // the recent body plus more
            #"{"id":"a","name":"Epica""#,  // a prefix of it
            #"X"#,
            "",
        ] {
            #expect(self.joined(self.capture(body, chunkSize: chunkSize, recent: self.recent)) == body, "\(body)")
        }
    }

    @Test("without a recent body every chunk is kept")
    func noRecent() {
        let body = String(buffer: self.recent)
        #expect(self.joined(self.capture(body, chunkSize: 4, recent: nil)) == body)
        #expect(self.joined(self.capture("", chunkSize: 4, recent: nil)) == "")
    }

    @Test("an empty recent body matches only an empty answer")
    func emptyRecent() {
        #expect(self.capture("", chunkSize: 4, recent: ByteBuffer()) == .identical)
        #expect(self.joined(self.capture("{}", chunkSize: 4, recent: ByteBuffer())) == "{}")
    }
}
