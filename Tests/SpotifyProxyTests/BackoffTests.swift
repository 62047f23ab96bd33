import SpotifyProxy
import Testing

@Suite("Backoff (shared by the token refresher and the tee's replays)")
struct BackoffTests {
    @Test("doubles from the initial delay up to the maximum; a success starts again")
    func doubling() {
        var backoff = Backoff(initial: .milliseconds(250), maximum: .seconds(10))
        let delays = (0..<8).map { _ in backoff.fail(jitter: 1) }
        #expect(delays == [.milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(10), .seconds(10)])
        #expect(backoff.failures == 8)
        backoff.succeed()
        #expect(backoff.failures == 0)
        #expect(backoff.fail(jitter: 1) == .milliseconds(250))
    }

    @Test("equal jitter: never less than half the delay", arguments: [(0.0, 2000), (0.5, 3000), (0.999, 3998)])
    func jitter(jitter: Double, milliseconds: Int64) {
        var backoff = Backoff(initial: .seconds(1), maximum: .seconds(30))
        _ = backoff.fail(jitter: 1)
        _ = backoff.fail(jitter: 1)
        #expect(backoff.fail(jitter: jitter) == .milliseconds(milliseconds))
    }
}
