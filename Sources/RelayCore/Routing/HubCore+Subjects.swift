// The subject operations (subscribe, unsubscribe, publish) of `HubCore`; see HubCore.swift for the state they work on.

extension HubCore {
    // MARK: - Subjects

    mutating func subscribe(_ command: LIMECommand, filter: String, query: [String: String], from session: SessionID) -> [Output] {
        if let error = Subject.filterError(filter) {
            return [reply(session, command.failure(Reason(code: ReasonCode.validationInvalidResource, description: error)))]
        }
        let queue = query["queue"].flatMap { $0.isEmpty ? nil : $0 }
        if let queue, queue.contains(where: { $0.isWhitespace }) {
            return [
                reply(
                    session,
                    command.failure(
                        Reason(code: ReasonCode.validationInvalidResource, description: "Queue group '\(queue)' contains whitespace")))
            ]
        }
        let key = SubscriptionKey(session: session, token: Self.subscriptionToken(filter: filter, queue: queue))
        if subscriptions[key] == nil {
            guard subscriptionCounts[session, default: 0] < configuration.maximumSubscriptionsPerSession else {
                return [
                    reply(
                        session,
                        command.failure(
                            Reason(
                                code: RelayReasonCode.limitReached,
                                description:
                                    "This session holds the maximum of \(configuration.maximumSubscriptionsPerSession) subscriptions")))
                ]
            }
            let node = router.node(of: session) ?? configuration.hubNode
            subscriptions[key] = Subscription(
                session: session, node: node, filter: filter, queue: queue, echo: query["echo"] == "true", token: key.token)
            subjects.insert(key, filter: filter)
            subscriptionCounts[session, default: 0] += 1
        }
        return [reply(session, command.success())]
    }

    mutating func unsubscribe(_ command: LIMECommand, filter: String, query: [String: String], from session: SessionID) -> [Output] {
        let key = SubscriptionKey(
            session: session, token: Self.subscriptionToken(filter: filter, queue: query["queue"].flatMap { $0.isEmpty ? nil : $0 }))
        guard let subscription = subscriptions.removeValue(forKey: key) else {
            return [
                reply(
                    session,
                    command.failure(Reason(code: ReasonCode.commandResourceNotFound, description: "No subscription to '\(filter)'")))
            ]
        }
        subjects.remove(key, filter: subscription.filter)
        subscriptionCounts[session, default: 1] -= 1
        return [reply(session, command.success())]
    }

    /// The name a subscription goes by: its filter, and its queue group when it has one.
    static func subscriptionToken(filter: String, queue: String?) -> String {
        queue.map { "\(filter)?queue=\($0)" } ?? filter
    }

    /// Publishes `command.resource` to `subject`. `observe` is fire-and-forget; `set` is confirmed
    /// with a response once the hub has routed it (`{"delivered": N}`).
    mutating func publish(_ command: LIMECommand, subject: String, from session: SessionID) -> [Output] {
        let confirm = command.method == .set && command.header.id != nil
        if let error = Subject.publishError(subject) {
            return confirm ? [reply(session, command.failure(Reason(code: ReasonCode.validationInvalidResource, description: error)))] : []
        }
        var metadata = command.header.metadata ?? [:]
        var targets: [Node]?
        if let list = metadata.removeValue(forKey: "#targets") {
            targets = list.split(separator: ",").compactMap { Node($0.trimmingWhitespace().description) }
        }
        metadata["#subject"] = subject
        let content = command.resource ?? .null
        let type = command.type ?? (content.stringValue != nil ? .textPlain : .applicationJSON)
        let publisher = command.header.from
        var outputs: [Output] = []
        var delivered = 0
        statistics.published += 1
        var queues: [String: [SubscriptionKey]] = [:]
        for key in subjects.match(subject) {
            guard let subscription = subscriptions[key] else { continue }
            if subscription.session == session && !subscription.echo { continue }
            if let targets,
                !targets.contains(where: { $0 == subscription.node || ($0.instance == nil && $0.identity == subscription.node.identity) })
            {
                continue
            }
            if let queue = subscription.queue {
                queues[queue, default: []].append(key)
                continue
            }
            outputs.append(
                .send(subscription.session, delivery(subscription, publisher: publisher, type: type, content: content, metadata: metadata)))
            delivered += 1
        }
        for (queue, members) in queues {
            // Each group gets one copy, to its members in turn.
            let turn = queueTurns[queue, default: 0]
            queueTurns[queue] = turn &+ 1
            let ordered = members.sorted { ($0.session, $0.token) < ($1.session, $1.token) }
            let subscription = subscriptions[ordered[turn % ordered.count]]!
            outputs.append(
                .send(subscription.session, delivery(subscription, publisher: publisher, type: type, content: content, metadata: metadata)))
            delivered += 1
        }
        if delivered == 0 { statistics.publicationsUnmatched += 1 }
        statistics.publicationsDelivered += delivered
        if confirm {
            outputs.append(.send(session, confirmation(command, resource: ["delivered": .number(JSONNumber(delivered))])))
        }
        return outputs
    }

    func delivery(_ subscription: Subscription, publisher: Node?, type: MediaType, content: JSONValue, metadata: [String: String])
        -> Envelope
    {
        var metadata = metadata
        metadata["#subscription"] = subscription.token
        return .message(
            LIMEMessage(header: EnvelopeHeader(from: publisher, to: subscription.node, metadata: metadata), type: type, content: content))
    }
}
