import NIOCore
import NIOEmbedded
import NIOHTTP1
import Testing

@testable import SpotifyProxy

/// The HTTPS listener's head deadline, on an embedded channel whose clock the test moves: the
/// handlers around the listener's request decoder, as `ProxyServer` places them.
@Suite("Head deadline (HTTPS listener)")
struct HeadDeadlineTests {
    /// Counts the reports that reach the end of the pipeline (where `ProxyHandler` sits): a late
    /// head whose bytes began (`HeadDeadline.Late`, answered 408), or read-idle (nothing came).
    final class IdleEvents: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        var count = 0
        var late = 0
        /// When each late head's time started (the 408 line's ms counts from it).
        var lateSince: [NIODeadline] = []
        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if let late = event as? HeadDeadline.Late {
                self.count += 1
                self.late += 1
                self.lateSince.append(late.since)
            }
            if case .read? = event as? IdleStateHandler.IdleStateEvent { self.count += 1 }
        }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
    }

    /// `body` with a channel whose deadline is 1 s, at time 0, finished afterwards.
    static func withChannel(_ body: (EmbeddedChannel, EmbeddedEventLoop, IdleEvents) throws -> Void) throws {
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        defer { _ = try? channel.finish() }
        let head = HeadDeadline.handlers(timeout: .seconds(1))
        let events = IdleEvents()
        let sync = channel.pipeline.syncOperations
        try sync.addHandler(head.bytes)
        try sync.addHandler(ByteToMessageHandler(RequestDecoder(reason: .init(), maxBodyBytes: .max)))
        try sync.addHandler(head.parts)
        try sync.addHandler(events)
        try body(channel, loop, events)
    }

    /// The proxy's answer to the request before, written.
    static func answer(_ channel: EmbeddedChannel) throws {
        try channel.writeOutbound(HTTPServerResponsePart.head(HTTPResponseHead(version: .http1_1, status: .ok)))
        try channel.writeOutbound(HTTPServerResponsePart.end(nil))
    }

    static let request = "GET /v1/artists/0TnOYISbd1XYRBk9myaseg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

    @Test("a head sent a byte every 200 ms is reported late 1 s after the connection began, though bytes keep coming; and again while it stays late")
    func trickle() throws {
        try Self.withChannel { channel, loop, events in
            let began = loop.now
            var reports: [Int] = []
            for byte in Self.request.utf8.prefix(9) {
                loop.advanceTime(by: .milliseconds(200))
                try channel.writeInbound(ByteBuffer(bytes: [byte]))
                reports.append(events.count)
            }
            // At 1 s, then every quarter of the timeout (1.25, 1.5, 1.75 s) until the connection closes.
            #expect(reports == [0, 0, 0, 0, 1, 1, 2, 3, 4])
            #expect(events.late == 4, "its bytes began: a late head, not an idle connection")
            #expect(events.lateSince == Array(repeating: began, count: 4), "its time is the connection's, from its start")
        }
    }

    @Test("a whole request, then quiet: the head deadline says nothing (the idle timeout is the IdleStateHandler's)")
    func quietAfterRequest() throws {
        try Self.withChannel { channel, loop, events in
            try channel.writeInbound(ByteBuffer(string: Self.request))
            loop.advanceTime(by: .seconds(10))
            #expect(events.count == 0)
        }
    }

    @Test("after a request, the next head's time starts at its first byte, not at the end of the one before")
    func nextHeadFromItsFirstByte() throws {
        try Self.withChannel { channel, loop, events in
            try channel.writeInbound(ByteBuffer(string: Self.request))
            try Self.answer(channel)
            loop.advanceTime(by: .seconds(10))
            try channel.writeInbound(ByteBuffer(string: "GET /v1/artists/x HTTP/1.1\r\n"))
            loop.advanceTime(by: .milliseconds(900))
            try channel.writeInbound(ByteBuffer(string: "Host: 127.0.0.1\r\n"))
            #expect(events.count == 0)
            loop.advanceTime(by: .milliseconds(100))
            #expect(events.count == 1)
            // The head completed: no more reports.
            try channel.writeInbound(ByteBuffer(string: "\r\n"))
            loop.advanceTime(by: .seconds(5))
            #expect(events.count == 1)
        }
    }

    @Test("empty lines after a request (which servers ignore) begin no head; the head after them has its time from its first byte")
    func emptyLinesAreNoHead() throws {
        try Self.withChannel { channel, loop, events in
            try channel.writeInbound(ByteBuffer(string: Self.request))
            try Self.answer(channel)
            try channel.writeInbound(ByteBuffer(string: "\r\n"))
            loop.advanceTime(by: .seconds(5))
            try channel.writeInbound(ByteBuffer(string: "\n\r\n"))
            loop.advanceTime(by: .seconds(5))
            #expect(events.count == 0)
            try channel.writeInbound(ByteBuffer(string: "GET /v1/artists/x HTTP/1.1\r\n"))
            loop.advanceTime(by: .milliseconds(900))
            #expect(events.count == 0)
            loop.advanceTime(by: .milliseconds(100))
            #expect(events.late == 1)
        }
    }

    @Test("a pipelined head whose first bytes came while an answer was owed (in a read of their own, or in the read that ended the request before): its time starts once the answer is written (the proxy reads nothing meanwhile)", arguments: [false, true])
    func pipelinedHeadWaitsForTheAnswer(sameRead: Bool) throws {
        let next = "GET /v1/artists/x HTTP/1.1\r\n"
        try Self.withChannel { channel, loop, events in
            if sameRead {
                try channel.writeInbound(ByteBuffer(string: Self.request + next))
            } else {
                try channel.writeInbound(ByteBuffer(string: Self.request))
                try channel.writeInbound(ByteBuffer(string: next))
            }
            // A slow upstream: the answer takes 5 s.
            loop.advanceTime(by: .seconds(5))
            #expect(events.count == 0)
            try Self.answer(channel)
            loop.advanceTime(by: .milliseconds(999))
            #expect(events.count == 0)
            loop.advanceTime(by: .milliseconds(1))
            #expect(events.count == 1)
            #expect(events.late == 1, "a late head, not an idle connection")
        }
    }

    @Test("empty lines in the read that ended the request before begin nothing")
    func emptyLinesWithTheRequestBefore() throws {
        try Self.withChannel { channel, loop, events in
            try channel.writeInbound(ByteBuffer(string: Self.request + "\r\n"))
            try Self.answer(channel)
            loop.advanceTime(by: .seconds(5))
            #expect(events.count == 0)
        }
    }

    @Test("a body that comes slowly is not a head: no report while it comes, none after it ends")
    func slowBodyIsNotAHead() throws {
        try Self.withChannel { channel, loop, events in
            try channel.writeInbound(ByteBuffer(string: "PUT /v1/me/tracks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n"))
            for _ in 0..<10 {
                loop.advanceTime(by: .milliseconds(500))
                try channel.writeInbound(ByteBuffer(string: "x"))
            }
            loop.advanceTime(by: .seconds(5))
            #expect(events.count == 0)
        }
    }

    @Test("a connection that sends nothing is reported once its first head is late (a TLS handshake a byte at a time counts)")
    func nothingSent() throws {
        try Self.withChannel { channel, loop, events in
            loop.advanceTime(by: .milliseconds(999))
            #expect(events.count == 0)
            loop.advanceTime(by: .milliseconds(1))
            #expect(events.count == 1)
            #expect(events.late == 0, "no byte came: an idle connection, closed without an answer")
        }
    }
}
