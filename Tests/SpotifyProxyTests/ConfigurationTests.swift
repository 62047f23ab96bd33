import Foundation
import Logging
import NIOCore
import NIOPosix
@testable import SpotifyProxy
import Synchronization
import Testing

@Suite("Configuration")
struct ConfigurationTests {
    @Test("a reload's warning names each changed setting that waits for a restart by its key")
    func restartOnlyNamesKeys() {
        let old = ProxyConfiguration()
        func changed(_ edit: (inout ProxyConfiguration) -> Void) -> [String] {
            var new = old
            edit(&new)
            return ConfigurationReloader.restartOnly(old: old, new: new)
        }
        #expect(changed { _ in } == [])
        #expect(changed { $0.maxHeaderBytes += 1 } == ["server.max_header_bytes"])
        #expect(changed { $0.clientIdleTimeout = .seconds(2) } == ["server.idle_timeout"])
        #expect(changed { $0.cache.maxBytes = 0 } == ["[cache]"])
        #expect(changed { $0.listenPort += 1 } == ["server.listen"])
        // No machine has 999 cores: a change whatever the default is here.
        #expect(changed { ($0.maxBodyBytes, $0.workers) = (1, 999) } == ["server.workers", "server.max_body_bytes"])
        #expect(changed { $0.rewriteLinks.toggle() } == ["server.rewrite_links"])
        #expect(changed { $0.refreshAhead = 0.5 } == ["spotify.refresh_ahead"])
        #expect(changed { $0.tokenWait = .seconds(3) } == ["spotify.token_wait"])
        #expect(changed { $0.unauthorizedRefreshInterval = .seconds(7) } == ["spotify.unauthorized_refresh_interval"])
        #expect(changed { $0.users.defaultUser = "alice" } == [], "applied at once")
        #expect(changed { $0.users.directory = "elsewhere" } == ["users.dir"])
    }

    @Test("absolute-form targets may name the upstream, the public URL or the proxy's own listen address (and loopback names for a loopback or wildcard listener), no other")
    func ownAuthorities() {
        var config = ProxyConfiguration()
        config.listenHost = "127.0.0.1"
        config.listenPort = 8080
        config.publicURL = "https://Proxy.Example.test"
        #expect(config.ownAuthorities == ["api.spotify.com", "proxy.example.test", "127.0.0.1:8080", "[::1]:8080", "localhost:8080"])
        config.listenHost = "10.1.2.3"
        config.publicURL = nil
        #expect(config.ownAuthorities == ["api.spotify.com", "10.1.2.3:8080"])
        // On the scheme's default port, the port may be left out.
        config.listenPort = 80
        #expect(config.ownAuthorities == ["api.spotify.com", "10.1.2.3:80", "10.1.2.3"])
        let routed = RequestRouter.route(method: .GET, uri: "http://127.0.0.1:8080/v1/artists/x", ownAuthorities: ProxyConfiguration().ownAuthorities)
        #expect(routed == .forward(uri: "/v1/artists/x"))
    }

    @Test("a reload checks access keys against the address the proxy listens on now: a file moving listen to 0.0.0.0 without keys is applied (the move waits for a restart), not refused")
    func reloadKeysForTheAddressInUse() throws {
        var running = ProxyConfiguration()
        running.clientID = "id"
        running.clientSecret = "secret"
        running.sink.kind = .none
        var moved = running
        moved.listenHost = "0.0.0.0"
        let record = ReloadRecord()
        let file = moved
        let reloader = ConfigurationReloader(
            load: { file }, running: running, access: AccessControl(try running.accessSettings()), tls: nil, credentials: nil, record: record,
            trapSIGHUP: false, logger: Logger(label: "test"))
        #expect(reloader.reload() == nil)
        #expect(record.status.atRestart?.contains("server.listen") == true, "\(record.status)")
    }

    @Test("a reload applies [users] default from the next request on (several users logged in: a request naming none gets the new default); users.dir waits for a restart")
    func reloadDefaultUser() throws {
        let directory = try temporaryDirectory()
        let store = UserStore(directory: directory.path)
        for label in ["alice", "bob"] {
            try store.save(StoredUser(label: label, refreshToken: "R-\(label)", scopes: ["user-read-private"], spotifyUserID: "\(label)-id", authorizedAt: Date()))
        }
        var running = ProxyConfiguration()
        running.clientID = "id"
        running.clientSecret = "secret"
        running.sink.kind = .none
        running.users.directory = directory.path
        let users = UserTokens(
            settings: UserTokens.Settings(running), client: UpstreamClient(configuration: .init()), eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            logger: Logger(label: "test"))
        #expect(users.resolve(nil) == .ambiguous(["alice", "bob"]))
        let file = Mutex(running)
        let record = ReloadRecord()
        let reloader = ConfigurationReloader(
            load: { file.withLock { $0 } }, running: running, access: AccessControl(try running.accessSettings()), tls: nil, credentials: nil,
            users: users, record: record, trapSIGHUP: false, logger: Logger(label: "test"))
        file.withLock { $0.users.defaultUser = "bob" }
        #expect(reloader.reload() == nil)
        #expect(users.resolve(nil) == .user("bob"))
        #expect(users.resolve("alice") == .user("alice"))
        #expect(record.status.atRestart?.isEmpty ?? true, "\(record.status)")
        file.withLock {
            $0.users.defaultUser = nil
            $0.users.directory = directory.path + "/elsewhere"
        }
        #expect(reloader.reload() == nil)
        #expect(users.resolve(nil) == .ambiguous(["alice", "bob"]))
        #expect(record.status.atRestart == ["users.dir"], "\(record.status)")
    }

    @Test("proxy.conf.example parses and gives the documented defaults")
    func example() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../proxy.conf.example")
        let text = try String(contentsOf: url, encoding: .utf8)
        let config = try ProxyConfiguration.parse(toml: text)
        #expect(config.listenHost == "127.0.0.1")
        #expect(config.listenPort == 8080)
        #expect(config.apiURL == "https://api.spotify.com")
        #expect(config.tokenURL == "https://accounts.spotify.com/api/token")
        #expect(config.sink.kind == .sqlite)
        #expect(config.sink.resolvedPath == "spotify-proxy.sqlite")
        #expect(config.sink.url == nil)
        #expect(config.clientID == nil)
        #expect(config.workers == nil)
    }

    @Test("the keys external checks rely on")
    func requiredKeys() throws {
        let config = try ProxyConfiguration.parse(toml: """
            [server]
            listen = "0.0.0.0:9090"
            workers = 3
            [spotify]
            api_url = "http://127.0.0.1:7000/"
            token_url = "http://127.0.0.1:7000/api/token"
            client_id = "id"
            client_secret = "secret"
            connect_timeout = 1.5
            [sink]
            kind = "none"
            """)
        #expect(config.listenHost == "0.0.0.0" && config.listenPort == 9090)
        #expect(config.workers == 3 && ListenerSettings(config).workers == 3)
        #expect(config.apiURL == "http://127.0.0.1:7000")
        #expect(config.upstream.connectTimeout == .milliseconds(1500))
        let credentials = try config.requireCredentials()
        #expect(credentials.id == "id" && credentials.secret == "secret")
    }

    @Test("server.listen takes every numeric address the resolver takes when the proxy binds", arguments: [
        ("127.1:8080", "127.1"), ("0:8080", "0"), ("[::1]:8080", "::1"), ("[::ffff:127.0.0.1]:1", "::ffff:127.0.0.1"), ("localhost:8080", "localhost"),
    ])
    func listenAddresses(text: String, host: String) throws {
        #expect(try ProxyConfiguration.parseListen(text, key: "server.listen").0 == host)
    }

    @Test("a listen address whose host does not resolve is reported in words with the fix, not as NIO's error type")
    func unresolvableListenHost() throws {
        // Refused by the resolver itself (no lookup leaves the machine for it).
        let error = try #require(throws: (any Error).self) { try SocketAddress.makeAddressResolvingHost("no such host", port: 8080) }
        let problem = ProxyRuntime.bindProblem(error, address: "no such host:8080", fix: "choose another with --listen HOST:PORT")
        #expect(problem.hasPrefix("cannot listen on no such host:8080: the host no such host is not a name this machine resolves ("), "\(problem)")
        #expect(problem.hasSuffix("); choose another with --listen HOST:PORT, e.g. 127.0.0.1:8080"), "\(problem)")
        #expect(!problem.contains("SocketAddressError"), "\(problem)")
    }

    @Test("a URL setting is kept as given, with its scheme in lower case and without its last /s", arguments: [
        ("HTTPS://Dev.Example.com/spotify/", "https://Dev.Example.com/spotify"), ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://localhost", "http://localhost"), ("https://accounts.spotify.com/api/token", "https://accounts.spotify.com/api/token"),
    ])
    func urls(text: String, kept: String) throws {
        #expect(try ProxyConfiguration.checkURL(text, key: "server.public_url") == kept)
    }

    @Test("errors name the key and say how to fix it", arguments: [
        ("[server]\nlisten = 8080", "server.listen must be a string"),
        ("[server]\nlisten = \"nohost\"", "server.listen: \"nohost\" is not HOST:PORT"),
        ("[server]\nlisten = \"127.0.0.1:99999\"", "port from 0 to 65535"),
        ("[server]\nlisten = \"256.1.1.1:8080\"", "server.listen: \"256.1.1.1\" is not an IP address"),
        ("[server]\nlisten = \" 127.0.0.1:8080\"", "server.listen: \" 127.0.0.1:8080\" has spaces in it; write HOST:PORT without them"),
        ("[server]\nlisten = \"[::g]:8080\"", "server.listen: \"::g\" is not an IP address"),
        ("[server]\nlisten = \":8080\"", "server.listen: \":8080\" names no host"),
        ("[server]\nlisten = \"http://127.0.0.1:8080/\"", "server.listen: \"http://127.0.0.1:8080/\" is a URL; give the address alone, HOST:PORT (\"127.0.0.1:8080\")"),
        ("[server]\nlistne = \"x\"", "unknown key server.listne"),
        ("[srever]\nlisten = \"x\"", "unknown section [srever]"),
        ("[spotify]\napi_url = \"api.spotify.com\"", "spotify.api_url: \"api.spotify.com\" is not an http:// or https:// URL"),
        ("[spotify]\napi_url = \"http://:7000\"", "spotify.api_url: \"http://:7000\" names no host"),
        ("[spotify]\napi_url = \"http://127.0.0.1:70000\"", "has no usable port after the host"),
        ("[spotify]\napi_url = \"http://127.0.0.1:+80\"", "has no usable port after the host"),
        ("[spotify]\ntoken_url = \"https://me:pw@accounts.spotify.com/api/token\"", "carries a user name"),
        ("[server]\npublic_url = \"https://dev.example.com/spotify?x=1\"", "server.public_url: \"https://dev.example.com/spotify?x=1\" has a query or fragment"),
        ("[spotify]\nconnect_timeout = -1", "spotify.connect_timeout must be a number of seconds above 0"),
        ("[spotify]\nrefresh_ahead = 1.5", "spotify.refresh_ahead must be between 0.1 and 0.95"),
        ("[sink]\nkind = \"mysql\"", "sink.kind = \"mysql\" is not supported"),
        ("[sink]\nbatch_size = 0", "sink.batch_size must be a whole number above 0"),
        ("[server]\nworkers = 0", "server.workers must be a whole number above 0"),
        ("[server]\nworkers = 20000", "server.workers = 20000 is too many; give at most 256"),
        ("[server]\nmax_header_bytes = 10", "server.max_header_bytes = 10 is too small for any client; give at least 1024"),
        ("[server]\nmax_header_bytes = 100000", "server.max_header_bytes = 100000 is above the HTTP parser's own limit; give at most 81920"),
        ("[users]\nuser_paths = [\"FOO /v1/me\"]", "users.user_paths: \"FOO /v1/me\" names the method FOO, which no request forwarded to Spotify has; use one of GET, HEAD"),
        ("[server]\nidle_timeout = 1e9", "server.idle_timeout must be a number of seconds above 0 and under a year"),
        ("[log]\nlevel = \"loud\"", "log.level: \"loud\" is not a log level"),
        ("[server\nlisten=", "not valid TOML"),
        ("client_id = \"abc\"", "unknown key `client_id` (did you mean [spotify] client_id?)"),
        ("idle_timeout = 5", "unknown key `idle_timeout` (did you mean [server] idle_timeout or [spotify] idle_timeout?)"),
        ("colour = \"blue\"", "unknown key `colour` outside any section"),
        ("[spotify]\nunauthorized_refresh_interval = 0", "spotify.unauthorized_refresh_interval must be a number of seconds above 0"),
        ("[users]\ndefault = \"../x\"", "users.default: the user label \"../x\" is not usable"),
    ])
    func errors(toml: String, expected: String) {
        #expect {
            _ = try ProxyConfiguration.parse(toml: toml)
        } throws: { error in
            (error as? ConfigurationError)?.message.contains(expected) == true
        }
    }

    @Test("a file the configuration names that cannot be used: the message says what is wrong with it")
    func unusableFiles() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        func message(_ body: () throws -> Void) -> String {
            do {
                try body()
                return "no error"
            } catch {
                return (error as? ConfigurationError)?.message ?? "\(error)"
            }
        }
        let path = directory.path
        #expect(message { _ = try ProxyConfiguration.load(path: path, environment: [:], overrides: .init()) }.contains("\(path): a directory, not a file; pass --config"))
        #expect(message { _ = try ProxyConfiguration.load(path: path + "/none.conf", environment: [:], overrides: .init()) }
            .contains("no such file; copy proxy.conf.example"))
        #expect(message { _ = try AccessKeys.load(path: path) }.contains("access.keys_file: cannot read \(path): a directory, not a file"))
        #expect(message { try AccessKeys.append(AccessKeys.generate(label: "a", user: nil, budget: nil).entry, to: path + "/no/keys") }
            .contains("cannot write \(path)/no/keys: No such file or directory; create its directory first"))
        let (certificate, key) = try await TeamOperationTests.makeCertificate(in: directory)
        let garbage = directory.appendingPathComponent("garbage.pem").path
        try "x\n".write(toFile: garbage, atomically: true, encoding: .utf8)
        #expect(message { _ = try ListenerTLS(certificate: path + "/none.pem", key: key) }.contains("server.tls_cert = \(path)/none.pem: no such file"))
        #expect(message { _ = try ListenerTLS(certificate: garbage, key: key) }.contains("PEM certificate in the file"))
        #expect(message { _ = try ListenerTLS(certificate: certificate, key: garbage) }.contains("server.tls_key = \(garbage): no usable PEM private key"))
        let other = directory.appendingPathComponent("other")
        try FileManager.default.createDirectory(at: other, withIntermediateDirectories: false)
        let (_, otherKey) = try await TeamOperationTests.makeCertificate(in: other)
        #expect(message { _ = try ListenerTLS(certificate: certificate, key: otherKey) }.contains("the key must be the certificate's own"))
        for (certificate, key) in [(certificate, otherKey), (key, key), (certificate, certificate)] {
            #expect(!message { _ = try ListenerTLS(certificate: certificate, key: key) }.contains("failedTo"), "NIOSSL's case names")
        }
        #expect(message { _ = try ListenerTLS(certificate: certificate, key: key) } == "no error")
    }

    @Test("missing credentials say which keys and variables to set")
    func missingCredentials() {
        #expect {
            _ = try ProxyConfiguration().requireCredentials()
        } throws: { error in
            let message = (error as? ConfigurationError)?.message ?? ""
            return message.contains("SPOTIFY_CLIENT_ID") && message.contains("SPOTIFY_CLIENT_SECRET") && message.contains("spotify-proxy demo")
        }
    }

    @Test("environment overrides the file for secrets; flags override both")
    func precedence() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("proxy.conf")
        try """
            [server]
            listen = "127.0.0.1:8080"
            [spotify]
            client_id = "file-id"
            client_secret = "file-secret"
            """.write(to: file, atomically: true, encoding: .utf8)
        let config = try ProxyConfiguration.load(
            path: file.path, environment: ["SPOTIFY_CLIENT_SECRET": "env-secret"],
            overrides: .init(listen: "127.0.0.1:9999", apiURL: "http://127.0.0.1:1"))
        #expect(config.clientID == "file-id")
        #expect(config.clientSecret == "env-secret")
        #expect(config.listenPort == 9999)
        #expect(config.apiURL == "http://127.0.0.1:1")
        #expect(throws: ConfigurationError.self) {
            try ProxyConfiguration.load(path: directory.appendingPathComponent("missing.conf").path, environment: [:], overrides: .init())
        }
    }

    @Test("serve and check-config share one validation: a postgres sink needs a URL, and a valid one")
    func sinkValidation() throws {
        var config = ProxyConfiguration()
        config.clientID = "id"
        config.clientSecret = "secret"
        try config.validate()
        config.sink.kind = .postgres
        #expect(throws: ConfigurationError.self) { try config.validate() }
        config.sink.url = "mysql://localhost/x"
        #expect(throws: ConfigurationError.self) { try config.validate() }
        config.sink.url = "postgres://user@127.0.0.1:5432/db"
        try config.validate()
    }

    @Test("relative sink paths resolve against the configuration file's directory; absolute ones stay")
    func relativePaths() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("proxy.conf")
        try "[spotify]\nca_bundle = \"certs/ca.pem\"\n[sink]\npath = \"db/x.sqlite\"\nspool_dir = \"/var/tmp/spool\"\n".write(
            to: file, atomically: true, encoding: .utf8)
        let config = try ProxyConfiguration.load(path: file.path, environment: [:], overrides: .init())
        #expect(config.sink.resolvedPath == directory.standardizedFileURL.path + "/db/x.sqlite")
        #expect(config.upstream.caBundle == directory.standardizedFileURL.path + "/certs/ca.pem")
        #expect(config.sink.spoolDirectory == "/var/tmp/spool")
        #expect(config.listenSetBy == nil)
        let flagged = try ProxyConfiguration.load(path: file.path, environment: [:], overrides: .init(listen: "127.0.0.1:9"))
        #expect(flagged.listenSetBy == "--listen")
    }

    @Test("check-config finds what serve would fail to create or read: a spool directory or sink file it cannot make, a missing CA bundle, a file that is not SQLite's or not PEM")
    func filesTheProxyNeeds() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try "not a directory".write(to: directory.appendingPathComponent("afile"), atomically: true, encoding: .utf8)
        func problem(_ toml: String) throws -> String? {
            let file = directory.appendingPathComponent("proxy.conf")
            try toml.write(to: file, atomically: true, encoding: .utf8)
            let config = try ProxyConfiguration.load(path: file.path, environment: [:], overrides: .init())
            do {
                try config.validate(requiringCredentials: false)
                return nil
            } catch {
                return error.message
            }
        }
        let base = directory.standardizedFileURL.path
        #expect(try problem("[sink]\nspool_dir = \"afile/spool\"\n")
            == "sink.spool_dir = \"\(base)/afile/spool\" cannot be created: \(base)/afile is a file, not a directory; name a directory this user can create")
        #expect(try problem("[sink]\nspool_dir = \"afile\"\n") == "sink.spool_dir = \"\(base)/afile\" is a file, not a directory: name a directory")
        #expect(try problem("[sink]\nkind = \"jsonl\"\npath = \"nodir/x.jsonl\"\n")
            == "sink.path = \"\(base)/nodir/x.jsonl\": its directory \(base)/nodir does not exist or is not writable by this user; create it, or name a file in a directory that is")
        #expect(try problem("[sink]\npath = \"afile/x.sqlite\"\n")?.hasPrefix("sink.path = ") == true)
        #expect(try problem("[sink]\npath = \".\"\n") == "sink.path = \"\(base)\" is a directory: name a file")
        #expect(try problem("[spotify]\nca_bundle = \"nobundle.pem\"\n")
            == "spotify.ca_bundle = \"\(base)/nobundle.pem\" cannot be read: name a PEM file of CA certificates, or remove the key to trust the system's")
        #expect(try problem("[spotify]\nca_bundle = \".\"\n")
            == "spotify.ca_bundle = \"\(base)\" is a directory: name a PEM file of CA certificates, or remove the key to trust the system's")
        // A file there that is not what the proxy reads: not SQLite's, not a PEM bundle.
        #expect(try problem("[sink]\npath = \"afile\"\n") == "sink.path = \"\(base)/afile\" is not an SQLite database: name a new file, or one this proxy made")
        #expect(try problem("[spotify]\nca_bundle = \"afile\"\n")
            == "spotify.ca_bundle = \"\(base)/afile\" holds no PEM certificate (-----BEGIN CERTIFICATE-----): name a PEM file of CA certificates, or remove the key to trust the system's")
        // A spool directory that cannot be made after all (procfs takes no directories, even
        // root's, whatever access() says): check-config finds it by trying, and serve says the same.
        // (Not root, access() already says /proc is not writable.)
        #expect(try problem("[sink]\nspool_dir = \"/proc/spotify-proxy-spool\"\n")?.hasPrefix("sink.spool_dir = \"/proc/spotify-proxy-spool\" cannot be created") == true)
        #expect(throws: ConfigurationError.self) { _ = try Spool(directory: "/proc/spotify-proxy-spool") }
        // What can be made is fine, and nothing is made by looking; `none` needs neither.
        #expect(try problem("[sink]\nspool_dir = \"new/deeper/spool\"\npath = \"db.sqlite\"\n") == nil)
        #expect(!FileManager.default.fileExists(atPath: base + "/new"))
        #expect(try problem("[sink]\nkind = \"none\"\nspool_dir = \"afile/spool\"\n") == nil)
    }

    @Test("a configuration named with --config is named in the commands the proxy suggests; the default one is not")
    func commandHints() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("team proxy.conf")
        try "[server]\nlisten = \"127.0.0.1:8080\"\n".write(to: file, atomically: true, encoding: .utf8)
        let named = try ProxyConfiguration.load(path: file.path, environment: [:], overrides: .init())
        let path = file.standardizedFileURL.path
        #expect(named.commands.login() == "spotify-proxy login --config '\(path)'")
        #expect(named.commands.login(user: "alice") == "spotify-proxy login --config '\(path)' --user alice")
        #expect(ProxyConfiguration().commands.login(user: "alice") == "spotify-proxy login --user alice")
        #expect(CommandHint(configFile: "/tmp/d-1/proxy.conf").login() == "spotify-proxy login --config /tmp/d-1/proxy.conf")
        #expect(CommandHint(configFile: "/tmp/it's").login() == #"spotify-proxy login --config '/tmp/it'\''s'"#)
    }
}
