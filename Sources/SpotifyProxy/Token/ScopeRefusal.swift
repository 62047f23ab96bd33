import Foundation
import SpotifyCatalog

/// Spotify's 403 "Insufficient client scope" to a request with a user's token: the login was not
/// granted a scope the endpoint needs. Spotify does not say which; the proxy says which of its
/// default scopes (every `/v1/me…` endpoint's, ``UserSettings/defaultScopes``) the login lacks,
/// and the command that logs the user in again. A login from before a scope joined the default
/// is the usual cause.
enum ScopeRefusal {
    /// Spotify's words (error-403-insufficient-client-scope.json).
    static let spotifyMessage = "Insufficient client scope"

    static func isInsufficientScope(_ answer: UpstreamAnswer) -> Bool {
        guard answer.status == 403, case .string(let message)? = (try? JSONValue.parse(Data(answer.body)))?["error"]?["message"] else { return false }
        return message.caseInsensitiveCompare(Self.spotifyMessage) == .orderedSame
    }

    /// The explanation: Spotify's words first (a client matching them still does), then what
    /// `user`'s login lacks of the default scopes (`granted`: nil when not known), then what to
    /// run, or for a teammate (`viaKey`) whom to ask.
    static func message(user: String, granted: [String]?, commands: CommandHint, viaKey: Bool) -> String {
        var text = "\(Self.spotifyMessage): Spotify says user \(user)'s login was not granted a scope this request needs"
        if let granted {
            let lacking = UserSettings.defaultScopes.filter { !granted.contains($0) }
            text +=
                lacking.isEmpty
                ? "; it has every default scope, so add the one Spotify's reference names for this endpoint to spotify.scopes"
                : "; of the default scopes (every /v1/me endpoint's) it lacks \(lacking.joined(separator: " "))"
        }
        let again = viaKey ? CommandHint.askOperator(user: user) : "run `\(commands.login(user: user))`"
        return text + ": to log it in again with them, \(again)"
    }
}
