import Testing

@testable import RelayCore

private let hub = Node("postmaster@relay.local/hub")!

private func serverMachine(
    schemes: [String] = ["plain", "guest"], compression: [String] = ["none"], encryption: [String] = ["none"]
) -> LIMEServerSessionMachine {
    LIMEServerSessionMachine(
        configuration: .init(
            sessionID: "s1", serverNode: hub, schemes: schemes, compressionOptions: compression, encryptionOptions: encryption,
            assignedInstance: "i1"))
}

private func session(_ state: SessionState, id: String? = "s1", from: String? = nil, scheme: String? = nil) -> Envelope {
    .session(LIMESession(header: EnvelopeHeader(id: id, from: from.flatMap(Node.init)), state: state, scheme: scheme))
}

/// The `failed` envelope an action sends, if it sends one.
private func failure(in action: LIMEServerSessionMachine.Action) -> Reason? {
    switch action {
    case .sendAndClose(.session(let session)), .unregisterSendAndClose(.session(let session)):
        return session.state == .failed ? session.reason : nil
    default:
        return nil
    }
}

@Suite struct LIMEServerSessionMachineTests {
    /// Drives a machine to `established` as `alice@relay.local` (guest).
    private func established() -> LIMEServerSessionMachine {
        var machine = serverMachine()
        _ = machine.envelopeReceived(session(.new, id: nil))
        _ = machine.envelopeReceived(session(.authenticating, from: "alice@relay.local/phone", scheme: "guest"))
        _ = machine.credentialsAccepted(identity: Identity("alice@relay.local")!)
        return machine
    }

    @Test func goesFromNewStraightToAuthenticatingWhenThereIsNothingToNegotiate() {
        var machine = serverMachine()
        let action = machine.envelopeReceived(session(.new, id: nil))
        guard case .send(let envelopes) = action, case .session(let reply)? = envelopes.first else {
            Issue.record("expected a session envelope, got \(action)")
            return
        }
        #expect(envelopes.count == 1)
        #expect(reply.state == .authenticating)
        #expect(reply.schemeOptions == ["plain", "guest"])
        #expect(reply.header.id == "s1")
        #expect(reply.header.from == hub)
        #expect(reply.compressionOptions == nil && reply.encryptionOptions == nil)
        #expect(machine.state == .authenticating)
    }

    @Test func negotiatesOnlyWhenMoreThanOneOptionIsOffered() {
        var machine = serverMachine(compression: ["none", "gzip"])
        guard case .send(let first) = machine.envelopeReceived(session(.new, id: nil)), case .session(let offer)? = first.first
        else { Issue.record("no negotiation"); return }
        #expect(offer.state == .negotiating)
        #expect(offer.compressionOptions == ["none", "gzip"])
        var choice = LIMESession(header: EnvelopeHeader(id: "s1"), state: .negotiating)
        choice.compression = "gzip"
        choice.encryption = "none"
        // gzip: the confirmation goes uncompressed, then the stream switches and authenticating follows through it.
        guard case .sendAndStartCompression(.session(let confirmation), let rest) = machine.envelopeReceived(.session(choice)),
            case .session(let authenticating)? = rest.first
        else {
            Issue.record("expected confirmation then authenticating")
            return
        }
        #expect(confirmation.state == .negotiating && confirmation.compression == "gzip")
        #expect(authenticating.state == .authenticating)
    }

    @Test func refusesANegotiationChoiceThatWasNotOffered() {
        var machine = serverMachine(encryption: ["none", "tls"])
        _ = machine.envelopeReceived(session(.new, id: nil))
        var choice = LIMESession(header: EnvelopeHeader(id: "s1"), state: .negotiating)
        choice.encryption = "rot13"
        #expect(failure(in: machine.envelopeReceived(.session(choice)))?.code == ReasonCode.sessionNegotiationInvalidOptions)
    }

    @Test func establishesWithTheRequestedInstanceOrAnAssignedOne() {
        var machine = serverMachine()
        _ = machine.envelopeReceived(session(.new, id: nil))
        let action = machine.envelopeReceived(session(.authenticating, from: "alice@relay.local/phone", scheme: "guest"))
        #expect(
            action
                == .verifyCredentials(CredentialsPresented(scheme: "guest", identity: Identity("alice@relay.local"), authentication: [:])))
        guard case .establish(let node, .session(let reply)) = machine.credentialsAccepted(identity: Identity("alice@relay.local")!) else {
            Issue.record("not established")
            return
        }
        #expect(node == Node("alice@relay.local/phone"))
        #expect(reply.state == .established && reply.header.to == node && reply.header.from == hub)

        var other = serverMachine()
        _ = other.envelopeReceived(session(.new, id: nil))
        _ = other.envelopeReceived(session(.authenticating, from: "bob@relay.local", scheme: "guest"))
        guard case .establish(let assigned, _) = other.credentialsAccepted(identity: Identity("bob@relay.local")!) else {
            Issue.record("not established")
            return
        }
        #expect(assigned == Node("bob@relay.local/i1"))
    }

    @Test func takesTheSchemeFromTheTopLevelFieldOrTheAuthentication() {
        var machine = serverMachine()
        _ = machine.envelopeReceived(session(.new, id: nil))
        var auth = LIMESession(header: EnvelopeHeader(id: "s1", from: Node("a@b.c")), state: .authenticating)
        auth.authentication = ["scheme": "plain", "password": "cHc="]
        guard case .verifyCredentials(let credentials) = machine.envelopeReceived(.session(auth)) else {
            Issue.record("credentials not presented")
            return
        }
        #expect(credentials.scheme == "plain")
        #expect(credentials.authentication["password"] == "cHc=")
    }

    @Test func refusesASchemeThatWasNotOffered() {
        var machine = serverMachine(schemes: ["plain"])
        _ = machine.envelopeReceived(session(.new, id: nil))
        let reason = failure(in: machine.envelopeReceived(session(.authenticating, from: "a@b.c", scheme: "guest")))
        #expect(reason?.code == ReasonCode.sessionAuthenticationFailed)
        #expect(reason?.description.contains("guest") == true)
        if case .failed = machine.state {} else { Issue.record("machine not failed") }
    }

    @Test func rejectedCredentialsFailTheSession() {
        var machine = serverMachine()
        _ = machine.envelopeReceived(session(.new, id: nil))
        _ = machine.envelopeReceived(session(.authenticating, from: "a@b.c", scheme: "plain"))
        let reason = Reason(code: ReasonCode.sessionAuthenticationFailed, description: "Invalid credentials")
        #expect(failure(in: machine.credentialsRejected(reason)) == reason)
    }

    @Test(arguments: [
        Envelope.message(LIMEMessage(to: Node("a@b.c"), text: "hi")),
        .notification(LIMENotification(header: EnvelopeHeader(id: "1"), event: .received)),
        .command(LIMECommand(method: .get, uri: "/ping")),
    ])
    func refusesEnvelopesBeforeEstablishment(_ envelope: Envelope) {
        var machine = serverMachine()
        #expect(failure(in: machine.envelopeReceived(envelope))?.code == ReasonCode.sessionInvalidActionForState)
        var authenticating = serverMachine()
        _ = authenticating.envelopeReceived(session(.new, id: nil))
        #expect(failure(in: authenticating.envelopeReceived(envelope))?.code == ReasonCode.sessionInvalidActionForState)
    }

    @Test func refusesAWrongSessionID() {
        var machine = serverMachine()
        _ = machine.envelopeReceived(session(.new, id: nil))
        #expect(
            failure(in: machine.envelopeReceived(session(.authenticating, id: "other", from: "a@b.c", scheme: "guest")))?.code
                == ReasonCode.sessionError)
        var live = established()
        let action = live.envelopeReceived(session(.finishing, id: "other"))
        #expect(failure(in: action)?.code == ReasonCode.sessionError)
        guard case .unregisterSendAndClose = action else { Issue.record("established session not unregistered"); return }
    }

    @Test func refusesSessionStatesOutOfOrder() {
        var machine = serverMachine()
        #expect(failure(in: machine.envelopeReceived(session(.established)))?.code == ReasonCode.sessionInvalidActionForState)
        var live = established()
        #expect(failure(in: live.envelopeReceived(session(.authenticating)))?.code == ReasonCode.sessionInvalidActionForState)
    }

    @Test func everyFailedEnvelopeCarriesAReason() {
        // failed is sent on every refusal above; here the remaining paths.
        var timedOut = serverMachine()
        let timeout = timedOut.establishmentTimedOut()
        #expect(failure(in: timeout)?.code == ReasonCode.sessionNegotiationTimeout)
        var invalid = established()
        let reason = Reason(code: ReasonCode.validationError, description: "Malformed JSON")
        #expect(failure(in: invalid.invalidInputReceived(reason)) == reason)
        // Nothing more happens after the session failed.
        #expect(invalid.envelopeReceived(session(.finishing)) == .none)
        #expect(invalid.peerClosed() == .none)
    }

    @Test func routesEstablishedTrafficWithTheSessionsNodeAsSender() {
        var machine = established()
        let spoofed = Envelope.message(
            LIMEMessage(
                header: EnvelopeHeader(id: "m1", from: Node("mallory@evil.com/x"), to: Node("bob@relay.local")), type: .textPlain,
                content: "hi"))
        guard case .route(let routed) = machine.envelopeReceived(spoofed) else { Issue.record("not routed"); return }
        #expect(routed.header.from == Node("alice@relay.local/phone"))
        #expect(routed.header.to == Node("bob@relay.local"))
    }

    @Test func finishesCleanly() {
        var machine = established()
        guard case .unregisterSendAndClose(.session(let finished)) = machine.envelopeReceived(session(.finishing)) else {
            Issue.record("not finished")
            return
        }
        #expect(finished.state == .finished)
        #expect(machine.state == .finished)
        #expect(machine.peerClosed() == .none)
    }

    @Test func shutdownFinishesEstablishedSessions() {
        var machine = established()
        guard case .unregisterSendAndClose(.session(let finished)) = machine.shutdownRequested() else {
            Issue.record("not finished"); return
        }
        #expect(finished.state == .finished)
        #expect(machine.establishmentTimedOut() == .none)
    }

    @Test func peerCloseUnregistersAnEstablishedSession() {
        var machine = established()
        #expect(machine.peerClosed() == .unregister(Node("alice@relay.local/phone")!))
        var fresh = serverMachine()
        #expect(fresh.peerClosed() == .none)
    }
}

@Suite struct LIMEClientSessionMachineTests {
    private func client(scheme: String = "guest") -> LIMEClientSessionMachine {
        LIMEClientSessionMachine(configuration: .init(identity: Identity("alice@relay.local"), instance: "phone", scheme: scheme))
    }

    private func authenticating(_ options: [String]) -> Envelope {
        .session(LIMESession(header: EnvelopeHeader(id: "s1", from: hub), state: .authenticating, schemeOptions: options))
    }

    private func establishedClient() -> LIMEClientSessionMachine {
        var machine = client()
        _ = machine.connected()
        _ = machine.envelopeReceived(authenticating(["guest"]))
        _ = machine.envelopeReceived(
            .session(LIMESession(header: EnvelopeHeader(id: "s1", from: hub, to: Node("alice@relay.local/phone")), state: .established)))
        return machine
    }

    @Test func performsTheHandshake() {
        var machine = client()
        #expect(machine.connected() == .send(.session(LIMESession(state: .new))))
        guard case .send(.session(let auth)) = machine.envelopeReceived(authenticating(["plain", "guest"])) else {
            Issue.record("no authentication sent")
            return
        }
        #expect(auth.state == .authenticating && auth.scheme == "guest" && auth.header.id == "s1")
        #expect(auth.header.from == Node("alice@relay.local/phone"))
        let action = machine.envelopeReceived(
            .session(LIMESession(header: EnvelopeHeader(id: "s1", from: hub, to: Node("alice@relay.local/phone")), state: .established)))
        #expect(action == .established(local: Node("alice@relay.local/phone")!, remote: hub))
    }

    @Test func choosesNegotiationOptionsWhenOffered() {
        var machine = client()
        _ = machine.connected()
        let offer = LIMESession(
            header: EnvelopeHeader(id: "s1"), state: .negotiating, encryptionOptions: ["tls", "none"], compressionOptions: ["gzip"])
        guard case .send(.session(let choice)) = machine.envelopeReceived(.session(offer)) else { Issue.record("no choice"); return }
        #expect(choice.encryption == "none" && choice.compression == "gzip")
        // The server's confirmation needs no answer; gzip, the only option, switches the stream.
        #expect(
            machine.envelopeReceived(
                .session(LIMESession(header: EnvelopeHeader(id: "s1"), state: .negotiating, encryption: "none", compression: "gzip")))
                == .startCompression)
    }

    @Test func failsWhenItsSchemeIsNotOffered() {
        var machine = client(scheme: "plain")
        _ = machine.connected()
        guard case .failed(let reason) = machine.envelopeReceived(authenticating(["guest"])) else { Issue.record("not failed"); return }
        #expect(reason.code == ReasonCode.sessionAuthenticationFailed)
    }

    @Test func answersPingsAndDeliversTheRest() {
        var machine = establishedClient()
        let ping = LIMECommand(header: EnvelopeHeader(id: "p1", from: hub), method: .get, uri: "/ping")
        guard case .send(.command(let pong)) = machine.envelopeReceived(.command(ping)) else { Issue.record("no pong"); return }
        #expect(pong.header.id == "p1" && pong.status == .success && pong.type == .ping && pong.header.to == hub)
        let message = Envelope.message(LIMEMessage(to: Node("alice@relay.local"), text: "hi"))
        #expect(machine.envelopeReceived(message) == .deliver(message))
    }

    @Test func reportsTheServersFailure() {
        var machine = client()
        _ = machine.connected()
        let reason = Reason(code: 13, description: "nope")
        #expect(
            machine.envelopeReceived(.session(LIMESession(header: EnvelopeHeader(id: "s1"), state: .failed, reason: reason)))
                == .failed(reason))
    }

    @Test func refusesNonSessionEnvelopesDuringTheHandshake() {
        var machine = client()
        _ = machine.connected()
        guard case .failed(let reason) = machine.envelopeReceived(.message(LIMEMessage(to: nil, text: "early"))) else {
            Issue.record("not failed")
            return
        }
        #expect(reason.code == ReasonCode.sessionInvalidActionForState)
    }

    @Test func finishes() {
        var machine = establishedClient()
        #expect(machine.finishRequested() == .send(.session(LIMESession(header: EnvelopeHeader(id: "s1"), state: .finishing))))
        #expect(machine.envelopeReceived(.session(LIMESession(header: EnvelopeHeader(id: "s1"), state: .finished))) == .finished)
        #expect(machine.peerClosed() == .none)
    }

    @Test func aLostConnectionFailsTheSession() {
        var machine = establishedClient()
        guard case .failed = machine.peerClosed() else { Issue.record("not failed"); return }
    }
}
