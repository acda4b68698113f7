import Testing

@testable import RelayCore

/// Drives a `HubCore` with sessions 1... as `nameN@relay.local/i`, as the hub would.
struct CoreHarness {
    var core = HubCore(configuration: .init(hubNode: Node("postmaster@relay.local/hub")!, admins: [Identity("root@relay.local")!]))
    var nextCommandID = 0

    mutating func connect(_ session: SessionID, _ node: String) {
        _ = core.register(session, node: Node(node)!)
    }

    /// Sends a command to the hub from a session; returns the outputs.
    @discardableResult
    mutating func command(
        _ session: SessionID, _ method: CommandMethod, _ uri: String, resource: JSONValue? = nil, id: String? = nil,
        metadata: [String: String]? = nil, type: MediaType? = nil
    ) -> [HubCore.Output] {
        nextCommandID += 1
        let from = core.router.node(of: session)
        let command = LIMECommand(
            header: EnvelopeHeader(id: id ?? "c\(nextCommandID)", from: from, metadata: metadata), method: method, uri: uri, type: type,
            resource: resource)
        return core.envelopeReceived(.command(command), from: session)
    }

    /// The response a session answers to a request it received.
    mutating func respond(_ session: SessionID, to request: LIMECommand, resource: JSONValue? = nil, failure: Reason? = nil) -> [HubCore
        .Output]
    {
        var response = failure.map { request.failure($0) } ?? request.success(type: "application/json", resource: resource)
        response.header.from = core.router.node(of: session)
        return core.envelopeReceived(.command(response), from: session)
    }

    static let inventory: JSONValue = [
        "description": "Stock levels",
        "methods": [
            [
                "name": "stock", "minPeriod": 1, "minEvents": 2,
                "parameters": [
                    ["name": "sku", "type": "string", "pattern": "[A-Z]+"], ["name": "warehouse", "type": "string", "required": false],
                ],
            ],
            [
                "name": "reserve",
                "parameters": [["name": "sku", "type": "string"], ["name": "count", "type": "integer", "minimum": 1, "maximum": 10]],
            ],
            ["name": "audit", "scope": "admin"],
            ["name": "rebuild", "scope": "private"],
        ],
    ]
}

extension [HubCore.Output] {
    /// Envelopes sent to a session.
    func sent(to session: SessionID) -> [Envelope] {
        compactMap {
            switch $0 {
            case .send(session, let envelope): envelope
            case .deliver(session, let token, let message, _): message.limeEnvelope(token: token, to: nil)
            default: nil
            }
        }
    }

    func commands(to session: SessionID) -> [LIMECommand] {
        sent(to: session).compactMap { if case .command(let command) = $0 { return command } else { return nil } }
    }

    func messages(to session: SessionID) -> [LIMEMessage] {
        sent(to: session).compactMap { if case .message(let message) = $0 { return message } else { return nil } }
    }

    var recipients: [SessionID] {
        compactMap { if case .deliver(let session, _, _, _) = $0 { return session } else { return nil } }
    }
}

@Suite struct HubCorePubSubTests {
    /// The publication fast path takes only URIs the general path would read unchanged.
    @Test(
        arguments: [
            ("/topics/orders.created", "orders.created"), ("/topics/a", "a"), ("/topics/", nil), ("/topics", nil),
            ("/topics/a%2Eb", nil), ("/topics/a?queue=q", nil), ("/topics/a/b", nil), ("/queues/a", nil),
            ("lime://hub@relay.local/topics/a", nil),
        ] as [(String, String?)])
    func plainTopicsAgreeWithTheGeneralPath(_ uri: String, _ subject: String?) {
        #expect(HubCore.plainTopic(uri) == subject)
        if let subject {
            let (path, query) = HubCore.split(uri)
            #expect(query.isEmpty && path == "/topics/\(subject)")
        }
    }

    /// `forward` (a NATS PUB left in the read) delivers exactly as `publish` would, or declines
    /// and changes nothing.
    @Test func forwardingAgreesWithPublishingOrDeclines() throws {
        func core(keeping: String? = nil) throws -> HubCore {
            var core = HubCore(configuration: .init(hubNode: Node("postmaster@relay.local/hub")!))
            for session: SessionID in 1...4 { _ = core.register(session, node: Node("nats-\(session)@relay.local/\(session)")!) }
            try core.subscribe(
                1, token: "1", filter: "orders.*", queue: nil, echo: true, overflow: .bytesOnly)
            try core.subscribe(2, token: "1", filter: "orders.>", queue: nil, echo: true)
            try core.subscribe(3, token: "7", filter: "orders.new", queue: nil, echo: false)
            try core.subscribe(2, token: "2", filter: "work", queue: "workers", echo: true)
            try core.subscribe(4, token: "1", filter: "limited", queue: nil, echo: true)
            _ = core.unsubscribe(4, token: "1", after: 5)
            if let keeping { _ = try core.createQueue(QueueConfiguration(name: "kept", subjects: [keeping])) }
            return core
        }
        func published(_ core: inout HubCore, _ subject: String, from session: SessionID) -> [HubCore.Recipient] {
            let message = PublishedMessage(subject: subject, body: .bytes([1]))
            return core.publish(message, from: session, jetStream: true).outputs.compactMap { output in
                guard case .deliver(let session, let token, _, let limit) = output else { return nil }
                return HubCore.Recipient(session: session, token: token, limit: limit)
            }
        }
        func forwards(_ core: inout HubCore, _ subject: String, from session: SessionID, accepts: Bool = true) -> [HubCore.Recipient]? {
            var recipients: [HubCore.Recipient] = [HubCore.Recipient(session: 9, token: "x", limit: nil)]
            let before = core.statistics
            guard core.forward(subject: subject, hasReplyTo: false, from: session, accepts: { _ in accepts }, into: &recipients) else {
                #expect(recipients.count == 1 && core.statistics == before, "declined, nothing changed")
                return nil
            }
            return Array(recipients.dropFirst())
        }
        var forwarding = try core()
        var publishing = try core()
        // Plain: to every subscription but the publisher's own without echo, as publish does.
        let recipients = forwards(&forwarding, "orders.new", from: 3)
        #expect(recipients == published(&publishing, "orders.new", from: 3))
        #expect(Set(recipients?.map(\.session) ?? []) == [1, 2])
        #expect(forwarding.statistics == publishing.statistics)
        // Declined: a queue group, an auto-unsubscribe limit, no subscriber, the hub's own
        // subjects, a recipient the caller does not accept.
        for subject in ["work", "limited", "nobody", "$RELAY.ACK.kept.1"] { #expect(forwards(&forwarding, subject, from: 1) == nil) }
        #expect(forwards(&forwarding, "orders.new", from: 1, accepts: false) == nil)
        // With durable queues: never a subject one keeps; another once `publish` has looked it up.
        var keeping = try core(keeping: "orders.kept")
        #expect(forwards(&keeping, "orders.kept", from: 4) == nil)
        #expect(forwards(&keeping, "orders.eu", from: 4) == nil)
        _ = published(&keeping, "orders.eu", from: 4)
        #expect(forwards(&keeping, "orders.kept", from: 4) == nil)
        #expect(forwards(&keeping, "orders.eu", from: 4)?.count == 2)
        // Forwarded deliveries count towards a later `UNSUB sid max`: after three, `UNSUB 1 3` ends
        // session 1's sid 1 at once.
        _ = forwards(&forwarding, "orders.eu", from: 4)
        _ = forwards(&forwarding, "orders.eu", from: 4)
        let hadIt = forwarding.unsubscribe(1, token: "1", after: 3)
        #expect(hadIt)
        #expect(forwards(&forwarding, "orders.eu", from: 4)?.map(\.session) == [2])
    }

    @Test func wildcardsReachTheirSubscribersWithSubjectAndPublisher() {
        var hub = CoreHarness()
        for session: SessionID in 1...4 { hub.connect(session, "user\(session)@relay.local/i") }
        #expect(hub.command(1, .subscribe, "/topics/orders.*").commands(to: 1).first?.status == .success)
        hub.command(2, .subscribe, "/topics/orders.>")
        hub.command(3, .subscribe, "/topics/payments.*")
        let outputs = hub.command(4, .observe, "/topics/orders.eu", resource: ["id": 7], metadata: ["traceId": "t1"])
        #expect(Set(outputs.recipients) == [1, 2])
        let delivery = outputs.messages(to: 1)[0]
        #expect(delivery.content == ["id": 7])
        #expect(delivery.type == .applicationJSON)
        #expect(delivery.header.from == Node("user4@relay.local/i"))
        #expect(delivery.header.metadata?["#subject"] == "orders.eu")
        #expect(delivery.header.metadata?["#subscription"] == "orders.*")
        #expect(delivery.header.metadata?["traceId"] == "t1")
        // observe is fire-and-forget: nothing goes back to the publisher.
        #expect(outputs.sent(to: 4).isEmpty)
    }

    @Test func aConfirmedPublishIsAnsweredWithTheDeliveryCount() {
        var hub = CoreHarness()
        hub.connect(1, "a@relay.local/1")
        hub.connect(2, "b@relay.local/1")
        hub.command(2, .subscribe, "/topics/x")
        let outputs = hub.command(1, .set, "/topics/x", resource: "hi")
        let confirmation = outputs.commands(to: 1)[0]
        #expect(confirmation.status == .success && confirmation.resource == ["delivered": 1])
        #expect(outputs.messages(to: 2)[0].type == .textPlain)
        #expect(hub.command(1, .set, "/topics/nobody", resource: "hi").commands(to: 1)[0].resource == ["delivered": 0])
    }

    @Test func aPublisherDoesNotHearItselfUnlessItAsks() {
        var hub = CoreHarness()
        hub.connect(1, "a@relay.local/1")
        hub.command(1, .subscribe, "/topics/x")
        #expect(hub.command(1, .observe, "/topics/x", resource: "1").recipients.isEmpty)
        hub.command(1, .subscribe, "/topics/x.>?echo=true")
        #expect(hub.command(1, .observe, "/topics/x.y", resource: "1").recipients == [1])
    }

    @Test func aQueueGroupGetsEachMessageOnceInTurn() {
        var hub = CoreHarness()
        for session: SessionID in 1...4 { hub.connect(session, "w\(session)@relay.local/i") }
        for session: SessionID in 1...3 { hub.command(session, .subscribe, "/topics/jobs.*?queue=workers") }
        hub.command(4, .subscribe, "/topics/jobs.>")
        var counts: [SessionID: Int] = [:]
        for n in 0..<30 {
            let recipients = hub.command(4, .observe, "/topics/jobs.\(n)", resource: "job").recipients
            #expect(recipients.count == 1, "one queue member, and not the publisher's own plain subscription")
            for recipient in recipients { counts[recipient, default: 0] += 1 }
        }
        #expect(counts == [1: 10, 2: 10, 3: 10])
    }

    @Test func targetsLimitWhoReceivesAnEvent() {
        var hub = CoreHarness()
        for session: SessionID in 1...3 { hub.connect(session, "n\(session)@relay.local/i") }
        for session: SessionID in 1...2 { hub.command(session, .subscribe, "/topics/ev") }
        let outputs = hub.command(3, .observe, "/topics/ev", resource: "x", metadata: ["#targets": "n2@relay.local"])
        #expect(outputs.recipients == [2])
        #expect(outputs.messages(to: 2)[0].header.metadata?["#targets"] == nil)
    }

    @Test func unsubscribingStopsDeliveries() {
        var hub = CoreHarness()
        hub.connect(1, "a@relay.local/1")
        hub.connect(2, "b@relay.local/1")
        hub.command(1, .subscribe, "/topics/q?queue=g")
        #expect(hub.command(1, .unsubscribe, "/topics/q").commands(to: 1)[0].status == .failure, "the queue is part of the name")
        #expect(hub.command(1, .unsubscribe, "/topics/q?queue=g").commands(to: 1)[0].status == .success)
        #expect(hub.command(2, .observe, "/topics/q", resource: "x").recipients.isEmpty)
    }

    @Test(arguments: ["/topics/a..b", "/topics/a.>.b", "/topics/a%20b"])
    func anInvalidFilterIsRefusedWithAReason(_ uri: String) {
        var hub = CoreHarness()
        hub.connect(1, "a@relay.local/1")
        let response = hub.command(1, .subscribe, uri).commands(to: 1)[0]
        #expect(response.status == .failure && response.reason?.code == ReasonCode.validationInvalidResource)
        #expect(hub.command(1, .set, "/topics/a.*", resource: "x").commands(to: 1)[0].reason?.description.contains("wildcard") == true)
    }

    @Test func aClosedSessionLosesItsSubscriptions() {
        var hub = CoreHarness()
        hub.connect(1, "a@relay.local/1")
        hub.connect(2, "b@relay.local/1")
        hub.command(1, .subscribe, "/topics/x")
        _ = hub.core.sessionClosed(1)
        #expect(hub.command(2, .observe, "/topics/x", resource: "x").recipients.isEmpty)
    }
}

@Suite struct HubCoreServiceTests {
    /// Sessions 1 and 2 serve inventory; session 3 calls.
    private func harness() -> CoreHarness {
        var hub = CoreHarness()
        hub.connect(1, "inventory@relay.local/a")
        hub.connect(2, "inventory@relay.local/b")
        hub.connect(3, "caller@relay.local/c")
        #expect(hub.command(1, .set, "/services/inventory", resource: CoreHarness.inventory).commands(to: 1)[0].status == .success)
        #expect(hub.command(2, .set, "/services/inventory", resource: CoreHarness.inventory).commands(to: 2)[0].status == .success)
        return hub
    }

    @Test func discoveryListsServicesInstancesAndMethods() {
        var hub = harness()
        let list = hub.command(3, .get, "/services").commands(to: 3)[0]
        #expect(list.resource?["services"]?.arrayValue?.count == 1)
        let one = hub.command(3, .get, "/services/inventory").commands(to: 3)[0].resource
        #expect(one?["instances"] == 2)
        #expect(one?["methods"]?.arrayValue?.count == 4)
        #expect(one?["methods"]?.arrayValue?.first?["parameters"]?.arrayValue?.first?["pattern"] == "[A-Z]+")
        #expect(hub.command(3, .get, "/services/nothing").commands(to: 3)[0].reason?.code == ReasonCode.commandResourceNotFound)
    }

    @Test func aRequestReachesOneInstanceAndTheResponseReturnsWithTheCallersID() {
        var hub = harness()
        let outputs = hub.command(3, .get, "/services/inventory/stock", resource: ["sku": "ABC"], id: "mine")
        let forwardedTo = [1, 2].filter { !outputs.commands(to: $0).isEmpty }
        #expect(forwardedTo.count == 1)
        let request = outputs.commands(to: forwardedTo[0])[0]
        #expect(request.header.from == Node("caller@relay.local/c"))
        #expect(request.resource == ["sku": "ABC"])
        #expect(request.header.metadata?["#deadline"] == "30000")
        #expect(outputs.contains(.startTimer(.deadline(1), milliseconds: 30_000)))
        let answer = hub.respond(forwardedTo[0], to: request, resource: ["count": 5])
        let response = answer.commands(to: 3)[0]
        #expect(response.header.id == "mine" && response.status == .success && response.resource == ["count": 5])
        #expect(response.header.to == Node("caller@relay.local/c"))
        #expect(answer.contains(.cancelTimer(.deadline(1))))
    }

    @Test func requestsGoToTheInstanceWithFewestOutstanding() {
        var hub = harness()
        var busy: [SessionID] = []
        for n in 0..<4 {
            let outputs = hub.command(3, .get, "/services/inventory/stock", resource: ["sku": "A"], id: "r\(n)")
            busy += [1, 2].filter { !outputs.commands(to: $0).isEmpty }
        }
        #expect(busy.filter { $0 == 1 }.count == 2 && busy.filter { $0 == 2 }.count == 2)
    }

    @Test func aRequestWithoutInstanceFailsAtOnce() {
        var hub = CoreHarness()
        hub.connect(3, "caller@relay.local/c")
        let response = hub.command(3, .get, "/services/inventory/stock").commands(to: 3)[0]
        #expect(response.status == .failure && response.reason?.code == ReasonCode.routingDestinationNotFound)
    }

    @Test func badCallsAreRefusedWithAReason() {
        var hub = harness()
        let unknown = hub.command(3, .get, "/services/inventory/teleport").commands(to: 3)[0]
        #expect(unknown.reason?.code == ReasonCode.commandMethodNotSupported)
        let missing = hub.command(3, .get, "/services/inventory/stock", resource: [:]).commands(to: 3)[0]
        #expect(missing.reason?.code == ReasonCode.commandInvalidArgument && missing.reason?.description.contains("sku") == true)
        let pattern = hub.command(3, .get, "/services/inventory/stock", resource: ["sku": "abc"]).commands(to: 3)[0]
        #expect(pattern.reason?.description.contains("pattern") == true)
        let range = hub.command(3, .set, "/services/inventory/reserve", resource: ["sku": "A", "count": 11]).commands(to: 3)[0]
        #expect(range.reason?.description.contains("at most 10") == true)
        let type = hub.command(3, .set, "/services/inventory/reserve", resource: ["sku": "A", "count": 1.5]).commands(to: 3)[0]
        #expect(type.reason?.description.contains("integer") == true)
        let extra = hub.command(3, .get, "/services/inventory/stock", resource: ["sku": "A", "colour": "red"]).commands(to: 3)[0]
        #expect(extra.reason?.description.contains("colour") == true)
    }

    @Test func scopesLimitWhoMayCall() {
        var hub = harness()
        hub.connect(4, "root@relay.local/x")
        #expect(hub.command(3, .get, "/services/inventory/audit").commands(to: 3)[0].reason?.code == ReasonCode.commandNotAllowed)
        #expect(hub.command(4, .get, "/services/inventory/audit").commands(to: 4).isEmpty, "an admin's call is forwarded")
        #expect(hub.command(3, .get, "/services/inventory/rebuild").commands(to: 3)[0].reason?.code == ReasonCode.commandNotAllowed)
        let outputs = hub.command(1, .get, "/services/inventory/rebuild")
        #expect(outputs.commands(to: 1).allSatisfy { $0.status == nil }, "the service's own nodes may call private methods")
    }

    @Test func aConflictingRegistrationIsRefused() {
        var hub = harness()
        hub.connect(5, "other@relay.local/1")
        let response = hub.command(5, .set, "/services/inventory", resource: ["methods": [["name": "other"]]]).commands(to: 5)[0]
        #expect(response.reason?.code == RelayReasonCode.registrationConflict)
        let invalid = hub.command(5, .set, "/services/broken", resource: ["methods": []]).commands(to: 5)[0]
        #expect(invalid.reason?.code == ReasonCode.commandInvalidArgument)
    }

    @Test func theDeadlineFailsTheRequestAndALateResponseIsDiscarded() {
        var hub = harness()
        let outputs = hub.command(3, .get, "/services/inventory/stock", resource: ["sku": "A"], id: "slow", metadata: ["#deadline": "500"])
        #expect(outputs.contains(.startTimer(.deadline(1), milliseconds: 500)))
        let instance: SessionID = outputs.commands(to: 1).isEmpty ? 2 : 1
        let request = outputs.commands(to: instance)[0]
        let timeout = hub.core.timerFired(.deadline(1)).commands(to: 3)[0]
        #expect(timeout.header.id == "slow" && timeout.reason?.code == RelayReasonCode.timedOut)
        #expect(hub.respond(instance, to: request, resource: "late").isEmpty)
        #expect(hub.core.timerFired(.deadline(1)).isEmpty)
    }

    @Test func theCallerCanCancel() {
        var hub = harness()
        let outputs = hub.command(3, .get, "/services/inventory/stock", resource: ["sku": "A"], id: "r1")
        let instance: SessionID = outputs.commands(to: 1).isEmpty ? 2 : 1
        let cancel = hub.command(3, .delete, "/requests/r1")
        let toCaller = cancel.commands(to: 3)
        #expect(toCaller.contains { $0.header.id == "r1" && $0.reason?.code == RelayReasonCode.cancelled })
        #expect(toCaller.contains { $0.status == .success && $0.method == .delete })
        #expect(cancel.commands(to: instance).first?.uri == "/requests/relay-1")
        #expect(hub.command(3, .delete, "/requests/r1").commands(to: 3)[0].status == .failure)
    }

    @Test func callersLearnAtOnceWhenTheirInstanceDisconnects() {
        var hub = harness()
        let outputs = hub.command(3, .get, "/services/inventory/stock", resource: ["sku": "A"], id: "r1")
        let instance: SessionID = outputs.commands(to: 1).isEmpty ? 2 : 1
        let failure = hub.core.sessionClosed(instance).commands(to: 3)[0]
        #expect(failure.header.id == "r1" && failure.reason?.code == RelayReasonCode.instanceLost)
        #expect(hub.command(3, .get, "/services/inventory").commands(to: 3)[0].resource?["instances"] == 1)
    }

    @Test func callAgainRedeliversOnceThenFails() {
        var hub = harness()
        let first = hub.command(3, .get, "/services/inventory/stock", resource: ["sku": "A"], id: "r1")
        let firstInstance: SessionID = first.commands(to: 1).isEmpty ? 2 : 1
        let again = Reason(code: RelayReasonCode.callAgain, description: "busy")
        let second = hub.respond(firstInstance, to: first.commands(to: firstInstance)[0], failure: again)
        #expect(second.commands(to: 3).isEmpty)
        let secondInstance: SessionID = second.commands(to: 1).isEmpty ? 2 : 1
        let redelivered = second.commands(to: secondInstance)[0]
        #expect(redelivered.resource == ["sku": "A"])
        let final = hub.respond(secondInstance, to: redelivered, failure: again).commands(to: 3)[0]
        #expect(final.header.id == "r1" && final.reason?.code == RelayReasonCode.callAgainRefused)
    }

    @Test func aPeriodSubscriptionIsAnsweredAgainUntilCancelled() {
        var hub = harness()
        let tooFast = hub.command(3, .get, "/services/inventory/stock", resource: ["sku": "A"], id: "p0", metadata: ["#period": "0.5"])
        #expect(tooFast.commands(to: 3)[0].reason?.code == ReasonCode.commandNotAllowed)
        var outputs = hub.command(3, .get, "/services/inventory/stock", resource: ["sku": "A"], id: "p1", metadata: ["#period": "2"])
        for round in 1...3 {
            let instance: SessionID = outputs.commands(to: 1).isEmpty ? 2 : 1
            let answered = hub.respond(instance, to: outputs.commands(to: instance)[0], resource: .number(JSONNumber(round)))
            #expect(answered.commands(to: 3)[0].header.id == "p1")
            #expect(answered.commands(to: 3)[0].resource == .number(JSONNumber(round)))
            #expect(answered.contains(.startTimer(.period(.init(session: 3, id: "p1")), milliseconds: 2000)))
            outputs = hub.core.timerFired(.period(.init(session: 3, id: "p1")))
        }
        #expect(hub.command(3, .delete, "/requests/p1").commands(to: 3).contains { $0.status == .success && $0.method == .delete })
        #expect(hub.core.timerFired(.period(.init(session: 3, id: "p1"))).isEmpty)
    }

    @Test func anEventSubscriptionIsAnsweredEveryNEvents() {
        var hub = harness()
        #expect(
            hub.command(3, .get, "/services/inventory/stock", resource: ["sku": "A"], id: "e0", metadata: ["#events": "1"]).commands(to: 3)[
                0
            ].reason?.code == ReasonCode.commandNotAllowed)
        let first = hub.command(3, .get, "/services/inventory/stock", resource: ["sku": "A"], id: "e1", metadata: ["#events": "2"])
        let instance: SessionID = first.commands(to: 1).isEmpty ? 2 : 1
        _ = hub.respond(instance, to: first.commands(to: instance)[0], resource: 1)
        #expect(hub.command(1, .observe, "/services/inventory/stock/events").isEmpty)
        let second = hub.command(2, .observe, "/services/inventory/stock/events")
        let again = [1, 2].flatMap { second.commands(to: $0) }
        #expect(again.count == 1 && again[0].resource == ["sku": "A"])
        // Events from a node that does not serve the service count for nothing.
        #expect(hub.command(3, .observe, "/services/inventory/stock/events").isEmpty)
        _ = hub.core.sessionClosed(3)
        #expect(hub.command(1, .observe, "/services/inventory/stock/events").isEmpty)
        #expect(hub.command(1, .observe, "/services/inventory/stock/events").isEmpty)
    }

    @Test func aCompoundMethodCallsItsStepsWithAliasesAndPresets() {
        var hub = harness()
        let definition: JSONValue = [
            "description": "check then reserve",
            "methods": [
                ["service": "inventory", "method": "stock", "aliases": ["item": "sku"], "presets": ["warehouse": "eu"]],
                ["service": "inventory", "method": "reserve", "aliases": ["item": "sku"], "presets": ["count": 1]],
            ],
        ]
        #expect(hub.command(3, .set, "/compound/checkout", resource: definition).commands(to: 3)[0].status == .success)
        let listed = hub.command(3, .get, "/compound").commands(to: 3)[0].resource?["compound"]?.arrayValue
        #expect(listed?.first?["name"] == "checkout")
        var outputs = hub.command(3, .get, "/compound/checkout", resource: ["item": "ABC"], id: "k1")
        var instance: SessionID = outputs.commands(to: 1).isEmpty ? 2 : 1
        let stock = outputs.commands(to: instance)[0]
        #expect(stock.uri == "/services/inventory/stock" && stock.resource == ["sku": "ABC", "warehouse": "eu"])
        outputs = hub.respond(instance, to: stock, resource: ["count": 3])
        instance = outputs.commands(to: 1).isEmpty ? 2 : 1
        let reserve = outputs.commands(to: instance)[0]
        #expect(reserve.uri == "/services/inventory/reserve" && reserve.resource == ["sku": "ABC", "count": 1])
        let done = hub.respond(instance, to: reserve, resource: ["ok": true]).commands(to: 3)[0]
        #expect(done.header.id == "k1" && done.status == .success)
        #expect(done.resource == ["inventory.stock": ["count": 3], "inventory.reserve": ["ok": true]])
        #expect(hub.command(3, .delete, "/compound/checkout").commands(to: 3)[0].status == .success)
        #expect(
            hub.command(3, .get, "/compound/checkout", resource: ["item": "ABC"]).commands(to: 3)[0].reason?.code
                == ReasonCode.commandResourceNotFound)
    }

    @Test func aFailingStepFailsTheWholeCompoundCall() {
        var hub = harness()
        let definition: JSONValue = ["methods": [["service": "inventory", "method": "stock", "aliases": ["item": "sku"]]]]
        hub.command(3, .set, "/compound/peek", resource: definition)
        let bad = hub.command(3, .get, "/compound/peek", resource: ["item": "lowercase"]).commands(to: 3)[0]
        #expect(bad.status == .failure && bad.reason?.description.contains("peek") == true)
        #expect(
            hub.command(3, .set, "/compound/broken", resource: ["methods": [["service": "inventory", "method": "nope"]]]).commands(to: 3)[0]
                .reason?.code == ReasonCode.commandInvalidArgument)
    }
}

@Suite struct HubCoreRetentionTests {
    private func publish(_ hub: inout CoreHarness, _ text: String, at now: Int64) -> [HubCore.Output] {
        let outputs = hub.command(1, .observe, "/topics/work", resource: .string(text))
        var after: [HubCore.Output] = []
        for case .persist(let copies, _) in outputs {
            for copy in copies { after += hub.core.persisted(queue: copy.queue, copy.queued, at: now) }
        }
        return after
    }

    @Test func theOldestWaitingMessagesMakeRoomBeyondTheCount() throws {
        var hub = CoreHarness()
        hub.connect(1, "p@relay.local/1")
        hub.connect(2, "c@relay.local/1")
        _ = try hub.core.createQueue(QueueConfiguration(name: "q", subjects: ["work"], maximumMessages: 2))
        _ = publish(&hub, "a", at: 0)
        _ = publish(&hub, "b", at: 0)
        let third = publish(&hub, "c", at: 0)
        #expect(third.contains(.unpersist(queue: "q", sequence: 1)))
        let attached = try hub.core.attachConsumer(2, token: "queue:q", queue: "q", credit: 10)
        let bodies: [PublishedMessage.Body] = attached.compactMap {
            if case .deliver(_, _, let message, _) = $0 { return message.body }
            return nil
        }
        #expect(bodies == [.text("b"), .text("c")])
        let info = hub.command(2, .get, "/queues/q").commands(to: 2)[0].resource
        #expect(info?["droppedByRetention"] == 1 && info?["messages"] == 2)
    }

    @Test func expiredMessagesGoToTheDeadLettersAndOldOnesAreDropped() throws {
        var hub = CoreHarness()
        hub.connect(1, "p@relay.local/1")
        hub.connect(2, "d@relay.local/1")
        hub.command(2, .subscribe, "/topics/dead")
        _ = try hub.core.createQueue(QueueConfiguration(name: "q", subjects: ["work"], deadLetterSubject: "dead", timeToLiveSeconds: 1))
        _ = publish(&hub, "short-lived", at: 0)
        #expect(hub.core.sweepQueues(now: 500).isEmpty)
        let swept = hub.core.sweepQueues(now: 1_500)
        #expect(swept.contains(.unpersist(queue: "q", sequence: 1)))
        let letter = swept.messages(to: 2).first
        #expect(letter?.content == "short-lived" && letter?.header.metadata?["#deadReason"]?.hasPrefix("Expired") == true)
        _ = try hub.core.createQueue(QueueConfiguration(name: "aged", subjects: ["work"], maximumAgeSeconds: 1))
        _ = publish(&hub, "old", at: 0)
        let dropped = hub.core.sweepQueues(now: 2_000)
        #expect(dropped.contains(.unpersist(queue: "aged", sequence: 1)))
        #expect(hub.command(2, .get, "/queues/aged").commands(to: 2)[0].resource?["droppedByRetention"] == 1)
    }
}
