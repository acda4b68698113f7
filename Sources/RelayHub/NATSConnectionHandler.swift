import Foundation
import Logging
import NIOCore
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
    private var closing = false
    /// Publications of the current read, handed to the hub together (one lock, one batch of
    /// writes per subscriber) before anything else the connection asked for, and at the read's end.
    private var publications: [NATSPublication] = []
    private var reading = false
    /// The bytes of the current read: the PUBs forwarded from where they lie point into them.
    private var currentRead: ByteBuffer?
    /// The actions of the current read, kept to reuse the array's storage.
    private var actions: [NATSServerConnectionMachine.Action] = []

    init(hub: Hub) {
        self.hub = hub
        self.parser = NATSParser(role: .server, maximumPayload: hub.configuration.limits.maxEnvelopeBytes)
    }

    func channelActive(context: ChannelHandlerContext) {
        let configuration = hub.configuration
        let outlet = SessionOutlet(channel: context.channel, framing: .stream, maximumPendingBytes: configuration.limits.maxPendingBytes)
        self.outlet = outlet
        guard let id = hub.openSession(outlet) else {
            fail(NATSProtocolError(.maximumConnections), context: context)
            return
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
        var machine = NATSServerConnectionMachine(
            configuration: .init(
                info: info, authRequired: hub.authenticator.requiresCredentials,
                maximumPingsOutstanding: configuration.natsOptions.maxPingsOutstanding,
                anonymousNode: Node(identity: Identity(name: "nats-\(id)", domain: configuration.domain), instance: String(id))))
        var actions = machine.connected()
        self.machine = machine
        execute(&actions, context: context)
        schedulePing(context: context)
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
        guard !closing else { return }
        let buffer = unwrapInboundIn(data)
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
            hub.logger.debug("NATS protocol error", metadata: ["session": "\(sessionID ?? 0)", "error": "\(error)"])
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
        machine?.peerClosed()
        if let sessionID { hub.closeSession(sessionID) }
        sessionID = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        hub.logger.debug("NATS connection error", metadata: ["session": "\(sessionID ?? 0)", "error": "\(error)"])
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
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
        let options = machine?.options
        let noResponders = options?.noResponders == true && options?.headers == true
        if let currentRead {
            currentRead.withUnsafeReadableBytes { hub.natsPublish(publications, bytes: $0, from: sessionID, noResponders: noResponders) }
        } else {
            hub.natsPublish(publications, bytes: UnsafeRawBufferPointer(start: nil, count: 0), from: sessionID, noResponders: noResponders)
        }
        publications.removeAll(keepingCapacity: true)
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
            switch hub.authenticator.verifyNATS(options) {
            case .user(let identity):
                feed(context: context) { $0.connectAccepted(as: Node(identity: identity, instance: String(sessionID))) }
            case .guest:
                feed(context: context) { $0.connectAccepted() }
            case .refused:
                hub.logger.info("NATS authentication refused", metadata: ["user": "\(options.user ?? "-")"])
                feed(context: context) { $0.connectRejected() }
            }
        case .register(let options):
            guard let node = machine?.publisher else { return }
            hub.registerNATS(sessionID, node: node, headers: options.headers)
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

    private func write(_ operation: NATSOperation, context: ChannelHandlerContext) {
        outlet?.write([NATSEncoder.encode(operation)])
    }

    private func fail(_ error: NATSProtocolError, context: ChannelHandlerContext) {
        closing = true
        pingTask?.cancel()
        let channel = context.channel
        guard let outlet else {
            channel.close(promise: nil)
            return
        }
        // After what is already queued: a slow consumer's -ERR waits behind its pending writes.
        outlet.writeLastAndClose(NATSEncoder.encode(.error(error.errText)))
    }
}
