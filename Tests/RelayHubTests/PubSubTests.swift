import RelayClient
import RelayCore
import Testing

@Suite(.timeLimit(.minutes(1))) struct PubSubTests {
    @Test func wildcardsAcrossWebSocketAndTCP() async throws {
        try await withHub { hub in
            let publisher = try await hub.connect(.tcp, as: "pub@relay.local")
            let star = try await hub.connect(.ws, as: "star@relay.local")
            let rest = try await hub.connect(.tcp, as: "rest@relay.local")
            let starSubscription = try await star.subscribe("orders.*")
            let restSubscription = try await rest.subscribe("orders.>")
            try await publisher.publish("orders.eu.created", ["id": 1])
            try await publisher.publish("orders.created", ["id": 2], metadata: ["traceId": "t-2"])
            var restIterator = restSubscription.makeAsyncIterator()
            let first = await restIterator.next()
            #expect(first?.subject == "orders.eu.created" && first?.content == ["id": 1])
            #expect(await restIterator.next()?.content == ["id": 2])
            var starIterator = starSubscription.makeAsyncIterator()
            let only = await starIterator.next()
            #expect(only?.subject == "orders.created")
            #expect(only?.publisher == publisher.localNode)
            #expect(only?.type == .applicationJSON)
            #expect(only?.metadata == ["traceId": "t-2"])
        }
    }

    /// Plain publications are forwarded from the bytes they arrived in; those with metadata, or
    /// with a NATS subscriber, go the usual way. Mixed in one stream, over either transport, they
    /// all arrive whole, in order, with their type, publisher and metadata.
    @Test(arguments: Transport.allCases)
    func forwardedAndDecodedPublicationsArriveWholeAndInOrder(_ transport: Transport) async throws {
        try await withHub { hub in
            let publisher = try await hub.connect(transport, as: "pub@relay.local")
            let subscriber = try await hub.connect(.ws, as: "sub@relay.local")
            let subscription = try await subscriber.subscribe("feed.*")
            let nats = try await NATSClient.connect(to: "nats://127.0.0.1:\(hub.natsPort)")
            defer { Task { await nats.close() } }
            let natsSubscription = try nats.subscribe("feed.nats")
            try await nats.flush()
            func publication(_ n: Int) -> (subject: String, content: JSONValue, metadata: [String: String]) {
                switch n % 4 {
                case 0: ("feed.a", .string("text \(n) \"quoted\" é"), [:])
                case 1: ("feed.b", ["n": .number(JSONNumber(n)), "list": [true, .null]], [:])
                case 2: ("feed.a", .string("\(n)"), ["n": "\(n)"])
                default: ("feed.nats", .string("\(n)"), [:])
                }
            }
            let count = 400
            for n in 0..<count {
                let (subject, content, metadata) = publication(n)
                try await publisher.publish(subject, content, metadata: metadata)
            }
            var iterator = subscription.makeAsyncIterator()
            for n in 0..<count {
                let expected = publication(n)
                let received = await iterator.next()
                #expect(received?.subject == expected.subject, "publication \(n)")
                #expect(received?.content == expected.content, "publication \(n)")
                #expect(received?.metadata == expected.metadata, "publication \(n)")
                #expect(received?.publisher == publisher.localNode)
                #expect(received?.type == (expected.content.stringValue == nil ? .applicationJSON : .textPlain))
            }
            var natsIterator = natsSubscription.makeAsyncIterator()
            for n in stride(from: 3, to: count, by: 4) { #expect(await natsIterator.next()?.text == "\(n)") }
        }
    }

    @Test func aQueueGroupSharesTheWorkAcrossTransports() async throws {
        try await withHub { hub in
            let publisher = try await hub.connect(.ws, as: "pub@relay.local")
            var workers: [SubjectSubscription] = []
            for (index, transport) in [Transport.ws, .tcp, .tcp].enumerated() {
                let client = try await hub.connect(transport, as: "worker\(index)@relay.local")
                workers.append(try await client.subscribe("jobs.*", queue: "workers"))
            }
            var delivered = 0
            for n in 0..<30 { delivered += try await publisher.publishConfirmed("jobs.\(n)", .string("job \(n)")) }
            #expect(delivered == 30)
            var seen: [String] = []
            for worker in workers {
                var iterator = worker.makeAsyncIterator()
                for _ in 0..<10 { seen.append(await iterator.next()?.text ?? "-") }
            }
            #expect(Set(seen).count == 30, "each job once, ten per worker")
        }
    }

    @Test func confirmedPublishCountsDeliveriesAndPublishersDoNotHearThemselves() async throws {
        try await withHub { hub in
            let client = try await hub.connect(.tcp, as: "solo@relay.local")
            _ = try await client.subscribe("news")
            #expect(try await client.publishConfirmed("news", "hello") == 0)
            let echoing = try await client.subscribe("news.>", echo: true)
            #expect(try await client.publishConfirmed("news.today", "hello") == 1)
            var iterator = echoing.makeAsyncIterator()
            #expect(await iterator.next()?.text == "hello")
        }
    }

    @Test func eventsWithTargetsReachOnlyThoseNodes() async throws {
        try await withHub { hub in
            let publisher = try await hub.connect(.ws, as: "pub@relay.local")
            let chosen = try await hub.connect(.tcp, as: "chosen@relay.local")
            let other = try await hub.connect(.tcp, as: "other@relay.local")
            let chosenSubscription = try await chosen.subscribe("events.>")
            _ = try await other.subscribe("events.>")
            #expect(try await publisher.publishConfirmed("events.x", "for you", targets: [Node("chosen@relay.local")!]) == 1)
            var iterator = chosenSubscription.makeAsyncIterator()
            #expect(await iterator.next()?.text == "for you")
        }
    }

    @Test func leavingTheLoopUnsubscribes() async throws {
        try await withHub { hub in
            let publisher = try await hub.connect(.tcp, as: "pub@relay.local")
            let subscriber = try await hub.connect(.ws, as: "sub@relay.local")
            let subscription = try await subscriber.subscribe("ticks")
            #expect(try await publisher.publishConfirmed("ticks", "1") == 1)
            for await tick in subscription {
                #expect(tick.text == "1")
                break
            }
            // The unsubscribe travels asynchronously; wait for the hub to stop delivering.
            var delivered = 1
            for _ in 0..<200 where delivered > 0 {
                delivered = try await publisher.publishConfirmed("ticks", "again")
                if delivered > 0 { try await Task.sleep(for: .milliseconds(10)) }
            }
            #expect(delivered == 0)
        }
    }

    @Test func aSlowSubscriberDropsAsItsPolicySaysAndCountsIt() async throws {
        try await withHub { hub in
            let publisher = try await hub.connect(.tcp, as: "pub@relay.local")
            let subscriber = try await hub.connect(.tcp, as: "slow@relay.local")
            let newest = try await subscriber.subscribe("flood", bufferSize: 5, policy: .dropOldest)
            let oldest = try await subscriber.subscribe("flood", queue: "solo", bufferSize: 5, policy: .dropNewest)
            for n in 1...20 { try await publisher.publish("flood", .number(JSONNumber(n))) }
            _ = try await publisher.publishConfirmed("flood", 21)
            // Both subscriptions have seen all 21 once a ping round trip to the subscriber is done.
            _ = try await subscriber.ping()
            #expect(newest.droppedCount == 16 && oldest.droppedCount == 16)
            var iterator = newest.makeAsyncIterator()
            #expect(await iterator.next()?.content == 17)
            var oldestIterator = oldest.makeAsyncIterator()
            #expect(await oldestIterator.next()?.content == 1)
        }
    }

    @Test func invalidSubjectsAreRefusedAndTheSessionCarriesOn() async throws {
        try await withHub { hub in
            let client = try await hub.connect(.ws, as: "x@relay.local")
            await #expect(throws: RelayError.self) { _ = try await client.subscribe("orders..new") }
            await #expect(throws: RelayError.self) { _ = try await client.publishConfirmed("orders.*", "x") }
            #expect(try await client.ping().status == .success)
        }
    }
}

@Suite(.timeLimit(.minutes(1))) struct OverflowTests {
    /// A subscriber whose connection stops reading: the hub holds at most `pending` deliveries for
    /// it, drops by the policy, counts, and reports the drops when the subscriber catches up.
    @Test(arguments: [OverflowPolicy.dropOldest, .dropNewest])
    func aLaggingSubscriberLosesOnlyWhatItsPolicySays(_ policy: OverflowPolicy) async throws {
        try await withHub { hub in
            let raw = try await RawConnection.connect(hub.tcp)
            _ = try await raw.establish(as: "slow@relay.local")
            var received = raw.received.makeAsyncIterator()
            try await raw.send(#"{"id":"s1","method":"subscribe","uri":"/topics/flood?pending=5&overflow=\#(policy.rawValue)"}"#)
            guard case .command(let subscribed)? = await received.next(), subscribed.status == .success else {
                throw TestFailure("not subscribed")
            }
            try await raw.channel.setOption(.autoRead, value: false)
            let publisher = try await hub.connect(.tcp, as: "fast@relay.local")
            let chunk = String(repeating: "z", count: 50_000)
            let total = 200
            for n in 1...total { try await publisher.publish("flood", .string("\(n) \(chunk)")) }
            _ = try await publisher.ping()
            try await eventually { hub.server.hub.statistics.droppedDeliveries > 0 }
            try await raw.channel.setOption(.autoRead, value: true)
            // The connection may have become writable for a moment while the flood was routed, so
            // drops can come in more than one report: read until every delivery is accounted for.
            var numbers: [Int] = []
            var reported = 0
            while numbers.count + reported < total {
                guard case .message(let message)? = await received.next() else { throw TestFailure("connection ended") }
                if let dropped = message.header.metadata?["#dropped"] {
                    reported += Int(dropped) ?? -1
                } else if let text = message.content.stringValue, let number = Int(text.prefix { $0 != " " }) {
                    numbers.append(number)
                }
            }
            #expect(reported == hub.server.hub.statistics.droppedDeliveries)
            #expect(numbers.count + reported == total, "every delivery is either received or reported as dropped")
            #expect(numbers == numbers.sorted(), "what is received stays in order")
            switch policy {
            case .dropOldest: #expect(numbers.last == total, "the newest survive")
            case .dropNewest: #expect(numbers.last != total, "the newest are dropped")
            case .disconnect: break
            }
            #expect(try await publisher.ping().status == .success)
        }
    }
}
