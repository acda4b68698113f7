// The subject operations (subscribe, unsubscribe, publish) of `HubCore`; see HubCore.swift for the state they work on.

extension HubCore {
    // MARK: - Subjects

    // MARK: - Protocol-neutral operations

    /// Adds a subscription of a session under its own name for it (`token`: LIME's filter and queue,
    /// NATS's sid). Subscribing again under the same token is a no-op. `max` ends it after that many
    /// deliveries (NATS auto-unsubscribe).
    public mutating func subscribe(
        _ session: SessionID, token: String, filter: String, queue: String?, echo: Bool, overflow: DeliveryLimit? = nil
    ) throws(Reason) {
        if let error = Subject.filterError(filter) {
            throw Reason(code: ReasonCode.validationInvalidResource, description: error)
        }
        if let queue, queue.isEmpty || queue.contains(where: { $0.isWhitespace }) {
            throw Reason(code: ReasonCode.validationInvalidResource, description: "Queue group '\(queue)' is empty or contains whitespace")
        }
        let key = SubscriptionKey(session: session, token: token)
        guard subscriptions[key] == nil else { return }
        guard subscriptionCounts[session, default: 0] < configuration.maximumSubscriptionsPerSession else {
            throw Reason(
                code: RelayReasonCode.limitReached,
                description: "This session holds the maximum of \(configuration.maximumSubscriptionsPerSession) subscriptions")
        }
        let node = router.node(of: session)
        subscriptions[key] = Subscription(
            session: session, node: node, filter: filter, queue: queue, echo: echo, token: token, overflow: overflow)
        subjects.insert(key, filter: filter)
        subscriptionCounts[session, default: 0] += 1
    }

    /// Ends a subscription now (`max` nil), or after `max` deliveries in all (NATS's `UNSUB sid max`).
    /// Returns whether the session had it.
    @discardableResult
    public mutating func unsubscribe(_ session: SessionID, token: String, after max: Int? = nil) -> Bool {
        let key = SubscriptionKey(session: session, token: token)
        guard var subscription = subscriptions[key] else { return false }
        if let max, subscription.delivered < max {
            subscription.limit = max
            subscriptions[key] = subscription
            return true
        }
        removeSubscription(key)
        return true
    }

    private mutating func removeSubscription(_ key: SubscriptionKey) {
        guard let subscription = subscriptions.removeValue(forKey: key) else { return }
        subjects.remove(key, filter: subscription.filter)
        subscriptionCounts[key.session, default: 1] -= 1
    }

    /// Publishes a message from a session to every matching subscription: each plain subscription
    /// gets it, each queue group one member in turn. `targets` limits the recipients to those nodes;
    /// with `noResponders`, a request (a message with `replyTo`) nobody receives is answered with a
    /// 503 status on its reply subject, to the publisher, as nats-server does.
    /// Returns the outputs and how many subscriptions received it.
    /// With `jetStream` (NATS publishers), JetStream's conventions apply: a publication with a reply
    /// subject that durable queues keep is answered once it is on disk (`{"stream":"QUEUE","seq":N}`),
    /// and `$JS.API.STREAM.CREATE.NAME` creates a queue.
    public mutating func publish(
        _ message: PublishedMessage, from session: SessionID, targets: [Node]? = nil, noResponders: Bool = false,
        jetStream: Bool = false
    ) -> (outputs: [Output], delivered: Int) {
        // Replies to the hub's own inboxes, and NATS requests to services, are not publications.
        if let outputs = subjectReply(message) { return (outputs, 1) }
        if let outputs = ackPublished(message) { return (outputs, 1) }
        if jetStream, let outputs = streamCreate(message) { return (outputs, 1) }
        if let outputs = serviceRequest(message, from: session) { return (outputs, 1) }
        var outputs: [Output] = []
        var delivered = 0
        var queues: [String: [SubscriptionKey]] = [:]
        statistics.published += 1
        for key in subjects.match(message.subject) {
            // Looked up once by index: the delivery below counts through the same index.
            guard let index = subscriptions.index(forKey: key) else { continue }
            let subscription = subscriptions.values[index]
            if subscription.session == session && !subscription.echo { continue }
            if let targets, !targets.contains(where: { target in subscription.node.map { Self.node($0, isIn: target) } ?? false }) {
                continue
            }
            if let queue = subscription.queue {
                queues[queue, default: []].append(key)
                continue
            }
            outputs.append(deliver(message, to: key, at: index))
            delivered += 1
        }
        for (queue, members) in queues {
            // Each group gets one copy, to its members in turn.
            let turn = queueTurns[queue, default: 0]
            queueTurns[queue] = turn &+ 1
            let ordered = members.sorted { ($0.session, $0.token) < ($1.session, $1.token) }
            outputs.append(deliver(message, to: ordered[turn % ordered.count]))
            delivered += 1
        }
        // Durable queues keep a copy; it is delivered once it is on disk.
        let copies = queueCopies(of: message)
        if !copies.isEmpty {
            var then: [Output] = []
            if jetStream, let replyTo = message.replyTo, let first = copies.first {
                let ack = PublishedMessage(
                    subject: replyTo,
                    body: .json(["stream": .string(first.queue), "seq": .number(JSONNumber(Int(first.queued.sequence)))]))
                for key in subjects.match(replyTo) { then.append(deliver(ack, to: key)) }
            }
            outputs.append(.persist(copies, then: then))
            delivered += copies.count
        }
        if delivered == 0 {
            statistics.publicationsUnmatched += 1
            if noResponders, let replyTo = message.replyTo {
                let status = PublishedMessage(subject: replyTo, body: .bytes([]), status: 503)
                for key in subjects.match(replyTo) where key.session == session {
                    outputs.append(deliver(status, to: key))
                }
            }
        }
        statistics.publicationsDelivered += delivered
        return (outputs, delivered)
    }

    private static func node(_ node: Node, isIn target: Node) -> Bool {
        node == target || (target.instance == nil && node.identity == target.identity)
    }

    /// One delivery to the subscription at `index` of `subscriptions`, counted in place against its
    /// auto-unsubscribe limit.
    private mutating func deliver(
        _ message: PublishedMessage, to key: SubscriptionKey, at index: Dictionary<SubscriptionKey, Subscription>.Index
    )
        -> Output
    {
        let delivered = subscriptions.values[index].delivered + 1
        if let limit = subscriptions.values[index].limit, delivered >= limit {
            removeSubscription(key)
        } else {
            subscriptions.values[index].delivered = delivered
        }
        return .deliver(key.session, token: key.token, message)
    }

    /// One delivery, counted against the subscription's auto-unsubscribe limit.
    mutating func deliver(_ message: PublishedMessage, to key: SubscriptionKey) -> Output {
        guard let index = subscriptions.index(forKey: key) else { return .deliver(key.session, token: key.token, message) }
        return deliver(message, to: key, at: index)
    }

    // MARK: - LIME mapping

    mutating func subscribe(_ command: LIMECommand, filter: String, query: [String: String], from session: SessionID) -> [Output] {
        let queue = query["queue"].flatMap { $0.isEmpty ? nil : $0 }
        var overflow = configuration.defaultDeliveryLimit
        if let text = query["pending"] {
            guard let maximum = Int(text), maximum > 0 else {
                return refuse(session, command, ReasonCode.commandInvalidArgument, "'pending' must be a positive number")
            }
            overflow.maximumHeld = maximum
        }
        if let text = query["overflow"] {
            guard let policy = OverflowPolicy(rawValue: text) else {
                return refuse(
                    session, command, ReasonCode.commandInvalidArgument, "'overflow' must be dropNewest, dropOldest or disconnect")
            }
            overflow.policy = policy
        }
        do {
            try subscribe(
                session, token: Self.subscriptionToken(filter: filter, queue: queue), filter: filter, queue: queue,
                echo: query["echo"] == "true", overflow: overflow)
        } catch {
            return [reply(session, command.failure(error))]
        }
        return [reply(session, command.success())]
    }

    mutating func unsubscribe(_ command: LIMECommand, filter: String, query: [String: String], from session: SessionID) -> [Output] {
        let token = Self.subscriptionToken(filter: filter, queue: query["queue"].flatMap { $0.isEmpty ? nil : $0 })
        guard unsubscribe(session, token: token) else {
            return refuse(session, command, ReasonCode.commandResourceNotFound, "No subscription to '\(filter)'")
        }
        return [reply(session, command.success())]
    }

    /// The name a LIME subscription goes by: its filter, and its queue group when it has one.
    static func subscriptionToken(filter: String, queue: String?) -> String {
        queue.map { "\(filter)?queue=\($0)" } ?? filter
    }

    /// Publishes `command.resource` to `subject`. `observe` is fire-and-forget; `set` is confirmed
    /// with a response once the hub has routed it (`{"delivered": N}`). `#reply` makes it a request.
    mutating func publish(_ command: LIMECommand, subject: String, from session: SessionID) -> [Output] {
        let confirm = command.method == .set && command.header.id != nil
        if let error = Subject.publishError(subject) {
            return confirm ? refuse(session, command, ReasonCode.validationInvalidResource, error) : []
        }
        var command = command
        let replyTo = command.header.metadata?.removeValue(forKey: "#reply")
        var (outputs, delivered) = publish(command, subject: subject, replyTo: replyTo, from: session)
        if confirm {
            let confirmation = Output.send(session, confirmation(command, resource: ["delivered": .number(JSONNumber(delivered))]))
            // A publication kept by durable queues is confirmed only once it is on disk.
            if let index = outputs.lastIndex(where: { if case .persist = $0 { return true } else { return false } }),
                case .persist(let copies, let then) = outputs[index]
            {
                outputs[index] = .persist(copies, then: then + [confirmation])
            } else {
                outputs.append(confirmation)
            }
        }
        return outputs
    }

    /// Publishes a LIME command's resource on a subject, with a reply subject if given.
    mutating func publish(_ command: LIMECommand, subject: String, replyTo: String?, from session: SessionID) -> (
        outputs: [Output], delivered: Int
    ) {
        var metadata = command.header.metadata ?? [:]
        let targets = metadata.removeValue(forKey: "#targets").map { list in
            list.split(separator: ",").compactMap { Node($0.trimmingWhitespace().description) }
        }
        let content = command.resourceBody ?? JSONContent(.null)
        let type = command.type ?? (content.isString ? .textPlain : .applicationJSON)
        let body: PublishedMessage.Body
        if type.isJSON || !content.isString || type.rawValue.hasPrefix("text/") {
            // Forwarded as it arrived.
            body = .content(content)
        } else {
            // Binary types travel base64-encoded in LIME; subscribers on NATS get the bytes.
            let text = content.stringValue ?? ""
            body = Base64.decode(text).map { .bytes($0) } ?? .text(text)
        }
        let message = PublishedMessage(
            subject: subject, replyTo: replyTo, publisher: command.header.from, type: type, body: body, metadata: metadata)
        return publish(message, from: session, targets: targets)
    }
}
