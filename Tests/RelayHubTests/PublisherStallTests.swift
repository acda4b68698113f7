import Foundation
import NIOCore
import RelayClient
import RelayCore
import Testing

/// A subscriber far behind stalls its publishers (they stop being read) instead of passing the
/// slow-consumer cap, as nats-server stalls a producer; one that does not catch up within the
/// stall's maximum is left to the cap, and the publishers go on.
@Suite(.serialized, .timeLimit(.minutes(1))) struct PublisherStallTests {
    static let payload = String(repeating: "z", count: 100_000)

    /// A raw NATS subscriber of `big` that reads nothing until told.
    static func subscriber(_ hub: TestHub) async throws -> (RawNATSConnection, AsyncStream<String>.Iterator) {
        let raw = try await RawNATSConnection.connect(port: hub.natsPort)
        var lines = raw.lines.makeAsyncIterator()
        _ = await lines.next()  // INFO
        try await raw.send("CONNECT {\"verbose\":false}\r\nSUB big 1\r\nPING\r\n")
        while let line = await lines.next(), line != "PONG" {}
        try await raw.channel.setOption(ChannelOptions.autoRead, value: false)
        return (raw, lines)
    }

    /// A hub whose sessions' cap is 1 MiB (stalls past 512 KiB), stalling at most `stall` ms.
    static func withStallingHub(stall: Int, _ body: (TestHub) async throws -> Void) async throws {
        try await withHub(
            {
                $0.limits.maxPendingBytes = 1 << 20
                $0.limits.maxPublisherStallMilliseconds = stall
            }, body)
    }

    @Test func aPublisherWaitsForASubscriberThatCatchesUp() async throws {
        try await Self.withStallingHub(stall: 60_000) { hub in
            var (raw, lines) = try await Self.subscriber(hub)
            let publisher = try await NATSClient.connect(to: "nats://127.0.0.1:\(hub.natsPort)")
            let total = 300  // 30 MB: well past what the sockets buffer and the subscriber's cap (1 MiB)
            let publishing = Task {
                for n in 1...total { try publisher.publish("big", Array("\(n) \(Self.payload)".utf8)) }
                try await publisher.flush(timeout: .seconds(50))
            }
            try await eventually { hub.server.hub.statistics.publisherStalls > 0 }
            #expect(hub.server.hub.statistics.slowConsumers == 0)
            try await raw.channel.setOption(ChannelOptions.autoRead, value: true)
            var numbers: [Int] = []
            while numbers.count < total, let line = await lines.next() {
                if line.hasPrefix("-ERR") { throw TestFailure(line) }
                if line.hasSuffix(Self.payload), let number = Int(line.prefix { $0 != " " }) { numbers.append(number) }
            }
            #expect(numbers == Array(1...total), "every publication, in order")
            try await publishing.value
            #expect(hub.server.hub.statistics.slowConsumers == 0)
            await publisher.close()
            await raw.close()
        }
    }

    @Test func aSubscriberThatDoesNotCatchUpIsLeftToTheCapAndThePublisherGoesOn() async throws {
        try await Self.withStallingHub(stall: 100) { hub in
            var (raw, _) = try await Self.subscriber(hub)
            _ = raw
            let publisher = try await NATSClient.connect(to: "nats://127.0.0.1:\(hub.natsPort)")
            for n in 1...300 { try publisher.publish("big", Array("\(n) \(Self.payload)".utf8)) }
            // The stall gave up on the subscriber, which reads nothing: it is a slow consumer, and
            // the publisher's connection is read again (its flush is answered).
            try await publisher.flush(timeout: .seconds(30))
            do {
                try await eventually { hub.server.hub.statistics.slowConsumers == 1 }
            } catch {
                Issue.record("no slow consumer: \(hub.server.hub.statistics)")
                throw error
            }
            #expect(hub.server.hub.statistics.publisherStalls >= 1)
            await publisher.close()
            await raw.close()
        }
    }
}
