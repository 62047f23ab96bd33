import ArgumentParser
import Foundation
import Logging
import NIOPosix
import SpotifyProxy
import SpotifyProxyTestSupport

@main
struct SpotifyProxyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spotify-proxy",
        abstract: "A reverse proxy for the Spotify Web API that injects a bearer token it keeps fresh.",
        version: SpotifyProxyVersion.current,
        subcommands: [Serve.self, CheckConfig.self, Token.self, Migrate.self, Library.self, Demo.self, FakeSpotifyCommand.self])
}

struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "Configuration file (TOML). Default: ./proxy.conf when it exists.")
    var config: String?
    @Option(name: .long, help: "Address to listen on, HOST:PORT (overrides server.listen).")
    var listen: String?
    @Option(name: .long, help: "Base URL that links in responses are rewritten to (overrides server.public_url).")
    var publicURL: String?
    @Option(name: .long, help: "Spotify Web API base URL (overrides spotify.api_url).")
    var apiURL: String?
    @Option(name: .long, help: "Spotify token endpoint (overrides spotify.token_url).")
    var tokenURL: String?
    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical (overrides log.level).")
    var logLevel: String?

    func load() throws -> ProxyConfiguration {
        try exitOnConfigurationError {
            try ProxyConfiguration.load(
                path: self.config, environment: ProcessInfo.processInfo.environment,
                overrides: .init(listen: self.listen, publicURL: self.publicURL, apiURL: self.apiURL, tokenURL: self.tokenURL, logLevel: self.logLevel))
        }
    }
}

func exitOnConfigurationError<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as ConfigurationError {
        FileHandle.standardError.write(Data("spotify-proxy: \(error.message)\n".utf8))
        throw ExitCode(2)
    }
}

func exitOnConfigurationError<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as ConfigurationError {
        FileHandle.standardError.write(Data("spotify-proxy: \(error.message)\n".utf8))
        throw ExitCode(2)
    }
}

func makeLogger(level: Logger.Level) -> Logger {
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
    return Logger(label: "spotify-proxy")
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the proxy until SIGTERM or SIGINT.")
    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let config = try self.options.load()
        let logger = makeLogger(level: config.logLevel)
        let runtime = try await exitOnConfigurationError {
            try await ProxyRuntime(
                configuration: config, eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger,
                signals: [.sigterm, .sigint])
        }
        logger.notice("spotify-proxy \(SpotifyProxyVersion.current) listening on http://\(config.listenHost):\(runtime.port), forwarding to \(config.apiURL)")
        try await runtime.run()
        logger.notice("spotify-proxy stopped")
    }
}

struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "check-config", abstract: "Validate the configuration and exit.")
    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let config = try self.options.load()
        _ = try exitOnConfigurationError { try config.requireCredentials() }
        print("configuration OK")
        print("  listen       \(config.listenDescription)")
        print("  api_url      \(config.apiURL)")
        print("  token_url    \(config.tokenURL)")
        print("  credentials  client id and secret set (not shown)")
        print("  public_url   \(config.publicURL ?? "(from each request's Host)")")
        print("  rewrite      \(config.rewriteLinks ? "on" : "off")")
        let file = [.sqlite, .jsonl].contains(config.sink.kind) ? " (\(config.sink.resolvedPath))" : ""
        print("  sink         \(config.sink.kind.rawValue)\(file)")
    }
}

struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a fresh access token (client credentials) for scripts.")
    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let config = try self.options.load()
        let credentials = try exitOnConfigurationError { try config.requireCredentials() }
        let upstream = UpstreamClient(configuration: config.upstream)
        let fetcher = ClientCredentialsFetcher(
            tokenURL: config.tokenURL, clientID: credentials.id, clientSecret: credentials.secret, client: upstream,
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        do {
            let token = try await fetcher.fetchToken()
            await upstream.shutdown()
            print(token.accessToken)
        } catch {
            await upstream.shutdown()
            FileHandle.standardError.write(Data("spotify-proxy: could not get a token: \(error.description)\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a fake Spotify and the proxy in front of it, to try everything offline.")
    @Option(name: .long, help: "Address the proxy listens on.")
    var listen = "127.0.0.1:8080"
    @Option(name: .long, help: "Lifetime of the fake's tokens in seconds (short, to watch refreshes).")
    var tokenLifetime = 60
    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    func run() async throws {
        var config = ProxyConfiguration()
        (config.listenHost, config.listenPort) = try exitOnConfigurationError { try ProxyConfiguration.parseListen(self.listen, key: "--listen") }
        config.logLevel = try exitOnConfigurationError { try ProxyConfiguration.parseLogLevel(self.logLevel, key: "--log-level") }
        let logger = makeLogger(level: config.logLevel)
        let fake = try await FakeSpotify.start(group: MultiThreadedEventLoopGroup.singleton)
        fake.setTokenLifetime(seconds: self.tokenLifetime)
        config.apiURL = fake.baseURL
        config.tokenURL = fake.tokenURL
        config.clientID = fake.clientID
        config.clientSecret = fake.clientSecret
        let runtime = try await exitOnConfigurationError {
            try await ProxyRuntime(
                configuration: config, eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger,
                signals: [.sigterm, .sigint])
        }
        let base = "http://\(config.listenHost):\(runtime.port)"
        print(
            """
            spotify-proxy demo: a fake Spotify at \(fake.baseURL), the proxy at \(base).
            Try:
              curl -s \(base)/v1/artists/0TnOYISbd1XYRBk9myaseg
              curl -s '\(base)/v1/search?q=old&type=artist,album,track'
              curl -s '\(base)/v1/artists/0TnOYISbd1XYRBk9myaseg/albums?limit=10'   # follow "next"
              curl -s \(base)/readyz
            Press Ctrl-C to stop.
            """)
        try await runtime.run()
        try await fake.shutdown()
    }
}

struct FakeSpotifyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fake-spotify",
        abstract: "Run only the fake Spotify (accounts service and Web API), for benchmarks and client experiments.")
    @Option(name: .long, help: "Port on 127.0.0.1 (0 picks a free one).")
    var port = 0
    @Option(name: .long, help: "Lifetime of issued tokens in seconds.")
    var tokenLifetime = 3600

    func run() async throws {
        let fake = try await FakeSpotify.start(group: MultiThreadedEventLoopGroup.singleton, port: self.port)
        fake.setTokenLifetime(seconds: self.tokenLifetime)
        print("fake Spotify at \(fake.baseURL) (client id \(fake.clientID), secret \(fake.clientSecret)); token endpoint \(fake.tokenURL)")
        // Serves until the process is stopped.
        let stopped = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Void.self)
        try await stopped.futureResult.get()
    }
}

/// Opens the configured sink (exit 2 when there is none or it is misconfigured), runs `body`
/// on it and closes it; a failure inside `body` is reported as `what` and exits 1.
func withSink<T>(_ config: ProxyConfiguration, logger: Logger, failing what: String, _ body: (any EntitySink) async throws -> T) async throws -> T {
    let sink = try exitOnConfigurationError {
        guard let sink = try config.sink.makeSink(logger: logger) else {
            throw ConfigurationError("sink.kind is \"none\": there is no database; set [sink] kind to sqlite, postgres or jsonl")
        }
        return sink
    }
    do {
        let result = try await body(sink)
        await sink.close()
        return result
    } catch {
        await sink.close()
        FileHandle.standardError.write(Data("spotify-proxy: \(what): \(String(reflecting: error))\n".utf8))
        throw ExitCode(1)
    }
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply the sink database's schema migrations (also done at start).")
    @OptionGroup var options: ConfigOptions

    func run() async throws {
        let config = try self.options.load()
        let applied = try await withSink(config, logger: makeLogger(level: config.logLevel), failing: "migration failed") { try await $0.migrate() }
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
    @OptionGroup var options: ConfigOptions

    /// The entity kind whose table `kind` names.
    private var entityKind: SpotifyEntity.Kind? { SpotifyEntity.Kind.allCases.first { $0.table == self.kind } }

    func validate() throws {
        guard self.entityKind != nil else {
            throw ValidationError("kind must be artists, albums or tracks, not \"\(self.kind)\"")
        }
        guard self.limit > 0 else { throw ValidationError("--limit must be above 0") }
    }

    func run() async throws {
        let config = try self.options.load()
        let kind = self.entityKind!
        let rows = try await withSink(config, logger: makeLogger(level: .warning), failing: "cannot read the library") { sink in
            _ = try await sink.migrate()
            return try await sink.list(kind, nameContains: self.name, limit: self.limit)
        }
        if self.json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            for row in rows { print(String(decoding: try encoder.encode(row), as: UTF8.self)) }
            return
        }
        print(LibraryTable.render(rows, kind: kind))
    }
}
