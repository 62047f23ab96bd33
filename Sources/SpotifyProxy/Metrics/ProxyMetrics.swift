import CoreMetrics
import Prometheus
import Synchronization

/// The proxy's metrics, served at `GET /metrics` in Prometheus' text format.
///
/// Instruments are swift-metrics types over collectors of this proxy's own registry, each family
/// with its `# HELP` text — no global `MetricsSystem.bootstrap`, so several proxies in one process (the
/// tests) each count their own. Requests are counted as they finish; the tee's and the token's
/// state are read from their sources when scraped.
public final class ProxyMetrics: Sendable {
    private let registry: PrometheusCollectorRegistry
    /// By method, route template, status class and key label; made on first sight of a combination
    /// (bounded: the methods, Spotify's routes, five classes, the keys).
    private let requests = Mutex<[RequestLabels: CoreMetrics.Counter]>([:])
    /// Time to the upstream's answer head, by route template.
    private let upstreamDuration = Mutex<[String: CoreMetrics.Timer]>([:])
    private let duration: CoreMetrics.Timer
    /// Open client connections.
    private let connections = Atomic<Int>(0)
    private let connectionsGauge: CoreMetrics.Gauge
    /// Per token ("app", or a user's label), made on first sight, removed when the token is gone
    /// (a user logged out).
    private let tokenInstruments = Mutex<[String: (refreshes: Prometheus.Counter, failures: Prometheus.Counter, expiresIn: Prometheus.Gauge)]>([:])
    private let upstreamFailures: [UpstreamError.Kind: CoreMetrics.Counter]
    private let tee: TeeInstruments
    private let cache: CacheInstruments
    private let devMode: (active: CoreMetrics.Gauge, batches: CoreMetrics.Counter, pages: CoreMetrics.Counter)
    private let tokenReady: CoreMetrics.Gauge
    private let governor: (limitedSeconds: CoreMetrics.Gauge, upstream429s: CoreMetrics.Counter)
    /// Reloads applied and refused since the start, and whether the last one was applied (as
    /// Prometheus' own `prometheus_config_last_reload_successful`): an alert on a refused reload.
    private let reloads: (applied: CoreMetrics.Counter, refused: CoreMetrics.Counter, lastSuccessful: CoreMetrics.Gauge)
    /// Requests the proxy answered 429 itself, by reason: its own two from the start, Spotify's
    /// (`QUOTA_EXCEEDED`) made on first sight.
    private let answeredLocally: Mutex<[String: CoreMetrics.Counter]>
    /// Per logged-in user, made on first sight, removed at a logout: token readiness and seconds
    /// to the access token's expiry; and seconds to the refresh token's, while that is known
    /// (an unknown one is no series, not an alarming 0).
    private let userGauges = Mutex<[String: (ready: Prometheus.Gauge, expiresIn: Prometheus.Gauge)]>([:])
    private let refreshGauges = Mutex<[String: Prometheus.Gauge]>([:])
    private let make: Instruments
    /// Scrapes set the tee counters from a snapshot: one at a time.
    private let scrape = Mutex(())

    private struct TeeInstruments: Sendable {
        let queued, deduplicated, unparsable, dropped, written, spooled, replayed, spilled, lost: CoreMetrics.Counter
        let spoolPending: CoreMetrics.Gauge

        /// The tee's counters live in `TeeWriter.Stats` (also on /healthz); each scrape copies
        /// them here. They only grow, so what Prometheus sees is monotonic.
        func set(_ stats: TeeWriter.Stats) {
            let pairs = [
                (self.queued, stats.queued), (self.deduplicated, stats.deduplicated), (self.unparsable, stats.unparsable),
                (self.dropped, stats.dropped), (self.written, stats.written), (self.spooled, stats.spooled),
                (self.replayed, stats.replayed), (self.spilled, stats.spilled), (self.lost, stats.lost),
            ]
            for (counter, value) in pairs {
                counter.reset()
                counter.increment(by: value)
            }
            self.spoolPending.record(stats.spoolPending ? 1 : 0)
        }
    }

    /// The cache's counters live in ``ResponseCache/Stats``; each scrape copies them here.
    private struct CacheInstruments: Sendable {
        let hits, staleHits, misses, collapsed, revalidated, stored, evicted: CoreMetrics.Counter
        let entries, bytes: CoreMetrics.Gauge

        func set(_ stats: ResponseCache.Stats) {
            let pairs = [
                (self.hits, stats.hits), (self.staleHits, stats.staleHits), (self.misses, stats.misses), (self.collapsed, stats.collapsed),
                (self.revalidated, stats.revalidated), (self.stored, stats.stored), (self.evicted, stats.evicted),
            ]
            for (counter, value) in pairs {
                counter.reset()
                counter.increment(by: value)
            }
            self.entries.record(stats.entries)
            self.bytes.record(stats.bytes)
        }
    }

    /// Makes the instruments: swift-metrics types over this registry's collectors, each with its
    /// family's `# HELP` text (``ProxyMetrics/help``).
    private struct Instruments: Sendable {
        let registry: PrometheusCollectorRegistry
        static let buckets: [Duration] = [
            .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            .milliseconds(2500), .seconds(5), .seconds(10),
        ]

        private func descriptor(_ name: String) -> MetricNameDescriptor {
            MetricNameDescriptor(metricName: name, unitName: "", helpText: ProxyMetrics.help[name] ?? "")
        }

        func collector(counter name: String, _ dimensions: [(String, String)] = []) -> Prometheus.Counter {
            self.registry.makeCounter(descriptor: self.descriptor(name), labels: dimensions)
        }

        func collector(gauge name: String, _ dimensions: [(String, String)] = []) -> Prometheus.Gauge {
            self.registry.makeGauge(descriptor: self.descriptor(name), labels: dimensions)
        }

        func counter(_ name: String, _ dimensions: [(String, String)] = []) -> CoreMetrics.Counter {
            CoreMetrics.Counter(label: name, dimensions: dimensions, handler: self.collector(counter: name, dimensions))
        }

        func gauge(_ name: String, _ dimensions: [(String, String)] = []) -> CoreMetrics.Gauge {
            CoreMetrics.Gauge(label: name, dimensions: dimensions, aggregate: false, handler: self.collector(gauge: name, dimensions))
        }

        func timer(_ name: String, _ dimensions: [(String, String)] = []) -> CoreMetrics.Timer {
            CoreMetrics.Timer(
                label: name, dimensions: dimensions,
                handler: self.registry.makeDurationHistogram(descriptor: self.descriptor(name), labels: dimensions, buckets: Self.buckets))
        }
    }

    /// Each family's `# HELP` line (promtool's `check metrics` wants one for every family).
    static let help: [String: String] = [
        "spotify_proxy_requests_total": "Requests answered (forwarded or refused), by method, route template, status class and access key label.",
        "spotify_proxy_request_duration_seconds": "Time from a request's arrival to the end of its answer.",
        "spotify_proxy_upstream_duration_seconds": "Time to Spotify's answer head, for forwarded requests, by route template.",
        "spotify_proxy_open_connections": "Client connections open now.",
        "spotify_proxy_upstream_failures_total": "Forwarded requests that got no answer from Spotify, by kind (connect, timeout, protocol, cancelled, too_large).",
        "spotify_proxy_tee_bodies_queued_total": "Response bodies handed to the tee for extraction.",
        "spotify_proxy_tee_bodies_deduplicated_total": "Response bodies not parsed again because an identical one was extracted moments before.",
        "spotify_proxy_tee_bodies_unparsable_total": "Response bodies that were not JSON (nothing to extract).",
        "spotify_proxy_tee_bodies_dropped_total": "Response bodies dropped because the tee's queue was full (must stay 0).",
        "spotify_proxy_tee_entities_written_total": "Artists, albums and tracks written to the sink directly.",
        "spotify_proxy_tee_entities_spooled_total": "Entities kept in the spool because the sink failed.",
        "spotify_proxy_tee_entities_replayed_total": "Entities written to the sink later, from the spool.",
        "spotify_proxy_tee_entities_spilled_total": "Entities written ahead to the spool because the sink lagged behind.",
        "spotify_proxy_tee_entities_lost_total": "Entities lost because the sink and the spool both failed (must stay 0).",
        "spotify_proxy_tee_spool_pending": "1 while the spool holds entities not yet in the sink.",
        "spotify_proxy_cache_hits_total": "Requests answered from the shared cache, by kind (fresh, stale).",
        "spotify_proxy_cache_forwarded_total": "Cache misses sent to Spotify.",
        "spotify_proxy_cache_collapsed_total": "Requests that waited for an identical request already on its way to Spotify.",
        "spotify_proxy_cache_revalidated_total": "Stored answers Spotify confirmed unchanged (304).",
        "spotify_proxy_cache_stored_total": "Answers stored in the cache.",
        "spotify_proxy_cache_evicted_total": "Answers evicted from the cache to stay within cache.max_bytes.",
        "spotify_proxy_cache_entries": "Answers in the cache now.",
        "spotify_proxy_cache_bytes": "Bytes the cache holds now.",
        "spotify_proxy_dev_mode_active": "1 while requests are answered as for a development-mode app.",
        "spotify_proxy_dev_mode_assembled_total": "Answers the proxy assembled for development mode, by kind (batch, page).",
        "spotify_proxy_token_ready": "1 while the app's access token is held.",
        "spotify_proxy_rate_limited_seconds": "Seconds left of the app's rate limit (0 when not limited).",
        "spotify_proxy_upstream_429_total": "429 answers Spotify gave.",
        "spotify_proxy_rate_limited_answers_total": "Requests the proxy answered 429 itself, by reason.",
        "spotify_proxy_config_reloads_total": "Configuration reloads since the start, by result (applied, refused).",
        "spotify_proxy_config_last_reload_successful": "1 when the last reload was applied (or none was asked), 0 when it was refused.",
        "spotify_proxy_token_refreshes_total": "Access token refreshes, by token (app, or a user's label).",
        "spotify_proxy_token_refresh_failures_total": "Access token refreshes that failed, by token.",
        "spotify_proxy_token_expires_in_seconds": "Seconds until the access token expires, by token (0 when none is held).",
        "spotify_proxy_user_token_ready": "1 while a logged-in user's access token is held, by user label.",
        "spotify_proxy_user_token_expires_in_seconds": "Seconds until a user's access token expires, by user label.",
        "spotify_proxy_user_refresh_token_expires_in_seconds": "Seconds until a user's refresh token expires (then only a new login helps), by user label.",
    ]

    public init() {
        let registry = PrometheusCollectorRegistry()
        let make = Instruments(registry: registry)
        self.registry = registry
        self.make = make
        self.connectionsGauge = make.gauge("spotify_proxy_open_connections")
        self.duration = make.timer("spotify_proxy_request_duration_seconds")
        var failures: [UpstreamError.Kind: CoreMetrics.Counter] = [:]
        for kind in UpstreamError.Kind.allCases {
            let label = switch kind {
            case .connect: "connect"
            case .timeout: "timeout"
            case .protocolError: "protocol"
            case .cancelled: "cancelled"
            case .tooLarge: "too_large"
            }
            failures[kind] = make.counter("spotify_proxy_upstream_failures_total", [("kind", label)])
        }
        self.upstreamFailures = failures
        func counter(_ name: String) -> CoreMetrics.Counter { make.counter("spotify_proxy_tee_\(name)_total") }
        self.tee = TeeInstruments(
            queued: counter("bodies_queued"), deduplicated: counter("bodies_deduplicated"),
            unparsable: counter("bodies_unparsable"), dropped: counter("bodies_dropped"),
            written: counter("entities_written"), spooled: counter("entities_spooled"), replayed: counter("entities_replayed"),
            spilled: counter("entities_spilled"), lost: counter("entities_lost"),
            spoolPending: make.gauge("spotify_proxy_tee_spool_pending"))
        func cacheCounter(_ name: String, _ dimensions: [(String, String)] = []) -> CoreMetrics.Counter {
            make.counter("spotify_proxy_cache_\(name)_total", dimensions)
        }
        self.cache = CacheInstruments(
            hits: cacheCounter("hits", [("kind", "fresh")]), staleHits: cacheCounter("hits", [("kind", "stale")]),
            misses: cacheCounter("forwarded"), collapsed: cacheCounter("collapsed"), revalidated: cacheCounter("revalidated"),
            stored: cacheCounter("stored"), evicted: cacheCounter("evicted"),
            entries: make.gauge("spotify_proxy_cache_entries"),
            bytes: make.gauge("spotify_proxy_cache_bytes"))
        self.devMode = (
            make.gauge("spotify_proxy_dev_mode_active"),
            make.counter("spotify_proxy_dev_mode_assembled_total", [("kind", "batch")]),
            make.counter("spotify_proxy_dev_mode_assembled_total", [("kind", "page")])
        )
        self.tokenReady = make.gauge("spotify_proxy_token_ready")
        self.governor = (
            make.gauge("spotify_proxy_rate_limited_seconds"),
            make.counter("spotify_proxy_upstream_429_total")
        )
        // The proxy's own reasons are there from the start, at 0 (so `rate()` over them works
        // before the first); Spotify's reasons (`QUOTA_EXCEEDED`) join as they arrive.
        self.answeredLocally = Mutex(Dictionary(uniqueKeysWithValues: (Governor.localReasons + [AccessControl.budgetRefusalReason]).map { reason in
            (reason, make.counter("spotify_proxy_rate_limited_answers_total", [("reason", reason)]))
        }))
        self.reloads = (
            make.counter("spotify_proxy_config_reloads_total", [("result", "applied")]),
            make.counter("spotify_proxy_config_reloads_total", [("result", "refused")]),
            make.gauge("spotify_proxy_config_last_reload_successful")
        )
    }

    /// What a request is counted under.
    struct RequestLabels: Hashable {
        var method: String
        var route: String
        var code: String
        var key: String
    }

    static let countedMethods: Set<String> = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
    static let codes = ["1xx", "2xx", "3xx", "4xx", "5xx"]

    /// A request the proxy answered (forwarded or refused), with its status and time taken.
    /// `route` is a template (``RouteLabel``) or an own endpoint's path; `key` the access key's label.
    /// The instruments one connection used last, with their labels.
    struct Memo {
        var request: (labels: RequestLabels, counter: CoreMetrics.Counter)?
        var upstream: (route: String, timer: CoreMetrics.Timer)?
    }

    func recordRequest(method: String, route: String, status: Int, key: String?, nanoseconds: Int64, memo: inout Memo) {
        let labels = RequestLabels(
            method: Self.countedMethods.contains(method) ? method : "other", route: route, code: Self.codes[min(max(status / 100, 1), 5) - 1],
            key: key ?? "-")
        self.duration.recordNanoseconds(nanoseconds)
        if let last = memo.request, last.labels == labels { return last.counter.increment() }
        let counter = self.counter(for: labels)
        memo.request = (labels, counter)
        counter.increment()
    }

    private func counter(for labels: RequestLabels) -> CoreMetrics.Counter {
        self.requests.withLock { counters in
            if let existing = counters[labels] { return existing }
            let made = self.make.counter(
                "spotify_proxy_requests_total", [("method", labels.method), ("route", labels.route), ("code", labels.code), ("key", labels.key)])
            counters[labels] = made
            return made
        }
    }

    /// How long the upstream took to answer's head, for a forwarded request to `route`.
    func recordUpstream(route: String, nanoseconds: Int64, memo: inout Memo) {
        if let last = memo.upstream, last.route == route { return last.timer.recordNanoseconds(nanoseconds) }
        let timer = self.upstreamDuration.withLock { timers in
            if let existing = timers[route] { return existing }
            let made = self.make.timer("spotify_proxy_upstream_duration_seconds", [("route", route)])
            timers[route] = made
            return made
        }
        memo.upstream = (route, timer)
        timer.recordNanoseconds(nanoseconds)
    }

    func connectionOpened() { self.connections.add(1, ordering: .relaxed) }
    func connectionClosed() { self.connections.subtract(1, ordering: .relaxed) }
    var openConnections: Int { self.connections.load(ordering: .relaxed) }

    func recordUpstreamFailure(_ kind: UpstreamError.Kind) {
        self.upstreamFailures[kind]?.increment()
    }

    /// The exposition: counters and histograms as they are, the tee's counters (when a sink is
    /// configured) and the token's readiness as of now. The users and tokens are read within the
    /// scrape's lock: read before it, a scrape that waited there could bring back the series of a
    /// user another scrape had just removed.
    func render(
        tee stats: TeeWriter.Stats?, tokenReady: Bool, users: @autoclosure () -> [UserStatus] = [],
        tokens: @autoclosure () -> [(name: String, figures: TokenFigures)] = [],
        governor: (limited: (seconds: Int, reason: String?)?, upstream429s: Int, answeredLocally: [String: Int])? = nil,
        cache: ResponseCache.Stats? = nil, devMode: DevMode.Status? = nil, reloads: ReloadRecord.Status? = nil
    ) -> [UInt8] {
        self.scrape.withLock { _ in
            let users = users()
            let tokens = tokens()
            if let cache { self.cache.set(cache) }
            if let reloads {
                for (counter, value) in [(self.reloads.applied, reloads.generation), (self.reloads.refused, reloads.attempts - reloads.generation)] {
                    counter.reset()
                    counter.increment(by: value)
                }
                self.reloads.lastSuccessful.record(reloads.error == nil ? 1 : 0)
            }
            if let devMode {
                self.devMode.active.record(devMode.active ? 1 : 0)
                for (counter, value) in [(self.devMode.batches, devMode.batchesAssembled), (self.devMode.pages, devMode.pagesAssembled)] {
                    counter.reset()
                    counter.increment(by: value)
                }
            }
            if let governor {
                self.governor.limitedSeconds.record(governor.limited?.seconds ?? 0)
                // Counted by the governor; copied here at each scrape (they only grow).
                self.governor.upstream429s.reset()
                self.governor.upstream429s.increment(by: governor.upstream429s)
                for (reason, count) in governor.answeredLocally {
                    let counter = self.answeredLocally.withLock { counters in
                        if let existing = counters[reason] { return existing }
                        let made = self.make.counter("spotify_proxy_rate_limited_answers_total", [("reason", reason)])
                        counters[reason] = made
                        return made
                    }
                    counter.reset()
                    counter.increment(by: count)
                }
            }
            if let stats { self.tee.set(stats) }
            self.tokenReady.record(tokenReady ? 1 : 0)
            self.connectionsGauge.record(self.openConnections)
            for (name, figures) in tokens {
                let instruments = self.tokenInstruments.withLock { instruments in
                    if let existing = instruments[name] { return existing }
                    let dimensions = [("token", name)]
                    let made = (
                        refreshes: self.make.collector(counter: "spotify_proxy_token_refreshes_total", dimensions),
                        failures: self.make.collector(counter: "spotify_proxy_token_refresh_failures_total", dimensions),
                        expiresIn: self.make.collector(gauge: "spotify_proxy_token_expires_in_seconds", dimensions)
                    )
                    instruments[name] = made
                    return made
                }
                instruments.refreshes.reset()
                instruments.refreshes.increment(by: Int64(figures.refreshes))
                instruments.failures.reset()
                instruments.failures.increment(by: Int64(figures.failures))
                instruments.expiresIn.set(Int64(figures.expiresInSeconds ?? 0))
            }
            for user in users {
                let gauges = self.userGauges.withLock { gauges in
                    if let existing = gauges[user.label] { return existing }
                    let dimensions = [("user", user.label)]
                    let made = (
                        ready: self.make.collector(gauge: "spotify_proxy_user_token_ready", dimensions),
                        expiresIn: self.make.collector(gauge: "spotify_proxy_user_token_expires_in_seconds", dimensions)
                    )
                    gauges[user.label] = made
                    return made
                }
                gauges.ready.set(Int64(user.state == .fresh || user.state == .refreshing && user.problem == nil ? 1 : 0))
                gauges.expiresIn.set(Int64(user.tokenExpiresInSeconds ?? 0))
                if let seconds = user.refreshTokenExpiresInSeconds {
                    let gauge = self.refreshGauges.withLock { gauges in
                        if let existing = gauges[user.label] { return existing }
                        let made = self.make.collector(gauge: "spotify_proxy_user_refresh_token_expires_in_seconds", [("user", user.label)])
                        gauges[user.label] = made
                        return made
                    }
                    gauge.set(Int64(seconds))
                } else if let unknown = self.refreshGauges.withLock({ $0.removeValue(forKey: user.label) }) {
                    self.registry.unregisterGauge(unknown)
                }
            }
            // Users logged out since: their series go (an alert on a token's expiry would
            // otherwise fire for a user nobody needs any more).
            let listed = Set(users.map(\.label))
            let names = Set(tokens.map(\.name))
            var gone = self.userGauges.withLock { gauges in
                let gone = gauges.filter { !listed.contains($0.key) }
                for label in gone.keys { gauges[label] = nil }
                return gone.values.flatMap { [$0.ready, $0.expiresIn] }
            }
            gone += self.refreshGauges.withLock { gauges in
                let gone = gauges.filter { !listed.contains($0.key) }
                for label in gone.keys { gauges[label] = nil }
                return Array(gone.values)
            }
            for gauge in gone { self.registry.unregisterGauge(gauge) }
            let goneTokens = self.tokenInstruments.withLock { instruments in
                let gone = instruments.filter { !names.contains($0.key) }
                for name in gone.keys { instruments[name] = nil }
                return Array(gone.values)
            }
            for instruments in goneTokens {
                self.registry.unregisterCounter(instruments.refreshes)
                self.registry.unregisterCounter(instruments.failures)
                self.registry.unregisterGauge(instruments.expiresIn)
            }
            return self.registry.emitToBuffer()
        }
    }
}
