// swift-tools-version: 6.2
import PackageDescription

// A hub that exports its spans with swift-otel (OTLP over HTTP). Kept apart from Relay's own
// package so that only those who want swift-otel build it (several minutes more).
let package = Package(
    name: "OTelHub",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "Relay", path: "../.."),
        .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0", traits: ["OTLPHTTP"]),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .executableTarget(
            name: "relay-otel",
            dependencies: [
                .product(name: "RelayHub", package: "Relay"),
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        )
    ],
    swiftLanguageModes: [.v6]
)
