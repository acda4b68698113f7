import Foundation
import RelayClient
import RelayCore
import RelayHub
import RelayTransport
import Testing

@Suite(.timeLimit(.minutes(1))) struct QueueTests {
    @Test func confirmedPublicationsAreConsumedAndAcknowledged() async throws {
        try await withHub { hub in
            let client = try await hub.connect(.tcp, as: "worker@relay.local")
            try await client.createQueue(QueueConfiguration(name: "orders", subjects: ["orders.>"]))
            for n in 1...5 { #expect(try await client.publishConfirmed("orders.new", .number(JSONNumber(n))) == 1) }
            let consumer = try await client.consume("orders", credit: 2)
            var seen: [JSONValue] = []
            for await delivery in consumer {
                seen.append(delivery.publication.content)
                #expect(delivery.count == 1 && delivery.publication.subject == "orders.new")
                try await delivery.ack()
                if seen.count == 5 { break }
            }
            #expect(seen == [1, 2, 3, 4, 5])
            try await eventually { (try? await client.queueInfo("orders"))?["messages"] == 0 }
            let info = try await client.queueInfo("orders")
            #expect(info["acknowledged"] == 5 && info["redelivered"] == 0)
        }
    }

    @Test func aDisconnectingConsumersMessageGoesToAnotherAtOnce() async throws {
        try await withHub { hub in
            let publisher = try await hub.connect(.ws, as: "pub@relay.local")
            try await publisher.createQueue(QueueConfiguration(name: "jobs", subjects: ["jobs"], ackWaitMilliseconds: 60_000))
            let first = try await hub.connect(.tcp, as: "first@relay.local")
            let firstConsumer = try await first.consume("jobs")
            try await publisher.publishConfirmed("jobs", "the job")
            var firstIterator = firstConsumer.makeAsyncIterator()
            #expect(await firstIterator.next()?.publication.text == "the job")
            let second = try await hub.connect(.tcp, as: "second@relay.local")
            let secondConsumer = try await second.consume("jobs")
            await first.close()  // without answering
            var secondIterator = secondConsumer.makeAsyncIterator()
            let again = await secondIterator.next()
            #expect(again?.publication.text == "the job" && again?.count == 2)
            try await again?.ack()
        }
    }

    @Test func unansweredMessagesGoToTheDeadLettersAfterTheMaximumDeliveries() async throws {
        try await withHub { hub in
            let client = try await hub.connect(.tcp, as: "c@relay.local")
            try await client.createQueue(
                QueueConfiguration(
                    name: "fragile", subjects: ["fragile"], ackWaitMilliseconds: 300, maximumDeliveries: 2,
                    deadLetterSubject: "dead.fragile"))
            let dead = try await client.subscribe("dead.>")
            let consumer = try await client.consume("fragile")
            try await client.publishConfirmed("fragile", "poison")
            var iterator = consumer.makeAsyncIterator()
            let first = await iterator.next()
            let second = await iterator.next()  // after the ack wait, unanswered
            #expect(
                first?.count == 1 && second?.count == 2,
                "deliveries \(String(describing: first?.count)), \(String(describing: second?.count))")
            #expect(first?.publication.text == "poison" && second?.publication.text == "poison")
            var deadIterator = dead.makeAsyncIterator()
            let letter = await deadIterator.next()
            #expect(letter?.text == "poison" && letter?.metadata["#deadReason"]?.contains("2 times") == true)
            #expect(letter?.metadata["#originalSubject"] == "fragile")
        }
    }

    @Test func nakRedeliversAndTermSendsToTheDeadLetters() async throws {
        try await withHub { hub in
            let client = try await hub.connect(.ws, as: "c@relay.local")
            try await client.createQueue(QueueConfiguration(name: "q", subjects: ["q"], deadLetterSubject: "dead.q"))
            let dead = try await client.subscribe("dead.q")
            let consumer = try await client.consume("q")
            try await client.publishConfirmed("q", "again please")
            var iterator = consumer.makeAsyncIterator()
            try await iterator.next()?.nak(delay: .milliseconds(50))
            let second = await iterator.next()
            #expect(second?.count == 2)
            try await second?.term(reason: "cannot handle")
            var deadIterator = dead.makeAsyncIterator()
            #expect(await deadIterator.next()?.metadata["#deadReason"] == "cannot handle")
        }
    }

    @Test func queuesAndTheirMessagesSurviveARestart() async throws {
        let data = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        try await withHub({ $0.data = data }) { hub in
            let client = try await hub.connect(.tcp, as: "c@relay.local")
            try await client.createQueue(QueueConfiguration(name: "kept", subjects: ["kept.*"], maximumDeliveries: 5))
            for n in 1...3 { try await client.publishConfirmed("kept.x", .string("m\(n)")) }
            let consumer = try await client.consume("kept")
            var iterator = consumer.makeAsyncIterator()
            try await iterator.next()?.ack()
            _ = await iterator.next()  // delivered, not answered: it counts one delivery
            try await eventually { (try? await client.queueInfo("kept"))?["acknowledged"] == 1 }
        }
        try await withHub({ $0.data = data }) { hub in
            let client = try await hub.connect(.tcp, as: "c@relay.local")
            let info = try await client.queueInfo("kept")
            #expect(info["messages"] == 2 && info["maxDeliveries"] == 5)
            let consumer = try await client.consume("kept", credit: nil)
            var iterator = consumer.makeAsyncIterator()
            let first = await iterator.next()
            #expect(first?.publication.text == "m2" && first?.count == 2)
            #expect(await iterator.next()?.publication.text == "m3")
        }
    }

    @Test func getSendsTheCurrentDeliveryAgain() async throws {
        try await withHub { hub in
            let client = try await hub.connect(.tcp, as: "c@relay.local")
            try await client.createQueue(QueueConfiguration(name: "g", subjects: ["g"]))
            let consumer = try await client.consume("g")
            try await client.publishConfirmed("g", "once")
            var iterator = consumer.makeAsyncIterator()
            let first = await iterator.next()
            #expect(try await client.request(LIMECommand(method: .get, uri: "/queues/g/current")).status == .success)
            let again = await iterator.next()
            #expect(again?.id == first?.id && again?.publication.text == "once")
        }
    }
}

@Suite(.timeLimit(.minutes(1))) struct QueueRetentionTests {
    @Test func anExpiredMessageGoesToTheDeadLetters() async throws {
        try await withHub { hub in
            let client = try await hub.connect(.tcp, as: "c@relay.local")
            try await client.createQueue(
                QueueConfiguration(name: "brief", subjects: ["brief"], deadLetterSubject: "dead.brief", timeToLiveSeconds: 0.2))
            let dead = try await client.subscribe("dead.brief")
            try await client.publishConfirmed("brief", "short-lived")
            var iterator = dead.makeAsyncIterator()
            let letter = await iterator.next()
            #expect(letter?.text == "short-lived" && letter?.metadata["#deadReason"]?.hasPrefix("Expired") == true)
            try await eventually { (try? await client.queueInfo("brief"))?["expired"] == 1 }
            #expect(try await client.queueInfo("brief")["messages"] == 0)
        }
    }
}
