import Foundation
import NIOCore
import RelayClient
import RelayCore
import RelayHub
import Testing

@Suite(.timeLimit(.minutes(1))) struct HubAuthenticationTests {
    static let hash = try! PasswordHash.make(password: "s3cret", rounds: 1000).description

    private func withUsers(guest: Bool = true) -> (inout HubConfiguration) -> Void {
        { configuration in
            configuration.guest = guest
            configuration.users = [.init(identity: "alice@relay.local", password: Self.hash)]
        }
    }

    @Test(arguments: Transport.allCases)
    func aUserSignsInWithTheRightPassword(_ transport: Transport) async throws {
        try await withHub(withUsers()) { hub in
            let alice = try await hub.connect(transport, as: "alice@relay.local", authentication: .plain(password: "s3cret"))
            #expect(alice.localNode.identity == Identity("alice@relay.local"))
        }
    }

    @Test func aWrongPasswordOrUnknownUserIsRefused() async throws {
        try await withHub(withUsers()) { hub in
            for (identity, password) in [("alice@relay.local", "wrong"), ("nobody@relay.local", "s3cret")] {
                do {
                    _ = try await hub.connect(.tcp, as: identity, authentication: .plain(password: password))
                    Issue.record("\(identity) signed in with \(password)")
                } catch LIMEClientError.sessionFailed(let reason) {
                    #expect(reason.code == ReasonCode.sessionAuthenticationFailed)
                }
            }
        }
    }

    @Test func aGuestCannotTakeAUsersIdentity() async throws {
        try await withHub(withUsers()) { hub in
            await #expect(throws: LIMEClientError.self) { _ = try await hub.connect(.ws, as: "alice@relay.local") }
            _ = try await hub.connect(.ws, as: "visitor@relay.local")
        }
    }

    @Test func withGuestAccessOffOnlyUsersGetIn() async throws {
        try await withHub(withUsers(guest: false)) { hub in
            do {
                _ = try await hub.connect(.tcp, as: "visitor@relay.local")
                Issue.record("a guest got in")
            } catch LIMEClientError.sessionFailed(let reason) {
                #expect(reason.code == ReasonCode.sessionAuthenticationFailed)
            }
            _ = try await hub.connect(.tcp, as: "alice@relay.local", authentication: .plain(password: "s3cret"))
        }
    }

    @Test func passwordHashesVerifyAndRoundTrip() throws {
        let hash = try PasswordHash.make(password: "pässword", rounds: 1000)
        let parsed = try #require(PasswordHash(hash.description))
        #expect(parsed.matches(password: Array("pässword".utf8)))
        #expect(!parsed.matches(password: Array("password".utf8)))
        #expect(try PasswordHash.make(password: "pässword", rounds: 1000).description != hash.description)  // salted
        #expect(PasswordHash("s3cret") == nil)
    }

    @Test func aPlainTextPasswordInTheConfigurationIsRefused() {
        var configuration = HubConfiguration()
        configuration.users = [.init(identity: "alice@relay.local", password: "s3cret")]
        #expect(throws: HubError.self) { try HubServer(configuration: configuration) }
    }
}

@Suite(.timeLimit(.minutes(1))) struct HubBadInputTests {
    /// After the bad connection is dealt with, two other sessions still talk.
    private func othersStillTalk(_ hub: TestHub) async throws {
        let a = try await hub.connect(.tcp, as: "a@relay.local")
        let b = try await hub.connect(.ws, as: "b@relay.local")
        try await a.send(LIMEMessage(to: Node("b@relay.local"), text: "still here"))
        #expect(try await firstElement(b.messages).content == "still here")
    }

    @Test(arguments: Transport.allCases)
    func malformedJSONFailsTheSessionAndClosesIt(_ transport: Transport) async throws {
        try await withHub { hub in
            let bystander = try await hub.connect(.tcp, as: "bystander@relay.local")
            let raw = try await RawConnection.connect(hub.url(transport))
            _ = try await raw.establish(as: "bad@relay.local")
            // Balanced braces (a complete frame over TCP), but not JSON.
            try await raw.send(#"{"id":"1","to":"x@y.z","type":"text/plain","content":tru,}"#)
            let failed = try await raw.received.failedSession()
            #expect(failed.reason?.code == ReasonCode.validationError)
            #expect(failed.reason?.description.contains("Malformed JSON") == true)
            try await raw.waitForClose()
            #expect(try await bystander.ping().status == .success)
            try await othersStillTalk(hub)
        }
    }

    @Test(arguments: Transport.allCases)
    func anUnknownEnvelopeFailsTheSession(_ transport: Transport) async throws {
        try await withHub { hub in
            let raw = try await RawConnection.connect(hub.url(transport))
            _ = try await raw.establish(as: "odd@relay.local")
            try await raw.send(#"{"id":"1","hello":"world"}"#)
            #expect(try await raw.received.failedSession().reason?.description.contains("Unknown envelope") == true)
            try await raw.waitForClose()
            try await othersStillTalk(hub)
        }
    }

    @Test(arguments: Transport.allCases)
    func anEnvelopeBeforeEstablishmentFailsTheSession(_ transport: Transport) async throws {
        try await withHub { hub in
            let raw = try await RawConnection.connect(hub.url(transport))
            try await raw.send(#"{"id":"1","to":"a@relay.local","type":"text/plain","content":"too early"}"#)
            #expect(try await raw.received.failedSession().reason?.code == ReasonCode.sessionInvalidActionForState)
            try await raw.waitForClose()
        }
    }

    @Test(arguments: Transport.allCases)
    func anOversizedEnvelopeFailsTheSession(_ transport: Transport) async throws {
        try await withHub({ $0.limits.maxEnvelopeBytes = 4096 }) { hub in
            let raw = try await RawConnection.connect(hub.url(transport))
            _ = try await raw.establish(as: "big@relay.local")
            let content = String(repeating: "x", count: 100_000)
            try await raw.send(#"{"to":"a@relay.local","type":"text/plain","content":"\#(content)"}"#)
            let failed = try await raw.received.failedSession()
            #expect(failed.reason?.code == ReasonCode.validationError)
            #expect(failed.reason?.description.contains("4096") == true)
            try await raw.waitForClose()
            try await othersStillTalk(hub)
        }
    }

    @Test func aWrongSessionIDFailsTheSession() async throws {
        try await withHub { hub in
            let raw = try await RawConnection.connect(hub.tcp)
            _ = try await raw.establish(as: "x@relay.local")
            try await raw.send(#"{"id":"not-my-session","state":"finishing"}"#)
            #expect(try await raw.received.failedSession().reason?.code == ReasonCode.sessionError)
            try await raw.waitForClose()
        }
    }

    @Test func aConnectionThatNeverEstablishesIsClosed() async throws {
        try await withHub({ $0.limits.establishTimeoutSeconds = 0.3 }) { hub in
            let raw = try await RawConnection.connect(hub.tcp)
            try await raw.send("   ")
            #expect(try await raw.received.failedSession().reason?.code == ReasonCode.sessionNegotiationTimeout)
            try await raw.waitForClose()
        }
    }

    @Test func connectionsBeyondTheLimitAreRefused() async throws {
        try await withHub({ $0.limits.maxSessions = 2 }) { hub in
            let first = try await hub.connect(.tcp, as: "one@relay.local")
            _ = try await hub.connect(.ws, as: "two@relay.local")
            let raw = try await RawConnection.connect(hub.tcp)
            #expect(try await raw.received.failedSession().reason?.code == ReasonCode.sessionError)
            try await raw.waitForClose()
            #expect(hub.server.hub.statistics.connectionsRefused == 1)
            #expect(try await first.ping().status == .success)
        }
    }

    @Test func garbageBetweenEnvelopesOverTCPIsSkipped() async throws {
        try await withHub { hub in
            let listener = try await hub.connect(.ws, as: "listener@relay.local")
            let raw = try await RawConnection.connect(hub.tcp)
            _ = try await raw.establish(as: "noisy@relay.local")
            try await raw.send(
                "\r\n  xx ]] " + #"{"to":"listener@relay.local","type":"text/plain","content":"one"}"# + "\n\n"
                    + #"{"to":"listener@relay.local","type":"text/plain","content":"two {braces}"}"#)
            var messages = listener.messages.makeAsyncIterator()
            #expect(await messages.next()?.content == "one")
            #expect(await messages.next()?.content == "two {braces}")
        }
    }

    @Test func aSlowConsumerIsEndedAndCounted() async throws {
        try await withHub({ $0.limits.maxPendingBytes = 64 * 1024 }) { hub in
            // A reader that never reads: the hub's writes pile up until the limit ends the session.
            let raw = try await RawConnection.connect(hub.tcp)
            _ = try await raw.establish(as: "stalled@relay.local")
            try await raw.channel.setOption(.autoRead, value: false)
            let sender = try await hub.connect(.tcp, as: "sender@relay.local")
            _ = try await sendUntilASlowConsumer(hub, from: sender, to: "stalled@relay.local", atMost: 2_000)
            #expect(hub.server.hub.statistics.slowConsumers >= 1)
            #expect(try await sender.ping().status == .success)
        }
    }

    /// A WebSocket connection that never completes its upgrade is closed (and counted): it is not
    /// a session yet, so nothing else would bound how long it stays.
    @Test func anUnfinishedWebSocketUpgradeIsClosed() async throws {
        // Long enough for a session to be established on a loaded machine (the whole suite runs
        // in parallel), short enough for the test.
        try await withHub({ $0.limits.establishTimeoutSeconds = 1.5 }) { hub in
            let raw = try await RawNATSConnection.connect(port: hub.server.boundAddresses.webSocket!.port!)
            try await raw.send("GET / HTTP/1.1\r\nHost: x\r\n")
            try await raw.channel.closeFuture.get()
            #expect(hub.server.hub.statistics.handshakeTimeouts == 1)
            // A completed upgrade is not closed by it: a session outlives the upgrade's deadline.
            let client = try await hub.connect(.ws, as: "late@relay.local")
            // Nothing to wait for but the deadline itself: past it, the session must still answer.
            try await Task.sleep(for: .milliseconds(2_000))
            #expect(try await client.ping().status == .success)
        }
    }

    /// The sessions of one identity share a cap on pending bytes: opening more sessions does not
    /// make the hub hold more for one user. Each session's own cap (64 MiB) is never reached here.
    @Test func pendingBytesAreCappedPerIdentity() async throws {
        try await withHub({ $0.limits.maxPendingBytesPerIdentity = 1 << 20 }) { hub in
            var stalled: [RawConnection] = []
            for instance in ["one", "two"] {
                let raw = try await RawConnection.connect(hub.tcp)
                _ = try await raw.establish(as: "stalled@relay.local/\(instance)")
                try await raw.channel.setOption(.autoRead, value: false)
                stalled.append(raw)
            }
            let sender = try await hub.connect(.tcp, as: "sender@relay.local")
            // To the identity: every session of it gets each message.
            let sent = try await sendUntilASlowConsumer(hub, from: sender, to: "stalled@relay.local", atMost: 200)
            #expect(hub.server.hub.statistics.slowConsumers >= 1)
            // Far less than one session's own cap went to each (the kernel's buffers hold some MiB).
            #expect(sent < 48 << 20, "\(sent) bytes before the identity's cap ended a session")
        }
    }
}

/// Sends 900 KB messages to `recipient` until the hub counts a slow consumer (or `atMost` were
/// sent); returns the bytes sent. A ping every few messages lets the hub's writes pile up in order.
private func sendUntilASlowConsumer(_ hub: TestHub, from sender: LIMEClient, to recipient: String, atMost: Int) async throws -> Int {
    let chunk = String(repeating: "y", count: 900_000)
    var sent = 0
    while hub.server.hub.statistics.slowConsumers == 0, sent < atMost {
        try await sender.send(LIMEMessage(to: Node(recipient), text: chunk))
        sent += 1
        if sent % 5 == 0 { _ = try await sender.ping() }
    }
    return sent * chunk.utf8.count
}
