import FakeSpotify
import Foundation
import SpotifyCatalog
import SpotifyProxy
import SpotifyProxyTestSupport
import Testing

@Suite("Entity extraction")
struct EntityExtractorTests {
    struct Expected: Sendable, CustomStringConvertible {
        var file: String
        var artists: Int, albums: Int, tracks: Int
        var albumArtists: Int, trackArtists: Int, tracksWithAlbum: Int
        var description: String { self.file }
    }

    /// Counted from the files with a separate walk (Python's json module, every dict with a
    /// `type` of artist/album/track and a string `id` and `name`; relations from each album's
    /// and track's `artists` array, a track's album from its `album` object or the album whose
    /// `tracks` listed it), and spot-checked by reading: `album.json` is one album by one artist
    /// with 11 tracks, each by that artist; `several-albums.json` holds 10 nameless
    /// `linked_from` references, which are not entities.
    static let expected: [Expected] = [
        .init(file: "album-tracks", artists: 21, albums: 0, tracks: 18, albumArtists: 0, trackArtists: 41, tracksWithAlbum: 0),
        .init(file: "album", artists: 1, albums: 1, tracks: 11, albumArtists: 1, trackArtists: 11, tracksWithAlbum: 11),
        .init(file: "artist-albums", artists: 33, albums: 48, tracks: 0, albumArtists: 94, trackArtists: 0, tracksWithAlbum: 0),
        .init(file: "artist-top-tracks", artists: 11, albums: 6, tracks: 10, albumArtists: 6, trackArtists: 21, tracksWithAlbum: 10),
        .init(file: "artist", artists: 1, albums: 0, tracks: 0, albumArtists: 0, trackArtists: 0, tracksWithAlbum: 0),
        .init(file: "search-all-types", artists: 62, albums: 38, tracks: 20, albumArtists: 43, trackArtists: 27, tracksWithAlbum: 20),
        .init(file: "search-artist-album-track", artists: 62, albums: 38, tracks: 20, albumArtists: 43, trackArtists: 27, tracksWithAlbum: 20),
        .init(file: "search-tracks", artists: 4, albums: 5, tracks: 5, albumArtists: 5, trackArtists: 5, tracksWithAlbum: 5),
        .init(file: "several-albums", artists: 18, albums: 3, tracks: 39, albumArtists: 3, trackArtists: 56, tracksWithAlbum: 39),
        .init(file: "several-artists", artists: 3, albums: 0, tracks: 0, albumArtists: 0, trackArtists: 0, tracksWithAlbum: 0),
        .init(file: "several-tracks", artists: 1, albums: 1, tracks: 2, albumArtists: 1, trackArtists: 2, tracksWithAlbum: 2),
        .init(file: "track-2023", artists: 1, albums: 1, tracks: 1, albumArtists: 1, trackArtists: 1, tracksWithAlbum: 1),
        .init(file: "track", artists: 1, albums: 1, tracks: 1, albumArtists: 1, trackArtists: 1, tracksWithAlbum: 1),
    ]

    @Test("every recorded response yields the entities and relations it holds", arguments: Self.expected)
    func fixture(_ expected: Expected) throws {
        let batch = try EntityExtractor.extract(from: try RecordedResponses.data(expected.file))
        #expect(batch.artists.count == expected.artists)
        #expect(batch.albums.count == expected.albums)
        #expect(batch.tracks.count == expected.tracks)
        #expect(batch.albumArtists.count == expected.albumArtists)
        #expect(batch.trackArtists.count == expected.trackArtists)
        #expect(batch.tracks.values.filter { $0.albumID != nil }.count == expected.tracksWithAlbum)
    }

    @Test("a batch's spool line (the write-ahead format) reads back as the same batch, through the replay's reader and through Codable; a line written by JSONEncoder too; a torn line is refused")
    func spoolLineRoundTrip() throws {
        var batch = EntityBatch()
        for name in ["album", "search-all-types", "several-tracks", "artist-top-tracks"] {
            batch.merge(try EntityExtractor.extract(from: try RecordedResponses.data(name)))
        }
        #expect(batch.entityCount > 100)
        let line = batch.serializedLine()
        #expect(!line.contains(UInt8(ascii: "\n")))
        #expect(line.withUnsafeBytes { EntityBatch(line: $0) } == batch)
        #expect(try JSONDecoder().decode(EntityBatch.self, from: Data(line)) == batch)
        let encoded = [UInt8](try JSONEncoder().encode(batch))
        #expect(encoded.withUnsafeBytes { EntityBatch(line: $0) } == batch)
        for torn in [Array(line.prefix(line.count / 2)), Array("{\"artists\":{}}".utf8), Array("[]".utf8)] {
            #expect(torn.withUnsafeBytes { EntityBatch(line: $0) } == nil)
        }
    }

    @Test("error, token and header recordings hold no entities")
    func nonEntityFiles() throws {
        let withEntities = Set(Self.expected.map(\.file))
        let others = RecordedResponses.names.filter { !withEntities.contains($0) }
        #expect(others.count == 24)
        for name in others {
            #expect(try EntityExtractor.extract(from: try RecordedResponses.data(name)).isEmpty, "\(name)")
        }
    }

    @Test("album.json: the album, its artist in position 0, its tracks pointing back at it")
    func albumRelations() throws {
        let batch = try EntityExtractor.extract(from: try RecordedResponses.data("album"))
        let album = try #require(batch.albums["3IqzqH6ShrRtie9Yd2ODyG"])
        #expect(album.fields["label"] != nil)
        #expect(batch.albumArtists.values.first?.position == 0)
        #expect(batch.tracks.values.allSatisfy { $0.albumID == "3IqzqH6ShrRtie9Yd2ODyG" })
    }

    @Test("null entries in batch answers and paging objects are skipped")
    func nullEntries() throws {
        let json = #"{"artists":[null,{"type":"artist","id":"a1","name":"A","genres":null}],"playlists":{"items":[null,null]}}"#
        let batch = try EntityExtractor.extract(from: Data(json.utf8))
        #expect(batch.artists.count == 1)
        #expect(batch.artists["a1"]?.fields["genres"] == nil)
    }

    @Test("playlist and saved items: tracks inside `track`/`item` wrappers are found, episodes are not")
    func wrappers() throws {
        let json = #"""
            {"items":[
              {"added_at":"2026-01-01T00:00:00Z","track":{"type":"track","id":"t1","name":"T1","album":{"type":"album","id":"al1","name":"AL1","artists":[{"type":"artist","id":"ar1","name":"AR1"}]},"artists":[{"type":"artist","id":"ar1","name":"AR1"},{"type":"artist","id":"ar2","name":"AR2"}]}},
              {"added_at":"2026-01-02T00:00:00Z","item":{"type":"episode","id":"e1","name":"E1"}}
            ]}
            """#
        let batch = try EntityExtractor.extract(from: Data(json.utf8))
        #expect(batch.tracks["t1"]?.albumID == "al1")
        #expect(batch.albums.keys.sorted() == ["al1"])
        #expect(batch.artists.keys.sorted() == ["ar1", "ar2"])
        #expect(Set(batch.trackArtists.values.map { "\($0.artistID)@\($0.position)" }) == ["ar1@0", "ar2@1"])
    }

    @Test("simplified after full keeps the full data; full after simplified fills it in")
    func mergeRule() throws {
        let full = try EntityExtractor.extract(from: try RecordedResponses.data("artist"))
        let simplified = #"{"type":"artist","id":"0TnOYISbd1XYRBk9myaseg","name":"Pitbull","href":"h","popularity":null}"#
        var batch = full
        batch.merge(try EntityExtractor.extract(from: Data(simplified.utf8)))
        let merged = try #require(batch.artists["0TnOYISbd1XYRBk9myaseg"])
        #expect(merged.fields["followers"]?["total"]?.int == 12_425_030)
        #expect(merged.fields["popularity"] != nil)
        #expect(merged.fields["href"]?.string == "h")

        var other = try EntityExtractor.extract(from: Data(simplified.utf8))
        other.merge(full)
        #expect(other.artists["0TnOYISbd1XYRBk9myaseg"]?.fields["followers"]?["total"]?.int == 12_425_030)
    }

    @Test("the merge rule holds inside nested objects: a poorer track's album and external_ids erase nothing")
    func nestedMergeRule() throws {
        var batch = try EntityExtractor.extract(from: try RecordedResponses.data("track"))
        batch.merge(try EntityExtractor.extract(from: Data(poorerTrackSighting.utf8)))
        let merged = try #require(batch.tracks["3n3Ppam7vgaVa1iaRUc9Lp"]?.fields)
        // Kept from track.json (hand-checked: its album has 3 images and 57 markets).
        #expect(merged["external_ids"]?["isrc"]?.string == "GBFFP0300052")
        #expect(merged["album"]?["images"]?.array?.count == 3)
        #expect(merged["album"]?["available_markets"]?.array?.count == 57)
        // Filled in by the poorer sighting.
        #expect(merged["album"]?["release_date"]?.string == "2004-06-15")
    }

    @Test("2026 development-mode shapes (no popularity, followers, genres, label) extract cleanly")
    func devModeShapes() throws {
        let json = #"{"type":"album","id":"x","name":"X","album_type":"album","release_date":"2026","total_tracks":1,"artists":[{"type":"artist","id":"y","name":"Y"}],"tracks":{"items":[{"type":"track","id":"z","name":"Z","artists":[{"type":"artist","id":"y","name":"Y"}]}]}}"#
        let batch = try EntityExtractor.extract(from: Data(json.utf8))
        #expect(batch.albums["x"]?.fields["label"] == nil)
        #expect(batch.tracks["z"]?.albumID == "x")
        #expect(batch.entityCount == 3)
    }
}

@Suite("JSON values")
struct JSONValueTests {
    @Test("serialization round-trips every recorded response and escapes what JSON requires")
    func roundTrip() throws {
        for name in RecordedResponses.names {
            let value = try JSONValue.parse(try RecordedResponses.data(name))
            #expect(try JSONValue.parse(Data(value.serialized().utf8)) == value, "\(name)")
        }
        let tricky = JSONValue.object(["a\"b": .string("line\nbreak \\ \u{01} é ✓"), "n": .number(1.5), "i": .number(-3), "z": .null])
        #expect(tricky.serialized() == #"{"a\"b":"line\nbreak \\ \u0001 é ✓","i":-3,"n":1.5,"z":null}"#)
        #expect(try JSONValue.parse(Data(tricky.serialized().utf8)) == tricky)
    }

    @Test("the parser handles escapes, surrogate pairs, numbers and nesting")
    func parserCases() throws {
        let text = #"{"s":"a\"b\\c\/d\u00e9\ud83c\udfb5\n","n":[0,-1,2.5,1e3,-0.25E-2,123456789012345678901],"t":true,"f":false,"z":null,"o":{"e":[],"m":{}}}"#
        let parsed = try JSONValue.parse(Data(text.utf8))
        #expect(parsed["s"]?.string == "a\"b\\c/dé🎵\n")
        #expect(parsed["n"] == .array([.number(0), .number(-1), .number(2.5), .number(1000), .number(-0.0025), .number(Double("123456789012345678901")!)]))
        #expect(parsed["t"] == .bool(true) && parsed["f"] == .bool(false) && parsed["z"] == .null)
        #expect(parsed["o"] == .object(["e": .array([]), "m": .object([:])]))
    }

    @Test("malformed JSON is an error, never a crash", arguments: [
        "", "{", "[1,]", #"{"a" 1}"#, #"{"a":tru}"#, #""unterminated"#, "01x", "[1] 2", #""\x""#, "-", "1.", "1e", #""\u12""#,
        String(repeating: "[", count: 10_000),
    ])
    func malformed(text: String) {
        #expect(throws: JSONValue.ParseError.self) { try JSONValue.parse(Data(text.utf8)) }
    }
}

/// A 2026 development-mode sighting of track.json's track: no popularity, an album without
/// images or markets but with a release date, empty `external_ids`.
let poorerTrackSighting = #"{"type":"track","id":"3n3Ppam7vgaVa1iaRUc9Lp","name":"Mr. Brightside","popularity":null,"external_ids":{},"album":{"type":"album","id":"4OHNH3sDzIxnmUADXzv2kT","name":"Hot Fuss (Deluxe Version)","release_date":"2004-06-15"}}"#
