import FakeSpotify
import Foundation
import NIOCore
import NIOPosix
import SpotifyCatalog
import SpotifyProxy

/// A team's day, compressed: `clients` clients for `seconds`, each asking for a Zipf-distributed
/// mix of artists, albums, tracks, searches, artist-album pages and playlists (a few hundred
/// resources, so most requests repeat), through `proxy`, in front of the fake Spotify at `fake`
/// (which the script started with latency and a rolling-window limit). Prints one row of
/// `docs/benchmarks.md`'s quota table: what reached the upstream, the 429s the clients saw,
/// latencies (all answers, and the cache's hits), and the answers served stale.
///   spotify-proxy-bench quota LABEL PROXY_URL FAKE_URL [seconds] [clients]
enum Quota {
    static func run(label: String, proxy: String, fake: String, seconds: Double, clients: Int) async throws {
        let targets = try Self.workload()
        let group = MultiThreadedEventLoopGroup.singleton
        var configuration = UpstreamConfiguration()
        // A request held by the governor's wait policy gets no byte for up to max_wait.
        configuration.totalTimeout = .seconds(120)
        configuration.idleTimeout = .seconds(120)
        try await UpstreamClient.withRunning(configuration: configuration) { client in
            let token = try await Self.token(fake: fake, client: client)
            let before = try await Self.counters(fake: fake, token: token, client: client)
            let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
            let results = try await withThrowingTaskGroup(of: [Sample].self) { tasks in
                for index in 0..<clients {
                    tasks.addTask {
                        var random = SplitMix64(state: UInt64(index + 1))
                        var samples: [Sample] = []
                        while ContinuousClock.now < deadline {
                            let target = targets[Self.zipf(count: targets.count, random: &random)]
                            let started = ContinuousClock.now
                            let response: UpstreamClient.BufferedResponse
                            do {
                                response = try await client.perform(method: "GET", url: proxy + target, headers: [], body: nil, on: group.next())
                            } catch {
                                // Counted as status 0: the client got no answer.
                                samples.append(Sample(status: 0, elapsed: ContinuousClock.now - started, cache: ""))
                                continue
                            }
                            let elapsed = ContinuousClock.now - started
                            let status = response.headers.first { $0.name.lowercased() == "cache-status" || $0.name.lowercased() == "x-cache-status" }?.value ?? ""
                            samples.append(Sample(status: response.status, elapsed: elapsed, cache: status))
                        }
                        return samples
                    }
                }
                return try await tasks.reduce(into: []) { $0 += $1 }
            }
            let after = try await Self.counters(fake: fake, token: token, client: client)
            Self.report(label: label, samples: results, upstream: after.apiRequests - before.apiRequests, upstream429s: after.windowLimited - before.windowLimited)
        }
    }

    struct Sample {
        var status: Int
        var elapsed: Duration
        /// `Cache-Status` (spotify-proxy) or `X-Cache-Status` (nginx's `$upstream_cache_status`).
        var cache: String

        var isHit: Bool { self.cache.contains("; hit") || self.cache == "HIT" }
        var isStale: Bool { self.cache.contains("detail=stale") || self.cache == "STALE" || self.cache == "UPDATING" }
    }

    struct Counters: Decodable {
        var apiRequests: Int
        var windowLimited: Int
    }

    static func report(label: String, samples: [Sample], upstream: Int, upstream429s: Int) {
        func percentile(_ values: [Duration], _ fraction: Double) -> String {
            guard !values.isEmpty else { return "-" }
            let sorted = values.sorted()
            let value = sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]
            let (seconds, attoseconds) = value.components
            return String(format: "%.2f ms", Double(seconds) * 1000 + Double(attoseconds) / 1e15)
        }
        let all = samples.map(\.elapsed)
        let hits = samples.filter(\.isHit).map(\.elapsed)
        let clientStatuses = Dictionary(grouping: samples, by: \.status).mapValues(\.count)
        let others = clientStatuses.filter { $0.key != 200 && $0.key != 429 }.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }
        print(
            "| \(label) | \(samples.count) | \(upstream) | \(upstream429s) | \(clientStatuses[429, default: 0]) | \(samples.filter(\.isStale).count) | "
                + "\(percentile(all, 0.5)) | \(percentile(all, 0.99)) | \(hits.count) | \(percentile(hits, 0.5)) | \(others.isEmpty ? "-" : others.joined(separator: ", ")) |")
    }

    /// A few hundred resources from the recorded responses: every artist, album and track id;
    /// searches for artists' names; pages of the recorded artist's albums; ten playlists.
    static func workload() throws -> [String] {
        var batch = EntityBatch()
        for name in ["album", "album-tracks", "artist-albums", "artist-top-tracks", "search-all-types", "several-albums", "several-artists", "several-tracks"] {
            batch.merge(try EntityExtractor.extract(from: try RecordedResponses.data(name)))
        }
        var targets: [String] = []
        targets += batch.artists.keys.sorted().map { "/v1/artists/\($0)" }
        targets += batch.albums.keys.sorted().map { "/v1/albums/\($0)" }
        targets += batch.tracks.keys.sorted().prefix(150).map { "/v1/tracks/\($0)" }
        let words = Set(batch.artists.values.compactMap { $0.name?.split(separator: " ").first.map { String($0).lowercased() } })
            .filter { $0.allSatisfy { $0.isLetter && $0.isASCII } }.sorted().prefix(40)
        targets += words.map { "/v1/search?q=\($0)&type=artist" } + words.prefix(20).map { "/v1/search?q=\($0)&type=track&limit=10" }
        targets += (0..<5).map { "/v1/artists/0TnOYISbd1XYRBk9myaseg/albums?offset=\($0 * 10)&limit=10" }
        targets += (0..<10).map { "/v1/playlists/37i9dQZF1DX\(String(format: "%011d", $0))" }
        var random = SplitMix64(state: 42)
        targets.shuffle(using: &random)
        return targets
    }

    /// An index in 0..<count, Zipf-distributed (s = 1): the first resources are the popular ones.
    static func zipf(count: Int, random: inout SplitMix64) -> Int {
        let harmonic = (1...count).reduce(0.0) { $0 + 1 / Double($1) }
        var draw = Double.random(in: 0..<harmonic, using: &random)
        for rank in 1...count {
            draw -= 1 / Double(rank)
            if draw < 0 { return rank - 1 }
        }
        return count - 1
    }

    static func token(fake: String, client: UpstreamClient) async throws -> String {
        let basic = Data("fake-client-id:fake-client-secret".utf8).base64EncodedString()
        let response = try await client.perform(
            method: "POST", url: fake + "/api/token",
            headers: [("Authorization", "Basic \(basic)"), ("Content-Type", "application/x-www-form-urlencoded")],
            body: ByteBuffer(string: "grant_type=client_credentials"), on: MultiThreadedEventLoopGroup.singleton.next())
        struct Token: Decodable { var access_token: String }
        return try JSONDecoder().decode(Token.self, from: Data(response.body.readableBytesView)).access_token
    }

    static func counters(fake: String, token: String, client: UpstreamClient) async throws -> Counters {
        let response = try await client.perform(
            method: "GET", url: fake + "/v1/test/counters", headers: [("Authorization", "Bearer \(token)")], body: nil,
            on: MultiThreadedEventLoopGroup.singleton.next())
        return try JSONDecoder().decode(Counters.self, from: Data(response.body.readableBytesView))
    }
}
