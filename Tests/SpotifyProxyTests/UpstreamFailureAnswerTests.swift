import NIOCore
import Testing

@testable import SpotifyProxy

@Suite("Upstream failures as the client hears them")
struct UpstreamFailureAnswerTests {
    @Test("Spotify unreachable or slow: 502 or 504; the proxy's own shutdown: 503 (with Retry-After when the method is idempotent), not the gateway's failure")
    func statuses() {
        let unreachable = LocalAnswer.upstreamFailure(UpstreamError(kind: .connect, message: "Connection refused"))
        #expect(unreachable.status == 502)
        #expect(String(buffer: unreachable.body).contains("could not reach the Spotify API (Connection refused)"))
        #expect(LocalAnswer.upstreamFailure(UpstreamError(kind: .timeout, message: "timed out")).status == 504)
        // Reached, but the answer broke off: not "could not reach".
        let broken = LocalAnswer.upstreamFailure(UpstreamError(kind: .protocolError, message: "Failure when receiving data from the peer"))
        #expect(broken.status == 502)
        #expect(String(buffer: broken.body).contains("the Spotify API's answer broke off or could not be read (Failure when receiving data from the peer)"))
        let shutdown = LocalAnswer.upstreamFailure(.shutdown)
        #expect(shutdown.status == 503)
        #expect(shutdown.headers["retry-after"] == ["1"])
        #expect(String(buffer: shutdown.body) == #"{"error":{"status":503,"message":"the proxy is shutting down and stopped this request before Spotify answered; retry it"}}"#)
        // A POST may already have reached Spotify: no "retry it", no Retry-After.
        let post = LocalAnswer.upstreamFailure(.shutdown, method: .POST)
        #expect(post.status == 503)
        #expect(post.headers["retry-after"].isEmpty)
        #expect(String(buffer: post.body).contains("it may have reached Spotify, so check before sending it again"))
        #expect(LocalAnswer.upstreamFailure(.shutdown, method: .PUT).headers["retry-after"] == ["1"])
        // Never sent (the curl loop had stopped before it started): safe to send again, whatever the method.
        let notSent = LocalAnswer.upstreamFailure(.notSent, method: .POST)
        #expect(notSent.status == 503)
        #expect(notSent.headers["retry-after"] == ["1"])
        #expect(String(buffer: notSent.body).contains("did not send this request to Spotify; retry it"))
        // Stopped before its body was sent whole: Spotify cannot have acted on it, whatever the method.
        let halfSent = LocalAnswer.upstreamFailure(.shutdown, method: .POST, bodyWhole: false)
        #expect(halfSent.status == 503 && halfSent.headers["retry-after"] == ["1"])
        #expect(String(buffer: halfSent.body).contains("before its body was sent whole, so Spotify cannot have acted on it; retry it"))
    }
}
