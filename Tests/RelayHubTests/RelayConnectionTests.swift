import Foundation
import RelayClient
import RelayCore
import Testing

/// The same program over every URL `RelayConnection` takes: LIME over WebSocket and TCP, NATS to
/// a Relay hub, NATS to nats-server.
@Suite(.timeLimit(.minutes(1))) struct RelayConnectionTests {
    static func connect(_ url: String) async throws -> RelayConnection {
        var options = RelayConnection.Options()
        options.reconnect = .never
        options.requestTimeout = .seconds(5)
        return try await RelayConnection.connect(to: url, options: options)
    }

    /// Publish and subscribe, a queue group, a service called and failing, an acknowledged
    /// consumer (where the server has durable queues).
    static func exercise(_ url: String, durableQueues: Bool) async throws {
        let app = try await connect(url)
        let other = try await connect(url)

        let orders = try await app.subscribe("orders.>")
        var ordersIterator = orders.makeAsyncIterator()
        try await other.publish("orders.new", ["id": 7])
        try await other.publish("orders.note", "plain text")
        let first = await ordersIterator.next()
        #expect(first?.subject == "orders.new" && first?.content == ["id": 7])
        #expect(await ordersIterator.next()?.content == "plain text")

        let members = [try await app.subscribe("jobs", queue: "workers"), try await other.subscribe("jobs", queue: "workers")]
        for n in 0..<10 { try await other.publish("jobs", .string("job \(n)")) }
        let received = Collected()
        let readers = members.map { member in Task { for await job in member { received.append(job.text) } } }
        try await eventually { received.items.count == 10 }
        #expect(Set(received.items).count == 10, "each job to one member")
        for reader in readers { reader.cancel() }

        var echo = ServiceDefinition("echo")
        echo.method("say") { params, context in ["method": .string(context.method), "params": params ?? .null] }
        echo.method("fail") { _, _ in throw ServiceError(code: 77, "as asked") }
        let registration = try await app.serve(echo)
        #expect(try await other.call("echo", "say", ["x": 1]) == ["method": "say", "params": ["x": 1]])
        await #expect(throws: RelayError(Reason(code: 77, description: "as asked"))) { try await other.call("echo", "fail") }
        try await registration.stop()
        let missing = await #expect(throws: RelayError.self) { try await other.call("echo", "say") }
        #expect(missing?.code == ReasonCode.routingDestinationNotFound)

        if durableQueues {
            let consumer = try await app.consume("orders-queue", credit: 5)
            var deliveries = consumer.makeAsyncIterator()
            try await other.publish("queued.order", "order 1")
            let delivery = await deliveries.next()
            #expect(delivery?.publication.text == "order 1")
            try await delivery?.nak()
            let again = await deliveries.next()
            #expect(again?.publication.text == "order 1", "a nak delivers it again")
            try await again?.ack()
            try await consumer.stop()
        } else {
            let refusal = await #expect(throws: LIMEClientError.self) { try await app.consume("orders-queue") }
            guard case .unsupported = refusal else { Issue.record("not an unsupported error: \(String(describing: refusal))"); return }
        }
        try await app.finish()
        try await other.finish()
    }

    @Test(arguments: ["ws", "tcp", "nats"]) func theSameProgramRunsOverEachDialectOfAHub(_ scheme: String) async throws {
        try await withHub { hub in
            let admin = try await hub.connect(.tcp, as: "admin@relay.local")
            try await admin.createQueue(QueueConfiguration(name: "orders-queue", subjects: ["queued.>"]))
            let url =
                switch scheme {
                case "ws": hub.ws
                case "tcp": hub.tcp
                default: "nats://127.0.0.1:\(hub.natsPort)"
                }
            try await Self.exercise(url, durableQueues: true)
        }
    }

    @Test func theSameProgramRunsAgainstNATSServer() async throws {
        let server = try await NATSServerProcess()
        try await Self.exercise(server.url, durableQueues: false)
    }

    @Test func aRequestOnASubjectOverNATSReachesAService() async throws {
        try await withHub { hub in
            let lime = try await Self.connect(hub.tcp)
            var clock = ServiceDefinition("clock")
            clock.method("now") { _, _ in ["time": "noon"] }
            _ = try await lime.serve(clock)
            let nats = try await Self.connect("nats://127.0.0.1:\(hub.natsPort)")
            #expect(try await nats.request("clock.now", [:]) == ["time": "noon"])
            #expect(nats.dialect == .nats && lime.dialect == .lime)
            await nats.close()
            await lime.close()
        }
    }
}
