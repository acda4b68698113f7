// swift-tools-version: 6.0
import PackageDescription

let package = Package(
    name: "Relay",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "RelayCore", targets: ["RelayCore"]),
        .library(name: "RelayHub", targets: ["RelayHub"]),
        .library(name: "RelayClient", targets: ["RelayClient"]),
        .executable(name: "relay", targets: ["relay"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        // TLS on every listener and in the clients; no hand-written crypto.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        // X.509 (client certificates' names for the `transport` scheme; test certificates).
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        // JWTs of the `external` scheme (HS256, RS256, ES256).
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.7.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // SQLite, compiled from the vendored amalgamation: durable queues need no system library.
        .package(url: "https://github.com/vapor/sqlite-nio", from: "1.13.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        // The monitoring listener's /metrics (Prometheus text format), recorded through swift-metrics.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        // zlib for WebSocket's permessage-deflate (the system's libz, which the toolchain needs anyway).
        .package(url: "https://github.com/adam-fowler/compress-nio", from: "1.5.0"),
    ],
    targets: [
        // The I/O-free protocol core: JSON, LIME envelopes, framing, session machines, routing.
        .target(name: "RelayCore", linkerSettings: [.linkedLibrary("m", .when(platforms: [.linux]))]),
        // SwiftNIO pieces shared by the hub and the client: WebSocket upgrade and framing, writers, addresses.
        .target(
            name: "RelayTransport",
            dependencies: [
                "RelayCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "CompressNIO", package: "compress-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        // The hub: listeners and channel handlers that execute the core's actions.
        .target(
            name: "RelayHub",
            dependencies: [
                "RelayCore", "RelayTransport", "RelayClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "SQLiteNIO", package: "sqlite-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
            ]
        ),
        // The async/await client.
        .target(
            name: "RelayClient",
            dependencies: [
                "RelayCore", "RelayTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "relay",
            dependencies: [
                "RelayCore", "RelayHub", "RelayClient", "RelayTransport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        // Fuzz targets over the protocol core, run by `relay-fuzz` under libFuzzer (scripts/fuzz) and
        // by the tests over the corpus kept in Fuzz/corpus.
        .target(name: "RelayFuzzTargets", dependencies: ["RelayCore"]),
        .executableTarget(name: "relay-fuzz", dependencies: ["RelayFuzzTargets"]),
        .testTarget(name: "RelayCoreTests", dependencies: ["RelayCore", "RelayFuzzTargets"]),
        .testTarget(
            name: "RelayHubTests",
            dependencies: [
                "RelayCore", "RelayHub", "RelayClient", "RelayTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "CryptoExtras", package: "swift-crypto"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
