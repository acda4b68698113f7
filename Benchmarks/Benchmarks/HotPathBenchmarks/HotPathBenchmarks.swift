import Benchmark
import RelayCore

/// The per-message work of the hub, without I/O: reading a frame, routing it, writing deliveries.
/// Each iteration is one message; with the malloc counts this shows what a message costs.

let payload = [UInt8](repeating: UInt8(ascii: "x"), count: 128)
let publishFrame = NATSEncoder.encode(.publish(subject: "bench.pubsub", replyTo: nil, headers: nil, payload: payload))
let limePublish = LIMECodec.encode(
    .command(
        LIMECommand(
            method: .observe, uri: "/topics/bench.pubsub", type: .textPlain, resource: .string(String(repeating: "x", count: 128)))))

/// A core with `subscribers` NATS-style subscriptions to `bench.pubsub`, sessions 2..., publisher session 1.
func makeCore(subscribers: Int) -> HubCore {
    var core = HubCore(configuration: .init(hubNode: Node("postmaster@relay.local/hub")!))
    _ = core.register(1, node: Node("publisher@relay.local/1")!)
    for session in 0..<subscribers {
        let id = SessionID(session + 2)
        _ = core.register(id, node: Node("subscriber\(session)@relay.local/1")!)
        try! core.subscribe(id, token: "1", filter: "bench.pubsub", queue: nil, echo: false)
    }
    return core
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal], scalingFactor: .kilo, maxDuration: .seconds(3))

    Benchmark("NATS parser: one PUB, 128 B") { benchmark in
        var parser = NATSParser(role: .server)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            blackHole(try! parser.bytesReceived(publishFrame))
        }
    }

    Benchmark("NATS encoder: one MSG, 128 B") { benchmark in
        let message = NATSOperation.message(subject: "bench.pubsub", sid: "1", replyTo: nil, headers: nil, payload: payload)
        var output: [UInt8] = []
        output.reserveCapacity(256)
        for _ in benchmark.scaledIterations {
            output.removeAll(keepingCapacity: true)
            NATSEncoder.encode(message, into: &output)
            blackHole(output)
        }
    }

    Benchmark("LIME decode: observe /topics/S, 128 B text") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! LIMECodec.decode(limePublish))
        }
    }

    Benchmark("LIME encode: a delivery, 128 B text") { benchmark in
        let message = PublishedMessage(subject: "bench.pubsub", type: .textPlain, body: .text(String(repeating: "x", count: 128)))
        let node = Node("subscriber@relay.local/1")
        for _ in benchmark.scaledIterations {
            blackHole(LIMECodec.encode(message.limeEnvelope(token: "bench.pubsub", to: node)))
        }
    }

    for subscribers in [1, 10] {
        Benchmark("publish → NATS delivery bytes, \(subscribers) subscriber(s)") { benchmark in
            // What the hub does per PUB under its lock and right after: parse, route, encode each MSG.
            var core = makeCore(subscribers: subscribers)
            var parser = NATSParser(role: .server)
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                for operation in try! parser.bytesReceived(publishFrame) {
                    guard case .publish(let subject, let replyTo, _, let body) = operation else { continue }
                    let message = PublishedMessage(subject: subject, replyTo: replyTo, body: .bytes(body))
                    for output in core.publish(message, from: 1).outputs {
                        guard case .deliver(_, let token, let delivered) = output else { continue }
                        blackHole(NATSEncoder.encode(delivered.natsOperation(sid: token, headersEnabled: true)))
                    }
                }
            }
        }
    }

    Benchmark("publish → LIME delivery bytes, 1 subscriber") { benchmark in
        // The LIME path: decode the command, route it, encode the message envelope.
        var core = makeCore(subscribers: 1)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            let envelope = try! LIMECodec.decode(limePublish)
            for output in core.envelopeReceived(envelope, from: 1) {
                guard case .deliver(_, let token, let delivered) = output else { continue }
                blackHole(LIMECodec.encode(delivered.limeEnvelope(token: token, to: nil)))
            }
        }
    }
}
