import Testing

@testable import RelayCore

/// The session machines' side of TLS: LIME's in-session negotiation and upgrade (both roles),
/// `wss://` sessions, NATS's `tls_required` (both roles), and refusals of plaintext.
@Suite struct TLSMachineTests {
    private static let hub = Node("postmaster@relay.local/hub")!

    private func server(encryption: [String], requiresTLS: Bool = false, offersTransport: Bool = false) -> LIMEServerSessionMachine {
        LIMEServerSessionMachine(
            configuration: .init(
                sessionID: "s1", serverNode: Self.hub, schemes: ["plain"], encryptionOptions: encryption, assignedInstance: "i",
                requiresTLS: requiresTLS, offersTransportScheme: offersTransport))
    }

    private func choice(_ encryption: String) -> Envelope {
        .session(LIMESession(header: EnvelopeHeader(id: "s1"), state: .negotiating, encryption: encryption, compression: "none"))
    }

    private func sessionOf(_ action: LIMEServerSessionMachine.Action) -> [LIMESession] {
        switch action {
        case .send(let envelopes): envelopes.compactMap { if case .session(let s) = $0 { s } else { nil } }
        case .sendAndStartTLS(.session(let s)), .sendAndClose(.session(let s)), .unregisterSendAndClose(.session(let s)): [s]
        default: []
        }
    }

    @Test func aTCPSessionNegotiatesTLSThenAuthenticatesOverIt() {
        var machine = server(encryption: ["none", "tls"], offersTransport: true)
        let offer = sessionOf(machine.envelopeReceived(.session(LIMESession(state: .new))))
        #expect(offer.first?.state == .negotiating && offer.first?.encryptionOptions == ["none", "tls"])
        let upgrade = machine.envelopeReceived(choice("tls"))
        guard case .sendAndStartTLS(.session(let confirmation)) = upgrade else {
            Issue.record("no upgrade: \(upgrade)")
            return
        }
        #expect(confirmation.state == .negotiating && confirmation.encryption == "tls")
        #expect(machine.state == .securingTransport)
        // Once secured with a verified certificate, `transport` is offered first.
        let authenticating = sessionOf(machine.transportSecured(clientCertified: true))
        #expect(authenticating.first?.state == .authenticating && authenticating.first?.schemeOptions == ["transport", "plain"])
        #expect(machine.isTransportSecured)
    }

    @Test func nothingButTheHandshakeMayComeBeforeTheUpgradeIsDone() {
        var machine = server(encryption: ["none", "tls"])
        _ = machine.envelopeReceived(.session(LIMESession(state: .new)))
        _ = machine.envelopeReceived(choice("tls"))
        let early = machine.envelopeReceived(
            .session(LIMESession(header: EnvelopeHeader(id: "s1"), state: .authenticating, scheme: "plain")))
        #expect(sessionOf(early).first?.state == .failed)
    }

    @Test func choosingPlaintextIsRefusedWhenTLSIsRequired() {
        var machine = server(encryption: ["tls"], requiresTLS: true)
        // A single option that is not `none` is still negotiated: the client must know to start TLS.
        #expect(sessionOf(machine.envelopeReceived(.session(LIMESession(state: .new)))).first?.encryptionOptions == ["tls"])
        let refused = sessionOf(machine.envelopeReceived(choice("none"))).first
        #expect(refused?.state == .failed && refused?.reason?.code == ReasonCode.sessionNegotiationInvalidOptions)
        #expect(refused?.reason?.description.contains("TLS is required") == true)
    }

    @Test func aWebSocketSessionMustBeWSSWhenTLSIsRequired() {
        var plaintext = server(encryption: ["none"], requiresTLS: true)
        let refused = sessionOf(plaintext.envelopeReceived(.session(LIMESession(state: .new)))).first
        #expect(refused?.state == .failed && refused?.reason?.description.contains("wss://") == true)
        var secured = server(encryption: ["none"], requiresTLS: true)
        _ = secured.transportSecured(clientCertified: false)
        #expect(sessionOf(secured.envelopeReceived(.session(LIMESession(state: .new)))).first?.state == .authenticating)
    }

    @Test func aSecuredConnectionIsNotOfferedTLSAgain() {
        var machine = server(encryption: ["none", "tls"])
        _ = machine.transportSecured(clientCertified: false)
        #expect(sessionOf(machine.envelopeReceived(.session(LIMESession(state: .new)))).first?.state == .authenticating)
    }

    // MARK: - The client

    private func client(encryption: String) -> LIMEClientSessionMachine {
        var machine = LIMEClientSessionMachine(
            configuration: .init(
                identity: Identity("alice@relay.local"), scheme: "plain", authentication: ["password": "cHc="], encryption: encryption))
        _ = machine.connected()
        return machine
    }

    private let authenticating = Envelope.session(
        LIMESession(
            header: EnvelopeHeader(id: "s1", from: Node("postmaster@relay.local/hub")), state: .authenticating, schemeOptions: ["plain"]))

    @Test func aClientAskingForTLSUpgradesBeforeItSendsCredentials() {
        var machine = client(encryption: "tls")
        let offer = LIMESession(
            header: EnvelopeHeader(id: "s1"), state: .negotiating, encryptionOptions: ["none", "tls"], compressionOptions: ["none"])
        guard case .send(.session(let chosen)) = machine.envelopeReceived(.session(offer)) else { Issue.record("no choice"); return }
        #expect(chosen.encryption == "tls")
        #expect(machine.envelopeReceived(choice("tls")) == .startTLS)
        #expect(machine.state == .securingTransport)
        #expect(machine.transportSecured() == .none)
        guard case .send(.session(let credentials)) = machine.envelopeReceived(authenticating) else {
            Issue.record("no credentials"); return
        }
        #expect(credentials.scheme == "plain")
    }

    @Test func aClientAskingForTLSNeverSendsCredentialsInPlaintext() {
        var straight = client(encryption: "tls")
        guard case .failed(let reason) = straight.envelopeReceived(authenticating) else { Issue.record("credentials sent"); return }
        #expect(reason.description.contains("does not offer TLS"))
        var noTLS = client(encryption: "tls")
        let offer = LIMESession(
            header: EnvelopeHeader(id: "s1"), state: .negotiating, encryptionOptions: ["none"], compressionOptions: ["none"])
        guard case .failed = noTLS.envelopeReceived(.session(offer)) else { Issue.record("accepted plaintext"); return }
    }

    @Test func aClientThatDidNotAskStillUpgradesWhenTheServerOnlyOffersTLS() {
        var machine = client(encryption: "none")
        let offer = LIMESession(
            header: EnvelopeHeader(id: "s1"), state: .negotiating, encryptionOptions: ["tls"], compressionOptions: ["none"])
        guard case .send(.session(let chosen)) = machine.envelopeReceived(.session(offer)) else { Issue.record("no choice"); return }
        #expect(chosen.encryption == "tls")
        #expect(machine.envelopeReceived(choice("tls")) == .startTLS)
    }

    @Test func aRefusalBeforeTheClientAskedIsReported() {
        var machine = LIMEClientSessionMachine(configuration: .init(identity: nil))
        let reason = Reason(code: 11, description: "Too many connections from this address")
        #expect(machine.envelopeReceived(.session(LIMESession(state: .failed, reason: reason))) == .failed(reason))
        #expect(machine.connected() == .none)
    }

    // MARK: - NATS

    @Test func natsOperationsBeforeTheTLSUpgradeAreRefused() {
        var plaintext = NATSServerConnectionMachine(configuration: .init(info: [:], tlsRequired: true))
        _ = plaintext.connected()
        #expect(plaintext.operationReceived(.connect([:])) == [.failAndClose(NATSProtocolError(.tlsRequired))])
        #expect(NATSProtocolError(.tlsRequired).errText == "Secure Connection - TLS Required")
        var secured = NATSServerConnectionMachine(configuration: .init(info: [:], tlsRequired: true))
        _ = secured.connected()
        secured.transportSecured()
        #expect(secured.operationReceived(.connect([:])) == [.authenticate(NATSConnectOptions())])
    }

    @Test func aNATSConnectionThatDoesNotConnectInTimeIsEnded() {
        var machine = NATSServerConnectionMachine(configuration: .init(info: [:], authRequired: true))
        _ = machine.connected()
        #expect(machine.connectTimedOut() == [.failAndClose(NATSProtocolError(.authenticationTimeout))])
        var connected = NATSServerConnectionMachine(configuration: .init(info: [:]))
        _ = connected.connected()
        _ = connected.operationReceived(.connect([:]))
        _ = connected.connectAccepted()
        #expect(connected.connectTimedOut().isEmpty)
    }

    @Test func theNATSClientUpgradesWhenInfoAsksOrWhenItInsists() {
        var asked = NATSClientConnectionMachine(configuration: .init(connect: ["verbose": false]))
        #expect(asked.operationReceived(.info(["tls_required": true])) == [.startTLS])
        #expect(asked.transportSecured() == [.send([.connect(["verbose": false]), .ping])])
        var insisting = NATSClientConnectionMachine(configuration: .init(connect: [:], requiresTLS: true))
        #expect(insisting.operationReceived(.info(["tls_available": true])) == [.startTLS])
        var refused = NATSClientConnectionMachine(configuration: .init(connect: [:], requiresTLS: true))
        #expect(refused.operationReceived(.info([:])) == [.fail("the server does not offer TLS")])
        var plaintext = NATSClientConnectionMachine(configuration: .init(connect: [:]))
        #expect(plaintext.operationReceived(.info(["tls_available": true])) == [.send([.connect([:]), .ping])])
    }
}

@Suite struct NATSDeferredErrorTests {
    /// A bad operation behind operations that wait for a credentials check is reported after
    /// them, as nats-server carries out what came before it.
    @Test func aProtocolErrorWaitsForTheOperationsBeforeIt() {
        var machine = NATSServerConnectionMachine(configuration: .init(info: [:], authRequired: true))
        _ = machine.connected()
        #expect(machine.operationReceived(.connect(["user": "u", "pass": "p"])).count == 1)
        #expect(machine.operationReceived(.publish(subject: "a", replyTo: nil, headers: nil, payload: [1])).isEmpty)
        #expect(machine.protocolErrorOccurred(NATSProtocolError(.unknownOperation)).isEmpty)
        let actions = machine.connectAccepted()
        #expect(actions.count == 3)
        if case .publish(let message) = actions[1] { #expect(message.subject == "a") } else { Issue.record("\(actions)") }
        #expect(actions.last == .failAndClose(NATSProtocolError(.unknownOperation)))
    }
}
