import FakeSpotify
import Foundation
import NIOHTTP1
import SpotifyCatalog
@testable import SpotifyProxy
import SpotifyProxyTestSupport
import Testing

@Suite("The simple search")
struct SimpleSearchTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var testDescription: String
        var query: String
        var type: String
        var expectedType: String
        var name: String
        var album: String?
    }

    // Expected names from the recorded responses (Fixtures/artist.json, album.json, track.json).
    static let cases: [Case] = [
        Case(testDescription: "an artist", query: "Pitbull", type: "artist", expectedType: "artist", name: "Pitbull", album: nil),
        Case(testDescription: "an album", query: "SINGLARITY Area 11", type: "album", expectedType: "album", name: "SINGLARITY", album: nil),
        Case(testDescription: "a track", query: "Mr. Brightside", type: "track", expectedType: "track", name: "Mr. Brightside", album: "Hot Fuss (Deluxe Version)"),
        Case(testDescription: "a song is a track", query: "Mr. Brightside", type: "song", expectedType: "track", name: "Mr. Brightside", album: "Hot Fuss (Deluxe Version)"),
    ]

    @Test("a value is encoded for a target as UTF-8, all but ASCII letters, digits and -._~")
    func encode() {
        #expect(QueryString.encode("Beyoncé & Jay-Z_~.") == "Beyonc%C3%A9%20%26%20Jay-Z_~.")
        #expect(QueryString.encode("ÅÄÖ日本") == "%C3%85%C3%84%C3%96%E6%97%A5%E6%9C%AC")
    }

    @Test("a name and a type give a compact list built from Spotify's search", arguments: cases)
    func search(_ row: Case) async throws {
        try await withProxy { proxy in
            let client = try await proxy.client()
            let encoded = QueryString.encode(row.query)
            let response = try await client.request("GET", "/simple/search?q=\(encoded)&type=\(row.type)&limit=5")
            await client.close()
            #expect(response.status == 200, "\(response.text)")
            let object = try jsonObject(response)
            #expect(object["type"] as? String == row.expectedType)
            #expect(object["q"] as? String == row.query)
            let items = try #require(object["items"] as? [[String: Any]])
            let first = try #require(items.first { $0["name"] as? String == row.name }, "items: \(items.map { $0["name"] ?? "" })")
            #expect(first["type"] as? String == row.expectedType)
            #expect((first["spotify_url"] as? String)?.hasPrefix("https://open.spotify.com/\(row.expectedType)/") == true)
            #expect(first["id"] as? String != nil)
            if let album = row.album { #expect(first["album"] as? String == album) }
            if row.expectedType != "artist" {
                #expect(!((first["artists"] as? [String]) ?? []).isEmpty)
                // Present, null where Spotify gave none (this track was recorded in 2018 without it).
                #expect(first.keys.contains("release_date"))
            }
            if row.expectedType == "album" { #expect(first["release_date"] as? String != nil) }
            // What went upstream was Spotify's own search; the log names what the client asked.
            #expect(proxy.fake.counters.apiRequests == 1)
            #expect(try await eventually(5) { proxy.logs.all.contains { $0.contains("path=/simple/search ") && $0.contains("status=200") } }, "\(proxy.logs.all)")
        }
    }

    struct BadCase: Sendable, CustomTestStringConvertible {
        var testDescription: String
        var target: String
        var phrase: String
    }

    static let bad: [BadCase] = [
        BadCase(testDescription: "no q", target: "/simple/search?type=artist", phrase: "q is missing"),
        BadCase(testDescription: "no type", target: "/simple/search?q=abba", phrase: "type is missing; use one of artist, album, track, song"),
        BadCase(testDescription: "an unknown type", target: "/simple/search?q=abba&type=podcast", phrase: "type=podcast is not one of artist, album, track, song"),
        BadCase(testDescription: "a limit out of range", target: "/simple/search?q=abba&type=artist&limit=0", phrase: "limit must be a whole number from 1 to 50"),
        BadCase(testDescription: "type twice", target: "/simple/search?q=x&type=track&type=album", phrase: "type is given more than once; give it once"),
        BadCase(testDescription: "q twice, encoded", target: "/simple/search?q=x&%71=y&type=track", phrase: "q is given more than once"),
    ]

    @Test("missing or bad parameters: 400 listing what is allowed, nothing upstream", arguments: bad)
    func badParameters(_ row: BadCase) async throws {
        try await withProxy { proxy in
            let client = try await proxy.client()
            let response = try await client.request("GET", row.target)
            await client.close()
            #expect(response.status == 400)
            let message = try #require((try jsonObject(response)["error"] as? [String: Any])?["message"] as? String)
            #expect(message.contains(row.phrase))
            #expect(message.contains("GET /simple/search?q=NAME&type=artist|album|track|song"))
            #expect(proxy.fake.counters.apiRequests == 0)
        }
    }

    @Test("HEAD gets the compact list's length, with link rewriting on or off", arguments: [true, false])
    func head(rewriteLinks: Bool) async throws {
        try await withProxy(configure: { $0.rewriteLinks = rewriteLinks }) { proxy in
            let client = try await proxy.client()
            let target = "/simple/search?q=Pitbull&type=artist&limit=3"
            let get = try await client.request("GET", target)
            await client.close()
            let headClient = try await proxy.client()
            try await headClient.send("HEAD \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", method: .HEAD)
            let head = try await headClient.response()
            await headClient.close()
            #expect(get.status == 200)
            #expect(head.status == 200)
            #expect(head.headers["content-length"] == [String(get.body.count)])
            #expect(head.body.isEmpty)
        }
    }

    @Test("Spotify's \"0000\" for an album it has no date for is no release date in the compact list")
    func unknownReleaseDate() throws {
        let search = try JSONValue.parse(Data(#"{"tracks":{"items":[{"id":"t","name":"n","album":{"name":"a","release_date":"0000","release_date_precision":"year"}}]}}"#.utf8))
        let compact = try JSONValue.parse(Data(SimpleSearchStage.compact(search, kind: "track", query: "n")))
        #expect(compact["items"]?.array?.first?["release_date"] == .null)
    }

    @Test("a 200 search that is not JSON is a 502 in Spotify's shape, its Connection kept; an error goes as Spotify sent it")
    func unreadableSearch() throws {
        let transform = ResponseTransform.simpleSearch(kind: "track", query: "n")
        let (status, headers, body) = transform.apply(status: 200, headers: HTTPHeaders([("Content-Type", "text/plain"), ("Connection", "close")]), body: Array("hello".utf8))
        #expect(status == 502 && headers["connection"] == ["close"] && headers["content-type"].first?.hasPrefix("application/json") == true)
        let message = try JSONValue.parse(Data(body))["error"]?["message"]?.string
        #expect(message?.contains("5 bytes that are not JSON") == true, "\(message ?? "nil")")
        let refused = Array(#"{"error":{"status":400,"message":"No search query"}}"#.utf8)
        #expect(transform.apply(status: 400, headers: [:], body: refused).2 == refused)
    }

    @Test("the commands' tables show a name's control characters as �, never an escape sequence, and align CJK and emoji by terminal columns")
    func tableCells() throws {
        let table = TextTable.render([["NAME", "ARTIST", "ALBUM"], ["Evil\u{1B}[2J\nline\ttab", "夜に駆ける", "Al\rbum"], ["abc", "YOASOBI 🎵", "-"]])
        #expect(!table.unicodeScalars.contains { $0.value == 0x1B || $0 == "\r" || $0 == "\t" }, "\(table)")
        let lines = table.split(separator: "\n")
        #expect(lines.count == 3 && lines[1].hasPrefix("Evil\u{FFFD}[2J\u{FFFD}line\u{FFFD}tab"))
        let third = try lines.map { line in try #require(line.range(of: line == lines[1] ? "Al" : line == lines[2] ? "-" : "ALBUM")) }
        #expect(Set(zip(lines, third).map { line, range in line[..<range.lowerBound].columns }).count == 1, "\(table)")
        #expect(TextTable.clip("夜に駆ける", to: 5) == "夜に…")
        #expect(TextTable.clip("abcdef", to: 4) == "abc…")
        #expect(TextTable.printable("a\u{202E}b") == "a\u{FFFD}b", "a right-to-left override would reorder the line")
        #expect("🚀🇸🇪".columns == 4)
    }

    @Test("query values: + is a space, a stray % stays literal")
    func queryValues() {
        #expect(QueryString.parse("/simple/search?q=Mr.+Brightside&type=song") == ["q": "Mr. Brightside", "type": "song"])
        #expect(QueryString.parse("/simple/search?q=100%+pure")["q"] == "100% pure")
        #expect(QueryString.parse("/simple/search?q=a%26b%2Bc")["q"] == "a&b+c")
    }

    @Test("spotify-proxy search asks the running proxy and prints a table, or its JSON")
    func command() async throws {
        try await withProxy { proxy in
            let table = try await CommandRun.run(["search", "Mr. Brightside", "--type", "song", "--proxy", proxy.baseURL], in: try temporaryDirectory())
            #expect(table.status == 0, "\(table.stderr)")
            #expect(table.stdout.contains("Mr. Brightside"))
            #expect(table.stdout.contains("Hot Fuss (Deluxe Version)"))
            #expect(table.stdout.contains("The Killers"))
            // Its album was recorded without a release date (2018): no RELEASED column.
            #expect(table.stdout.hasPrefix("NAME") && table.stdout.contains("ALBUM") && !table.stdout.contains("RELEASED"), "\(table.stdout)")
            // An artist has no album nor release date: no such columns.
            let artists = try await CommandRun.run(["search", "Pitbull", "--type", "artist", "--proxy", proxy.baseURL], in: try temporaryDirectory())
            #expect(artists.status == 0 && artists.stdout.contains("Pitbull"), "\(artists.stderr)")
            #expect(!artists.stdout.contains("ALBUM") && !artists.stdout.contains("RELEASED") && artists.stdout.contains("SPOTIFY URL"), "\(artists.stdout)")
            // A base URL with a last "/", as people paste it, is the same proxy.
            let json = try await CommandRun.run(
                ["search", "Pitbull", "--type", "artist", "--json", "--proxy", proxy.baseURL + "/"], in: try temporaryDirectory())
            #expect(json.status == 0)
            #expect(json.stdout.contains(#""name":"Pitbull""#))
        }
    }

    @Test("a value the commands cannot use is refused before anything is asked or written: exit 64, naming the flag", arguments: [
        (["search", "old", "--type", "playlist"], "Error: --type must be artist, album, track or song"),
        (["search", "old", "--limit", "0"], "Error: --limit must be from 1 to 50"),
        (["search", "old", "--limit", "51"], "Error: --limit must be from 1 to 50"),
        (["search", " ", "--type", "artist"], "Error: give what to search for"),
        (["search", "old", "--proxy", "notaurl"], #"Error: --proxy: "notaurl" is not an http:// or https:// URL"#),
        (["search", "old", "--proxy", "http://127.0.0.1:1/?x=1"], "has a query or fragment"),
        (["search", "old", "--proxy", "http://:8080"], #"Error: --proxy: "http://:8080" names no host"#),
        (["search", "old", "--proxy", "http://127.0.0.1:8080/v1/"], "ends in /v1; give the proxy's base URL without it"),
        (["check-config", "--listen", "foo"], #"--listen: "foo" is not HOST:PORT"#),
        (["check-config", "--api-url", "ftp://x"], #"--api-url: "ftp://x" is not an http:// or https:// URL"#),
        (["serve", "--log-level", "loud"], #"--log-level: "loud" is not a log level"#),
        (["cache", "purge", "nope"], "Error: the prefix must be a path such as /v1/artists"),
        (["keys", "new", "--label", "bad label", "--keys-file", "keys"], #"Error: --label: the key label "bad label" is not usable"#),
        (["keys", "new", "--label", ".hidden", "--keys-file", "keys"], "not starting with '.'"),
        (["keys", "new", "--label", "b", "--budget", "-1", "--keys-file", "keys"], "--budget must be from 1 to 1000000 requests per 30 s, got -1"),
        (["keys", "new", "--label", "b", "--budget", "9223372036854775807", "--keys-file", "keys"], "--budget must be from 1 to 1000000"),
        (["logout", "--user", "../x"], #"Error: the user label "../x" is not usable"#),
    ])
    func unusableValues(arguments: [String], named: String) async throws {
        let directory = try temporaryDirectory()
        let run = try await CommandRun.run(arguments, in: directory)
        #expect(run.status == 64, "\(run.stderr)")
        #expect(run.stderr.contains(named), "\(run.stderr)")
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("keys").path))
    }
}
