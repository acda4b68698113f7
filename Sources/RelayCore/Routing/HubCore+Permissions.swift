// The permission checks of `HubCore`: one place for every dialect (see Security/Permissions.swift
// for the rules, docs/SECURITY.md for what each operation needs).

/// Something a session sent without asking for an answer, refused by its permissions.
public struct Refusal: Sendable, Equatable {
    public enum Operation: String, Sendable {
        /// A publication (the target is its subject).
        case publish
        /// A message to a node (the target is the node).
        case send
    }

    public var operation: Operation
    public var target: String
    public var reason: Reason

    public init(operation: Operation, target: String, reason: Reason) {
        self.operation = operation
        self.target = target
        self.reason = reason
    }
}

extension HubCore {
    /// The permissions of a session that has some; nil for one that may do everything.
    func permissions(of session: SessionID) -> Permissions? {
        permissions.isEmpty ? nil : permissions[session]
    }

    /// Why a session may not publish to `subject`, or nil when it may.
    mutating func publishRefusal(_ subject: String, from session: SessionID) -> Reason? {
        guard let permissions = permissions(of: session), !permissions.allowsPublish(to: subject) else { return nil }
        // Acknowledgements of the deliveries it was given are answers, not publications.
        if subject.hasPrefix("$RELAY.ACK.") { return nil }
        statistics.permissionViolations += 1
        return Reason(code: RelayReasonCode.publishNotPermitted, description: "Permissions Violation for Publish to \"\(subject)\"")
    }

    /// Why a session may not subscribe to `filter` (in `queue`), or nil when it may.
    mutating func subscribeRefusal(_ filter: String, queue: String?, from session: SessionID) -> Reason? {
        guard let permissions = permissions(of: session), !permissions.allowsSubscribe(to: filter, queue: queue) else { return nil }
        statistics.permissionViolations += 1
        let using = queue.map { " using queue \"\($0)\"" } ?? ""
        return Reason(
            code: RelayReasonCode.subscribeNotPermitted, description: "Permissions Violation for Subscription to \"\(filter)\"\(using)")
    }

    /// Why a session may not consume a durable queue: consuming `Q` is subscribing to
    /// `$RELAY.QUEUE.Q`, the subject a NATS consumer subscribes to.
    mutating func consumeRefusal(_ queue: String, from session: SessionID) -> Reason? {
        subscribeRefusal(Self.queueSubjectPrefix + queue, queue: nil, from: session)
    }

    /// Why a session may not register as an instance of `service`, or nil when it may.
    mutating func serveRefusal(_ service: String, from session: SessionID) -> Reason? {
        guard let permissions = permissions(of: session), !permissions.allowsServing(service) else { return nil }
        statistics.permissionViolations += 1
        return Reason(code: RelayReasonCode.serviceNotPermitted, description: "Permissions Violation for Serving \"\(service)\"")
    }

    /// Why a session may not call `service/method`, or nil when it may.
    func callRefusal(_ service: String, method: String, from session: SessionID) -> Reason? {
        guard let permissions = permissions(of: session), !permissions.allowsCalling(service, method: method) else { return nil }
        return Reason(
            code: RelayReasonCode.serviceNotPermitted, description: "Permissions Violation for Calling \"\(service)/\(method)\"")
    }

    /// Why a session may not administer the hub (create or delete durable queues), or nil when it
    /// may: sessions without permissions may, as before permissions existed.
    mutating func administrationRefusal(_ what: String, from session: SessionID) -> Reason? {
        guard let permissions = permissions(of: session), !permissions.admin else { return nil }
        statistics.permissionViolations += 1
        return Reason(code: ReasonCode.authorizationError, description: "Permissions Violation: \(what) is for administrators")
    }

    /// Whether a session may call a service's `admin` methods: an identity the configuration names
    /// as an administrator, or a session whose permissions say `admin`.
    func mayCallAdminMethods(_ session: SessionID) -> Bool {
        if permissions(of: session)?.admin == true { return true }
        guard let identity = router.node(of: session)?.identity else { return false }
        return configuration.admins.contains(identity)
    }

    /// The refusal of a message or command request to a node the sender may not reach, or nil when
    /// it may. Notifications and command responses are answers and always go through.
    mutating func sendRefusal(_ envelope: Envelope, from session: SessionID) -> [Output]? {
        guard let permissions = permissions(of: session) else { return nil }
        let header: EnvelopeHeader
        switch envelope {
        case .message(let message): header = message.header
        case .command(let command) where !command.isResponse: header = command.header
        default: return nil
        }
        guard let to = header.to, !isHub(to), !permissions.allowsSending(to: to) else { return nil }
        statistics.permissionViolations += 1
        let reason = Reason(
            code: ReasonCode.authorizationUnauthorizedSender, description: "Permissions Violation for Sending to \"\(to)\"")
        switch envelope {
        case .command(let command):
            return command.header.id == nil
                ? [.refused(session, Refusal(operation: .send, target: to.description, reason: reason))]
                : [reply(session, command.failure(reason))]
        case .message(let message):
            guard let id = message.header.id else {
                return [.refused(session, Refusal(operation: .send, target: to.description, reason: reason))]
            }
            let failed = LIMENotification(
                header: EnvelopeHeader(id: id, from: configuration.hubNode, to: message.header.from), event: .failed, reason: reason)
            return [.send(session, .notification(failed))]
        default:
            return nil
        }
    }
}

extension HubCore {
    /// A configuration read again (SIGHUP): the limits, administrators and default deadline
    /// change for what comes next; the hub's node stays.
    public mutating func reconfigure(_ fresh: Configuration) {
        var fresh = fresh
        fresh.hubNode = configuration.hubNode
        // A generator already running keeps its sequence; creation switches on or off.
        if (fresh.traceIdentifiers == nil) != (traceIdentifiers == nil) { traceIdentifiers = fresh.traceIdentifiers }
        configuration = fresh
    }

    /// A session's permissions changed (its user's configuration was read again): they apply
    /// from now on, and its subscriptions they no longer allow end, as nats-server's reload ends
    /// them. Returns the subscriptions (tokens) ended.
    @discardableResult
    public mutating func permissionsChanged(_ session: SessionID, to fresh: Permissions?) -> [String] {
        permissions[session] = fresh
        var ended: [String] = []
        for (key, slot) in subscriptionSlotsByKey where key.session == session {
            let subscription = subscriptionSlots[slot]
            guard let fresh else {
                subscriptionSlots[slot].checksDelivery = false
                continue
            }
            if fresh.allowsSubscribe(to: subscription.filter, queue: subscription.queue) {
                subscriptionSlots[slot].checksDelivery = fresh.subscriptionNeedsDeliveryCheck(
                    subscription.filter, queue: subscription.queue)
            } else {
                removeSubscription(key)
                ended.append(key.token)
            }
        }
        return ended.sorted()
    }
}
