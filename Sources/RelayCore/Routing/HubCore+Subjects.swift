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
        if let refusal = subscribeRefusal(filter, queue: queue, from: session) { throw refusal }
        let key = SubscriptionKey(session: session, token: token)
        guard subscriptionSlotsByKey[key] == nil else { return }
        guard subscriptionCounts[session, default: 0] < configuration.maximumSubscriptionsPerSession else {
            statistics.subscriptionsRefusedByLimits += 1
            throw Reason(
                code: RelayReasonCode.limitReached,
                description: "This session holds the maximum of \(configuration.maximumSubscriptionsPerSession) subscriptions")
        }
        let node = router.node(of: session)
        if let identity = node?.identity,
            subscriptionCountsByIdentity[identity, default: 0] >= configuration.maximumSubscriptionsPerIdentity
        {
            statistics.subscriptionsRefusedByLimits += 1
            throw Reason(
                code: RelayReasonCode.limitReached,
                description: "Identity '\(identity)' holds the maximum of \(configuration.maximumSubscriptionsPerIdentity) subscriptions")
        }
        var subscription = Subscription(
            session: session, node: node, filter: filter, queue: queue, echo: echo, token: token, overflow: overflow)
        subscription.checksDelivery = permissions(of: session)?.subscriptionNeedsDeliveryCheck(filter, queue: queue) ?? false
        let slot: Int
        if let free = freeSubscriptionSlots.popLast() {
            slot = free
            subscriptionSlots[slot] = subscription
        } else {
            slot = subscriptionSlots.count
            subscriptionSlots.append(subscription)
        }
        subscriptionSlotsByKey[key] = slot
        subjects.insert(slot, filter: filter)
        clusterSubscription(filter: filter, queue: queue, added: true)
        subscriptionCounts[session, default: 0] += 1
        if let identity = node?.identity { subscriptionCountsByIdentity[identity, default: 0] += 1 }
    }

    /// Ends a subscription now (`max` nil), or after `max` deliveries in all (NATS's `UNSUB sid max`).
    /// Returns whether the session had it.
    @discardableResult
    public mutating func unsubscribe(_ session: SessionID, token: String, after max: Int? = nil) -> Bool {
        guard let slot = subscriptionSlotsByKey[SubscriptionKey(session: session, token: token)] else { return false }
        if let max, subscriptionSlots[slot].delivered < max {
            subscriptionSlots[slot].limit = max
            return true
        }
        removeSubscription(slot: slot)
        return true
    }

    mutating func removeSubscription(_ key: SubscriptionKey) {
        guard let slot = subscriptionSlotsByKey[key] else { return }
        removeSubscription(slot: slot)
    }

    private mutating func removeSubscription(slot: Int) {
        let subscription = subscriptionSlots[slot]
        guard subscription.isLive else { return }
        subscriptionSlots[slot] = .vacant
        freeSubscriptionSlots.append(slot)
        subscriptionSlotsByKey[SubscriptionKey(session: subscription.session, token: subscription.token)] = nil
        subjects.remove(slot, filter: subscription.filter)
        clusterSubscription(filter: subscription.filter, queue: subscription.queue, added: false)
        subscriptionCounts[subscription.session, default: 1] -= 1
        if subscriptionCounts[subscription.session] == 0 { subscriptionCounts[subscription.session] = nil }
        if let identity = subscription.node?.identity {
            subscriptionCountsByIdentity[identity, default: 1] -= 1
            if subscriptionCountsByIdentity[identity] == 0 { subscriptionCountsByIdentity[identity] = nil }
        }
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
        var outputs: [Output] = []
        let delivered = publish(message, from: session, targets: targets, noResponders: noResponders, jetStream: jetStream, into: &outputs)
        return (outputs, delivered)
    }

    /// `publish`, appending its outputs to `outputs` (a read's publications share one array).
    /// Returns how many subscriptions received it.
    @discardableResult
    public mutating func publish(
        _ message: PublishedMessage, from session: SessionID, targets: [Node]? = nil, noResponders: Bool = false,
        jetStream: Bool = false, into outputs: inout [Output]
    ) -> Int {
        var message = message
        if tracesPublication(message) { traceMessage(&message) }
        // Replies to the hub's own inboxes, and NATS requests to services, are not publications.
        if let special = specialPublication(message, from: session, jetStream: jetStream) {
            outputs += special
            return 1
        }
        var delivered = 0
        // Usually none or one: a list, not a dictionary, per publication.
        var groups: [(queue: String, members: [Int])] = []
        // On a cluster, queue groups get a local publication back from the cluster, which gives
        // each group one delivery across all hubs; node-targeted publications stay here.
        let clustered = cluster != nil && targets == nil
        statistics.published += 1
        for slot in subjects.match(message.subject) {
            // Fields are read in place: copying a subscription would retain each of its strings.
            guard subscriptionSlots[slot].isLive else { continue }
            if subscriptionSlots[slot].session == session && !subscriptionSlots[slot].echo { continue }
            if let targets, !Self.node(subscriptionSlots[slot].node, isIn: targets) { continue }
            if subscriptionSlots[slot].checksDelivery, !deliveryAllowed(message.subject, toSlot: slot) { continue }
            if let queue = subscriptionSlots[slot].queue {
                if clustered { continue }
                if let group = groups.firstIndex(where: { $0.queue == queue }) {
                    groups[group].members.append(slot)
                } else {
                    groups.append((queue, [slot]))
                }
                continue
            }
            outputs.append(deliver(message, toSlot: slot))
            delivered += 1
        }
        for (queue, members) in groups {
            // Each group gets one copy, to its members in turn: in slot order, which stays the
            // same while they are members, whatever subject (or wildcard) matched them.
            let turn = queueTurns[queue, default: 0]
            queueTurns[queue] = turn &+ 1
            let ordered = members.count > 1 ? members.sorted() : members
            outputs.append(deliver(message, toSlot: ordered[turn % ordered.count]))
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
                deliver(ack, toSubscribersOf: replyTo, into: &then)
            }
            outputs.append(.persist(copies, then: then))
            delivered += copies.count
        }
        let sentToCluster = clustered && publishOnCluster(message, from: session, deliveredLocally: delivered)
        if delivered == 0 && !sentToCluster {
            statistics.publicationsUnmatched += 1
            if noResponders, let replyTo = message.replyTo {
                let status = PublishedMessage(
                    subject: replyTo, body: .bytes([]), metadata: TraceContext.carried(in: message.metadata), status: 503)
                deliver(status, toSubscribersOf: replyTo, of: session, into: &outputs)
            }
        }
        statistics.publicationsDelivered += delivered
        return sentToCluster ? max(delivered, 1) : delivered
    }

    /// A subscription a forwarded publication goes to: its session, its name, and how many of its
    /// deliveries may wait.
    public struct Recipient: Sendable, Equatable {
        public var session: SessionID
        public var token: String
        public var limit: DeliveryLimit?
    }

    /// The short way of a publication the hub forwards as its bytes arrived: a NATS PUB without
    /// headers, or a plain LIME publication (`LIMEPublishInPlace`).
    ///
    /// When the publication is only to be delivered, it is counted as `publish` counts it, its
    /// recipients are appended to `recipients`, and the result is true. That is: it is not for the
    /// hub itself (a reply to one of its inboxes, an acknowledgement, a JetStream or service
    /// request); no durable queue keeps it; it matches no queue group and no subscription with an
    /// auto-unsubscribe limit; and it has subscribers, each of which `accepts` (a session of the
    /// publication's dialect; asked once per recipient, just before it is appended, so the caller may keep what it
    /// looked up alongside).
    /// Otherwise nothing changes and the result is false: the caller then calls `publish`.
    public mutating func forward(
        subject: String, hasReplyTo: Bool, from session: SessionID, accepts: (SessionID) -> Bool,
        into recipients: inout [Recipient]
    ) -> Bool {
        if subject.utf8.first == UInt8(ascii: "$") { return false }
        // A clustered hub publishes on the cluster too (`publish`).
        if cluster != nil { return false }
        // A publisher with permissions is checked the usual way, which refuses what they deny.
        if !permissions.isEmpty, permissions[session] != nil { return false }
        if !subjectRequestsByInbox.isEmpty, subjectRequestsByInbox[subject] != nil { return false }
        if tracingNeedsPublication(of: subject) { return false }
        if hasReplyTo, !services.isEmpty { return false }
        // Which queues keep a subject is learnt by `publish`, on the subject's first publication.
        if !queues.isEmpty, queuesBySubject[subject]?.isEmpty != true { return false }
        let first = recipients.count
        let slots = subjects.match(subject)
        for slot in slots {
            guard subscriptionSlots[slot].isLive else { continue }
            if subscriptionSlots[slot].session == session && !subscriptionSlots[slot].echo { continue }
            guard subscriptionSlots[slot].queue == nil, subscriptionSlots[slot].limit == nil, !subscriptionSlots[slot].checksDelivery,
                accepts(subscriptionSlots[slot].session)
            else {
                recipients.removeSubrange(first...)
                return false
            }
            recipients.append(
                Recipient(
                    session: subscriptionSlots[slot].session, token: subscriptionSlots[slot].token, limit: subscriptionSlots[slot].overflow)
            )
        }
        let delivered = recipients.count - first
        guard delivered > 0 else { return false }
        for slot in slots where subscriptionSlots[slot].isLive {
            if subscriptionSlots[slot].session == session && !subscriptionSlots[slot].echo { continue }
            subscriptionSlots[slot].delivered += 1
        }
        statistics.published += 1
        statistics.publicationsDelivered += delivered
        return true
    }

    /// What the hub answers itself instead of publishing: replies to its inboxes, queue
    /// acknowledgements, JetStream stream creation, NATS requests to services. Nil for a publication.
    mutating func specialPublication(_ message: PublishedMessage, from session: SessionID, jetStream: Bool) -> [Output]? {
        if let outputs = subjectReply(message) { return outputs }
        if let outputs = ackPublished(message) { return outputs }
        if jetStream, message.subject.hasPrefix(Self.streamCreatePrefix),
            let reason = administrationRefusal("creating a stream", from: session)
        {
            return [.refused(session, Refusal(operation: .publish, target: message.subject, reason: reason))]
        }
        if jetStream, let outputs = streamCreate(message) { return outputs }
        return serviceRequest(message, from: session)
    }

    /// Whether the subscription in `slot`, which checks deliveries, may receive one on `subject`.
    func deliveryAllowed(_ subject: String, toSlot slot: Int) -> Bool {
        guard let permissions = permissions(of: subscriptionSlots[slot].session) else { return true }
        return permissions.allowsDelivery(of: subject, queue: subscriptionSlots[slot].queue)
    }

    /// A publication a client sent without asking for an answer (a NATS PUB or HPUB): refused,
    /// with a `refused` output, when the session's permissions deny its subject; published
    /// otherwise, with JetStream's conventions (see `publish`). Returns how many received it.
    @discardableResult
    public mutating func clientPublished(
        _ message: PublishedMessage, from session: SessionID, noResponders: Bool = false, into outputs: inout [Output]
    ) -> Int {
        if let reason = publishRefusal(message.subject, from: session) {
            outputs.append(.refused(session, Refusal(operation: .publish, target: message.subject, reason: reason)))
            return 0
        }
        return publish(message, from: session, noResponders: noResponders, jetStream: true, into: &outputs)
    }

    /// Whether a subscriber's node is one of `targets` (a target without instance: any of its instances).
    private static func node(_ node: Node?, isIn targets: [Node]) -> Bool {
        guard let node else { return false }
        return targets.contains { target in node == target || (target.instance == nil && node.identity == target.identity) }
    }

    /// One delivery to the subscription in `slot`, counted against its auto-unsubscribe limit.
    mutating func deliver(_ message: PublishedMessage, toSlot slot: Int) -> Output {
        let output = Output.deliver(
            subscriptionSlots[slot].session, token: subscriptionSlots[slot].token, message, limit: subscriptionSlots[slot].overflow)
        let delivered = subscriptionSlots[slot].delivered + 1
        if let limit = subscriptionSlots[slot].limit, delivered >= limit {
            removeSubscription(slot: slot)
        } else {
            subscriptionSlots[slot].delivered = delivered
        }
        return output
    }

    /// Delivers to every subscription of `subject` (of one session's, if given): the hub's own
    /// answers on reply subjects.
    mutating func deliver(
        _ message: PublishedMessage, toSubscribersOf subject: String, of session: SessionID? = nil, into outputs: inout [Output]
    ) {
        for slot in subjects.match(subject) where session == nil || subscriptionSlots[slot].session == session {
            outputs.append(deliver(message, toSlot: slot))
        }
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
        if let reason = publishRefusal(subject, from: session) {
            if command.header.id != nil { return [reply(session, command.failure(reason))] }
            return [.refused(session, Refusal(operation: .publish, target: subject, reason: reason))]
        }
        var command = command
        let replyTo = command.header.metadata?.removeValue(forKey: "#reply")
        cluster?.lastPubAck = nil
        var (outputs, delivered) = publish(command, subject: subject, replyTo: replyTo, from: session)
        if confirm {
            let confirmation = Output.send(session, confirmation(command, resource: ["delivered": .number(JSONNumber(delivered))]))
            // A publication kept by durable queues is confirmed only once it is on disk (here, or
            // in JetStream, which answers with its PubAck).
            if let index = outputs.lastIndex(where: { if case .persist = $0 { return true } else { return false } }),
                case .persist(let copies, let then) = outputs[index]
            {
                outputs[index] = .persist(copies, then: then + [confirmation])
            } else if !confirmWhenStored([confirmation]) {
                outputs.append(confirmation)
            }
        }
        return outputs
    }

    /// Publishes a LIME command's resource on a subject, with a reply subject if given.
    mutating func publish(_ command: LIMECommand, subject: String, replyTo: String?, from session: SessionID) -> (
        outputs: [Output], delivered: Int
    ) {
        let (message, targets) = Self.publication(of: command, subject: subject, replyTo: replyTo)
        return publish(message, from: session, targets: targets)
    }

    /// A LIME command's resource as a publication on a subject, and the nodes it is for, if any.
    static func publication(of command: LIMECommand, subject: String, replyTo: String?) -> (PublishedMessage, [Node]?) {
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
        return (message, targets)
    }
}
