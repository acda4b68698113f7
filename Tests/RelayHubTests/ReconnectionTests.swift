import Foundation
import RelayClient
import RelayCore
import Testing

@Suite struct ReconnectPolicyTests {
    @Test func waitsAreFullJitterUnderADoublingCap() {
        let policy = ReconnectPolicy(baseDelay: .milliseconds(50), maximumDelay: .seconds(2))
        #expect(policy.delayCap(after: 0) == .milliseconds(50))
        #expect(policy.delayCap(after: 1) == .milliseconds(100))
        #expect(policy.delayCap(after: 5) == .milliseconds(1600))
        #expect(policy.delayCap(after: 6) == .seconds(2))
        #expect(policy.delayCap(after: 1000) == .seconds(2), "no overflow however many failures")
        // RelayCore's seeded generator: the same sequence every run, so the bounds are checked on values, not on luck.
        var generator = TraceIdentifierGenerator(seed: 7)
        for failures in [0, 1, 3, 6, 40] {
            let delays = (0..<2000).map { _ in policy.delay(after: failures, using: &generator) }
            let cap = policy.delayCap(after: failures)
            #expect(delays.allSatisfy { $0 >= .zero && $0 <= cap })
            // Full jitter spreads over the whole interval, not around its end.
            #expect(delays.contains { $0 < cap / 4 } && delays.contains { $0 > cap * 3 / 4 })
        }
    }

    @Test func attemptsAreBoundedUnlessForever() {
        #expect(!ReconnectPolicy.never.allowsAttempt(after: 0))
        let three = ReconnectPolicy(maximumAttempts: 3)
        #expect(three.allowsAttempt(after: 2) && !three.allowsAttempt(after: 3))
        let forever = ReconnectPolicy(maximumAttempts: -1)
        #expect(forever.allowsAttempt(after: 1_000_000))
    }
}

@Suite(.timeLimit(.minutes(2))) struct ReconnectionTests {
    static func reconnecting() -> ReconnectPolicy {
        ReconnectPolicy(maximumAttempts: -1, baseDelay: .milliseconds(20), maximumDelay: .milliseconds(250))
    }

    static func client(_ url: String, _ identity: String) async throws -> LIMEClient {
        let node = Node(identity)!
        var options = LIMEClient.Options(identity: node.identity, instance: node.instance, requestTimeout: .seconds(10))
        options.reconnect = reconnecting()
        return try await LIMEClient.connect(to: url, options: options)
    }

    /// Waits for the first event that `matches`.
    static func event(
        _ events: inout AsyncStream<ConnectionEvent>.Iterator, _ matches: (ConnectionEvent) -> Bool
    ) async -> ConnectionEvent? {
        while let event = await events.next() {
            if matches(event) { return event }
        }
        return nil
    }

    @Test(arguments: [RelayHubProcess.Stop.kill, .terminate])
    func everythingSetUpComesBackAfterTheHubRestarts(_ stop: RelayHubProcess.Stop) async throws {
        let hub = try await RelayHubProcess()
        let app = try await Self.client(hub.tcp, "app@relay.local/one")
        let other = try await Self.client(hub.ws, "other@relay.local")
        var appEvents = app.events.makeAsyncIterator()

        try await app.createQueue(QueueConfiguration(name: "orders", subjects: ["orders.>"], ackWaitMilliseconds: 60_000))
        let news = try await app.subscribe("news.>", echo: true)
        let worker = try await app.subscribe("jobs", queue: "workers")
        let consumer = try await app.consume("orders", credit: 10)
        var echo = ServiceDefinition("echo")
        echo.method("say") { params, _ in params ?? .null }
        _ = try await app.serve(echo)

        var newsIterator = news.makeAsyncIterator()
        var ordersIterator = consumer.makeAsyncIterator()
        try await other.publish("news.a", "before")
        #expect(await newsIterator.next()?.text == "before")
        // Confirmed, so on disk: it survives even a kill.
        #expect(try await other.publishConfirmed("orders.new", "order 1") == 1)
        let unacknowledged = await ordersIterator.next()
        #expect(unacknowledged?.publication.text == "order 1")

        hub.stop(stop)
        var beforeLoss: [ConnectionEvent] = []
        let lost = await Self.event(&appEvents) { event in
            beforeLoss.append(event)
            if case .disconnected = event { return true } else { return false }
        }
        #expect(lost != nil)
        // A draining hub says so first (SIGTERM); a killed one cannot.
        #expect(beforeLoss.contains(.lameDuck) == (stop == .terminate), "\(beforeLoss)")
        // Held while the hub is away, sent in order once the subscription is back.
        for n in 1...3 { try await app.publish("news.held", .string("held \(n)")) }
        // The service is restored before what was held is sent: this call finds it.
        let call = Task { try await app.call("echo", "say", ["text": "again?"], retry: true) }

        try await hub.start()
        let back = await Self.event(&appEvents) { if case .reconnected = $0 { true } else { false } }
        #expect(back == .reconnected(server: hub.tcp))
        #expect(app.localNode == Node("app@relay.local/one"), "the same node as before")
        try await eventually { other.isConnected }

        for n in 1...3 { #expect(await newsIterator.next()?.text == "held \(n)") }
        try await other.publish("news.after", "after")
        #expect(await newsIterator.next()?.text == "after", "nothing twice, nothing missing")
        #expect(try await other.publishConfirmed("jobs", "job 1") == 1, "the queue group member is back")
        var workerIterator = worker.makeAsyncIterator()
        #expect(await workerIterator.next()?.text == "job 1")
        let again = await ordersIterator.next()
        #expect(again?.publication.text == "order 1", "what was not acknowledged comes again")
        try await again?.ack()
        #expect(try await call.value == ["text": "again?"], "the service serves again")
        #expect(app.reconnectCount == 1)

        try await app.finish()
        try await other.finish()
        #expect(await Self.event(&appEvents) { $0 == .closed } == .closed)
    }

    /// A hub that goes silent (frozen: its connections stay open) is noticed by the client's pings
    /// and left for the next hub of its list, where the subscription goes on.
    @Test func aSilentHubIsLeftAfterUnansweredPings() async throws {
        let frozen = try await RelayHubProcess()
        let other = try await RelayHubProcess()
        defer { frozen.resume() }
        var options = LIMEClient.Options(identity: Identity("pinger@relay.local")!, instance: "1")
        options.reconnect = ReconnectPolicy(maximumAttempts: -1, baseDelay: .milliseconds(20), shuffleServers: false)
        options.pingInterval = .milliseconds(300)
        options.connectTimeout = .seconds(1)
        let client = try await LIMEClient.connect(to: [frozen.tcp, other.tcp], options: options)
        var events = client.events.makeAsyncIterator()
        let news = try await client.subscribe("news")
        frozen.pause()
        let back = await Self.event(&events) { if case .reconnected = $0 { true } else { false } }
        #expect(back == .reconnected(server: other.tcp))
        let publisher = try await Self.client(other.tcp, "publisher@relay.local")
        try await publisher.publish("news", "after the pause")
        var iterator = news.makeAsyncIterator()
        #expect(await iterator.next()?.text == "after the pause")
        await client.close()
        await publisher.close()
    }

    @Test func aCallInFlightFailsWithDisconnectedAndTheBufferIsBounded() async throws {
        let hub = try await RelayHubProcess()
        let node = Node("small@relay.local")!
        var options = LIMEClient.Options(identity: node.identity)
        options.reconnect = Self.reconnecting()
        options.reconnect.bufferBytes = 2048
        let client = try await LIMEClient.connect(to: hub.tcp, options: options)
        let server = try await Self.client(hub.tcp, "slow@relay.local")
        let (started, start) = AsyncStream.makeStream(of: Void.self)
        var slow = ServiceDefinition("slow")
        slow.method("wait") { _, _ in
            start.yield()
            try await Task.sleep(for: .seconds(30))
            return .null
        }
        _ = try await server.serve(slow)
        var events = client.events.makeAsyncIterator()
        let call = Task { try await client.call("slow", "wait", timeout: .seconds(20)) }
        var startedIterator = started.makeAsyncIterator()
        _ = await startedIterator.next()
        hub.stop(.kill)
        await #expect(throws: LIMEClientError.disconnected) { try await call.value }
        _ = await Self.event(&events) { if case .disconnected = $0 { true } else { false } }
        let big = JSONValue.string(String(repeating: "x", count: 1500))
        try await client.publish("held", big)
        await #expect(throws: LIMEClientError.reconnectBufferFull) { try await client.publish("held", big) }
        await client.close()
        await server.close()
    }

    @Test func theNATSClientReportsTheSameEvents() async throws {
        let hub = try await RelayHubProcess()
        var options = NATSClient.Options(servers: [hub.nats])
        options.reconnect = Self.reconnecting()
        let client = try await NATSClient.connect(options: options)
        var events = client.events.makeAsyncIterator()
        hub.stop(.kill)
        #expect(await Self.event(&events) { if case .disconnected = $0 { true } else { false } } != nil)
        try await hub.start()
        #expect(await Self.event(&events) { if case .reconnected = $0 { true } else { false } } != nil)
        await client.close()
        #expect(await Self.event(&events) { $0 == .closed } == .closed)
    }

    @Test func aServerThatNeverAnswersTimesTheSessionOut() async throws {
        // A socket that listens and never reads: the kernel accepts the connection, nobody speaks.
        let (descriptor, port) = try listeningSocket()
        defer { close(descriptor) }
        var options = LIMEClient.Options(identity: Identity("patient@relay.local"), connectTimeout: .milliseconds(300))
        options.reconnect = Self.reconnecting()
        // Without the deadline the wait would never end (the suite's time limit would say so).
        await #expect(throws: LIMEClientError.timedOut("establishing the session")) {
            _ = try await LIMEClient.connect(to: "tcp://127.0.0.1:\(port)", options: options)
        }
    }

    @Test func aFlushTheServerNeverAnswersTimesOutEachTime() async throws {
        // A server that completes the handshake, then answers nothing: INFO, and PONG to the
        // CONNECT's PING only.
        let (descriptor, port) = try listeningSocket()
        defer { close(descriptor) }
        let serving = Thread {
            let connection = accept(descriptor, nil, nil)
            guard connection >= 0 else { return }
            let info = Array(#"INFO {"server_id":"mute","max_payload":1048576,"headers":true}\#r\#n"#.utf8)
            _ = info.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, 0) }
            var buffer = [UInt8](repeating: 0, count: 4096)
            var seen = ""
            while !seen.contains("PING") {
                let count = buffer.withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
                if count <= 0 { return }
                seen += String(decoding: buffer[0..<count], as: UTF8.self)
            }
            let pong = Array("PONG\r\n".utf8)
            _ = pong.withUnsafeBytes { send(connection, $0.baseAddress, $0.count, 0) }
            while buffer.withUnsafeMutableBytes({ recv(connection, $0.baseAddress, $0.count, 0) }) > 0 {}
            close(connection)
        }
        serving.start()
        var options = NATSClient.Options(servers: ["nats://127.0.0.1:\(port)"])
        options.reconnect = .never
        let client = try await NATSClient.connect(options: options)
        await #expect(throws: LIMEClientError.timedOut("flush")) { try await client.flush(timeout: .milliseconds(200)) }
        await #expect(throws: LIMEClientError.timedOut("flush")) { try await client.flush(timeout: .milliseconds(200)) }
        await client.close()
    }
}
