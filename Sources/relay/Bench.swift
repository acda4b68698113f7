import ArgumentParser
import Foundation
import Histogram
import RelayClient
import RelayCore
import Synchronization

/// `relay bench`: end-to-end throughput and latency with Relay's own clients, against a hub over
/// LIME (ws://, tcp://) or NATS, or against a nats-server (nats://). A first step of issue 6: the
/// pub/sub and request/reply workloads; fan-out, queue groups, confirmed publish, constant rate and
/// the side-by-side script are to come.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure pub/sub or request/reply throughput and latency (p50, p90, p99, p99.9, max).")

    enum Workload: String, ExpressibleByArgument, CaseIterable {
        case pubsub, reqrep
    }

    @OptionGroup var client: ClientOptions

    @Argument(help: "pubsub (1 publisher, 1 subscriber) or reqrep (sequential requests).")
    var workload: Workload

    @Option(help: "Messages (or requests).")
    var count: Int = 10_000

    @Option(help: "Payload size in bytes.")
    var size: Int = 128

    @Flag(help: "Print a JSON summary instead of text.")
    var json = false

    func run() async throws {
        let result: (seconds: Double, latencies: Histogram<UInt64>)
        switch (workload, client.isNATS) {
        case (.pubsub, true): result = try await natsPubSub()
        case (.pubsub, false): result = try await limePubSub()
        case (.reqrep, true): result = try await natsRequestReply()
        case (.reqrep, false): result = try await limeRequestReply()
        }
        let rate = Double(count) / result.seconds
        let percentiles: [(String, Double)] = [("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9)]
        var values: [String: Double] = [:]
        for (name, percentile) in percentiles { values[name] = Double(result.latencies.valueAtPercentile(percentile)) / 1000 }
        values["max"] = Double(result.latencies.max) / 1000
        if json {
            var object: JSONObject = [
                "workload": .string(workload.rawValue), "server": .string(client.server), "count": .number(JSONNumber(count)),
                "size": .number(JSONNumber(size)), "seconds": .number(JSONNumber(result.seconds)),
                "messagesPerSecond": .number(JSONNumber(rate)),
            ]
            var latency = JSONObject()
            for key in ["p50", "p90", "p99", "p99.9", "max"] { latency[key] = .number(JSONNumber(values[key]!)) }
            object["latencyMicroseconds"] = .object(latency)
            print(JSONWriter.string(.object(object)))
        } else {
            print(
                "\(workload.rawValue) \(client.server): \(count) × \(size) B in \(String(format: "%.3f", result.seconds)) s = \(Int(rate)) msg/s"
            )
            print(
                String(
                    format: "latency µs: p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f", values["p50"]!, values["p90"]!,
                    values["p99"]!, values["p99.9"]!, values["max"]!))
        }
    }

    /// The payload: the send time (nanoseconds, for the latency) and padding to `size`.
    private func payload(_ sent: UInt64) -> [UInt8] {
        var bytes = Array(String(sent).utf8)
        if bytes.count < size { bytes += [UInt8](repeating: UInt8(ascii: "x"), count: size - bytes.count) }
        return bytes
    }

    private static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    private static func sentTime(_ text: some Sequence<UInt8>) -> UInt64 {
        UInt64(String(decoding: text.prefix { $0 != UInt8(ascii: "x") }, as: UTF8.self)) ?? now()
    }

    private func natsPubSub() async throws -> (Double, Histogram<UInt64>) {
        let subscriber = try await client.connectNATS()
        let publisher = try await client.connectNATS()
        let subscription = try subscriber.subscribe("bench.pubsub", bufferSize: count + 1)
        try await subscriber.flush()
        let start = Self.now()
        let receiving = Task {
            var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000)
            var received = 0
            for await message in subscription {
                _ = histogram.record(Self.now() - Self.sentTime(message.payload))
                received += 1
                if received == count { break }
            }
            return histogram
        }
        for index in 0..<count {
            try publisher.publish("bench.pubsub", payload(Self.now()))
            if index % 1000 == 999 && publisher.pendingWriteBytes > 8 << 20 { await publisher.writesDrained() }
        }
        try await publisher.flush()
        let histogram = await receiving.value
        let seconds = Double(Self.now() - start) / 1e9
        await publisher.close()
        await subscriber.close()
        return (seconds, histogram)
    }

    private func limePubSub() async throws -> (Double, Histogram<UInt64>) {
        let subscriber = try await client.connect()
        let publisher = try await client.connect()
        let subscription = try await subscriber.subscribe("bench.pubsub", bufferSize: count + 1, heldAtHub: count + 1)
        let start = Self.now()
        let receiving = Task {
            var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000)
            var received = 0
            for await publication in subscription {
                _ = histogram.record(Self.now() - Self.sentTime(Array(publication.text.utf8)))
                received += 1
                if received == count { break }
            }
            return histogram
        }
        for _ in 0..<count {
            try await publisher.publish("bench.pubsub", .string(String(decoding: payload(Self.now()), as: UTF8.self)), type: .textPlain)
        }
        let histogram = await receiving.value
        let seconds = Double(Self.now() - start) / 1e9
        await publisher.close()
        await subscriber.close()
        return (seconds, histogram)
    }

    private func natsRequestReply() async throws -> (Double, Histogram<UInt64>) {
        let responder = try await client.connectNATS()
        let requester = try await client.connectNATS()
        let requests = try responder.subscribe("bench.reqrep")
        try await responder.flush()
        let serving = Task {
            for await request in requests { if let replyTo = request.replyTo { try? responder.publish(replyTo, request.payload) } }
        }
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000)
        let start = Self.now()
        for _ in 0..<count {
            let sent = Self.now()
            _ = try await requester.request("bench.reqrep", payload(sent))
            _ = histogram.record(Self.now() - sent)
        }
        let seconds = Double(Self.now() - start) / 1e9
        serving.cancel()
        await requester.close()
        await responder.close()
        return (seconds, histogram)
    }

    private func limeRequestReply() async throws -> (Double, Histogram<UInt64>) {
        let server = try await client.connect()
        var echo = ServiceDefinition("bench", description: "relay bench echo")
        echo.method("echo") { params, _ in params ?? .null }
        _ = try await server.serve(echo)
        let caller = try await client.connect()
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000)
        let body = JSONValue.string(String(repeating: "x", count: size))
        let start = Self.now()
        for _ in 0..<count {
            let sent = Self.now()
            _ = try await caller.call("bench", "echo", ["data": body])
            _ = histogram.record(Self.now() - sent)
        }
        let seconds = Double(Self.now() - start) / 1e9
        await caller.close()
        await server.close()
        return (seconds, histogram)
    }
}
