// The durable queues of `HubCore`: storing what matches them, delivering it at least once to
// competing consumers through a `DeliveryMachine`, and the LIME mapping (`/queues`).

/// A message of a durable queue: its place in the queue and the publication.
public struct QueuedMessage: Sendable, Equatable {
    public var sequence: Int64
    public var message: PublishedMessage

    public init(sequence: Int64, message: PublishedMessage) {
        self.sequence = sequence
        self.message = message
    }
}

/// The copy of a publication one durable queue keeps.
public struct QueueCopy: Sendable, Equatable {
    public var queue: String
    public var queued: QueuedMessage
}

struct DurableQueue: Sendable {
    var configuration: QueueConfiguration
    var machine: DeliveryMachine<QueuedMessage>
    var nextSequence: Int64 = 1
    var consumers: [HubCore.SubscriptionKey: DeliveryMachine<QueuedMessage>.ConsumerID] = [:]
    var consumerKeys: [DeliveryMachine<QueuedMessage>.ConsumerID: HubCore.SubscriptionKey] = [:]
    var nextConsumer: DeliveryMachine<QueuedMessage>.ConsumerID = 1
    var deadLettered = 0
    /// When each owed message was stored (milliseconds since 1970) and its size, for retention.
    var storedAt: [Int64: Int64] = [:]
    var sizes: [Int64: Int] = [:]
    var bytes = 0
    /// Messages dropped by retention (count, bytes, age) and expired by their time-to-live.
    var droppedByRetention = 0
    var expired = 0

    init(configuration: QueueConfiguration) {
        self.configuration = configuration
        self.machine = DeliveryMachine(
            configuration: .init(
                creditWindow: 1, ackWaitMilliseconds: configuration.ackWaitMilliseconds,
                maximumDeliveries: configuration.maximumDeliveries))
    }
}

extension HubCore {
    /// The delivery id a LIME consumer acknowledges: `relay-q:QUEUE:DELIVERY`.
    static func queueDeliveryID(_ queue: String, _ delivery: UInt64) -> String { "relay-q:\(queue):\(delivery)" }

    static func parseQueueDeliveryID(_ text: String) -> (String, UInt64)? {
        let parts = text.split(separator: ":")
        guard parts.count == 3, parts[0] == "relay-q", let delivery = UInt64(parts[2]) else { return nil }
        return (String(parts[1]), delivery)
    }

    // MARK: - Protocol-neutral operations

    /// Creates a queue (or accepts the same configuration again).
    public mutating func createQueue(_ configuration: QueueConfiguration) throws(Reason) -> [Output] {
        if let error = configuration.validationError { throw Reason(code: ReasonCode.commandInvalidArgument, description: error) }
        if queuesOnJetStream { return try createJetStreamQueue(configuration) }
        return try createLocalQueue(configuration)
    }

    /// Creates a queue in this hub's store (a durable service's requests are always kept here).
    mutating func createLocalQueue(_ configuration: QueueConfiguration) throws(Reason) -> [Output] {
        if let existing = queues[configuration.name] {
            guard existing.configuration == configuration else {
                throw Reason(
                    code: RelayReasonCode.registrationConflict,
                    description: "Queue '\(configuration.name)' exists with another configuration")
            }
            return []
        }
        queues[configuration.name] = DurableQueue(configuration: configuration)
        queuesBySubject.removeAll()
        return [.saveQueue(configuration)]
    }

    /// Brings back a queue and its stored messages after a restart. On a cluster with JetStream
    /// they move into the queue's stream instead (`migrateToJetStream`).
    @discardableResult
    public mutating func restoreQueue(
        _ configuration: QueueConfiguration, messages: [(QueuedMessage, deliveries: Int, storedAt: Int64)]
    ) -> [Output] {
        if queuesOnJetStream { return migrateToJetStream(configuration, messages: messages.map(\.0)) }
        var queue = DurableQueue(configuration: configuration)
        for (queued, deliveries, storedAt) in messages {
            _ = queue.machine.enqueue(UInt64(queued.sequence), payload: queued, previousDeliveries: deliveries)
            queue.nextSequence = max(queue.nextSequence, queued.sequence + 1)
            let size = queued.message.payloadBytes.count
            queue.storedAt[queued.sequence] = storedAt
            queue.sizes[queued.sequence] = size
            queue.bytes += size
        }
        queues[configuration.name] = queue
        queuesBySubject.removeAll()
        return []
    }

    /// The queues a publication on `subject` goes to, each with its next sequence number.
    mutating func queueCopies(of message: PublishedMessage) -> [QueueCopy] {
        guard !queues.isEmpty else { return [] }
        let names: [String]
        if let known = queuesBySubject[message.subject] {
            names = known
        } else {
            names = queues.keys.sorted().filter { name in
                queues[name]!.configuration.subjects.contains { Subject.matches(filter: $0, subject: message.subject) }
            }
            if queuesBySubject.count >= 10_000 { queuesBySubject.removeAll() }
            queuesBySubject[message.subject] = names
        }
        var copies: [QueueCopy] = []
        for name in names {
            let sequence = queues[name]!.nextSequence
            queues[name]!.nextSequence += 1
            copies.append(QueueCopy(queue: name, queued: QueuedMessage(sequence: sequence, message: message)))
        }
        return copies
    }

    /// A stored message is on disk (since `now`, milliseconds since 1970): it may now be delivered.
    /// Retention by count and bytes is applied: the oldest waiting messages make room.
    public mutating func persisted(queue name: String, _ queued: QueuedMessage, at now: Int64 = 0) -> [Output] {
        let size = queued.message.payloadBytes.count
        let actions = withQueue(name) { queue in
            queue.storedAt[queued.sequence] = now
            queue.sizes[queued.sequence] = size
            queue.bytes += size
            return queue.machine.enqueue(UInt64(queued.sequence), payload: queued)
        }
        guard let actions else { return [] }
        return queueOutputs(name, actions) + enforceRetention(name, now: now)
    }

    /// Drops the oldest waiting messages beyond the queue's count and byte limits, and those older
    /// than its maximum age; expires messages past their time-to-live (to the dead letters when the
    /// queue has them). Every drop is counted.
    mutating func enforceRetention(_ name: String, now: Int64) -> [Output] {
        guard let current = queues[name] else { return [] }
        let configuration = current.configuration
        // The common case, checked without listing the messages: nothing can be due.
        if configuration.maximumAgeSeconds == nil && configuration.timeToLiveSeconds == nil
            && !(configuration.maximumMessages.map { current.machine.unacknowledgedCount > $0 } ?? false)
            && !(configuration.maximumBytes.map { current.bytes > $0 } ?? false)
        {
            return []
        }
        // Taken out while it changes, so the dictionary does not hold a second reference to copy.
        guard var queue = queues.removeValue(forKey: name) else { return [] }
        var outputs: [Output] = []
        for id in queue.machine.owedMessages {
            let sequence = Int64(id)
            let age = Double(now - (queue.storedAt[sequence] ?? now)) / 1000
            let overCount = configuration.maximumMessages.map { queue.machine.unacknowledgedCount > $0 } ?? false
            let overBytes = configuration.maximumBytes.map { queue.bytes > $0 } ?? false
            let tooOld = configuration.maximumAgeSeconds.map { age > $0 } ?? false
            let expired = configuration.timeToLiveSeconds.map { age > $0 } ?? false
            guard overCount || overBytes || tooOld || expired else {
                if configuration.maximumAgeSeconds == nil && configuration.timeToLiveSeconds == nil { break }
                continue
            }
            guard let queued = queue.machine.removeWaiting(id) else { continue }
            queue.bytes -= queue.sizes.removeValue(forKey: sequence) ?? 0
            queue.storedAt[sequence] = nil
            outputs.append(.unpersist(queue: name, sequence: sequence))
            if expired && !tooOld && !overCount && !overBytes {
                queue.expired += 1
                if let subject = configuration.deadLetterSubject {
                    queues[name] = queue
                    outputs += publishDeadLetter(
                        queued, from: name, to: subject, reason: "Expired after \(JSONNumber(configuration.timeToLiveSeconds!)) s", count: 0
                    )
                    queue = queues.removeValue(forKey: name)!
                }
            } else {
                queue.droppedByRetention += 1
            }
        }
        queues[name] = queue
        return outputs
    }

    /// The hub's periodic sweep: messages past their age or time-to-live.
    public mutating func sweepQueues(now: Int64) -> [Output] {
        queues.keys.sorted().flatMap { name in
            let configuration = queues[name]!.configuration
            return configuration.maximumAgeSeconds != nil || configuration.timeToLiveSeconds != nil ? enforceRetention(name, now: now) : []
        }
    }

    private mutating func publishDeadLetter(_ queued: QueuedMessage, from name: String, to subject: String, reason: String, count: Int)
        -> [Output]
    {
        publish(Self.deadLetter(queued.message, to: subject, queue: name, reason: reason, deliveries: count), from: Self.hubSession).outputs
    }

    /// A message as its queue's dead letter: on the dead-letter subject, saying why, after how
    /// many deliveries, from which queue and subject.
    static func deadLetter(_ message: PublishedMessage, to subject: String, queue: String, reason: String, deliveries: Int)
        -> PublishedMessage
    {
        var dead = message
        dead.subject = subject
        dead.replyTo = nil
        dead.metadata["#deadReason"] = reason
        dead.metadata["#deliveries"] = String(deliveries)
        dead.metadata["#queue"] = queue
        dead.metadata["#originalSubject"] = message.subject
        return dead
    }

    /// Forgets a message's retention bookkeeping once it is gone.
    private mutating func forget(_ name: String, sequence: Int64) {
        withQueue(name) { queue in
            queue.bytes -= queue.sizes.removeValue(forKey: sequence) ?? 0
            queue.storedAt[sequence] = nil
        }
    }

    /// Changes a queue where it is stored. A copy (`var queue = queues[name]`, changed and written
    /// back) would copy all its messages on every operation: O(queue length) per message.
    @discardableResult
    private mutating func withQueue<Result>(_ name: String, _ change: (inout DurableQueue) -> Result) -> Result? {
        guard queues[name] != nil else { return nil }
        return change(&queues[name]!)
    }

    /// Turns a delivery machine's actions into the hub's outputs.
    mutating func queueOutputs(_ name: String, _ actions: [DeliveryMachine<QueuedMessage>.Action]) -> [Output] {
        // Only the fields needed: holding the whole queue would make the changes below copy it.
        guard let consumerKeys = queues[name]?.consumerKeys else { return [] }
        let deadLetterSubject = queues[name]?.configuration.deadLetterSubject
        var outputs: [Output] = []
        for action in actions {
            switch action {
            case .deliver(let consumer, let delivery, _, let count, let queued):
                guard let key = consumerKeys[consumer] else { continue }
                if key.token.hasPrefix(Self.serviceConsumerToken + ":") {
                    // A durable service's instance receives the request as the command it was.
                    if let command = serviceCommand(
                        queue: name, delivery: delivery, count: count, message: queued.message, to: router.node(of: key.session))
                    {
                        outputs.append(.send(key.session, command))
                        outputs.append(.recordDeliveries(queue: name, sequence: queued.sequence, count: count))
                    }
                    continue
                }
                var message = queued.message
                // Answers come to the delivery's ack subject (NATS, JetStream's bodies) or as LIME notifications.
                if let reply = message.replyTo { message.metadata["#originalReply"] = reply }
                message.replyTo = Self.ackSubject(name, delivery)
                message.metadata["#queue"] = name
                message.metadata["#delivery"] = Self.queueDeliveryID(name, delivery)
                message.metadata["#deliveries"] = String(count)
                message.metadata["#sequence"] = String(queued.sequence)
                outputs.append(.deliver(key.session, token: key.token, message, limit: nil))
                outputs.append(.recordDeliveries(queue: name, sequence: queued.sequence, count: count))
            case .acknowledged(let message):
                forget(name, sequence: Int64(message))
                outputs.append(.unpersist(queue: name, sequence: Int64(message)))
            case .deadLetter(let message, let queued, let reason, let count):
                queues[name]?.deadLettered += 1
                forget(name, sequence: Int64(message))
                outputs.append(.unpersist(queue: name, sequence: Int64(message)))
                if let subject = deadLetterSubject {
                    outputs += publishDeadLetter(queued, from: name, to: subject, reason: reason, count: count)
                }
            case .startTimer(let timer, let milliseconds):
                outputs.append(.startTimer(.queue(name, timer), milliseconds: milliseconds))
            case .cancelTimer(let timer):
                outputs.append(.cancelTimer(.queue(name, timer)))
            }
        }
        return outputs
    }

    /// Attaches a session's consumer (named by `token`) to a queue.
    public mutating func attachConsumer(_ session: SessionID, token: String, queue name: String, credit: Int?) throws(Reason) -> [Output] {
        if cluster?.jetStreamQueues[name] != nil {
            return attachJetStreamConsumer(SubscriptionKey(session: session, token: token), queue: name, credit: credit)
        }
        guard queues[name] != nil else {
            throw Reason(code: ReasonCode.commandResourceNotFound, description: "No queue '\(name)'")
        }
        let key = SubscriptionKey(session: session, token: token)
        let actions = withQueue(name) { queue -> [DeliveryMachine<QueuedMessage>.Action] in
            guard queue.consumers[key] == nil else { return [] }
            let consumer = queue.nextConsumer
            queue.nextConsumer += 1
            queue.consumers[key] = consumer
            queue.consumerKeys[consumer] = key
            return queue.machine.consumerAttached(consumer, credit: credit)
        }
        return queueOutputs(name, actions ?? [])
    }

    public mutating func detachConsumer(_ session: SessionID, token: String, queue name: String) -> [Output] {
        let key = SubscriptionKey(session: session, token: token)
        if cluster?.jetStreamQueues[name] != nil { return detachJetStreamConsumer(key, queue: name) }
        let actions = withQueue(name) { queue -> [DeliveryMachine<QueuedMessage>.Action] in
            guard let consumer = queue.consumers.removeValue(forKey: key) else { return [] }
            queue.consumerKeys[consumer] = nil
            return queue.machine.consumerDetached(consumer)
        }
        return queueOutputs(name, actions ?? [])
    }

    /// A session closed: what its consumers held goes to the others at once.
    mutating func detachConsumers(of session: SessionID) -> [Output] {
        var outputs: [Output] = detachJetStreamConsumers(of: session)
        for name in queues.keys.sorted() {
            for key in queues[name]!.consumers.keys where key.session == session {
                outputs += detachConsumer(session, token: key.token, queue: name)
            }
        }
        return outputs
    }

    /// Applies a consumer's answer to a delivery.
    public mutating func answer(_ answer: DeliveryAnswer, delivery: UInt64, queue name: String) -> [Output] {
        if cluster?.jetStreamQueues[name] != nil { return answerJetStream(answer, delivery: delivery, queue: name) }
        let actions = withQueue(name) { queue -> [DeliveryMachine<QueuedMessage>.Action] in
            switch answer {
            case .ack: queue.machine.ack(delivery)
            case .nak(let delay): queue.machine.nak(delivery, delayMilliseconds: delay)
            case .inProgress: queue.machine.inProgress(delivery)
            case .term(let reason): queue.machine.term(delivery, reason: reason)
            }
        }
        return queueOutputs(name, actions ?? [])
    }

    mutating func queueTimerFired(_ name: String, _ timer: DeliveryMachine<QueuedMessage>.Timer) -> [Output] {
        queueOutputs(name, withQueue(name) { $0.machine.timerFired(timer) } ?? [])
    }

    /// The subject a NATS consumer publishes its answer to: `$RELAY.ACK.QUEUE.DELIVERY`.
    static func ackSubject(_ queue: String, _ delivery: UInt64) -> String { "$RELAY.ACK.\(queue).\(delivery)" }

    /// The subject a NATS client subscribes to in order to consume a queue: `$RELAY.QUEUE.NAME`.
    public static let queueSubjectPrefix = "$RELAY.QUEUE."

    /// An answer published on an ack subject, in JetStream's words: `+ACK`, `-NAK` (optionally
    /// `{"delay": nanoseconds}`), `+WPI`, `+TERM` (optionally a reason), `+NXT` (taken as `+ACK`).
    mutating func ackPublished(_ message: PublishedMessage) -> [Output]? {
        guard message.subject.utf8.first == UInt8(ascii: "$"), message.subject.hasPrefix("$RELAY.ACK.") else { return nil }
        let tokens = message.subject.dropFirst("$RELAY.ACK.".count).split(separator: ".")
        guard tokens.count == 2, let delivery = UInt64(tokens[1]), hasQueue(String(tokens[0])) else { return [] }
        let name = String(tokens[0])
        let text = String(decoding: message.payloadBytes, as: UTF8.self).trimmingWhitespace()
        let verb = text.split(separator: " ", maxSplits: 1).first.map(String.init) ?? "+ACK"
        let rest = text.split(separator: " ", maxSplits: 1).dropFirst().first.map(String.init)
        switch verb {
        case "", "+ACK", "+NXT": return answer(.ack, delivery: delivery, queue: name)
        case "-NAK":
            let delay = rest.flatMap { try? JSONParser.parse($0) }?["delay"]?.doubleValue.map { Int($0 / 1_000_000) }
            return answer(.nak(delayMilliseconds: delay), delivery: delivery, queue: name)
        case "+WPI": return answer(.inProgress, delivery: delivery, queue: name)
        case "+TERM": return answer(.term(reason: rest ?? "terminated"), delivery: delivery, queue: name)
        default: return []
        }
    }

    /// A client's subscription to a durable queue (NATS `SUB $RELAY.QUEUE.NAME`): checked against its
    /// permissions, then attached as `attachConsumer` does.
    public mutating func consume(_ session: SessionID, token: String, queue name: String, credit: Int?) throws(Reason) -> [Output] {
        if let reason = consumeRefusal(name, from: session) { throw reason }
        return try attachConsumer(session, token: token, queue: name, credit: credit)
    }

    /// Ends whatever consumer a session has under `token`, in any queue.
    public mutating func detachConsumer(_ session: SessionID, token: String) -> [Output] {
        let names = queues.keys.sorted() + (cluster?.jetStreamQueues.keys.sorted() ?? [])
        return names.flatMap { detachConsumer(session, token: token, queue: $0) }
    }

    /// Whether a queue of that name exists, here or on JetStream.
    func hasQueue(_ name: String) -> Bool { queues[name] != nil || cluster?.jetStreamQueues[name] != nil }

    // MARK: - LIME mapping

    /// `consumed` acknowledges, `received` says in progress, `failed` with 130 naks (metadata
    /// `#delay` in milliseconds), any other `failed` terminates with its reason.
    mutating func queueAnswer(_ notification: LIMENotification, from session: SessionID) -> [Output]? {
        guard let id = notification.header.id, let (name, delivery) = Self.parseQueueDeliveryID(id), hasQueue(name) else { return nil }
        switch notification.event {
        case .consumed: return answer(.ack, delivery: delivery, queue: name)
        case .received, .accepted, .dispatched: return answer(.inProgress, delivery: delivery, queue: name)
        case .failed where notification.reason?.code == RelayReasonCode.nak:
            return answer(
                .nak(delayMilliseconds: notification.header.metadata?["#delay"].flatMap { Int($0) }), delivery: delivery, queue: name)
        case .failed: return answer(.term(reason: notification.reason?.description ?? "terminated"), delivery: delivery, queue: name)
        default: return []
        }
    }

    mutating func queueCommand(_ command: LIMECommand, rest: [String], query: [String: String], from session: SessionID) -> [Output] {
        switch (command.method, rest.count) {
        case (.get, 0):
            let names = (queues.keys.sorted() + (cluster?.jetStreamQueues.keys.sorted() ?? []))
            let list: [JSONValue] = names.map { .object(queueJSON($0)) }
            return [reply(session, command.success(type: .applicationJSON, resource: .object(["queues": .array(list)])))]
        case (.get, 1):
            guard hasQueue(rest[0]) else {
                return refuse(session, command, ReasonCode.commandResourceNotFound, "No queue '\(rest[0])'")
            }
            return [reply(session, command.success(type: .applicationJSON, resource: .object(queueJSON(rest[0]))))]
        case (.set, 1):
            if let reason = administrationRefusal("creating a queue", from: session) { return [reply(session, command.failure(reason))] }
            var object = command.resource?.objectValue ?? [:]
            object["name"] = .string(rest[0])
            do {
                let configuration = try QueueConfiguration(json: object)
                return try createQueue(configuration) + [reply(session, command.success())]
            } catch {
                return [reply(session, command.failure(error))]
            }
        case (.delete, 1):
            if let reason = administrationRefusal("deleting a queue", from: session) { return [reply(session, command.failure(reason))] }
            if cluster?.jetStreamQueues.removeValue(forKey: rest[0]) != nil {
                announceQueueChange(["deleted": .string(rest[0])])
                cluster!.pending.append(
                    .publish(PublishedMessage(subject: "$JS.API.STREAM.DELETE.\(JetStreamQueue.streamName(rest[0]))", body: .bytes([]))))
                return [reply(session, command.success())]
            }
            guard let queue = queues.removeValue(forKey: rest[0]) else {
                return refuse(session, command, ReasonCode.commandResourceNotFound, "No queue '\(rest[0])'")
            }
            _ = queue
            queuesBySubject.removeAll()
            return [.deleteQueue(rest[0]), reply(session, command.success())]
        case (.subscribe, 1):
            if let reason = consumeRefusal(rest[0], from: session) { return [reply(session, command.failure(reason))] }
            let credit = query["credit"].flatMap { $0 == "unlimited" ? 0 : Int($0) }
            do {
                return try attachConsumer(session, token: "queue:\(rest[0])", queue: rest[0], credit: credit == 0 ? Int.max : credit)
                    + [reply(session, command.success())]
            } catch {
                return [reply(session, command.failure(error))]
            }
        case (.unsubscribe, 1):
            return detachConsumer(session, token: "queue:\(rest[0])", queue: rest[0]) + [reply(session, command.success())]
        case (.get, 2) where rest[1] == "current":
            // pyQMsgBus's GET: the current unacknowledged delivery once more.
            if let again = redeliverJetStreamHeld(SubscriptionKey(session: session, token: "queue:\(rest[0])"), queue: rest[0]) {
                return again + [reply(session, command.success())]
            }
            guard let queue = queues[rest[0]], let consumer = queue.consumers[SubscriptionKey(session: session, token: "queue:\(rest[0])")]
            else {
                return refuse(session, command, ReasonCode.commandResourceNotFound, "Not consuming queue '\(rest[0])'")
            }
            return queueOutputs(rest[0], queue.machine.get(consumer)) + [reply(session, command.success())]
        default:
            return refuse(session, command, ReasonCode.commandResourceNotFound, "No such queue resource")
        }
    }

    func queueJSON(_ name: String) -> JSONObject {
        if let onJetStream = jetStreamQueueJSON(name) { return onJetStream }
        guard let queue = queues[name] else { return [:] }
        var object = queue.configuration.json
        object["messages"] = .number(JSONNumber(queue.machine.unacknowledgedCount))
        object["consumers"] = .number(JSONNumber(queue.consumers.count))
        object["delivered"] = .number(JSONNumber(queue.machine.statistics.delivered))
        object["redelivered"] = .number(JSONNumber(queue.machine.statistics.redelivered))
        object["acknowledged"] = .number(JSONNumber(queue.machine.statistics.acknowledged))
        object["deadLettered"] = .number(JSONNumber(queue.deadLettered))
        object["staleAnswers"] = .number(JSONNumber(queue.machine.statistics.staleAnswers))
        object["bytes"] = .number(JSONNumber(queue.bytes))
        object["droppedByRetention"] = .number(JSONNumber(queue.droppedByRetention))
        object["expired"] = .number(JSONNumber(queue.expired))
        return object
    }
}

/// A consumer's answer to a delivery.
public enum DeliveryAnswer: Sendable, Equatable {
    case ack
    case nak(delayMilliseconds: Int?)
    case inProgress
    case term(reason: String)
}

// MARK: - JetStream's stream creation, for NATS clients

extension HubCore {
    static let streamCreatePrefix = "$JS.API.STREAM.CREATE."

    /// `$JS.API.STREAM.CREATE.NAME` with a JetStream stream configuration, from a NATS client:
    /// creates (or confirms) the durable queue NAME with the stream's subjects and limits
    /// (`max_msgs`, `max_bytes`, `max_age` in nanoseconds), and answers with a JetStream
    /// `stream_create_response`. This is the one JetStream API subject the hub answers; with it,
    /// NATS tools can set up what a JetStream publish (answered with `{"stream","seq"}`) needs.
    mutating func streamCreate(_ message: PublishedMessage) -> [Output]? {
        guard message.subject.utf8.first == UInt8(ascii: "$"), message.subject.hasPrefix(Self.streamCreatePrefix),
            let replyTo = message.replyTo
        else { return nil }
        let name = String(message.subject.dropFirst(Self.streamCreatePrefix.count))
        let request = (try? JSONParser.parse(message.payloadBytes))?.objectValue ?? [:]
        func positive(_ key: String) -> Int? { request[key]?.intValue.flatMap { $0 > 0 ? $0 : nil } }
        let filters = request["subjects"]?.arrayValue?.compactMap(\.stringValue) ?? [name]
        let configuration = QueueConfiguration(
            name: name, subjects: filters, maximumMessages: positive("max_msgs"), maximumBytes: positive("max_bytes"),
            maximumAgeSeconds: positive("max_age").map { Double($0) / 1e9 })
        var response: JSONObject = ["type": "io.nats.jetstream.api.v1.stream_create_response"]
        var outputs: [Output] = []
        do {
            outputs = try createQueue(configuration)
            response["config"] = .object(["name": .string(name), "subjects": .array(filters.map { .string($0) }), "storage": "file"])
            let queue = queues[name]
            let owed = queue?.machine.unacknowledgedCount ?? 0
            let last = (queue?.nextSequence ?? 1) - 1
            response["state"] = .object([
                "messages": .number(JSONNumber(owed)), "bytes": .number(JSONNumber(queue?.bytes ?? 0)),
                "first_seq": .number(JSONNumber(Int(owed == 0 ? last + 1 : last - Int64(owed) + 1))),
                "last_seq": .number(JSONNumber(Int(last))), "consumer_count": .number(JSONNumber(queue?.consumers.count ?? 0)),
            ])
        } catch {
            response["error"] = .object(["code": 400, "err_code": 10058, "description": .string(error.description)])
        }
        let reply = PublishedMessage(subject: replyTo, body: .json(.object(response)))
        deliver(reply, toSubscribersOf: replyTo, into: &outputs)
        return outputs
    }
}
