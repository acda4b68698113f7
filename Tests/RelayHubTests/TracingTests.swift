import InMemoryTracing
import RelayClient
import RelayCore
import RelayHub
import Synchronization
import Testing
import Tracing

/// The hub's spans, recorded by swift-distributed-tracing's in-memory tracer, and trace context on
/// real connections of both dialects.
@Suite(.timeLimit(.minutes(1))) struct TracingTests {
    static let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    private func finished(_ tracer: InMemoryTracer, _ name: String) -> [FinishedInMemorySpan] {
        tracer.finishedSpans.filter { $0.operationName == name }
    }

    @Test func aPublicationWithoutContextGetsThePublishSpansAndItsDeliveryContinuesIt() async throws {
        let tracer = InMemoryTracer()
        try await withHub(tracer: tracer) { hub in
            let subscriber = try await hub.connect(.ws, as: "reader@relay.local/1")
            let subscription = try await subscriber.subscribe("orders.*")
            let nats = try await NATSClient.connect(to: "nats://127.0.0.1:\(hub.natsPort)")
            let natsSubscription = try nats.subscribe("orders.>")
            try await nats.flush()
            try nats.publish("orders.new", "42")
            let received = try await firstElement(subscription)
            let natsReceived = try await firstElement(natsSubscription)

            let publish = try #require(finished(tracer, "publish orders.new").first)
            #expect(publish.kind == .producer)
            #expect(publish.attributes["messaging.destination.name"]?.toSpanAttribute() == "orders.new")
            #expect(publish.spanContext.parentSpanID == nil, "the publication came without context: a new trace")
            // The publish span's context travels with the message, to both dialects.
            #expect(received.metadata[InMemoryTracer.traceIDKey] == publish.spanContext.traceID)
            #expect(received.metadata[InMemoryTracer.spanIDKey] == publish.spanContext.spanID)
            #expect(natsReceived.headers?[InMemoryTracer.traceIDKey] == publish.spanContext.traceID)
            let deliveries = finished(tracer, "deliver orders.new")
            #expect(deliveries.count == 2, "one span per subscriber")
            #expect(deliveries.allSatisfy { $0.kind == .consumer && $0.spanContext.parentSpanID == publish.spanContext.spanID })
            await nats.close()
        }
    }

    @Test func aContextThePublisherSentIsKeptAndParentsTheHubsSpans() async throws {
        let tracer = InMemoryTracer()
        try await withHub(tracer: tracer) { hub in
            let subscriber = try await hub.connect(.tcp, as: "reader@relay.local/1")
            let subscription = try await subscriber.subscribe("orders.*")
            let publisher = try await hub.connect(.ws, as: "writer@relay.local/1")
            let sent = [InMemoryTracer.traceIDKey: "trace-1", InMemoryTracer.spanIDKey: "span-1", "traceparent": Self.parent]
            try await publisher.publish("orders.new", 1, metadata: sent)
            let received = try await firstElement(subscription)
            #expect(received.metadata == sent, "the publisher's context arrives as it was sent")
            let publish = try #require(finished(tracer, "publish orders.new").first)
            #expect(publish.spanContext.traceID == "trace-1" && publish.spanContext.parentSpanID == "span-1")
            #expect(publish.attributes["relay.dialect"]?.toSpanAttribute() == "lime")
            let deliver = try #require(finished(tracer, "deliver orders.new").first)
            #expect(deliver.spanContext.traceID == "trace-1")
        }
    }

    @Test func aRequestHasASpanFromDispatchToAnswerInTheCallersTrace() async throws {
        let tracer = InMemoryTracer()
        try await withHub(tracer: tracer) { hub in
            let server = try await hub.connect(.tcp, as: "inventory@relay.local/1")
            let seen = Captured<[String: String]>()
            var definition = ServiceDefinition("inventory")
            definition.method("stock") { (_: JSONValue?, context) in
                seen.set(context.metadata)
                return 3
            }
            definition.method("slow") { (_: JSONValue?, _) in
                try await Task.sleep(for: .seconds(30))
                return 0
            }
            _ = try await server.serve(definition)
            let caller = try await hub.connect(.ws, as: "shop@relay.local/1")
            #expect(try await caller.call("inventory", "stock", ["sku": "A"]) == 3)
            let entered = try #require(
                finished(tracer, "route").first { $0.attributes["lime.uri"]?.toSpanAttribute() == "/services/inventory/stock" })
            let request = try #require(finished(tracer, "request inventory.stock").first)
            #expect(request.spanContext.traceID == entered.spanContext.traceID)
            #expect(request.spanContext.parentSpanID == entered.spanContext.spanID)
            #expect(request.status == nil)
            #expect(seen.value?[InMemoryTracer.traceIDKey] == entered.spanContext.traceID, "the instance got the caller's trace")

            await #expect(throws: RelayError.self) { _ = try await caller.call("inventory", "slow", nil, timeout: .milliseconds(200)) }
            let timedOut = try #require(finished(tracer, "request inventory.slow").first)
            #expect(timedOut.status?.code == .error)
        }
    }

    @Test func aDurablePublicationHasAStoreSpanAndKeepsItsContextToTheConsumer() async throws {
        let tracer = InMemoryTracer()
        try await withHub(tracer: tracer) { hub in
            let client = try await hub.connect(.tcp, as: "worker@relay.local/1")
            try await client.createQueue(QueueConfiguration(name: "jobs", subjects: ["jobs"]))
            var deliveries = try await client.consume("jobs").makeAsyncIterator()
            try await client.publish("jobs", "one")
            let first = try #require(try await deliveries.next())
            let publish = try #require(finished(tracer, "publish jobs").first)
            let store = try #require(finished(tracer, "queue store").first)
            #expect(store.spanContext.traceID == publish.spanContext.traceID)
            #expect(store.attributes["relay.queues"]?.toSpanAttribute() == "jobs")
            #expect(first.publication.metadata[InMemoryTracer.traceIDKey] == publish.spanContext.traceID)
            try await first.nak()
            let again = try #require(try await deliveries.next())
            #expect(again.count == 2)
            #expect(again.publication.metadata[InMemoryTracer.traceIDKey] == publish.spanContext.traceID, "a redelivery stays in the trace")
        }
    }

    @Test func withCreationOnAHubWithoutTracerMakesW3CContext() async throws {
        try await withHub({ $0.tracing.createContext = true }) { hub in
            let subscriber = try await hub.connect(.ws, as: "reader@relay.local/1")
            var publications = try await subscriber.subscribe("orders.*").makeAsyncIterator()
            let nats = try await NATSClient.connect(to: "nats://127.0.0.1:\(hub.natsPort)")
            let reply = try nats.subscribe("orders.>")
            try await nats.flush()
            try nats.publish("orders.new", "1")
            let received = try #require(try await publications.next())
            let parent = try #require(received.metadata["traceparent"])
            #expect(TraceContext.isValidParent(parent))
            #expect(try await firstElement(reply).headers?["traceparent"] == parent)
            var sent = NATSHeaders()
            sent.append("traceparent", Self.parent)
            try nats.publish("orders.old", "2", headers: sent)
            #expect(try await publications.next()?.metadata["traceparent"] == Self.parent, "a valid context is kept")
            await nats.close()
        }
    }
}

/// A value a handler saw, for the test to read after.
final class Captured<Value: Sendable>: Sendable {
    private let box = Mutex<Value?>(nil)
    func set(_ value: Value) { box.withLock { $0 = value } }
    var value: Value? { box.withLock { $0 } }
}
