import Crypto
import Foundation
import Logging
@testable import SpotifyProxy
import Synchronization
import Testing

/// The team-operation parts as values: keys files, the constant-time check, the per-key window,
/// route labels, request ids, the open-listener rule, the JSON log lines.
@Suite("Access keys and team operation, without sockets")
struct AccessKeysTests {
    static func sha256(_ text: String) -> String {
        SHA256.hash(data: Array(text.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    @Test("a keys file: hashed and plain keys, user= and budget=, comments; the right key is found, a wrong or near one is not")
    func parseAndAuthenticate() throws {
        let text = """
            # team keys
            alice sha256:\(Self.sha256("alice-secret-key")) user=alice budget=60
            ci    plain-ci-key   # a comment after the key

            bob sha256:\(Self.sha256("bob-secret-key").uppercased())
            """
        let keys = try AccessKeys.parse(text, source: "keys")
        #expect(keys.keys.map(\.label) == ["alice", "ci", "bob"])
        #expect(try AccessKeys.parse(text.replacingOccurrences(of: "\n", with: "\r\n"), source: "keys") == keys, "CRLF line ends")
        #expect(try AccessKeys.parse("\u{FEFF}" + text, source: "keys") == keys, "a byte order mark before the first label")
        #expect(keys.label("alice")?.user == "alice")
        #expect(keys.label("alice")?.budget == 60)
        #expect(keys.label("ci")?.budget == nil)
        #expect(keys.authenticate("alice-secret-key")?.label == "alice")
        #expect(keys.authenticate("plain-ci-key")?.label == "ci")
        #expect(keys.authenticate("bob-secret-key")?.label == "bob")
        #expect(keys.authenticate("alice-secret-kex") == nil)
        #expect(keys.authenticate("") == nil)
        #expect(keys.authenticate("sha256:\(Self.sha256("alice-secret-key"))") == nil, "the hash itself is not the key")
    }

    @Test("keys revoke: only that label's line goes (not a label it prefixes), comments and other lines stay with their own line ends (CR alone too); through a symbolic link the file it names changes; mode and owner are kept")
    func revoke() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keys-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("keys").path
        let text = "# team\nbob sha256:\(Self.sha256("b"))\r\nbobby plain-bobby-key-0123456789\rcarol sha256:\(Self.sha256("c")) # ci\n"
        try text.write(toFile: file, atomically: false, encoding: .utf8)
        chmod(file, 0o640)
        let root = geteuid() == 0
        if root { chown(file, 65534, 65534) }
        let link = directory.appendingPathComponent("keys-link").path
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: file)
        try AccessKeys.remove(label: "bob", from: link)
        #expect(try String(contentsOfFile: file, encoding: .utf8) == "# team\nbobby plain-bobby-key-0123456789\rcarol sha256:\(Self.sha256("c")) # ci\n")
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: link) == file, "the link stays a link")
        var info = stat()
        #expect(stat(file, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o640)
        if root { #expect(info.st_uid == 65534 && info.st_gid == 65534, "owner kept") }
        #expect(try AccessKeys.load(path: file).keys.map(\.label) == ["bobby", "carol"])
        #expect(throws: ConfigurationError.self) { try AccessKeys.remove(label: "bob", from: file) }
        // A byte order mark before the first label: that label is revoked, the mark kept.
        try Data("\u{FEFF}alice sha256:\(Self.sha256("a"))\ndave sha256:\(Self.sha256("d"))\n".utf8).write(to: URL(fileURLWithPath: file))
        try AccessKeys.remove(label: "alice", from: file)
        #expect(try Data(contentsOf: URL(fileURLWithPath: file)) == Data("\u{FEFF}dave sha256:\(Self.sha256("d"))\n".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted() == ["keys", "keys-link"], "no temporary file left")
    }

    @Test("a short key written in the file is named in a warning (never the key); hashes and long keys are not")
    func guessable() throws {
        let keys = try AccessKeys.parse(
            "alice short-key\nbob sha256:\(Self.sha256("x"))\nci a-long-enough-plain-key\ndave 123456789012345\n", source: "keys")
        #expect(keys.guessable == ["alice", "dave"])
        let warning = try #require(keys.warnings.first)
        #expect(keys.warnings.count == 1)
        #expect(warning.contains("the access keys of alice, dave are written in the keys file and shorter than 16 characters"))
        #expect(!warning.contains("short-key") && !warning.contains("123456789012345"))
        #expect(try AccessKeys.parse("ci a-long-enough-plain-key\n", source: "keys").warnings.isEmpty)
        let empty = try AccessKeys.parse("# nobody yet\n", source: "keys").warnings
        #expect(empty.count == 1 && empty[0].hasPrefix("the keys file holds no keys: every request but /healthz is refused 401;"), "\(empty)")
    }

    @Test("a keys file others may read is warned of when it holds keys written out (never the keys), not when it holds only hashes")
    func readableByOthers() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("keys").path
        try "ci a-long-enough-plain-key\nbob sha256:\(Self.sha256("x"))\n".write(toFile: file, atomically: true, encoding: .utf8)
        chmod(file, 0o644)
        let warnings = try AccessKeys.load(path: file).warnings
        #expect(warnings == ["the keys file \(file) may be read by other users (mode 644) and holds the keys of ci written out: chmod 600 it, or replace them with spotify-proxy keys new --label NAME (stored as hashes)"])
        chmod(file, 0o600)
        #expect(try AccessKeys.load(path: file).warnings.isEmpty)
        try "bob sha256:\(Self.sha256("x"))\n".write(toFile: file, atomically: true, encoding: .utf8)
        chmod(file, 0o644)
        #expect(try AccessKeys.load(path: file).warnings.isEmpty, "hashes only: nothing to read")
    }

    @Test("bad keys files are refused with the line and the fix", arguments: [
        ("alice", "line 1: a key line is LABEL KEY"),
        ("alice sha256:abcd", "64 hex digits"),
        ("alice k1\nalice k2", "line 2: the label alice is used twice"),
        ("alice k1\nbob k1", "line 2: this key is also alice's; give each label a key of its own"),
        ("alice k1 budget=0", "budget= must be a whole number"),
        ("alice k1 budget=99999999999999999999", "budget= must be a whole number of requests per 30 s, from 1 to 1000000"),
        ("alice k1 budget=1000001", "from 1 to 1000000"),
        ("alice k1 colour=red", "field 3 is not user=LABEL or budget=N"),
        ("alice k1 budget=5 user=a budget=6", "budget= is given twice; keep one"),
        ("alice my secret key", "field 3 is not user=LABEL or budget=N (a key must not contain spaces)"),
        ("../x k1", "not usable"),
        // The key forgotten: an option where the key goes must not become a key.
        ("alice k1\nbob budget=5", "line 2: bob has no key: its second field is an option (user= or budget=)"),
        ("bob user=carol budget=5", "line 1: bob has no key"),
    ])
    func refused(_ text: String, _ message: String) {
        #expect {
            _ = try AccessKeys.parse(text, source: "keys")
        } throws: { error in
            // Never a field's value: a mistyped line may hold a key.
            "\(error)".contains(message) && !"\(error)".contains("secret") && !"\(error)".contains("red")
        }
    }

    @Test("keys new: a random 256-bit key whose hash line authenticates it; two keys differ")
    func generate() throws {
        let (key, entry) = AccessKeys.generate(label: "carol", user: "carol", budget: 10)
        let (other, _) = AccessKeys.generate(label: "dave", user: nil, budget: nil)
        #expect(key != other)
        #expect(key.hasPrefix("spk_") && key.count >= 4 + 43)
        #expect(!entry.line.contains(key))
        let parsed = try AccessKeys.parse(entry.line, source: "keys")
        #expect(parsed.authenticate(Substring(key))?.label == "carol")
        #expect(parsed.keys.first?.user == "carol")
        #expect(parsed.keys.first?.budget == 10)
    }

    @Test("a budget window: N requests in any 30 s; the next waits until the oldest leaves the window")
    func rollingWindow() {
        let start = ContinuousClock.now
        var window = RollingWindow<ContinuousClock.Instant>(limit: 3)
        #expect(window.admit(now: start) == .admitted)
        #expect(window.admit(now: start + .seconds(1)) == .admitted)
        #expect(window.admit(now: start + .seconds(2)) == .admitted)
        #expect(window.admit(now: start + .seconds(10)) == .refused(retryAfter: .seconds(20)))
        #expect(window.admit(now: start + .seconds(30)) == .admitted)
        #expect(window.admit(now: start + .seconds(30)) == .refused(retryAfter: .seconds(1)))
        #expect(window.admit(now: start + .seconds(31)) == .admitted)
    }

    @Test("a budget window under another limit keeps its most recent requests, oldest first, ring or not")
    func rollingWindowResized() {
        let start = ContinuousClock.now
        var window = RollingWindow<ContinuousClock.Instant>(limit: 3)
        for second in [0, 1, 2, 3] { _ = window.admit(now: start + .seconds(second)) }  // 3 refused at once
        #expect(window.admit(now: start + .seconds(30)) == .admitted)  // the ring turns: 1, 2, 30
        var smaller = window.resized(to: 2)  // 2, 30
        #expect(smaller.admit(now: start + .seconds(31)) == .refused(retryAfter: .seconds(1)))
        #expect(smaller.admit(now: start + .seconds(32)) == .admitted)
        var larger = window.resized(to: 4)  // 1, 2, 30, and room for one
        #expect(larger.admit(now: start + .seconds(30)) == .admitted)
        #expect(larger.admit(now: start + .seconds(30)) == .refused(retryAfter: .seconds(1)))
    }

    @Test("a reload that changes a key's budget keeps the requests it made in the last 30 s; a key without a budget now forgets them")
    func budgetKeptAcrossReload() throws {
        let start = ContinuousClock.now
        let clock = Mutex(start)
        func keys(_ budget: String) throws -> AccessControl.Settings {
            .init(keys: try AccessKeys.parse("alice alice-secret-key-long \(budget)\nbob bob-secret-key-long budget=1", source: "keys"))
        }
        let access = AccessControl(try keys("budget=3"), now: { clock.withLock { $0 } })
        let alice = try #require(try keys("budget=3").keys?.label("alice"))
        for _ in 0..<3 { #expect(access.spend(alice) == nil) }
        #expect(access.spend(alice) == .seconds(30))
        // Raised to 4: one more now, not four.
        access.replace(try keys("budget=4"))
        let raised = try #require(access.settings.keys?.label("alice"))
        #expect(access.spend(raised) == nil)
        #expect(access.spend(raised) == .seconds(30))
        // Lowered to 2: still refused until the oldest two of the last four leave.
        access.replace(try keys("budget=2"))
        let lowered = try #require(access.settings.keys?.label("alice"))
        clock.withLock { $0 = start + .seconds(10) }
        #expect(access.spend(lowered) == .seconds(20))
        #expect(access.spend(raised) == .seconds(20), "a request that raced the reload, with the key as it was: the budget in force counts")
        // No budget, then one again: a window of its own from then on.
        access.replace(try keys(""))
        access.replace(try keys("budget=1"))
        let again = try #require(access.settings.keys?.label("alice"))
        #expect(access.spend(again) == nil)
    }

    @Test("route labels are Spotify's templates, never ids; unknown paths are other", arguments: [
        ("/v1/artists/0TnOYISbd1XYRBk9myaseg", "/v1/artists/{id}"),
        ("/v1/artists/0TnOYISbd1XYRBk9myaseg/albums", "/v1/artists/{id}/albums"),
        ("/v1/artists", "/v1/artists"),
        ("/v1/me/top/artists", "/v1/me/top/artists"),
        ("/v1/me/top/genres", "/v1/me/top/{type}"),
        ("/v1/me/albums/contains", "/v1/me/albums/contains"),
        ("/v1/playlists/37i9dQZF1DXcBWIGoYBM5M/tracks", "/v1/playlists/{playlist_id}/tracks"),
        ("/v1/users/someone/", "/v1/users/{user_id}"),
        ("/v1/test/echo/anything", "other"),
        ("/v1/artists//albums", "other"),
        ("/readyz", "/readyz"),
        ("/wp-admin/login.php", "other"),
    ])
    func routeLabels(_ path: String, _ label: String) {
        #expect(RouteLabel.of(Substring(path)) == label)
    }

    @Test("a non-loopback listener needs access keys, or allow_open; loopback does not")
    func openListener() throws {
        var config = ProxyConfiguration()
        #expect(try config.accessSettings().keys == nil)
        config.listenHost = "0.0.0.0"
        #expect {
            _ = try config.accessSettings()
        } throws: { error in
            "\(error)".contains("refusing to listen on 0.0.0.0:8080 without access keys") && "\(error)".contains("allow_open")
        }
        config.access.allowOpen = true
        #expect(try config.accessSettings().allowOpen)
        config.access.allowOpen = false
        config.listenHost = "127.example.com"
        #expect(throws: ConfigurationError.self, "a name is not a loopback address") { try config.accessSettings() }
        config.listenHost = "127.0.0.2"
        #expect(try config.accessSettings().keys == nil)
        config.listenHost = "::1"
        #expect(try config.accessSettings().keys == nil)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keys-\(UUID().uuidString)")
        try "alice k1\n".write(to: directory, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: directory) }
        config.access = AccessSettings()
        config.access.keysFile = directory.path
        #expect(try config.accessSettings().keys?.keys.count == 1)
        config.access.keysFile = directory.path + ".missing"
        #expect { _ = try config.accessSettings() } throws: { "\($0)".contains("spotify-proxy keys new --label NAME") }
    }

    @Test("[access] and TLS keys in proxy.conf: read, and tls_cert without tls_key refused")
    func configurationKeys() throws {
        let config = try ProxyConfiguration.parse(
            toml: """
                [server]
                listen = "0.0.0.0:8443"
                tls_cert = "cert.pem"
                tls_key = "key.pem"
                [access]
                keys_file = "keys"
                allow_open = false
                [log]
                format = "json"
                """)
        #expect(config.access.keysFile == "keys")
        #expect(config.tlsCertificate == "cert.pem")
        #expect(config.logFormat == .json)
        #expect(throws: ConfigurationError.self) { try ProxyConfiguration.parse(toml: "[server]\ntls_cert = \"cert.pem\"\n") }
        #expect(throws: ConfigurationError.self) { try ProxyConfiguration.parse(toml: "[log]\nformat = \"xml\"\n") }
    }

    @Test("requests per key over the last hour: minutes older than 60 drop out")
    func keyActivity() {
        let minute = Mutex(0)
        let activity = KeyActivity(minute: { minute.withLock { $0 } })
        activity.record("alice")
        activity.record("alice")
        activity.record(nil)
        minute.withLock { $0 = 30 }
        activity.record("alice")
        #expect(activity.lastHour() == ["alice": 3, "-": 1])
        minute.withLock { $0 = 60 }
        #expect(activity.lastHour() == ["alice": 1])
        minute.withLock { $0 = 95 }
        #expect(activity.lastHour().isEmpty)
    }

    @Test("JSON log lines: one object per line with the metadata as fields, quotes and newlines escaped")
    func jsonLogLines() throws {
        let lines = Mutex<[String]>([])
        var logger = Logger(label: "spotify-proxy") { label in
            JSONLogHandler(label: label, output: .init { line in lines.withLock { $0.append(line) } })
        }
        logger.logLevel = .info
        logger.info("request", metadata: ["status": "200", "path": "/v1/search", "key": "alice"])
        logger.warning("a \"quoted\"\nmessage")
        logger.debug("not written")
        let written = lines.withLock { $0 }
        #expect(written.count == 2)
        #expect(written.allSatisfy { $0.hasSuffix("}\n") && $0.dropLast().contains("\n") == false })
        let first = try #require(JSONSerialization.jsonObject(with: Data(written[0].utf8)) as? [String: String])
        #expect(first["message"] == "request")
        #expect(first["level"] == "info")
        #expect(first["status"] == "200")
        #expect(first["key"] == "alice")
        #expect(first["ts"]?.hasSuffix("Z") == true)
        let second = try #require(JSONSerialization.jsonObject(with: Data(written[1].utf8)) as? [String: String])
        #expect(second["message"] == "a \"quoted\"\nmessage")
    }

    @Test("JSON log lines: whole numbers (a request line's status, ms, bytes, upstream_ms) are JSON numbers, Bools true or false, text strings")
    func jsonRequestLineNumbers() throws {
        let lines = Mutex<[String]>([])
        let logger = Logger(label: "spotify-proxy") { label in JSONLogHandler(label: label, output: .init { line in lines.withLock { $0.append(line) } }) }
        var request = RequestLogLine(method: "GET", path: "/v1/x", status: 200, bytes: 412, milliseconds: 3, client: "127.0.0.1:1", requestID: "r1")
        request.upstreamMilliseconds = 2
        logger.info(RequestLogLine.message, metadata: request.metadata)
        logger.info("tee", metadata: ["spool_pending": .stringConvertible(false), "keys": .stringConvertible(3), "sink": "sqlite"])
        let line = try #require(lines.withLock { $0.first })
        let tee = try #require(lines.withLock { $0.last })
        #expect(tee.contains(#""keys":3,"#) && tee.contains(#""sink":"sqlite","#) && tee.contains(#""spool_pending":false}"#), "\(tee)")
        #expect(line.contains(#""bytes":412,"#) && line.contains(#""status":200,"#) && line.contains(#""ms":3,"#) && line.contains(#""upstream_ms":2}"#), "\(line)")
        let object = try #require(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["status"] as? Int == 200)
        #expect(object["path"] as? String == "/v1/x")
    }
}
