import FakeSpotify
import Foundation
import NIOCore
import NIOPosix
import SpotifyCatalog
import SpotifyProxy
import SpotifyProxyTestSupport
import Synchronization
import Testing

/// ``UpstreamClient`` against the fake Spotify, below the proxy: transfers started from several
/// event loops at once, kept-alive connections the upstream closes, shutdown.
@Suite("Upstream client: several event loops, idle connections closed upstream, shutdown", .timeLimit(.minutes(1)))
struct UpstreamClientTests {
    static let artist = "/v1/artists/0TnOYISbd1XYRBk9myaseg"

    /// Records where each event arrived and what the exchange came to.
    final class Recorder: UpstreamTransferDelegate, @unchecked Sendable {
        let eventLoop: any EventLoop
        let promise: EventLoopPromise<(status: Int, bytes: Int, error: UpstreamError?, offLoop: Int)>
        var status = 0
        var bytes = 0
        var offLoop = 0

        init(eventLoop: any EventLoop) {
            self.eventLoop = eventLoop
            self.promise = eventLoop.makePromise()
        }

        private func check() { if !self.eventLoop.inEventLoop { self.offLoop += 1 } }

        func upstreamDidReceiveHead(_ transfer: UpstreamTransfer, status: Int, headers: [(name: String, value: String)]) {
            self.check()
            self.status = status
        }
        func upstreamDidReceiveBody(_ transfer: UpstreamTransfer, _ buffer: ByteBuffer) {
            self.check()
            self.bytes += buffer.readableBytes
            transfer.consumed(buffer.readableBytes)
        }
        func upstreamDidFinish(_ transfer: UpstreamTransfer, error: UpstreamError?) {
            self.check()
            self.promise.succeed((self.status, self.bytes, error, self.offLoop))
        }
        func upstreamWantsRequestBody(_ transfer: UpstreamTransfer) { self.check() }
        func upstreamDidDeliverEvents(_ transfer: UpstreamTransfer) { self.check() }
    }

    /// An app token from the fake's accounts service, fetched through `client`.
    static func token(_ client: UpstreamClient, _ fake: FakeSpotify, on eventLoop: any EventLoop) async throws -> String {
        let basic = Data("fake-client-id:fake-client-secret".utf8).base64EncodedString()
        let response = try await client.perform(
            method: "POST", url: fake.tokenURL,
            headers: [("Authorization", "Basic \(basic)"), ("Content-Type", "application/x-www-form-urlencoded")],
            body: ByteBuffer(string: "grant_type=client_credentials"), on: eventLoop)
        return try #require(try JSONValue.parse(Data(response.body.readableBytesView))["access_token"]?.string)
    }

    /// Starts a GET of `url` on `eventLoop` (from that loop, as a connection handler does).
    static func get(
        _ client: UpstreamClient, _ url: String, token: String, on eventLoop: any EventLoop, servesClient: Bool = true
    ) async throws -> (status: Int, bytes: Int, error: UpstreamError?) {
        let recorder = try await eventLoop.submit { () -> Recorder in
            let recorder = Recorder(eventLoop: eventLoop)
            let request = UpstreamRequest(
                method: "GET", url: url, headers: [("Authorization", "Bearer \(token)")], body: .none, servesClient: servesClient)
            let transfer = client.startTransfer(request, on: eventLoop, delegate: recorder)
            transfer.endRequestBody()
            return recorder
        }.get()
        let result = try await recorder.promise.futureResult.get()
        #expect(result.offLoop == 0, "a delegate call arrived off its event loop")
        return (result.status, result.bytes, result.error)
    }

    /// Runs `body` with an event loop group of `threads` and a fake Spotify on it; both are shut
    /// down afterwards, whether `body` returns or throws.
    static func withFake(
        threads: Int, host: String = "127.0.0.1", _ body: (MultiThreadedEventLoopGroup, FakeSpotify) async throws -> Void
    ) async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let fake = try await FakeSpotify.start(group: group, host: host)
        do {
            try await body(group, fake)
        } catch {
            try? await fake.shutdown()
            try? await group.shutdownGracefully()
            throw error
        }
        try await fake.shutdown()
        try await group.shutdownGracefully()
    }

    @Test("transfers on every loop of a group run at once, each delivered on its own loop")
    func everyLoopItsOwn() async throws {
        try await Self.withFake(threads: 3) { group, fake in
            try await UpstreamClient.withRunning(configuration: UpstreamConfiguration()) { client in
                let loops = Array(group.makeIterator())
                let token = try await Self.token(client, fake, on: loops[0])
                try await withThrowingTaskGroup(of: (status: Int, bytes: Int, error: UpstreamError?).self) { tasks in
                    for index in 0..<60 {
                        tasks.addTask { try await Self.get(client, fake.baseURL + Self.artist, token: token, on: loops[index % loops.count]) }
                    }
                    var answered = 0
                    for try await result in tasks {
                        #expect(result.error == nil)
                        #expect(result.status == 200)
                        #expect(result.bytes > 500)
                        answered += 1
                    }
                    #expect(answered == 60)
                }
            }
        }
    }

    @Test("a kept-alive connection the upstream closes while idle is not used again: the next requests succeed")
    func parkedConnectionClosed() async throws {
        try await Self.withFake(threads: 1) { group, fake in
            try await UpstreamClient.withRunning(configuration: UpstreamConfiguration()) { client in
                let loop = group.next()
                let token = try await Self.token(client, fake, on: loop)
                for _ in 0..<5 {
                    let closed = try await Self.get(client, fake.baseURL + "/v1/test/fault/close-when-idle", token: token, on: loop)
                    #expect(closed.status == 200 && closed.bytes == 2 && closed.error == nil)
                    let next = try await Self.get(client, fake.baseURL + Self.artist, token: token, on: loop)
                    #expect(next.status == 200 && next.error == nil)
                }
                // The fake closed every connection it answered the fault on: curl opened a new one each time.
                #expect(fake.counters.connectionsOpened >= 6)
            }
        }
    }

    @Test("shutdown fails a transfer still running as stopped (it may have been sent), and refuses new ones as not sent")
    func shutdownCancels() async throws {
        try await Self.withFake(threads: 1) { group, fake in
            let loop = group.next()
            let box = Mutex<(client: UpstreamClient, token: String, stalled: Task<(status: Int, bytes: Int, error: UpstreamError?), any Error>)?>(nil)
            try await UpstreamClient.withRunning(configuration: UpstreamConfiguration()) { client in
                let token = try await Self.token(client, fake, on: loop)
                let before = fake.counters.apiRequests
                let stalled = Task { try await Self.get(client, fake.baseURL + "/v1/test/fault/stall", token: token, on: loop) }
                box.withLock { $0 = (client, token, stalled) }
                // The stalled request has reached the fake.
                #expect(try await eventually(10) { fake.counters.apiRequests == before + 1 })
            }
            let (client, token, stalled) = try #require(box.withLock { $0 })
            // The one sent may have reached Spotify; the one refused was not sent (answered differently, `UpstreamFailureAnswerTests`).
            #expect(try await stalled.value.error == .shutdown)
            #expect(try await Self.get(client, fake.baseURL + Self.artist, token: token, on: loop).error == .notSent)
        }
    }

    @Test("the HTTPS listener's grace period over: a client's transfer under way fails as stopped by the shutdown, one started later as never sent; the proxy's own (a token grant) go on")
    func clientTransfersStopped() async throws {
        try await Self.withFake(threads: 1) { group, fake in
            let loop = group.next()
            try await UpstreamClient.withRunning(configuration: UpstreamConfiguration()) { client in
                let token = try await Self.token(client, fake, on: loop)
                let before = fake.counters.apiRequests
                let stalled = Task { try await Self.get(client, fake.baseURL + "/v1/test/fault/stall", token: token, on: loop) }
                let own = Task { try await Self.get(client, fake.baseURL + "/v1/test/slow/2000", token: token, on: loop, servesClient: false) }
                #expect(try await eventually(10) { fake.counters.apiRequests == before + 2 })
                client.stopClientTransfers()
                #expect(try await stalled.value.error == .shutdown)
                #expect(try await Self.get(client, fake.baseURL + Self.artist, token: token, on: loop).error == .notSent)
                let ownResult = try await own.value
                #expect(ownResult.status == 200 && ownResult.error == nil)
                // The proxy's own exchanges still start.
                #expect(try await Self.get(client, fake.baseURL + Self.artist, token: token, on: loop, servesClient: false).status == 200)
            }
        }
    }
}
