import Foundation
import RelayClient
import RelayCore
import RelayHub
import Synchronization
import Testing

/// A real nats-server (Debian's package, which scripts/test installs) on a free loopback port.
final class NATSServerProcess: Sendable {
    private let process = Mutex<Process?>(nil)
    let port: Int
    /// The port it takes routes from other servers on, when it is in a cluster.
    let routePort: Int?
    /// The arguments beyond its address, to start it again alike.
    private let arguments: [String]

    /// Starts nats-server; with no port it picks a free one. `arguments` are added (a cluster's
    /// `--cluster`, `--routes`...; a route port of -1 is picked too, and kept for a restart).
    init(port: Int? = nil, arguments: [String] = []) async throws {
        let (process, port, routePort) = try await Self.launch(port: port, arguments: arguments)
        self.process.withLock { $0 = process }
        self.port = port
        self.routePort = routePort
        self.arguments = arguments.map { $0 == "nats://127.0.0.1:-1" ? "nats://127.0.0.1:\(routePort ?? -1)" : $0 }
    }

    var url: String { "nats://127.0.0.1:\(port)" }

    private static func launch(port: Int?, arguments: [String]) async throws -> (Process, Int, Int?) {
        let process = Process()
        process.executableURL = URL(
            fileURLWithPath: FileManager.default.isExecutableFile(atPath: "/usr/sbin/nats-server")
                ? "/usr/sbin/nats-server" : "/usr/bin/nats-server")
        process.arguments = ["-a", "127.0.0.1", "-p", port.map(String.init) ?? "-1"] + arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = errors
        try process.run()
        // nats-server logs the ports it listens on; read until those lines (the route port's
        // comes after "ready").
        let clustered = arguments.contains("--cluster")
        var log = ""
        let handle = errors.fileHandleForReading
        while !log.contains("Server is ready") || (clustered && !log.contains("Listening for route connections on")) {
            let data = handle.availableData
            if data.isEmpty { throw TestFailure("nats-server exited: \(log)") }
            log += String(decoding: data, as: UTF8.self)
        }
        // Later lines are read and dropped, so that a full pipe never stops the server.
        handle.readabilityHandler = { _ = $0.availableData }
        func listened(after marker: String) -> Int? {
            guard let range = log.range(of: marker + #"127\.0\.0\.1:(\d+)"#, options: .regularExpression) else { return nil }
            return Int(log[range].split(separator: ":").last ?? "")
        }
        guard let clients = listened(after: "client connections on ") else { throw TestFailure("no port in the nats-server log: \(log)") }
        return (process, clients, listened(after: "route connections on "))
    }

    /// Kills the server (SIGKILL) and starts it again on the same ports.
    func restart() async throws {
        stop()
        let (process, _, _) = try await Self.launch(port: port, arguments: arguments)
        self.process.withLock { $0 = process }
    }

    func stop() {
        guard let process = self.process.withLock({ $0.take() }) else { return }
        kill(process.processIdentifier, SIGCONT)
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Freezes the server (SIGSTOP), as a network pause would: connections stay open, nothing
    /// is answered. `resume` thaws it.
    func pause() {
        if let process = self.process.withLock({ $0 }) { stopAndWait(process.processIdentifier) }
    }

    func resume() {
        if let process = self.process.withLock({ $0 }) { kill(process.processIdentifier, SIGCONT) }
    }

    deinit { stop() }
}

/// Strings gathered from several tasks.
final class Collected: Sendable {
    private let storage = Mutex<[String]>([])
    var items: [String] { storage.withLock { $0 } }
    func append(_ item: String) { storage.withLock { $0.append(item) } }
}

/// Sends SIGSTOP and returns once the kernel shows the process stopped: a signal is delivered
/// when the process is next scheduled, and on a loaded machine it may serve a little longer.
func stopAndWait(_ pid: Int32) {
    kill(pid, SIGSTOP)
    let deadline = ContinuousClock.now + .seconds(10)
    while ContinuousClock.now < deadline {
        // /proc/<pid>/stat: "pid (name) S ..." with S the state; T is stopped.
        if let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")"),
            stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).hasPrefix("T")
        {
            return
        }
        usleep(2_000)
    }
}

/// Waits for a condition that an event will make true, failing after `seconds`.
func eventually(within seconds: Double = 10, _ condition: () async -> Bool) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while await !condition() {
        guard ContinuousClock.now < deadline else { throw TestFailure("condition not met within \(seconds) s") }
        try await Task.sleep(for: .milliseconds(20))
    }
}

@Suite(.serialized, .timeLimit(.minutes(2))) struct NATSClientTests {
    private func exercise(_ url: String) async throws {
        let client = try await NATSClient.connect(to: url)
        let subscription = try client.subscribe("greetings.*")
        let responder = try client.subscribe("svc.echo")
        try await client.flush()
        let serving = Task {
            for await request in responder {
                if let replyTo = request.replyTo { try client.publish(replyTo, "echo: " + request.text) }
            }
        }
        defer { serving.cancel() }
        var headers = NATSHeaders()
        headers.append("Trace", "t-1")
        try client.publish("greetings.world", "hello", headers: headers)
        var iterator = subscription.makeAsyncIterator()
        let message = await iterator.next()
        #expect(message?.text == "hello" && message?.headers?["Trace"] == "t-1" && message?.subject == "greetings.world")
        #expect(try await client.request("svc.echo", Array("ping".utf8)).text == "echo: ping")
        await #expect(throws: NATSClientError.noResponders) { _ = try await client.request("nobody.here", []) }
        await #expect(throws: NATSClientError.timedOut) {
            let silent = try client.subscribe("svc.silent")
            _ = silent
            try await client.flush()
            _ = try await client.request("svc.silent", [], timeout: .milliseconds(200))
        }
        // The shared inbox outlives a timeout.
        #expect(try await client.request("svc.echo", Array("again".utf8)).text == "echo: again")
        try await client.drain()
    }

    @Test func worksAgainstARealNATSServer() async throws {
        let server = try await NATSServerProcess()
        try await exercise(server.url)
    }

    @Test func worksAgainstTheHubsNATSPort() async throws {
        try await withHub { hub in
            try await exercise("nats://127.0.0.1:\(hub.natsPort)")
        }
    }

    @Test func autoUnsubscribeCountsSurviveAndQueueGroupsResumeAfterARestart() async throws {
        let server = try await NATSServerProcess()
        var options = NATSClient.Options(servers: ["nats://127.0.0.1:1", server.url])  // the first is refused: the pool moves on
        options.reconnect.baseDelay = .milliseconds(20)
        options.reconnect.maximumDelay = .milliseconds(200)
        let first = try await NATSClient.connect(options: options)
        let second = try await NATSClient.connect(options: options)
        let publisher = try await NATSClient.connect(options: options)
        let memberA = try first.subscribe("jobs", queue: "workers")
        let memberB = try second.subscribe("jobs", queue: "workers")
        let limited = try first.subscribe("limited")
        try limited.unsubscribe(after: 3)
        for client in [first, second] { try await client.flush() }
        try publisher.publish("limited", "1")
        try await publisher.flush()
        var limitedIterator = limited.makeAsyncIterator()
        #expect(await limitedIterator.next()?.text == "1")

        try await server.restart()
        try await eventually { [first, second, publisher].allSatisfy { $0.reconnectCount >= 1 && $0.isConnected } }
        for client in [first, second] { try await client.flush() }

        for n in 0..<20 { try publisher.publish("jobs", "job \(n)") }
        for n in 2...5 { try publisher.publish("limited", "\(n)") }
        try await publisher.flush()
        let received = Collected()
        let readers = [memberA, memberB].map { member in
            Task {
                for await job in member { received.append(job.text) }
            }
        }
        try await eventually { received.items.count == 20 }
        #expect(Set(received.items).count == 20, "each job to one member of the group")
        // Two of three were left after the restart: the subscription ends after them.
        let second2 = await limitedIterator.next()
        #expect(second2?.text == "2")
        #expect(await limitedIterator.next()?.text == "3")
        #expect(await limitedIterator.next() == nil)
        for reader in readers { reader.cancel() }
        for client in [first, second, publisher] { await client.close() }
    }

    @Test func publicationsWaitWhileReconnectingUpToABound() async throws {
        let server = try await NATSServerProcess()
        var options = NATSClient.Options(servers: [server.url])
        options.reconnect.baseDelay = .milliseconds(100)
        options.reconnect.bufferBytes = 1024
        let client = try await NATSClient.connect(options: options)
        let subscription = try client.subscribe("buffered")
        try await client.flush()
        server.stop()
        try await eventually { !client.isConnected }
        try client.publish("buffered", "kept")
        #expect(throws: NATSClientError.reconnectBufferFull) { try client.publish("buffered", [UInt8](repeating: 0, count: 2048)) }
        try await server.restart()
        var iterator = subscription.makeAsyncIterator()
        #expect(await iterator.next()?.text == "kept")
        await client.close()
    }

    @Test func aClientThatCannotConnectSaysWhy() async throws {
        await #expect(throws: NATSClientError.self) { _ = try await NATSClient.connect(to: "nats://127.0.0.1:1") }
        try await withHub({
            $0.guest = false;
            $0.users = [.init(identity: "alice@relay.local", password: try PasswordHash.make(password: "pw", rounds: 1000).description)]
        }) { hub in
            do {
                _ = try await NATSClient.connect(to: "nats://127.0.0.1:\(hub.natsPort)")
                Issue.record("connected without credentials")
            } catch let error as NATSClientError {
                #expect(error.description.contains("Authorization Violation"))
            }
            let alice = try await NATSClient.connect(to: "nats://alice:pw@127.0.0.1:\(hub.natsPort)")
            try await alice.flush()
            await alice.close()
        }
    }
}
