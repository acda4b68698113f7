import Foundation
import NIOCore
import RelayClient
import RelayCore
import RelayHub
import Testing

/// Runs `body` against a hub serving TLS with certificates made for the test.
func withTLSHub<T>(
    required: Bool = false, verify: Bool = false, clientCA: Bool = false,
    _ configure: (inout HubConfiguration) throws -> Void = { _ in },
    _ body: (TestHub, TestCertificates) async throws -> T
) async throws -> T {
    let certificates = try TestCertificates()
    defer { certificates.remove() }
    return try await withHub({ configuration in
        var tls = HubConfiguration.TLSSettings(
            cert: certificates.serverCertificateFile, key: certificates.serverKeyFile, verify: verify, required: required)
        if verify || clientCA { tls.ca = certificates.caFile }
        configuration.tls = tls
        try configure(&configuration)
    }) { hub in try await body(hub, certificates) }
}

extension TestHub {
    var wss: String { "wss://127.0.0.1:\(server.boundAddresses.webSocket!.port!)" }
}

extension TestCertificates {
    /// What a client needs to trust the hub's certificate (made for `localhost`; the tests
    /// connect to 127.0.0.1).
    var trust: TLSClientOptions { TLSClientOptions(caFile: caFile, serverName: "localhost") }
}

@Suite(.timeLimit(.minutes(1))) struct TLSTests {
    /// `wss://` and LIME over TCP with `encryption: tls` carry a session each, and messages go
    /// from one to the other.
    @Test func limeSessionsRunOverWSSAndNegotiatedTLS() async throws {
        try await withTLSHub { hub, certificates in
            var options = LIMEClient.Options(identity: Identity("alice@relay.local"))
            options.tls = certificates.trust
            let alice = try await LIMEClient.connect(to: hub.wss, options: options)
            options.identity = Identity("bob@relay.local")
            let bob = try await LIMEClient.connect(to: hub.tcp, options: options)
            try await alice.send(LIMEMessage(to: Node("bob@relay.local"), text: "over tls"))
            #expect(try await firstElement(bob.messages).content == "over tls")
            #expect(try await bob.ping().status == .success)
            try await alice.finish()
            try await bob.finish()
        }
    }

    /// With TLS available but not required, plaintext clients go on as before on the same ports.
    @Test func plaintextStillWorksWhenTLSIsNotRequired() async throws {
        try await withTLSHub { hub, certificates in
            let plain = try await hub.connect(.ws, as: "carol@relay.local")
            var options = LIMEClient.Options(identity: Identity("dave@relay.local"))
            options.tls = certificates.trust
            let secure = try await LIMEClient.connect(to: hub.wss, options: options)
            try await plain.send(LIMEMessage(to: Node("dave@relay.local"), text: "mixed"))
            #expect(try await firstElement(secure.messages).content == "mixed")
        }
    }

    @Test func natsClientsPublishAndSubscribeOverTLS() async throws {
        try await withTLSHub(required: true) { hub, certificates in
            var options = NATSClient.Options(servers: ["tls://127.0.0.1:\(hub.natsPort)"])
            options.tls = certificates.trust
            let subscriber = try await NATSClient.connect(options: options)
            let subscription = try subscriber.subscribe("orders.>")
            try await subscriber.flush()
            // `nats://` too: the client upgrades because INFO says `tls_required`.
            options.servers = ["nats://127.0.0.1:\(hub.natsPort)"]
            let publisher = try await NATSClient.connect(options: options)
            #expect(publisher.serverInfo["tls_required"] == true)
            try publisher.publish("orders.new", "secret")
            #expect(try await firstElement(subscription).text == "secret")
            await publisher.close()
            await subscriber.close()
        }
    }

    /// Required TLS: a plaintext client of each listener gets a clear refusal, never a hang.
    @Test func plaintextClientsAreRefusedClearlyWhenTLSIsRequired() async throws {
        try await withTLSHub(required: true) { hub, _ in
            let ws = try await RawConnection.connect(hub.ws)
            try await ws.send(#"{"state":"new"}"#)
            let refusal = try await ws.received.failedSession()
            #expect(refusal.reason?.description.contains("TLS is required") == true)
            try await ws.waitForClose()

            // Over TCP the hub negotiates and offers TLS only; choosing none is refused.
            let tcp = try await RawConnection.connect(hub.tcp)
            var iterator = tcp.received.makeAsyncIterator()
            try await tcp.send(#"{"state":"new"}"#)
            guard case .session(let negotiating)? = await iterator.next(), negotiating.state == .negotiating,
                let id = negotiating.header.id
            else { throw TestFailure("no negotiation") }
            #expect(negotiating.encryptionOptions == ["tls"])
            try await tcp.send(#"{"id":"\#(id)","state":"negotiating","compression":"none","encryption":"none"}"#)
            let failed = try await tcp.received.failedSession()
            #expect(failed.reason?.code == ReasonCode.sessionNegotiationInvalidOptions)
            #expect(failed.reason?.description.contains("TLS is required") == true)

            let nats = try await RawNATSConnection.connect(port: hub.natsPort)
            let info = try await firstElement(nats.lines)
            #expect(info.hasPrefix("INFO ") && info.contains(#""tls_required":true"#))
            try await nats.send("CONNECT {}\r\nPING\r\n")
            #expect(try await firstElement(nats.lines) { $0.hasPrefix("-ERR") } == "-ERR 'Secure Connection - TLS Required'")
        }
    }

    /// A NATS client upgrading after INFO, as nats-server's clients do, then talking NATS.
    @Test func aRawNATSClientUpgradesAfterInfo() async throws {
        try await withTLSHub(required: true) { hub, certificates in
            let nats = try await RawNATSConnection.connect(port: hub.natsPort)
            _ = try await firstElement(nats.lines)
            try await nats.startTLS(caFile: certificates.caFile)
            try await nats.send("CONNECT {\"verbose\":false}\r\nPING\r\n")
            #expect(try await firstElement(nats.lines) == "PONG")
            await nats.close()
        }
    }

    /// A client that asked for TLS never sends its credentials to a hub that does not offer it.
    @Test func aClientAskingForTLSRefusesAPlaintextHub() async throws {
        let certificates = try TestCertificates()
        defer { certificates.remove() }
        try await withHub { hub in
            var options = LIMEClient.Options(identity: Identity("alice@relay.local"), authentication: .plain(password: "x"))
            options.tls = certificates.trust
            do {
                _ = try await LIMEClient.connect(to: hub.tcp, options: options)
                Issue.record("connected without TLS")
            } catch LIMEClientError.sessionFailed(let reason) {
                #expect(reason.description.contains("does not offer TLS"))
            }
            var nats = NATSClient.Options(servers: ["tls://127.0.0.1:\(hub.natsPort)"])
            nats.reconnect = .never
            await #expect(throws: NATSClientError.self) { _ = try await NATSClient.connect(options: nats) }
        }
    }

    /// A certificate from another authority is not trusted.
    @Test func anUntrustedCertificateIsRefused() async throws {
        let other = try TestCertificates(name: "Another CA")
        defer { other.remove() }
        try await withTLSHub { hub, _ in
            var options = LIMEClient.Options(identity: Identity("alice@relay.local"))
            options.tls = other.trust
            options.connectTimeout = .seconds(5)
            await #expect(throws: (any Error).self) { _ = try await LIMEClient.connect(to: hub.wss, options: options) }
        }
    }

    /// SIGHUP's reload: new connections get the new certificate; open sessions keep going.
    @Test func certificatesReloadWithoutDroppingSessions() async throws {
        let second = try TestCertificates(name: "Second CA")
        defer { second.remove() }
        try await withTLSHub { hub, first in
            var options = LIMEClient.Options(identity: Identity("alice@relay.local"))
            options.tls = first.trust
            let before = try await LIMEClient.connect(to: hub.wss, options: options)
            // The configured files now hold the second authority's certificate.
            try FileManager.default.removeItem(atPath: first.serverCertificateFile)
            try FileManager.default.removeItem(atPath: first.serverKeyFile)
            try FileManager.default.copyItem(atPath: second.serverCertificateFile, toPath: first.serverCertificateFile)
            try FileManager.default.copyItem(atPath: second.serverKeyFile, toPath: first.serverKeyFile)
            try hub.server.hub.reloadCertificates()
            #expect(try await before.ping().status == .success)
            options.identity = Identity("bob@relay.local")
            options.tls = second.trust
            let after = try await LIMEClient.connect(to: hub.wss, options: options)
            #expect(try await after.ping().status == .success)
            options.tls = first.trust
            await #expect(throws: (any Error).self) { _ = try await LIMEClient.connect(to: hub.wss, options: options) }
        }
    }

    /// A connection that opens a TLS handshake and never finishes it is closed.
    @Test func anUnfinishedHandshakeIsClosed() async throws {
        try await withTLSHub({ $0.tls?.handshakeTimeoutSeconds = 0.2 }) { hub, _ in
            let nats = try await RawNATSConnection.connect(port: hub.natsPort)
            _ = try await firstElement(nats.lines)
            // The first bytes of a TLS record, then nothing.
            try await nats.send("\u{16}\u{03}")
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await nats.channel.closeFuture.get() }
                group.addTask {
                    try await Task.sleep(for: .seconds(10))
                    throw TestFailure("the unfinished handshake was not closed")
                }
                try await group.next()
                group.cancelAll()
            }
            #expect(hub.server.hub.statistics.handshakeTimeouts == 1)
        }
    }
}
