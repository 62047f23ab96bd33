import Foundation
import Logging
import TOMLKit

/// Everything the proxy needs to run, resolved from `proxy.conf`, the environment (secrets) and
/// command-line flags, in that order of increasing precedence.
public struct ProxyConfiguration: Sendable {
    public var listenHost = "127.0.0.1"
    /// How the commands the proxy suggests name this configuration (`--config FILE`).
    public var commands = CommandHint()
    public var listenPort = 8080
    /// The flag or key that set the listen address (`--listen`, `server.listen in FILE`); nil for
    /// the default. Named when the address cannot be bound.
    public var listenSetBy: String?
    /// The base that links in bodies are rewritten to; `nil` derives it from each request's `Host`.
    public var publicURL: String?
    public var maxHeaderBytes = 16 * 1024
    public var maxBodyBytes = 16 * 1024 * 1024
    public var clientIdleTimeout: Duration = .seconds(60)
    public var shutdownGrace: Duration = .seconds(10)
    public var rewriteLinks = true
    /// `server.workers`: the worker loops serving plain HTTP; nil is one per CPU core.
    public var workers: Int?
    public static let maximumWorkers = 256

    public var apiURL = "https://api.spotify.com"
    public var tokenURL = "https://accounts.spotify.com/api/token"
    public var clientID: String?
    public var clientSecret: String?
    public var upstream = UpstreamConfiguration()
    public var tokenWait: Duration = .seconds(10)
    public var refreshAhead = 0.8
    /// Requests whose body is at most this long are replayed once after a 401 for a stale token.
    public var replayBodyLimit = 64 * 1024
    /// A 401 for the current token forces a refresh at most once per this interval.
    public var unauthorizedRefreshInterval: Duration = .seconds(30)

    /// The login (authorization code with PKCE): where the browser goes, where it comes back, what is asked.
    public var authorizeURL = "https://accounts.spotify.com/authorize"
    public var redirectURI = "http://127.0.0.1:8888/callback"
    public var scopes = UserSettings.defaultScopes

    public var sink = SinkSettings()
    public var users = UserSettings()
    public var cache = CacheSettings()
    public var governor = GovernorSettings()
    public var access = AccessSettings()
    /// `[server] tls_cert` and `tls_key`: PEM files; the listener speaks HTTPS when both are set.
    public var tlsCertificate: String?
    public var tlsKey: String?
    /// `[spotify] dev_mode`: "auto" learns it from Spotify's first development-mode refusal.
    public var devMode = DevModeSetting.auto
    public var logLevel: Logger.Level = .info
    /// `[log] format` (or `--log-format`): text lines or JSON lines.
    public var logFormat = LogFormat.text

    public init() {}

    /// The lower-cased host[:port] names that absolute-form requests may carry: the upstream's,
    /// the public URL's and the listener's own address (RFC 9112 §3.2.2: a server must accept
    /// an absolute-form target; one naming the proxy itself names no other server), with
    /// `127.0.0.1`, `[::1]` and `localhost` for a wildcard or loopback listener.
    public var ownAuthorities: Set<String> {
        var authorities = Set([self.apiURL, self.publicURL].compactMap { $0 }.map(Self.authority(of:)))
        var hosts = [self.listenHost.lowercased()]
        if self.listenHost == "0.0.0.0" || self.listenHost == "::" || self.listensOnLoopbackOnly { hosts += ["127.0.0.1", "::1", "localhost"] }
        // The scheme's default port may be left out (RFC 9110 §4.2.3).
        let defaultPort = self.listenPort == (self.tlsCertificate == nil ? 80 : 443)
        for host in hosts {
            authorities.insert(Self.hostAndPort(host, self.listenPort))
            if defaultPort { authorities.insert(host.contains(":") ? "[\(host)]" : host) }
        }
        return authorities
    }

    static func authority(of url: String) -> String {
        let rest = url.split(separator: "://", maxSplits: 1).last.map(String.init) ?? url
        return String(rest.prefix { $0 != "/" }).lowercased()
    }

    /// The proxy's base URL for a command on this machine: a wildcard listen address is reached on loopback.
    public var localBaseURL: String {
        var host = self.listenHost
        if host == "0.0.0.0" { host = "127.0.0.1" } else if host == "::" { host = "::1" }
        let scheme = self.tlsCertificate == nil ? "http" : "https"
        return "\(scheme)://\(Self.hostAndPort(host, self.listenPort))"
    }

    public var listenDescription: String {
        Self.hostAndPort(self.listenHost, self.listenPort)
    }

    /// `host:port` as a URL or a log writes it: an IPv6 address in brackets.
    public static func hostAndPort(_ host: String, _ port: Int) -> String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

/// A configuration problem, with a message that names the key and says how to fix it.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public var message: String
    /// A command-line flag's value, not the file's: the commands exit 64 for it, not 2.
    public var fromCommandLine = false
    public init(_ message: String) { self.message = message }

    /// `self`, as a command-line flag's value.
    public var onCommandLine: ConfigurationError {
        var error = self
        error.fromCommandLine = true
        return error
    }

    /// `body`, whose errors are a command-line flag's value.
    public static func checkingFlags<T>(_ body: () throws(ConfigurationError) -> T) throws(ConfigurationError) -> T {
        do {
            return try body()
        } catch {
            throw error.onCommandLine
        }
    }
    public var description: String { self.message }

    /// Why `path` cannot be read as a file ("no such file", "a directory", …), or nil when it can.
    static func unreadableFile(_ path: String) -> String? {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { return "no such file" }
        if isDirectory.boolValue { return "a directory, not a file" }
        return FileManager.default.isReadableFile(atPath: path) ? nil : Self.notReadable
    }

    private static let notReadable = "not readable by this user"

    /// What to do about `why` (from ``unreadableFile(_:)``): `otherwise` unless it is the
    /// file's permissions.
    static func fix(for why: String, _ otherwise: String) -> String {
        why == Self.notReadable ? "let this user read it (or run as its owner)" : otherwise
    }
}

extension ProxyConfiguration {
    static let knownKeys: [String: Set<String>] = [
        "server": [
            "listen", "public_url", "max_header_bytes", "max_body_bytes", "idle_timeout", "shutdown_grace",
            "rewrite_links", "tls_cert", "tls_key", "workers",
        ],
        "spotify": [
            "api_url", "token_url", "client_id", "client_secret", "ca_bundle", "connect_timeout", "idle_timeout",
            "total_timeout", "token_wait", "refresh_ahead", "replay_body_limit", "unauthorized_refresh_interval",
            "authorize_url", "redirect_uri", "scopes", "dev_mode",
        ],
        "users": ["dir", "default", "user_paths"],
        "sink": [
            "kind", "url", "path", "spool_dir", "batch_size", "flush_interval", "queue_limit_bytes", "write_timeout", "connect_timeout",
        ],
        "cache": ["max_bytes", "stale_while_revalidate", "max_stale", "ttl"],
        "governor": ["policy", "max_wait", "budget"],
        "access": ["keys_file", "allow_open"],
        "log": ["level", "format"],
    ]

    public static let supportedSinkKinds = ["sqlite", "postgres", "jsonl", "none"]

    /// Parses a `proxy.conf` document; unknown keys and bad values are errors.
    public static func parse(toml text: String, source: String = "proxy.conf") throws(ConfigurationError) -> ProxyConfiguration {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigurationError(
                "\(source): not valid TOML: \(error.description) (at line \(error.source.begin.line), column \(error.source.begin.column))")
        } catch {
            throw ConfigurationError("\(source): not valid TOML: \(error)")
        }
        var config = ProxyConfiguration()
        var reader = TableReader(source: source)
        for key in table.keys {
            guard let known = Self.knownKeys[key] else {
                if table[key]?.table == nil {
                    // A key outside any section: say where it belongs.
                    let homes = Self.knownKeys.filter { $0.value.contains(key) }.keys.sorted()
                    if !homes.isEmpty {
                        throw ConfigurationError(
                            "\(source): unknown key `\(key)` (did you mean \(homes.map { "[\($0)] \(key)" }.joined(separator: " or "))?): "
                                + "write it under its section, e.g. [\(homes[0])] on a line of its own, then \(key) = ...")
                    }
                    throw ConfigurationError(
                        "\(source): unknown key `\(key)` outside any section; keys belong in one of: \(Self.knownKeys.keys.sorted().map { "[\($0)]" }.joined(separator: ", "))")
                }
                throw ConfigurationError(
                    "\(source): unknown section [\(key)]; known sections: \(Self.knownKeys.keys.sorted().joined(separator: ", "))")
            }
            guard let section = table[key]?.table else {
                throw ConfigurationError("\(source): \(key) must be a table: write it as [\(key)] on a line of its own")
            }
            for sub in section.keys where !known.contains(sub) {
                throw ConfigurationError(
                    "\(source): unknown key \(key).\(sub); known keys in [\(key)]: \(known.sorted().joined(separator: ", "))")
            }
        }
        if let server = table["server"]?.table {
            reader.section = "server"
            if let listen = try reader.string(server, "listen") {
                (config.listenHost, config.listenPort) = try Self.parseListen(listen, key: "\(source): server.listen")
                config.listenSetBy = "server.listen in \(source)"
            }
            if let url = try reader.string(server, "public_url") {
                config.publicURL = url.isEmpty ? nil : try Self.checkURL(url, key: "\(source): server.public_url")
            }
            config.maxHeaderBytes = try reader.positiveInt(server, "max_header_bytes") ?? config.maxHeaderBytes
            // Under 1 KiB even `spotify-proxy status` is refused; above 80 KiB the parser's own
            // limit would apply, silently.
            guard config.maxHeaderBytes >= 1024 else {
                throw ConfigurationError(
                    "\(source): server.max_header_bytes = \(config.maxHeaderBytes) is too small for any client; give at least 1024 (the default is 16384)")
            }
            guard config.maxHeaderBytes <= RequestParser.maximumHeadBytes else {
                throw ConfigurationError(
                    "\(source): server.max_header_bytes = \(config.maxHeaderBytes) is above the HTTP parser's own limit; give at most \(RequestParser.maximumHeadBytes)")
            }
            config.maxBodyBytes = try reader.positiveInt(server, "max_body_bytes") ?? config.maxBodyBytes
            config.clientIdleTimeout = try reader.seconds(server, "idle_timeout") ?? config.clientIdleTimeout
            config.shutdownGrace = try reader.seconds(server, "shutdown_grace") ?? config.shutdownGrace
            config.rewriteLinks = try reader.bool(server, "rewrite_links") ?? config.rewriteLinks
            config.workers = try reader.positiveInt(server, "workers") ?? config.workers
            // Each a thread with its own sockets: thousands exhaust the descriptors before serving.
            if let workers = config.workers, workers > Self.maximumWorkers {
                throw ConfigurationError("\(source): server.workers = \(workers) is too many; give at most \(Self.maximumWorkers) (the default is one per CPU core)")
            }
            config.tlsCertificate = try reader.string(server, "tls_cert").flatMap { $0.isEmpty ? nil : $0 }
            config.tlsKey = try reader.string(server, "tls_key").flatMap { $0.isEmpty ? nil : $0 }
            guard (config.tlsCertificate == nil) == (config.tlsKey == nil) else {
                throw ConfigurationError(
                    "\(source): server.tls_cert and server.tls_key go together: set both (PEM files) to listen over HTTPS, or neither")
            }
        }
        if let access = table["access"]?.table {
            reader.section = "access"
            config.access.keysFile = try reader.string(access, "keys_file").flatMap { $0.isEmpty ? nil : $0 }
            config.access.allowOpen = try reader.bool(access, "allow_open") ?? config.access.allowOpen
        }
        if let spotify = table["spotify"]?.table {
            reader.section = "spotify"
            if let url = try reader.string(spotify, "api_url") {
                config.apiURL = try Self.checkURL(url, key: "\(source): spotify.api_url")
            }
            if let url = try reader.string(spotify, "token_url") {
                config.tokenURL = try Self.checkURL(url, key: "\(source): spotify.token_url")
            }
            config.clientID = try reader.string(spotify, "client_id").flatMap { $0.isEmpty ? nil : $0 }
            config.clientSecret = try reader.string(spotify, "client_secret").flatMap { $0.isEmpty ? nil : $0 }
            config.upstream.caBundle = try reader.string(spotify, "ca_bundle").flatMap { $0.isEmpty ? nil : $0 }
            config.upstream.connectTimeout = try reader.seconds(spotify, "connect_timeout") ?? config.upstream.connectTimeout
            config.upstream.idleTimeout = try reader.seconds(spotify, "idle_timeout") ?? config.upstream.idleTimeout
            config.upstream.totalTimeout = try reader.seconds(spotify, "total_timeout") ?? config.upstream.totalTimeout
            config.tokenWait = try reader.seconds(spotify, "token_wait") ?? config.tokenWait
            config.replayBodyLimit = try reader.positiveInt(spotify, "replay_body_limit") ?? config.replayBodyLimit
            config.unauthorizedRefreshInterval =
                try reader.seconds(spotify, "unauthorized_refresh_interval") ?? config.unauthorizedRefreshInterval
            if let url = try reader.string(spotify, "authorize_url") {
                config.authorizeURL = try Self.checkURL(url, key: "\(source): spotify.authorize_url")
            }
            if let uri = try reader.string(spotify, "redirect_uri") {
                config.redirectURI = try RedirectURI(uri, key: "\(source): spotify.redirect_uri").text
            }
            if let mode = try reader.string(spotify, "dev_mode") {
                guard let parsed = DevModeSetting(rawValue: mode) else {
                    throw ConfigurationError(
                        "\(source): spotify.dev_mode = \"\(mode)\" is not a setting; use \"auto\" (learn it from Spotify's refusals), \"on\" or \"off\"")
                }
                config.devMode = parsed
            }
            if let scopes = try reader.string(spotify, "scopes") {
                config.scopes = scopes.split(separator: " ").map(String.init)
            }
            if let ahead = try reader.number(spotify, "refresh_ahead") {
                guard ahead > 0.1, ahead < 0.95 else {
                    throw ConfigurationError(
                        "\(source): spotify.refresh_ahead must be between 0.1 and 0.95 (the fraction of a token's lifetime after which it is refreshed), got \(ahead)")
                }
                config.refreshAhead = ahead
            }
        }
        if let sink = table["sink"]?.table {
            reader.section = "sink"
            if let kind = try reader.string(sink, "kind") {
                guard let parsed = SinkSettings.Kind(rawValue: kind) else {
                    throw ConfigurationError(
                        "\(source): sink.kind = \"\(kind)\" is not supported; use one of: \(Self.supportedSinkKinds.joined(separator: ", "))")
                }
                config.sink.kind = parsed
            }
            config.sink.url = try reader.string(sink, "url").flatMap { $0.isEmpty ? nil : $0 }
            config.sink.path = try reader.string(sink, "path").flatMap { $0.isEmpty ? nil : $0 }
            config.sink.spoolDirectory = try reader.string(sink, "spool_dir") ?? config.sink.spoolDirectory
            config.sink.batchSize = try reader.positiveInt(sink, "batch_size") ?? config.sink.batchSize
            config.sink.flushInterval = try reader.seconds(sink, "flush_interval") ?? config.sink.flushInterval
            config.sink.queueLimitBytes = try reader.positiveInt(sink, "queue_limit_bytes") ?? config.sink.queueLimitBytes
            config.sink.writeTimeout = try reader.seconds(sink, "write_timeout") ?? config.sink.writeTimeout
            config.sink.connectTimeout = try reader.seconds(sink, "connect_timeout") ?? config.sink.connectTimeout
        }
        if let users = table["users"]?.table {
            reader.section = "users"
            config.users.directory = try reader.string(users, "dir").flatMap { $0.isEmpty ? nil : $0 } ?? config.users.directory
            if let label = try reader.string(users, "default"), !label.isEmpty {
                do { try UserStore.checkLabel(label) } catch { throw ConfigurationError("\(source): users.default: \(error.message)") }
                config.users.defaultUser = label
            }
            if let paths = users["user_paths"] {
                guard let array = paths.array else {
                    throw ConfigurationError(
                        "\(source): users.user_paths must be an array of \"METHOD /path\" strings, e.g. [\"* /v1/me/*\", \"POST /v1/users/{id}/playlists\"]")
                }
                config.users.userPaths = try array.map { value throws(ConfigurationError) in
                    guard let text = value.string else {
                        throw ConfigurationError("\(source): users.user_paths holds a non-string; write each rule as \"METHOD /path\"")
                    }
                    return try UserPathRule(text, key: "\(source): users.user_paths")
                }
            }
        }
        if let governor = table["governor"]?.table {
            reader.section = "governor"
            if let policy = try reader.string(governor, "policy") {
                guard let parsed = GovernorSettings.Policy(rawValue: policy) else {
                    throw ConfigurationError(
                        "\(source): governor.policy = \"\(policy)\" is not a policy; use \"fail\" (answer 429 at once while Spotify limits the app) or \"wait\" (hold requests up to max_wait)")
                }
                config.governor.policy = parsed
            }
            config.governor.maxWait = try reader.seconds(governor, "max_wait") ?? config.governor.maxWait
            config.governor.budget = try reader.positiveInt(governor, "budget") ?? config.governor.budget
        }
        if let cache = table["cache"]?.table {
            reader.section = "cache"
            if let bytes = cache["max_bytes"] {
                guard let value = bytes.int, value >= 0 else {
                    throw ConfigurationError("\(source): cache.max_bytes must be a whole number of bytes (0 turns the cache off), e.g. 67108864 for 64 MiB")
                }
                config.cache.maxBytes = value
            }
            config.cache.staleWhileRevalidate = try reader.secondsOrZero(cache, "stale_while_revalidate") ?? config.cache.staleWhileRevalidate
            config.cache.maxStale = try reader.secondsOrZero(cache, "max_stale") ?? config.cache.maxStale
            if let ttl = cache["ttl"] {
                guard let table = ttl.table else {
                    throw ConfigurationError("\(source): cache.ttl must be a table: [cache.ttl] on a line of its own, then \"/v1/artists/{id}\" = 86400")
                }
                for path in table.keys {
                    guard let template = RouteTemplate(path) else {
                        throw ConfigurationError("\(source): cache.ttl key \"\(path)\" is not a path template; write e.g. \"/v1/artists/{id}\" = 86400")
                    }
                    guard let seconds = table[path]?.int, seconds >= 0 else {
                        throw ConfigurationError("\(source): cache.ttl.\"\(path)\" must be a whole number of seconds (0: always revalidate)")
                    }
                    config.cache.ttl[template] = seconds
                }
            }
        }
        if let log = table["log"]?.table {
            reader.section = "log"
            if let level = try reader.string(log, "level") {
                config.logLevel = try Self.parseLogLevel(level, key: "\(source): log.level")
            }
            if let format = try reader.string(log, "format") {
                config.logFormat = try Self.parseLogFormat(format, key: "\(source): log.format")
            }
        }
        return config
    }

    /// Secrets from the environment override the file.
    public mutating func applyEnvironment(_ environment: [String: String]) {
        if let id = environment["SPOTIFY_CLIENT_ID"], !id.isEmpty { self.clientID = id }
        if let secret = environment["SPOTIFY_CLIENT_SECRET"], !secret.isEmpty { self.clientSecret = secret }
        if let url = environment["DATABASE_URL"], !url.isEmpty { self.sink.url = url }
        if let token = environment["SPOTIFY_REFRESH_TOKEN"], !token.isEmpty { self.users.environmentRefreshToken = token }
    }

    /// Makes every file path absolute (`sink.path`, `sink.spool_dir`, `spotify.ca_bundle`, `users.dir`),
    /// relative ones taken from `directory`: the configuration file's, as nginx resolves
    /// against its prefix.
    public mutating func resolvePaths(against directory: String) {
        self.sink.resolvePaths(against: directory)
        self.users.directory = Self.absolutePath(self.users.directory, against: directory)
        self.upstream.caBundle = self.upstream.caBundle.map { Self.absolutePath($0, against: directory) }
        self.access.keysFile = self.access.keysFile.map { Self.absolutePath($0, against: directory) }
        self.tlsCertificate = self.tlsCertificate.map { Self.absolutePath($0, against: directory) }
        self.tlsKey = self.tlsKey.map { Self.absolutePath($0, against: directory) }
    }

    static func absolutePath(_ path: String, against directory: String) -> String {
        path.hasPrefix("/") ? path : URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: directory, isDirectory: true)).standardizedFileURL.path
    }

    /// Fails when the client credentials are missing, saying how to provide them.
    public func requireCredentials() throws(ConfigurationError) -> (id: String, secret: String) {
        var missing: [String] = []
        if self.clientID == nil { missing.append("spotify.client_id (or SPOTIFY_CLIENT_ID)") }
        if self.clientSecret == nil { missing.append("spotify.client_secret (or SPOTIFY_CLIENT_SECRET)") }
        guard let id = self.clientID, let secret = self.clientSecret else {
            throw ConfigurationError(
                "missing Spotify app credentials: \(missing.joined(separator: " and ")). "
                    + "Create an app at https://developer.spotify.com/dashboard, then run: "
                    + "export SPOTIFY_CLIENT_ID=... SPOTIFY_CLIENT_SECRET=... "
                    + "(or try it offline with: spotify-proxy demo)")
        }
        return (id, secret)
    }

    public static func parseListen(_ text: String, key: String) throws(ConfigurationError) -> (String, Int) {
        if let scheme = text.range(of: "://") {
            let rest = text[scheme.upperBound...].prefix { $0 != "/" }
            throw ConfigurationError("\(key): \"\(text)\" is a URL; give the address alone, HOST:PORT (\"\(rest)\")")
        }
        var host: Substring
        var portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw ConfigurationError("\(key): \"\(text)\" is not HOST:PORT (e.g. \"127.0.0.1:8080\" or \"[::1]:8080\")")
            }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(after: close)...].drop { $0 == ":" }
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw ConfigurationError("\(key): \"\(text)\" is not HOST:PORT (e.g. \"127.0.0.1:8080\")")
            }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !text.contains(where: \.isWhitespace) else {
            throw ConfigurationError("\(key): \"\(text)\" has spaces in it; write HOST:PORT without them (e.g. \"127.0.0.1:8080\")")
        }
        guard !host.isEmpty else {
            throw ConfigurationError("\(key): \"\(text)\" names no host: write HOST:PORT (e.g. \"127.0.0.1:8080\", or \"0.0.0.0:8080\" for every address)")
        }
        guard let port = Int(portText), (0...65535).contains(port) else {
            throw ConfigurationError("\(key): \"\(text)\" is not HOST:PORT with a port from 0 to 65535 (e.g. \"127.0.0.1:8080\")")
        }
        // An address in numbers must be one, as the resolver reads them when the proxy listens
        // ("127.1", "[fe80::1%eth0]" are; "300.1.1.1" is not); a name is resolved then.
        let looksNumeric = host.utf8.allSatisfy { ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || $0 == UInt8(ascii: ".") }
        if (looksNumeric || host.contains(":")) && !Self.isNumericAddress(String(host)) {
            throw ConfigurationError(
                "\(key): \"\(host)\" is not an IP address: name one of this machine's (\"127.0.0.1\" for this machine only, \"0.0.0.0\" for every address)")
        }
        return (String(host), port)
    }

    /// True when the resolver takes `host` as a numeric address, without a lookup.
    static func isNumericAddress(_ host: String) -> Bool {
        var hints = addrinfo()
        hints.ai_flags = AI_NUMERICHOST
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0 else { return false }
        freeaddrinfo(result)
        return true
    }

    /// An `http://` or `https://` base URL: a host (a name, an IPv4 address or a bracketed IPv6
    /// one), an optional port from 1 to 65535 and an optional path; no user, query or fragment.
    /// Returned with its scheme in lower case and without its last `/`s.
    public static func checkURL(_ text: String, key: String) throws(ConfigurationError) -> String {
        var url = text
        while url.hasSuffix("/") { url.removeLast() }
        guard let schemeEnd = url.range(of: "://"), ["http", "https"].contains(url[..<schemeEnd.lowerBound].lowercased()),
            !url.contains(where: { $0.isWhitespace })
        else {
            throw ConfigurationError("\(key): \"\(text)\" is not an http:// or https:// URL; give one such as http://HOST:PORT")
        }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        let rest = url[schemeEnd.upperBound...]
        let authority = rest.prefix { $0 != "/" }
        guard !url.contains("?"), !url.contains("#") else {
            throw ConfigurationError("\(key): \"\(text)\" has a query or fragment; give the URL without them")
        }
        guard !authority.contains("@") else {
            throw ConfigurationError("\(key): \"\(text)\" carries a user name; give the URL without one")
        }
        // The host ends at the port's ":" (after a bracketed IPv6 address's "]").
        let hostEnd = authority.hasPrefix("[") ? authority.firstIndex(of: "]").map(authority.index(after:)) : authority.firstIndex(of: ":")
        let host = authority[..<(hostEnd ?? authority.endIndex)]
        let port = authority[(hostEnd ?? authority.endIndex)...]
        guard !host.isEmpty, host != "[]", !(host.hasPrefix("[") && !host.hasSuffix("]")) else {
            throw ConfigurationError("\(key): \"\(text)\" names no host; give one, as in \(scheme)://HOST:PORT")
        }
        if !port.isEmpty {
            guard port.hasPrefix(":"), let number = Int(port.dropFirst()), (1...65535).contains(number), port.dropFirst().allSatisfy({ ("0"..."9").contains($0) }) else {
                throw ConfigurationError("\(key): \"\(text)\" has no usable port after the host; give one from 1 to 65535, or none")
            }
        }
        return scheme + url[schemeEnd.lowerBound...]
    }

    public static func parseLogFormat(_ text: String, key: String) throws(ConfigurationError) -> LogFormat {
        guard let format = LogFormat(rawValue: text.lowercased()) else {
            throw ConfigurationError("\(key): \"\(text)\" is not a log format; use text or json (one JSON object per line)")
        }
        return format
    }

    public static func parseLogLevel(_ text: String, key: String) throws(ConfigurationError) -> Logger.Level {
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            throw ConfigurationError(
                "\(key): \"\(text)\" is not a log level; use one of trace, debug, info, notice, warning, error, critical")
        }
        return level
    }
}

/// Typed access to one TOML section, with errors that name the key.
private struct TableReader {
    var source: String
    var section = ""

    private func name(_ key: String) -> String { "\(self.source): \(self.section).\(key)" }

    func string(_ table: TOMLTable, _ key: String) throws(ConfigurationError) -> String? {
        guard let value = table[key] else { return nil }
        guard let string = value.string else {
            throw ConfigurationError("\(self.name(key)) must be a string (in quotes, such as \"…\")")
        }
        return string
    }

    func bool(_ table: TOMLTable, _ key: String) throws(ConfigurationError) -> Bool? {
        guard let value = table[key] else { return nil }
        guard let bool = value.bool else { throw ConfigurationError("\(self.name(key)) must be true or false") }
        return bool
    }

    func number(_ table: TOMLTable, _ key: String) throws(ConfigurationError) -> Double? {
        guard let value = table[key] else { return nil }
        if let int = value.int { return Double(int) }
        guard let double = value.double else { throw ConfigurationError("\(self.name(key)) must be a number") }
        return double
    }

    func positiveInt(_ table: TOMLTable, _ key: String) throws(ConfigurationError) -> Int? {
        guard let value = table[key] else { return nil }
        guard let int = value.int, int > 0 else { throw ConfigurationError("\(self.name(key)) must be a whole number above 0") }
        return int
    }

    /// A duration of seconds that may be zero (a window that can be turned off).
    func secondsOrZero(_ table: TOMLTable, _ key: String) throws(ConfigurationError) -> Duration? {
        guard let seconds = try self.number(table, key) else { return nil }
        guard seconds >= 0, seconds < 86_400 * 365 else {
            throw ConfigurationError("\(self.name(key)) must be a number of seconds, 0 or more and under a year (31536000), got \(seconds)")
        }
        return .milliseconds(Int64(seconds * 1000))
    }

    /// A duration written as a number of seconds (fractions allowed).
    func seconds(_ table: TOMLTable, _ key: String) throws(ConfigurationError) -> Duration? {
        guard let seconds = try self.number(table, key) else { return nil }
        guard seconds > 0, seconds < 86_400 * 365 else {
            throw ConfigurationError("\(self.name(key)) must be a number of seconds above 0 and under a year (31536000), got \(seconds)")
        }
        return .milliseconds(Int64(seconds * 1000))
    }
}

/// `[sink]`: where the tee stores what it sees.
public struct SinkSettings: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case sqlite, postgres, jsonl, none
    }

    public var kind: Kind = .sqlite
    /// PostgreSQL URL (`sink.url`, or `DATABASE_URL`).
    public var url: String?
    /// File for `sqlite` and `jsonl`.
    public var path: String?
    public var spoolDirectory = "spotify-proxy-spool"
    public var batchSize = 1000
    public var flushInterval: Duration = .milliseconds(200)
    public var queueLimitBytes = 64 << 20
    public var writeTimeout: Duration = .seconds(5)
    /// How long opening a database connection may take (PostgreSQL).
    public var connectTimeout: Duration = .seconds(3)

    public init() {}

    /// Makes `path` and `spool_dir` absolute, relative ones taken from `directory` (the
    /// configuration file's, as nginx resolves against its prefix), so that every command run
    /// from anywhere with the same file uses the same database.
    public mutating func resolvePaths(against directory: String) {
        self.path = ProxyConfiguration.absolutePath(self.resolvedPath, against: directory)
        self.spoolDirectory = ProxyConfiguration.absolutePath(self.spoolDirectory, against: directory)
    }

    public var resolvedPath: String {
        self.path ?? (self.kind == .jsonl ? "spotify-proxy.jsonl" : "spotify-proxy.sqlite")
    }
}

/// `[users]`: where logged-in users' refresh tokens are kept, and which requests need one.
public struct UserSettings: Sendable {
    /// One `LABEL.json` per user (mode 0600) in a directory of mode 0700; relative to the
    /// configuration file.
    public var directory = "users"
    /// The user a request gets when it names none; nil: the only logged-in user, if exactly one.
    public var defaultUser: String?
    public var userPaths = UserPathRule.defaults
    /// `SPOTIFY_REFRESH_TOKEN`: a refresh token for the user `default`, without a login.
    public var environmentRefreshToken: String?

    /// What every `/v1/me…` endpoint's reads and writes need, as Spotify's reference names each
    /// operation's scopes (the default `user_paths` send them with the user's token): the
    /// profile (not the email), the library, playlists (private and collaborative ones), what the
    /// user follows, top items, playback state, recent plays and positions; changes to
    /// playlists (their cover images too), the library, follows and playback.
    public static let defaultScopes = [
        "user-read-private", "user-library-read", "playlist-read-private", "playlist-read-collaborative", "user-follow-read",
        "user-top-read", "user-read-playback-state", "user-read-currently-playing", "user-read-recently-played",
        "user-read-playback-position", "playlist-modify-public", "playlist-modify-private", "user-library-modify",
        "user-follow-modify", "user-modify-playback-state", "ugc-image-upload",
    ]

    public init() {}
}

/// `[access]`: who may use the proxy.
public struct AccessSettings: Sendable, Equatable {
    /// One key per line (`LABEL sha256:HEX` or `LABEL KEY`, then `user=` and `budget=`); relative
    /// to the configuration file. nil: access keys are off.
    public var keysFile: String?
    /// Listen on a non-loopback address without access keys, on purpose.
    public var allowOpen = false

    public init() {}
}

extension ProxyConfiguration {
    /// The listen address is this machine's alone (127.0.0.0/8, ::1, localhost).
    public var listensOnLoopbackOnly: Bool {
        let host = self.listenHost.lowercased()
        if host == "localhost" { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, host, &v6) == 1 { return host == "::1" || withUnsafeBytes(of: v6) { Array($0) } == Array(repeating: 0, count: 15) + [1] }
        return false
    }

    /// The keys in force and the open-listener choice, read from `[access]` (the keys file is
    /// read now). A non-loopback listener without keys is refused unless `allow_open` says so.
    public func accessSettings() throws(ConfigurationError) -> AccessControl.Settings {
        let keys = try self.access.keysFile.map { path throws(ConfigurationError) in try AccessKeys.load(path: path) }
        if keys == nil, !self.access.allowOpen, !self.listensOnLoopbackOnly {
            throw ConfigurationError(
                "refusing to listen on \(self.listenDescription) without access keys: anyone who can reach it would spend your app's Spotify quota. "
                    + "Create keys (spotify-proxy keys new --label NAME, then [access] keys_file = \"keys\" in proxy.conf), "
                    + "listen on 127.0.0.1, or set [access] allow_open = true if the network is yours alone")
        }
        return AccessControl.Settings(keys: keys, allowOpen: self.access.allowOpen)
    }
}
