import NIOPosix
import SpotifyProxyTestSupport
import Testing

@testable import SpotifyProxy

/// The one `CURLSH` every curl handle carries (DNS answers and TLS sessions): each worker loop
/// has a multi handle, and so a connection pool, of its own, yet a session one of them made is
/// resumed by the others instead of a full handshake each.
@Suite("One curl share across the multi handles")
struct CurlShareTests {
    @Test("a worker loop's first connection resumes the TLS session the shared curl thread's connection made")
    func tlsSessionsAreShared() async throws {
        let upstream = try await TLSUpstream.start(body: "{}")
        defer { upstream.stop() }
        let configuration = UpstreamConfiguration(caBundle: upstream.caBundle)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var failure: (any Error)?
        do {
            try await UpstreamClient.withRunning(configuration: configuration) { client in
                try await WorkerTransportTests.withWorkerCurl(configuration: configuration) { loop, _ in
                    // The shared curl thread (a NIO loop's transfers): a full handshake.
                    let first = try await client.perform(
                        method: "GET", url: "\(upstream.baseURL)/v1/first", headers: [], body: nil, on: group.next())
                    // The worker loop's own multi handle cannot reuse that connection: it opens one.
                    let second = try await client.perform(
                        method: "GET", url: "\(upstream.baseURL)/v1/second", headers: [], body: nil, on: loop)
                    #expect(first.status == 200)
                    #expect(second.status == 200)
                }
            }
        } catch {
            failure = error
        }
        try await group.shutdownGracefully()
        if let failure { throw failure }

        let lines = upstream.accessLog.map { $0.split(separator: " ") }
        try #require(lines.count == 2, "\(upstream.accessLog)")
        #expect(lines[0][2] == "/v1/first" && lines[1][2] == "/v1/second")
        // Two connections: the second resumed the first's session ("r"), the first did not (".").
        #expect(lines[0][4] != lines[1][4], "\(upstream.accessLog)")
        #expect(lines[0][5] == ".")
        #expect(lines[1][5] == "r", "the worker's connection made a full handshake: \(upstream.accessLog)")
    }
}
