/// The commands the proxy tells a person to run (`spotify-proxy login --user alice`), with the
/// `--config FILE` it was started with: in the demo, or after `serve --config FILE`, a bare
/// `spotify-proxy login` would read another configuration (or none) and fail.
public struct CommandHint: Sendable, Equatable {
    /// The configuration file named at the start (absolute); nil for `./proxy.conf` or none.
    public var configFile: String?

    public init(configFile: String? = nil) {
        self.configFile = configFile
    }

    /// `spotify-proxy login [--config FILE] [--user LABEL]`.
    public func login(user: String? = nil) -> String { self.userCommand("login", user: user) }

    /// `spotify-proxy logout [--config FILE] [--user LABEL]`.
    public func logout(user: String? = nil) -> String { self.userCommand("logout", user: user) }

    private func userCommand(_ name: String, user: String?) -> String {
        var text = "spotify-proxy " + name
        if let configFile { text += " --config " + Self.shellQuoted(configFile) }
        if let user { text += " --user " + user }
        return text
    }

    /// What a teammate (a client with an access key) is told when a login is needed: they cannot
    /// run it on the proxy's machine, so to ask whoever runs the proxy, without its paths.
    public static func askOperator(user: String? = nil) -> String {
        "ask whoever runs this proxy to log \(user ?? "a Spotify user") in (`spotify-proxy login\(user.map { " --user \($0)" } ?? "")` with the proxy's --config)"
    }

    /// `value` as one shell word: as it is when it needs no quoting, else in single quotes.
    static func shellQuoted(_ value: String) -> String {
        let plain = !value.isEmpty
            && value.utf8.allSatisfy { byte in
                (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                    || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || "/._-+=:@,".utf8.contains(byte)
            }
        return plain ? value : "'" + value.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
    }
}
