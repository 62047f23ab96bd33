/// A batch as one line of JSON, for the tee's write-ahead spool: the shape `Codable` gives
/// (`JSONDecoder` reads it back, and reads lines written by `JSONEncoder` before), written by
/// `JSONValue`'s own serializer, several times faster than `JSONEncoder` on this write path.
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
        let value = JSONValue.object([
            "artists": entities(self.artists), "albums": entities(self.albums), "tracks": entities(self.tracks),
            "albumArtists": links(self.albumArtists), "trackArtists": links(self.trackArtists),
        ])
        return value.serializedBytes(sortedKeys: false)
    }
}
