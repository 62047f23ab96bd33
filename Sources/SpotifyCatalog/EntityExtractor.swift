import Foundation

/// An artist, album or track as seen in one or more responses.
public struct SpotifyEntity: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, CaseIterable, Codable {
        case artist, album, track
    }

    public var kind: Kind
    public var id: String
    /// The object, nulls removed, merged with every other sighting in the same batch.
    public var fields: [String: JSONValue]
    /// For tracks: the album it belongs to (from `track.album`, or the album whose `tracks` listed it).
    public var albumID: String?

    public var name: String? { self.fields["name"]?.string }

    /// Merge rule (`JSONValue.merging`, at every depth): a member present in `other` wins; a
    /// member missing from it (or null, which was stripped) keeps the value already known. So a
    /// simplified object after a full one keeps the full data, a full one after a simplified one
    /// fills it in, and the same holds inside nested objects (a track's `album`, `external_ids`).
    public mutating func merge(_ other: SpotifyEntity) {
        self.fields.merge(other.fields) { old, new in old.merging(new) }
        if let album = other.albumID { self.albumID = album }
    }
}

/// A relation with its order: album → artists, track → artists.
public struct EntityLink: Sendable, Hashable, Codable {
    public var ownerID: String
    public var artistID: String
    public var position: Int
}

/// Everything one or more responses held, deduplicated by id.
public struct EntityBatch: Sendable, Equatable, Codable {
    public private(set) var artists: [String: SpotifyEntity] = [:]
    public private(set) var albums: [String: SpotifyEntity] = [:]
    public private(set) var tracks: [String: SpotifyEntity] = [:]
    /// Keyed by (album, artist): the latest position wins.
    public private(set) var albumArtists: [String: EntityLink] = [:]
    public private(set) var trackArtists: [String: EntityLink] = [:]
    /// When the proxy saw these entities (the batch was formed, within `sink.flush_interval` of
    /// each sighting): stored as `last_seen` (and `first_seen` for new rows), so a batch stored
    /// late, from the spool after an outage, keeps its time. Nil: when it is stored.
    public var seenAt: Date?

    public init() {}

    public var entityCount: Int { self.artists.count + self.albums.count + self.tracks.count }

    /// The three tables in a fixed order: artists, albums, tracks.
    public var byKind: [(kind: SpotifyEntity.Kind, entities: [String: SpotifyEntity])] {
        [(.artist, self.artists), (.album, self.albums), (.track, self.tracks)]
    }
    public var isEmpty: Bool { self.entityCount == 0 }

    public mutating func add(_ entity: SpotifyEntity) {
        switch entity.kind {
        case .artist: Self.upsert(entity, into: &self.artists)
        case .album: Self.upsert(entity, into: &self.albums)
        case .track: Self.upsert(entity, into: &self.tracks)
        }
    }

    public mutating func link(albumID: String, artistID: String, position: Int) {
        self.albumArtists["\(albumID)\u{0}\(artistID)"] = EntityLink(ownerID: albumID, artistID: artistID, position: position)
    }

    public mutating func link(trackID: String, artistID: String, position: Int) {
        self.trackArtists["\(trackID)\u{0}\(artistID)"] = EntityLink(ownerID: trackID, artistID: artistID, position: position)
    }

    public mutating func merge(_ other: EntityBatch) {
        for entity in other.artists.values { self.add(entity) }
        for entity in other.albums.values { self.add(entity) }
        for entity in other.tracks.values { self.add(entity) }
        Self.replaceLinks(of: &self.albumArtists, with: other.albumArtists)
        Self.replaceLinks(of: &self.trackArtists, with: other.trackArtists)
        if let seen = other.seenAt { self.seenAt = max(self.seenAt ?? seen, seen) }
    }

    /// `links` with those of every owner `newer` has links for replaced by `newer`'s: an album
    /// or track lists all its artists each time, so one no longer listed is no longer its artist.
    static func replaceLinks(of links: inout [String: EntityLink], with newer: [String: EntityLink]) {
        guard !newer.isEmpty else { return }
        if !links.isEmpty {
            let owners = Set(newer.values.map(\.ownerID))
            links = links.filter { !owners.contains($0.value.ownerID) }
        }
        links.merge(newer) { _, new in new }
    }

    private static func upsert(_ entity: SpotifyEntity, into table: inout [String: SpotifyEntity]) {
        if table[entity.id] == nil {
            table[entity.id] = entity
        } else {
            table[entity.id]!.merge(entity)
        }
    }
}

/// Finds every object whose `"type"` is `artist`, `album` or `track` (and that has an `id` and a
/// `name`), at any depth, with its
/// relations — whatever the endpoint: single and batch lookups (with `null` entries), search,
/// paging objects, playlists' and saved items, and shapes not yet invented. Pure.
public enum EntityExtractor {
    public static func extract(from data: Data) throws -> EntityBatch {
        var batch = EntityBatch()
        Self.walk(try JSONValue.parse(data), albumContext: nil, into: &batch)
        return batch
    }

    public static func extract(from value: JSONValue) -> EntityBatch {
        var batch = EntityBatch()
        Self.walk(value, albumContext: nil, into: &batch)
        return batch
    }

    /// `albumContext` is the album whose `tracks` paging object is being walked: its tracks
    /// are simplified and do not name their album themselves.
    private static func walk(_ value: JSONValue, albumContext: String?, into batch: inout EntityBatch) {
        switch value {
        case .array(let items):
            for item in items { Self.walk(item, albumContext: albumContext, into: &batch) }
        case .object(let object):
            // An entity has a type, an id and a name; a nameless one (`linked_from`) is only a reference.
            guard let type = object["type"]?.string, let kind = SpotifyEntity.Kind(rawValue: type),
                let id = object["id"]?.string, !id.isEmpty, object["name"]?.string != nil
            else {
                // A container (paging object, search result, playlist item): its `items` keep the album context.
                for (key, child) in object {
                    Self.walk(child, albumContext: key == "items" ? albumContext : nil, into: &batch)
                }
                return
            }
            var entity = SpotifyEntity(kind: kind, id: id, fields: [:], albumID: nil)
            if case .object(let stripped) = JSONValue.object(object).strippingNulls() { entity.fields = stripped }
            switch kind {
            case .artist:
                break
            case .album:
                for (position, artist) in (object["artists"]?.array ?? []).enumerated() {
                    if let artistID = Self.entityID(artist, kind: .artist) { batch.link(albumID: id, artistID: artistID, position: position) }
                }
            case .track:
                entity.albumID = object["album"].flatMap { Self.entityID($0, kind: .album) } ?? albumContext
                for (position, artist) in (object["artists"]?.array ?? []).enumerated() {
                    if let artistID = Self.entityID(artist, kind: .artist) { batch.link(trackID: id, artistID: artistID, position: position) }
                }
            }
            batch.add(entity)
            for (key, child) in object {
                Self.walk(child, albumContext: kind == .album && key == "tracks" ? id : nil, into: &batch)
            }
        default:
            return
        }
    }

    private static func entityID(_ value: JSONValue, kind: SpotifyEntity.Kind) -> String? {
        guard value["type"]?.string == kind.rawValue, let id = value["id"]?.string, !id.isEmpty else { return nil }
        return id
    }
}
