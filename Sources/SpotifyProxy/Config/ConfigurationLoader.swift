import Foundation

public enum SpotifyProxyVersion {
    public static let current = "0.1.0"
}

/// Overrides given on the command line: they beat both the file and the environment.
public struct ConfigurationOverrides: Sendable {
    public var listen: String?
    public var publicURL: String?
    public var apiURL: String?
    public var tokenURL: String?
    public var logLevel: String?
    public var logFormat: String?

    public init(
        listen: String? = nil, publicURL: String? = nil, apiURL: String? = nil, tokenURL: String? = nil, logLevel: String? = nil,
        logFormat: String? = nil
    ) {
        self.logFormat = logFormat
        self.listen = listen
        self.publicURL = publicURL
        self.apiURL = apiURL
        self.tokenURL = tokenURL
        self.logLevel = logLevel
    }
}

extension ProxyConfiguration {
    /// File (if any), then environment secrets, then flags. Without `--config`, `./proxy.conf`
    /// is read when present; a named file must exist. Relative paths in it resolve against the
    /// file's directory (without a file, the working directory).
    public static func load(
        path: String?, environment: [String: String], overrides: ConfigurationOverrides
    ) throws(ConfigurationError) -> ProxyConfiguration {
        var config = ProxyConfiguration()
        let file = path ?? (FileManager.default.fileExists(atPath: "proxy.conf") ? "proxy.conf" : nil)
        var directory = FileManager.default.currentDirectoryPath
        if let file {
            if let why = ConfigurationError.unreadableFile(file) {
                let fix = why == "no such file"
                    ? "copy proxy.conf.example to \(file) or pass --config PATH" : ConfigurationError.fix(for: why, "pass --config with the configuration file's path")
                throw ConfigurationError("cannot read configuration file \(file): \(why); \(fix)")
            }
            guard let data = FileManager.default.contents(atPath: file), let text = String(data: data, encoding: .utf8) else {
                throw ConfigurationError("cannot read configuration file \(file) as UTF-8 text; pass --config with the configuration file's path")
            }
            config = try ProxyConfiguration.parse(toml: text, source: file)
            directory = URL(fileURLWithPath: file).standardizedFileURL.deletingLastPathComponent().path
            // Named on the command line: the commands the proxy suggests must name it too.
            if path != nil { config.commands = CommandHint(configFile: URL(fileURLWithPath: file).standardizedFileURL.path) }
        }
        config.resolvePaths(against: directory)
        config.applyEnvironment(environment)
        try ConfigurationError.checkingFlags { () throws(ConfigurationError) in
            if let listen = overrides.listen {
                (config.listenHost, config.listenPort) = try Self.parseListen(listen, key: "--listen")
                config.listenSetBy = "--listen"
            }
            if let url = overrides.publicURL { config.publicURL = try Self.checkURL(url, key: "--public-url") }
            if let url = overrides.apiURL { config.apiURL = try Self.checkURL(url, key: "--api-url") }
            if let url = overrides.tokenURL { config.tokenURL = try Self.checkURL(url, key: "--token-url") }
            if let level = overrides.logLevel { config.logLevel = try Self.parseLogLevel(level, key: "--log-level") }
            if let format = overrides.logFormat { config.logFormat = try Self.parseLogFormat(format, key: "--log-format") }
        }
        return config
    }
}
