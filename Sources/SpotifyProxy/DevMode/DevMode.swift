import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SpotifyCatalog
import Synchronization

/// `[spotify] dev_mode`: whether Spotify treats the app as a development-mode app (batch
/// `?ids=` endpoints and the other removed endpoints 403 "Forbidden", `limit` above 10 on search
/// and artist albums 400), so that the proxy makes those answers from allowed requests, and
/// explains the removed endpoints it cannot make. `auto` learns it from the first such refusal.
public enum DevModeSetting: String, Sendable {
    case auto, on, off
}

/// What the proxy knows of development mode, and its counters.
public final class DevMode: Sendable {
    /// In `/readyz` and `/admin/status` as `dev_mode` (``ProxyStatus/encoder()``'s snake case).
    public struct Status: Sendable, Equatable, Codable {
        public var setting: String
        /// Assembling now: forced on, or learned from a refusal.
        public var active: Bool
        public var detected: Bool
        public var limitCap: Int
        public var batchesAssembled: Int
        public var pagesAssembled: Int
    }

    public let setting: DevModeSetting
    private let state = Mutex<(detected: Bool, batches: Int, pages: Int)>((false, 0, 0))
    /// Says when `auto` learns development mode.
    private let logger: Logger?

    public init(setting: DevModeSetting, logger: Logger? = nil) {
        self.setting = setting
        self.logger = logger
    }

    public var active: Bool {
        switch self.setting {
        case .on: true
        case .off: false
        case .auto: self.state.withLock { $0.detected }
        }
    }

    /// Spotify refused `assembly`'s request with `answer`: true (and, in `auto`, learned) when
    /// that is a development-mode refusal the assembly answers — 403 for a batch, 400
    /// "Invalid limit" for a page.
    public func refused(_ assembly: Assembly, with answer: UpstreamAnswer) -> Bool {
        guard self.setting != .off else { return false }
        let refusal: Bool
        switch assembly {
        case .batch: refusal = Self.isRemovedEndpointRefusal(answer)
        case .pages: refusal = answer.status == 400 && String(decoding: answer.body, as: UTF8.self).contains("Invalid limit")
        }
        guard refusal else { return false }
        self.learn()
        return true
    }

    /// Spotify answered `answer` to a request of an endpoint it removed: the status to answer
    /// with the removal's message when that is its refusal, else nil. A development-mode
    /// refusal (403 "Forbidden"), on either table's endpoints, teaches `auto` the mode.
    public func refusal(of removal: Removal, in answer: UpstreamAnswer) -> Int? {
        switch removal.when {
        case .developmentMode2026:
            guard self.setting != .off, Self.isRemovedEndpointRefusal(answer) else { return nil }
            self.learn()
            return removal.status
        case .playlistItems2026:
            guard self.setting != .off, Self.isRemovedEndpointRefusal(answer) else { return nil }
            return removal.status
        case .newApps2024:
            // A development-mode app may hear the February 2026 refusal on them too (a category's
            // playlists are below /browse/categories…): explained as well, and it teaches the mode.
            if Self.isRemovedEndpointRefusal(answer) {
                if self.setting != .off { self.learn() }
                return 403
            }
            return Self.isRemovedIn2024Refusal(answer) ? answer.status : nil
        }
    }

    /// Spotify's answer to a development-mode app calling an endpoint removed for it: 403
    /// "Forbidden" (facts sheet: spotify-to-plex#131). Its other 403s say something else (the
    /// owner's Premium, a user not allow-listed, a missing scope) and teach nothing.
    static func isRemovedEndpointRefusal(_ answer: UpstreamAnswer) -> Bool {
        guard answer.status == 403, let body = try? JSONValue.parse(Data(answer.body)) else { return false }
        return body["error"]?["message"]?.string == "Forbidden"
    }

    /// Spotify's answer to an app created since 2024-11-27 calling an endpoint removed for it:
    /// 404 "Not Found" (lidify#24, spotify-web-api-php#280) or 403 with no message
    /// (error-403-no-message.json). Its other errors (an unknown id's 404, a scope's 403) say so.
    static func isRemovedIn2024Refusal(_ answer: UpstreamAnswer) -> Bool {
        guard answer.status == 403 || answer.status == 404, let error = (try? JSONValue.parse(Data(answer.body)))?["error"] else { return false }
        let message = error["message"]?.string
        return answer.status == 404 ? message == "Not Found" : message == nil
    }

    private func learn() {
        let learned = self.state.withLock { state in
            defer { state.detected = true }
            return !state.detected
        }
        if learned, self.setting == .auto, let logger = self.logger {
            logger.notice(
                "Spotify answered as it answers a development-mode app: from now on the proxy assembles batch ?ids= answers and pages above the limit cap from allowed requests, and answers the endpoints Spotify removed for such apps itself ([spotify] dev_mode = \"auto\")")
        }
    }

    func counted(_ assembly: Assembly) {
        self.state.withLock { state in
            if case .batch = assembly { state.batches += 1 } else { state.pages += 1 }
        }
    }

    public var status: Status {
        self.state.withLock { state in
            Status(
                setting: self.setting.rawValue, active: self.setting == .on || (self.setting == .auto && state.detected),
                detected: state.detected, limitCap: Assembly.limitCap, batchesAssembled: state.batches, pagesAssembled: state.pages)
        }
    }
}

/// Batch and over-the-cap page requests meet development mode here: while it is active they
/// are assembled from allowed requests at once; in `auto` before it is known they go upstream
/// through the cache (answered whole), so that a refusal can still be answered by assembling.
public struct DevModeStage: RequestStage {
    let devMode: DevMode
    /// Whose playlist a `POST /v1/users/{id}/playlists` creates.
    let users: any UserDirectory
    /// `[users] user_paths`: the own playlists by id are asked with a user's token only where
    /// `GET /v1/me/playlists` would carry one.
    let userPaths: [UserPathRule]

    public init(devMode: DevMode, users: any UserDirectory, userPaths: [UserPathRule] = UserPathRule.defaults) {
        self.devMode = devMode
        self.users = users
        self.userPaths = userPaths
    }

    public func decide(_ request: inout ProxyRequest) -> StageDecision {
        // An endpoint Spotify replaced for such apps with one every app has: a playlist's
        // /tracks with its /items (a read answered in the old shape, so that clients written for
        // /tracks, tekore 6, keep working; a removal's body edited), a library write by type
        // with /v1/me/library (tekore 6's saved_tracks_add, follow, playlist_follow). An addition
        // or a reordering (the same body and answer) goes there before the mode is known too;
        // the others only once it is (before, Spotify's refusal, which teaches the mode, sends
        // them there: ``ProxyConnection``).
        if self.devMode.setting != .off,
            let replacement = RemovedEndpoint.replacement(method: request.head.method, target: request.target, userID: self.userID(request)),
            replacement.always || self.devMode.active
        {
            request.target = replacement.target
            if let transform = replacement.transform { request.transform = transform }
            request.bodyEdit = replacement.bodyEdit
        }
        // A playlist created for the logged-in user by its id (tekore 6's playlist_create), which
        // Spotify now takes only as POST /v1/me/playlists, which every app has: the same body and
        // answer, so it goes there before the mode is known too. For another user it stays
        // refused, as Spotify refuses it.
        if request.head.method == .POST, case .user(let label) = request.credential, self.devMode.setting != .off,
            let owner = RemovedEndpoint.playlistOwner(target: request.target),
            let id = self.users.spotifyUserID(of: label), owner == id
        {
            request.target = RemovedEndpoint.mePlaylists(keepingQueryOf: request.target)
        }
        // The logged-in user's own playlists by its id (spotipy's and tekore's user_playlists),
        // which Spotify removed for such apps: once the mode is known, asked as GET
        // /v1/me/playlists with that user's token, the user the request would get for /v1/me (the
        // same list: with its own token, a user's /users/{id}/playlists holds its private ones too).
        var ownPlaylists: EndpointReplacement?
        if request.head.method == .GET || request.head.method == .HEAD, let owner = RemovedEndpoint.playlistOwner(target: request.target),
            self.devMode.setting != .off, let label = self.ownUser(request, owner: owner), self.users.spotifyUserID(of: label) == owner
        {
            let replacement = EndpointReplacement(target: RemovedEndpoint.mePlaylists(keepingQueryOf: request.target), credential: .user(label))
            if self.devMode.active {
                request.useUserToken(of: label)
                request.target = replacement.target
            } else {
                // Before: Spotify's refusal sends it there (``ProxyConnection``).
                ownPlaylists = replacement
            }
        }
        // A playlist's items, which Spotify lists to a development-mode app only for the current
        // user's own playlists and those they collaborate on: read with the token of the user
        // /v1/me would get, once the mode is known; before, as sent, and Spotify's refusal of the
        // app's token (which teaches the mode) sends it again so. A refusal left is explained.
        if request.head.method == .GET || request.head.method == .HEAD, request.credential == .app, self.devMode.setting != .off,
            RemovedEndpoint.isPlaylistItems(request.target)
        {
            let reader = self.ownUser(request, owner: nil)
            var restriction = RemovedEndpoint.playlistItemsRestriction(user: reader, viaKey: request.key != nil, setting: self.devMode.setting)
            if self.devMode.active {
                // Spotify refuses the app's token there: said at once, without asking it.
                guard let reader else { return .answer(LocalAnswer(SpotifyError(status: restriction.status, message: restriction.message))) }
                request.useUserToken(of: reader)
            } else if let reader {
                restriction.replacement = EndpointReplacement(
                    target: request.target, transform: request.transform, credential: .user(reader),
                    refusal: RemovedEndpoint.playlistItemsRestriction(user: reader, viaKey: request.key != nil, setting: self.devMode.setting).message)
            }
            request.removedEndpoint = restriction
            // Held whole, so that a refusal can be explained (or sent again): an app's read
            // through the cache, a user's by the refusal transform (``useUserToken(of:)``).
            if request.isWholeAppRead { request.cache = Self.directive(request) }
            return .continue
        }
        // An endpoint removed with nothing to make it from: Spotify's bare 403 (or 404), explained.
        // Once development mode is known the proxy answers it (a development-mode app has none of
        // either table's). Before, a GET goes upstream through the cache (answered whole), so that
        // Spotify's 403 can teach the mode and be explained; one removed for new apps in 2024 always does.
        if let removal = RemovedEndpoint.removal(method: request.head.method, target: request.target, setting: self.devMode.setting) {
            if self.devMode.active {
                // Spotify was not asked: say why the proxy answered, and how to tell it otherwise.
                let message = removal.when == .newApps2024 ? "\(removal.message); \(RemovedEndpoint.modeNote(self.devMode.setting))" : removal.message
                return .answer(LocalAnswer(SpotifyError(status: removal.status, message: message)))
            }
            request.removedEndpoint = removal
            var replacement = ownPlaylists ?? RemovedEndpoint.replacement(method: request.head.method, target: request.target, userID: self.userID(request))
            // A playlist's /tracks read goes again as its /items, which such an app reads only with
            // the current user's token (above).
            if let items = replacement, request.head.method == .GET || request.head.method == .HEAD, RemovedEndpoint.isPlaylistItems(items.target) {
                let reader: String? =
                    if case .user(let label) = request.credential { label } else { self.ownUser(request, owner: nil) }
                if let reader {
                    replacement?.credential = .user(reader)
                    replacement?.refusal = RemovedEndpoint.playlistItemsRestriction(user: reader, viaKey: request.key != nil, setting: self.devMode.setting).message
                }
            }
            request.removedEndpoint?.replacement = replacement
            guard request.isWholeAppRead else {
                // A write, or a user's request: not through the cache, but held whole, so that
                // Spotify's refusal can be explained (and teach the mode) all the same.
                if request.transform == nil { request.transform = .refusal }
                return .continue
            }
            // (The cache stage runs after this one and keeps the directive, or answers from the cache.)
            request.cache = Self.directive(request)
            return .continue
        }
        guard self.devMode.setting != .off, request.isWholeAppRead else { return .continue }
        let found: Assembly?
        do {
            found = try Assembly.of(request.target)
        } catch {
            // Spotify refuses it in any mode; a development-mode app would hear only "Forbidden"
            // (a batch) or about the wrong parameter. Once the mode is known the proxy answers.
            // The mode is read only for removed endpoints and from here: a plain single-item GET takes no lock.
            if self.devMode.active { return .answer(LocalAnswer(SpotifyError(status: 400, message: error.message))) }
            // Before, Spotify answers (an extended-mode app's 400 passes as it is), through the
            // cache, answered whole: a development-mode app's bare 403 "Forbidden" on the batch
            // becomes the 400 in Spotify's words, and teaches the mode.
            request.removedEndpoint = Removal(when: .developmentMode2026, status: 400, message: error.message)
            request.cache = Self.directive(request)
            return .continue
        }
        guard let assembly = found else { return .continue }
        request.assembly = assembly
        request.assembleFirst = self.devMode.active
        request.cache = Self.directive(request)
        return .continue
    }

    /// The Spotify id of the user whose token `request` carries, when its login told it.
    private func userID(_ request: ProxyRequest) -> String? {
        guard case .user(let label) = request.credential else { return nil }
        return self.users.spotifyUserID(of: label)
    }

    /// The user `request` would get for `GET /v1/me/playlists`: the one a `user_paths` rule
    /// already chose for it, else, where the rules send that path with a user's token, the one
    /// the token choice would choose (``TokenChoiceStage/requestedUser(_:)``); with several users
    /// logged in and none named, the one whose Spotify id is `owner` (the path's), if given; else nil.
    func ownUser(_ request: ProxyRequest, owner: String?) -> String? {
        if case .user(let label) = request.credential { return label }
        guard self.userPaths.contains(where: { $0.matches(method: "GET", path: "/v1/me/playlists") }),
            case .user(let requested) = TokenChoiceStage.requestedUser(request)
        else { return nil }
        switch self.users.resolve(requested) {
        case .user(let label):
            return label
        case .ambiguous(let labels):
            // The id in the path names the user the request means, when exactly one has it.
            guard let owner else { return nil }
            let owners = labels.filter { self.users.spotifyUserID(of: $0) == owner }
            return owners.count == 1 ? owners[0] : nil
        case .none, .unknown:
            return nil
        }
    }

    /// Through the cache, answered whole, when the cache stage would not send it there.
    static func directive(_ request: ProxyRequest) -> CacheDirective {
        CacheDirective(key: CacheKey(target: request.target, for: request.head))
    }
}

/// Makes an assembly's answer: each part through the cache (a stored answer first, identical
/// parts coalesced), at most `concurrency` upstream at once, then the batch or page rebuilt.
struct DevModeAssembler {
    let cache: ResponseCache
    let devMode: DevMode
    static let concurrency = 4

    func answer(_ assembly: Assembly, headers: HTTPHeaders, on eventLoop: any EventLoop) -> EventLoopFuture<CacheOutcome> {
        let targets: [String]
        switch assembly {
        case .batch(_, let parts): targets = parts
        case .pages(let request): targets = request.parts
        }
        let language = headers.first(name: "accept-language")
        // A batch's id of the wrong length is null whatever Spotify holds: it is not asked for
        // (nor paced, nor refused while Spotify limits the app).
        let known: [CacheOutcome?] = targets.map { target in
            guard case .batch = assembly, Assembly.isNullInBatch(part: target, status: 400) else { return nil }
            return .answer(UpstreamAnswer(status: 400, headers: HTTPHeaders(), body: []), .hit(detail: nil), age: nil)
        }
        let asked = targets.indices.filter { known[$0] == nil }.map { CacheKey(target: targets[$0], acceptLanguage: language) }
        return self.fetch(asked, headers: headers, on: eventLoop).map { fetched in
            // In order; past a failure (which is the answer) the rest were not asked for.
            var rest = fetched.makeIterator()
            let outcomes = known.compactMap { $0 ?? rest.next() }
            var hits = true
            var answers: [UpstreamAnswer] = []
            var ages: [Int?] = []
            for outcome in outcomes {
                switch outcome {
                case .failed(let failure):
                    return .failed(failure)
                case .tooLarge:
                    return .failed(ForwardFailure.tooLarge.answer)
                case .answer(let answer, let status, let age, _):
                    hits = hits && status.hit
                    answers.append(answer)
                    ages.append(age)
                }
            }
            var status = hits ? CacheStatus.hit(detail: "dev-mode-assembled") : CacheStatus()
            if !hits {
                status.forward = .miss
                status.detail = "dev-mode-assembled"
            }
            var headers = HTTPHeaders([("Content-Type", "application/json; charset=utf-8")])
            if let cacheControl = Self.cacheControl(of: Array(zip(answers, ages))) { headers.add(name: "Cache-Control", value: cacheControl) }
            switch assembly {
            case .batch(let key, let parts):
                // A part that is null in Spotify's batch answer is null here; any other refusal
                // (a 400 for a bad `market`) or failure is the answer.
                let null = zip(parts, answers).map { Assembly.isNullInBatch(part: $0, status: $1.status) }
                if let failed = zip(answers, null).first(where: { $0.0.status != 200 && !$0.1 })?.0 {
                    return .answer(failed, status, age: nil)
                }
                let body = Assembly.batchBody(key: key, parts: zip(answers, null).map { $1 || $0.status != 200 ? nil : $0.body })
                self.devMode.counted(assembly)
                return .answer(UpstreamAnswer(status: 200, headers: headers, body: body), status, age: nil)
            case .pages(let request):
                if let failed = answers.first(where: { $0.status != 200 }) { return .answer(failed, status, age: nil) }
                guard let body = request.assemble(answers.map(\.body)) else {
                    return .failed(LocalAnswer.afterUpstream(SpotifyError(status: 502, message: "Spotify's pages could not be read as JSON to assemble the page asked for")))
                }
                self.devMode.counted(assembly)
                return .answer(UpstreamAnswer(status: 200, headers: headers, body: body), status, age: nil)
            }
        }
    }

    /// The assembled answer's `Cache-Control`, from its parts' 200 answers (a null part, a 404,
    /// says nothing): fresh for as long as the least fresh of them is still (its `max-age` less
    /// its age in the cache), `private` if one is. None when a part says nothing of it, or
    /// forbids storing.
    static func cacheControl(of parts: [(answer: UpstreamAnswer, age: Int?)]) -> String? {
        var remaining = Int.max
        var isPrivate = false
        for (answer, age) in parts where answer.status == 200 {
            let control = CacheControl(answer.headers["cache-control"])
            guard let maxAge = control.maxAge, !control.noStore, !control.noCache else { return nil }
            isPrivate = isPrivate || control.isPrivate
            remaining = min(remaining, max(0, maxAge - (age ?? 0)))
        }
        guard remaining != Int.max else { return nil }
        return "\(isPrivate ? "private" : "public"), max-age=\(remaining)"
    }

    /// The parts' outcomes in order, `concurrency` at a time; after a chunk with a failure (the
    /// governor's refusal, Spotify unreachable), which is the answer, no more are asked for.
    private func fetch(_ keys: [CacheKey], headers: HTTPHeaders, on eventLoop: any EventLoop) -> EventLoopFuture<[CacheOutcome]> {
        var chunks: [[CacheKey]] = []
        var start = 0
        while start < keys.count {
            chunks.append(Array(keys[start..<min(start + Self.concurrency, keys.count)]))
            start += Self.concurrency
        }
        var result = eventLoop.makeSucceededFuture([CacheOutcome]())
        for chunk in chunks {
            result = result.flatMap { done in
                if done.contains(where: { if case .failed = $0 { true } else { false } }) { return eventLoop.makeSucceededFuture(done) }
                let futures = chunk.map { self.cache.answer($0, headers: headers, on: eventLoop) }
                return EventLoopFuture.whenAllSucceed(futures, on: eventLoop).map { done + $0 }
            }
        }
        return result
    }
}
