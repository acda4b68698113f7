import Foundation
import Histogram
import RelayClient
import RelayCore
import Synchronization

/// `relay bench reconnect`: how long the clients take to be back after their server is killed and
/// started again. The bench runs the server itself (this `relay serve`, or nats-server with
/// `--nats-server`) on the port of `--server`, connects the clients with a subscription each, then
/// each round kills the server (SIGKILL), starts it again and times each client from the moment the
/// server listens again to its `reconnected` event (its subscription restored).
struct ReconnectBench {
    let server: String
    let clients: Int
    let rounds: Int
    let natsServer: Bool
    let policy: ReconnectPolicy
    let json: Bool

    func run() async throws {
        guard let url = URLComponents(string: server), let port = url.port, let scheme = url.scheme?.lowercased() else {
            throw BenchError.unexpectedAnswer("--server needs a port: \(server)")
        }
        let process = ServerUnderTest(scheme: scheme, port: port, natsServer: natsServer)
        try await process.start()
        defer { process.stop() }
        var options = RelayConnection.Options()
        options.reconnect = policy
        var connections: [RelayConnection] = []
        var events: [AsyncStream<ConnectionEvent>.Iterator] = []
        for _ in 0..<clients {
            let connection = try await RelayConnection.connect(to: server, options: options)
            _ = try await connection.subscribe("bench.reconnect")
            connections.append(connection)
            events.append(connection.events.makeAsyncIterator())
        }
        var histogram = Histogram<UInt64>(highestTrackableValue: 120_000_000_000)
        var worst: [Double] = []
        for _ in 0..<rounds {
            process.stop()
            for index in events.indices { _ = await Self.next(&events[index]) { if case .disconnected = $0 { true } else { false } } }
            try await process.start()
            let ready = ContinuousClock.now
            var roundWorst = Duration.zero
            for index in events.indices {
                guard await Self.next(&events[index], { if case .reconnected = $0 { true } else { false } }) else {
                    throw BenchError.unexpectedAnswer("a client ended instead of reconnecting")
                }
                let elapsed = ContinuousClock.now - ready
                roundWorst = max(roundWorst, elapsed)
                histogram.record(UInt64(max(elapsed.nanoseconds, 0)))
            }
            worst.append(roundWorst.seconds)
        }
        for connection in connections { await connection.close() }
        report(histogram, worst: worst)
    }

    /// Waits for the next event that `matches`; false when the stream ended first.
    private static func next(_ events: inout AsyncStream<ConnectionEvent>.Iterator, _ matches: (ConnectionEvent) -> Bool) async -> Bool {
        while let event = await events.next() {
            if matches(event) { return true }
        }
        return false
    }

    private func report(_ histogram: Histogram<UInt64>, worst: [Double]) {
        let milliseconds = { (quantile: Double) in Double(histogram.valueAtPercentile(quantile)) / 1e6 }
        let target = natsServer ? "nats-server" : "relay"
        if json {
            let summary: JSONValue = [
                "workload": "reconnect", "server": .string(target), "url": .string(server), "clients": .number(JSONNumber(clients)),
                "rounds": .number(JSONNumber(rounds)), "p50_ms": .number(JSONNumber(milliseconds(50))),
                "p90_ms": .number(JSONNumber(milliseconds(90))), "max_ms": .number(JSONNumber(Double(histogram.max) / 1e6)),
            ]
            print(JSONWriter.string(summary))
            return
        }
        print("reconnect against \(target) at \(server): \(clients) clients × \(rounds) rounds (SIGKILL, restart)")
        print(
            String(
                format: "from the server listening again to each client restored: p50 %.1f ms, p90 %.1f ms, max %.1f ms",
                milliseconds(50), milliseconds(90), Double(histogram.max) / 1e6))
        print("slowest client per round: " + worst.map { String(format: "%.0f ms", $0 * 1000) }.joined(separator: ", "))
    }
}

/// The server `relay bench reconnect` kills and starts again: this binary's `relay serve` with
/// only the listener under test on its port, or nats-server.
final class ServerUnderTest: Sendable {
    private let process = Mutex<Process?>(nil)
    private let arguments: [String]
    private let executable: String
    private let scheme: String
    private let port: Int
    private let data = NSTemporaryDirectory() + "relay-bench-reconnect-" + UUID().uuidString

    init(scheme: String, port: Int, natsServer: Bool) {
        self.scheme = scheme
        self.port = port
        if natsServer {
            executable =
                FileManager.default.isExecutableFile(atPath: "/usr/sbin/nats-server") ? "/usr/sbin/nats-server" : "/usr/bin/nats-server"
            arguments = ["-a", "127.0.0.1", "-p", String(port)]
        } else {
            executable = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
            let listener = ["ws": "--ws", "wss": "--ws", "tcp": "--tcp", "nats": "--nats", "tls": "--nats"][scheme] ?? "--ws"
            var arguments = ["serve", "--ws", "127.0.0.1:0", "--tcp", "127.0.0.1:0", "--nats", "127.0.0.1:0", "--http", "off"]
            arguments += [listener, "127.0.0.1:\(port)", "--data", data]
            self.arguments = arguments
        }
    }

    /// Starts the server; returns once it accepts connections on the port.
    func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        self.process.withLock { $0 = process }
        let deadline = ContinuousClock.now + .seconds(30)
        while !Self.accepts(port) {
            guard ContinuousClock.now < deadline, process.isRunning else {
                throw BenchError.unexpectedAnswer("\(executable) did not start listening on \(port)")
            }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// SIGKILL, and waits until it has exited.
    func stop() {
        guard let process = process.withLock({ $0.take() }) else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    deinit { try? FileManager.default.removeItem(atPath: data) }

    /// Whether something accepts TCP connections on the loopback port now.
    private static func accepts(_ port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
