// Durable queues on JetStream, for a clustered hub (docs/CLUSTER.md): each queue is a stream
// with one durable consumer that every hub's consumers pull from, so they compete for one queue.
// JetStream stores, counts deliveries and redelivers after the ack wait; the hub hands what it
// pulls to its local consumers within their credit and turns their answers into JetStream's.
// Everything goes through the cluster connection as the core's operations: the hub does no
// JetStream I/O of its own.

/// How a clustered hub keeps its durable queues on JetStream.
public struct JetStreamSettings: Sendable, Equatable {
    /// Copies of each stream on different servers.
    public var replicas: Int
    /// How long one pull waits at JetStream for messages before it ends (and is made again).
    public var pullExpiresMilliseconds: Int
    /// Messages pulled for one queue at most at a time (each consumer's credit counts up to it).
    public var maximumPulled: Int
    /// How often the hub asks JetStream how many messages and bytes each queue's stream holds
    /// (`get /queues/Q`, `relay_queue_messages`).
    public var statusIntervalMilliseconds: Int

    public init(replicas: Int = 1, pullExpiresMilliseconds: Int = 5_000, maximumPulled: Int = 256, statusIntervalMilliseconds: Int = 5_000)
    {
        self.replicas = replicas
        self.pullExpiresMilliseconds = pullExpiresMilliseconds
        self.maximumPulled = maximumPulled
        self.statusIntervalMilliseconds = statusIntervalMilliseconds
    }
}

/// One queue on JetStream, as this hub sees it.
struct JetStreamQueue: Sendable {
    struct Consumer: Sendable {
        var credit: Int
        var out: Set<UInt64> = []
    }

    /// A message this hub pulled and gave to a local consumer.
    struct Delivery: Sendable {
        var consumer: HubCore.SubscriptionKey
        /// Where JetStream takes the answer (`$JS.ACK.…`).
        var ackSubject: String
        var deliveries: Int
        /// The stream's sequence of the message.
        var sequence: Int
        var message: PublishedMessage
    }

    var configuration: QueueConfiguration
    /// Set once JetStream confirmed the stream and its consumer.
    var ready = false
    var failure: String?
    /// Messages this hub stored while it ran alone, published into the stream once it is ready,
    /// then removed from the hub's store.
    var migration: [QueuedMessage] = []
    var migrated = 0
    var migrationFailures = 0
    /// Moved messages whose PubAck has not come yet.
    var migrationsInFlight = 0
    /// The name the hub's store keeps the queue under (a durable service's is the same).
    var storedName: String?
    var consumers: [HubCore.SubscriptionKey: Consumer] = [:]
    var turn = 0
    /// Messages asked for in pulls that JetStream has not sent or ended yet.
    var requested = 0
    var nextPull = 1
    var pulls: [Int: Int] = [:]
    var deliveries: [UInt64: Delivery] = [:]
    var nextDelivery: UInt64 = 1
    var delivered = 0
    var redelivered = 0
    var acknowledged = 0
    var deadLettered = 0
    /// Messages past the queue's time-to-live when they were pulled.
    var expired = 0
    /// What the stream held when JetStream last said (messages waiting or unacknowledged).
    var messages = 0
    var bytes = 0
    var pullsMade = 0
    var pullsEnded = 0
    var pullsLost = 0
    /// The status the last pull ended with (408: expired...).
    var lastPullEnd: Int?

    var stream: String { JetStreamQueue.streamName(configuration.name) }

    /// `RELAY_Q_<name>`: stream names take no dots.
    static func streamName(_ queue: String) -> String {
        "RELAY_Q_" + String(queue.map { $0 == "." || $0 == "*" || $0 == ">" ? "_" : $0 })
    }

    static let consumerName = "relay"
    static let deadLetterQueue = "relay.deadletters"
}

extension ClusterMembership {
    var jetStreamPrefix: String { inboxPrefix + "js." }
    /// Where hubs tell each other of queues created or deleted at run time.
    public static let queuesSubject = "$RELAY.QUEUES"
}

extension HubCore {
    /// Whether durable queues are JetStream's (a clustered hub with JetStream on).
    var queuesOnJetStream: Bool { cluster?.jetStream != nil }

    /// Creates a queue as a stream and its durable consumer (or finds them, when they exist alike).
    /// The other hubs are told (`announce`), so that their consumers may take the queue too.
    mutating func createJetStreamQueue(_ configuration: QueueConfiguration, announce: Bool = true) throws(Reason) -> [Output] {
        if let existing = cluster!.jetStreamQueues[configuration.name] {
            guard existing.configuration == configuration else {
                throw Reason(
                    code: RelayReasonCode.registrationConflict,
                    description: "Queue '\(configuration.name)' exists with another configuration")
            }
            return []
        }
        cluster!.jetStreamQueues[configuration.name] = JetStreamQueue(configuration: configuration)
        if configuration.maximumDeliveries != nil {
            // A message whose ack wait ran out at its last delivery: JetStream says so in an
            // advisory, which one hub (a queue group) turns into the dead letter, and deletes it
            // (a work queue keeps a message it gave up on).
            let key = ClusterInterest.Key(
                filter: Self.maximumDeliveriesAdvisory(configuration.name), queue: JetStreamQueue.deadLetterQueue)
            if case .subscribe(let sid, _, _)? = cluster!.interest.localSubscriptionAdded(key) {
                cluster!.ownSubscriptions.insert(sid)
                cluster!.pending.append(.interest(.subscribe(sid: sid, filter: key.filter, queue: key.queue)))
            }
        }
        if announce { announceQueueChange(["created": .object(configuration.json)]) }
        return setUpJetStreamQueue(configuration.name)
    }

    /// Tells the other hubs of a queue created or deleted here.
    mutating func announceQueueChange(_ news: JSONObject) {
        cluster!.pending.append(
            .publish(PublishedMessage(subject: ClusterMembership.queuesSubject, type: .applicationJSON, body: .json(.object(news)))))
    }

    /// A hub joining asks the others for the queues they serve, so that it serves those created
    /// at run time too (its configuration has only the others).
    mutating func askForQueues() {
        cluster!.pending.append(
            .publish(
                PublishedMessage(
                    subject: ClusterMembership.queuesSubject, replyTo: cluster!.jetStreamPrefix + "queues.all", type: .applicationJSON,
                    body: .json(["ask": true]))))
    }

    /// The queues another hub serves, in answer to `askForQueues`: served here too.
    mutating func queuesReceived(_ answer: JSONValue?) -> [Output] {
        var outputs: [Output] = []
        for case .object(let object) in answer?["queues"]?.arrayValue ?? [] {
            guard let configuration = try? QueueConfiguration(json: object), cluster!.jetStreamQueues[configuration.name] == nil else {
                continue
            }
            outputs += (try? createJetStreamQueue(configuration, announce: false)) ?? []
        }
        return outputs
    }

    /// Another hub created or deleted a queue: this hub serves it too, or no longer. Or it asks
    /// which queues this hub serves.
    mutating func queueChangeReceived(_ message: PublishedMessage) -> [Output]? {
        guard message.subject == ClusterMembership.queuesSubject else { return nil }
        guard let news = try? JSONParser.parse(message.payloadBytes) else { return [] }
        if news["ask"] != nil, let replyTo = message.replyTo {
            let list = cluster!.jetStreamQueues.keys.sorted().map { JSONValue.object(cluster!.jetStreamQueues[$0]!.configuration.json) }
            cluster!.pending.append(
                .publish(PublishedMessage(subject: replyTo, type: .applicationJSON, body: .json(["queues": .array(list)]))))
            return []
        }
        if let created = news["created"]?.objectValue, let configuration = try? QueueConfiguration(json: created) {
            return (try? createJetStreamQueue(configuration, announce: false)) ?? []
        }
        if let name = news["deleted"]?.stringValue, let queue = cluster!.jetStreamQueues.removeValue(forKey: name) {
            // Its consumers here get nothing more; what they held is gone with the stream.
            _ = queue
        }
        return []
    }

    /// Asks JetStream for the queue's stream (then its consumer); asked again a second later
    /// while JetStream refuses (a cluster electing its leaders answers 503 for a while).
    mutating func setUpJetStreamQueue(_ name: String) -> [Output] {
        guard let queue = cluster?.jetStreamQueues[name], !queue.ready else { return [] }
        let configuration = queue.configuration
        var stream: JSONObject = [
            "name": .string(queue.stream), "subjects": .array(configuration.subjects.map { .string($0) }),
            // A work queue: a message acknowledged (or terminated) is removed from the stream.
            "num_replicas": .number(JSONNumber(cluster!.jetStream!.replicas)), "storage": "file", "retention": "workqueue",
            "discard": "old",
        ]
        if let count = configuration.maximumMessages { stream["max_msgs"] = .number(JSONNumber(count)) }
        if let bytes = configuration.maximumBytes { stream["max_bytes"] = .number(JSONNumber(bytes)) }
        if let age = configuration.maximumAgeSeconds { stream["max_age"] = .number(JSONNumber(Int(age * 1e9))) }
        jetStreamRequest("STREAM.CREATE.\(queue.stream)", .object(stream), answer: "stream.\(configuration.name)")
        return [.startTimer(.jetStreamSetUp(name), milliseconds: Self.jetStreamRetryMilliseconds)]
    }

    static let jetStreamRetryMilliseconds = 1_000

    /// The stream exists: its consumer next.
    private mutating func createJetStreamConsumer(_ name: String) {
        guard let queue = cluster!.jetStreamQueues[name] else { return }
        let configuration: JSONObject = [
            "durable_name": .string(JetStreamQueue.consumerName), "ack_policy": "explicit", "deliver_policy": "all",
            "ack_wait": .number(JSONNumber(queue.configuration.ackWaitMilliseconds * 1_000_000)),
            "max_deliver": .number(JSONNumber(queue.configuration.maximumDeliveries ?? -1)),
            "max_ack_pending": .number(JSONNumber(-1)),
        ]
        jetStreamRequest(
            "CONSUMER.DURABLE.CREATE.\(queue.stream).\(JetStreamQueue.consumerName)",
            .object(["stream_name": .string(queue.stream), "config": .object(configuration)]), answer: "consumer.\(name)")
    }

    private mutating func jetStreamRequest(_ operation: String, _ body: JSONValue, answer: String) {
        cluster!.pending.append(
            .publish(
                PublishedMessage(
                    subject: "$JS.API.\(operation)", replyTo: cluster!.jetStreamPrefix + answer, type: .applicationJSON, body: .json(body)))
        )
    }

    static func maximumDeliveriesAdvisory(_ queue: String) -> String {
        "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.\(JetStreamQueue.streamName(queue)).\(JetStreamQueue.consumerName)"
    }

    /// What arrived for the hub's JetStream work: a pulled message (its reply subject names the
    /// stream), a pull's end, a PubAck, an API answer, an advisory. Nil for anything else.
    mutating func jetStreamMessageReceived(_ message: PublishedMessage, now: Int64?) -> [Output]? {
        if let reply = message.replyTo, reply.hasPrefix("$JS.ACK.RELAY_Q_") {
            return pulledMessageReceived(message, ackSubject: reply, now: now)
        }
        if message.subject.hasPrefix("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.RELAY_Q_") { return maximumDeliveriesReached(message) }
        guard message.subject.hasPrefix(cluster!.jetStreamPrefix) else { return nil }
        let rest = message.subject.dropFirst(cluster!.jetStreamPrefix.count)
        let parts = rest.split(separator: ".", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return [] }
        let answer = try? JSONParser.parse(message.payloadBytes)
        let error = answer?["error"]?["description"]?.stringValue
        switch parts[0] {
        case "ack":
            guard let number = Int(parts[1]), let wait = cluster!.pubAcks.forget(number) else { return [] }
            // No stream took it (yet: a queue just created is set up in the background).
            if message.status == 503 { return notStored(wait, "no stream keeps its subject yet") }
            // Only JetStream's answer counts: a subscriber answering the reply subject is not it.
            guard error != nil || answer?["seq"] != nil else {
                cluster!.pubAcks.remember(wait, for: number)
                return []
            }
            if error == nil, let migrating = wait.migrating { return migrated(migrating.queue, then: wait.whenStored) }
            return error == nil ? wait.whenStored : notStored(wait, error!)
        case "stream":
            if let error, cluster!.jetStreamQueues[parts[1]] != nil {
                cluster!.jetStreamQueues[parts[1]]!.failure = "stream: \(error)"
                return []
            }
            createJetStreamConsumer(parts[1])
            return []
        case "consumer":
            guard cluster!.jetStreamQueues[parts[1]] != nil else { return [] }
            if let error {
                cluster!.jetStreamQueues[parts[1]]!.failure = "consumer: \(error)"
                return []
            }
            let wasReady = cluster!.jetStreamQueues[parts[1]]!.ready
            cluster!.jetStreamQueues[parts[1]]!.ready = true
            cluster!.jetStreamQueues[parts[1]]!.failure = nil
            let status = wasReady ? [] : askForStreamStatus(parts[1])
            return [.cancelTimer(.jetStreamSetUp(parts[1]))] + status + migrateIfReady(parts[1]) + pullIfNeeded(parts[1])
        case "info":
            // The stream's state: a work queue holds what is waiting or unacknowledged.
            guard cluster!.jetStreamQueues[parts[1]] != nil, let state = answer?["state"] else { return [] }
            cluster!.jetStreamQueues[parts[1]]!.messages = state["messages"]?.intValue ?? 0
            cluster!.jetStreamQueues[parts[1]]!.bytes = state["bytes"]?.intValue ?? 0
            return []
        case "queues":
            return queuesReceived(answer)
        case "dead":
            // The message an advisory named, read back: to the dead letters.
            let dead = parts[1].split(separator: ".", maxSplits: 1).map(String.init)
            guard dead.count == 2, let deliveries = Int(dead[1]), let queue = cluster!.jetStreamQueues[dead[0]],
                let subject = queue.configuration.deadLetterSubject, let stored = answer?["message"],
                let original = stored["subject"]?.stringValue
            else { return [] }
            if let sequence = stored["seq"]?.intValue { deleteStoredMessage(queue.stream, sequence: sequence) }
            let payload = stored["data"]?.stringValue.flatMap(Base64.decode) ?? []
            let headers = stored["hdrs"]?.stringValue.flatMap(Base64.decode).flatMap { try? NATSHeaders(parsing: $0) }
            let letter = Self.deadLetter(
                PublishedMessage(clusterSubject: original, replyTo: nil, headers: headers, payload: payload), to: subject, queue: dead[0],
                reason: "maximum deliveries (\(deliveries)) reached without an answer", deliveries: deliveries)
            cluster!.jetStreamQueues[dead[0]]!.deadLettered += 1
            return publish(letter, from: Self.hubSession).outputs
        case "pull":
            // The end of a pull (408: expired, 404: nothing, 409: gone): what it did not bring is
            // no longer on its way.
            let pull = parts[1].split(separator: ".", maxSplits: 1).map(String.init)
            guard pull.count == 2, let number = Int(pull[1]), cluster!.jetStreamQueues[pull[0]] != nil, message.status != nil,
                message.status != 100
            else { return [] }
            let name = pull[0]
            cluster!.jetStreamQueues[name]!.pullsEnded += 1
            cluster!.jetStreamQueues[name]!.lastPullEnd = message.status
            let left = cluster!.jetStreamQueues[name]!.pulls.removeValue(forKey: number) ?? 0
            var outputs: [Output] = [.cancelTimer(.jetStreamPull(name, number))]
            let pending = message.metadata["Nats-Pending-Messages"].flatMap { Int($0) } ?? left
            cluster!.jetStreamQueues[name]!.requested = max(0, cluster!.jetStreamQueues[name]!.requested - min(pending, left))
            outputs += pullIfNeeded(name)
            return outputs
        default:
            return []
        }
    }

    /// JetStream's advisory: a message was delivered as often as allowed without an answer. Read
    /// it back by its sequence, for the dead letters.
    private mutating func maximumDeliveriesReached(_ message: PublishedMessage) -> [Output] {
        guard let advisory = try? JSONParser.parse(message.payloadBytes), let stream = advisory["stream"]?.stringValue,
            let sequence = advisory["stream_seq"]?.intValue,
            let name = cluster!.jetStreamQueues.first(where: { $0.value.stream == stream })?.key
        else { return [] }
        let deliveries = advisory["deliveries"]?.intValue ?? 0
        guard cluster!.jetStreamQueues[name]!.configuration.deadLetterSubject != nil else {
            // No dead letters: dropped, and counted.
            cluster!.jetStreamQueues[name]!.deadLettered += 1
            deleteStoredMessage(stream, sequence: sequence)
            return []
        }
        jetStreamRequest("STREAM.MSG.GET.\(stream)", .object(["seq": .number(JSONNumber(sequence))]), answer: "dead.\(name).\(deliveries)")
        return []
    }

    /// A message JetStream gave up on, gone to the dead letters: out of the work queue.
    private mutating func deleteStoredMessage(_ stream: String, sequence: Int) {
        jetStreamRequest("STREAM.MSG.DELETE.\(stream)", .object(["seq": .number(JSONNumber(sequence))]), answer: "deleted.\(sequence)")
    }

    /// Asks for the stream's state now, and again after the status interval.
    mutating func askForStreamStatus(_ name: String) -> [Output] {
        guard let queue = cluster?.jetStreamQueues[name], let settings = cluster?.jetStream else { return [] }
        jetStreamRequest("STREAM.INFO.\(queue.stream)", .object([:]), answer: "info.\(name)")
        return [.startTimer(.jetStreamStatus(name), milliseconds: settings.statusIntervalMilliseconds)]
    }

    /// What `get /queues/NAME` and `/queuez` show of a queue on JetStream.
    func jetStreamQueueJSON(_ name: String) -> JSONObject? {
        guard let queue = cluster?.jetStreamQueues[name] else { return nil }
        var object = queue.configuration.json
        object["jetStream"] = [
            "stream": .string(queue.stream), "consumer": .string(JetStreamQueue.consumerName), "ready": .bool(queue.ready),
            "failure": queue.failure.map { .string($0) } ?? .null, "requested": .number(JSONNumber(queue.requested)),
            "pulls": .number(JSONNumber(queue.pullsMade)), "pullsEnded": .number(JSONNumber(queue.pullsEnded)),
            "pullsLost": .number(JSONNumber(queue.pullsLost)),
            "lastPullEnd": queue.lastPullEnd.map { .number(JSONNumber($0)) } ?? .null,
        ]
        object["messages"] = .number(JSONNumber(queue.messages))
        object["bytes"] = .number(JSONNumber(queue.bytes))
        object["expired"] = .number(JSONNumber(queue.expired))
        if queue.migrated > 0 || queue.migrationFailures > 0 || !queue.migration.isEmpty {
            object["movedFromStore"] = [
                "moved": .number(JSONNumber(queue.migrated)), "waiting": .number(JSONNumber(queue.migration.count)),
                "failed": .number(JSONNumber(queue.migrationFailures)),
            ]
        }
        object["consumers"] = .number(JSONNumber(queue.consumers.count))
        object["unacknowledged"] = .number(JSONNumber(queue.deliveries.count))
        object["delivered"] = .number(JSONNumber(queue.delivered))
        object["redelivered"] = .number(JSONNumber(queue.redelivered))
        object["acknowledged"] = .number(JSONNumber(queue.acknowledged))
        object["deadLettered"] = .number(JSONNumber(queue.deadLettered))
        return object
    }
}
