import Testing

@testable import RelayCore

/// LIME's session compression (`compression: gzip`) in both session machines.
@Suite struct SessionCompressionMachineTests {
    private static let hub = Node("postmaster@relay.local/hub")!

    private func server(compression: [String], encryption: [String] = ["none"]) -> LIMEServerSessionMachine {
        LIMEServerSessionMachine(
            configuration: .init(
                sessionID: "s1", serverNode: Self.hub, schemes: ["guest"], compressionOptions: compression, encryptionOptions: encryption,
                assignedInstance: "i"))
    }

    private func choice(compression: String, encryption: String = "none") -> Envelope {
        .session(LIMESession(header: EnvelopeHeader(id: "s1"), state: .negotiating, encryption: encryption, compression: compression))
    }

    @Test func theServerConfirmsThenCompressesWhatFollows() {
        var machine = server(compression: ["none", "gzip"])
        guard case .send(let offer) = machine.envelopeReceived(.session(LIMESession(state: .new))),
            case .session(let negotiating) = offer.first
        else { Issue.record("no offer"); return }
        #expect(negotiating.compressionOptions == ["none", "gzip"])
        let switched = machine.envelopeReceived(choice(compression: "gzip"))
        guard case .sendAndStartCompression(.session(let confirmation), let rest) = switched else {
            Issue.record("no switch: \(switched)")
            return
        }
        #expect(confirmation.state == .negotiating && confirmation.compression == "gzip")
        guard case .session(let authenticating) = rest.first else { Issue.record("nothing after"); return }
        #expect(authenticating.state == .authenticating)
    }

    @Test func noneStaysUncompressedAndGzipIsNeverTakenWithTLS() {
        var plain = server(compression: ["none", "gzip"])
        _ = plain.envelopeReceived(.session(LIMESession(state: .new)))
        guard case .send = plain.envelopeReceived(choice(compression: "none")) else { Issue.record("not plain"); return }

        var both = server(compression: ["none", "gzip"], encryption: ["none", "tls"])
        _ = both.envelopeReceived(.session(LIMESession(state: .new)))
        guard case .sendAndClose(.session(let failed)) = both.envelopeReceived(choice(compression: "gzip", encryption: "tls")) else {
            Issue.record("gzip with TLS accepted")
            return
        }
        #expect(failed.reason?.code == ReasonCode.sessionNegotiationInvalidOptions)

        // Not offered: refused.
        var notOffered = server(compression: ["none"], encryption: ["none", "tls"])
        _ = notOffered.envelopeReceived(.session(LIMESession(state: .new)))
        guard case .sendAndClose = notOffered.envelopeReceived(choice(compression: "gzip")) else {
            Issue.record("gzip accepted without being offered")
            return
        }
    }

    @Test func theClientSwitchesRightAfterTheConfirmation() {
        var machine = LIMEClientSessionMachine(
            configuration: .init(identity: Identity("zip@relay.local"), scheme: "guest", authentication: [:], compression: "gzip"))
        _ = machine.connected()
        let offer = LIMESession(
            header: EnvelopeHeader(id: "s1"), state: .negotiating, encryptionOptions: ["none"], compressionOptions: ["none", "gzip"])
        guard case .send(.session(let chosen)) = machine.envelopeReceived(.session(offer)) else { Issue.record("no choice"); return }
        #expect(chosen.compression == "gzip")
        #expect(machine.awaitsCompressionSwitch, "the reader must stop after the confirmation")
        #expect(machine.envelopeReceived(choice(compression: "gzip")) == .startCompression)
        #expect(!machine.awaitsCompressionSwitch)

        var declines = LIMEClientSessionMachine(
            configuration: .init(identity: Identity("plain@relay.local"), scheme: "guest", authentication: [:]))
        _ = declines.connected()
        guard case .send(.session(let none)) = declines.envelopeReceived(.session(offer)) else { Issue.record("no choice"); return }
        #expect(none.compression == "none" && !declines.awaitsCompressionSwitch)
    }
}
