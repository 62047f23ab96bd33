/// What a user saved or follows, as the fake keeps it: Spotify URIs, the newest first, as
/// `PUT`/`DELETE /v1/me/library` and the writes by type it replaced leave them. Pure: the
/// handler keeps one per user and answers the `…/contains` checks and the saved pages from it.
struct UserLibrary: Sendable, Equatable {
    struct Item: Sendable, Equatable {
        var uri: String
        /// ISO 8601, as Spotify writes `added_at`.
        var addedAt: String
    }

    private(set) var items: [Item] = []

    /// The kind of URI each write or check by type saves, removes or asks about.
    static let kinds = ["tracks": "track", "albums": "album", "episodes": "episode", "shows": "show", "audiobooks": "audiobook"]

    /// The URIs a request by type names: its `ids` (comma-separated, in the query or a JSON
    /// body's `ids`) as URIs of `kind`.
    static func uris(ids: [String], kind: String) -> [String] {
        ids.filter { !$0.isEmpty }.map { "spotify:\(kind):\($0)" }
    }

    /// Saves what is not saved yet, the newest first.
    mutating func save(_ uris: [String], date: String) {
        for uri in uris where !self.contains(uri) {
            self.items.insert(Item(uri: uri, addedAt: date), at: 0)
        }
    }

    mutating func remove(_ uris: [String]) {
        let removed = Set(uris)
        self.items.removeAll { removed.contains($0.uri) }
    }

    func contains(_ uri: String) -> Bool { self.items.contains { $0.uri == uri } }

    /// The saved items of `kind` (`track`, `album`, …), the newest first, with their ids.
    func saved(_ kind: String) -> [(id: String, addedAt: String)] {
        let prefix = "spotify:\(kind):"
        return self.items.filter { $0.uri.hasPrefix(prefix) }.map { (String($0.uri.dropFirst(prefix.count)), $0.addedAt) }
    }
}
