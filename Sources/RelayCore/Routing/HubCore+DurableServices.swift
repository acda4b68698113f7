// Services on durable queues (nuropb's service queues): a service registered with `"durable": true`
// gets a durable queue; its requests and commands are stored before they are handed out, its
// instances compete for them (one at a time each), and neither an instance nor a hub crash loses
// one. Answers map onto the delivery machine: success acknowledges, call-again (110) delivers once
// more, any other failure terminates (to the dead letters) and is returned to the caller.

extension HubCore {
    /// The durable queue behind a durable service.
    static func serviceQueueName(_ service: String) -> String {
        "svc_" + String(service.lowercased().map { $0 == "." ? "_" : $0 })
    }

    static let serviceConsumerToken = "service"

    /// The subject of a durable service's stream on JetStream (a clustered hub): written by the
    /// hubs only, never a client's.
    static func serviceStreamSubject(_ name: String) -> String { "$RELAY.SVC.\(name)" }
    /// Where a durable service's terminated requests go (on this hub only: a system subject).
    static func serviceDeadLetterSubject(_ name: String) -> String { "$SVC.\(name).dead" }

    /// Makes sure a durable service's queue exists and attaches the registering instance to it:
    /// the hub's own store, or on a cluster with JetStream a stream every hub's instances share.
    mutating func attachDurableInstance(_ session: SessionID, service: String) -> [Output] {
        let name = Self.serviceQueueName(service)
        var outputs: [Output] = []
        if queuesOnJetStream {
            if cluster!.jetStreamQueues[name] == nil {
                let configuration = QueueConfiguration(
                    name: name, subjects: [Self.serviceStreamSubject(name)], deadLetterSubject: Self.serviceDeadLetterSubject(name))
                outputs += (try? createJetStreamQueue(configuration, announce: false)) ?? []
            }
        } else if queues[name] == nil {
            let configuration = QueueConfiguration(
                name: name, subjects: ["$SVC.\(name)"], deadLetterSubject: Self.serviceDeadLetterSubject(name))
            outputs += (try? createLocalQueue(configuration)) ?? []
        }
        outputs += (try? attachConsumer(session, token: Self.serviceConsumerToken + ":" + name, queue: name, credit: 1)) ?? []
        return outputs
    }

    /// A request to a durable service: stored first, delivered to an instance once stored. The
    /// caller is a node (LIME), or a reply subject (`replyTo`: a NATS client, another hub).
    mutating func durableRequest(
        _ command: LIMECommand, service: String, method: String, from session: SessionID, replyTo: String? = nil
    ) -> [Output] {
        let name = Self.serviceQueueName(service)
        var request: JSONObject = [
            "method": .string(method), "verb": .string(command.method.rawValue), "callerID": .string(command.header.id ?? ""),
        ]
        if let resource = command.resource { request["resource"] = resource }
        if let caller = command.header.from { request["caller"] = .string(caller.description) }
        if let replyTo { request["replyTo"] = .string(replyTo) }
        if let metadata = command.header.metadata {
            request["metadata"] = .object(JSONObject(metadata.sorted { $0.key < $1.key }.map { ($0.key, JSONValue.string($0.value)) }))
        }
        if cluster?.jetStreamQueues[name] != nil {
            let message = PublishedMessage(
                subject: Self.serviceStreamSubject(name), publisher: command.header.from, type: .applicationJSON,
                body: .json(.object(request)))
            storeOnJetStream(message, waiting: PubAckWait(request: request))
            return []
        }
        guard queues[name] != nil else {
            let reason = Reason(code: ReasonCode.routingDestinationNotFound, description: "No queue for service '\(service)'")
            return replyTo == nil ? [reply(session, command.failure(reason))] : answerCaller(command.failure(reason), of: request)
        }
        let message = PublishedMessage(
            subject: "$SVC.\(name)", publisher: command.header.from, type: .applicationJSON, body: .json(.object(request)))
        let sequence = queues[name]!.nextSequence
        queues[name]!.nextSequence += 1
        return [.persist([QueueCopy(queue: name, queued: QueuedMessage(sequence: sequence, message: message))], then: [])]
    }

    /// A stored request's fields (stored as JSON; bytes when read back from JetStream).
    static func storedRequest(_ message: PublishedMessage) -> JSONObject? {
        if case .json(let value) = message.body { return value.objectValue }
        return (try? JSONParser.parse(message.payloadBytes))?.objectValue
    }

    /// The forwarded command a service instance receives for a stored request.
    func serviceCommand(queue name: String, delivery: UInt64, count: Int, message: PublishedMessage, to node: Node?) -> Envelope? {
        guard let request = Self.storedRequest(message), let method = request["method"]?.stringValue,
            let verb = request["verb"]?.stringValue.flatMap(CommandMethod.init(rawValue:))
        else { return nil }
        var metadata: [String: String] = [:]
        for member in request["metadata"]?.objectValue ?? [:] { metadata[member.key] = member.value.stringValue }
        metadata["#deliveries"] = String(count)
        let service = String(name.dropFirst(4))
        return .command(
            LIMECommand(
                header: EnvelopeHeader(
                    id: Self.queueDeliveryID(name, delivery), from: request["caller"]?.stringValue.flatMap { Node($0) }, to: node,
                    metadata: metadata),
                method: verb, uri: "/services/\(service)/\(method)", resource: request["resource"]))
    }

    /// An instance answered a stored request: settle the delivery and answer the caller.
    mutating func durableResponse(_ response: LIMECommand, queue name: String, delivery: UInt64, from session: SessionID) -> [Output] {
        if let held = cluster?.jetStreamQueues[name]?.deliveries[delivery] {
            guard let request = Self.storedRequest(held.message) else { return [] }
            let (settle, answer) = settlement(of: response, request: request, count: held.deliveries, instance: session)
            return answerJetStream(settle, delivery: delivery, queue: name) + (answer.map { answerCaller($0, of: request) } ?? [])
        }
        // Reads through `queues[name]` rather than a local copy, which would make the settling below copy the queue.
        guard let messageID = queues[name]?.machine.messageID(of: delivery), let (queued, count) = queues[name]?.machine.message(messageID),
            let request = Self.storedRequest(queued.message)
        else { return [] }
        let (settle, answer) = settlement(of: response, request: request, count: count, instance: session)
        return self.answer(settle, delivery: delivery, queue: name) + (answer.map { answerCaller($0, of: request) } ?? [])
    }

    /// How an instance's response settles its delivery, and what the caller gets (nil: nothing
    /// yet, the request is delivered once more). Success acknowledges; call-again (110) delivers
    /// once more, a second one is refused; any other failure terminates.
    private func settlement(of response: LIMECommand, request: JSONObject, count: Int, instance: SessionID) -> (
        DeliveryAnswer, LIMECommand?
    ) {
        var answer = response
        answer.header.from = router.node(of: instance)
        if response.status == .failure, response.reason?.code == RelayReasonCode.callAgain {
            if count < 2 { return (.nak(delayMilliseconds: nil), nil) }
            answer.reason = Reason(code: RelayReasonCode.callAgainRefused, description: "The instance asked to call again a second time")
            return (.term(reason: "The instance asked to call again a second time"), answer)
        }
        if response.status == .failure { return (.term(reason: response.reason?.description ?? "failed"), answer) }
        return (.ack, answer)
    }

    /// Answers a stored request's caller: on its reply subject, or as a command to its node,
    /// wherever it is connected now (another hub on a cluster, after a restart); a caller gone is
    /// not answered.
    mutating func answerCaller(_ answer: LIMECommand, of request: JSONObject) -> [Output] {
        if let replyTo = request["replyTo"]?.stringValue {
            return publishReply(answer, to: replyTo, from: Self.hubSession, trace: answer.header.metadata ?? [:])
        }
        var routed = answer
        routed.header.id = request["callerID"]?.stringValue
        routed.header.to = request["caller"]?.stringValue.flatMap { Node($0) }
        guard routed.header.to != nil else { return [] }
        return route(.command(routed), from: Self.hubSession)
    }
}
