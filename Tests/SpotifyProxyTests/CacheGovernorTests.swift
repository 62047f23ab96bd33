import NIOCore
import NIOHTTP1
import NIOPosix
import Testing

@testable import SpotifyProxy

@Suite("The cache's way to Spotify and the governor")
struct CacheGovernorTests {
    /// A token source that makes every request wait, and says when one does.
    final class WaitingTokens: AccessTokenSource {
        let token: EventLoopPromise<String>
        let waiting: AsyncStream<Void>.Continuation
        init(_ token: EventLoopPromise<String>, waiting: AsyncStream<Void>.Continuation) {
            self.token = token
            self.waiting = waiting
        }
        func token(on eventLoop: any EventLoop) -> TokenLookup {
            self.waiting.yield()
            return .wait(self.token.futureResult)
        }
        func unauthorized(token: String) -> UnauthorizedVerdict { .passThrough }
        var readinessProblem: TokenUnavailable? { nil }
        var figures: TokenFigures { TokenFigures(refreshes: 0, failures: 0, expiresInSeconds: nil) }
    }

    @Test("a cache miss that waited for a token while a 429 limited the app is not sent: the governor is asked again after the wait")
    func limitedDuringTokenWait() async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let promise = loop.makePromise(of: String.self)
        let (waiting, continuation) = AsyncStream.makeStream(of: Void.self)
        let governor = Governor()
        // Nothing listens on port 1: a request sent anyway would fail as unreachable, not as limited.
        let result = try await UpstreamClient.withRunning(configuration: UpstreamConfiguration()) { client in
            let forwarding = AppTokenForwarding(
                upstream: client, apiURL: "http://127.0.0.1:1", tokens: WaitingTokens(promise, waiting: continuation), governor: governor, tee: nil,
                metrics: ProxyMetrics())
            async let result = forwarding.get(CacheKey(target: "/v1/artists/x"), headers: HTTPHeaders(), validators: HTTPHeaders(), on: loop)
            var iterator = waiting.makeAsyncIterator()
            _ = await iterator.next()
            governor.rateLimited(.app, retryAfter: .seconds(30))
            promise.succeed("token")
            return await result
        }
        guard case .failure(.limited(let refusal)) = result else {
            Issue.record("sent while limited: \(result)")
            return
        }
        #expect(refusal.status == 429)
        #expect(refusal.headers["retry-after"].first.flatMap { Int($0) }.map { (29...30).contains($0) } == true, "\(refusal.headers)")
    }
}
