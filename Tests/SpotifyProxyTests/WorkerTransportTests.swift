import CCurl
import CWorkerIO
import Foundation
import NIOCore
import NIOEmbedded
import NIOHTTP1
import NIOPosix
import SpotifyProxyTestSupport
import Synchronization
import Testing

@testable import SpotifyProxy

/// The worker loops' own transport, piece by piece: the response bytes are NIO's (compared with
/// NIO's encoder), llhttp's requests are NIO's (compared with NIO's decoder, whatever the
/// reads' boundaries), and the loop is a NIO event loop that keeps its promises.
@Suite("Worker transport: NIO's bytes, NIO's requests, an event loop", .timeLimit(.minutes(1)))
struct WorkerTransportTests {
    // MARK: - Response encoding

    /// The bytes NIO's server pipeline writes for `parts` answering a `method` request.
    static func nioBytes(_ parts: [HTTPServerResponsePart], answering method: HTTPMethod) throws -> [UInt8] {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: false)
        try channel.writeInbound(ByteBuffer(string: "\(method.rawValue) / HTTP/1.1\r\nHost: x\r\n\r\n"))
        while try channel.readInbound(as: HTTPServerRequestPart.self) != nil {}
        for part in parts { try channel.writeOutbound(part) }
        var bytes: [UInt8] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { bytes += buffer.readableBytesView }
        _ = try channel.finish()
        return bytes
    }

    static func ourBytes(_ parts: [HTTPServerResponsePart], answering method: HTTPMethod) throws -> [UInt8] {
        var encoder = ResponseEncoder()
        encoder.requestArrived(method)
        var out = OutputQueue()
        for part in parts { _ = try encoder.encode(part, into: &out) }
        return try Self.written(&out)
    }

    /// What `queue` writes to a socket, read from its peer, until the queue is empty. The
    /// socket's send buffer is `sendBuffer` bytes: a small one makes partial writes and writes
    /// that would block; a large one takes whole batches of buffers.
    static func written(_ queue: inout OutputQueue, sendBuffer: Int32 = 4096) throws -> [UInt8] {
        try Self.withSocketPair(sendBuffer: sendBuffer) { writer, reader in try Self.drain(&queue, writer: writer, reader: reader) }
    }

    /// Runs `body` with a socket pair from ``socketPair(sendBuffer:)``, closed after.
    static func withSocketPair<T>(sendBuffer: Int32, _ body: (_ writer: Int32, _ reader: Int32) throws -> T) throws -> T {
        let (writer, reader) = try Self.socketPair(sendBuffer: sendBuffer)
        defer {
            close(writer)
            close(reader)
        }
        return try body(writer, reader)
    }

    /// Writes `queue` to `writer` until it is empty (reading `reader` when it would block), then
    /// closes `writer`'s side: everything `reader` received meanwhile and after.
    static func drain(_ queue: inout OutputQueue, writer: Int32, reader: Int32) throws -> [UInt8] {
        var bytes: [UInt8] = []
        while !queue.isEmpty {
            let count = queue.write(to: writer)
            if count == -Int(EAGAIN) {
                bytes += try Self.readAvailable(reader)
                continue
            }
            guard count > 0 else { throw IOError(errnoCode: Int32(-count), reason: "write") }
        }
        shutdown(writer, Int32(SHUT_WR))
        while case let more = try Self.readAvailable(reader, wait: true), !more.isEmpty { bytes += more }
        return bytes
    }

    /// A socket pair whose first socket does not block and has a `sendBuffer`-byte send buffer.
    static func socketPair(sendBuffer: Int32) throws -> (Int32, Int32) {
        let (writer, reader) = try Self.socketPair()
        var size = sendBuffer
        setsockopt(writer, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        _ = fcntl(writer, F_SETFL, fcntl(writer, F_GETFL) | O_NONBLOCK)
        return (writer, reader)
    }

    /// What `fd` has to read now (empty at the end), or, `wait`ing, once something arrives.
    static func readAvailable(_ fd: Int32, wait: Bool = false) throws -> [UInt8] {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let read = recv(fd, &chunk, chunk.count, wait ? 0 : Int32(MSG_DONTWAIT))
        if read < 0, errno == EAGAIN { return [] }
        guard read >= 0 else { throw IOError(errnoCode: errno, reason: "recv") }
        return Array(chunk[..<read])
    }

    struct Answer: CustomTestStringConvertible, Sendable {
        var testDescription: String
        var method: HTTPMethod
        var version: HTTPVersion = .http1_1
        var status: HTTPResponseStatus = .ok
        var headers: [(String, String)] = [("Content-Type", "application/json")]
        var bodies: [String] = ["{\"a\":", "1}"]
    }

    /// 100 headers, up to 3.7 KB each: more than the encoder first reserves for a head.
    static let manyLongHeaders = (0..<100).map { ("X-Header-\($0)", String(repeating: "v", count: $0 * 37)) }

    static let answers: [Answer] = [
        Answer(testDescription: "a streamed answer (no length): chunked", method: .GET),
        Answer(testDescription: "an answer with its length: as is", method: .GET, headers: [("Content-Length", "7")]),
        Answer(testDescription: "an HTTP/1.0 answer with no length: close-delimited", method: .GET, version: .http1_0),
        Answer(testDescription: "204: no framing headers", method: .DELETE, status: .noContent, headers: [("Content-Length", "0")], bodies: []),
        Answer(testDescription: "304: no framing headers", method: .GET, status: .notModified, headers: [("ETag", "\"x\"")], bodies: []),
        Answer(testDescription: "a HEAD's answer with no length: framing kept, no body", method: .HEAD, bodies: []),
        Answer(testDescription: "a HEAD's answer with its length", method: .HEAD, headers: [("Content-Length", "47")], bodies: []),
        Answer(testDescription: "an empty body part writes no empty chunk", method: .GET, bodies: ["", "x"]),
        Answer(
            testDescription: "chunk sizes at each hex digit's edges", method: .GET,
            bodies: [9, 10, 15, 16, 255, 256, 4095, 65_536].map { String(repeating: "z", count: $0) }),
        Answer(
            testDescription: "large bodies (queued as they are) between small ones (copied), chunked", method: .GET,
            bodies: ["{", String(repeating: "a", count: 4096), "b", String(repeating: "c", count: 70_000), "}"]),
        Answer(
            testDescription: "large bodies with their length", method: .GET, headers: [("Content-Length", "74099")],
            bodies: ["{", String(repeating: "a", count: 4096), "b", String(repeating: "c", count: 70_000), "}"]),
        Answer(
            testDescription: "a status of the upstream's own, its reason as it came", method: .GET,
            status: .custom(code: 599, reasonPhrase: "Network Connect Timeout Error"), headers: [("Content-Length", "2")], bodies: ["{}"]),
        Answer(
            testDescription: "many and long headers, UTF-8 and a tab in values (more than the memory first reserved: measured, written again)",
            method: .GET,
            headers: manyLongHeaders + [("X-Name", "Beyoncé 🎤"), ("X-Tab", "a\tb"), ("X-Empty", "")]),
    ]

    /// A `Date` for heads whose bytes are compared: the encoder adds none to a head that has one.
    static let date = ("Date", "Sun, 06 Nov 1994 08:49:37 GMT")

    @Test("each answer (with its Date) is written byte for byte as NIO's server pipeline writes it", arguments: answers)
    func sameBytesAsNIO(_ answer: Answer) throws {
        var parts: [HTTPServerResponsePart] = [
            .head(HTTPResponseHead(version: answer.version, status: answer.status, headers: HTTPHeaders(answer.headers + [Self.date])))
        ]
        for body in answer.bodies { parts.append(.body(.byteBuffer(ByteBuffer(string: body)))) }
        parts.append(.end(nil))
        let ours = try Self.ourBytes(parts, answering: answer.method)
        #expect(String(decoding: ours, as: UTF8.self) == String(decoding: try Self.nioBytes(parts, answering: answer.method), as: UTF8.self))
    }

    @Test("100 Continue, then the answer: as NIO writes them; the end of the final answer is reported, not the 100's")
    func informational() throws {
        let parts: [HTTPServerResponsePart] = [
            .head(HTTPResponseHead(version: .http1_1, status: .continue)),
            .head(HTTPResponseHead(version: .http1_1, status: .created, headers: HTTPHeaders([("Content-Length", "2"), Self.date]))),
            .body(.byteBuffer(ByteBuffer(string: "{}"))),
            .end(nil),
        ]
        #expect(try Self.ourBytes(parts, answering: .POST) == Self.nioBytes(parts, answering: .POST))
        var encoder = ResponseEncoder()
        encoder.requestArrived(.POST)
        var out = OutputQueue()
        #expect(try parts.map { try encoder.encode($0, into: &out) } == [false, false, false, true])
    }

    @Test("a final answer without Date gets one, the current second as an IMF-fixdate (RFC 9110 §6.6.1); one with its own keeps it alone; a 1xx gets none")
    func dated() throws {
        func head(_ text: [UInt8]) -> String { String(decoding: text, as: UTF8.self).components(separatedBy: "\r\n\r\n")[0] }
        let before = time(nil)
        let undated = head(try Self.ourBytes([.head(HTTPResponseHead(version: .http1_1, status: .notFound, headers: ["Content-Length": "0"])), .end(nil)], answering: .GET))
        let after = time(nil)
        let dates = undated.split(separator: "\r\n").filter { $0.hasPrefix("Date: ") }.map { String($0.dropFirst(6)) }
        #expect(dates.count == 1, "\(undated)")
        #expect(Set([before, after].map(HTTPDate.format)).contains(dates.first ?? ""), "\(undated)")
        #expect(HTTPDate.format(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT")
        #expect(HTTPDate.format(1_796_342_400) == "Fri, 04 Dec 2026 00:00:00 GMT")
        let own = head(try Self.ourBytes([.head(HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders([("date", "x"), ("Content-Length", "0")]))), .end(nil)], answering: .GET))
        #expect(own == "HTTP/1.1 200 OK\r\ndate: x\r\nContent-Length: 0", "\(own)")
        let informational = head(try Self.ourBytes([.head(HTTPResponseHead(version: .http1_1, status: .continue))], answering: .POST))
        #expect(informational == "HTTP/1.1 100 Continue", "\(informational)")
    }

    static let refusedHeads: [(HTTPResponseStatus, HTTPHeaders)] = {
        let ok = HTTPResponseStatus.ok
        var longThenBad = HTTPHeaders(manyLongHeaders)
        longThenBad.add(name: "X-Bad", value: "a\rb")
        return [
            (ok, ["X-A": "1\r\nSet-Cookie: a=b"]), (ok, ["X-A": "1\nb"]), (ok, ["X-A": "1\u{0}b"]), (ok, ["X-A": "1\u{1}b"]),
            (ok, ["X-A": "1\u{7F}b"]), (ok, ["Bad Name": "1"]), (ok, ["X:A": "1"]), (ok, ["": "1"]),  // NIO writes an empty name; RFC 9110's token is one byte or more.
            (ok, ["Content-Type": "application/json", "X-Later": "a\rb"]),
            // Framing headers the encoder drops are checked first, as NIO checks them.
            (.noContent, ["Content-Length": "0\r\nX-B: 1"]), (ok, ["Transfer-Encoding": "x\u{1}"]),
            (.custom(code: 200, reasonPhrase: "OK\r\nSet-Cookie: a=b"), ["X-A": "1"]), (.custom(code: 599, reasonPhrase: "A\u{1}"), [:]),
            // More than the memory first reserved, the bad header last.
            (ok, longThenBad),
        ]
    }()

    @Test("a head NIO's validation refuses (a control byte but HTAB in a value or the reason, a name that is not a token) is refused, and nothing of it is written")
    func responseSplitting() throws {
        // Refused after a whole answer already queued: its bytes alone come out.
        let answer: [HTTPServerResponsePart] = [
            .head(HTTPResponseHead(version: .http1_1, status: .ok, headers: HTTPHeaders([("Content-Length", "2"), Self.date]))),
            .body(.byteBuffer(ByteBuffer(string: "{}"))), .end(nil),
        ]
        for (status, headers) in Self.refusedHeads {
            let refused = HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))
            if !headers.contains(name: "") {
                #expect(throws: (any Error).self, "NIO refuses it too") { try Self.nioBytes([refused], answering: .GET) }
            }
            var encoder = ResponseEncoder()
            encoder.requestArrived(.GET)
            encoder.requestArrived(.GET)
            var out = OutputQueue()
            for part in answer { _ = try encoder.encode(part, into: &out) }
            let queued = out.readableBytes
            #expect(throws: ResponseEncoder.InvalidHeader.self) { try encoder.encode(refused, into: &out) }
            #expect(out.readableBytes == queued)
            #expect(try Self.written(&out) == Self.ourBytes(answer, answering: .GET))
        }
    }

    /// Where `bytes` first differs from `expected` (nil when equal): a short failure for long bodies.
    static func firstDifference(_ bytes: [UInt8], _ expected: [UInt8]) -> Int? {
        if let index = zip(bytes, expected).enumerated().first(where: { $0.element.0 != $0.element.1 })?.offset { return index }
        return bytes.count == expected.count ? nil : min(bytes.count, expected.count)
    }

    /// `bytes` are `expected`, compared so that a failure stays short.
    static func expectSameBytes(_ bytes: [UInt8], _ expected: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(bytes.count == expected.count, sourceLocation: sourceLocation)
        #expect(Self.firstDifference(bytes, expected) == nil, sourceLocation: sourceLocation)
    }

    /// Small pieces (copied into the queue's own buffer) and large bodies (queued as they are)
    /// for step `index`: sometimes several large ones follow each other.
    static func queuePieces(_ index: Int, into queue: inout OutputQueue, expected: inout [UInt8]) {
        let small = "piece \(index)\r\n"
        queue.writeString(small)
        expected += Array(small.utf8)
        for repeatIndex in 0..<(index % 3) {
            let body = ByteBuffer(repeating: UInt8(truncatingIfNeeded: index + repeatIndex), count: OutputQueue.copyLimit + index)
            queue.append(body)
            expected += body.readableBytesView
        }
        let smallBody = ByteBuffer(string: "small body \(index)")
        queue.append(smallBody)
        expected += smallBody.readableBytesView
    }

    @Test(
        "the output queue writes what was queued, in order: through partial writes, and in whole batches of more buffers than one write takes",
        arguments: [4096, 1 << 20] as [Int32])
    func outputQueue(sendBuffer: Int32) throws {
        var queue = OutputQueue()
        var expected: [UInt8] = []
        for index in 0..<(OutputQueue.maxVectors * 2 + 3) { Self.queuePieces(index, into: &queue, expected: &expected) }
        #expect(queue.readableBytes == expected.count)
        let bytes = try Self.written(&queue, sendBuffer: sendBuffer)
        Self.expectSameBytes(bytes, expected)
        // Emptied, it is used again as new.
        queue.writeStaticString("again")
        #expect(try Self.written(&queue, sendBuffer: sendBuffer) == Array("again".utf8))
    }

    @Test("the output queue, written while it is filled (a write ends inside a body or inside its own buffer, then more is queued): the bytes in order")
    func outputQueueInterleaved() throws {
        try Self.withSocketPair(sendBuffer: 4096) { writer, reader in
            var queue = OutputQueue()
            var expected: [UInt8] = []
            var bytes: [UInt8] = []
            for index in 0..<300 {
                Self.queuePieces(index, into: &queue, expected: &expected)
                let count = queue.write(to: writer)
                #expect(count > 0 || count == -Int(EAGAIN))
                if index % 2 == 0 { bytes += try Self.readAvailable(reader) }
            }
            bytes += try Self.drain(&queue, writer: writer, reader: reader)
            Self.expectSameBytes(bytes, expected)
        }
    }

    @Test("large bodies back to back (an answer with its length): a write that ends where a body ends leaves the rest queued")
    func outputQueueBodiesBackToBack() throws {
        var queue = OutputQueue()
        var expected = Array("HTTP/1.1 200 OK\r\ncontent-length: 409600\r\n\r\n".utf8)
        queue.writeString(String(decoding: expected, as: UTF8.self))
        // More bodies than one write takes: the first write ends after the 63rd, with nothing of
        // the queue's own after the rest.
        for index in 0..<100 {
            let body = ByteBuffer(repeating: UInt8(index), count: OutputQueue.copyLimit)
            queue.append(body)
            expected += body.readableBytesView
        }
        let bytes = try Self.written(&queue, sendBuffer: 1 << 20)
        Self.expectSameBytes(bytes, expected)
    }

    @Test("a slow client of a long answer made of small pieces: the queue never empties, and its own buffers stay bounded")
    func outputQueueBounded() throws {
        try Self.withSocketPair(sendBuffer: 4096) { writer, reader in
            var queue = OutputQueue()
            var expected: [UInt8] = []
            var received: [UInt8] = []
            var largest = 0
            // 4 MB in 1,000-byte pieces, each of its own byte, at most 256 KiB queued (the
            // upstream's window), read a little at a time.
            while expected.count < 4_000_000 {
                while queue.readableBytes < 256 * 1024 {
                    let piece = ByteBuffer(repeating: UInt8(truncatingIfNeeded: expected.count / 1000), count: 1000)
                    queue.append(piece)
                    expected += piece.readableBytesView
                }
                _ = queue.write(to: writer)
                received += try Self.readAvailable(reader)
                largest = max(largest, queue.queuedCapacity)
                #expect(!queue.isEmpty)
            }
            #expect(largest <= 2 << 20, "the queue's own buffers reached \(largest) bytes")
            received += try Self.drain(&queue, writer: writer, reader: reader)
            Self.expectSameBytes(received, expected)
        }
    }

    // MARK: - Request parsing

    /// Requests a client may send, pipelined in one stream.
    static let stream =
        "GET /v1/artists/abc?market=SE HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: */*\r\n\r\n"
        + "POST /v1/me/playlists HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nContent-Type: application/json\r\n\r\n{\"name\":1}\n"
        + "PUT /v1/me/tracks HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
        + "HEAD /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"

    /// The parts NIO's decoder makes of `stream` (bodies joined per request).
    static func nioParts(_ stream: String) throws -> [String] {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(HTTPRequestDecoder()))
        try channel.writeInbound(ByteBuffer(string: stream))
        var parts: [HTTPServerRequestPart] = []
        while let part = try channel.readInbound(as: HTTPServerRequestPart.self) { parts.append(part) }
        _ = try channel.finish()
        return Self.describe(parts)
    }

    static func describe(_ parts: [HTTPServerRequestPart]) -> [String] {
        var described: [String] = []
        var body = ""
        for part in parts {
            switch part {
            case .head(let head):
                described.append("\(head.method) \(head.uri) \(head.version) \(head.headers.map { "\($0.name)=\($0.value)" }) keepAlive=\(head.isKeepAlive)")
            case .body(let buffer):
                body += String(buffer: buffer)
            case .end(let trailers):
                described.append("body \(body.debugDescription) trailers \(trailers.map { $0.map { "\($0.name)=\($0.value)" } } ?? [])")
                body = ""
            }
        }
        return described
    }

    /// Feeds `stream` to a parser in pieces of `piece` bytes, resuming after each request.
    static func ourParts(_ stream: String, piece: Int) -> (parts: [String], stops: Int) {
        let parser = RequestParser()
        let bytes = Array(stream.utf8)
        var pending: [UInt8] = []
        var parts: [HTTPServerRequestPart] = []
        var stops = 0
        var offset = 0
        while offset < bytes.count || !pending.isEmpty {
            if offset < bytes.count {
                pending += bytes[offset..<min(bytes.count, offset + piece)]
                offset += piece
            }
            while !pending.isEmpty {
                let stop = pending.withUnsafeBytes { parser.parse($0) }
                parts += parser.parts
                parser.parts = []
                guard case .requestComplete(let consumed) = stop else {
                    pending = []
                    break
                }
                stops += 1
                pending.removeFirst(consumed)
                parser.resume()
            }
        }
        return (Self.describe(parts), stops)
    }

    @Test("pipelined requests, read in pieces of any size, parse into NIO's parts, stopping after each request")
    func sameRequestsAsNIO() throws {
        let expected = try Self.nioParts(Self.stream)
        #expect(expected.count == 8)
        for piece in [1, 2, 3, 7, 16, 64, 100_000] {
            let (parts, stops) = Self.ourParts(Self.stream, piece: piece)
            #expect(parts == expected, "pieces of \(piece) bytes")
            #expect(stops == 4, "pieces of \(piece) bytes")
        }
    }

    @Test("a header value's trailing whitespace is not part of it (RFC 9110 §5.5): Content-Length: 3 followed by a space is 3, in pieces of any size")
    func trailingWhitespace() {
        let stream = "POST /v1/x HTTP/1.1\r\nHost: h\r\nContent-Length: 3 \r\nX-Spotify-User: alice \t\r\n\r\nabc"
        for piece in [1, 5, 100] {
            let (parts, stops) = Self.ourParts(stream, piece: piece)
            #expect(parts == ["POST /v1/x HTTP/1.1 [\"Host=h\", \"Content-Length=3\", \"X-Spotify-User=alice\"] keepAlive=true", "body \"abc\" trailers []"])
            #expect(stops == 1)
        }
    }

    @Test("a chunked body's sizes past maxBodyBytes fail at the chunk-size line that passes it, not before; up to the limit they pass")
    func chunkedSizesOverLimit() {
        let head = "POST /v1/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        let atLimit = RequestParser(maxBodyBytes: 10)
        let whole = Array((head + "5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n").utf8).withUnsafeBytes { atLimit.parse($0) }
        guard case .requestComplete = whole else {
            Issue.record("10 bytes in chunks at a limit of 10: \(whole)")
            return
        }
        let over = RequestParser(maxBodyBytes: 10)
        #expect(Array((head + "5\r\nhello\r\n").utf8).withUnsafeBytes { over.parse($0) } == .needMore)
        #expect(Array("6\r\n".utf8).withUnsafeBytes { over.parse($0) } == .failed(.invalidChunkSize))
        #expect(over.failureReason == RequestParser.bodyOverLimit)
        // A size beyond Int's range is over any limit, not a wrapped count.
        let huge = RequestParser(maxBodyBytes: 10)
        #expect(Array((head + "ffffffffffffffff\r\n").utf8).withUnsafeBytes { huge.parse($0) } == .failed(.invalidChunkSize))
    }

    @Test("M-SEARCH is M-SEARCH (NIO's .MSEARCH would send it without its dash)")
    func methodWithDash() {
        let parser = RequestParser()
        let stop = Array("M-SEARCH /v1/x HTTP/1.1\r\nHost: h\r\n\r\n".utf8).withUnsafeBytes { parser.parse($0) }
        guard case .requestComplete = stop, case .head(let head) = parser.parts.first else {
            Issue.record("not parsed: \(stop)")
            return
        }
        #expect(head.method.rawValue == "M-SEARCH")
    }

    @Test("a fragment in the request target is not part of it (RFC 9110 §4.2.5)")
    func fragment() {
        let (parts, _) = Self.ourParts("GET /simple/search?q=a&type=track#x HTTP/1.1\r\nHost: h\r\n\r\nGET /v1/x# HTTP/1.1\r\nHost: h\r\n\r\n", piece: 3)
        #expect(parts.filter { $0.hasPrefix("GET") }.map { $0.split(separator: " ")[1] } == ["/simple/search?q=a&type=track", "/v1/x"])
    }

    @Test("malformed requests fail with NIO's error; a head over 80 KiB is headerOverflow")
    func parseErrors() {
        func failure(_ request: String) -> RequestParser.Stop? {
            let parser = RequestParser()
            return Array(request.utf8).withUnsafeBytes { parser.parse($0) }
        }
        #expect(failure("G@T / HTTP/1.1\r\n\r\n") == .failed(.invalidMethod))
        #expect(failure("GET / HTTP/7.1\r\n\r\n") == .failed(.invalidVersion))
        #expect(failure("GET / HTTP/1.1\r\nBad Header: 1\r\n\r\n") == .failed(.invalidHeaderToken))
        #expect(failure("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n") == .failed(.invalidContentLength))
        let big = "GET / HTTP/1.1\r\nX-Big: \(String(repeating: "a", count: 81 * 1024))\r\n\r\n"
        #expect(failure(big) == .failed(.headerOverflow))
        // Passed within the target: the request line is what is too long (a 414).
        let parser = RequestParser()
        let longLine = Array("GET /\(String(repeating: "a", count: 81 * 1024)) HTTP/1.1\r\n\r\n".utf8)
        #expect(longLine.withUnsafeBytes { parser.parse($0) } == .failed(.headerOverflow))
        #expect(parser.failureReason == RequestParser.requestLineOverflow)
        let bigHeader = RequestParser()
        _ = Array(big.utf8).withUnsafeBytes { bigHeader.parse($0) }
        #expect(bigHeader.failureReason != RequestParser.requestLineOverflow)
        let fits = "GET / HTTP/1.1\r\nX-Big: \(String(repeating: "a", count: 79 * 1024))\r\n\r\n"
        #expect(failure(fits) == .requestComplete(consumed: fits.utf8.count))
    }

    // MARK: - The loop

    @Test("the worker loop is an event loop: tasks from other threads run on it, in order; timers fire in deadline order; a cancelled one never runs")
    func eventLoop() async throws {
        let loop = try WorkerLoop()
        loop.start()
        let order = Mutex<[String]>([])
        let onLoop = try await loop.submit { loop.inEventLoop }.get()
        #expect(onLoop)
        #expect(!loop.inEventLoop)
        let late = loop.scheduleTask(in: .milliseconds(60)) { order.withLock { $0.append("60 ms") } }
        let early = loop.scheduleTask(in: .milliseconds(20)) { order.withLock { $0.append("20 ms") } }
        let cancelled = loop.scheduleTask(in: .milliseconds(40)) { order.withLock { $0.append("cancelled") } }
        cancelled.cancel()
        for index in 0..<100 { loop.execute { order.withLock { $0.append("task \(index)") } } }
        try await early.futureResult.get()
        try await late.futureResult.get()
        await #expect(throws: EventLoopError.cancelled) { try await cancelled.futureResult.get() }
        let seen = order.withLock { $0 }
        #expect(seen == (0..<100).map { "task \($0)" } + ["20 ms", "60 ms"])
        // A future completed elsewhere and waited on here runs its callbacks on the loop.
        let promise = loop.makePromise(of: Int.self)
        let callbackOnLoop = promise.futureResult.map { _ in loop.inEventLoop }
        Task { promise.succeed(1) }
        #expect(try await callbackOnLoop.get())
        // A Task that prefers the loop's task executor runs there, and comes back there after
        // awaiting a future of another thread's loop (the cache's fetches do this).
        let stayed = await Task(executorPreference: loop.taskExecutor) { () -> Bool in
            let before = loop.inEventLoop
            let elsewhere = try? await MultiThreadedEventLoopGroup.singleton.next().submit { 1 }.get()
            return before && elsewhere == 1 && loop.inEventLoop
        }.value
        #expect(stayed)
        await loop.stop()
        // Once the loop has ended, a Task that prefers it still runs (on the global pool).
        let afterStop = await Task(executorPreference: loop.taskExecutor) { 42 }.value
        #expect(afterStop == 42)
    }

    // MARK: - The loop's curl

    /// Runs `body` with a started worker loop that has a curl multi handle of its own (what a
    /// `Worker` sets up); the handle and the loop are stopped afterwards, whatever `body` does.
    static func withWorkerCurl<T>(
        configuration: UpstreamConfiguration, _ body: (WorkerLoop, WorkerCurl) async throws -> T
    ) async throws -> T {
        let loop = try WorkerLoop()
        loop.start()
        let curl = WorkerCurl(loop: loop, configuration: configuration)
        loop.curl = curl
        let result: Result<T, any Error>
        do {
            try await loop.submit { curl.attach() }.get()
            result = .success(try await body(loop, curl))
        } catch {
            result = .failure(error)
        }
        try? await loop.submit { curl.stop() }.get()
        await loop.stop()
        return try result.get()
    }

    @Test("a worker's curl keeps an idle connection's socket watched; a connection closed upstream or by curl leaves the loop, and the next requests succeed on new ones")
    func idleUpstreamConnectionClosed() async throws {
        try await UpstreamClientTests.withFake(threads: 1) { _, fake in
            try await UpstreamClient.withRunning(configuration: UpstreamConfiguration()) { client in
                try await Self.withWorkerCurl(configuration: UpstreamConfiguration()) { loop, curl in
                    let token = try await UpstreamClientTests.token(client, fake, on: loop)
                    let opened = fake.counters.connectionsOpened
                    for fault in Array(repeating: ["close-when-idle", "reset-in-headers", "reset-in-body"], count: 3).joined() {
                        // The fake closes the connection once it is idle in curl's pool, or resets
                        // it mid-answer (curl closes it): the socket's number is likely the next
                        // connection's, which must be watched anew.
                        let faulted = try await UpstreamClientTests.get(client, fake.baseURL + "/v1/test/fault/\(fault)", token: token, on: loop)
                        if fault == "close-when-idle" {
                            #expect(faulted.status == 200 && faulted.bytes == 2 && faulted.error == nil)
                        } else {
                            #expect(faulted.error != nil)
                        }
                        let next = try await UpstreamClientTests.get(client, fake.baseURL + UpstreamClientTests.artist, token: token, on: loop)
                        #expect(next.status == 200 && next.error == nil)
                        // Every socket the loop believes it watches for curl is in the kernel's
                        // epoll set (one closed and reused unnoticed would not be).
                        let (believed, epoll) = try await loop.submit { (curl.watchedSockets, loop.epoll) }.get()
                        let inSet = Set(Self.epollMembers(epoll).keys)
                        #expect(Set(believed).isSubset(of: inSet), "watched: \(believed); in the epoll set: \(inSet.sorted())")
                    }
                    #expect(fake.counters.connectionsOpened - opened >= 9)
                    // What is left watched is curl's pool: its one live connection, idle, kept in
                    // the set (curl reported making its socket).
                    let (watched, epoll) = try await loop.submit { (curl.watchedSockets, loop.epoll) }.get()
                    #expect(watched.count == 1, "watched: \(watched)")
                    #expect(Set(watched).isSubset(of: Set(Self.epollMembers(epoll).keys)))
                }
            }
        }
    }

    @Test("curl's sockets: a socketpair leaves the set when done with, a connection's stays while idle; one closed without curl's close callback (a losing connect attempt, a stale idle entry) is found out, and a new socket with its number is watched")
    func reusedSocketNumbers() async throws {
        let seen = try await Self.withWorkerCurl(configuration: UpstreamConfiguration()) { loop, curl in
            try await loop.submit { () -> [String] in
                let (socket, peer) = try Self.socketPair()
                defer { _ = close(peer) }
                // Replaces the socket at `socket` by a new one, as a close and a reuse of its
                // number do: the kernel drops the closed socket from the epoll set (done here
                // directly, since a process another test forks meanwhile would hold it open a
                // moment), and the number names a new socket in one step (`dup2`: no other
                // thread of the test process can take it in between).
                func replace() throws {
                    _ = spx_epoll_ctl(loop.epoll, EPOLL_CTL_DEL, socket, 0, 0)
                    let (fresh, freshPeer) = try Self.socketPair()
                    _ = dup2(fresh, socket)
                    _ = close(fresh)
                    _ = close(freshPeer)
                }
                var seen: [String] = []
                func check(_ what: String) {
                    let member = Self.epollMembers(loop.epoll)[socket]
                    seen.append("\(what): \(member == nil ? "not in the set" : member == Self.inode(socket) ? "in the set" : "the old socket in the set")")
                }

                // The resolver's socketpair (never reported as made): done with, it leaves the
                // set at once, while it is still open.
                curl.watch(socket, what: Int32(CCURL_POLL_IN))
                check("socketpair watched")
                curl.watch(socket, what: Int32(CCURL_POLL_REMOVE))
                check("socketpair done with")

                // A connection's socket: idle, it stays; wanted again, it is watched.
                curl.created(socket)
                curl.watch(socket, what: Int32(CCURL_POLL_IN))
                curl.watch(socket, what: Int32(CCURL_POLL_REMOVE))
                check("connection idle")
                curl.watch(socket, what: Int32(CCURL_POLL_IN))
                check("connection wanted again")

                // Idle, then closed unreported and its number taken by a socket curl does not
                // report (a socketpair): wanted for the same thing, the new one is watched.
                curl.watch(socket, what: Int32(CCURL_POLL_REMOVE))
                try replace()
                curl.watch(socket, what: Int32(CCURL_POLL_IN))
                check("idle, replaced, watched")

                // A losing connect attempt: watched for output, closed, and a new connection
                // socket made with its number, for which curl asks nothing more.
                curl.watch(socket, what: Int32(CCURL_POLL_OUT))
                try replace()
                curl.created(socket)
                check("wanted, replaced, created")

                // Closed while wanted, then given up (CURL_POLL_REMOVE after the close), the
                // number taken again (ENOENT) or still free (EBADF): forgotten either way.
                try replace()
                curl.watch(socket, what: Int32(CCURL_POLL_REMOVE))
                check("wanted, replaced, removed")
                if curl.watchedSockets.contains(socket) { seen.append("still believed watched") }
                let (other, otherPeer) = try Self.socketPair()
                defer { _ = close(otherPeer) }
                curl.created(other)
                curl.watch(other, what: Int32(CCURL_POLL_OUT))
                _ = spx_epoll_ctl(loop.epoll, EPOLL_CTL_DEL, other, 0, 0)
                _ = close(other)
                curl.watch(other, what: Int32(CCURL_POLL_REMOVE))
                if curl.watchedSockets.contains(other) { seen.append("a closed number still believed watched") }
                curl.closing(socket)
                _ = close(socket)
                return seen
            }.get()
        }
        #expect(seen == [
            "socketpair watched: in the set", "socketpair done with: not in the set", "connection idle: in the set",
            "connection wanted again: in the set", "idle, replaced, watched: in the set", "wanted, replaced, created: in the set",
            "wanted, replaced, removed: not in the set",
        ])
    }

    /// A connected pair of Unix stream sockets.
    static func socketPair() throws -> (Int32, Int32) {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw IOError(errnoCode: errno, reason: "socketpair")
        }
        return (fds[0], fds[1])
    }

    /// The inode of the file open at `fd`.
    static func inode(_ fd: Int32) -> UInt64 {
        var info = stat()
        return fstat(fd, &info) == 0 ? UInt64(info.st_ino) : 0
    }

    /// The descriptors in epoll set `epoll` and the inode of the file each was added as, as the
    /// kernel lists them (`/proc/self/fdinfo`).
    static func epollMembers(_ epoll: Int32) -> [Int32: UInt64] {
        let info = (try? String(contentsOfFile: "/proc/self/fdinfo/\(epoll)", encoding: .utf8)) ?? ""
        var members: [Int32: UInt64] = [:]
        for line in info.split(separator: "\n") where line.hasPrefix("tfd:") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 1, let fd = Int32(fields[1]) else { continue }
            let inode = fields.first { $0.hasPrefix("ino:") }.flatMap { UInt64($0.dropFirst(4), radix: 16) }
            members[fd] = inode ?? 0
        }
        return members
    }

    // MARK: - Several workers

    final class Counter: Sendable {
        let value = Mutex(0)
    }

    @Test("with 1 or 3 worker loops, 40 clients at once each get 5 answers on one kept-alive connection", arguments: [1, 3])
    func workers(_ count: Int) async throws {
        try await withProxy(configure: { $0.workers = count }) { harness in
            let answered = Counter()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<40 {
                    group.addTask {
                        let client = try await harness.client()
                        for _ in 0..<5 where try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg").status == 200 {
                            answered.value.withLock { $0 += 1 }
                        }
                        await client.close()
                    }
                }
                try await group.waitForAll()
            }
            #expect(answered.value.withLock { $0 } == 200)
        }
    }

    @Test("a request answered from its head while its body still comes: the body is read and dropped, and the next request on the connection is answered")
    func answeredBeforeItsBody() async throws {
        try await withProxy { harness in
            let client = try await harness.client()
            try await client.send("POST /no-such-endpoint HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\n", method: .POST)
            let first = try await client.response()
            #expect(first.status == 404)
            try await client.send("hello", requests: 0)
            #expect(try await client.request("GET", "/healthz").status == 200)
            await client.close()
        }
    }

    @Test("a body refused with 413 while it still comes: the client can send it all and reads the 413, then EOF, not a reset (a lingering close)")
    func lingeringClose() async throws {
        try await withProxy(configure: { $0.maxBodyBytes = 1000 }) { harness in
            let head = "POST /v1/test/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4000000\r\n\r\n"
            let outcome = try await Blocking.run { try Self.sendAllThenRead(port: harness.port, Array(head.utf8) + [UInt8](repeating: 0x61, count: 4_000_000)) }
            #expect(outcome.sendError == nil, "the proxy reset the connection while the body came")
            #expect(outcome.sent == head.utf8.count + 4_000_000)
            #expect(String(decoding: outcome.received, as: UTF8.self).hasPrefix("HTTP/1.1 413 Payload Too Large\r\n"))
            #expect(outcome.readError == nil, "reset instead of EOF after the answer")
        }
    }

    @Test("shutting down: the last connection's lingering close is waited for, not cut short: a client still sending reads its answer, then EOF, not a reset")
    func lingeringCloseWhileShuttingDown() async throws {
        let harness = try await ProxyHarness.start(configure: { $0.shutdownGrace = .seconds(20) })
        let fd = try Self.connected(port: harness.port)
        var open = true
        defer { if open { Glibc.close(fd) } }
        // A request answered 1 s after it reaches the fake: the proxy begins to stop meanwhile.
        let before = harness.fake.counters.apiRequests
        let slow = Array("GET /v1/test/slow/1000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        #expect(slow.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == slow.count)
        #expect(try await eventually(5) { harness.fake.counters.apiRequests > before })
        let stopping = Task { try await harness.stop() }
        // The client pipelines a long upload for 2.5 s before it reads: the answer, with
        // Connection: close, is written meanwhile, and the connection lingers for the rest.
        let outcome = try await Blocking.run { () -> (sendError: Int32?, received: [UInt8], readError: Int32?) in
            var sendError: Int32?
            let head = Array("POST /v1/test/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n\r\n".utf8)
            if head.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) < 0 { sendError = errno }
            let chunk = [UInt8](repeating: 0x61, count: 65536)
            let began = ContinuousClock.now
            while sendError == nil, ContinuousClock.now - began < .milliseconds(2500) {
                if chunk.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) < 0, errno != EINTR { sendError = errno }
            }
            shutdown(fd, Int32(SHUT_WR))
            var received: [UInt8] = []
            var readError: Int32?
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count < 0, errno == EINTR { continue }
                if count < 0 { readError = errno }
                guard count > 0 else { break }
                received += buffer[..<count]
            }
            return (sendError, received, readError)
        }
        let text = String(decoding: outcome.received, as: UTF8.self)
        #expect(outcome.sendError == nil, "the proxy closed the connection while the client sent")
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(text.prefix(200))")
        #expect(text.lowercased().contains("connection: close"))
        #expect(outcome.readError == nil, "reset instead of EOF after the answer")
        // The client's EOF ended the linger, and with it the drain.
        Glibc.close(fd)
        open = false
        try await stopping.value
    }

    @Test("200 requests pipelined in one write, more than a connection may parse in one turn of its loop, are all answered, in order", arguments: [1, 2])
    func pipelinedBurst(workers: Int) async throws {
        try await withProxy(configure: { $0.workers = workers }) { harness in
            let client = try await harness.client()
            let requests = (0..<200).map { "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: burst-\($0)\r\n\r\n" }
            try await client.send(requests.joined(), requests: 200)
            var ids: [String] = []
            for _ in 0..<200 {
                let response = try await client.response()
                #expect(response.status == 200)
                ids.append(response.headers["x-request-id"].first ?? "")
            }
            await client.close()
            #expect(ids == (0..<200).map { "burst-\($0)" })
        }
    }

    @Test("a client pipelining requests the proxy answers itself, as fast as it reads the answers, does not hold its worker: another client is answered meanwhile")
    func pipelinedFlood() async throws {
        try await withProxy(configure: { $0.workers = 1 }) { harness in
            let port = harness.port
            let probed = Mutex(false)
            let sends = Mutex(0)
            // On a thread of its own (``Blocking``): a cooperative thread blocked in this loop
            // would stall the other tests' proxies (there are only as many as cores).
            let flood = Task { try await Blocking.run { () -> Bool in
                let fd = try Self.connected(port: port)
                // The answers are read (and dropped) on a thread of their own, so the proxy can always write.
                let readerDone = DispatchSemaphore(value: 0)
                Thread.detachNewThread {
                    var chunk = [UInt8](repeating: 0, count: 65536)
                    while chunk.withUnsafeMutableBytes({ recv(fd, $0.baseAddress, $0.count, 0) }) > 0 {}
                    readerDone.signal()
                }
                defer {
                    shutdown(fd, Int32(SHUT_RDWR))
                    readerDone.wait()
                    Glibc.close(fd)
                }
                // Requests larger than their answers: the client reads its answers with ease.
                let request = "GET /no-such-endpoint HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: \(String(repeating: "p", count: 2000))\r\n\r\n"
                let requests = [UInt8](String(repeating: request, count: 32).utf8)
                let started = ContinuousClock.now
                // Until the other client is answered, or 15 s.
                while !probed.withLock({ $0 }) {
                    guard ContinuousClock.now - started < .seconds(15) else { return false }
                    if requests.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) < 0, errno != EINTR { return false }
                    sends.withLock { $0 += 1 }
                }
                return true
            } }
            // The flood is under way (the worker has read some of it) before the other client asks.
            #expect(try await eventually(10) { sends.withLock { $0 } >= 4 })
            let client = try await harness.client()
            let answer = try await client.request("GET", "/healthz")
            probed.withLock { $0 = true }
            await client.close()
            #expect(answer.status == 200)
            #expect(try await flood.value, "the other client was answered only once the flood had ended")
        }
    }

    @Test("a lingering close under a client that keeps sending: the worker's other clients are served meanwhile, and the socket is closed after the linger's 5 s")
    func lingeringFlood() async throws {
        try await withProxy(configure: { $0.maxBodyBytes = 1000; $0.workers = 1 }) { harness in
            let port = harness.port
            let flooding = Mutex(true)
            // On a thread of its own, as in `pipelinedFlood`.
            let flood = Task { try await Blocking.run { () -> (error: Int32?, seconds: Double) in
                defer { flooding.withLock { $0 = false } }
                let started = ContinuousClock.now
                let fd = try Self.connected(port: port)
                defer { Glibc.close(fd) }
                let head = Array("POST /v1/test/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n\r\n".utf8)
                _ = head.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                let chunk = [UInt8](repeating: 0x61, count: 65536)
                // Until the proxy closes it, or 15 s.
                while ContinuousClock.now - started < .seconds(15) {
                    if chunk.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) < 0, errno != EINTR {
                        return (errno, Double((ContinuousClock.now - started).components.seconds))
                    }
                }
                return (nil, 15)
            } }
            // Served while the flood goes on (the first GETs may come before it lingers).
            let client = try await harness.client()
            var served = 0
            for _ in 0..<20 where try await client.request("GET", "/healthz").status == 200 { served += 1 }
            #expect(served == 20)
            #expect(flooding.withLock { $0 }, "the GETs were answered only after the flood ended")
            await client.close()
            let (error, seconds) = try await flood.value
            #expect(error != nil, "the proxy never closed the flooding connection")
            #expect(seconds < 12, "closed after \(seconds) s")
        }
    }

    /// A blocking socket connected to the proxy on `port`, with 10 s send and receive timeouts.
    static func connected(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        for option in [SO_RCVTIMEO, SO_SNDTIMEO] { setsockopt(fd, SOL_SOCKET, option, &timeout, socklen_t(MemoryLayout<timeval>.size)) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard connected == 0 else {
            Glibc.close(fd)
            throw IOError(errnoCode: errno, reason: "connect")
        }
        return fd
    }

    /// Writes `bytes` to a new connection on one thread while another reads until EOF: the
    /// bytes sent, the first write error, the bytes received, the read error (errno).
    static func sendAllThenRead(port: Int, _ bytes: [UInt8]) throws -> (sent: Int, sendError: Int32?, received: [UInt8], readError: Int32?) {
        let fd = try Self.connected(port: port)
        defer { Glibc.close(fd) }
        return Self.sendAllThenRead(fd: fd, bytes)
    }

    /// ``sendAllThenRead(port:_:)`` on a connection already open.
    static func sendAllThenRead(fd: Int32, _ bytes: [UInt8]) -> (sent: Int, sendError: Int32?, received: [UInt8], readError: Int32?) {
        let sending = Mutex<(sent: Int, error: Int32?)>((0, nil))
        let sent = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            var offset = 0
            while offset < bytes.count {
                let count = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if count < 0 {
                    if errno == EINTR { continue }
                    let code = errno
                    sending.withLock { $0.error = code }
                    break
                }
                offset += count
            }
            sending.withLock { $0.sent = offset }
            sent.signal()
        }
        var received: [UInt8] = []
        var readError: Int32?
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EINTR { continue }
            if count < 0 { readError = errno }
            guard count > 0 else { break }
            received += chunk[..<count]
        }
        sent.wait()
        let (count, error) = sending.withLock { ($0.sent, $0.error) }
        return (count, error, received, readError)
    }

    @Test("shutdown: an answer written while the proxy drains says Connection: close, and the connection closes after it")
    func shutdownAnswerSaysClose() async throws {
        let harness = try await ProxyHarness.start(configure: { $0.shutdownGrace = .seconds(20) })
        let client = try await harness.client()
        let before = harness.fake.counters.apiRequests
        // Answered 4 s after it reaches the fake: shutdown begins while it is in flight.
        try await client.send("GET /v1/test/slow/4000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        let arrived = try await eventually(5) { harness.fake.counters.apiRequests > before }
        #expect(arrived)
        let stopping = Task { try await harness.stop() }
        let response = try await client.response()
        #expect(response.status == 200)
        #expect(response.headers["connection"] == ["close"])
        try await client.waitForClose()
        try await stopping.value
    }

    @Test("shutdown: a request still waiting for Spotify when the grace period ends is answered 503 with Retry-After and Connection: close, not dropped")
    func shutdownPastGrace() async throws {
        let harness = try await ProxyHarness.start(configure: { $0.shutdownGrace = .milliseconds(300) })
        let client = try await harness.client()
        let before = harness.fake.counters.apiRequests
        try await client.send("GET /v1/test/slow/10000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        let arrived = try await eventually(5) { harness.fake.counters.apiRequests > before }
        #expect(arrived)
        let stopping = Task { try await harness.stop() }
        let response = try await client.response()
        #expect(response.status == 503)
        #expect(response.headers["retry-after"] == ["1"])
        #expect(response.headers["connection"] == ["close"])
        #expect(response.text.contains("the proxy is shutting down"))
        try await client.waitForClose()
        try await stopping.value
    }

    @Test("shutdown: a POST stopped before the client sent its body whole is answered 503 'retry it' with Retry-After: Spotify cannot have acted on half a request")
    func shutdownHalfSentPost() async throws {
        let harness = try await ProxyHarness.start(configure: { $0.shutdownGrace = .milliseconds(300) })
        let client = try await harness.client()
        let opened = harness.fake.counters.connectionsOpened
        try await client.send("POST /v1/test/echo/half HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a", method: .POST)
        // The transfer is under way: the worker's curl handle connected to the fake (which
        // counts a request only once its body is whole).
        #expect(try await eventually(5) { harness.fake.counters.connectionsOpened > opened })
        let stopping = Task { try await harness.stop() }
        let response = try await client.response()
        #expect(response.status == 503)
        #expect(response.headers["retry-after"] == ["1"])
        #expect(response.text.contains("before its body was sent whole, so Spotify cannot have acted on it; retry it"), "\(response.text)")
        try await stopping.value
    }

    @Test("shutdown: a request still waiting for its token when the grace period ends is answered 503 with Retry-After and logged so, not an empty reply logged as the client's 499")
    func shutdownWhileWaitingForToken() async throws {
        let harness = try await ProxyHarness.start(
            configure: {
                $0.shutdownGrace = .milliseconds(300)
                $0.tokenWait = .seconds(20)
            }, prepareFake: { $0.setTokenDelay(.seconds(4)) })
        let client = try await harness.client()
        try await client.send("GET /v1/artists/0TnOYISbd1XYRBk9myaseg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        #expect(try await eventually(5) { harness.fake.counters.tokenRequests == 1 })
        let started = ContinuousClock.now
        let stopping = Task { try await harness.stop() }
        let response = try await client.response()
        // At the grace period's end, not when the token comes (4 s after the start).
        #expect(ContinuousClock.now - started < .seconds(3))
        #expect(response.status == 503)
        #expect(response.headers["retry-after"] == ["1"])
        #expect(response.text.contains("stopped this request before Spotify answered; retry it"), "\(response.text)")
        try await client.waitForClose()
        try await stopping.value
        #expect(harness.fake.counters.apiRequests == 0)
        #expect(harness.logs.all.contains { $0.contains("status=503") && $0.contains("/v1/artists/") }, "\(harness.logs.all)")
    }

    @Test("shutdown: a keep-alive client's next request, in the socket before the loop has seen it when the shutdown reaches the idle connection, is answered with Connection: close, not reset")
    func shutdownReadsWaitingRequest() async throws {
        let harness = try await ProxyHarness.start(configure: {
            $0.workers = 1
            $0.shutdownGrace = .seconds(10)
        })
        let client = try await harness.client()
        try await client.send("GET /v1/artists/0TnOYISbd1XYRBk9myaseg HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(try await client.response().status == 200)
        let worker = try #require(harness.runtime.server.workerServer?.workers.first)
        // The loop is held in a task while the next request reaches the socket, and the
        // shutdown reaches the connection in that same task: the loop has not seen the bytes.
        let (started, holding) = AsyncStream.makeStream(of: Void.self)
        let gate = DispatchSemaphore(value: 0)
        defer { gate.signal() }  // the loop is never left held, whatever fails below
        let quiesced = worker.loop.submit {
            holding.yield()
            gate.wait()
            _ = worker.quiesce()
        }
        var iterator = started.makeAsyncIterator()
        _ = await iterator.next()
        try await client.send("GET /v1/artists/0TnOYISbd1XYRBk9myaseg HTTP/1.1\r\nHost: x\r\n\r\n")
        gate.signal()
        try await quiesced.get()
        let answer = try await client.response()
        #expect(answer.status == 200)
        #expect(answer.headers["Connection"] == ["close"], "\(answer.headers)")
        try await client.waitForClose()
        try await harness.stop()
    }

    @Test("shutdown: the listening socket closes at once, and a client holding half a request is closed after the grace period, not the idle timeout")
    func shutdownGrace() async throws {
        let harness = try await ProxyHarness.start(configure: {
            $0.shutdownGrace = .milliseconds(300)
            $0.clientIdleTimeout = .seconds(60)
        })
        let client = try await harness.client()
        try await client.send("GET /v1/artists/0TnOYISbd1XYRBk9myaseg HTTP/1.1\r\nHost: 12", requests: 0)
        let started = ContinuousClock.now
        let stopping = Task { try await harness.stop() }
        // New clients are refused while the half-sent request holds the drain.
        let refused = try await eventually(5) { (try? await harness.client()) == nil }
        #expect(refused)
        try await client.waitForClose()
        try await stopping.value
        #expect(ContinuousClock.now - started < .seconds(10))
    }
}

@Suite("HTTPS listener: closed connections' memory given back")
struct ClosedConnectionsTrimTests {
    @Test("a look trims only when connections closed since the last one, once for all of them")
    func due() {
        let trim = ClosedConnectionsTrim()
        #expect(!trim.due())
        trim.connectionClosed()
        trim.connectionClosed()
        #expect(trim.due())
        #expect(!trim.due())
    }
}
