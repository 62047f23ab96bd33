import Foundation

/// The route template a request path is counted under in `/metrics` — `/v1/artists/{id}`,
/// never the id itself — so that label values are bounded by the API's routes, not by the ids
/// clients ask for. The templates are Spotify's Web API paths as its OpenAPI description lists
/// them (`../shared/spotify/official-openapi.yml` and `openapi.yml`, 2026); a literal segment
/// beats a parameter (`/v1/me/top/artists` over `/v1/me/top/{type}`); anything else is `other`.
public enum RouteLabel {
    public static let other = "other"

    static let templates: [RouteTemplate] = [
        "/v1/albums", "/v1/albums/{id}", "/v1/albums/{id}/tracks", "/v1/artists", "/v1/artists/{id}", "/v1/artists/{id}/albums",
        "/v1/artists/{id}/related-artists", "/v1/artists/{id}/top-tracks", "/v1/audio-analysis/{id}", "/v1/audio-features",
        "/v1/audio-features/{id}", "/v1/audiobooks", "/v1/audiobooks/{id}", "/v1/audiobooks/{id}/chapters", "/v1/browse/categories",
        "/v1/browse/categories/{category_id}", "/v1/browse/categories/{category_id}/playlists", "/v1/browse/featured-playlists",
        "/v1/browse/new-releases", "/v1/chapters", "/v1/chapters/{id}", "/v1/episodes", "/v1/episodes/{id}", "/v1/markets", "/v1/me",
        "/v1/me/albums", "/v1/me/albums/contains", "/v1/me/audiobooks", "/v1/me/audiobooks/contains", "/v1/me/episodes",
        "/v1/me/episodes/contains", "/v1/me/following", "/v1/me/following/contains", "/v1/me/library", "/v1/me/library/contains",
        "/v1/me/player", "/v1/me/player/currently-playing", "/v1/me/player/devices", "/v1/me/player/next", "/v1/me/player/pause",
        "/v1/me/player/play", "/v1/me/player/previous", "/v1/me/player/queue", "/v1/me/player/recently-played", "/v1/me/player/repeat",
        "/v1/me/player/seek", "/v1/me/player/shuffle", "/v1/me/player/volume", "/v1/me/playlists", "/v1/me/shows", "/v1/me/shows/contains",
        "/v1/me/top/artists", "/v1/me/top/tracks", "/v1/me/top/{type}", "/v1/me/tracks", "/v1/me/tracks/contains",
        "/v1/playlists/{playlist_id}", "/v1/playlists/{playlist_id}/followers", "/v1/playlists/{playlist_id}/followers/contains",
        "/v1/playlists/{playlist_id}/images", "/v1/playlists/{playlist_id}/items", "/v1/playlists/{playlist_id}/tracks",
        "/v1/recommendations", "/v1/recommendations/available-genre-seeds", "/v1/search", "/v1/shows", "/v1/shows/{id}",
        "/v1/shows/{id}/episodes", "/v1/tracks", "/v1/tracks/{id}", "/v1/users/{user_id}", "/v1/users/{user_id}/playlists",
    ].map { RouteTemplate($0)! }
    // Most literal segments first: the first match is the most specific.
    .sorted { $0.segments.filter { $0 != nil }.count > $1.segments.filter { $0 != nil }.count }

    /// A template as bytes: each segment a literal's bytes, or nil for a parameter.
    struct Compiled {
        let label: String
        let segments: [[UInt8]?]
    }

    /// The templates by their number of segments, most literal first.
    static let bySegmentCount: [[Compiled]] = {
        var buckets = [[Compiled]](repeating: [], count: 8)
        for template in Self.templates where template.segments.count < buckets.count {
            buckets[template.segments.count].append(Compiled(label: template.description, segments: template.segments.map { $0.map { Array($0.utf8) } }))
        }
        return buckets
    }()

    /// The proxy's own paths, counted as themselves.
    static let ownPaths: Set<Substring> = ["/healthz", "/readyz", "/metrics", "/simple/search", "/admin/status", "/admin/cache/purge"]

    /// The label a request's path (no query) is counted under: a Spotify template, one of the
    /// proxy's own paths, or `other` (any path a client makes up must not become a label).
    /// Runs for every request: the path's bytes are compared in place, nothing is allocated.
    public static func of(_ path: Substring) -> String {
        guard path.hasUTF8Prefix("/v1/") else { return Self.ownPaths.contains(path) ? String(path) : Self.other }
        var path = path
        let matched: String? = path.withUTF8 { bytes in
            var end = bytes.count
            // A trailing slash names the same resource (spotipy sends some).
            if end > 1, bytes[end - 1] == UInt8(ascii: "/") { end -= 1 }
            // Segment boundaries: at most 7 segments (Spotify's longest path has 5).
            return withUnsafeTemporaryAllocation(of: (Int, Int).self, capacity: 8) { segments -> String? in
                var count = 0
                var start = 1
                for index in 1...end {
                    guard index == end || bytes[index] == UInt8(ascii: "/") else { continue }
                    guard count < 7 else { return nil }
                    segments[count] = (start, index)
                    count += 1
                    start = index + 1
                }
                guard count < Self.bySegmentCount.count else { return nil }
                for template in Self.bySegmentCount[count] {
                    var matches = true
                    for (position, segment) in template.segments.enumerated() {
                        let (from, to) = segments[position]
                        if let literal = segment {
                            if literal.count != to - from || !literal.withUnsafeBufferPointer({ memcmp($0.baseAddress!, bytes.baseAddress! + from, literal.count) == 0 }) {
                                matches = false
                                break
                            }
                        } else if to == from {
                            matches = false
                            break
                        }
                    }
                    if matches { return template.label }
                }
                return nil
            }
        }
        return matched ?? Self.other
    }
}
