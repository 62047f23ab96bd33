import NIOHTTP1

/// Which token a forwarded request carries.
public enum Credential: Sendable, Equatable {
    /// The app's (client credentials).
    case app
    /// The logged-in user's with this label.
    case user(String)
}

/// A `[users] user_paths` entry: `"METHOD /path"`, where METHOD is a method or `*`, a path
/// segment `{name}` matches any one segment, and a final `/*` matches the path itself and
/// everything below it (`"* /v1/me/*"` is `/v1/me` and every path under it).
public struct UserPathRule: Sendable, Equatable, CustomStringConvertible {
    enum Segment: Sendable, Equatable {
        case literal(String)
        case any
    }

    let method: String?
    let segments: [Segment]
    let matchesBelow: Bool
    /// The leading literal segments (`/v1/me`): most paths are ruled out by it without splitting.
    let literalPrefix: String
    public let description: String

    public init(_ text: String, key: String = "[users] user_paths") throws(ConfigurationError) {
        let parts = text.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 2, parts[1].hasPrefix("/") else {
            throw ConfigurationError(
                "\(key): \"\(text)\" is not a rule; write METHOD /path, e.g. \"* /v1/me/*\" or \"POST /v1/users/{id}/playlists\"")
        }
        self.description = text
        self.method = parts[0] == "*" ? nil : parts[0].uppercased()
        if let method = self.method, !RequestRouter.allowedMethods.split(separator: ",").contains(where: { $0.trimmingSpaces() == method }) {
            throw ConfigurationError(
                "\(key): \"\(text)\" names the method \(parts[0]), which no request forwarded to Spotify has; use one of \(RequestRouter.allowedMethods), or * for any")
        }
        var segments = parts[1].split(separator: "/", omittingEmptySubsequences: false).dropFirst().map(String.init)
        self.matchesBelow = segments.last == "*"
        if self.matchesBelow { segments.removeLast() }
        self.segments = segments.map { $0.hasPrefix("{") && $0.hasSuffix("}") ? .any : .literal($0) }
        var prefix = ""
        for segment in self.segments {
            guard case .literal(let literal) = segment else { break }
            prefix += "/" + literal
        }
        self.literalPrefix = prefix
    }

    /// The default: the user's own data (`/v1/me` and everything below, the player included),
    /// writes to playlists, creating one, and whether the user follows one.
    public static let defaults: [UserPathRule] = [
        "* /v1/me/*", "POST /v1/playlists/*", "PUT /v1/playlists/*", "DELETE /v1/playlists/*", "POST /v1/users/{id}/playlists",
        // Whether the current user follows a playlist: Spotify's "current user" is the token's.
        "GET /v1/playlists/{id}/followers/contains", "HEAD /v1/playlists/{id}/followers/contains",
    ].map { try! UserPathRule($0) }

    public func matches(method: String, path: Substring) -> Bool {
        if let expected = self.method, expected != method { return false }
        guard path.hasUTF8Prefix(self.literalPrefix) else { return false }
        var parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        // A trailing slash names the same resource (spotipy sends some).
        if parts.count > 1, parts.last == "" { parts = parts.dropLast() }
        guard parts.count == self.segments.count || (self.matchesBelow && parts.count > self.segments.count) else { return false }
        for (segment, part) in zip(self.segments, parts) {
            if case .literal(let literal) = segment, literal != part { return false }
        }
        return true
    }
}

/// Who the logged-in users are, for the token choice.
public protocol UserDirectory: Sendable {
    /// The user a request gets: the one it names (`X-Spotify-User`), else the default.
    func resolve(_ requested: String?) -> UserResolution
    /// The Spotify id of the logged-in user `label`, when its login told it.
    func spotifyUserID(of label: String) -> String?
}

public enum UserResolution: Sendable, Equatable {
    case user(String)
    /// Nobody is logged in.
    case none
    /// The named user (or the configured default) is not logged in.
    case unknown(String)
    /// Several users, no default, and the request named none.
    case ambiguous([String])
}

/// Requests that match `[users] user_paths` carry a user's token, everything else the app's
/// (but for a development-mode app's own playlists by id, ``DevModeStage``).
/// The user is the access key's (`user=` in the keys file), else the one the `X-Spotify-User`
/// header names (removed before forwarding), else
/// `[users] default`, else the only logged-in user. No user to give: 401 in Spotify's shape,
/// saying which command to run.
public struct TokenChoiceStage: RequestStage {
    public static let userHeader = "X-Spotify-User"
    let rules: [UserPathRule]
    let users: any UserDirectory
    let commands: CommandHint

    public init(rules: [UserPathRule], users: any UserDirectory, commands: CommandHint = CommandHint()) {
        self.rules = rules
        self.users = users
        self.commands = commands
    }

    /// What to do for a login: on a proxy of one's own, the command (with the `--config` it
    /// started with); from a teammate with an access key, who cannot run it on the proxy's
    /// machine, to ask whoever runs the proxy, without the server's paths.
    private func loginAdvice(_ request: ProxyRequest, user: String? = nil) -> String {
        guard request.key != nil else { return "run `\(self.commands.login(user: user))`" }
        return CommandHint.askOperator(user: user)
    }

    /// Whom a request names (``requestedUser(_:)``).
    enum Requested: Equatable {
        /// Nil: nobody, so the default.
        case user(String?)
        case refused(LocalAnswer)
    }

    /// Whom a request names: its access key's user (`user=` in the keys file), else the user the
    /// `X-Spotify-User` header names, else nobody; refused when it names several, a label that
    /// cannot be one, or another than its key's.
    static func requestedUser(_ request: ProxyRequest) -> Requested {
        // Whitespace around a value is not part of it (RFC 9110 §5.5); an empty one names nobody.
        var named: [String] = []
        for value in request.head.headers[Self.userHeader] {
            let label = String(value.trimmingSpaces())
            if !label.isEmpty, !named.contains(label) { named.append(label) }
        }
        // Two users named: which one is meant cannot be guessed (as two Hosts are refused).
        guard named.count <= 1 else {
            return .refused(
                LocalAnswer(SpotifyError(status: 400, message: "\(Self.userHeader) names \(named.count) users (\(named.joined(separator: ", "))): send it once")))
        }
        var requested = named.first
        if let label = requested {
            do throws(ConfigurationError) {
                try UserStore.checkLabel(label)
            } catch {
                return .refused(LocalAnswer(SpotifyError(status: 400, message: "\(Self.userHeader): \(error.message)")))
            }
        }
        if let keyUser = request.key?.user {
            // A key with user= acts as that user only: a teammate's key cannot borrow another's account.
            if let requested, requested != keyUser {
                return .refused(
                    LocalAnswer(
                        SpotifyError(
                            status: 403,
                            message: "the access key \(request.key!.label) acts as the Spotify user \(keyUser), not \(requested): drop the \(Self.userHeader) header or use that user's key")))
            }
            requested = keyUser
        }
        return .user(requested)
    }

    public func decide(_ request: inout ProxyRequest) -> StageDecision {
        let method = request.head.method.rawValue
        let target = request.target
        let path = target.pathWithoutQuery
        guard self.rules.contains(where: { $0.matches(method: method, path: path) }) else { return .continue }
        let requested: String?
        switch Self.requestedUser(request) {
        case .user(let user): requested = user
        case .refused(let answer): return .answer(answer)
        }
        switch self.users.resolve(requested) {
        case .user(let label):
            request.useUserToken(of: label)
            return .continue
        case .none:
            return .answer(
                LocalAnswer(
                    SpotifyError(
                        status: 401,
                        message: "this endpoint needs a Spotify user: \(self.loginAdvice(request)) (the app's token cannot read or change a user's data)")))
        case .unknown(let label):
            return .answer(
                LocalAnswer(SpotifyError(status: 401, message: "no Spotify user \(label) is logged in: \(self.loginAdvice(request, user: label))")))
        case .ambiguous(let labels):
            return .answer(
                LocalAnswer(
                    SpotifyError(
                        status: 401,
                        message:
                            "several Spotify users are logged in (\(labels.joined(separator: ", "))): name one in the \(Self.userHeader) header, or set [users] default")))
        }
    }
}
