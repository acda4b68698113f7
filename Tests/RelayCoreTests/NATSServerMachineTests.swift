import Testing

@testable import RelayCore

@Suite struct NATSServerMachineTests {
    private func machine(authRequired: Bool = false) -> NATSServerConnectionMachine {
        NATSServerConnectionMachine(configuration: .init(info: ["server_id": "T", "headers": true], authRequired: authRequired))
    }

    private func connected(_ options: JSONObject = [:]) -> NATSServerConnectionMachine {
        var machine = machine()
        _ = machine.connected()
        _ = machine.operationReceived(.connect(options))
        _ = machine.connectAccepted()
        return machine
    }

    @Test func aReadsOperationsTogetherActAsOneByOne() {
        // The handler collects a whole read's actions in one array; they must be those of feeding
        // the operations one by one, including around CONNECT, errors and verbose +OKs.
        let reads: [[NATSOperation]] = [
            [.connect(["verbose": true]), .subscribe(subject: "a", queue: nil, sid: "1"), .ping],
            [
                .publish(subject: "a", replyTo: "r", headers: nil, payload: [1]), .pong,
                .publish(subject: "a b", replyTo: nil, headers: nil, payload: []),
            ],
            [.subscribe(subject: "", queue: nil, sid: "2"), .unsubscribe(sid: "1", max: 3), .connect([:])],
            [.publish(subject: "h", replyTo: nil, headers: NATSHeaders(status: 503), payload: []), .ping],
        ]
        for options in [["verbose": true, "headers": false] as JSONObject, ["headers": true]] {
            var batched = connected(options)
            var single = connected(options)
            for operations in reads {
                var actions: [NATSServerConnectionMachine.Action] = []
                for operation in operations { batched.operationReceived(operation, into: &actions) }
                #expect(actions == operations.flatMap { single.operationReceived($0) })
                #expect(batched.state == single.state)
            }
        }
    }

    @Test func aPublishLeftInPlaceIsForwardedOnceConnected() {
        let publication = NATSPublishInPlace(subject: "orders.new", replyTo: "r", payload: 10..<15)
        var actions: [NATSServerConnectionMachine.Action] = []
        // Before CONNECT is accepted the machine needs it as an operation (it may be deferred).
        var waiting = machine(authRequired: true)
        _ = waiting.connected()
        #expect(!waiting.publishInPlaceReceived(publication, into: &actions) && actions.isEmpty)
        var machine = connected()
        #expect(machine.publishInPlaceReceived(publication, into: &actions))
        #expect(actions == [.forward(publication)])
        actions = []
        #expect(machine.publishInPlaceReceived(NATSPublishInPlace(subject: "a..b", replyTo: nil, payload: 0..<0), into: &actions))
        #expect(actions == [.send([.error("Invalid Publish Subject")])])
        var verbose = connected(["verbose": true])
        actions = []
        #expect(verbose.publishInPlaceReceived(publication, into: &actions))
        #expect(actions == [.forward(publication), .send([.ok])])
    }

    @Test func sendsInfoThenChecksConnect() {
        var machine = machine()
        #expect(machine.connected() == [.send([.info(["server_id": "T", "headers": true])])])
        guard
            case .authenticate(let options)? = machine.operationReceived(
                .connect(["verbose": true, "echo": false, "headers": true, "no_responders": true, "user": "u", "pass": "p"])
            ).first
        else {
            Issue.record("no authentication")
            return
        }
        #expect(
            options.verbose && !options.echo && options.headers && options.noResponders && options.user == "u" && options.password == "p")
        // Operations that arrive meanwhile wait for the verdict.
        #expect(machine.operationReceived(.ping).isEmpty)
        #expect(machine.connectAccepted() == [.register(options), .send([.ok]), .send([.pong])])
    }

    @Test func refusedCredentialsCloseWithAuthorizationViolation() {
        var machine = machine(authRequired: true)
        _ = machine.operationReceived(.connect(["user": "u"]))
        #expect(machine.connectRejected() == [.failAndClose(NATSProtocolError(.authorization))])
        var early = self.machine(authRequired: true)
        guard case .failAndClose(let error)? = early.operationReceived(.subscribe(subject: "a", queue: nil, sid: "1")).first else {
            Issue.record("not refused")
            return
        }
        #expect(error.kind == .authorization)
    }

    @Test func withoutAuthenticationOperationsMayComeBeforeConnect() {
        var machine = machine()
        #expect(
            machine.operationReceived(.subscribe(subject: "a", queue: nil, sid: "1")) == [
                .register(NATSConnectOptions()), .subscribe(sid: "1", subject: "a", queue: nil),
            ])
    }

    @Test func answersPingsAndAcknowledgesInVerboseMode() {
        var quiet = connected()
        #expect(quiet.operationReceived(.ping) == [.send([.pong])])
        #expect(quiet.operationReceived(.subscribe(subject: "a", queue: "q", sid: "1")) == [.subscribe(sid: "1", subject: "a", queue: "q")])
        var verbose = connected(["verbose": true])
        #expect(verbose.operationReceived(.unsubscribe(sid: "1", max: 2)) == [.unsubscribe(sid: "1", max: 2), .send([.ok])])
    }

    @Test func invalidSubjectsGetAnErrorButTheConnectionStays() {
        var machine = connected()
        #expect(machine.operationReceived(.subscribe(subject: "a..b", queue: nil, sid: "1")) == [.send([.error("Invalid Subject")])])
        #expect(
            machine.operationReceived(.publish(subject: "a.*", replyTo: nil, headers: nil, payload: [])) == [
                .send([.error("Invalid Publish Subject")])
            ])
        #expect(machine.options != nil)
    }

    @Test func headersNeedToBeEnabled() {
        var machine = connected()
        guard
            case .failAndClose(let error)? = machine.operationReceived(
                .publish(subject: "a", replyTo: nil, headers: NATSHeaders(), payload: [])
            ).first
        else {
            Issue.record("not refused")
            return
        }
        #expect(error.kind == .parser)
    }

    @Test func publicationsCarryTheRegisteredNodeAndTheirHeadersAsMetadata() {
        let anonymous = Node(identity: Identity(name: "nats-7", domain: "relay.local"), instance: "7")
        let named = Node(identity: Identity(name: "alice", domain: "relay.local"), instance: "7")
        var machine = NATSServerConnectionMachine(configuration: .init(info: [:], anonymousNode: anonymous))
        _ = machine.operationReceived(.connect(["headers": true]))
        // Operations that come with CONNECT, before the verdict, are published as the accepted node.
        _ = machine.operationReceived(.publish(subject: "a", replyTo: "r", headers: nil, payload: [1]))
        var headers = NATSHeaders(status: 503)
        headers.append("Content-Type", "application/json")
        headers.append("X-Trace", "1")
        headers.append("X-Trace", "2")
        let actions = machine.connectAccepted(as: named)
        #expect(machine.publisher == named)
        #expect(actions.dropFirst() == [.publish(PublishedMessage(subject: "a", replyTo: "r", publisher: named, body: .bytes([1])))])
        var withHeaders: [NATSServerConnectionMachine.Action] = []
        machine.operationReceived(.publish(subject: "b", replyTo: nil, headers: headers, payload: [2]), into: &withHeaders)
        #expect(
            withHeaders == [
                .publish(
                    PublishedMessage(
                        subject: "b", publisher: named, type: .applicationJSON, body: .bytes([2]), metadata: ["X-Trace": "1, 2"],
                        status: 503))
            ])
        // Without credentials (or without CONNECT), the anonymous node publishes.
        var guest = NATSServerConnectionMachine(configuration: .init(info: [:], anonymousNode: anonymous))
        let guestActions = guest.operationReceived(.publish(subject: "a", replyTo: nil, headers: nil, payload: []))
        #expect(
            guestActions == [
                .register(NATSConnectOptions()), .publish(PublishedMessage(subject: "a", publisher: anonymous, body: .bytes([]))),
            ])
    }

    @Test func everyInvalidPublishSubjectIsRefusedAfterValidOnes() {
        // The machine remembers the last valid subject to skip checking it again: that must not
        // let an invalid one through, the first time or any later time.
        var machine = connected()
        let error: [NATSServerConnectionMachine.Action] = [.send([.error("Invalid Publish Subject")])]
        for subject in ["a.b", "a.>", "a.b", "a.>", "", "a.b", "a..b"] {
            let actions = machine.operationReceived(.publish(subject: subject, replyTo: nil, headers: nil, payload: []))
            if subject == "a.b" {
                #expect(actions == [.publish(PublishedMessage(subject: subject, body: .bytes([])))])
            } else {
                #expect(actions == error, "\(subject)")
            }
        }
    }

    @Test func anUnansweredPingMakesTheConnectionStale() {
        var machine = connected()
        #expect(machine.pingIntervalElapsed() == [.send([.ping])])
        _ = machine.operationReceived(.pong)
        #expect(machine.pingIntervalElapsed() == [.send([.ping])])
        #expect(machine.pingIntervalElapsed() == [.send([.ping])])
        #expect(machine.pingIntervalElapsed() == [.failAndClose(NATSProtocolError(.staleConnection))])
        #expect(machine.operationReceived(.ping).isEmpty)
    }

    @Test func errorTextsAreNATSServers() {
        #expect(NATSProtocolError(.unknownOperation).errText == "Unknown Protocol Operation")
        #expect(NATSProtocolError(.maximumPayload).errText == "Maximum Payload Violation")
        #expect(NATSProtocolError(.slowConsumer).closesConnection)
        #expect(!NATSProtocolError(.invalidSubject).closesConnection)
    }
}

@Suite struct HubCoreNATSTests {
    private func harness() -> CoreHarness {
        var hub = CoreHarness()
        hub.connect(1, "nats-1@relay.local/1")
        hub.connect(2, "nats-2@relay.local/2")
        return hub
    }

    private func message(_ subject: String, replyTo: String? = nil) -> PublishedMessage {
        PublishedMessage(subject: subject, replyTo: replyTo, body: .bytes(Array("x".utf8)))
    }

    @Test func aFreedSubscriptionSlotServesOnlyItsNewSubscription() throws {
        // Slots are reused: nothing cached for the old filter may reach the new subscription.
        var hub = harness()
        try hub.core.subscribe(1, token: "a", filter: "old.subject", queue: nil, echo: true)
        #expect(hub.core.publish(message("old.subject"), from: 2).delivered == 1)
        hub.core.unsubscribe(1, token: "a")
        try hub.core.subscribe(1, token: "b", filter: "new.*", queue: nil, echo: true)
        #expect(hub.core.publish(message("old.subject"), from: 2).delivered == 0)
        let (outputs, delivered) = hub.core.publish(message("new.subject"), from: 2)
        #expect(delivered == 1)
        guard case .deliver(1, "b", _, _)? = outputs.first else {
            Issue.record("no delivery to the new subscription: \(outputs)")
            return
        }
        // A session's subscriptions go with it, and their slots with them.
        _ = hub.core.sessionClosed(1)
        #expect(hub.core.publish(message("new.subject"), from: 2).delivered == 0)
        hub.connect(1, "nats-1@relay.local/1")
        try hub.core.subscribe(1, token: "b", filter: "other", queue: nil, echo: true)
        #expect(hub.core.publish(message("new.subject"), from: 2).delivered == 0)
        #expect(hub.core.publish(message("other"), from: 2).delivered == 1)
    }

    @Test func aDeliveryCarriesItsSubscriptionsLimit() throws {
        var hub = harness()
        let limit = DeliveryLimit(maximumHeld: 3, policy: .dropOldest)
        try hub.core.subscribe(1, token: "s", filter: "t", queue: nil, echo: true, overflow: limit)
        guard case .deliver(1, "s", _, let carried)? = hub.core.publish(message("t"), from: 2).outputs.first else {
            Issue.record("no delivery")
            return
        }
        #expect(carried == limit)
    }

    @Test func autoUnsubscribeEndsAfterMaxDeliveries() throws {
        var hub = harness()
        try hub.core.subscribe(1, token: "7", filter: "t", queue: nil, echo: true)
        hub.core.unsubscribe(1, token: "7", after: 2)
        var delivered: [Int] = []
        for _ in 0..<4 { delivered.append(hub.core.publish(message("t"), from: 2).delivered) }
        #expect(delivered == [1, 1, 0, 0])
    }

    @Test func aRequestNobodyHearsGetsA503OnItsInbox() throws {
        var hub = harness()
        try hub.core.subscribe(1, token: "inbox", filter: "_INBOX.1.*", queue: nil, echo: true)
        let (outputs, delivered) = hub.core.publish(message("svc.x", replyTo: "_INBOX.1.a"), from: 1, noResponders: true)
        #expect(delivered == 0)
        guard case .deliver(1, "inbox", let status, _)? = outputs.first else { Issue.record("no status"); return }
        #expect(status.status == 503 && status.subject == "_INBOX.1.a")
        #expect(
            status.natsOperation(sid: "inbox", headersEnabled: true)
                == .message(subject: "_INBOX.1.a", sid: "inbox", replyTo: nil, headers: NATSHeaders(status: 503), payload: []))
        #expect(hub.core.publish(message("svc.x", replyTo: "_INBOX.1.b"), from: 1, noResponders: false).outputs.isEmpty)
    }

    @Test func echoOffKeepsAConnectionsOwnMessagesFromIt() throws {
        var hub = harness()
        try hub.core.subscribe(1, token: "1", filter: "e", queue: nil, echo: false)
        try hub.core.subscribe(2, token: "1", filter: "e", queue: nil, echo: true)
        #expect(hub.core.publish(message("e"), from: 1).delivered == 1)
        #expect(hub.core.publish(message("e"), from: 2).delivered == 2)
    }

    @Test func payloadsCrossDialects() {
        let fromNATS = PublishedMessage(subject: "s", body: .bytes([0xFF, 0x00]))
        #expect(fromNATS.limeContent.0 == "application/octet-stream")
        #expect(fromNATS.limeContent.1.value == .string("/wA="))
        let jsonFromNATS = PublishedMessage(subject: "s", type: .applicationJSON, body: .bytes(Array(#"{"a":1}"#.utf8)))
        #expect(jsonFromNATS.limeContent.1.value == ["a": 1])
        let fromLIME = PublishedMessage(
            subject: "s", type: .applicationJSON, body: .json(["a": 1]), metadata: ["Trace": "t", "#internal": "x"])
        guard case .message(_, _, _, let headers?, let payload) = fromLIME.natsOperation(sid: "1", headersEnabled: true) else {
            Issue.record("no headers")
            return
        }
        #expect(payload == Array(#"{"a":1}"#.utf8))
        #expect(headers.fields.map(\.name) == ["Content-Type", "Trace"])
        #expect(Base64.decode(Base64.encode([1, 2, 3, 4, 5])) == [1, 2, 3, 4, 5])
    }
}
