import NIOCore
import NIOHTTP1

/// What the stages know of a request while they decide what to do with it. Each stage may
/// refine it for the ones after it (the route stage sets the target to forward).
public struct ProxyRequest: Sendable {
    public let head: HTTPRequestHead
    /// The origin-form target to forward: the request target until the route stage has run.
    public var target: String
    /// One of the proxy's own endpoints, when the route stage found one.
    public var ownEndpoint: OwnEndpoint?
    /// The request body's framing, once the framing stage has read it.
    public var body: UpstreamRequest.Body = .none
    /// The client waits for `100 Continue` before sending the body.
    public var expectContinue = false
    /// Whose token it carries upstream (the token choice stage decides).
    public var credential: Credential = .app
    /// What the answer becomes before it reaches the client (the simple search's compact list).
    public var transform: ResponseTransform?
    /// The client connected from this machine (a loopback address).
    public var fromLoopback = false
    /// The access key presented (the access stage checks it; nil while keys are off).
    public var key: AccessKey?
    /// Goes upstream through the shared cache (the cache stage decides).
    public var cache: CacheDirective?
    /// Held this long before going upstream (the governor's `wait` policy, or its pacing).
    public var hold: GovernorHold?
    /// How a development-mode app's refused request is made of allowed ones.
    public var assembly: Assembly?
    /// Assemble at once (development mode is on or known), instead of after a refusal.
    public var assembleFirst = false
    /// What to tell the client when Spotify refuses this request because it removed the
    /// endpoint (``RemovedEndpoint``): for development-mode apps while the mode is not known,
    /// or for new apps in 2024.
    public var removedEndpoint: Removal?
    /// The body's first bytes changed on the way upstream (``RequestBodyEdit``).
    public var bodyEdit: RequestBodyEdit?
    /// The head's size as the client sent it, before the proxy added its `X-Request-Id`
    /// (`server.max_header_bytes` counts this); nil: `head`'s own.
    public var receivedHeadBytes: Int?

    public init(head: HTTPRequestHead) {
        self.head = head
        self.target = head.uri
    }

    /// A GET or HEAD with the app's token and no body, which can go upstream through the cache
    /// (answered whole, shared). `Content-Length: 0` is no body (some clients send it with
    /// every request); a chunked body, unread yet, is one.
    var isWholeAppRead: Bool {
        (self.head.method == .GET || self.head.method == .HEAD) && self.credential == .app
            && (self.body == .none || self.body == .known(0))
    }

    /// It carries user `label`'s token; a refusal is held to be explained when the login lacks a
    /// scope (``ScopeRefusal``), unless another transform holds its answer.
    mutating func useUserToken(of label: String) {
        self.credential = .user(label)
        if self.transform == nil { self.transform = .refusal }
    }
}

/// The proxy's own endpoints.
public enum OwnEndpoint: Sendable, Equatable {
    case healthz
    case readyz
    case metrics
    /// `/simple/search`: answered from Spotify's search (``SimpleSearchStage``).
    case simpleSearch
    /// `POST /admin/cache/purge`: empties the cache of answers whose target starts with `prefix`.
    case cachePurge(prefix: String)
    /// `GET /admin/status`: readiness, tokens, governor, cache, tee, reloads, requests per key.
    case status
}

/// What a stage concluded.
public enum StageDecision: Sendable, Equatable {
    /// Nothing to say: the next stage decides.
    case `continue`
    /// The proxy answers by itself; no later stage runs and nothing goes upstream.
    case answer(LocalAnswer)
    /// Send it upstream, as planned.
    case forward(ForwardPlan)
}

/// How a request goes upstream (the token is added when it is at hand).
public struct ForwardPlan: Sendable, Equatable {
    /// The method sent upstream: a HEAD whose body length must be counted goes as GET.
    public var method: String
    /// The origin-form target, byte for byte as received.
    public var target: String
    public var body: UpstreamRequest.Body
    /// Answer `100 Continue` before the body comes.
    public var expectContinue: Bool
    /// A HEAD sent as GET, so that the rewritten body's length can be announced.
    public var headViaGET: Bool
    /// Whose token it carries.
    public var credential: Credential
    /// What the answer becomes before it reaches the client.
    public var transform: ResponseTransform?
    /// Goes upstream through the shared cache, as one whole GET.
    public var cache: CacheDirective?
    /// Held this long first (the governor's `wait` policy, or its pacing).
    public var hold: GovernorHold?
    /// How a development-mode app's refused request is made of allowed ones.
    public var assembly: Assembly?
    /// Assemble at once, instead of after a refusal.
    public var assembleFirst = false
    /// What to tell the client when Spotify refuses it for a removed endpoint.
    public var removedEndpoint: Removal?
    /// The body's first bytes changed on the way upstream.
    public var bodyEdit: RequestBodyEdit?

    public init(
        method: String, target: String, body: UpstreamRequest.Body, expectContinue: Bool, headViaGET: Bool, credential: Credential = .app,
        transform: ResponseTransform? = nil, cache: CacheDirective? = nil, hold: GovernorHold? = nil, assembly: Assembly? = nil,
        assembleFirst: Bool = false, removedEndpoint: Removal? = nil, bodyEdit: RequestBodyEdit? = nil
    ) {
        self.method = method
        self.target = target
        self.body = body
        self.expectContinue = expectContinue
        self.headViaGET = headViaGET
        self.credential = credential
        self.transform = transform
        self.cache = cache
        self.hold = hold
        self.assembly = assembly
        self.assembleFirst = assembleFirst
        self.removedEndpoint = removedEndpoint
        self.bodyEdit = bodyEdit
    }
}

/// One step of deciding what to do with a request: a pure question about a ``ProxyRequest``.
/// Adding a feature to the request path (an access key, a governor, a cache) means writing one
/// type that conforms and putting it in ``RequestStages/standard(settings:endpoints:)``.
public protocol RequestStage: Sendable {
    func decide(_ request: inout ProxyRequest) -> StageDecision
}

/// The ordered stages, run for each request head.
public struct RequestStages: Sendable {
    /// What the stages decided.
    public enum Decision: Sendable, Equatable {
        case answer(LocalAnswer)
        case forward(ForwardPlan)
    }

    public let stages: [any RequestStage]

    public init(_ stages: [any RequestStage]) {
        self.stages = stages
    }

    /// Header limits → route → access key → own endpoints → simple search → body framing →
    /// token choice → key budget → development mode → cache → governor → forward.
    public static func standard(
        settings: ListenerSettings, endpoints: OwnEndpoints, users: any UserDirectory, governor: any RequestGovernor,
        cache: ResponseCache? = nil, devMode: DevMode = DevMode(setting: .off), access: AccessControl = AccessControl(.init())
    ) -> RequestStages {
        RequestStages([
            HeaderLimitStage(limits: settings.limits),
            RouteStage(ownAuthorities: settings.ownAuthorities),
            AccessStage(access: access),
            OwnEndpointStage(endpoints: endpoints),
            SimpleSearchStage(),
            BodyFramingStage(limits: settings.limits),
            TokenChoiceStage(rules: settings.userPaths, users: users, commands: settings.commands),
            // After every refusal that costs Spotify nothing, before what may reach it.
            KeyBudgetStage(access: access),
            DevModeStage(devMode: devMode, users: users, userPaths: settings.userPaths),
            CacheStage(cache: cache, rendering: AnswerRendering(settings: settings)),
            GovernorStage(governor: governor),
            ForwardStage(rewriteLinks: settings.rewriteLinks),
        ])
    }

    /// Runs the stages in order until one answers or forwards; `request` is what they saw.
    public func decide(_ request: inout ProxyRequest) -> Decision {
        for stage in self.stages {
            switch stage.decide(&request) {
            case .continue: continue
            case .answer(let answer): return .answer(answer)
            case .forward(let plan): return .forward(plan)
            }
        }
        // The list ends with ``ForwardStage``; a list that does not is a programming error,
        // answered rather than crashed on.
        return .answer(LocalAnswer(SpotifyError(status: 500, message: "no request stage decided what to do with this request")))
    }
}
