import Foundation

/// A batch as one line of JSON, for the tee's write-ahead spool: the shape `Codable` gives
/// (`JSONDecoder` reads it back, and reads lines written by `JSONEncoder` before), written by
/// `JSONValue`'s own serializer, several times faster than `JSONEncoder` on this write path,
/// and read back by `JSONValue`'s parser (``init(line:)``), which the spool's replays use: they
/// also carry the batches that wait on disk while storage lags, so they are on a hot path too.
extension EntityBatch {
    public func serializedLine() -> [UInt8] {
        func entities(_ table: [String: SpotifyEntity]) -> JSONValue {
            .object(table.mapValues { entity in
                var members: [String: JSONValue] = [
                    "kind": .string(entity.kind.rawValue), "id": .string(entity.id), "fields": .object(entity.fields),
                ]
                if let album = entity.albumID { members["albumID"] = .string(album) }
                return .object(members)
            })
        }
        func links(_ table: [String: EntityLink]) -> JSONValue {
            .object(table.mapValues { link in
                .object(["ownerID": .string(link.ownerID), "artistID": .string(link.artistID), "position": .number(Double(link.position))])
            })
        }
        var members: [String: JSONValue] = [
            "artists": entities(self.artists), "albums": entities(self.albums), "tracks": entities(self.tracks),
            "albumArtists": links(self.albumArtists), "trackArtists": links(self.trackArtists),
        ]
        // As `Codable` writes a `Date`: seconds since 2001-01-01.
        if let seen = self.seenAt { members["seenAt"] = .number(seen.timeIntervalSinceReferenceDate) }
        return JSONValue.object(members).serializedBytes(sortedKeys: false)
    }

    /// The batch a ``serializedLine()`` (or `JSONEncoder`) wrote, or nil when `line` is not one
    /// (a line torn by a crash), as `JSONDecoder` would refuse it.
    public init?(line: UnsafeRawBufferPointer) {
        guard let value = try? JSONValue.parse(bytes: line), let top = value.object else { return nil }
        self.init()
        for name in ["artists", "albums", "tracks"] {
            guard let table = top[name]?.object else { return nil }
            for member in table.values {
                guard let entity = member.object, let kind = entity["kind"]?.string.flatMap(SpotifyEntity.Kind.init(rawValue:)),
                    let id = entity["id"]?.string, let fields = entity["fields"]?.object
                else { return nil }
                self.add(SpotifyEntity(kind: kind, id: id, fields: fields, albumID: entity["albumID"]?.string))
            }
        }
        for name in ["albumArtists", "trackArtists"] {
            guard let table = top[name]?.object else { return nil }
            for member in table.values {
                guard let link = member.object, let owner = link["ownerID"]?.string, let artist = link["artistID"]?.string,
                    let position = link["position"]?.int
                else { return nil }
                if name == "albumArtists" {
                    self.link(albumID: owner, artistID: artist, position: position)
                } else {
                    self.link(trackID: owner, artistID: artist, position: position)
                }
            }
        }
        // Absent in lines written before it was recorded.
        if case .number(let seen)? = top["seenAt"] { self.seenAt = Date(timeIntervalSinceReferenceDate: seen) }
    }
}
