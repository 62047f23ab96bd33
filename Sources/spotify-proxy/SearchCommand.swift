import ArgumentParser
import Foundation
import NIOPosix
import SpotifyCatalog
import SpotifyProxy
import Synchronization

struct Search: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Search Spotify through the running proxy: a name and artist, album, track or song.",
        discussion: "Asks the proxy's GET /simple/search and prints a table (or the JSON with --json).")
    @Argument(help: "What to search for, e.g. \"Radiohead\".")
    var query: String
    @Option(name: .long, help: "artist, album, track or song (song = track).")
    var type = "track"
    @Option(name: .long, help: "How many results, 1-50 (Spotify's default when omitted).")
    var limit: Int?
    @OptionGroup var target: RunningProxyOptions
    @Flag(name: .long, help: "Print the proxy's JSON instead of a table.")
    var json = false
    @OptionGroup var file: ConfigFileOption

    func validate() throws {
        guard SimpleSearchStage.types.contains(self.type.lowercased()) else {
            throw ValidationError("--type must be artist, album, track or song (song = track), got \(self.type)")
        }
        if let limit, !SimpleSearchStage.limits.contains(limit) {
            throw ValidationError("--limit must be from \(SimpleSearchStage.limits.lowerBound) to \(SimpleSearchStage.limits.upperBound), got \(limit)")
        }
        guard !self.query.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw ValidationError("give what to search for, e.g. spotify-proxy search \"Radiohead\" --type artist")
        }
    }

    func run() async throws {
        let config = try self.file.load()
        var path = SimpleSearchStage.path + "?q=\(QueryString.encode(self.query))&type=\(QueryString.encode(self.type))"
        if let limit = self.limit { path += "&limit=\(limit)" }
        let response = try await self.target.ask(method: "GET", path: path, config: config)
        let body = try requireOK(response)
        guard let value = try? JSONValue.parse(body) else {
            writeStandardError("spotify-proxy: the proxy's answer is not JSON: \(String(decoding: body, as: UTF8.self))\n")
            throw ExitCode(1)
        }
        if self.json {
            print(String(decoding: body, as: UTF8.self))
            return
        }
        print(Self.table(value))
    }

    /// The compact list as aligned columns: name, artists, album, release date, popularity, URL,
    /// without the columns no item has (an artist has no album nor release date).
    static func table(_ value: JSONValue) -> String {
        var rows = [["NAME", "ARTISTS", "ALBUM", "RELEASED", "POPULARITY", "SPOTIFY URL"]]
        for item in value["items"]?.array ?? [] {
            let artists = (item["artists"]?.array ?? []).compactMap(\.string).joined(separator: ", ")
            let popularity = item["popularity"]?.int.map(String.init) ?? "-"
            rows.append([
                item["name"]?.string ?? "-", artists.isEmpty ? "-" : artists, item["album"]?.string ?? "-",
                item["release_date"]?.string ?? "-", popularity, item["spotify_url"]?.string ?? "-",
            ])
        }
        if rows.count == 1 { return "no results" }
        let kept = rows[0].indices.filter { column in
            column == 0 || column == rows[0].count - 1 || rows.dropFirst().contains { $0[column] != "-" }
        }
        return TextTable.render(rows.map { row in kept.map { row[$0] } }, cellLimit: 40)
    }
}

/// Where the commands that report on the running proxy or steer it find it, and the key they show it.
struct RunningProxyOptions: ParsableArguments {
    @Option(name: .long, help: "The running proxy's base URL (default: the config's listen address, https:// when it has tls_cert).")
    var proxy: String?
    @Option(name: .long, help: "An access key, when the proxy has [access] keys_file (default: $SPOTIFY_PROXY_KEY).")
    var key: String?

    /// `--proxy` (as `server.public_url` is read: without its last `/`s), else the
    /// configuration's own address.
    func base(_ config: ProxyConfiguration) -> String {
        guard let proxy else { return config.localBaseURL }
        // The scheme in lower case: "https://" is looked for to trust the proxy's own certificate.
        return (try? ProxyConfiguration.checkURL(proxy, key: "--proxy")) ?? proxy
    }

    func validate() throws {
        guard let proxy else { return }
        do {
            _ = try ProxyConfiguration.checkURL(proxy, key: "--proxy")
        } catch {
            throw ValidationError("\(error.message) (--proxy is the proxy's base URL)")
        }
        // The URL a Spotify client is given ends in /v1; the commands add their own paths.
        if proxy.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "/")).hasSuffix("/v1") {
            throw ValidationError("--proxy: \"\(proxy)\" ends in /v1; give the proxy's base URL without it, such as http://127.0.0.1:8080")
        }
    }

    /// One request to the running proxy; a proxy that does not answer ends the command with a
    /// message saying how to start it (and `unanswered` after it).
    func ask(
        method: String, path: String, config: ProxyConfiguration, headers: [(name: String, value: String)] = [], unanswered: String = ""
    ) async throws -> UpstreamClient.BufferedResponse {
        do {
            return try await self.send(method: method, path: path, config: config, headers: headers)
        } catch {
            let base = self.base(config)
            if let exit = error as? ExitCode { throw exit }  // said already
            // curl's words, without the "upstream" they carry when the proxy forwards.
            let why = (error as? UpstreamError).map { $0.message.replacingOccurrences(of: "upstream ", with: "", options: .anchored) } ?? "\(error)"
            if (error as? UpstreamError)?.certificateRefused == true, base.hasPrefix("https://"), config.tlsCertificate != nil {
                // Something answered, with another key than tls_cert's (the pin).
                writeStandardError(
                    "spotify-proxy: the server at \(base) answered with a certificate whose key is not that of server.tls_cert = \(config.tlsCertificate ?? "") (\(why)): if those files were replaced, run spotify-proxy reload so that the proxy serves them; else --proxy names another server\n")
                throw ExitCode(1)
            }
            let https = base.hasPrefix("https://") ? "; over HTTPS it must serve the certificate in tls_cert: after replacing those files, run spotify-proxy reload" : ""
            // Port 0 is a free port picked at the start: the file cannot say which.
            let anyPort =
                self.proxy == nil && config.listenPort == 0
                ? "; server.listen's port is 0 (a free one, picked when the proxy starts): give --proxy with the address the proxy printed" : ""
            writeStandardError("spotify-proxy: no proxy answered at \(base) (\(why)); start it (spotify-proxy serve) or give --proxy URL\(anyPort)\(https)\(unanswered)\n")
            throw ExitCode(1)
        }
    }

    /// The access key the commands show the proxy: `--key`, else `$SPOTIFY_PROXY_KEY`.
    var givenKey: String? {
        guard let key = self.key ?? ProcessInfo.processInfo.environment["SPOTIFY_PROXY_KEY"], !key.isEmpty else { return nil }
        return key
    }

    /// Whether this command said that the certificate is outside its dates.
    private static let certificateWarned = Atomic<Bool>(false)

    /// One request to the running proxy; throws what the client met when it does not answer.
    func send(
        method: String, path: String, config: ProxyConfiguration, headers: [(name: String, value: String)] = []
    ) async throws -> UpstreamClient.BufferedResponse {
        let base = self.base(config)
        var upstream = config.upstream
        upstream.connectTimeout = .seconds(2)
        // The proxy's own certificate vouches for it by its key, pinned: then neither the name
        // it carries (proxy.example.com, say, not the 127.0.0.1 dialled) nor its dates matter.
        if base.hasPrefix("https://"), let certificate = config.tlsCertificate {
            guard let pin = config.tlsCertificatePin() else {
                writeStandardError(
                    "spotify-proxy: server.tls_cert = \(certificate) cannot be read as a PEM certificate, and this command knows the proxy over HTTPS by its key: fix the file (the running proxy keeps the certificate it loaded; spotify-proxy reload once it is fixed)\n")
                throw ExitCode(2)
            }
            upstream.caBundle = certificate
            upstream.pinnedPublicKey = pin
            // Known by its key, a certificate outside its dates still finds the proxy: said once.
            if let warning = config.tlsCertificateWarning(), !Self.certificateWarned.exchange(true, ordering: .relaxed) {
                writeStandardError("spotify-proxy: warning: \(warning)\n")
            }
        }
        var headers = headers
        if let key = self.givenKey { headers.append((AccessStage.keyHeader, key)) }
        return try await UpstreamClient.withRunning(configuration: upstream) { client in
            try await client.perform(method: method, url: base + path, headers: headers, body: nil, on: MultiThreadedEventLoopGroup.singleton.next())
        }
    }
}

/// Ends the command (exit 1) with the proxy's answer when it is not a 200.
func requireOK(_ response: UpstreamClient.BufferedResponse) throws -> Data {
    let body = Data(response.body.readableBytesView)
    guard response.status == 200 else {
        let hint = response.status == 401 ? " (give this command a key the proxy holds: --key KEY, or SPOTIFY_PROXY_KEY in the environment)" : ""
        writeStandardError("spotify-proxy: the proxy answered \(response.status): \(String(decoding: body, as: UTF8.self))\(hint)\n")
        throw ExitCode(1)
    }
    return body
}

struct CacheCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cache", abstract: "The running proxy's shared response cache.", subcommands: [Purge.self])

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Empty the running proxy's cache: every answer, or those whose path starts with PREFIX.",
            discussion: "Asks the proxy's POST /admin/cache/purge, e.g. spotify-proxy cache purge /v1/playlists")
        @Argument(help: "Only answers whose path (and query) starts with this, e.g. /v1/artists.")
        var prefix: String?
        @OptionGroup var target: RunningProxyOptions
        @OptionGroup var file: ConfigFileOption

        func validate() throws {
            if let prefix, !prefix.isEmpty, !prefix.hasPrefix("/") {
                throw ValidationError("the prefix must be a path such as /v1/artists (or none, to empty the whole cache), got \(prefix)")
            }
        }

        func run() async throws {
            let config = try self.file.load()
            // An empty prefix, as none: the whole cache.
            let prefix = self.prefix.flatMap { $0.isEmpty ? nil : $0 }
            let path = "/admin/cache/purge" + (prefix.map { "?prefix=\(QueryString.encode($0))" } ?? "")
            let response = try await self.target.ask(method: "POST", path: path, config: config, headers: [(OwnEndpointStage.adminHeader, "1")])
            let body = try requireOK(response)
            guard let purged = (try? JSONValue.parse(body))?["purged"]?.int else {
                writeStandardError("spotify-proxy: the proxy's answer is not what this version reads: \(String(decoding: body, as: UTF8.self))\n")
                throw ExitCode(1)
            }
            print("purged \(purged) cached answer\(purged == 1 ? "" : "s")\(prefix.map { " under \($0)" } ?? "")")
        }
    }
}
