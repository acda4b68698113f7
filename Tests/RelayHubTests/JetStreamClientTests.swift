import Foundation
import RelayClient
import RelayCore
import Testing

/// Relay's NATS client speaking JetStream to a real nats-server (`-js`, its store in a temporary
/// directory).
@Suite(.timeLimit(.minutes(1))) struct JetStreamClientTests {
    static func withJetStream(_ body: (NATSClient, NATSServerProcess) async throws -> Void) async throws {
        let store = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: store) }
        let server = try await NATSServerProcess(arguments: ["-js", "-sd", store])
        let client = try await NATSClient.connect(to: server.url)
        do {
            try await body(client, server)
            await client.close()
        } catch {
            await client.close()
            throw error
        }
    }

    @Test func aPublicationIsAcknowledgedOnceStoredAndARepeatIsKnown() async throws {
        try await Self.withJetStream { client, _ in
            let jetStream = client.jetStream
            try await jetStream.createStream(.init(name: "ORDERS", subjects: ["orders.>"]))
            // Creating it again alike is no error.
            try await jetStream.createStream(.init(name: "ORDERS", subjects: ["orders.>"]))
            let first = try await jetStream.publish("orders.new", Array("one".utf8), messageID: "m1")
            #expect(first == .init(stream: "ORDERS", sequence: 1, duplicate: false))
            let again = try await jetStream.publish("orders.new", Array("one".utf8), messageID: "m1")
            #expect(again.duplicate && again.sequence == 1)
            #expect(try await jetStream.streamState("ORDERS")["messages"] == 1)
            await #expect(throws: JetStreamError.self) { _ = try await jetStream.publish("elsewhere", []) }
            do {
                try await jetStream.createStream(.init(name: "OTHER", subjects: ["orders.>"]))
                Issue.record("two streams took the same subjects")
            } catch let error as JetStreamError {
                #expect(error.code == 400, "\(error)")
            }
            let stored = try await jetStream.storedMessage(stream: "ORDERS", sequence: 1)
            #expect(stored.subject == "orders.new" && stored.text == "one" && stored.headers?["Nats-Msg-Id"] == "m1")
        }
    }

    @Test func aDurableConsumerDeliversAgainWhatIsNotAcknowledgedUpToItsLimit() async throws {
        try await Self.withJetStream { client, _ in
            let jetStream = client.jetStream
            try await jetStream.createStream(.init(name: "JOBS", subjects: ["jobs"]))
            var consumer = JetStream.ConsumerConfiguration(durableName: "workers")
            consumer.maximumDeliveries = 2
            consumer.ackWait = .seconds(30)
            try await jetStream.createConsumer(stream: "JOBS", consumer)
            for n in 1...3 { _ = try await jetStream.publish("jobs", Array("job \(n)".utf8)) }
            let batch = try await jetStream.fetch(stream: "JOBS", consumer: "workers", batch: 3)
            #expect(batch.map(\.message.text) == ["job 1", "job 2", "job 3"])
            #expect(batch.map(\.deliveries) == [1, 1, 1] && batch.map(\.streamSequence) == [1, 2, 3])
            try batch[0].ack()
            try batch[1].nak()
            try batch[2].term()
            // Only the nak'd one comes again, delivered a second time.
            let again = try await jetStream.fetch(stream: "JOBS", consumer: "workers", batch: 3, wait: .milliseconds(500))
            #expect(again.map(\.message.text) == ["job 2"] && again.first?.deliveries == 2)
            try again[0].nak()
            // Its second delivery was its last: nothing more.
            let after = try await jetStream.fetch(stream: "JOBS", consumer: "workers", batch: 3, wait: .milliseconds(500))
            #expect(after.isEmpty)
        }
    }

    @Test func aNakWithADelayWaitsAndInProgressKeepsADeliveryOut() async throws {
        try await Self.withJetStream { client, _ in
            let jetStream = client.jetStream
            try await jetStream.createStream(.init(name: "SLOW", subjects: ["slow"]))
            var consumer = JetStream.ConsumerConfiguration(durableName: "w")
            consumer.ackWait = .seconds(1)
            try await jetStream.createConsumer(stream: "SLOW", consumer)
            _ = try await jetStream.publish("slow", Array("a".utf8))
            let first = try await jetStream.fetch(stream: "SLOW", consumer: "w", batch: 1)
            try first[0].nak(delay: .seconds(30))
            // Within the delay it is not delivered again.
            #expect(try await jetStream.fetch(stream: "SLOW", consumer: "w", batch: 1, wait: .milliseconds(300)).isEmpty)
            _ = try await jetStream.publish("slow", Array("b".utf8))
            let second = try await jetStream.fetch(stream: "SLOW", consumer: "w", batch: 1)
            #expect(second.map(\.message.text) == ["b"])
            try second[0].inProgress()
            try second[0].ack()
            #expect(try await jetStream.fetch(stream: "SLOW", consumer: "w", batch: 1, wait: .milliseconds(300)).isEmpty)
        }
    }

    @Test func withoutJetStreamTheAPISaysSo() async throws {
        let server = try await NATSServerProcess()
        let client = try await NATSClient.connect(to: server.url)
        do {
            try await client.jetStream.createStream(.init(name: "X", subjects: ["x"]))
            Issue.record("a stream on a server without JetStream")
        } catch let error as JetStreamError {
            #expect(error.code == 503, "\(error)")
        }
        await client.close()
    }

    /// A stream kept on three servers (replicas 3); the server the publisher is on is killed in
    /// the middle of a stream of confirmed publications: every one JetStream confirmed is there.
    @Test(.timeLimit(.minutes(2))) func nothingConfirmedIsLostWhenAServerOfTheClusterIsKilled() async throws {
        let cluster = try await NATSCluster.start(jetStream: true)
        defer { cluster.stop() }
        var options = NATSClient.Options(servers: [cluster.urls[0]])
        options.reconnect = ReconnectPolicy(maximumAttempts: -1, baseDelay: .milliseconds(20), shuffleServers: false)
        let client = try await NATSClient.connect(options: options)
        var jetStream = client.jetStream
        jetStream.timeout = .seconds(2)
        var stream = JetStream.StreamConfiguration(name: "CONFIRMED", subjects: ["confirmed.>"])
        stream.replicas = 3
        // The cluster elects its JetStream leaders first.
        try await eventually(within: 30) { (try? await jetStream.createStream(stream)) != nil }
        var confirmed: [Int: Int] = [:]
        for number in 1...200 {
            if number == 80 { cluster.nodes[0].stop() }
            // A publication whose answer was lost is sent again under the same id: JetStream keeps it once.
            try await eventually(within: 30) {
                guard let ack = try? await jetStream.publish("confirmed.n", Array("m\(number)".utf8), messageID: "m\(number)") else {
                    return false
                }
                confirmed[number] = ack.sequence
                return true
            }
        }
        #expect(client.reconnectCount >= 1, "the publisher moved to another server")
        var consumer = JetStream.ConsumerConfiguration(durableName: "check")
        consumer.ackWait = .seconds(30)
        try await eventually(within: 30) { (try? await jetStream.createConsumer(stream: "CONFIRMED", consumer)) != nil }
        var seen: Set<String> = []
        try await eventually(within: 30) {
            let batch = (try? await jetStream.fetch(stream: "CONFIRMED", consumer: "check", batch: 100, wait: .milliseconds(500))) ?? []
            for message in batch {
                seen.insert(message.message.text)
                try? message.ack()
            }
            return seen.count >= confirmed.count
        }
        #expect(seen == Set((1...200).map { "m\($0)" }), "every confirmed publication is in the stream, once")
        await client.close()
    }
}
