// The consuming half of durable queues on JetStream (see JetStreamQueues.swift): pulls within
// the local consumers' credit, deliveries, answers turned into JetStream's, ack waits.

extension HubCore {
    /// A message pulled from a queue's stream: to a local consumer with credit, or back to
    /// JetStream at once when none has any now. One past the queue's time-to-live at `now`
    /// (milliseconds since 1970) is expired instead: terminated, to the dead letters if any.
    mutating func pulledMessageReceived(_ message: PublishedMessage, ackSubject: String, now: Int64?) -> [Output] {
        let tokens = ackSubject.split(separator: ".")
        // $JS ACK <stream> <consumer> <delivered> <stream seq> <consumer seq> <time> <pending>
        guard tokens.count >= 9, let deliveries = Int(tokens[4]), let sequence = Int(tokens[5]),
            let name = cluster!.jetStreamQueues.first(where: { $0.value.stream == tokens[2] })?.key
        else { return [] }
        var queue = cluster!.jetStreamQueues[name]!
        queue.requested = max(0, queue.requested - 1)
        if let oldest = queue.pulls.keys.min() {
            queue.pulls[oldest]! -= 1
            if queue.pulls[oldest]! <= 0 { queue.pulls[oldest] = nil }
        }
        if let ttl = queue.configuration.timeToLiveSeconds, let now, let stored = Int64(tokens[7]),
            Double(now - stored / 1_000_000) > ttl * 1_000
        {
            queue.expired += 1
            cluster!.jetStreamQueues[name] = queue
            cluster!.pending.append(.publish(PublishedMessage(subject: ackSubject, body: .text("+TERM"))))
            var outputs: [Output] = []
            if let subject = queue.configuration.deadLetterSubject {
                let dead = Self.deadLetter(
                    message, to: subject, queue: name, reason: "Expired after \(JSONNumber(ttl)) s", deliveries: deliveries - 1)
                outputs += publish(dead, from: Self.hubSession).outputs
            }
            return outputs + pullIfNeeded(name)
        }
        let keys = queue.consumers.keys.sorted { ($0.session, $0.token) < ($1.session, $1.token) }
        var chosen: HubCore.SubscriptionKey?
        for offset in 0..<keys.count {
            let key = keys[(queue.turn + offset) % keys.count]
            if queue.consumers[key]!.out.count < queue.consumers[key]!.credit {
                chosen = key
                queue.turn = (queue.turn + offset + 1) % keys.count
                break
            }
        }
        guard let key = chosen else {
            cluster!.jetStreamQueues[name] = queue
            cluster!.pending.append(.publish(PublishedMessage(subject: ackSubject, body: .text("-NAK"))))
            return []
        }
        let delivery = queue.nextDelivery
        queue.nextDelivery += 1
        queue.consumers[key]!.out.insert(delivery)
        queue.deliveries[delivery] = JetStreamQueue.Delivery(
            consumer: key, ackSubject: ackSubject, deliveries: deliveries, sequence: sequence, message: message)
        queue.delivered += 1
        if deliveries > 1 { queue.redelivered += 1 }
        cluster!.jetStreamQueues[name] = queue
        if key.token.hasPrefix(Self.serviceConsumerToken + ":") {
            // A durable service's instance receives the stored request as the command it was.
            guard
                let command = serviceCommand(
                    queue: name, delivery: delivery, count: deliveries, message: message, to: router.node(of: key.session))
            else { return answerJetStream(.term(reason: "Not a stored request"), delivery: delivery, queue: name) }
            return [
                .send(key.session, command),
                .startTimer(.jetStreamAckWait(name, delivery), milliseconds: queue.configuration.ackWaitMilliseconds),
            ]
        }
        return [
            .deliver(
                key.session, token: key.token, Self.jetStreamDelivered(queue.deliveries[delivery]!, name: name, delivery: delivery),
                limit: nil),
            .startTimer(.jetStreamAckWait(name, delivery), milliseconds: queue.configuration.ackWaitMilliseconds),
        ]
    }

    /// pyQMsgBus's GET on a JetStream queue: what this consumer holds unanswered, once more
    /// (the same deliveries, to be answered as before).
    mutating func redeliverJetStreamHeld(_ key: SubscriptionKey, queue name: String) -> [Output]? {
        guard let queue = cluster?.jetStreamQueues[name], let consumer = queue.consumers[key] else { return nil }
        return consumer.out.sorted().compactMap { delivery in
            guard let held = queue.deliveries[delivery] else { return nil }
            return .deliver(key.session, token: key.token, Self.jetStreamDelivered(held, name: name, delivery: delivery), limit: nil)
        }
    }

    /// A held delivery as its consumer gets it: answered through the hub's ack subject.
    static func jetStreamDelivered(_ held: JetStreamQueue.Delivery, name: String, delivery: UInt64) -> PublishedMessage {
        var delivered = held.message
        if let reply = delivered.replyTo { delivered.metadata["#originalReply"] = reply }
        delivered.replyTo = ackSubject(name, delivery)
        delivered.metadata["#queue"] = name
        delivered.metadata["#delivery"] = queueDeliveryID(name, delivery)
        delivered.metadata["#deliveries"] = String(held.deliveries)
        delivered.metadata["#sequence"] = String(held.sequence)
        return delivered
    }

    /// The ack wait of a delivery passed unanswered: JetStream delivers it again (to a pull),
    /// so its consumer's credit is free for that, and a late answer to it is ignored, as on one
    /// hub (the new delivery is the one to answer).
    mutating func jetStreamAckWaitPassed(_ name: String, _ delivery: UInt64) -> [Output] {
        guard let held = cluster?.jetStreamQueues[name]?.deliveries.removeValue(forKey: delivery) else { return [] }
        cluster!.jetStreamQueues[name]!.consumers[held.consumer]?.out.remove(delivery)
        return pullIfNeeded(name)
    }

    /// Asks JetStream for what the local consumers' free credit can take, less what is asked for.
    mutating func pullIfNeeded(_ name: String) -> [Output] {
        guard let queue = cluster?.jetStreamQueues[name], queue.ready, let settings = cluster?.jetStream else { return [] }
        let free = queue.consumers.values.reduce(0) { $0 + max(0, min($1.credit, settings.maximumPulled) - $1.out.count) }
        let wanted = min(free, settings.maximumPulled) - queue.requested
        guard wanted > 0 else { return [] }
        let number = queue.nextPull
        cluster!.jetStreamQueues[name]!.nextPull += 1
        cluster!.jetStreamQueues[name]!.pulls[number] = wanted
        cluster!.jetStreamQueues[name]!.requested += wanted
        cluster!.jetStreamQueues[name]!.pullsMade += 1
        let request: JSONObject = [
            "batch": .number(JSONNumber(wanted)), "expires": .number(JSONNumber(settings.pullExpiresMilliseconds * 1_000_000)),
        ]
        cluster!.pending.append(
            .publish(
                PublishedMessage(
                    subject: "$JS.API.CONSUMER.MSG.NEXT.\(queue.stream).\(JetStreamQueue.consumerName)",
                    replyTo: cluster!.jetStreamPrefix + "pull.\(name).\(number)", type: .applicationJSON, body: .json(.object(request)))))
        // A pull made while the consumer's leader is still being elected can vanish without an
        // answer: past its expiry (and a margin) it is taken as lost, and made again.
        return [.startTimer(.jetStreamPull(name, number), milliseconds: settings.pullExpiresMilliseconds + 2_000)]
    }

    /// A pull's deadline passed: if it has not ended, what it asked for is asked for again.
    mutating func jetStreamPullLost(_ name: String, _ number: Int) -> [Output] {
        guard let left = cluster?.jetStreamQueues[name]?.pulls.removeValue(forKey: number) else { return [] }
        cluster!.jetStreamQueues[name]!.requested = max(0, cluster!.jetStreamQueues[name]!.requested - left)
        cluster!.jetStreamQueues[name]!.pullsLost += 1
        return pullIfNeeded(name)
    }

    /// A consumer here starts taking a queue's messages, up to `credit` at a time.
    mutating func attachJetStreamConsumer(_ key: SubscriptionKey, queue name: String, credit: Int?) -> [Output] {
        guard cluster!.jetStreamQueues[name]?.consumers[key] == nil else { return [] }
        cluster!.jetStreamQueues[name]!.consumers[key] = JetStreamQueue.Consumer(credit: max(credit ?? 1, 1))
        return pullIfNeeded(name)
    }

    /// A consumer here stops: what it held goes back to JetStream at once, for the others.
    mutating func detachJetStreamConsumer(_ key: SubscriptionKey, queue name: String) -> [Output] {
        guard let consumer = cluster?.jetStreamQueues[name]?.consumers.removeValue(forKey: key) else { return [] }
        for delivery in consumer.out.sorted() {
            if let held = cluster!.jetStreamQueues[name]!.deliveries.removeValue(forKey: delivery) {
                cluster!.pending.append(.publish(PublishedMessage(subject: held.ackSubject, body: .text("-NAK"))))
            }
        }
        return pullIfNeeded(name)
    }

    /// A local consumer's answer, as JetStream's: `+ACK`, `-NAK` (with a delay), `+WPI`, `+TERM`.
    /// A refused message at its last delivery, or terminated, goes to the queue's dead letters.
    mutating func answerJetStream(_ answer: DeliveryAnswer, delivery: UInt64, queue name: String) -> [Output] {
        guard var queue = cluster?.jetStreamQueues[name], let held = queue.deliveries[delivery] else { return [] }
        var outputs: [Output] = []
        var text: String
        var deadLetter: String?
        switch answer {
        case .ack:
            text = "+ACK"
            queue.acknowledged += 1
        case .inProgress:
            cluster!.pending.append(.publish(PublishedMessage(subject: held.ackSubject, body: .text("+WPI"))))
            return [.startTimer(.jetStreamAckWait(name, delivery), milliseconds: queue.configuration.ackWaitMilliseconds)]
        case .nak(let delay):
            if let maximum = queue.configuration.maximumDeliveries, held.deliveries >= maximum {
                text = "+TERM"
                deadLetter = "maximum deliveries (\(maximum)) reached"
            } else {
                text = delay.map { "-NAK " + JSONWriter.string(.object(["delay": .number(JSONNumber($0 * 1_000_000))])) } ?? "-NAK"
            }
        case .term(let reason):
            text = "+TERM"
            deadLetter = reason
        }
        queue.deliveries[delivery] = nil
        queue.consumers[held.consumer]?.out.remove(delivery)
        outputs.append(.cancelTimer(.jetStreamAckWait(name, delivery)))
        if let reason = deadLetter, let subject = queue.configuration.deadLetterSubject {
            queue.deadLettered += 1
            cluster!.jetStreamQueues[name] = queue
            let dead = Self.deadLetter(held.message, to: subject, queue: name, reason: reason, deliveries: held.deliveries)
            outputs += publish(dead, from: Self.hubSession).outputs
        } else {
            cluster!.jetStreamQueues[name] = queue
        }
        cluster!.pending.append(.publish(PublishedMessage(subject: held.ackSubject, body: .text(text))))
        return outputs + pullIfNeeded(name)
    }

    /// A session closed: its consumers of JetStream queues stop.
    mutating func detachJetStreamConsumers(of session: SessionID) -> [Output] {
        guard let queues = cluster?.jetStreamQueues else { return [] }
        var outputs: [Output] = []
        for name in queues.keys.sorted() {
            for key in queues[name]!.consumers.keys where key.session == session {
                outputs += detachJetStreamConsumer(key, queue: name)
            }
        }
        return outputs
    }
}
