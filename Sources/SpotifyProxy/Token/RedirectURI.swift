import Foundation

/// A redirect URI the login can use, checked the way Spotify checks them since 2025-11-27:
/// plain HTTP only for loopback IP literals (`http://127.0.0.1:PORT/…`, `http://[::1]:PORT/…`),
/// never `localhost`; anything else must be HTTPS (and then the browser's final address is
/// pasted back, as no local listener can receive it).
public struct RedirectURI: Sendable, Equatable {
    public let text: String
    /// For a loopback URI: where `login` listens for the browser.
    public let loopback: (host: String, port: Int, path: String)?

    public static func == (lhs: RedirectURI, rhs: RedirectURI) -> Bool { lhs.text == rhs.text }

    public init(_ text: String, key: String = "spotify.redirect_uri") throws(ConfigurationError) {
        let example = "http://127.0.0.1:8888/callback"
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
            let host = components.host, !host.isEmpty
        else {
            throw ConfigurationError("\(key) = \"\(text)\" is not a URL; use e.g. \(example) (and register exactly that in your app's settings)")
        }
        // RFC 6749 §3.1.2: Spotify's accounts page refuses such a URI ("Invalid redirect URI").
        guard components.fragment == nil else {
            throw ConfigurationError("\(key) = \"\(text)\" has a fragment (#…), which a redirect URI may not have; drop it, e.g. \(example)")
        }
        switch scheme {
        case "https":
            self.text = text
            self.loopback = nil
        case "http":
            let bare = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
            if bare.lowercased() == "localhost" {
                throw ConfigurationError(
                    "\(key) = \"\(text)\": Spotify no longer accepts localhost in redirect URIs (since 2025-11-27); use the loopback address instead, e.g. \(example), and register exactly that in your app's settings"
                )
            }
            guard bare == "127.0.0.1" || bare == "::1" else {
                throw ConfigurationError(
                    "\(key) = \"\(text)\": Spotify accepts plain-HTTP redirect URIs only for the loopback addresses http://127.0.0.1:PORT/... and http://[::1]:PORT/...; use e.g. \(example), or an https:// URI"
                )
            }
            guard let port = components.port, port > 0 else {
                throw ConfigurationError("\(key) = \"\(text)\" needs a port for the login to listen on, e.g. \(example)")
            }
            guard port <= 65535 else {
                throw ConfigurationError("\(key) = \"\(text)\" has a port above 65535; give one from 1 to 65535, e.g. \(example)")
            }
            self.text = text
            self.loopback = (bare, port, components.path.isEmpty ? "/" : components.path)
        default:
            throw ConfigurationError("\(key) = \"\(text)\" must be an http://127.0.0.1:PORT/... or https:// URI, e.g. \(example)")
        }
    }
}
