import ArgumentParser
import Foundation
import NIOPosix
import SpotifyCatalog
import SpotifyProxy

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
    @Option(name: .long, help: "The running proxy's base URL (default: http:// and the config's listen address).")
    var proxy: String?
    @Flag(name: .long, help: "Print the proxy's JSON instead of a table.")
    var json = false
    @OptionGroup var file: ConfigFileOption

    func run() async throws {
        let config = try self.file.load()
        let base = self.proxy ?? config.localBaseURL
        var url = base + SimpleSearchStage.path + "?q=\(QueryString.encode(self.query))&type=\(QueryString.encode(self.type))"
        if let limit = self.limit { url += "&limit=\(limit)" }
        var upstream = config.upstream
        upstream.connectTimeout = .seconds(2)
        let response: UpstreamClient.BufferedResponse
        do {
            response = try await UpstreamClient.withRunning(configuration: upstream) { client in
                try await client.perform(method: "GET", url: url, headers: [], body: nil, on: MultiThreadedEventLoopGroup.singleton.next())
            }
        } catch {
            FileHandle.standardError.write(Data("spotify-proxy: no proxy answered at \(base) (\(error)); start it (spotify-proxy serve) or give --proxy URL\n".utf8))
            throw ExitCode(1)
        }
        let body = Data(response.body.readableBytesView)
        guard response.status == 200, let value = try? JSONValue.parse(body) else {
            FileHandle.standardError.write(Data("spotify-proxy: the proxy answered \(response.status): \(String(decoding: body, as: UTF8.self))\n".utf8))
            throw ExitCode(1)
        }
        if self.json {
            print(String(decoding: body, as: UTF8.self))
            return
        }
        print(Self.table(value))
    }

    /// The compact list as aligned columns: name, artists, album, release date, popularity, URL.
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
        return TextTable.render(rows, cellLimit: 40)
    }
}
