import Testing

@testable import RelayCore

/// The core of a clustered hub, driven as the hub drives it: what it asks of the cluster, and what
/// it does with what comes from there.
struct TestFailure: Error { let text: String; init(_ text: String) { self.text = text } }

@Suite struct ClusterMembershipTests {
    private func clustered() -> CoreHarness {
        var hub = CoreHarness()
        hub.connect(1, "alice@relay.local/a")
        hub.connect(2, "bob@relay.local/b")
        hub.core.joinCluster(hubID: "H1")
        return hub
    }

    private func publishes(_ operations: [ClusterMembership.Operation]) -> [PublishedMessage] {
        operations.compactMap { if case .publish(let message) = $0 { return message } else { return nil } }
    }

    @Test func joiningHoldsTheHubsInboxAndLocalSubscriptionsComeAndGoOnce() throws {
        var hub = clustered()
        let joined = hub.core.takeClusterOperations()
        #expect(joined.first == .interest(.subscribe(sid: "c1", filter: "_INBOX.relay.H1.>", queue: nil)))
        #expect(joined.count == 9, "the inbox, the services, queues, cancel and events subjects, and the node subjects of alice and bob")
        try hub.core.subscribe(1, token: "s1", filter: "orders.*", queue: nil, echo: true)
        try hub.core.subscribe(2, token: "s1", filter: "orders.*", queue: nil, echo: true)
        try hub.core.subscribe(2, token: "s2", filter: "jobs", queue: "workers", echo: true)
        #expect(
            hub.core.takeClusterOperations() == [
                .interest(.subscribe(sid: "c10", filter: "orders.*", queue: nil)),
                .interest(.subscribe(sid: "c11", filter: "jobs", queue: "workers")),
            ])
        hub.core.unsubscribe(1, token: "s1")
        #expect(hub.core.takeClusterOperations().isEmpty, "bob still wants orders.*")
        _ = hub.core.sessionClosed(2)
        let ended = hub.core.takeClusterOperations()
        #expect(
            ended.contains(.interest(.unsubscribe(sid: "c10"))) && ended.contains(.interest(.unsubscribe(sid: "c11"))))
        #expect(hub.core.cluster?.subscriptionCount == 7, "the hub's own five and alice's node subjects are left")
    }

    @Test func aLocalPublicationIsDeliveredHereAndPublishedOnTheClusterButQueueGroupsWaitForTheCluster() throws {
        var hub = clustered()
        try hub.core.subscribe(2, token: "plain", filter: "orders.*", queue: nil, echo: true)
        try hub.core.subscribe(2, token: "member", filter: "orders.*", queue: "workers", echo: true)
        _ = hub.core.takeClusterOperations()
        let message = PublishedMessage(subject: "orders.new", publisher: Node("alice@relay.local/a"), body: .text("one"))
        let (outputs, delivered) = hub.core.publish(message, from: 1)
        #expect(outputs.map(\.token) == ["plain"], "the queue member gets it from the cluster, which picks one hub")
        #expect(delivered == 1)
        #expect(publishes(hub.core.takeClusterOperations()) == [message])
        // Back from the cluster on the queue subscription: one member here gets it.
        let back = hub.core.clusterMessageReceived(message, sid: "c11")
        #expect(back.map(\.token) == ["member"])
        #expect(hub.core.takeClusterOperations().isEmpty, "what came from the cluster is never published there again")
    }

    @Test func aClusterMessageGoesOnlyToTheSubscriptionsOfItsFilter() throws {
        var hub = clustered()
        try hub.core.subscribe(1, token: "star", filter: "orders.*", queue: nil, echo: true)
        try hub.core.subscribe(2, token: "rest", filter: "orders.>", queue: nil, echo: true)
        _ = hub.core.takeClusterOperations()
        let message = PublishedMessage(subject: "orders.new", body: .text("x"))
        // nats-server sends it on each matching cluster subscription: each local subscriber gets it once.
        #expect(hub.core.clusterMessageReceived(message, sid: "c10").recipients == [1])
        #expect(hub.core.clusterMessageReceived(message, sid: "c11").recipients == [2])
        hub.core.unsubscribe(2, token: "rest")
        #expect(hub.core.clusterMessageReceived(message, sid: "c11").isEmpty, "a subscription ended meanwhile")
        #expect(hub.core.cluster?.messagesDiscarded == 1)
    }

    @Test func noRespondersIsTheClustersToSayAndALocalAnswerWins() throws {
        var hub = clustered()
        try hub.core.subscribe(1, token: "inbox", filter: "_INBOX.a.*", queue: nil, echo: true)
        _ = hub.core.takeClusterOperations()
        // Nobody here: no 503 from the hub, the request goes to the cluster.
        var outputs: [HubCore.Output] = []
        hub.core.clientPublished(
            PublishedMessage(subject: "help", replyTo: "_INBOX.a.1", body: .bytes([])), from: 1, noResponders: true, into: &outputs)
        #expect(outputs.isEmpty)
        #expect(publishes(hub.core.takeClusterOperations()).map(\.subject) == ["help"])
        // A local responder took the next: the cluster's 503 for it is not passed on.
        try hub.core.subscribe(2, token: "responder", filter: "help", queue: nil, echo: true)
        _ = hub.core.takeClusterOperations()
        hub.core.clientPublished(
            PublishedMessage(subject: "help", replyTo: "_INBOX.a.2", body: .bytes([])), from: 1, noResponders: true, into: &outputs)
        #expect(outputs.recipients == [2])
        let status = PublishedMessage(subject: "_INBOX.a.2", body: .bytes([]), status: 503)
        #expect(hub.core.clusterMessageReceived(status, sid: "c10").isEmpty)
        let first = PublishedMessage(subject: "_INBOX.a.1", body: .bytes([]), status: 503)
        #expect(hub.core.clusterMessageReceived(first, sid: "c10").recipients == [1], "the first had no responder anywhere")
    }

    @Test func servedServicesAreHeldAsOneQueueGroupAndAnswerClusterRequests() throws {
        var hub = clustered()
        _ = hub.core.takeClusterOperations()
        #expect(hub.command(2, .set, "/services/inventory", resource: CoreHarness.inventory).commands(to: 2)[0].status == .success)
        #expect(
            hub.core.takeClusterOperations() == [.interest(.subscribe(sid: "c10", filter: "inventory.>", queue: "relay.services"))])
        // A NATS request from another hub: dispatched to the instance here.
        let request = PublishedMessage(subject: "inventory.stock", replyTo: "_INBOX.far.1", body: .bytes(Array(#"{"sku":"AB"}"#.utf8)))
        let dispatched = hub.core.clusterMessageReceived(request, sid: "c10")
        let call = try #require(dispatched.commands(to: 2).first)
        #expect(call.uri == "/services/inventory/stock")
        // Its answer is published for the caller, on the cluster.
        _ = hub.respond(2, to: call, resource: ["stock": 3])
        let answers = publishes(hub.core.takeClusterOperations())
        #expect(answers.map(\.subject) == ["_INBOX.far.1"])
        #expect(answers.first?.payloadBytes == Array(#"{"stock":3}"#.utf8))
        _ = hub.core.sessionClosed(2)
        #expect(hub.core.takeClusterOperations().contains(.interest(.unsubscribe(sid: "c10"))))
    }

    /// Requests in flight are bounded per session, and those from the cluster (every other
    /// hub's callers) by a bound of their own; an answered one frees its place.
    @Test func requestsInFlightAreBoundedPerSessionAndFromTheClusterApart() throws {
        var hub = clustered()
        hub.core.configuration.maximumRequestsPerSession = 2
        hub.core.configuration.maximumRequestsFromCluster = 3
        _ = hub.command(2, .set, "/services/inventory", resource: CoreHarness.inventory)
        _ = hub.core.takeClusterOperations()
        func local(_ id: String) -> LIMECommand? {
            hub.command(1, .get, "/services/inventory/stock", resource: ["sku": "A"], id: id).commands(to: 1).first
        }
        #expect(local("l1") == nil && local("l2") == nil, "dispatched, no answer yet")
        #expect(local("l3")?.reason?.code == RelayReasonCode.limitReached)
        var calls: [LIMECommand] = []
        for n in 1...4 {
            let request = PublishedMessage(
                subject: "inventory.stock", replyTo: "_INBOX.far.\(n)", body: .bytes(Array(#"{"sku":"A"}"#.utf8)))
            calls += hub.core.clusterMessageReceived(request, sid: "c10").commands(to: 2)
        }
        #expect(calls.count == 3, "three from the cluster, beyond the per-session two")
        let refused = publishes(hub.core.takeClusterOperations()).filter { $0.subject == "_INBOX.far.4" }
        #expect(refused.first?.metadata["Nats-Service-Error-Code"] == String(RelayReasonCode.limitReached))
        _ = hub.respond(2, to: calls[0], resource: ["stock": 1])
        let again = PublishedMessage(subject: "inventory.stock", replyTo: "_INBOX.far.5", body: .bytes(Array(#"{"sku":"A"}"#.utf8)))
        #expect(hub.core.clusterMessageReceived(again, sid: "c10").commands(to: 2).count == 1, "an answer freed a place")
    }

    @Test func aLIMESubjectRequestWaitsOnTheHubsOwnInbox() throws {
        var hub = clustered()
        _ = hub.core.takeClusterOperations()
        let outputs = hub.command(1, .get, "/topics/prices.now", id: "ask")
        #expect(outputs.commands(to: 1).isEmpty, "no local responder is no failure on a cluster")
        let request = try #require(publishes(hub.core.takeClusterOperations()).first)
        let inbox = try #require(request.replyTo)
        #expect(inbox.hasPrefix("_INBOX.relay.H1."))
        let reply = PublishedMessage(subject: inbox, type: .applicationJSON, body: .bytes(Array("42".utf8)))
        let answer = try #require(hub.core.clusterMessageReceived(reply, sid: "c1").commands(to: 1).first)
        #expect(answer.header.id == "ask" && answer.status == .success && answer.resource == 42)
    }

    @Test func aNodeNotConnectedHereIsSoughtOnTheClusterAndItsFailureComesFromThere() throws {
        var hub = clustered()
        let joined = hub.core.takeClusterOperations()
        #expect(joined.contains(.interest(.subscribe(sid: "c6", filter: "$RELAY.NODE.alice@relay.local", queue: nil))))
        #expect(joined.contains(.interest(.subscribe(sid: "c7", filter: "$RELAY.CMD.alice@relay.local", queue: "relay.nodes"))))
        let message = Envelope.message(
            LIMEMessage(
                header: EnvelopeHeader(id: "m1", from: Node("alice@relay.local/a"), to: Node("carol@relay.local/c")), type: .textPlain,
                content: "hi"))
        #expect(hub.core.envelopeReceived(message, from: 1).isEmpty, "no failure yet: carol may be on another hub")
        let sent = try #require(publishes(hub.core.takeClusterOperations()).first)
        #expect(sent.subject == "$RELAY.NODE.carol@relay.local")
        let replyTo = try #require(sent.replyTo)
        // Nobody holds carol anywhere: the cluster's 503 is alice's failure.
        let status = PublishedMessage(subject: replyTo, body: .bytes([]), status: 503)
        let failures = hub.core.clusterMessageReceived(status, sid: "c1")
        let failure = try #require(failures.sent(to: 1).first)
        guard case .notification(let notification) = failure else { throw TestFailure("not a notification: \(failure)") }
        #expect(notification.event == .failed && notification.reason?.code == ReasonCode.routingDestinationNotFound)
        #expect(notification.header.id == "m1")
        // An envelope from another hub for bob here is delivered to him, and his receipt goes back there.
        let forBob = PublishedMessage(
            subject: "$RELAY.NODE.bob@relay.local", type: ClusterMembership.envelopeType,
            body: .bytes(
                LIMECodec.encode(
                    .message(
                        LIMEMessage(
                            header: EnvelopeHeader(id: "m2", from: Node("dave@relay.local/d"), to: Node("bob@relay.local/b")),
                            type: .textPlain, content: "yo")))))
        let delivered = hub.core.clusterMessageReceived(forBob, sid: "c8")
        #expect(delivered.messages(to: 2).map(\.header.id) == ["m2"])
        let receipt = Envelope.notification(
            LIMENotification(
                header: EnvelopeHeader(id: "m2", from: Node("bob@relay.local/b"), to: Node("bob@relay.local/b")), event: .received))
        #expect(hub.core.envelopeReceived(receipt, from: 2).isEmpty)
        let back = try #require(publishes(hub.core.takeClusterOperations()).first)
        #expect(back.subject == "$RELAY.NODE.dave@relay.local" && back.replyTo == nil)
    }

    @Test func servicesAreDiscoveredOnEveryHubWithTheirInstancesSummed() throws {
        var hub = clustered()
        _ = hub.core.takeClusterOperations()
        _ = hub.command(2, .set, "/services/inventory", resource: CoreHarness.inventory)
        _ = hub.core.takeClusterOperations()
        let outputs = hub.command(1, .get, "/services", id: "list")
        #expect(outputs.commands(to: 1).isEmpty, "the answer waits for the other hubs")
        guard case .startTimer(.discovery(let id), _)? = outputs.first else { throw TestFailure("no window: \(outputs)") }
        let ask = try #require(publishes(hub.core.takeClusterOperations()).first)
        #expect(ask.subject == "$RELAY.SERVICES")
        // Another hub answers with one more instance of inventory, and a service of its own.
        let answer = PublishedMessage(
            subject: try #require(ask.replyTo), type: .applicationJSON,
            body: .json(["services": [["name": "inventory", "instances": 2], ["name": "billing", "instances": 1]]]))
        #expect(hub.core.clusterMessageReceived(answer, sid: "c1").isEmpty)
        let list = try #require(hub.core.timerFired(.discovery(id)).commands(to: 1).first)
        let services = try #require(list.resource?["services"]?.arrayValue)
        #expect(services.map { $0["name"] } == ["billing", "inventory"])
        #expect(services.map { $0["instances"] } == [1, 3])
        // And this hub answers the others' discoveries with its own services.
        let theirs = PublishedMessage(subject: "$RELAY.SERVICES", replyTo: "_INBOX.relay.H2.d.9", body: .bytes([]))
        #expect(hub.core.clusterMessageReceived(theirs, sid: "c2").isEmpty)
        let mine = try #require(publishes(hub.core.takeClusterOperations()).first)
        #expect(mine.subject == "_INBOX.relay.H2.d.9" && mine.limeContent.1.value["services"]?[0]?["instances"] == 1)
    }

    @Test func nobodyCanForgeOrOverhearTheHubsTrafficOnTheCluster() throws {
        var hub = clustered()
        try hub.core.subscribe(1, token: "all", filter: ">", queue: nil, echo: true)
        try hub.core.subscribe(1, token: "nodes", filter: "$RELAY.NODE.>", queue: nil, echo: true)
        let held = hub.core.takeClusterOperations()
        #expect(held.contains(.interest(.subscribe(sid: "c10", filter: ">", queue: nil))))
        #expect(!held.contains { if case .interest(.subscribe(_, "$RELAY.NODE.>", _)) = $0 { true } else { false } })
        // A client's publication to a hub subject does not cross: it cannot forge an envelope.
        _ = hub.core.publish(PublishedMessage(subject: "$RELAY.NODE.bob@relay.local", body: .bytes([])), from: 1)
        #expect(publishes(hub.core.takeClusterOperations()).isEmpty)
        // Another hub's envelope, or an answer to its inbox, is not a delivery to '>'.
        let envelope = PublishedMessage(subject: "$RELAY.NODE.carol@relay.local", body: .bytes([]))
        #expect(hub.core.clusterMessageReceived(envelope, sid: "c10").isEmpty)
        let answer = PublishedMessage(subject: "_INBOX.relay.H2.5", body: .bytes([]))
        #expect(hub.core.clusterMessageReceived(answer, sid: "c10").isEmpty)
        #expect(hub.core.clusterMessageReceived(PublishedMessage(subject: "news", body: .bytes([])), sid: "c10").recipients == [1])
    }

    /// A JetStream queue as the hub sees it: set up from JetStream's answers, then a pulled
    /// message goes to the consumer, or, past the queue's time-to-live, is terminated and dead.
    @Test func aPulledMessagePastItsTimeToLiveIsTerminatedAndDeadLettered() throws {
        var hub = CoreHarness()
        hub.connect(1, "worker@relay.local/a")
        hub.core.joinCluster(hubID: "H1", jetStream: JetStreamSettings())
        let brief = QueueConfiguration(name: "brief", subjects: ["brief.*"], deadLetterSubject: "dead.brief", timeToLiveSeconds: 0.5)
        _ = try hub.core.createJetStreamQueue(brief, announce: false)
        let asked = publishes(hub.core.takeClusterOperations()).map(\.subject)
        #expect(asked.contains("$JS.API.STREAM.CREATE.RELAY_Q_brief"))
        let inbox = "_INBOX.relay.H1.js."
        _ = hub.core.clusterMessageReceived(PublishedMessage(subject: inbox + "stream.brief", body: .text("{}")), sid: "c1")
        _ = hub.core.clusterMessageReceived(PublishedMessage(subject: inbox + "consumer.brief", body: .text("{}")), sid: "c1")
        #expect(hub.core.jetStreamQueueJSON("brief")?["jetStream"]?["ready"] == true)
        _ = try hub.core.attachConsumer(1, token: "queue:brief", queue: "brief", credit: 1)
        #expect(publishes(hub.core.takeClusterOperations()).contains { $0.subject == "$JS.API.CONSUMER.MSG.NEXT.RELAY_Q_brief.relay" })
        let storedAt: Int64 = 1_700_000_000_000
        func pulled(_ text: String, sequence: Int) -> PublishedMessage {
            PublishedMessage(
                subject: "brief.\(text)", replyTo: "$JS.ACK.RELAY_Q_brief.relay.1.\(sequence).\(sequence).\(storedAt * 1_000_000).0",
                body: .text(text))
        }
        let stale = hub.core.clusterMessageReceived(pulled("stale", sequence: 1), sid: "c1", now: storedAt + 600)
        #expect(stale.recipients.isEmpty, "not delivered")
        let answered = publishes(hub.core.takeClusterOperations())
        #expect(answered.contains { $0.subject.hasPrefix("$JS.ACK.RELAY_Q_brief.relay.1.1.") && $0.payloadBytes == Array("+TERM".utf8) })
        let letter = try #require(answered.first { $0.subject == "dead.brief" })
        #expect(letter.metadata["#deadReason"] == "Expired after 0.5 s" && letter.metadata["#originalSubject"] == "brief.stale")
        #expect(hub.core.jetStreamQueueJSON("brief")?["expired"] == 1)
        let fresh = hub.core.clusterMessageReceived(pulled("fresh", sequence: 2), sid: "c1", now: storedAt + 400)
        #expect(fresh.recipients == [1])
    }

    @Test func thePublisherCrossesInAHeader() {
        let message = PublishedMessage(
            subject: "orders.new", publisher: Node("alice@relay.local/a"), type: .applicationJSON, body: .json(["n": 1]),
            metadata: ["traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"])
        let form = message.clusterForm
        #expect(form.headers?["Relay-From"] == "alice@relay.local/a")
        let back = PublishedMessage(clusterSubject: form.subject, replyTo: form.replyTo, headers: form.headers, payload: form.payload)
        #expect(back.publisher == Node("alice@relay.local/a"))
        #expect(back.metadata == message.metadata, "Relay-From is not metadata")
        // The hub's own metadata (a dead letter's) crosses in Relay-Meta- headers.
        var dead = message
        dead.metadata["#queue"] = "orders"
        let deadForm = dead.clusterForm
        #expect(deadForm.headers?["Relay-Meta-queue"] == "orders")
        let deadBack = PublishedMessage(
            clusterSubject: deadForm.subject, replyTo: nil, headers: deadForm.headers, payload: deadForm.payload)
        #expect(deadBack.metadata["#queue"] == "orders" && deadBack.metadata["Relay-Meta-queue"] == nil)
        #expect(back.type == .applicationJSON)
        #expect(back.limeContent.1.value == ["n": 1])
        #expect(PublishedMessage.isRelayHeader("RELAY-Caller") && PublishedMessage.isRelayHeader("relay-from"))
        #expect(!PublishedMessage.isRelayHeader("Relay") && !PublishedMessage.isRelayHeader("Content-Type"))
        #expect(!PublishedMessage.isRelayHeader("Relayx-From"))
        // A client's own headers of those names do not cross: they would pass for the hubs'.
        var forged = message
        forged.metadata["Relay-From"] = "mallory@relay.local/x"
        forged.metadata["relay-meta-queue"] = "fake"
        let forgedForm = forged.clusterForm
        #expect(forgedForm.headers?.values("Relay-From") == ["alice@relay.local/a"])
        let forgedBack = PublishedMessage(
            clusterSubject: forgedForm.subject, replyTo: nil, headers: forgedForm.headers, payload: forgedForm.payload)
        #expect(forgedBack.publisher == Node("alice@relay.local/a") && forgedBack.metadata["#queue"] == nil)
    }
}

extension HubCore.Output {
    fileprivate var token: String? { if case .deliver(_, let token, _, _) = self { token } else { nil } }
}
