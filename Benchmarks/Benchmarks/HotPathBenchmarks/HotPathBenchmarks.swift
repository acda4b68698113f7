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

/// A publication with 1 KiB of JSON content: what the scanner passes over without building.
let limeJSONPublish: [UInt8] = {
    let items = (0..<16).map { index in #"{"sku":"item-\#(index)","quantity":\#(index),"price":12.50,"tags":["a","b"]}"# }
    let text =
        #"{"id":"p1","method":"observe","uri":"/topics/orders.created","type":"application/json","resource":{"order":7,"items":["#
        + items.joined(separator: ",") + "]}}"
    return Array(text.utf8)
}()

/// A core with `subscribers` NATS-style subscriptions to `bench.pubsub`, sessions 2..., publisher session 1.
func makeCore(subscribers: Int, filter: String = "bench.pubsub") -> HubCore {
    var core = HubCore(configuration: .init(hubNode: Node("postmaster@relay.local/hub")!))
    _ = core.register(1, node: Node("publisher@relay.local/1")!)
    for session in 0..<subscribers {
        let id = SessionID(session + 2)
        _ = core.register(id, node: Node("subscriber\(session)@relay.local/1")!)
        try! core.subscribe(id, token: "1", filter: filter, queue: nil, echo: false)
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

    Benchmark("LIME scanner: observe /topics/S, 128 B text") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! LIMECodec.decode(limePublish))
        }
    }

    Benchmark("LIME scanner: observe /topics/S, 1 KiB JSON") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try! LIMECodec.decode(limeJSONPublish))
        }
    }

    Benchmark("LIME in place (hub): a publication, 128 B text") { benchmark in
        var scanner = LIMEPublicationScanner()
        for _ in benchmark.scaledIterations {
            blackHole(limePublish.withUnsafeBufferPointer { scanner.scan($0) })
        }
    }

    Benchmark("LIME in place (client): a delivery, 128 B text") { benchmark in
        let delivery = LIMECodec.encodeDelivery(
            PublishedMessage(
                subject: "bench.pubsub", publisher: Node("publisher@relay.local/1"), type: .textPlain,
                body: .text(String(repeating: "x", count: 128))),
            token: "bench.pubsub", to: Node("subscriber@relay.local/1"))
        var scanner = LIMEDeliveryScanner()
        for _ in benchmark.scaledIterations {
            blackHole(delivery.withUnsafeBufferPointer { scanner.scan($0) })
        }
    }

    Benchmark("LIME full parse (JSONValue, then decode): 1 KiB JSON") { benchmark in
        // The scanner's baseline: every member built as a value.
        for _ in benchmark.scaledIterations {
            blackHole(try! LIMECodec.decode(try! JSONParser.parse(limeJSONPublish)))
        }
    }

    Benchmark("LIME encode: a delivery, 128 B text") { benchmark in
        let message = PublishedMessage(subject: "bench.pubsub", type: .textPlain, body: .text(String(repeating: "x", count: 128)))
        let node = Node("subscriber@relay.local/1")
        for _ in benchmark.scaledIterations {
            blackHole(LIMECodec.encodeDelivery(message, token: "bench.pubsub", to: node))
        }
    }

    for subscribers in [1, 10] {
        Benchmark("publish → NATS delivery bytes, \(subscribers) subscriber(s)") { benchmark in
            // What the hub does per PUB under its lock and right after: parse, route, encode each MSG.
            var core = makeCore(subscribers: subscribers)
            var parser = NATSParser(role: .server)
            var outputs: [HubCore.Output] = []
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                for operation in try! parser.bytesReceived(publishFrame) {
                    guard case .publish(let subject, let replyTo, _, let body) = operation else { continue }
                    let message = PublishedMessage(subject: subject, replyTo: replyTo, body: .bytes(body))
                    outputs.removeAll(keepingCapacity: true)
                    core.publish(message, from: 1, into: &outputs)
                    for output in outputs {
                        guard case .deliver(_, let token, let delivered, _) = output else { continue }
                        blackHole(NATSEncoder.encodeMessage(delivered, sid: token, headersEnabled: true))
                    }
                }
            }
        }
    }

    for (name, frame) in [("128 B text", limePublish), ("1 KiB JSON", limeJSONPublish)] {
        Benchmark("publish → LIME delivery bytes, 1 subscriber, \(name)") { benchmark in
            // The LIME path: scan the command, route it, write the message envelope (content as it came).
            var core = makeCore(subscribers: 1, filter: name == "128 B text" ? "bench.pubsub" : "orders.created")
            let node = Node("subscriber0@relay.local/1")
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                let envelope = try! LIMECodec.decode(frame)
                for output in core.envelopeReceived(envelope, from: 1) {
                    guard case .deliver(_, let token, let delivered, _) = output else { continue }
                    blackHole(LIMECodec.encodeDelivery(delivered, token: token, to: node))
                }
            }
        }
    }
}
