import FakeSpotify
import Foundation
import NIOPosix
import SpotifyProxy
import SpotifyProxyTestSupport
import Testing

/// The `spotify-proxy` executable as a person or a script meets it: messages, exit codes,
/// what is printed when, and where files go.
@Suite("The command line")
struct CommandLineTests {
    /// A directory with a `proxy.conf` holding `text`.
    func configDirectory(_ text: String) throws -> (directory: URL, config: String) {
        let directory = try temporaryDirectory()
        let config = directory.appendingPathComponent("proxy.conf")
        try text.write(to: config, atomically: true, encoding: .utf8)
        return (directory, config.path)
    }

    static let credentials = "[spotify]\nclient_id = \"id\"\nclient_secret = \"secret\"\n"

    @Test("check-config and serve share one validation: a postgres sink without a URL is refused by both")
    func postgresWithoutURL() async throws {
        let (directory, config) = try self.configDirectory(Self.credentials + "[sink]\nkind = \"postgres\"\n")
        defer { try? FileManager.default.removeItem(at: directory) }
        for command in ["check-config", "serve"] {
            let run = try await CommandRun.run([command, "--config", config, "--listen", "127.0.0.1:0"])
            #expect(run.status == 2, "\(command)")
            #expect(run.stderr.contains("sink.kind = \"postgres\" needs a database: set sink.url or DATABASE_URL"), "\(command): \(run.stderr)")
            #expect(!run.stdout.contains("configuration OK"))
        }
    }

    @Test("check-config warns (and passes) when [users] dir cannot hold logins: a file where the directory should be")
    func usersDirectoryWarning() async throws {
        let (directory, config) = try self.configDirectory(Self.credentials + "[users]\ndir = \"not-a-dir\"\n")
        defer { try? FileManager.default.removeItem(at: directory) }
        try "x".write(to: directory.appendingPathComponent("not-a-dir"), atomically: true, encoding: .utf8)
        let run = try await CommandRun.run(["check-config", "--config", config])
        #expect(run.status == 0 && run.stdout.contains("configuration OK"), "\(run.stderr)")
        #expect(run.stderr.contains("warning: users.dir = ") && run.stderr.contains("is a file, not a directory") && run.stderr.contains("spotify-proxy login stores users there"), "\(run.stderr)")
    }

    @Test("library against an unreachable PostgreSQL fails within connect_timeout, naming host, port and cause")
    func libraryUnreachablePostgres() async throws {
        let refusing = try LoopbackPort.Reserved()
        let (directory, config) = try self.configDirectory(
            "[sink]\nkind = \"postgres\"\nurl = \"postgres://user@127.0.0.1:\(refusing.port)/db?sslmode=disable\"\nconnect_timeout = 2\n")
        defer { try? FileManager.default.removeItem(at: directory) }
        let started = ContinuousClock.now
        let run = try await CommandRun.run(["library", "artists", "--config", config])
        #expect(ContinuousClock.now - started < .seconds(15))
        #expect(run.status == 1)
        #expect(run.stderr.contains("cannot connect to PostgreSQL at 127.0.0.1:\(refusing.port)"), "\(run.stderr)")
        #expect(run.stderr.contains("connection refused"), "\(run.stderr)")
        #expect(!run.stderr.contains("ConnectionPool"))
    }

    @Test("library against something that is not PostgreSQL, or a server that refuses the login, fails fast and says so")
    func libraryLoginRefused() async throws {
        // An HTTP server where PostgreSQL was expected.
        let fake = try await FakeSpotify.start(group: MultiThreadedEventLoopGroup.singleton)
        var urls = ["postgres://user@127.0.0.1:\(fake.port)/db?sslmode=disable"]
        // The test PostgreSQL (trust authentication) with a role that does not exist.
        if let shared = PostgresCluster.sharedURL, let components = URLComponents(string: shared), let host = components.host {
            urls.append("postgres://no_such_role_xyz@\(host):\(components.port ?? 5432)/postgres?sslmode=disable")
        } else {
            #expect(!PostgresCluster.required, "SPOTIFY_PROXY_TEST_DATABASE_URL is not set in CI")
        }
        for url in urls {
            let (directory, config) = try self.configDirectory("[sink]\nkind = \"postgres\"\nurl = \"\(url)\"\nconnect_timeout = 2\n")
            defer { try? FileManager.default.removeItem(at: directory) }
            let started = ContinuousClock.now
            let run = try await CommandRun.run(["library", "artists", "--config", config])
            #expect(ContinuousClock.now - started < .seconds(15), "\(url)")
            #expect(run.status == 1, "\(url)")
            #expect(run.stderr.contains("PostgreSQL at 127.0.0.1:"), "\(url): \(run.stderr)")
            #expect(!run.stderr.contains("ConnectionPool") && !run.stderr.contains("PSQLError"), "\(url): \(run.stderr)")
            if url.contains("no_such_role_xyz") { #expect(run.stderr.contains("no_such_role_xyz"), "\(run.stderr)") }
        }
        try await fake.shutdown()
    }

    @Test("library on a SQLite file that does not exist says so and creates nothing")
    func libraryMissingSQLite() async throws {
        let (directory, config) = try self.configDirectory("[sink]\nkind = \"sqlite\"\npath = \"never-written.sqlite\"\n")
        defer { try? FileManager.default.removeItem(at: directory) }
        let run = try await CommandRun.run(["library", "albums", "--config", config])
        #expect(run.status == 1)
        #expect(run.stderr.contains("no library at \(directory.standardizedFileURL.path)/never-written.sqlite"), "\(run.stderr)")
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("never-written.sqlite").path))
    }

    @Test("relative paths resolve against the configuration file's directory, wherever the command runs")
    func relativePathsFollowTheConfigFile() async throws {
        let (directory, config) = try self.configDirectory(
            Self.credentials + "[sink]\nkind = \"sqlite\"\npath = \"data/library.sqlite\"\nspool_dir = \"spool\"\n")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("data"), withIntermediateDirectories: true)
        let elsewhere = try temporaryDirectory()
        defer {
            try? FileManager.default.removeItem(at: directory)
            try? FileManager.default.removeItem(at: elsewhere)
        }
        let base = directory.standardizedFileURL.path
        let check = try await CommandRun.run(["check-config", "--config", config], in: elsewhere)
        #expect(check.status == 0, "\(check.stderr)")
        #expect(check.stdout.contains("sqlite (\(base)/data/library.sqlite)"), "\(check.stdout)")
        #expect(check.stdout.contains("spool_dir    \(base)/spool"), "\(check.stdout)")
        // migrate from one directory, library from another: the same database.
        #expect(try await CommandRun.run(["migrate", "--config", config], in: elsewhere).status == 0)
        #expect(FileManager.default.fileExists(atPath: "\(base)/data/library.sqlite"))
        let library = try await CommandRun.run(["library", "albums", "--config", config], in: directory)
        #expect(library.status == 0, "\(library.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: elsewhere.path).isEmpty)
    }

    @Test("demo announces itself at once on a pipe and keeps its database to itself: nothing lands in the working directory; with port 0 its status command finds it")
    func demoBannerAndScratchDatabase() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let demo = try CommandRun(["demo", "--listen", "127.0.0.1:0"], in: directory)
        // The banner arrives while the demo runs, though stdout is a pipe.
        let announced = try await eventually(60) { demo.stdout.contains("Press Ctrl-C to stop.") }
        try #require(announced, "no banner: \(demo.stdout) \(demo.stderr)")
        let line = try #require(demo.stdout.split(separator: "\n").first { $0.contains("the proxy at http://127.0.0.1:") })
        let port = try #require(Int(line.split(separator: ":").last!.prefix { $0.isNumber }))
        let client = try await RawHTTPClient.connect(port: port)
        #expect(try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg").status == 200)
        // Request lines are written in batches, within the flush interval, while the demo runs.
        #expect(try await eventually(10) { demo.stderr.contains("path=/v1/artists/0TnOYISbd1XYRBk9myaseg") }, "\(demo.stderr)")
        #expect(try await client.request("GET", "/v1/search?q=daft+punk&type=album&limit=5").status == 200)
        await client.close()
        // Asked for port 0: the banner's `status --config FILE` finds the proxy on the port it got.
        #expect(demo.stdout.contains(" library albums --config "), "\(demo.stdout)")
        #expect(!demo.stdout.contains(" users --config "), "the demo's own file keeps its users: \(demo.stdout)")
        let statusLine = try #require(demo.stdout.split(separator: "\n").first { $0.contains(" status --config ") })
        let demoConfig = try #require(statusLine.split(separator: " ").drop { $0 != "--config" }.dropFirst().first.map(String.init))
        let status = try await CommandRun.run(["status", "--config", demoConfig], in: directory)
        #expect(status.status == 0 && status.stdout.contains("127.0.0.1:\(port)"), "\(status.stdout) \(status.stderr)")
        demo.process.terminate()
        #expect(try await demo.exitStatus(within: 20) == 0)
        #expect(demo.stderr.contains("path=/v1/search"), "the last request's line is written by exit")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty)
    }

    @Test("demo --config FILE: the banner's login goes to the fake, its user lands in the demo's own users directory (not FILE's) and /v1/me answers for it")
    func demoWithConfigLogin() async throws {
        let callback = try LoopbackPort.free()
        let (directory, config) = try self.configDirectory(
            """
            [spotify]
            client_id = "a-real-app"
            client_secret = "a-real-secret"
            redirect_uri = "http://127.0.0.1:\(callback)/callback"
            [sink]
            kind = "none"
            [users]
            dir = "people"

            """)
        defer { try? FileManager.default.removeItem(at: directory) }
        // Port 0: the login file names the port the proxy got, and the banner's status line too.
        let demo = try CommandRun(["demo", "--listen", "127.0.0.1:0", "--config", config])
        let announced = try await eventually(60) { demo.stdout.contains("Press Ctrl-C to stop.") }
        try #require(announced, "no banner: \(demo.stdout) \(demo.stderr)")
        let proxyLine = try #require(demo.stdout.split(separator: "\n").first { $0.contains("the proxy at http://127.0.0.1:") })
        let port = try #require(Int(proxyLine.split(separator: ":").last!.prefix { $0.isNumber }))
        let statusLine = try #require(demo.stdout.split(separator: "\n").first { $0.contains(" status --config ") })
        #expect(statusLine.contains(" --proxy http://127.0.0.1:\(port)"), "a file of the user's names port 0: \(statusLine)")
        let loginLine = try #require(demo.stdout.split(separator: "\n").first { $0.contains(" login --config ") })
        let loginConfig = try #require(loginLine.split(separator: " ").drop { $0 != "--config" }.dropFirst().first.map(String.init))
        #expect(loginConfig != config, "\(loginLine)")
        // The banner names only what works here: the demo's users by that file, no library without a database.
        #expect(demo.stdout.contains(" users --config \(loginConfig)"), "\(demo.stdout)")
        #expect(!demo.stdout.contains(" library albums"), "sink none: \(demo.stdout)")
        // Nobody yet: `users` names the login command for this file.
        let nobody = try CommandRun(["users", "--config", loginConfig])
        #expect(try await nobody.exitStatus(within: 20) == 0, "stderr: \(nobody.stderr)")
        #expect(nobody.stdout.contains("no users logged in") && nobody.stdout.contains("run: spotify-proxy login --config \(loginConfig) --user LABEL"), "\(nobody.stdout)")
        let login = try CommandRun(["login", "--config", loginConfig])
        var url: String?
        let printed = try await eventually(20) {
            url = login.stdout.split(separator: "\n").first { $0.hasPrefix("http://") }.map(String.init)
            return url != nil
        }
        try #require(printed, "stdout: \(login.stdout) stderr: \(login.stderr)")
        #expect(try #require(url).hasPrefix("http://127.0.0.1:"), "the fake's accounts service, not Spotify's: \(url ?? "")")
        _ = try await UserTokenTests.browse(try #require(url), as: "demo-user")
        #expect(try await login.exitStatus(within: 20) == 0, "stderr: \(login.stderr)")
        let client = try await RawHTTPClient.connect(port: port)
        let me = try await client.request("GET", "/v1/me")
        #expect(me.status == 200, "\(me.text)")
        #expect(me.text.contains("demo-user"))
        await client.close()
        // `users` with the demo's login file lists the user with the running proxy's view of it.
        let users = try CommandRun(["users", "--config", loginConfig])
        #expect(try await users.exitStatus(within: 20) == 0, "stderr: \(users.stderr)")
        let row = users.stdout.split(separator: "\n").first { $0.hasPrefix("default ") }
        #expect(row?.contains("demo-user") == true && row?.contains(" fresh ") == true && row?.contains(" s ") == true, "the proxy's own view: \(users.stdout)")
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("people").path), "nothing stored among FILE's users")
        demo.process.terminate()
        #expect(try await demo.exitStatus(within: 20) == 0)
        #expect(!FileManager.default.fileExists(atPath: loginConfig), "the demo's login file is removed at exit")
    }

    @Test("keys new --user names a user nobody logged in: the key is made, with a note saying to log the user in")
    func keyForUnknownUser() async throws {
        let (directory, config) = try self.configDirectory("[access]\nkeys_file = \"keys\"\n")
        defer { try? FileManager.default.removeItem(at: directory) }
        let made = try await CommandRun.run(["keys", "new", "--label", "alice", "--user", "ghost", "--config", config])
        #expect(made.status == 0, "\(made.stderr)")
        #expect(made.stderr.contains("note: no user ghost is logged in yet"), "\(made.stderr)")
        #expect(made.stderr.contains("until spotify-proxy login --user ghost"))
        let plain = try await CommandRun.run(["keys", "new", "--label", "bob", "--config", config])
        #expect(plain.status == 0)
        #expect(!plain.stderr.contains("note:"))
        let keys = try String(contentsOfFile: directory.appendingPathComponent("keys").path, encoding: .utf8)
        #expect(keys.contains("alice sha256:") && keys.contains("user=ghost") && keys.contains("bob sha256:"))
    }

    @Test("fake-spotify prints its port alone as the first line, while it runs")
    func fakePrintsPortFirst() async throws {
        let fake = try CommandRun(["fake-spotify", "--port", "0"])
        let printed = try await eventually(30) { fake.stdout.contains("\n") }
        try #require(printed, "nothing printed: \(fake.stderr)")
        let first = try #require(fake.stdout.split(separator: "\n").first)
        let port = try #require(Int(first), "first line is not a port: \(first)")
        let client = try await RawHTTPClient.connect(port: port)
        #expect(try await client.request("GET", "/v1/artists/0TnOYISbd1XYRBk9myaseg").status == 401)
        await client.close()
        fake.process.terminate()
        _ = try await fake.exitStatus(within: 10)
    }

    @Test("status and search with server.listen on port 0 (a free port picked at start) say to give --proxy: the file cannot say where the proxy is")
    func listenPortZero() async throws {
        let (directory, config) = try self.configDirectory(Self.credentials + "[server]\nlisten = \"127.0.0.1:0\"\n[sink]\nkind = \"none\"\n")
        defer { try? FileManager.default.removeItem(at: directory) }
        for arguments in [["status"], ["search", "x", "--type", "artist"]] {
            let run = try await CommandRun.run(arguments + ["--config", config], in: directory)
            #expect(run.status == 1, "\(arguments): \(run.stderr)")
            #expect(run.stderr.contains("server.listen's port is 0 (a free one, picked when the proxy starts): give --proxy with the address the proxy printed"), "\(arguments): \(run.stderr)")
        }
    }

    @Test("a port in use is reported as such, naming the flag or key that chose it")
    func portInUse() async throws {
        let occupant = try await FakeSpotify.start(group: MultiThreadedEventLoopGroup.singleton)
        let port = occupant.port
        let (directory, config) = try self.configDirectory(Self.credentials + "[server]\nlisten = \"127.0.0.1:\(port)\"\n[sink]\nkind = \"none\"\n")
        defer { try? FileManager.default.removeItem(at: directory) }
        let cases: [([String], String)] = [
            (["serve", "--config", config, "--listen", "127.0.0.1:\(port)"], "127.0.0.1:\(port) is already in use; choose another with --listen HOST:PORT"),
            (["serve", "--config", config], "127.0.0.1:\(port) is already in use; choose another in server.listen in \(config) or with --listen HOST:PORT"),
            (["demo", "--listen", "127.0.0.1:\(port)"], "127.0.0.1:\(port) is already in use; choose another with --listen HOST:PORT"),
            (["fake-spotify", "--port", "\(port)"], "127.0.0.1:\(port) is already in use; choose another with --port PORT"),
        ]
        for (arguments, expected) in cases {
            let run = try await CommandRun.run(arguments, in: directory)
            #expect(run.status == 2, "\(arguments)")
            #expect(run.stderr.contains(expected), "\(arguments): \(run.stderr)")
            #expect(!run.stderr.contains("bind(descriptor"), "\(arguments)")
        }
        try await occupant.shutdown()
    }

    @Test("a token lifetime of 0 or less, or over a day, is refused at once with a message (a huge one stopped the process)", arguments: ["demo", "fake-spotify"])
    func tokenLifetimeMustBePositive(command: String) async throws {
        for lifetime in ["0", "86401", "9223372036854775807"] {
            let run = try await CommandRun.run([command, "--token-lifetime", lifetime])
            #expect(run.status == 64, "\(lifetime)")
            #expect(run.stderr.contains("--token-lifetime must be a whole number of seconds from 1 to 86400"), "\(run.stderr)")
        }
    }

    @Test("each subcommand's --help lists only the flags it uses", arguments: [
        ("serve", ["--config", "--listen", "--public-url", "--api-url", "--token-url", "--log-level"], [String]()),
        ("token", ["--config", "--token-url"], ["--listen", "--public-url", "--api-url", "--log-level"]),
        ("migrate", ["--config", "--log-level"], ["--listen", "--public-url", "--api-url", "--token-url"]),
        ("library", ["--config", "--name", "--limit", "--json"], ["--listen", "--public-url", "--api-url", "--token-url", "--log-level"]),
    ])
    func helpListsOnlyUsedFlags(command: String, present: [String], absent: [String]) async throws {
        let run = try await CommandRun.run([command, "--help"])
        #expect(run.status == 0)
        for flag in present { #expect(run.stdout.contains(flag), "\(command) --help lacks \(flag)") }
        for flag in absent { #expect(!run.stdout.contains(flag), "\(command) --help lists \(flag), which it does not use") }
    }
}
