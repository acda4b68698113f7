import Foundation
import NIOCore
import RelayClient
import RelayCore
import RelayHub
import RelayTransport
import Testing

@Suite(.timeLimit(.minutes(1))) struct HubRoutingTests {
    @Test(arguments: [(Transport.ws, Transport.ws), (.tcp, .tcp), (.ws, .tcp), (.tcp, .ws)])
    func messagesFlowBothWays(_ aliceTransport: Transport, _ bobTransport: Transport) async throws {
        try await withHub { hub in
            let alice = try await hub.connect(aliceTransport, as: "alice@relay.local/a")
            let bob = try await hub.connect(bobTransport, as: "bob@relay.local/b")
            try await alice.send(LIMEMessage(id: "m1", to: Node("bob@relay.local"), text: "hello bob"))
            let atBob = try await firstElement(bob.messages)
            #expect(atBob.content == "hello bob")
            #expect(atBob.header.from == Node("alice@relay.local/a"))
            #expect(atBob.header.id == "m1")

            let json: JSONValue = ["order": 42, "items": ["a", "b"]]
            try await bob.send(LIMEMessage(header: EnvelopeHeader(to: atBob.header.from), type: .applicationJSON, content: json))
            let atAlice = try await firstElement(alice.messages)
            #expect(atAlice.content == json)
            #expect(atAlice.type == .applicationJSON)
            #expect(atAlice.header.from == Node("bob@relay.local/b"))
            try await alice.finish()
            try await bob.finish()
        }
    }

    @Test(arguments: [Transport.ws, .tcp])
    func largeMessagesArriveWholeAmongSmallOnes(_ transport: Transport) async throws {
        // Frames (or envelopes) that span many reads, between small ones in the same reads.
        try await withHub { hub in
            let alice = try await hub.connect(transport, as: "alice@relay.local/a")
            let bob = try await hub.connect(transport, as: "bob@relay.local/b")
            let sizes = [10, 900_000, 3, 70_000, 125, 126, 65_535, 65_536, 1]
            for (index, size) in sizes.enumerated() {
                let text = String(repeating: Character(UnicodeScalar(UInt8(97 + index))), count: size)
                try await alice.send(LIMEMessage(to: Node("bob@relay.local"), text: text))
            }
            var received: [String] = []
            for await message in bob.messages {
                received.append(message.content.stringValue ?? "")
                if received.count == sizes.count { break }
            }
            #expect(received.map(\.count) == sizes)
            #expect(received.enumerated().allSatisfy { index, text in text.utf8.allSatisfy { $0 == UInt8(97 + index) } })
        }
    }

    @Test func anIdentityReachesEveryInstance() async throws {
        try await withHub { hub in
            let phone = try await hub.connect(.ws, as: "carol@relay.local/phone")
            let desk = try await hub.connect(.tcp, as: "carol@relay.local/desk")
            let dave = try await hub.connect(.ws, as: "dave@relay.local")
            try await dave.send(LIMEMessage(to: Node("Carol@Relay.Local"), text: "to all of you"))
            #expect(try await firstElement(phone.messages).content == "to all of you")
            #expect(try await firstElement(desk.messages).content == "to all of you")
        }
    }

    @Test func theHubSetsTheSenderAClientCannotSpoofIt() async throws {
        try await withHub { hub in
            let mallory = try await hub.connect(.tcp, as: "mallory@relay.local/m")
            let victim = try await hub.connect(.tcp, as: "victim@relay.local/v")
            try await mallory.send(
                LIMEMessage(
                    header: EnvelopeHeader(from: Node("boss@relay.local/office"), to: Node("victim@relay.local")), type: .textPlain,
                    content: "pay now"))
            #expect(try await firstElement(victim.messages).header.from == Node("mallory@relay.local/m"))
        }
    }

    @Test(arguments: Transport.allCases)
    func anUndeliverableMessageComesBackAsFailed(_ transport: Transport) async throws {
        try await withHub { hub in
            let alice = try await hub.connect(transport, as: "alice@relay.local")
            try await alice.send(LIMEMessage(id: "lost-1", to: Node("nobody@relay.local"), text: "anyone?"))
            let failed = try await firstElement(alice.notifications)
            #expect(failed.header.id == "lost-1")
            #expect(failed.event == .failed)
            #expect(failed.reason?.code == ReasonCode.routingDestinationNotFound)
            #expect(hub.server.hub.statistics.envelopesUndeliverable == 1)
        }
    }

    @Test(arguments: Transport.allCases)
    func aCommandToAnUnknownDestinationFails(_ transport: Transport) async throws {
        try await withHub { hub in
            let alice = try await hub.connect(transport, as: "alice@relay.local")
            let response = try await alice.request(
                LIMECommand(header: EnvelopeHeader(to: Node("inventory@relay.local")), method: .get, uri: "/stock"))
            #expect(response.status == .failure)
            #expect(response.reason?.code == ReasonCode.routingDestinationNotFound)
            #expect(response.method == .get)
        }
    }

    @Test(arguments: Transport.allCases)
    func theHubAnswersPing(_ transport: Transport) async throws {
        try await withHub { hub in
            let alice = try await hub.connect(transport, as: "alice@relay.local")
            let pong = try await alice.ping()
            #expect(pong.status == .success)
            #expect(pong.type == .ping)
            #expect(pong.resource == .object([:]))
        }
    }

    @Test(arguments: Transport.allCases)
    func aClientAnswersAPingFromAnotherNode(_ transport: Transport) async throws {
        try await withHub { hub in
            _ = try await hub.connect(transport, as: "pingee@relay.local/1")
            let pinger = try await hub.connect(.ws, as: "pinger@relay.local")
            let pong = try await pinger.request(
                LIMECommand(header: EnvelopeHeader(to: Node("pingee@relay.local/1")), method: .get, uri: "/ping"))
            #expect(pong.status == .success)
            #expect(pong.type == .ping)
            #expect(pong.header.from == Node("pingee@relay.local/1"))
        }
    }

    @Test func aNodeAnswersAnotherNodesCommand() async throws {
        try await withHub { hub in
            let service = try await hub.connect(.tcp, as: "clock@relay.local/1")
            let caller = try await hub.connect(.ws, as: "caller@relay.local")
            let serving = Task {
                for await request in service.commands {
                    try await service.send(request.success(type: "application/json", resource: ["time": "noon"]))
                }
            }
            defer { serving.cancel() }
            let response = try await caller.request(
                LIMECommand(header: EnvelopeHeader(to: Node("clock@relay.local")), method: .get, uri: "/time"))
            #expect(response.status == .success)
            #expect(response.resource == ["time": "noon"])
            #expect(response.header.from == Node("clock@relay.local/1"))
        }
    }

    @Test func aRequestWithoutAnswerTimesOutAndTheLateAnswerIsDiscarded() async throws {
        try await withHub { hub in
            let silent = try await hub.connect(.tcp, as: "silent@relay.local/1")
            let caller = try await hub.connect(.tcp, as: "caller@relay.local")
            let command = LIMECommand(header: EnvelopeHeader(id: "slow-1", to: Node("silent@relay.local")), method: .get, uri: "/x")
            await #expect(throws: LIMEClientError.self) {
                _ = try await caller.request(command, timeout: .milliseconds(200))
            }
            let request = try await firstElement(silent.commands)
            try await silent.send(request.success())
            // The session carries on after the late answer.
            #expect(try await caller.ping().status == .success)
        }
    }

    @Test func receiptsAddressedToThemselvesReachTheSender() async throws {
        try await withHub { hub in
            let sender = try await hub.connect(.ws, as: "sender@relay.local/s")
            let reader = try await hub.connect(.tcp, as: "reader@relay.local/r")
            try await sender.send(LIMEMessage(id: "r-1", to: Node("reader@relay.local"), text: "read me"))
            let message = try await firstElement(reader.messages)
            // As lime-python does: the receipt's `to` is the message's `to`, the reader's own identity.
            try await reader.send(LIMENotification(header: EnvelopeHeader(id: message.header.id, to: message.header.to), event: .received))
            let receipt = try await firstElement(sender.notifications)
            #expect(receipt.header.id == "r-1")
            #expect(receipt.event == .received)
            #expect(receipt.header.from == Node("reader@relay.local/r"))
        }
    }

    @Test func aNewSessionOfTheSameNodeReplacesTheOld() async throws {
        try await withHub { hub in
            let old = try await hub.connect(.tcp, as: "twin@relay.local/same")
            let new = try await hub.connect(.ws, as: "twin@relay.local/same")
            let reason = await old.waitUntilEnded()
            #expect(reason?.code == ReasonCode.sessionError)
            let other = try await hub.connect(.tcp, as: "other@relay.local")
            try await other.send(LIMEMessage(to: Node("twin@relay.local/same"), text: "which one?"))
            #expect(try await firstElement(new.messages).content == "which one?")
        }
    }

    @Test func shutdownFinishesEverySession() async throws {
        var configuration = HubConfiguration()
        configuration.ws = HostAndPort(host: "127.0.0.1", port: 0)
        configuration.tcp = HostAndPort(host: "127.0.0.1", port: 0)
        configuration.nats = nil
        configuration.data = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: configuration.data) }
        let server = try HubServer(configuration: configuration)
        try await server.start()
        let hub = TestHub(server: server)
        let overWS = try await hub.connect(.ws, as: "a@relay.local")
        let overTCP = try await hub.connect(.tcp, as: "b@relay.local")
        await server.shutdown()
        // nil: the session ended with `finished`, not `failed`.
        #expect(await overWS.waitUntilEnded() == nil)
        #expect(await overTCP.waitUntilEnded() == nil)
    }
}
