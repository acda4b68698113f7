/// Identifies one connected session inside the hub.
public typealias SessionID = UInt64

/// The hub's node registry and router, free of I/O.
///
/// It knows which session holds which node and decides where each envelope goes: a full node
/// reaches that session; an identity reaches every session of that identity (messages and
/// notifications) or one of them in turn (commands); no `to`, or the hub's own node, is the hub.
/// It also routes receipts back to the sender of the message they are about, since clients such as
/// lime-python address their automatic `received` notification to themselves.
public struct NodeRouter: Sendable {
    public struct Configuration: Sendable {
        /// The hub's own node (`postmaster@domain/instance`).
        public var hubNode: Node
        /// How many delivered message ids are remembered to route their receipts back.
        public var maximumReceiptRoutes: Int

        public init(hubNode: Node, maximumReceiptRoutes: Int = 10_000) {
            self.hubNode = hubNode
            self.maximumReceiptRoutes = maximumReceiptRoutes
        }
    }

    /// Where one routed envelope goes.
    public struct Routing: Sendable, Equatable {
        /// The envelope to deliver to `recipients` (the one routed, or a receipt readdressed).
        public var delivery: Envelope?
        /// The sessions that receive `delivery`.
        public var recipients: [SessionID] = []
        /// An answer for the sender itself (a ping response, a failure, a `failed` receipt).
        public var reply: Envelope?
        /// Whether the envelope was dropped because nobody could receive it (and no reply tells the sender).
        public var dropped = false
        /// On a cluster: the node `delivery` is for on other hubs too (or only), when `elsewhere`
        /// was asked and the node has no session here (or, for messages and notifications to an
        /// identity, may have sessions on other hubs as well).
        public var remote: Node?
    }

    /// What the router has done, for the hub's statistics.
    public struct Statistics: Sendable, Equatable {
        public var routed = 0
        public var delivered = 0
        public var undeliverable = 0
        public var receiptsRouted = 0
    }

    private struct ReceiptKey: Hashable, Sendable {
        var messageID: String
        var recipient: SessionID
    }

    public let configuration: Configuration
    public private(set) var statistics = Statistics()
    private var nodes: [SessionID: Node] = [:]
    private var sessionsByNode: [Node: SessionID] = [:]
    private var sessionsByIdentity: [Identity: [SessionID]] = [:]
    private var commandTurn: [Identity: Int] = [:]
    private var receiptRoutes: RecentMemory<ReceiptKey, Node>

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.receiptRoutes = RecentMemory(capacity: configuration.maximumReceiptRoutes)
    }

    /// How many sessions are registered.
    public var sessionCount: Int { nodes.count }

    /// The node a session holds.
    public func node(of session: SessionID) -> Node? { nodes[session] }

    /// The session holding a full node.
    public func session(of node: Node) -> SessionID? { sessionsByNode[node] }

    /// Registers a session under its node. Returns the session that held the node until now,
    /// which the hub must end: the newest session of a node wins, as with MQTT client ids.
    public mutating func register(_ session: SessionID, node: Node) -> SessionID? {
        let replaced = sessionsByNode[node]
        if let replaced { unregister(replaced) }
        nodes[session] = node
        sessionsByNode[node] = session
        sessionsByIdentity[node.identity, default: []].append(session)
        return replaced
    }

    /// Removes a session.
    public mutating func unregister(_ session: SessionID) {
        guard let node = nodes.removeValue(forKey: session) else { return }
        if sessionsByNode[node] == session { sessionsByNode[node] = nil }
        sessionsByIdentity[node.identity]?.removeAll { $0 == session }
        if sessionsByIdentity[node.identity]?.isEmpty == true {
            sessionsByIdentity[node.identity] = nil
            commandTurn[node.identity] = nil
        }
    }

    private func isHub(_ node: Node?) -> Bool {
        guard let node else { return true }
        let hub = configuration.hubNode
        if node.identity == hub.identity { return node.instance == nil || node.instance?.lowercased() == hub.instance?.lowercased() }
        // A bare domain names the server of that domain.
        return node.name == nil && node.instance == nil && node.domain.lowercased() == hub.domain.lowercased()
    }

    /// Routes an envelope sent by an established session; its `from` is already the sender's node.
    /// With `elsewhere` (a clustered hub, for what its own sessions sent), a node not connected
    /// here is not a failure: the routing names it `remote`, for the other hubs.
    public mutating func route(_ envelope: Envelope, from sender: SessionID, elsewhere: Bool = false) -> Routing {
        statistics.routed += 1
        var routing = Routing()
        let header = envelope.header
        if case .notification(let notification) = envelope,
            let (target, receipt, original) = receiptRoute(notification, from: sender, elsewhere: elsewhere)
        {
            routing.delivery = .notification(receipt)
            if let target { routing.recipients = [target] } else { routing.remote = original }
            statistics.receiptsRouted += 1
            statistics.delivered += 1
            return routing
        }
        if isHub(header.to) {
            routing.reply = hubHandle(envelope)
            return routing
        }
        let targets = recipients(of: envelope, to: header.to!)
        if elsewhere, targets.isEmpty || (header.to!.instance == nil && !Self.isCommand(envelope)) {
            routing.delivery = envelope
            routing.recipients = targets
            routing.remote = header.to
            rememberReceiptRoutes(envelope, for: targets)
            statistics.delivered += targets.count
            return routing
        }
        if targets.isEmpty {
            statistics.undeliverable += 1
            routing.reply = undeliverableReply(envelope)
            routing.dropped = routing.reply == nil
            return routing
        }
        routing.delivery = envelope
        routing.recipients = targets
        rememberReceiptRoutes(envelope, for: targets)
        statistics.delivered += targets.count
        return routing
    }

    private static func isCommand(_ envelope: Envelope) -> Bool {
        if case .command = envelope { return true } else { return false }
    }

    private mutating func rememberReceiptRoutes(_ envelope: Envelope, for targets: [SessionID]) {
        let header = envelope.header
        if case .message = envelope, let id = header.id, let from = header.from {
            for target in targets {
                receiptRoutes.remember(header.pp ?? from, for: ReceiptKey(messageID: id, recipient: target))
            }
        }
    }

    /// The identities with a session here, in order.
    public var identities: [Identity] { sessionsByIdentity.keys.sorted { $0.description < $1.description } }

    /// Whether some session here holds a node of `identity`.
    public func hasSessions(of identity: Identity) -> Bool { sessionsByIdentity[identity]?.isEmpty == false }

    private mutating func recipients(of envelope: Envelope, to: Node) -> [SessionID] {
        if to.instance != nil {
            return sessionsByNode[to].map { [$0] } ?? []
        }
        guard let sessions = sessionsByIdentity[to.identity], !sessions.isEmpty else { return [] }
        if case .command = envelope {
            let turn = commandTurn[to.identity, default: 0] % sessions.count
            commandTurn[to.identity] = turn + 1
            return [sessions[turn]]
        }
        return sessions
    }

    /// A receipt sent by the recipient of a message we routed goes back to that message's sender,
    /// whatever `to` the client put on it (lime-python puts its own node there).
    /// With `elsewhere`, a sender not connected here gives a nil session: the receipt is for
    /// its node on another hub.
    private mutating func receiptRoute(_ notification: LIMENotification, from sender: SessionID, elsewhere: Bool) -> (
        SessionID?, LIMENotification, Node
    )? {
        guard let id = notification.header.id, let senderNode = nodes[sender] else { return nil }
        let to = notification.header.to
        let addressedToSelfOrHub = to == nil || isHub(to) || to == senderNode || to == senderNode.withoutInstance
        guard addressedToSelfOrHub, let original = receiptRoutes[ReceiptKey(messageID: id, recipient: sender)] else { return nil }
        let target = sessionsByNode[original] ?? sessionsByIdentity[original.identity]?.first
        guard target != nil || elsewhere else { return nil }
        var forwarded = notification
        forwarded.header.to = original
        return (target, forwarded, original)
    }

    func undeliverableReply(_ envelope: Envelope) -> Envelope? {
        let header = envelope.header
        let reason = Reason(code: ReasonCode.routingDestinationNotFound, description: "Destination '\(header.to!)' is not connected")
        switch envelope {
        case .message:
            guard let id = header.id else { return nil }
            return .notification(
                LIMENotification(
                    header: EnvelopeHeader(id: id, from: header.to, to: header.pp ?? header.from), event: .failed, reason: reason))
        case .command(let command) where !command.isResponse:
            guard command.header.id != nil else { return nil }
            var failure = command.failure(reason)
            failure.header.from = header.to
            return .command(failure)
        default:
            return nil
        }
    }

    /// What the hub answers to envelopes addressed to itself.
    private func hubHandle(_ envelope: Envelope) -> Envelope? {
        let hub = configuration.hubNode
        switch envelope {
        case .command(let command) where !command.isResponse:
            guard command.header.id != nil else { return nil }
            var response: LIMECommand
            if command.method == .get, command.uri == "/ping" {
                response = command.success(type: .ping, resource: .object(JSONObject()))
            } else {
                response = command.failure(
                    Reason(
                        code: ReasonCode.commandResourceNotFound,
                        description: "The hub has no resource '\(command.uri ?? "")' for method '\(command.method.rawValue)'"))
            }
            response.header.from = hub
            return .command(response)
        case .message(let message):
            guard let id = message.header.id else { return nil }
            return .notification(
                LIMENotification(
                    header: EnvelopeHeader(id: id, from: hub, to: message.header.pp ?? message.header.from), event: .failed,
                    reason: Reason(code: ReasonCode.routingDestinationNotFound, description: "The hub does not accept messages; set 'to'")))
        default:
            // Responses and receipts for the hub itself need no answer.
            return nil
        }
    }
}
