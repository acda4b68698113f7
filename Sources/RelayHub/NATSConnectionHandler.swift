import Foundation
import Logging
import NIOCore
import NIOSSL
import NIOTLS
import RelayCore

/// Runs one NATS client connection: parses with `NATSParser`, feeds `NATSServerConnectionMachine`,
/// and carries out its actions against the hub's core, as `LIMEConnectionHandler` does for LIME.
final class NATSConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let hub: Hub
    private var parser: NATSParser
    private var machine: NATSServerConnectionMachine?
    private var sessionID: SessionID?
    private var pingTask: Scheduled<Void>?
    private var outlet: SessionOutlet?
    /// Stops reading while a subscriber of this connection's publications is far behind.
    private let stall: PublisherStall
    private var closing = false
    /// Publications of the current read, handed to the hub together (one lock, one batch of
    /// writes per subscriber) before anything else the connection asked for, and at the read's end.
    private var publications: [NATSPublication] = []
    private var reading = false
    /// The bytes of the current read: the PUBs forwarded from where they lie point into them.
    private var currentRead: ByteBuffer?
    /// The actions of the current read, kept to reuse the array's storage.
    private var actions: [NATSServerConnectionMachine.Action] = []
    /// The peer's IP address, for the per-address limits.
    private var address: String?
    /// What the transport proved of the peer (TLS, its certificate's names).
    private var transport = TransportFacts()
    /// The credentials accepted, until the connection is registered with their permissions.
    private var admitted: Admission?
    /// Ends a connection that does not CONNECT in time when credentials or TLS are required.
    private var connectTimer: Scheduled<Void>?
    /// The parser failed: nothing more is read (its error may wait for a credentials check).
    private var inputEnded = false

    /// The hub's logger with this connection's session id, address and, once connected, node.
    private var logger: Logger

    init(hub: Hub) {
        self.hub = hub
        self.logger = hub.logger
        logger[metadataKey: "transport"] = "nats"
        self.parser = NATSParser(role: .server, maximumPayload: hub.configuration.limits.maxEnvelopeBytes)
        self.stall = PublisherStall(maximumMilliseconds: hub.configuration.limits.maxPublisherStallMilliseconds)
    }

    func channelActive(context: ChannelHandlerContext) {
        let configuration = hub.configuration
        let outlet = SessionOutlet(
            channel: context.channel, framing: .stream, maximumPendingBytes: configuration.limits.maxPendingBytes, totals: hub.traffic)
        self.outlet = outlet
        address = context.channel.remoteAddress?.ipAddress
        logger[metadataKey: "address"] = .string(address ?? "-")
        let id: SessionID
        switch hub.openSession(outlet, address: address, port: context.channel.remoteAddress?.port, transport: "nats") {
        case .failure(let refusal):
            logger.warning("NATS connection refused", metadata: ["why": "\(refusal)"])
            fail(NATSProtocolError(refusal.natsError), context: context)
            return
        case .success(let opened):
            id = opened
            logger[metadataKey: "session"] = .stringConvertible(opened)
        }
        sessionID = id
        var info: JSONObject = [
            "server_id": .string(hub.serverID), "server_name": "relay", "version": "2.9.0", "proto": 1, "go": "relay (swift)",
            "headers": true, "max_payload": .number(JSONNumber(configuration.limits.maxEnvelopeBytes)),
            "client_id": .number(JSONNumber(Int(id))),
        ]
        if let address = context.channel.localAddress, let port = address.port {
            info["host"] = .string(address.ipAddress ?? "127.0.0.1")
            info["port"] = .number(JSONNumber(port))
        }
        if let remote = context.channel.remoteAddress?.ipAddress { info["client_ip"] = .string(remote) }
        if hub.authenticator.requiresCredentials { info["auth_required"] = true }
        // As nats-server: the client upgrades right after INFO when TLS is required; when it is
        // only available, a client that wants it upgrades and others go on in plaintext.
        if let tls = configuration.tls {
            info[tls.required ? "tls_required" : "tls_available"] = true
            if tls.verify { info["tls_verify"] = true }
        }
        let tlsRequired = configuration.tls?.required ?? false
        var machine = NATSServerConnectionMachine(
            configuration: .init(
                info: info, authRequired: hub.authenticator.requiresCredentials,
                maximumPingsOutstanding: configuration.natsOptions.maxPingsOutstanding,
                anonymousNode: Node(identity: Identity(name: "nats-\(id)", domain: configuration.domain), instance: String(id)),
                tlsRequired: tlsRequired))
        var actions = machine.connected()
        self.machine = machine
        execute(&actions, context: context)
        schedulePing(context: context)
        if hub.authenticator.requiresCredentials || tlsRequired {
            let timeout = TimeAmount.nanoseconds(Int64(configuration.limits.establishTimeoutSeconds * 1_000_000_000))
            connectTimer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [weak self] in
                self?.feed(context: context) { $0.connectTimedOut() }
            }
        }
        context.fireChannelActive()
    }

    /// The keepalive: every interval the machine pings, or declares the connection stale.
    private func schedulePing(context: ChannelHandlerContext) {
        let interval = TimeAmount.milliseconds(Int64(hub.configuration.natsOptions.pingIntervalSeconds * 1000))
        pingTask = context.eventLoop.assumeIsolated().scheduleTask(in: interval) { [weak self] in
            guard let self, !self.closing else { return }
            self.feed(context: context) { $0.pingIntervalElapsed() }
            self.schedulePing(context: context)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing, !inputEnded else { return }
        let buffer = unwrapInboundIn(data)
        outlet?.traffic.received(messages: 0, bytes: buffer.readableBytes)
        reading = true
        currentRead = buffer
        defer {
            reading = false
            publishPending()
            // Their payloads are in this read: none may outlive it.
            publications.removeAll(keepingCapacity: true)
            currentRead = nil
        }
        guard machine != nil else { return }
        var actions = self.actions
        self.actions = []
        defer {
            actions.removeAll(keepingCapacity: true)
            self.actions = actions
        }
        do {
            // Each operation moves from the parser into the machine; their actions are carried
            // out together once the read is parsed. A PUB without headers stays in the read.
            try parser.bytesReceived(
                buffer.readableBytesView, { machine!.operationReceived($0, into: &actions) },
                publishInPlace: { machine!.publishInPlaceReceived($0, into: &actions) })
            execute(&actions, context: context)
        } catch {
            execute(&actions, context: context)
            inputEnded = true
            logger.debug("NATS protocol error", metadata: ["error": "\(error)"])
            feed(context: context) { $0.protocolErrorOccurred(error) }
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // What this read cycle produced for this connection goes out now, with one flush.
        outlet?.writer.drain()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        outlet?.writabilityChanged(context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        pingTask?.cancel()
        connectTimer?.cancel()
        machine?.peerClosed()
        if let sessionID { hub.closeSession(sessionID) }
        sessionID = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("NATS connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            transport = CertificateNames.transportFacts(of: context.channel)
            machine?.transportSecured()
            if let sessionID { hub.noteSecured(sessionID) }
            return
        }
        guard let event = event as? HubSessionEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        switch event {
        case .terminate(let reason):
            let kind: NATSProtocolError.Kind = reason.code == ReasonCode.dispatchError ? .slowConsumer : .authorization
            feed(context: context) { $0.terminated(NATSProtocolError(kind, detail: reason.description)) }
        case .shutdown:
            closing = true
            context.close(promise: nil)
        case .lameDuck:
            feed(context: context) { $0.lameDuckEntered() }
        }
    }

    // MARK: - Carrying out the machine's actions

    private func feed(context: ChannelHandlerContext, _ event: (inout NATSServerConnectionMachine) -> [NATSServerConnectionMachine.Action])
    {
        // Changed in place: a copy would share the machine's buffers and copy them on change.
        guard machine != nil else { return }
        var actions = event(&machine!)
        execute(&actions, context: context)
    }

    /// Carries out the actions in order, emptying `actions`: each is moved out, not copied (a
    /// copy would retain a publication once more).
    private func execute(_ actions: inout [NATSServerConnectionMachine.Action], context: ChannelHandlerContext) {
        actions.drainInOrder { action in
            if !closing { execute(action, context: context) }
        }
    }

    private func publishPending() {
        guard !publications.isEmpty, let sessionID else { return }
        outlet?.traffic.received(messages: publications.count, bytes: 0)
        let options = machine?.options
        let noResponders = options?.noResponders == true && options?.headers == true
        let waits: [PublisherStall.Wait]
        if let currentRead {
            waits = currentRead.withUnsafeReadableBytes {
                hub.natsPublish(&publications, bytes: $0, from: sessionID, noResponders: noResponders)
            }
        } else {
            waits = hub.natsPublish(
                &publications, bytes: UnsafeRawBufferPointer(start: nil, count: 0), from: sessionID, noResponders: noResponders)
        }
        if !waits.isEmpty, let channel = outlet?.channel { stall.wait(for: waits, channel: channel, hub: hub) }
    }

    private func execute(_ action: consuming NATSServerConnectionMachine.Action, context: ChannelHandlerContext) {
        guard let sessionID else { return }
        switch action {
        case .publish, .forward: break
        default: publishPending()
        }
        switch consume action {
        case .send(let operations):
            var bytes: [UInt8] = []
            for operation in operations { NATSEncoder.encode(operation, into: &bytes) }
            outlet?.write([bytes])
        case .authenticate(let options):
            authenticate(options, session: sessionID, context: context)
        case .register(let options):
            connectTimer?.cancel()
            guard let node = machine?.publisher else { return }
            logger[metadataKey: "identity"] = .string(node.description)
            hub.registerNATS(
                sessionID, node: node, headers: options.headers, permissions: admitted?.permissions, source: admitted?.source ?? .guest)
        case .subscribe(let sid, let subject, _) where subject.hasPrefix(HubCore.queueSubjectPrefix):
            // A durable queue, consumed with acknowledgements (JetStream's MaxAckPending default as credit).
            do {
                try hub.natsConsume(sessionID, sid: sid, queue: String(subject.dropFirst(HubCore.queueSubjectPrefix.count)), credit: 1000)
            } catch {
                write(.error(error.code == RelayReasonCode.subscribeNotPermitted ? error.description : "Invalid Subject"), context: context)
            }
        case .subscribe(let sid, let subject, let queue):
            do {
                try hub.natsSubscribe(sessionID, sid: sid, subject: subject, queue: queue, echo: machine?.options?.echo ?? true)
            } catch {
                // A permission's refusal is worded as nats-server's ("Permissions Violation for Subscription to ...").
                if error.code == RelayReasonCode.subscribeNotPermitted {
                    write(.error(error.description), context: context)
                } else {
                    let kind: NATSProtocolError.Kind = error.code == RelayReasonCode.limitReached ? .maximumSubscriptions : .invalidSubject
                    write(.error(NATSProtocolError(kind).errText), context: context)
                }
            }
        case .unsubscribe(let sid, let max):
            hub.natsUnsubscribe(sessionID, sid: sid, max: max)
        case .publish(let message):
            publications.append(.message(message))
            if !reading { publishPending() }
        case .forward(let publication):
            publications.append(.inPlace(publication))
        case .failAndClose(let error):
            fail(error, context: context)
        }
    }

    /// Checks CONNECT's credentials off the event loop (`Hub.checkCredentials`), then tells the
    /// machine. Operations that arrive meanwhile wait in the machine.
    private func authenticate(_ options: NATSConnectOptions, session: SessionID, context: ChannelHandlerContext) {
        let (hub, transport) = (self.hub, self.transport)
        hub.checkCredentials(
            on: context.eventLoop, from: address, immediate: hub.authenticator.immediateNATSVerdict(options, transport: transport),
            { await hub.authenticator.verifyNATS(options, transport: transport) },
            isRefusal: { if case .refused = $0 { true } else { false } }
        ) { [self] verdict in
            switch verdict {
            case .admitted(let admission):
                admitted = admission
                feed(context: context) { $0.connectAccepted(as: Node(identity: admission.identity, instance: String(session))) }
            case .anonymous(let permissions):
                admitted = Admission(
                    identity: Identity(name: nil, domain: hub.configuration.domain), permissions: permissions, source: .guest)
                feed(context: context) { $0.connectAccepted() }
            case .refused(let reason):
                logger.info("NATS authentication refused", metadata: ["user": "\(options.user ?? "-")", "reason": "\(reason.description)"])
                feed(context: context) { $0.connectRejected() }
            }
        }
    }

    private func write(_ operation: NATSOperation, context: ChannelHandlerContext) {
        outlet?.write([NATSEncoder.encode(operation)])
    }

    private func fail(_ error: NATSProtocolError, context: ChannelHandlerContext) {
        closing = true
        pingTask?.cancel()
        connectTimer?.cancel()
        let channel = context.channel
        guard let outlet else {
            channel.close(promise: nil)
            return
        }
        // After what is already queued: a slow consumer's -ERR waits behind its pending writes.
        outlet.writeLastAndClose(NATSEncoder.encode(.error(error.errText)))
    }
}
