import ArgumentParser
import FakeSpotify
import Foundation
import Logging
import NIOPosix
import SpotifyCatalog
import SpotifyProxy

@main
struct SpotifyProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spotify-proxy",
        abstract: "A reverse proxy for the Spotify Web API that injects a bearer token it keeps fresh.",
        version: SpotifyProxyVersion.current,
        subcommands: [
            Serve.self, CheckConfig.self, Token.self, Search.self, CacheCommand.self, Login.self, Users.self, Logout.self, Keys.self, Status.self,
            Reload.self, Migrate.self, Library.self, Demo.self, FakeSpotifyCommand.self,
        ])
}

/// Prints a line that people and scripts wait for (where the proxy listens, the fake's port)
/// and flushes it at once: standard output is fully buffered when it is a file or a pipe.
func announce(_ text: String) {
    print(text)
    fflush(nil)
}

/// `--config`: every command that reads proxy.conf.
struct ConfigFileOption: ParsableArguments {
    @Option(name: .long, help: "Configuration file (TOML). Default: ./proxy.conf when it exists.")
    var config: String?

    /// The configuration with `overrides` on top; exits 2 on a configuration error (64 for a flag's value).
    func load(_ overrides: ConfigurationOverrides = .init()) throws -> ProxyConfiguration {
        try exitOnConfigurationError { try self.read(overrides) }
    }

    /// The configuration with `overrides` on top; throws its error for the caller to handle.
    func read(_ overrides: ConfigurationOverrides = .init()) throws(ConfigurationError) -> ProxyConfiguration {
        try ProxyConfiguration.load(path: self.config, environment: ProcessInfo.processInfo.environment, overrides: overrides)
    }
}

struct LogLevelOption: ParsableArguments {
    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical (overrides log.level).")
    var logLevel: String?
    @Option(name: .long, help: "text or json: one JSON object per line (overrides log.format).")
    var logFormat: String?
}

struct TokenURLOption: ParsableArguments {
    @Option(name: .long, help: "Spotify token endpoint (overrides spotify.token_url).")
    var tokenURL: String?
}

/// Every flag `serve` and `check-config` take.
struct ConfigOptions: ParsableArguments {
    @OptionGroup var file: ConfigFileOption
    @Option(name: .long, help: "Address to listen on, HOST:PORT (overrides server.listen).")
    var listen: String?
    @Option(name: .long, help: "Base URL that links in responses are rewritten to (overrides server.public_url).")
    var publicURL: String?
    @Option(name: .long, help: "Spotify Web API base URL (overrides spotify.api_url).")
    var apiURL: String?
    @OptionGroup var tokenEndpoint: TokenURLOption
    @OptionGroup var log: LogLevelOption

    var overrides: ConfigurationOverrides {
        .init(
            listen: self.listen, publicURL: self.publicURL, apiURL: self.apiURL, tokenURL: self.tokenEndpoint.tokenURL, logLevel: self.log.logLevel,
            logFormat: self.log.logFormat)
    }

    func load() throws -> ProxyConfiguration {
        try self.file.load(self.overrides)
    }
}

/// Runs `body`; a configuration error is printed (it names the key) and exits 2 (64 for a flag's value).
func exitOnConfigurationError<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as ConfigurationError {
        throw configurationFailure(error)
    }
}

func exitOnConfigurationError<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as ConfigurationError {
        throw configurationFailure(error)
    }
}

/// Writes `message` to standard error after the log lines still waiting in the buffered writer.
func writeStandardError(_ message: String) {
    BufferedLogWriter.flushStandardError()
    FileHandle.standardError.write(Data(message.utf8))
}

/// Prints a configuration error; the exit code to leave with.
func configurationFailure(_ error: ConfigurationError) -> ExitCode {
    writeStandardError("spotify-proxy: \(error.message)\n")
    // A flag's value is a command line it cannot use (64); the file's, a configuration error (2).
    return ExitCode(error.fromCommandLine ? 64 : 2)
}

func makeLogger(level: Logger.Level, format: LogFormat = .text) -> Logger {
    // Lines go to standard error in batches (one write per batch, within 100 ms, at once for
    // warnings and errors, and at exit), not one write per request line.
    let writer = BufferedLogWriter.standardError
    LoggingSystem.bootstrap { label in
        var handler: any LogHandler =
            switch format {
            case .text: TextLogHandler(label: label, writer: writer)
            case .json: JSONLogHandler(label: label)
            }
        handler.logLevel = level
        return FlushingLogHandler(handler, writer: writer)
    }
    return Logger(label: "spotify-proxy")
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the proxy until SIGTERM or SIGINT; SIGHUP reloads the configuration.")
    @OptionGroup var options: ConfigOptions

    func run() async throws {
        // A SIGHUP before the reloader traps it must not end the process (its default action).
        signal(SIGHUP, SIG_IGN)
        let config = try self.options.load()
        let logger = makeLogger(level: config.logLevel, format: config.logFormat)
        // A reload reads the same file with the same flags on top.
        let path = self.options.file.config
        let overrides = self.options.overrides
        let runtime = try await exitOnConfigurationError {
            try await ProxyRuntime(
                configuration: config, eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger,
                signals: [.sigterm, .sigint],
                reload: { () throws(ConfigurationError) in
                    try ProxyConfiguration.load(path: path, environment: ProcessInfo.processInfo.environment, overrides: overrides)
                },
                reloadOnSIGHUP: true)
        }
        let scheme = config.tlsCertificate == nil ? "http" : "https"
        logger.notice(
            "spotify-proxy \(SpotifyProxyVersion.current) listening on \(scheme)://\(ProxyConfiguration.hostAndPort(config.listenHost, runtime.port)), forwarding to \(config.apiURL)")
        try await runtime.run()
        logger.notice("spotify-proxy stopped")
    }
}

struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check-config", abstract: "Validate the configuration and exit.")
    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let config = try self.options.load()
        // The same checks `serve` makes before it starts (the certificate and key read too).
        try exitOnConfigurationError { try config.validate() }
        _ = try exitOnConfigurationError { try config.listenerTLS() }
        try await exitOnConfigurationError { try await ProxyRuntime.checkListenAddress(config) }
        print("configuration OK")
        print("  listen       \(config.listenDescription)")
        print("  api_url      \(config.apiURL)")
        print("  token_url    \(config.tokenURL)")
        print("  ca_bundle    \(config.upstream.caBundle ?? "(libcurl's default)")")
        print("  credentials  client id and secret set (not shown)")
        print("  users.dir    \(config.users.directory)")
        print("  public_url   \(config.publicURL ?? "(from each request's Host)")")
        print("  rewrite      \(config.rewriteLinks ? "on" : "off")")
        switch config.sink.kind {
        case .sqlite, .jsonl: print("  sink         \(config.sink.kind.rawValue) (\(config.sink.resolvedPath))")
        case .postgres, .none: print("  sink         \(config.sink.kind.rawValue)")
        }
        if config.sink.kind != .none { print("  spool_dir    \(config.sink.spoolDirectory)") }
        if config.sink.kind != .postgres, ProcessInfo.processInfo.environment["DATABASE_URL"].map({ !$0.isEmpty }) == true {
            writeStandardError("warning: DATABASE_URL is set, but sink.kind is \(config.sink.kind.rawValue): it is used only with sink.kind = \"postgres\"\n")
        }
        print("  tls          \(config.tlsCertificate.map { "on (\($0))" } ?? "off")")
        if let warning = config.tlsCertificateWarning() { writeStandardError("warning: \(warning)\n") }
        if let warning = config.usersDirectoryWarning { writeStandardError("warning: \(warning)\n") }
        let access = try exitOnConfigurationError { try config.accessSettings() }
        switch (config.access.keysFile, access.keys) {
        case (let path?, let keys?):
            print("  access keys  \(keys.keys.count) in \(path)")
            for warning in keys.warnings { writeStandardError("warning: \(warning)\n") }
        default: print("  access keys  off" + (config.access.allowOpen ? " (allow_open: open to the network)" : " (own endpoints for this machine only)"))
        }
    }
}

struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a fresh access token (client credentials) for scripts.")
    @OptionGroup var file: ConfigFileOption
    @OptionGroup var tokenEndpoint: TokenURLOption

    func run() async throws {
        let config = try self.file.load(.init(tokenURL: self.tokenEndpoint.tokenURL))
        let credentials = try exitOnConfigurationError { try config.requireCredentials() }
        do {
            let token = try await UpstreamClient.withRunning(configuration: config.upstream) { upstream in
                try await ClientCredentialsFetcher(
                    tokenURL: config.tokenURL, clientID: credentials.id, clientSecret: credentials.secret, client: upstream,
                    eventLoopGroup: MultiThreadedEventLoopGroup.singleton
                ).fetchToken()
            }
            print(token.accessToken)
        } catch {
            switch (error as? TokenFetchError)?.failure {
            case .invalidClient?, .wrongEndpoint?:
                // Refused until the configuration changes: a configuration error (exit 2), as
                // `serve` logs it.
                writeStandardError(
                    "spotify-proxy: the token endpoint \(config.tokenURL) refused to give a token (\(error)): check spotify.client_id and client_secret (or SPOTIFY_CLIENT_ID and SPOTIFY_CLIENT_SECRET), and spotify.token_url\n")
                throw ExitCode(2)
            default:
                writeStandardError("spotify-proxy: could not get a token: \(error)\n")
                throw ExitCode(1)
            }
        }
    }
}

/// A whole number of seconds above 0 for the fake's token lifetime.
func validateTokenLifetime(_ seconds: Int) throws {
    guard (1...TokenGrant.longestLifetime).contains(seconds) else {
        throw ValidationError(
            "--token-lifetime must be a whole number of seconds from 1 to \(TokenGrant.longestLifetime) (how long the fake's tokens live), got \(seconds)")
    }
}

/// Starts the fake Spotify on `port`, or exits 2 saying why it cannot listen there.
/// How the fake behaves, from the flags of `demo` and `fake-spotify`.
struct FakeBehaviourOptions: ParsableArguments {
    @Flag(name: .long, help: "Answer as Spotify answers a development-mode app since 2026: batch ?ids= endpoints and top tracks 403; search and artist albums 5 a page by default, limit above 10 400.")
    var developmentMode = false

    func apply(to fake: FakeSpotify) {
        fake.setDevelopmentMode(self.developmentMode)
    }
}

func startFake(port: Int, tokenLifetime: Int, fix: String) async throws -> FakeSpotify {
    do {
        let fake = try await FakeSpotify.start(group: MultiThreadedEventLoopGroup.singleton, port: port)
        fake.setTokenLifetime(seconds: tokenLifetime)
        fake.setUserTokenLifetime(seconds: tokenLifetime)
        return fake
    } catch {
        throw configurationFailure(ConfigurationError(ProxyRuntime.bindProblem(error, address: "127.0.0.1:\(port)", fix: fix)))
    }
}

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a fake Spotify and the proxy in front of it, to try everything offline.",
        discussion: """
            Without --config the demo stores what it sees in a database of its own, in a temporary \
            directory removed at exit, never in your proxy.conf's.
            """)
    @Option(name: .long, help: "Address the proxy listens on (default 127.0.0.1:8080, or server.listen of --config).")
    var listen: String?
    @Option(name: .long, help: "Lifetime of the fake's tokens, the app's and users', in seconds (short, to watch refreshes).")
    var tokenLifetime = 60
    @OptionGroup var behaviour: FakeBehaviourOptions
    @OptionGroup var file: ConfigFileOption
    @OptionGroup var log: LogLevelOption

    func validate() throws { try validateTokenLifetime(self.tokenLifetime) }

    func run() async throws {
        // Checked before it is written into the demo's proxy.conf, so that an error names the flag.
        signal(SIGHUP, SIG_IGN)
        if let listen = self.listen {
            _ = try exitOnConfigurationError { try ConfigurationError.checkingFlags { () throws(ConfigurationError) in try ProxyConfiguration.parseListen(listen, key: "--listen") } }
        }
        let fake = try await startFake(port: 0, tokenLifetime: self.tokenLifetime, fix: "try again")
        self.behaviour.apply(to: fake)
        // The demo's own proxy.conf, unless one is given: it points at the fake (so that
        // `spotify-proxy login --config` it logs a user in with the fake's accounts service), and
        // relative paths in it resolve against its directory, so the demo's database is there too.
        var scratch: URL?
        var file = self.file
        // The files the demo writes, to write again with the port it got when asked for port 0.
        var written: [(content: DemoConfigFile, file: URL, comment: String)] = []
        if file.config == nil {
            let content = DemoConfigFile(
                server: .init(listen: self.listen ?? "127.0.0.1:8080"), spotify: DemoConfigFile.spotify(fake),
                sink: .init(kind: "sqlite", path: "demo.sqlite", spoolDir: "spool"), users: .init(dir: "users"))
            let comment = "Written by `spotify-proxy demo`: the fake Spotify, and its own database and users,\nso the demo never writes into yours."
            let own = try content.write(name: "proxy.conf", comment: comment)
            written.append((content, own.file, comment))
            file.config = own.file.path
            scratch = own.directory
        }
        defer { if let scratch { try? FileManager.default.removeItem(at: scratch) } }
        var config: ProxyConfiguration
        do {
            config = try file.load(.init(listen: self.listen, logLevel: self.log.logLevel, logFormat: self.log.logFormat))
        } catch {
            try? await fake.shutdown()
            throw error
        }
        // With a file of the user's, the demo's users are its own too: a login with the fake's
        // accounts service is no Spotify login, and the file's refresh tokens are Spotify's. The
        // banner's `login` names a file of the demo's that points at the fake and keeps users in
        // the demo's users directory (`login --config FILE` would go to FILE's accounts service).
        var loginConfig = file.config ?? "proxy.conf"
        var demoUsers: String?
        var loginScratch: URL?
        if scratch == nil {
            do {
                // Where the proxy listens too, so that `users --config` it finds the running proxy.
                let server = DemoConfigFile.Server(listen: config.listenDescription, tlsCert: config.tlsCertificate, tlsKey: config.tlsKey)
                let content = DemoConfigFile(
                    server: server, spotify: DemoConfigFile.spotify(fake, redirectURI: config.redirectURI, scopes: config.scopes),
                    users: .init(dir: "users"))
                let comment =
                    "Written by `spotify-proxy demo --config \(loginConfig)` while it runs: logs users in with the\ndemo's fake Spotify, into the demo's own users directory."
                let login = try content.write(name: "login.conf", comment: comment)
                written.append((content, login.file, comment))
                loginConfig = login.file.path
                demoUsers = login.directory.appendingPathComponent("users").path
                loginScratch = login.directory
            } catch {
                try? await fake.shutdown()
                throw error
            }
        }
        defer { if let loginScratch { try? FileManager.default.removeItem(at: loginScratch) } }
        // The demo's own file holds the flag's value (so that `users` finds the proxy): name the flag.
        if scratch != nil || (self.listen == nil && config.listenSetBy == nil) { config.listenSetBy = "--listen" }
        let logger = makeLogger(level: config.logLevel, format: config.logFormat)
        // Whatever the file says, the demo's proxy talks to its fake (on reload too).
        // Its users too: the demo's own, none from SPOTIFY_REFRESH_TOKEN (a Spotify user's).
        let pointAtFake: @Sendable (inout ProxyConfiguration) -> Void = {
            [baseURL = fake.baseURL, tokenURL = fake.tokenURL, id = fake.clientID, secret = fake.clientSecret, demoUsers, loginConfig] config in
            config.apiURL = baseURL
            config.tokenURL = tokenURL
            config.authorizeURL = baseURL + "/authorize"
            config.clientID = id
            config.clientSecret = secret
            if let demoUsers {
                config.users.directory = demoUsers
                // The logins the proxy's own answers ask for go to the fake too.
                config.commands = CommandHint(configFile: loginConfig)
            }
            config.users.environmentRefreshToken = nil
        }
        pointAtFake(&config)
        let overrides = ConfigurationOverrides(listen: self.listen, logLevel: self.log.logLevel, logFormat: self.log.logFormat)
        let path = file.config
        let runtime: ProxyRuntime
        do {
            runtime = try await exitOnConfigurationError {
                try await ProxyRuntime(
                    configuration: config, eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger,
                    signals: [.sigterm, .sigint],
                    reload: { () throws(ConfigurationError) in
                        var reloaded = try ProxyConfiguration.load(path: path, environment: ProcessInfo.processInfo.environment, overrides: overrides)
                        pointAtFake(&reloaded)
                        return reloaded
                    },
                    reloadOnSIGHUP: true)
            }
        } catch {
            try? await fake.shutdown()
            throw error
        }
        let base = "\(config.tlsCertificate == nil ? "http" : "https")://\(config.listenHost):\(runtime.port)"
        // Asked for port 0: the demo's files name the port the proxy got, so that `status` and
        // `users --config` them find it; a file of the user's is left alone, and the banner's
        // `status` names the proxy instead.
        var statusTarget = ""
        if config.listenPort == 0 {
            let bound = ProxyConfiguration.hostAndPort(config.listenHost, runtime.port)
            for (content, file, comment) in written {
                var content = content
                content.server?.listen = bound
                do {
                    try content.write(to: file, comment: comment)
                } catch {
                    writeStandardError("spotify-proxy: could not write the port the proxy got (\(runtime.port)) into \(file.path): \(error)\n")
                }
            }
            if scratch == nil { statusTarget = " --proxy \(base)" }
        }
        // With access keys (a --config that has them), every curl below needs one; HTTPS needs the certificate.
        var curl = "curl -s"
        if config.access.keysFile != nil { curl += " -H \"Authorization: Bearer $KEY\"" }
        if let certificate = config.tlsCertificate { curl += " --cacert \(certificate)" }
        let keysNote = config.access.keysFile == nil ? "" : "Access keys are on: set KEY to one (spotify-proxy keys new --label NAME --config \(file.config ?? "proxy.conf"), then reload).\n"
        let executable = CommandLine.arguments.first.map { URL(fileURLWithPath: $0).standardizedFileURL.path } ?? "spotify-proxy"
        // Only what works with this configuration: no library without a database; the demo's
        // users listed by the file that keeps them (a --config's own lists its Spotify users).
        let library = config.sink.kind == .none ? "" : "\n  \(executable) library albums --config \(file.config ?? "proxy.conf")"
        let users = demoUsers == nil ? "" : "\n  \(executable) users --config \(loginConfig)     # the demo's users"
        announce(
            """
            spotify-proxy demo: a fake Spotify at \(fake.baseURL), the proxy at \(base).
            \(keysNote)Try:
              \(curl) \(base)/v1/artists/0TnOYISbd1XYRBk9myaseg
              \(curl) '\(base)/v1/search?q=daft+punk&type=album&limit=5'
              \(curl) '\(base)/v1/artists/0TnOYISbd1XYRBk9myaseg/albums?limit=10'   # follow "next"
              \(curl) \(base)/readyz\(library)
              \(executable) status --config \(file.config ?? "proxy.conf")\(statusTarget)\(config.access.keysFile == nil ? "" : " --key $KEY")
            /v1/me needs a logged-in Spotify user. Log one in with the fake's accounts service (it agrees at once):
              \(executable) login --config \(loginConfig)     # then open the URL it prints, or: curl -sL 'URL'
              \(curl) \(base)/v1/me\(users)
            Press Ctrl-C to stop.
            """)
        try await runtime.run()
        try await fake.shutdown()
    }
}

struct FakeSpotifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fake-spotify",
        abstract: "Run only the fake Spotify (accounts service and Web API), for benchmarks and client experiments.",
        discussion: "The first line printed is the port it listens on, alone, for scripts.")
    @Option(name: .long, help: "Port on 127.0.0.1 (0 picks a free one).")
    var port = 0
    @Option(name: .long, help: "Lifetime of issued tokens, the app's and users', in seconds.")
    var tokenLifetime = 3600
    @OptionGroup var behaviour: FakeBehaviourOptions
    @Option(name: .long, help: "Delay every Web API answer by this many milliseconds (a distant Spotify).")
    var latencyMs = 0
    @Option(name: .long, help: "At most this many Web API requests per rolling 30 s; beyond, 429 with the rest of the window as Retry-After.")
    var rollingLimit: Int?

    func validate() throws {
        try validateTokenLifetime(self.tokenLifetime)
        guard self.latencyMs >= 0 else { throw ValidationError("--latency-ms must be 0 or more, got \(self.latencyMs)") }
        if let limit = self.rollingLimit, limit < 1 { throw ValidationError("--rolling-limit must be 1 or more, got \(limit)") }
        guard (0...65535).contains(self.port) else { throw ValidationError("--port must be from 0 to 65535, got \(self.port)") }
    }

    func run() async throws {
        let fake = try await startFake(
            port: self.port, tokenLifetime: self.tokenLifetime, fix: "choose another with --port PORT (0 picks a free one)")
        self.behaviour.apply(to: fake)
        fake.setLatency(.milliseconds(Int64(self.latencyMs)))
        if let limit = self.rollingLimit { fake.setRollingLimit(requests: limit, window: .seconds(30)) }
        announce(String(fake.port))
        announce("fake Spotify at \(fake.baseURL) (client id \(fake.clientID), secret \(fake.clientSecret)); token endpoint \(fake.tokenURL)")
        // Serves until the process is stopped.
        let stopped = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Void.self)
        try await stopped.futureResult.get()
    }
}

/// Opens the configured sink (exit 2 when there is none or it is misconfigured), checks that
/// its database can be reached, runs `body` on it and closes it; a failure is reported as
/// `what` with the cause in words, and exits 1.
func withSink<T>(_ config: ProxyConfiguration, logger: Logger, failing what: String, _ body: (any EntitySink) async throws -> T) async throws -> T {
    let sink = try exitOnConfigurationError {
        try config.sink.validateDatabase()
        guard let sink = try config.sink.makeSink(logger: logger) else {
            throw ConfigurationError("sink.kind is \"none\": there is no database; set [sink] kind to sqlite, postgres or jsonl")
        }
        return sink
    }
    do {
        try await sink.checkReachable()
        let result = try await withRunningSink(sink) { try await body(sink) }
        await sink.close()
        return result
    } catch {
        await sink.close()
        writeStandardError("spotify-proxy: \(what): \(SinkError.describe(error))\n")
        throw ExitCode(1)
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply the sink database's schema migrations (also done at start).")
    @OptionGroup var file: ConfigFileOption
    @OptionGroup var log: LogLevelOption

    func run() async throws {
        let config = try self.file.load(.init(logLevel: self.log.logLevel, logFormat: self.log.logFormat))
        let applied = try await withSink(config, logger: makeLogger(level: config.logLevel, format: config.logFormat), failing: "migration failed") { try await $0.migrate() }
        print(applied.isEmpty ? "schema is up to date" : "applied migrations: \(applied.map(String.init).joined(separator: ", "))")
    }
}

struct Library: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the artists, albums or tracks the tee has stored.")
    @Argument(help: "artists, albums or tracks")
    var kind: String
    @Option(name: .long, help: "Only names containing this text (case-insensitive).")
    var name: String?
    @Option(name: .long, help: "At most this many rows.")
    var limit = 50
    @Flag(name: .long, help: "JSON lines instead of a table.")
    var json = false
    @OptionGroup var file: ConfigFileOption

    /// The entity kind whose table `kind` names.
    private var entityKind: SpotifyEntity.Kind? { SpotifyEntity.Kind.allCases.first { $0.table == self.kind } }

    func validate() throws {
        guard self.entityKind != nil else {
            throw ValidationError("kind must be artists, albums or tracks, not \"\(self.kind)\"")
        }
        guard self.limit > 0 else { throw ValidationError("--limit must be above 0") }
    }

    func run() async throws {
        let config = try self.file.load()
        let kind = self.entityKind!
        if [.sqlite, .jsonl].contains(config.sink.kind), !FileManager.default.fileExists(atPath: config.sink.resolvedPath) {
            // Reading must not create an empty database where the proxy never wrote.
            writeStandardError(
                "spotify-proxy: no library at \(config.sink.resolvedPath) (sink.path): nothing has been stored there yet. "
                    + "Run the proxy with this configuration first, or pass the --config it runs with.\n")
            throw ExitCode(1)
        }
        // One row more than shown: whether there are more to say so.
        let fetched = try await withSink(config, logger: makeLogger(level: .warning), failing: "cannot read the library") { sink in
            _ = try await sink.migrate()
            return try await sink.list(kind, nameContains: self.name, limit: self.limit < Int.max ? self.limit + 1 : self.limit)
        }
        let rows = Array(fetched.prefix(self.limit))
        if self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            for row in rows { print(String(decoding: try encoder.encode(row), as: UTF8.self)) }
            return
        }
        print(LibraryTable.render(rows, kind: kind))
        if fetched.count > rows.count { print("(more are stored than --limit \(self.limit): raise it, or narrow with --name)") }
    }
}
