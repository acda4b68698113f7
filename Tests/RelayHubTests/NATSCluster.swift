import Foundation
import RelayClient
import RelayCore
import Testing

/// A cluster of real nats-servers on loopback (routes between them), started and stopped by the
/// test: nothing is left behind.
final class NATSCluster: Sendable {
    let nodes: [NATSServerProcess]
    /// The JetStream stores, removed with the cluster.
    private let stores: [String]

    private init(nodes: [NATSServerProcess], stores: [String]) {
        self.nodes = nodes
        self.stores = stores
    }

    /// Starts `size` servers, the first taking routes and the others routed to it (they learn of
    /// each other from it), and waits until messages cross between every pair.
    /// With `jetStream`, each server runs JetStream with its own store (a JetStream cluster).
    static func start(size: Int = 3, jetStream: Bool = false) async throws -> NATSCluster {
        let name = "relay-test-\(UInt32.random(in: .min ... .max))"
        var nodes: [NATSServerProcess] = []
        var stores: [String] = []
        if jetStream {
            // A JetStream cluster wants every server given the routes to all (its own included),
            // so the route ports are picked first.
            stores = (1...size).map { _ in temporaryDataDirectory() }
            let routes = try (1...size).map { _ in try freePort() }
            let all = routes.map { "nats://127.0.0.1:\($0)" }.joined(separator: ",")
            for number in 1...size {
                nodes.append(
                    try await NATSServerProcess(arguments: [
                        "--cluster", "nats://127.0.0.1:\(routes[number - 1])", "--cluster_name", name, "-n", "n\(number)",
                        "--routes", all, "-js", "-sd", stores[number - 1],
                    ]))
            }
        } else {
            let first = try await NATSServerProcess(arguments: ["--cluster", "nats://127.0.0.1:-1", "--cluster_name", name, "-n", "n1"])
            nodes = [first]
            for number in 2...max(size, 2) where number <= size {
                nodes.append(
                    try await NATSServerProcess(arguments: [
                        "--cluster", "nats://127.0.0.1:-1", "--cluster_name", name, "-n", "n\(number)", "--routes",
                        "nats://127.0.0.1:\(first.routePort!)",
                    ]))
            }
        }
        let cluster = NATSCluster(nodes: nodes, stores: stores)
        try await cluster.formed()
        return cluster
    }

    var urls: [String] { nodes.map(\.url) }

    /// Waits until a publication on each server reaches a subscriber on every other one.
    func formed() async throws {
        var clients: [NATSClient] = []
        for node in nodes { clients.append(try await NATSClient.connect(to: node.url)) }
        let seen = Collected()
        var subscriptions: [NATSSubscription] = []
        for (index, client) in clients.enumerated() {
            let subscription = try client.subscribe("cluster.formed")
            subscriptions.append(subscription)
            Task {
                for await message in subscription { seen.append("\(message.text)>\(index)") }
            }
            try await client.flush()
        }
        let pairs = Set(nodes.indices.flatMap { from in nodes.indices.filter { $0 != from }.map { "\(from)>\($0)" } })
        try await eventually(within: 20) {
            for (index, client) in clients.enumerated() {
                try? client.publish("cluster.formed", "\(index)")
                try? await client.flush()
            }
            return pairs.isSubset(of: Set(seen.items))
        }
        for subscription in subscriptions { try? subscription.unsubscribe() }
        for client in clients { await client.close() }
    }

    func stop() {
        for node in nodes { node.stop() }
        for store in stores { try? FileManager.default.removeItem(atPath: store) }
    }

    deinit { stop() }
}
