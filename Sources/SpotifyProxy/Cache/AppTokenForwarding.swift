import NIOCore
import NIOHTTP1

/// The cache's way to Spotify: one whole GET with the app's token, with what every forwarded
/// request gets — a 401 for a stale token replayed once, a 429 reported to the governor, a 200
/// JSON body copied to the tee, an upstream failure counted.
struct AppTokenForwarding: CacheForwarding {
    /// Answers are held whole on this path; one larger than this (no Spotify JSON answer comes
    /// close) is cut off here and forwarded again, streaming, by the connection that asked.
    static let maxBodyBytes = 8 << 20

    let upstream: UpstreamClient
    let apiURL: String
    let tokens: any AccessTokenSource
    let governor: Governor
    let tee: TeeWriter?
    let metrics: ProxyMetrics

    func get(_ key: CacheKey, headers client: HTTPHeaders, validators: HTTPHeaders, on eventLoop: any EventLoop) async -> Result<UpstreamAnswer, ForwardFailure> {
        // The client's own validators are for its copy, not the cache's: the cache sends its own.
        var client = client
        for name in ["if-none-match", "if-modified-since", "etag"] { client.remove(name: name) }
        if client.first(name: "accept-language") == nil, !key.acceptLanguage.isEmpty { client.add(name: "Accept-Language", value: key.acceptLanguage) }
        var replayed = false
        while true {
            let token: String
            switch self.tokens.token(on: eventLoop) {
            case .ready(let value):
                token = value
            case .unavailable(let unavailable):
                return .failure(.noToken(unavailable))
            case .wait(let future):
                do {
                    token = try await future.get()
                } catch {
                    return .failure(.noToken(error as? TokenUnavailable ?? TokenUnavailable(reason: "\(error)", retryAfterSeconds: 1)))
                }
                // The governor was asked before the wait: a 429 may have limited the app meanwhile
                // (as the connection asks again after its own wait for a token).
                if let refusal = GovernorStage.refusal(self.governor.decide(.app)) { return .failure(.limited(refusal)) }
            }
            // As any forwarded request's: the client's headers minus hop-by-hop and the proxy's own.
            var headers = HeaderPolicy.upstreamHeaders(from: client, token: token)
            for (name, value) in validators { headers.append((name, value)) }
            let response: UpstreamClient.BufferedResponse
            do {
                response = try await self.upstream.perform(
                    method: "GET", url: self.apiURL + key.target, headers: headers, body: nil, on: eventLoop, maxBodyBytes: Self.maxBodyBytes)
            } catch {
                if error.kind == .tooLarge { return .failure(.tooLarge) }
                self.metrics.recordUpstreamFailure(error.kind)
                return .failure(.upstream(error))
            }
            if response.status == 401, !replayed, self.tokens.unauthorized(token: token) != .passThrough {
                replayed = true
                continue
            }
            let body = Array(response.body.readableBytesView)
            var clientRetryAfter: String?
            if response.status == 429 {
                let retryAfter = response.headers.first { $0.name.equalsIgnoringASCIICase("retry-after") }?.value
                clientRetryAfter = self.governor.rateLimited(.app, retryAfterHeader: retryAfter)
                if let reason = Governor.reason(inBody: body) { self.governor.reasonArrived(.app, reason: reason) }
            }
            var (answerHeaders, framing) = HeaderPolicy.clientHeaders(from: response.headers, rewriteLinks: false)
            if let clientRetryAfter { answerHeaders.replaceOrAdd(name: "Retry-After", value: clientRetryAfter) }
            // Each answer made from this one is framed anew.
            answerHeaders.remove(name: "Content-Length")
            if let tee = self.tee, framing.isJSON, response.status == 200 {
                var capture = tee.capture(key: key.target)
                capture.append(response.body)
                tee.submit(capture, key: key.target)
            }
            return .success(UpstreamAnswer(status: response.status, headers: answerHeaders, body: body))
        }
    }
}
