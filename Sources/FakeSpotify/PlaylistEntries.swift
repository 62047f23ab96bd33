import Foundation

/// A playlist's entries as the fake keeps them, changed as Spotify's item edits change them
/// (official-openapi.yml: add at a `position`, replace with `uris`, reorder a range, remove
/// every occurrence of a URI). Pure: the handler keeps one per playlist and renders its pages.
struct PlaylistEntries: Sendable, Equatable {
    struct Entry: Sendable, Equatable {
        var uri: String
        /// The Spotify id of the user who added it.
        var addedBy: String
        /// ISO 8601, as Spotify writes `added_at`.
        var addedAt: String
    }

    private(set) var entries: [Entry] = []

    /// The most URIs one addition or replacement takes (official-openapi.yml).
    static let maximumURIs = 100

    /// The URIs of an edit: the query's `uris` (comma-separated), or its JSON body's, or the
    /// body itself when it is a list of them (spotipy's `playlist_add_items` sends that); else
    /// nil (none given).
    /// The query's win: with them, the body's are ignored (official-openapi.yml).
    static func uris(body: Any?, query: [String: String]) -> [String]? {
        if let list = query["uris"] { return list.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        return (body as? [String: Any])?["uris"] as? [String] ?? body as? [String]
    }

    /// Why Spotify refuses `uris` in an addition or a replacement, else nil: a track or
    /// episode URI is all a playlist holds. The message is Spotify's for a bad track URI (the
    /// one clients report); the count's is the fake's own.
    static func refusal(_ uris: [String]) -> FakeCatalog.Failure? {
        guard uris.count <= Self.maximumURIs else { return FakeCatalog.Failure(400, "You can add a maximum of \(Self.maximumURIs) tracks per request.") }
        for uri in uris {
            let parts = uri.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 3, parts[0] == "spotify", parts[1] == "track" || parts[1] == "episode", FakeCatalog.isWellFormed(parts[2]) else {
                return FakeCatalog.Failure(400, "Invalid track uri: \(uri)")
            }
        }
        return nil
    }

    /// Adds `uris` before the entry at `position` (the end when nil).
    mutating func add(_ uris: [String], at position: Int?, by user: String, date: String) -> FakeCatalog.Failure? {
        if let failure = Self.refusal(uris) { return failure }
        let index = position ?? self.entries.count
        guard (0...self.entries.count).contains(index) else { return FakeCatalog.Failure(400, "Index out of bounds") }
        self.entries.insert(contentsOf: uris.map { Entry(uri: $0, addedBy: user, addedAt: date) }, at: index)
        return nil
    }

    /// Replaces every entry with `uris`.
    mutating func replace(with uris: [String], by user: String, date: String) -> FakeCatalog.Failure? {
        if let failure = Self.refusal(uris) { return failure }
        self.entries = uris.map { Entry(uri: $0, addedBy: user, addedAt: date) }
        return nil
    }

    /// Moves `length` entries from `start` to before the entry that was at `insertBefore` (a
    /// position in the list before the move; one within the range moves nothing).
    mutating func reorder(start: Int, insertBefore: Int, length: Int = 1) -> FakeCatalog.Failure? {
        let count = self.entries.count
        guard length >= 1, start >= 0, start < count, length <= count - start, (0...count).contains(insertBefore) else {
            return FakeCatalog.Failure(400, "Index out of bounds")
        }
        let end = start + length
        guard insertBefore < start || insertBefore > end else { return nil }
        let moved = Array(self.entries[start..<end])
        self.entries.removeSubrange(start..<end)
        self.entries.insert(contentsOf: moved, at: insertBefore > end ? insertBefore - length : insertBefore)
        return nil
    }

    /// Removes each URI: the entries holding it at `positions` (in the list before the removal),
    /// or every occurrence when none are given. Never refused: what it does not hold is no change.
    mutating func remove(_ items: [(uri: String, positions: [Int]?)]) -> FakeCatalog.Failure? {
        var gone = Set<Int>()
        for item in items {
            for (index, entry) in self.entries.enumerated() where entry.uri == item.uri && (item.positions?.contains(index) ?? true) {
                gone.insert(index)
            }
        }
        self.entries = self.entries.enumerated().filter { !gone.contains($0.offset) }.map(\.element)
        return nil
    }
}
