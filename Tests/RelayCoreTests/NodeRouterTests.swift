import Testing

@testable import RelayCore

@Suite struct NodeRouterTests {
    let hub = Node("postmaster@relay.local/hub")!
    let alicePhone = Node("alice@relay.local/phone")!
    let aliceDesk = Node("alice@relay.local/desk")!
    let bob = Node("bob@relay.local/1")!

    private func router(receipts: Int = 100) -> NodeRouter {
        var router = NodeRouter(configuration: .init(hubNode: hub, maximumReceiptRoutes: receipts))
        _ = router.register(1, node: alicePhone)
        _ = router.register(2, node: aliceDesk)
        _ = router.register(3, node: bob)
        return router
    }

    private func message(id: String? = "m1", from: Node, to: Node?) -> Envelope {
        .message(LIMEMessage(header: EnvelopeHeader(id: id, from: from, to: to), type: .textPlain, content: "hi"))
    }

    @Test func aFullNodeReachesThatSession() {
        var router = router()
        let routing = router.route(message(from: bob, to: alicePhone), from: 3)
        #expect(routing.recipients == [1])
        #expect(routing.reply == nil)
    }

    @Test func anIdentityReachesEverySessionForMessagesAndNotifications() {
        var router = router()
        #expect(Set(router.route(message(from: bob, to: Node("ALICE@relay.local")), from: 3).recipients) == [1, 2])
        let notification = Envelope.notification(
            LIMENotification(header: EnvelopeHeader(id: "x", from: bob, to: Node("alice@relay.local")), event: .consumed))
        #expect(Set(router.route(notification, from: 3).recipients) == [1, 2])
    }

    @Test func anIdentityReachesOneSessionInTurnForCommands() {
        var router = router()
        let command = Envelope.command(
            LIMECommand(header: EnvelopeHeader(id: "c", from: bob, to: Node("alice@relay.local")), method: .get, uri: "/x"))
        let first = router.route(command, from: 3).recipients
        let second = router.route(command, from: 3).recipients
        #expect(first.count == 1 && second.count == 1)
        #expect(Set(first + second) == [1, 2])
    }

    @Test func anUndeliverableMessageWithAnIDGetsAFailedNotification() {
        var router = router()
        let nobody = Node("nobody@relay.local")!
        let routing = router.route(message(from: bob, to: nobody), from: 3)
        #expect(routing.recipients.isEmpty)
        guard case .notification(let failed)? = routing.reply else { Issue.record("no failure"); return }
        #expect(failed.event == .failed && failed.header.id == "m1" && failed.header.to == bob)
        #expect(failed.reason?.code == ReasonCode.routingDestinationNotFound)
        #expect(router.statistics.undeliverable == 1)
    }

    @Test func anUndeliverableMessageWithoutIDIsDroppedAndCounted() {
        var router = router()
        let routing = router.route(message(id: nil, from: bob, to: Node("nobody@relay.local")), from: 3)
        #expect(routing.reply == nil && routing.dropped)
        #expect(router.statistics.undeliverable == 1)
    }

    @Test func aCommandToAnUnknownDestinationFails() {
        var router = router()
        let command = Envelope.command(
            LIMECommand(header: EnvelopeHeader(id: "c1", from: bob, to: Node("svc@relay.local")), method: .get, uri: "/x"))
        guard case .command(let response)? = router.route(command, from: 3).reply else { Issue.record("no response"); return }
        #expect(response.status == .failure && response.header.id == "c1" && response.method == .get)
        #expect(response.reason?.code == ReasonCode.routingDestinationNotFound)
        #expect(response.header.to == bob)
    }

    @Test func theHubAnswersPingWhenAddressedOrWhenNoOneIs() {
        var router = router()
        for to in [nil, hub, Node("postmaster@relay.local"), Node("relay.local")] {
            let ping = Envelope.command(LIMECommand(header: EnvelopeHeader(id: "p", from: bob, to: to), method: .get, uri: "/ping"))
            guard case .command(let pong)? = router.route(ping, from: 3).reply else {
                Issue.record("no pong for \(String(describing: to))"); continue
            }
            #expect(pong.status == .success && pong.type == .ping && pong.resource == .object([:]) && pong.header.id == "p")
        }
        let other = Envelope.command(LIMECommand(header: EnvelopeHeader(id: "q", from: bob), method: .get, uri: "/nothing"))
        guard case .command(let failure)? = router.route(other, from: 3).reply else { Issue.record("no failure"); return }
        #expect(failure.status == .failure && failure.reason?.code == ReasonCode.commandResourceNotFound)
    }

    @Test func aReceiptAddressedToItselfGoesBackToTheMessagesSender() {
        var router = router()
        _ = router.route(message(id: "m7", from: bob, to: Node("alice@relay.local")), from: 3)
        // lime-python sets the receipt's `to` to the message's `to`: its own identity.
        let receipt = Envelope.notification(
            LIMENotification(header: EnvelopeHeader(id: "m7", from: alicePhone, to: Node("alice@relay.local")), event: .received))
        let routing = router.route(receipt, from: 1)
        #expect(routing.recipients == [3])
        #expect(routing.delivery?.header.to == bob)
        #expect(router.statistics.receiptsRouted == 1)
    }

    @Test func rememberedReceiptRoutesAreBounded() {
        var router = router(receipts: 2)
        for id in ["a", "b", "c"] { _ = router.route(message(id: id, from: bob, to: alicePhone), from: 3) }
        let oldest = Envelope.notification(LIMENotification(header: EnvelopeHeader(id: "a", from: alicePhone), event: .received))
        #expect(router.route(oldest, from: 1).recipients.isEmpty)
        let newest = Envelope.notification(LIMENotification(header: EnvelopeHeader(id: "c", from: alicePhone), event: .received))
        #expect(router.route(newest, from: 1).recipients == [3])
    }

    @Test func theNewestSessionOfANodeReplacesTheOld() {
        var router = router()
        #expect(router.register(9, node: Node("Alice@relay.local/PHONE")!) == 1)
        #expect(router.session(of: alicePhone) == 9)
        #expect(router.node(of: 1) == nil)
        router.unregister(1)  // the old session's late close must not remove the new one
        #expect(router.session(of: alicePhone) == 9)
        #expect(router.sessionCount == 3)
    }

    @Test func unregisteredSessionsReceiveNothing() {
        var router = router()
        router.unregister(2)
        #expect(router.route(message(from: bob, to: Node("alice@relay.local")), from: 3).recipients == [1])
        router.unregister(1)
        #expect(router.route(message(from: bob, to: Node("alice@relay.local")), from: 3).recipients.isEmpty)
    }
}
