import NIOCore
import NIOPosix
import Testing

@testable import SpotifyProxy

@Suite("A transfer libcurl could not make a handle for", .timeLimit(.minutes(1)))
struct CurlHandleTests {
    /// A driver whose `curl_easy_init` always fails: commands go straight to a real multi handle.
    final class NoHandles: CurlDriver, @unchecked Sendable {
        let multi = CurlMulti(configuration: UpstreamConfiguration())
        func checkoutHandle() -> UnsafeMutableRawPointer? { nil }
        func returnHandle(_ handle: UnsafeMutableRawPointer) {}
        func submit(_ command: CurlCommand) { self.multi.execute(command) }
        func post(_ transfer: UpstreamTransfer) {}
    }

    final class Finish: UpstreamTransferDelegate, @unchecked Sendable {
        let promise: EventLoopPromise<UpstreamError?>
        init(_ promise: EventLoopPromise<UpstreamError?>) { self.promise = promise }
        func upstreamDidReceiveHead(_ transfer: UpstreamTransfer, status: Int, headers: [(name: String, value: String)]) {}
        func upstreamDidReceiveBody(_ transfer: UpstreamTransfer, _ buffer: ByteBuffer) {}
        func upstreamDidFinish(_ transfer: UpstreamTransfer, error: UpstreamError?) { self.promise.succeed(error) }
        func upstreamWantsRequestBody(_ transfer: UpstreamTransfer) {}
        func upstreamDidDeliverEvents(_ transfer: UpstreamTransfer) {}
    }

    @Test("curl_easy_init failed: the transfer finishes with an error (a 502 that says to retry), so its client is answered, not left waiting")
    func noHandle() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let driver = NoHandles()
        let promise = loop.makePromise(of: UpstreamError?.self)
        let delegate = Finish(promise)
        try await loop.submit {
            let transfer = UpstreamTransfer(
                request: UpstreamRequest(method: "GET", url: "http://127.0.0.1:1/v1/x", headers: [], body: .none), configuration: UpstreamConfiguration(),
                loop: driver, eventLoop: loop, delegate: delegate)
            transfer.start()
        }.get()
        let error = try await promise.futureResult.get()
        #expect(error == .noHandle)
        #expect(error?.status == 502)
        #expect(error?.message.contains("retry") == true)
        driver.multi.cleanup()
    }
}
