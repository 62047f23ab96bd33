import CCurl
import CWorkerIO
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

        // nginx logs a request after its answer has gone: the client can be faster.
        #expect(try await eventually(5) { upstream.accessLog.count >= 2 })
        let lines = upstream.accessLog.map { $0.split(separator: " ") }
        try #require(lines.count == 2, "\(upstream.accessLog)")
        #expect(lines[0][2] == "/v1/first" && lines[1][2] == "/v1/second")
        // Two connections: the second resumed the first's session ("r"), the first did not (".").
        #expect(lines[0][4] != lines[1][4], "\(upstream.accessLog)")
        #expect(lines[0][5] == ".")
        #expect(lines[1][5] == "r", "the worker's connection made a full handshake: \(upstream.accessLog)")
    }

    @Test("a name one handle resolved is known to a worker loop's handles: the DNS cache is shared")
    func dnsIsShared() async throws {
        // The fake listens on 127.0.0.2 only. curl answers a `.localhost` name itself, with
        // 127.0.0.1 (and ::1), never asking a DNS server: only the shared cache can say 127.0.0.2.
        try await UpstreamClientTests.withFake(threads: 1, host: "127.0.0.2") { _, fake in
            let name = "dns-share.localhost"
            let url = "http://\(name):\(fake.port)"
            try #require(!Self.accepts(port: fake.port, on: "127.0.0.1"), "127.0.0.1:\(fake.port) is taken: the test cannot tell the addresses apart")

            // A handle carrying the share is told the name's address (curl's `--resolve`) and uses it.
            let easy = try #require(curl_easy_init())
            defer { curl_easy_cleanup(easy) }
            let resolve = curl_slist_append(nil, "\(name):\(fake.port):127.0.0.2")
            defer { curl_slist_free_all(resolve) }
            ccurl_easy_setopt_pointer(easy, CURLOPT_SHARE, spx_curl_share())
            ccurl_easy_setopt_slist(easy, CURLOPT_RESOLVE, resolve)
            ccurl_easy_setopt_string(easy, CURLOPT_URL, url + "/v1/first")
            ccurl_easy_setopt_long(easy, CURLOPT_NOBODY, 1)
            #expect(curl_easy_perform(easy) == CURLE_OK)

            // A worker loop's transfer (its own multi handle, no `--resolve`) finds the name in
            // the shared cache and reaches the fake, which answers it (a 401: no token was sent).
            try await UpstreamClient.withRunning(configuration: UpstreamConfiguration()) { client in
                try await WorkerTransportTests.withWorkerCurl(configuration: UpstreamConfiguration()) { loop, _ in
                    let answer = try await client.perform(method: "GET", url: url + "/v1/second", headers: [], body: nil, on: loop)
                    #expect(answer.status == 401)
                }
            }
        }
    }

    /// Something accepts TCP connections at `host`:`port`.
    private static func accepts(port: Int, on host: String) -> Bool {
        let easy = curl_easy_init()
        defer { curl_easy_cleanup(easy) }
        ccurl_easy_setopt_string(easy, CURLOPT_URL, "http://\(host):\(port)/")
        ccurl_easy_setopt_long(easy, CURLOPT_CONNECT_ONLY, 1)
        return curl_easy_perform(easy) == CURLE_OK
    }
}
