import Testing

@testable import RelayCore

@Suite struct TraceContextTests {
    static let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    static let state = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"

    @Test(arguments: [
        (parent, true),
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later", true),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later", false),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", false),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", false),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
        ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", false),
        ("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false),
        ("", false),
    ])
    func parentsAreCheckedAsTheRecommendationSays(_ value: String, _ valid: Bool) {
        #expect(TraceContext.isValidParent(value) == valid)
    }

    @Test func newParentsAreValidDistinctAndFollowTheSeed() {
        var generator = TraceIdentifierGenerator(seed: 7)
        var again = TraceIdentifierGenerator(seed: 7)
        let made = (0..<1000).map { _ in generator.traceParent() }
        #expect(made.allSatisfy(TraceContext.isValidParent))
        #expect(Set(made).count == 1000)
        #expect(Set(made.map { TraceContext.traceID(of: $0)! }).count == 1000)
        #expect(made[0] == again.traceParent())
        #expect(made.allSatisfy { $0.hasPrefix("00-") && $0.hasSuffix("-01") })
    }

    /// A key forgotten and remembered again keeps its newer entry when its old place is reused.
    @Test func aMemoryForgetsByPlaceWithoutLosingANewerEntry() {
        var memory = RecentMemory<String, Int>(capacity: 3)
        memory.remember(1, for: "a")
        memory.remember(2, for: "b")
        #expect(memory.forget("a") == 1)
        memory.remember(3, for: "a")  // a new place; "a"'s first one is still in the order
        memory.remember(4, for: "c")  // reuses that first place
        #expect(memory["a"] == 3 && memory["b"] == 2 && memory["c"] == 4)
        memory.remember(5, for: "d")  // the oldest live entry goes, as before
        #expect(memory["b"] == nil && memory["a"] == 3)
        memory.remember(6, for: "e")
        #expect(memory["a"] == nil && memory["c"] == 4 && memory["d"] == 5 && memory["e"] == 6)
    }

    @Test func theContextIsFoundWhateverTheKeysCase() {
        #expect(
            TraceContext.carried(in: ["Traceparent": Self.parent, "TraceState": "a=1", "x": "y"]) == [
                "traceparent": Self.parent, "tracestate": "a=1",
            ])
        #expect(TraceContext.carried(in: ["tracestate": "a=1"]).isEmpty, "a tracestate without traceparent is no context")
        #expect(TraceContext.inherited(["a": "b"], from: ["traceparent": Self.parent]) == ["a": "b", "traceparent": Self.parent])
        #expect(TraceContext.inherited(["traceparent": "mine"], from: ["traceparent": Self.parent]) == ["traceparent": "mine"])
    }
}

@Suite struct HubCoreTraceContextTests {
    static let context = ["traceparent": TraceContextTests.parent, "tracestate": TraceContextTests.state]

    private func creating() -> CoreHarness {
        var hub = CoreHarness()
        var configuration = hub.core.configuration
        configuration.traceIdentifiers = TraceIdentifierGenerator(seed: 42)
        hub.core = HubCore(configuration: configuration)
        return hub
    }

    /// Session 1 serves inventory, session 2 calls, session 3 is a NATS-style subscriber.
    private func services(_ hub: inout CoreHarness) {
        hub.connect(1, "inventory@relay.local/a")
        hub.connect(2, "caller@relay.local/c")
        hub.connect(3, "nats@relay.local/n")
        _ = hub.command(1, .set, "/services/inventory", resource: CoreHarness.inventory)
    }

    @Test func aPublicationsContextReachesSubscribersOfBothDialectsIntact() throws {
        var hub = CoreHarness()
        services(&hub)
        _ = hub.command(1, .subscribe, "/topics/orders.*")
        try hub.core.subscribe(3, token: "7", filter: "orders.>", queue: nil, echo: false)
        let outputs = hub.command(2, .observe, "/topics/orders.new", resource: ["id": 1], metadata: Self.context)
        #expect(outputs.messages(to: 1).first?.header.metadata?["traceparent"] == TraceContextTests.parent)
        #expect(outputs.messages(to: 1).first?.header.metadata?["tracestate"] == TraceContextTests.state)
        let delivery = try #require(outputs.published(to: 3).first)
        guard case .message(_, _, _, let headers?, _) = delivery.natsOperation(sid: "7", headersEnabled: true) else {
            Issue.record("no headers on the NATS delivery")
            return
        }
        #expect(headers.fields.contains { $0.name == "traceparent" && $0.value == TraceContextTests.parent })
        #expect(headers.fields.contains { $0.name == "tracestate" && $0.value == TraceContextTests.state })
    }

    @Test func aReplyOnAReplySubjectGetsItsRequestsContext() throws {
        var hub = CoreHarness()
        services(&hub)
        try hub.core.subscribe(3, token: "1", filter: "_INBOX.abc", queue: nil, echo: false)
        try hub.core.subscribe(1, token: "2", filter: "quotes", queue: nil, echo: false)
        var outputs: [HubCore.Output] = []
        hub.core.clientPublished(
            PublishedMessage(subject: "quotes", replyTo: "_INBOX.abc", body: .bytes([]), metadata: Self.context), from: 3, into: &outputs)
        #expect(outputs.recipients == [1])
        outputs = []
        // The responder knows nothing of tracing: its reply carries no context.
        var recipients: [HubCore.Recipient] = []
        #expect(!hub.core.forward(subject: "_INBOX.abc", hasReplyTo: false, from: 1, accepts: { _ in true }, into: &recipients))
        hub.core.clientPublished(PublishedMessage(subject: "_INBOX.abc", body: .text("42")), from: 1, into: &outputs)
        let reply = try #require(outputs.published(to: 3).first)
        #expect(reply.metadata == Self.context)
        // Once: a second publication on the subject is not a reply to that request.
        outputs = []
        hub.core.clientPublished(PublishedMessage(subject: "_INBOX.abc", body: .text("again")), from: 1, into: &outputs)
        #expect(outputs.published(to: 3).first?.metadata == [:])
    }

    @Test func serviceResponsesAndHubFailuresCarryTheCallersContext() throws {
        var hub = CoreHarness()
        services(&hub)
        let outputs = hub.command(2, .get, "/services/inventory/stock", resource: ["sku": "A"], id: "q", metadata: Self.context)
        let request = try #require(outputs.commands(to: 1).first)
        #expect(request.header.metadata?["traceparent"] == TraceContextTests.parent)
        let answer = hub.respond(1, to: request, resource: ["count": 1]).commands(to: 2)[0]
        #expect(answer.header.metadata == Self.context)
        // Failures the hub makes itself (a deadline passed) carry it too.
        _ = hub.command(2, .get, "/services/inventory/stock", resource: ["sku": "A"], id: "late", metadata: Self.context)
        let timedOut = hub.core.timerFired(.deadline(2)).commands(to: 2)[0]
        #expect(timedOut.status == .failure && timedOut.header.metadata == Self.context)
    }

    @Test func aNATSServiceRequestsReplyCarriesItsContext() throws {
        var hub = CoreHarness()
        services(&hub)
        try hub.core.subscribe(3, token: "1", filter: "_INBOX.r1", queue: nil, echo: false)
        var outputs: [HubCore.Output] = []
        hub.core.clientPublished(
            PublishedMessage(subject: "inventory.stock", replyTo: "_INBOX.r1", body: .text(#"{"sku":"A"}"#), metadata: Self.context),
            from: 3, into: &outputs)
        let request = try #require(outputs.commands(to: 1).first)
        #expect(request.header.metadata?["traceparent"] == TraceContextTests.parent)
        let reply = try #require(
            hub.respond(1, to: request, resource: ["count": 1]).published(to: 3).first)
        #expect(reply.metadata == Self.context)
    }

    @Test func withCreationOnAMessageWithoutContextGetsOneAndKeepsItThroughTheRequest() throws {
        var hub = creating()
        services(&hub)
        _ = hub.command(3, .subscribe, "/topics/orders.*")
        // Creating means every publication is looked at: none is forwarded from its bytes.
        var recipients: [HubCore.Recipient] = []
        #expect(!hub.core.forward(subject: "orders.new", hasReplyTo: false, from: 2, accepts: { _ in true }, into: &recipients))
        let plain = hub.command(2, .observe, "/topics/orders.new", resource: 1).messages(to: 3)[0]
        let created = try #require(plain.header.metadata?["traceparent"])
        #expect(TraceContext.isValidParent(created))
        // A valid context is kept as it came; an invalid one is replaced and its state dropped.
        let kept = hub.command(2, .observe, "/topics/orders.new", resource: 1, metadata: Self.context).messages(to: 3)[0]
        #expect(kept.header.metadata?["traceparent"] == TraceContextTests.parent)
        #expect(kept.header.metadata?["tracestate"] == TraceContextTests.state)
        let invalid = ["traceparent": "00-xyz", "tracestate": "a=1"]
        let replaced = hub.command(2, .observe, "/topics/orders.new", resource: 1, metadata: invalid).messages(to: 3)[0]
        #expect(replaced.header.metadata?["traceparent"].map(TraceContext.isValidParent) == true)
        #expect(replaced.header.metadata?["tracestate"] == nil)
        // A call without context: the instance and the caller's answer share the new one.
        let request = try #require(hub.command(2, .get, "/services/inventory/stock", resource: ["sku": "A"], id: "q").commands(to: 1).first)
        let started = try #require(request.header.metadata?["traceparent"])
        #expect(TraceContext.isValidParent(started) && started != created)
        #expect(hub.respond(1, to: request, resource: ["count": 1]).commands(to: 2)[0].header.metadata?["traceparent"] == started)
    }

    @Test func aSubjectRequestsAnswerCarriesTheContextItsResponderSaw() throws {
        var hub = creating()
        services(&hub)
        try hub.core.subscribe(3, token: "1", filter: "quotes", queue: nil, echo: false)
        let outputs = hub.command(2, .get, "/topics/quotes", id: "ask")
        let asked = try #require(outputs.published(to: 3).first)
        let started = try #require(asked.metadata["traceparent"])
        var answer: [HubCore.Output] = []
        hub.core.clientPublished(PublishedMessage(subject: asked.replyTo!, body: .text("7")), from: 3, into: &answer)
        #expect(answer.commands(to: 2).first?.header.metadata?["traceparent"] == started)
    }

    /// Queued messages keep their context in the store and on every delivery, redeliveries too.
    @Test(arguments: [false, true])
    func aQueuedMessageKeepsItsContextThroughStoreAndRedelivery(creating: Bool) throws {
        var hub = creating ? self.creating() : CoreHarness()
        hub.connect(1, "p@relay.local/1")
        hub.connect(2, "c@relay.local/1")
        _ = try hub.core.createQueue(QueueConfiguration(name: "q", subjects: ["work"]))
        let outputs = hub.command(1, .observe, "/topics/work", resource: "job", metadata: creating ? nil : Self.context)
        var stored: [String: String] = [:]
        for case .persist(let copies, _) in outputs {
            for copy in copies {
                stored = copy.queued.message.metadata
                _ = hub.core.persisted(queue: copy.queue, copy.queued)
            }
        }
        let parent = try #require(stored["traceparent"], "the stored copy carries the context")
        #expect(creating ? TraceContext.isValidParent(parent) : parent == TraceContextTests.parent)
        func delivered(_ outputs: [HubCore.Output]) -> PublishedMessage? {
            for case .deliver(2, _, let message, _) in outputs { return message }
            return nil
        }
        let first = try #require(delivered(try hub.core.attachConsumer(2, token: "queue:q", queue: "q", credit: 10)))
        #expect(first.metadata["traceparent"] == parent)
        let (_, delivery) = try #require(first.metadata["#delivery"].flatMap(HubCore.parseQueueDeliveryID))
        let again = try #require(delivered(hub.core.answer(.nak(delayMilliseconds: nil), delivery: delivery, queue: "q")))
        #expect(again.metadata["traceparent"] == parent, "a redelivery is the same message in the same trace")
        #expect(again.metadata["tracestate"] == (creating ? nil : TraceContextTests.state))
    }

    @Test func noContextIsMadeUnlessAsked() {
        var hub = CoreHarness()
        services(&hub)
        _ = hub.command(3, .subscribe, "/topics/orders.*")
        #expect(hub.command(2, .observe, "/topics/orders.new", resource: 1).messages(to: 3)[0].header.metadata?["traceparent"] == nil)
    }
}

extension [HubCore.Output] {
    /// The publications delivered to a session.
    func published(to session: SessionID) -> [PublishedMessage] {
        compactMap { output in
            if case .deliver(session, _, let message, _) = output { return message } else { return nil }
        }
    }
}
