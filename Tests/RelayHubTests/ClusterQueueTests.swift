import Foundation
import RelayClient
import RelayCore
import RelayHub
import Testing

/// Durable queues of clustered hubs, on a three-server JetStream cluster: one stream per queue,
/// consumers on every hub competing for it.
@Suite(.serialized, .timeLimit(.minutes(2))) struct ClusterQueueTests {
    static let orders = QueueConfiguration(
        name: "orders", subjects: ["orders.>"], ackWaitMilliseconds: 30_000, maximumDeliveries: 2, deadLetterSubject: "dead.orders")

    /// Two hubs on a JetStream cluster, both configured with the `orders` queue (and `extra`).
    static func withQueueHubs(
        _ extra: [QueueConfiguration] = [], _ body: (NATSCluster, [TestHub]) async throws -> Void
    ) async throws {
        let cluster = try await NATSCluster.start(jetStream: true)
        defer { cluster.stop() }
        func nest(_ index: Int, _ hubs: [TestHub]) async throws {
            guard index < 2 else { return try await body(cluster, hubs) }
            try await withHub({ configuration in
                configuration.cluster = .init(servers: [cluster.urls[index]])
                configuration.cluster?.queueStatusIntervalMilliseconds = 200
                configuration.queues = try ([Self.orders] + extra).map(Self.settings)
            }) { hub in try await nest(index + 1, hubs + [hub]) }
        }
        try await nest(0, [])
    }

    /// The configuration file's form of a queue.
    static func settings(_ queue: QueueConfiguration) throws -> HubConfiguration.QueueSettings {
        try JSONDecoder().decode(HubConfiguration.QueueSettings.self, from: Data(JSONWriter.bytes(.object(queue.json))))
    }

    /// Until JetStream has the stream and its consumer (the cluster elects its leaders first).
    static func ready(_ hub: TestHub, _ client: LIMEClient) async throws {
        try await eventually(within: 30) {
            (try? await client.queueInfo("orders"))?["jetStream"]?["ready"] == true
        }
    }

    @Test func aPublicationConfirmedThroughOneHubIsConsumedThroughAnother() async throws {
        try await Self.withQueueHubs { _, hubs in
            let publisher = try await hubs[0].connect(.ws, as: "shop@relay.local/1")
            let worker = try await hubs[1].connect(.tcp, as: "worker@relay.local/1")
            try await Self.ready(hubs[0], publisher)
            try await Self.ready(hubs[1], worker)
            // Confirmed once JetStream stored it, with no consumer anywhere yet.
            _ = try await publisher.publishConfirmed("orders.new", ["id": 1])
            let consumer = try await worker.consume("orders", credit: 5)
            var deliveries = consumer.makeAsyncIterator()
            let first = try #require(await deliveries.next())
            #expect(first.publication.content == ["id": 1] && first.count == 1)
            #expect(first.publication.subject == "orders.new")
            try await first.ack()
            // Not acknowledged: delivered again (its count says so), then to the dead letters.
            let dead = try await publisher.subscribe("dead.orders")
            _ = try await publisher.publishConfirmed("orders.new", ["id": 2])
            let second = try #require(await deliveries.next())
            try await second.nak()
            let again = try #require(await deliveries.next())
            #expect(again.publication.content == ["id": 2] && again.count == 2)
            try await again.nak()
            var deadLetters = dead.makeAsyncIterator()
            let letter = try #require(await deadLetters.next())
            #expect(letter.content == ["id": 2] && letter.metadata["#queue"] == "orders")
            let info = try await worker.queueInfo("orders")
            #expect(info["acknowledged"] == 1 && info["deadLettered"] == 1)
        }
    }

    /// A work queue: what is acknowledged leaves the stream, and the hub shows what it holds.
    @Test func theStreamHoldsOnlyWhatIsUnansweredAndTheHubSaysHowMuch() async throws {
        try await Self.withQueueHubs { cluster, hubs in
            let publisher = try await hubs[0].connect(.ws, as: "shop@relay.local/1")
            let worker = try await hubs[1].connect(.tcp, as: "worker@relay.local/1")
            try await Self.ready(hubs[0], publisher)
            for n in 1...3 { _ = try await publisher.publishConfirmed("orders.new", ["n": .number(JSONNumber(n))]) }
            try await eventually { (try? await worker.queueInfo("orders"))?["messages"] == 3 }
            #expect((try await worker.queueInfo("orders")["bytes"]?.intValue ?? 0) > 0)
            try await eventually {
                (try? await httpGet(hubs[0], "/metrics"))?.body.contains("relay_queue_messages{queue=\"orders\"} 3") == true
            }
            // GET: what the consumer holds, once more, as the same delivery.
            var deliveries = try await worker.consume("orders", credit: 1).makeAsyncIterator()
            let first = try #require(await deliveries.next())
            #expect(try await worker.request(LIMECommand(method: .get, uri: "/queues/orders/current")).status == .success)
            let again = try #require(await deliveries.next())
            #expect(again.id == first.id && again.publication.content == first.publication.content)
            try await again.ack()
            for _ in 2...3 { try await #require(await deliveries.next()).ack() }
            try await eventually { (try? await worker.queueInfo("orders"))?["messages"] == 0 }
            // From JetStream itself: nothing is left in the stream.
            let direct = try await NATSClient.connect(to: cluster.urls[2])
            #expect(try await direct.jetStream.streamState("RELAY_Q_orders")["messages"] == 0)
            await direct.close()
        }
    }

    /// A message past the queue's time-to-live when it is pulled goes to the dead letters.
    @Test func aMessagePastItsTimeToLiveIsExpiredWhenItComesToAConsumer() async throws {
        let brief = QueueConfiguration(name: "brief", subjects: ["brief.*"], deadLetterSubject: "dead.brief", timeToLiveSeconds: 0.5)
        try await Self.withQueueHubs([brief]) { _, hubs in
            let publisher = try await hubs[0].connect(.ws, as: "shop@relay.local/1")
            let worker = try await hubs[1].connect(.tcp, as: "worker@relay.local/1")
            try await eventually(within: 30) { (try? await publisher.queueInfo("brief"))?["jetStream"]?["ready"] == true }
            try await eventually(within: 30) { (try? await worker.queueInfo("brief"))?["jetStream"]?["ready"] == true }
            let dead = try await publisher.subscribe("dead.brief")
            _ = try await publisher.publishConfirmed("brief.old", "stale")
            // The time-to-live passing is the point here, not an event to wait for.
            try await Task.sleep(for: .milliseconds(800))
            _ = try await publisher.publishConfirmed("brief.new", "fresh")
            var deliveries = try await worker.consume("brief", credit: 5).makeAsyncIterator()
            let delivery = try #require(await deliveries.next())
            #expect(delivery.publication.text == "fresh", "the stale one was not delivered")
            try await delivery.ack()
            var letters = dead.makeAsyncIterator()
            let letter = try #require(await letters.next())
            #expect(letter.text == "stale" && letter.metadata["#deadReason"] == "Expired after 0.5 s")
            #expect(letter.metadata["#originalSubject"] == "brief.old")
            #expect(try await worker.queueInfo("brief")["expired"] == 1)
        }
    }

    /// A durable billing service whose instance notes each charge it serves.
    static func billing(seen: Collected, as instance: String) -> ServiceDefinition {
        var definition = ServiceDefinition("billing", description: "Durable billing")
        definition.durable = true
        definition.method("charge") { (params: JSONValue?, _) in
            seen.append("\(instance):\(params?["amount"]?.intValue ?? -1)")
            return ["charged": params?["amount"] ?? .null]
        }
        return definition
    }

    /// A durable service's requests are kept in one stream that every hub's instances share: a
    /// request its instance on hub A never answered is served by an instance on hub B, and the
    /// caller on B, LIME or NATS, gets the answer.
    @Test func aDurableServicesRequestIsServedOnAnotherHubWhenItsInstanceGoesAway() async throws {
        try await Self.withQueueHubs { _, hubs in
            let seen = Collected()
            func billing(_ instance: String, hang: Bool) -> ServiceDefinition {
                var definition = ServiceDefinition("billing", description: "Durable billing")
                definition.durable = true
                definition.method("charge") { (params: JSONValue?, _) in
                    seen.append(instance)
                    if hang { try await Task.sleep(for: .seconds(60)) }
                    return ["charged": params?["amount"] ?? .null, "by": .string(instance)]
                }
                return definition
            }
            let doomed = try await hubs[0].connect(.tcp, as: "billing@relay.local/doomed")
            _ = try await doomed.serve(billing("doomed", hang: true))
            try await eventually(within: 30) { (try? await doomed.queueInfo("svc_billing"))?["jetStream"]?["ready"] == true }
            let caller = try await hubs[1].connect(.ws, as: "shop@relay.local/1")
            let call = Task { try await caller.call("billing", "charge", ["amount": 5], verb: .set, timeout: .seconds(30)) }
            try await eventually(within: 20) { seen.items == ["doomed"] }
            let survivor = try await hubs[1].connect(.tcp, as: "billing@relay.local/survivor")
            _ = try await survivor.serve(billing("survivor", hang: false))
            try await eventually(within: 30) { (try? await survivor.queueInfo("svc_billing"))?["jetStream"]?["ready"] == true }
            await doomed.close()
            #expect(try await call.value == ["charged": 5, "by": "survivor"])
            let info = try await survivor.queueInfo("svc_billing")
            #expect(info["redelivered"] == 1 && info["acknowledged"] == 1, "\(info)")
            // A NATS caller's request is stored too, and answered on its reply subject.
            let natsCaller = try await NATSClient.connect(to: "nats://127.0.0.1:\(hubs[0].natsPort)")
            let answer = try await natsCaller.request("billing.charge", Array(#"{"amount":7}"#.utf8), timeout: .seconds(10))
            let parsed = try JSONParser.parse(Array(answer.payload))
            #expect(parsed["by"] == "survivor" && parsed["charged"] == 7, "\(answer.text)")
            try await eventually { (try? await survivor.queueInfo("svc_billing"))?["acknowledged"] == 2 }
            await natsCaller.close()
        }
    }

    /// A hub that ran alone, now clustered with JetStream: what its store kept (a queue's
    /// confirmed messages, a durable service's requests) moves into JetStream and leaves the store.
    @Test func whatAHubStoredAloneMovesIntoJetStreamWhenItJoins() async throws {
        let data = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        try await withHub({ $0.data = data }) { alone in
            let client = try await alone.connect(.tcp, as: "shop@relay.local/1")
            try await client.createQueue(QueueConfiguration(name: "parcels", subjects: ["parcels.*"]))
            for n in 1...3 { _ = try await client.publishConfirmed("parcels.new", ["n": .number(JSONNumber(n))]) }
            // A durable service's request, stored while no instance is connected.
            let instance = try await alone.connect(.tcp, as: "billing@relay.local/1")
            _ = try await instance.serve(Self.billing(seen: Collected(), as: "first"))
            await instance.close()
            let call = Task { try? await client.call("billing", "charge", ["amount": 9], timeout: .seconds(30)) }
            try await eventually { (try? await client.queueInfo("svc_billing"))?["messages"] == 1 }
            call.cancel()
        }
        let cluster = try await NATSCluster.start(jetStream: true)
        defer { cluster.stop() }
        try await withHub({
            $0.data = data
            $0.cluster = .init(servers: [cluster.urls[0]])
            $0.cluster?.queueStatusIntervalMilliseconds = 200
        }) { hub in
            let worker = try await hub.connect(.ws, as: "worker@relay.local/1")
            try await eventually(within: 30) { (try? await worker.queueInfo("parcels"))?["movedFromStore"]?["moved"] == 3 }
            var deliveries = try await worker.consume("parcels", credit: 5).makeAsyncIterator()
            var got: [Int] = []
            for _ in 1...3 {
                let delivery = try #require(await deliveries.next())
                got.append(delivery.publication.content["n"]?.intValue ?? -1)
                try await delivery.ack()
            }
            #expect(got.sorted() == [1, 2, 3])
            // The stored request reaches an instance through the service's stream.
            let seen = Collected()
            let instance = try await hub.connect(.tcp, as: "billing@relay.local/2")
            _ = try await instance.serve(Self.billing(seen: seen, as: "second"))
            try await eventually(within: 30) { seen.items == ["second:9"] }
        }
        // Alone again: the store holds neither the messages nor the queues (they are JetStream's
        // now; a queue deleted on the cluster would otherwise come back from the store).
        try await withHub({ $0.data = data }) { alone in
            let client = try await alone.connect(.tcp, as: "shop@relay.local/1")
            await #expect(throws: RelayError.self) { _ = try await client.queueInfo("parcels") }
            await #expect(throws: RelayError.self) { _ = try await client.queueInfo("svc_billing") }
        }
    }

    @Test func consumersOnEveryHubCompeteAndEachMessageIsDeliveredOnce() async throws {
        try await Self.withQueueHubs { _, hubs in
            let publisher = try await hubs[0].connect(.ws, as: "shop@relay.local/1")
            let near = try await hubs[0].connect(.tcp, as: "worker@relay.local/a")
            let far = try await hubs[1].connect(.tcp, as: "worker@relay.local/b")
            try await Self.ready(hubs[0], near)
            try await Self.ready(hubs[1], far)
            let seen = Collected()
            for (name, client) in [("a", near), ("b", far)] {
                let consumer = try await client.consume("orders", credit: 4)
                Task {
                    for await delivery in consumer {
                        seen.append("\(name):\(delivery.publication.content["n"]?.intValue ?? -1)")
                        try? await delivery.ack()
                    }
                }
            }
            for n in 1...40 { _ = try await publisher.publishConfirmed("orders.item", ["n": .number(JSONNumber(n))]) }
            try await eventually(within: 30) { seen.items.count >= 40 }
            let numbers = seen.items.map { $0.split(separator: ":")[1] }
            #expect(seen.items.count == 40 && Set(numbers).count == 40, "each once")
            #expect(Set(seen.items.map { $0.split(separator: ":")[0] }).count == 2, "both hubs' consumers took some")
        }
    }

    @Test func aQueueCreatedAtRunTimeOnOneHubIsServedByTheOthers() async throws {
        try await Self.withQueueHubs { cluster, hubs in
            let admin = try await hubs[0].connect(.ws, as: "admin@relay.local/1")
            try await admin.createQueue(QueueConfiguration(name: "invoices", subjects: ["invoices.*"]))
            let worker = try await hubs[1].connect(.tcp, as: "worker@relay.local/1")
            try await eventually(within: 30) { (try? await worker.queueInfo("invoices"))?["jetStream"]?["ready"] == true }
            try await eventually(within: 30) { (try? await admin.queueInfo("invoices"))?["jetStream"]?["ready"] == true }
            _ = try await admin.publishConfirmed("invoices.new", "inv-1")
            var deliveries = try await worker.consume("invoices", credit: 1).makeAsyncIterator()
            let delivery = try #require(await deliveries.next())
            #expect(delivery.publication.text == "inv-1")
            try await delivery.ack()
            // A hub that joins later learns of it from the others (its configuration has none).
            try await withHub({ $0.cluster = .init(servers: [cluster.urls[2]]) }) { late in
                let client = try await late.connect(.ws, as: "late@relay.local/1")
                try await eventually(within: 30) { (try? await client.queueInfo("invoices"))?["jetStream"]?["ready"] == true }
            }
            try await admin.deleteQueue("invoices")
            try await eventually { (try? await worker.queueInfo("invoices")) == nil }
        }
    }

    /// Unanswered at its last delivery: JetStream's advisory turns into the dead letter.
    @Test func aMessageNeverAnsweredGoesToTheDeadLettersAfterItsLastDelivery() async throws {
        try await Self.withQueueHubs { _, hubs in
            let admin = try await hubs[0].connect(.ws, as: "admin@relay.local/1")
            try await admin.createQueue(
                QueueConfiguration(
                    name: "slow", subjects: ["slow.*"], ackWaitMilliseconds: 1_000, maximumDeliveries: 2, deadLetterSubject: "dead.slow"))
            let worker = try await hubs[1].connect(.tcp, as: "worker@relay.local/1")
            try await eventually(within: 30) { (try? await worker.queueInfo("slow"))?["jetStream"]?["ready"] == true }
            try await eventually(within: 30) { (try? await admin.queueInfo("slow"))?["jetStream"]?["ready"] == true }
            let dead = try await admin.subscribe("dead.slow")
            _ = try await admin.publishConfirmed("slow.job", "never answered")
            var deliveries = try await worker.consume("slow", credit: 1).makeAsyncIterator()
            #expect(await deliveries.next()?.count == 1)
            #expect(await deliveries.next()?.count == 2, "delivered again after the ack wait")
            var letters = dead.makeAsyncIterator()
            let letter = try #require(await letters.next())
            #expect(letter.text == "never answered" && letter.metadata["#queue"] == "slow")
            #expect(letter.metadata["#originalSubject"] == "slow.job" && letter.metadata["#deliveries"] == "2")
            // JetStream keeps a message it gave up on: the hub deleted it from the stream.
            try await eventually { (try? await admin.queueInfo("slow"))?["messages"] == 0 }
        }
    }

    /// Hub A confirms and goes away; hub B's consumer gets what A confirmed, and what A's own
    /// consumer held unanswered comes again, on B.
    @Test func whatAHubConfirmedIsConsumedThroughAnotherAfterItIsGone() async throws {
        let cluster = try await NATSCluster.start(jetStream: true)
        defer { cluster.stop() }
        let config = temporaryDataDirectory() + ".json"
        defer { try? FileManager.default.removeItem(atPath: config) }
        let queue: JSONObject = [
            "name": "orders", "subjects": ["orders.>"], "ackWaitMilliseconds": 2_000, "maxDeliveries": 5,
        ]
        try Data(JSONWriter.bytes(.object(["queues": .array([.object(queue)])]))).write(to: URL(fileURLWithPath: config))
        let a = try await RelayHubProcess(arguments: ["--cluster", cluster.urls[0], "--config", config])
        let b = try await RelayHubProcess(arguments: ["--cluster", cluster.urls[1], "--config", config])
        var options = LIMEClient.Options(identity: Identity("shop@relay.local")!, instance: "1")
        options.reconnect = .never
        let publisher = try await LIMEClient.connect(to: a.tcp, options: options)
        try await eventually(within: 30) { (try? await publisher.queueInfo("orders"))?["jetStream"]?["ready"] == true }
        for n in 1...5 { _ = try await publisher.publishConfirmed("orders.new", ["n": .number(JSONNumber(n))]) }
        // A consumer on A takes one and never answers: A is killed holding it.
        options.identity = Identity("worker@relay.local")!
        let holder = try await LIMEClient.connect(to: a.tcp, options: options)
        let holding = try await holder.consume("orders", credit: 1)
        let taken: QueueDelivery
        do {
            taken = try await firstElement(holding, within: 20)
        } catch {
            Issue.record("hub A delivered nothing: \(String(describing: try? await holder.queueInfo("orders")))")
            throw error
        }
        a.stop(.kill)
        let worker = try await LIMEClient.connect(to: b.tcp, options: options)
        try await eventually(within: 30) { (try? await worker.queueInfo("orders"))?["jetStream"]?["ready"] == true }
        var deliveries = try await worker.consume("orders", credit: 10).makeAsyncIterator()
        var got: [Int] = []
        while got.count < 5, let delivery = await deliveries.next() {
            got.append(delivery.publication.content["n"]?.intValue ?? -1)
            try await delivery.ack()
        }
        #expect(Set(got) == Set(1...5), "every confirmed one, the one A's consumer held included (after its ack wait)")
        #expect(got.contains(taken.publication.content["n"]?.intValue ?? 0))
        await worker.close()
        b.stop(.terminate)
    }

    /// The server hub A is on is killed in the middle of a stream of confirmed publications
    /// through A: every publication A confirmed is consumed through hub B.
    @Test func aServerKilledUnderConfirmedPublicationsLosesNothingConfirmed() async throws {
        try await Self.withQueueHubs { cluster, hubs in
            let publisher = try await hubs[0].connect(.tcp, as: "shop@relay.local/1")
            try await Self.ready(hubs[0], publisher)
            var confirmed: Set<Int> = []
            var unconfirmed = 0
            for n in 1...100 {
                if n == 40 { cluster.nodes[0].stop() }
                // A publication not confirmed (the hub moving to another server, the stream's
                // leader moving) is sent again, as a producer would, until it is.
                try await eventually(within: 30) {
                    do {
                        _ = try await publisher.publishConfirmed("orders.n", ["n": .number(JSONNumber(n))], timeout: .seconds(3))
                        confirmed.insert(n)
                        return true
                    } catch {
                        unconfirmed += 1
                        return false
                    }
                }
            }
            #expect(confirmed.count == 100, "the hub went on confirming on another server (\(unconfirmed) attempts not confirmed)")
            let worker = try await hubs[1].connect(.ws, as: "worker@relay.local/1")
            try await Self.ready(hubs[1], worker)
            let seen = Collected()
            let consumer = try await worker.consume("orders", credit: 20)
            Task {
                for await delivery in consumer {
                    seen.append(String(delivery.publication.content["n"]?.intValue ?? -1))
                    try? await delivery.ack()
                }
            }
            try await eventually(within: 60) { confirmed.map(String.init).allSatisfy(Set(seen.items).contains) }
        }
    }
}
