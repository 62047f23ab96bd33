// swift-tools-version:6.0
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "spotify-proxy",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "spotify-proxy", targets: ["spotify-proxy"]),
        .library(name: "SpotifyProxy", targets: ["SpotifyProxy"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // The app token read on every request without a lock (an atomic reference); NIO already resolves it.
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        // HTTPS on the listener ([server] tls_cert, tls_key); postgres-nio already resolves it.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // SHA-256 for PKCE (login) and random bytes; postgres-nio already resolves it.
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"5.0.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev", "libssl-dev"])]
        ),
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        // llhttp, the HTTP/1.1 parser of the worker loops (vendored from swift-nio, symbols renamed).
        .target(name: "CLLHTTP"),
        // The worker loops' system calls (epoll, eventfd, accept4) as plain C functions, and
        // the process's curl share (DNS cache and TLS sessions across the loops).
        .target(name: "CWorkerIO", dependencies: ["CCurl"]),
        // The domain: JSON values, Spotify's entities, their extraction and merge rule. No NIO.
        // Dependency rule: SpotifyCatalog ← Sink ← Tee ← Server ← Runtime.
        .target(
            name: "SpotifyCatalog",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SpotifyProxy",
            dependencies: [
                "SpotifyCatalog",
                "CCurl",
                "CSQLite",
                "CLLHTTP",
                "CWorkerIO",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // The fake Spotify: recorded responses and a catalog behind Spotify's routes. Used by
        // the demo and `fake-spotify` (so it ships), the benchmark and the tests.
        .target(
            name: "FakeSpotify",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        // Test tools only (harness, clients, a throwaway PostgreSQL, a manual clock): never
        // linked into the spotify-proxy product.
        .target(
            name: "SpotifyProxyTestSupport",
            dependencies: [
                "SpotifyProxy",
                "FakeSpotify",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "spotify-proxy",
            dependencies: [
                "SpotifyProxy",
                "SpotifyCatalog",
                "FakeSpotify",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "spotify-proxy-bench",
            dependencies: [
                "SpotifyProxy",
                "SpotifyCatalog",
                "FakeSpotify",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SpotifyProxyTests",
            dependencies: [
                "SpotifyProxy",
                "SpotifyCatalog",
                "SpotifyProxyTestSupport",
                "FakeSpotify",
                "CCurl",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
