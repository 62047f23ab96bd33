/// Where a request goes, from its request line alone (``RequestRouter``): one of the proxy's own
/// endpoints, a Spotify path to forward, or a refusal (an open-proxy attempt, a traversal,
/// a path outside `/v1/`).
public struct RouteStage: RequestStage {
    let ownAuthorities: Set<String>

    public init(ownAuthorities: Set<String>) {
        self.ownAuthorities = ownAuthorities
    }

    public func decide(_ request: inout ProxyRequest) -> StageDecision {
        switch RequestRouter.route(method: request.head.method, uri: request.head.uri, ownAuthorities: self.ownAuthorities) {
        case .forward(let target):
            request.target = target
        case .healthz:
            request.ownEndpoint = .healthz
        case .readyz:
            request.ownEndpoint = .readyz
        case .metrics:
            request.ownEndpoint = .metrics
        case .simpleSearch:
            request.ownEndpoint = .simpleSearch
        case .status:
            request.ownEndpoint = .status
        case .cachePurge:
            request.ownEndpoint = .cachePurge(prefix: QueryString.parse(request.head.uri)["prefix"] ?? "")
        case .reject(let error):
            return .answer(LocalAnswer(error))
        }
        return .continue
    }
}

/// The last stage: everything before it let the request through, so it goes upstream.
public struct ForwardStage: RequestStage {
    let rewriteLinks: Bool

    public init(rewriteLinks: Bool) {
        self.rewriteLinks = rewriteLinks
    }

    public func decide(_ request: inout ProxyRequest) -> StageDecision {
        // An own endpoint that no stage answered must not reach Spotify as a path of its own.
        guard request.ownEndpoint == nil else {
            return .answer(LocalAnswer(SpotifyError(status: 500, message: "no request stage answered \(request.head.uri)")))
        }
        // Rewriting (or transforming) changes a body's length, which a HEAD answer cannot know
        // without the body.
        let headViaGET = request.head.method == .HEAD && (self.rewriteLinks || request.transform != nil)
        return .forward(
            ForwardPlan(
                method: headViaGET ? "GET" : request.head.method.rawValue, target: request.target, body: request.body,
                expectContinue: request.expectContinue, headViaGET: headViaGET, credential: request.credential,
                transform: request.transform, cache: request.cache, hold: request.hold, assembly: request.assembly,
                assembleFirst: request.assembleFirst, removedEndpoint: request.removedEndpoint, bodyEdit: request.bodyEdit))
    }
}
