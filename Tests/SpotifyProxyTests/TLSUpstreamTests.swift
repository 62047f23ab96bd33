import FakeSpotify
import SpotifyProxy
import SpotifyProxyTestSupport
import Testing

@Suite("HTTPS upstream (nginx, HTTP/2, throwaway CA)")
struct TLSUpstreamTests {
    @Test("requests reach an HTTPS upstream over HTTP/2 with the injected token; links are rewritten")
    func http2OverTLS() async throws {
        let upstream = try await TLSUpstream.start(body: #"{"href":"{BASE}/v1/artists/x"}"#)
        defer { upstream.stop() }
        try await withProxy(configure: { config in
            config.apiURL = upstream.baseURL
            config.upstream.caBundle = upstream.caBundle
        }) { harness in
            let client = try await harness.client()
            let response = try await client.request("GET", "/v1/artists/x?market=SE", headers: [("Authorization", "Bearer None")])
            #expect(response.status == 200)
            #expect(response.text == #"{"href":"http://127.0.0.1/v1/artists/x"}"#)
            // nginx logs a request after its answer has gone: the client can be faster.
            #expect(try await eventually(5) { !upstream.accessLog.isEmpty })
            let log = upstream.accessLog
            #expect(log.count == 1)
            #expect(log.first?.hasPrefix("HTTP/2.0 GET /v1/artists/x?market=SE Bearer fake-at-") == true, "\(log)")
            await client.close()
        }
    }

    @Test("an upstream certificate the CA bundle does not vouch for is refused: 502, nothing sent")
    func verificationIsOn() async throws {
        let upstream = try await TLSUpstream.start(body: "{}")
        defer { upstream.stop() }
        // The system CA bundle does not know the throwaway CA.
        try await withProxy(configure: { $0.apiURL = upstream.baseURL }) { harness in
            let client = try await harness.client()
            let response = try await client.request("GET", "/v1/artists/x")
            #expect(response.status == 502)
            #expect(response.text.contains("could not reach the Spotify API"))
            #expect(upstream.accessLog.isEmpty)
            await client.close()
        }
    }
}
