import Foundation
import Logging
import NIOCore
import NIOSSL
import NIOTLS
import RelayCore
import RelayTransport

/// Runs one LIME session on one connection: feeds what arrives into `LIMEServerSessionMachine`
/// and carries out the actions it returns. It decides nothing itself.
///
/// Over TCP the bytes are split into envelopes by `LIMEStreamFramer`; over WebSocket each inbound
/// buffer is one envelope (one text frame).
final class LIMEConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let hub: Hub
    private let framing: LIMEEnvelopeReader.Framing
    private var reader: LIMEEnvelopeReader
    private var machine: LIMEServerSessionMachine?
    private var sessionID: SessionID?
    private var establishTimer: Scheduled<Void>?
    private var outlet: SessionOutlet?
    /// Stops reading while a subscriber of this connection's publications is far behind.
    private let stall: PublisherStall
    private var closing = false
    /// Envelopes of the current read cycle for the hub, handed over together (one lock, one batch
    /// of writes per recipient) before anything else the session does, and at the cycle's end.
    private var routed: [LIMERouted] = []
    private var reading = false
    /// The peer's IP address, for the per-address limits.
    private var address: String?
    /// What the transport proved of the peer (TLS, its certificate's names).
    private var transport = TransportFacts()
    /// The credentials accepted, until the session is registered with their permissions.
    private var admitted: Admission?

    /// permessage-deflate, when the WebSocket upgrade negotiated it.
    private let compression: WebSocketCompression?

    init(hub: Hub, framing: LIMEEnvelopeReader.Framing, compression: WebSocketCompression? = nil) {
        self.hub = hub
        self.framing = framing
        self.compression = compression
        let limits = hub.configuration.limits
        self.stall = PublisherStall(maximumMilliseconds: limits.maxPublisherStallMilliseconds)
        self.reader = LIMEEnvelopeReader(framing: framing, maximumEnvelopeSize: limits.maxEnvelopeBytes, maximumDepth: limits.maxJSONDepth)
        self.logger = hub.logger
        logger[metadataKey: "transport"] = .string(framing == .stream ? "lime-tcp" : "lime-ws")
    }

    /// The hub's logger with this connection's session id, address and, once established, node.
    private var logger: Logger

    func handlerAdded(context: ChannelHandlerContext) {
        // Over WebSocket the channel is already active when this handler joins after the upgrade.
        if context.channel.isActive { start(context: context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context: context)
        context.fireChannelActive()
    }

    private func start(context: ChannelHandlerContext) {
        guard machine == nil else { return }
        let configuration = hub.configuration
        let hubNode = configuration.hubNode
        let outlet = SessionOutlet(
            channel: context.channel, framing: framing == .stream ? .stream : .webSocket(masked: false), compression: compression,
            maximumPendingBytes: configuration.limits.maxPendingBytes, totals: hub.traffic
        ) { token, count in
            // Tells the subscriber how many deliveries its overflow policy dropped while it lagged.
            let report = LIMEMessage(
                header: EnvelopeHeader(from: hubNode, metadata: ["#subscription": token, "#dropped": String(count)]),
                type: "application/vnd.relay.dropped+json",
                content: ["subscription": .string(token), "dropped": .number(JSONNumber(count))])
            return LIMECodec.encode(.message(report))
        }
        self.outlet = outlet
        let randomTag = String(UInt32.random(in: .min ... .max), radix: 16)
        // Over TCP, TLS is negotiated in the session (LIME's `encryption`); over WebSocket it is
        // the connection's (`wss://`), settled before this handler joins.
        let tls = configuration.tls
        let encryption = framing == .stream && tls != nil ? (tls!.required ? ["tls"] : ["none", "tls"]) : ["none"]
        var machine = LIMEServerSessionMachine(
            configuration: .init(
                sessionID: UUID().uuidString.lowercased(), serverNode: configuration.hubNode, schemes: hub.authenticator.schemes,
                // gzip (LIME's session compression) over plaintext TCP only, when configured.
                compressionOptions: framing == .stream && tls == nil && configuration.compression.session ? ["none", "gzip"] : ["none"],
                encryptionOptions: encryption, assignedInstance: randomTag, requiresTLS: tls?.required ?? false,
                offersTransportScheme: hub.authenticator.checksClientCertificates))
        address = context.channel.remoteAddress?.ipAddress
        logger[metadataKey: "address"] = .string(address ?? "-")
        let remote = context.channel.remoteAddress
        switch hub.openSession(outlet, address: address, port: remote?.port, transport: framing == .stream ? "lime-tcp" : "lime-ws") {
        case .failure(let refusal):
            logger.warning("connection refused", metadata: ["why": "\(refusal)"])
            let action = machine.terminated(refusal.reason)
            self.machine = machine
            execute(action, context: context)
            return
        case .success(let id):
            sessionID = id
            logger[metadataKey: "session"] = .stringConvertible(id)
        }
        transport = CertificateNames.transportFacts(of: context.channel)
        if transport.secured {
            _ = machine.transportSecured(clientCertified: !transport.certificateNames.isEmpty)
            if let sessionID { hub.noteSecured(sessionID) }
        }
        self.machine = machine
        let timeout = TimeAmount.nanoseconds(Int64(configuration.limits.establishTimeoutSeconds * 1_000_000_000))
        establishTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
            guard let self, var machine = self.machine else { return }
            let action = machine.establishmentTimedOut()
            self.machine = machine
            self.execute(action, context: context)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        // Publications are routed together when the read cycle ends (over WebSocket each frame
        // is a read of its own here), unless the session does something else first.
        reading = true
        let buffer = unwrapInboundIn(data)
        var envelopes = 0
        defer { outlet?.traffic.received(messages: envelopes, bytes: buffer.readableBytes) }
        let error = reader.read(
            buffer,
            publishInPlace: { publication, bytes in
                // Forwarded from its bytes when the hub can (`Hub.route`), published as usual otherwise.
                guard !self.closing, self.machine?.routesPublicationsInPlace == true else { return false }
                envelopes += 1
                self.routed.append(.publication(publication, bytes))
                return true
            }
        ) { envelope in
            // Moved into the machine, which sets `from` in place.
            guard !closing, machine != nil else { return }
            envelopes += 1
            let action = machine!.envelopeReceived(envelope)
            execute(action, context: context)
        }
        if let reason = error, !closing {
            logger.debug("invalid input", metadata: ["reason": "\(reason.description)"])
            feed(context: context) { $0.invalidInputReceived(reason) }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        reading = false
        routePending()
        // What this read cycle produced for this connection goes out now, with one flush.
        outlet?.writer.drain()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        outlet?.writabilityChanged(context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        establishTimer?.cancel()
        feed(context: context) { $0.peerClosed() }
        if let sessionID { hub.closeSession(sessionID) }
        sessionID = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let reason = reader.reason(for: error) {
            feed(context: context) { $0.invalidInputReceived(reason) }
            return
        }
        logger.debug("connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case TLSUserEvent.handshakeCompleted:
            // The upgrade the session negotiated is done: the machine offers its schemes now.
            transport = CertificateNames.transportFacts(of: context.channel)
            if let sessionID { hub.noteSecured(sessionID) }
            feed(context: context) { [transport] in $0.transportSecured(clientCertified: !transport.certificateNames.isEmpty) }
        case let event as HubSessionEvent:
            switch event {
            case .terminate(let reason):
                if reason.code == ReasonCode.dispatchError {
                    logger.info("slow consumer ended")
                }
                feed(context: context) { $0.terminated(reason) }
            case .shutdown:
                feed(context: context) { $0.shutdownRequested() }
            case .lameDuck:
                // The session is finished when the drain ends; Relay's client reconnects elsewhere.
                feed(context: context) { $0.lameDuckEntered() }
            }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    // MARK: - Carrying out the machine's actions

    private func feed(context: ChannelHandlerContext, _ event: (inout LIMEServerSessionMachine) -> LIMEServerSessionMachine.Action) {
        // Changed in place: a copy would retain the machine's fields once more per envelope.
        guard machine != nil else { return }
        let action = event(&machine!)
        execute(action, context: context)
    }

    private func routePending() {
        guard !routed.isEmpty, let sessionID else { return }
        let waits = hub.route(&routed, from: sessionID)
        if !waits.isEmpty, let channel = outlet?.channel { stall.wait(for: waits, channel: channel, hub: hub) }
    }

    private func execute(_ action: consuming LIMEServerSessionMachine.Action, context: ChannelHandlerContext) {
        if case .route = action {} else { routePending() }
        switch consume action {
        case .none:
            break
        case .send(let envelopes):
            for envelope in envelopes { write(envelope, context: context) }
        case .sendAndStartTLS(let envelope):
            startTLS(after: envelope, context: context)
        case .sendAndStartCompression(let confirmation, let rest):
            startCompression(after: confirmation, then: rest, context: context)
        case .verifyCredentials(let credentials):
            verify(credentials, context: context)
        case .establish(let node, let reply):
            establishTimer?.cancel()
            logger[metadataKey: "identity"] = .string(node.description)
            if let sessionID { hub.register(sessionID, node: node, permissions: admitted?.permissions, source: admitted?.source ?? .guest) }
            write(reply, context: context)
        case .route(let envelope):
            routed.append(.envelope(envelope))
            if !reading { routePending() }
        case .sendAndClose(let envelope):
            sendAndClose(envelope, context: context)
        case .unregisterSendAndClose(let envelope):
            if let sessionID { hub.unregister(sessionID) }
            sendAndClose(envelope, context: context)
        case .unregister:
            if let sessionID { hub.unregister(sessionID) }
        case .close:
            closing = true
            context.close(promise: nil)
        }
    }

    /// Checks credentials off the event loop (`Hub.checkCredentials`), then tells the machine.
    private func verify(_ credentials: CredentialsPresented, context: ChannelHandlerContext) {
        let fallbackName = machine?.configuration.assignedInstance ?? "guest"
        let (hub, transport) = (self.hub, self.transport)
        hub.checkCredentials(
            on: context.eventLoop, from: address,
            immediate: hub.authenticator.immediateVerdict(credentials, fallbackName: fallbackName, transport: transport),
            { await hub.verify(credentials, fallbackName: fallbackName, transport: transport) },
            isRefusal: { if case .failure = $0 { true } else { false } }
        ) { [self] result in
            switch result {
            case .success(let admission):
                admitted = admission
                feed(context: context) { $0.credentialsAccepted(identity: admission.identity) }
            case .failure(let reason):
                logger.info(
                    "authentication refused",
                    metadata: [
                        "requested": "\(credentials.identity?.description ?? "-")", "scheme": "\(credentials.scheme)",
                    ])
                feed(context: context) { $0.credentialsRejected(reason) }
            }
        }
    }

    /// Sends the negotiation's confirmation in plaintext, then puts TLS in front of the session:
    /// the client starts its handshake once it has read the confirmation.
    private func startTLS(after envelope: Envelope, context: ChannelHandlerContext) {
        guard hub.tls != nil, let outlet else {
            feed(context: context) { $0.invalidInputReceived(Reason(code: ReasonCode.sessionError, description: "TLS is not available")) }
            return
        }
        write(envelope, context: context)
        // Written through the pipeline now, before the TLS handler is in it.
        outlet.writer.drain()
        do {
            try context.pipeline.syncOperations.addHandlers(hub.tlsServerHandlers(), position: .first)
        } catch {
            logger.warning("TLS could not start", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    /// Sends the negotiation's confirmation uncompressed, then makes the connection a gzip stream
    /// both ways (the client switches once it has read the confirmation) and sends `rest` through it.
    private func startCompression(after confirmation: Envelope, then rest: [Envelope], context: ChannelHandlerContext) {
        guard let outlet else { return }
        write(confirmation, context: context)
        // Written through the pipeline now, before the codec is in it.
        outlet.writer.drain()
        do {
            try context.pipeline.syncOperations.addHandler(GzipStreamCodec(), position: .before(self))
        } catch {
            logger.warning("compression could not start", metadata: ["error": "\(error)"])
            context.close(promise: nil)
            return
        }
        for envelope in rest { write(envelope, context: context) }
    }

    private func write(_ envelope: Envelope, context: ChannelHandlerContext) {
        outlet?.write([LIMECodec.encode(envelope)])
    }

    private func sendAndClose(_ envelope: Envelope, context: ChannelHandlerContext) {
        closing = true
        establishTimer?.cancel()
        let channel = context.channel
        guard let outlet else {
            channel.close(promise: nil)
            return
        }
        // After what is already queued, so a `failed` or `finished` is the last envelope sent.
        outlet.writeLastAndClose(LIMECodec.encode(envelope))
    }
}
