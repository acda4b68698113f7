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

    /// Makes sure a durable service's queue exists and attaches the registering instance to it.
    mutating func attachDurableInstance(_ session: SessionID, service: String) -> [Output] {
        let name = Self.serviceQueueName(service)
        var outputs: [Output] = []
        if queues[name] == nil {
            let configuration = QueueConfiguration(name: name, subjects: ["$SVC.\(name)"], deadLetterSubject: "$SVC.\(name).dead")
            outputs += (try? createLocalQueue(configuration)) ?? []
        }
        outputs += (try? attachConsumer(session, token: Self.serviceConsumerToken + ":" + name, queue: name, credit: 1)) ?? []
        return outputs
    }

    /// A request to a durable service: stored first, delivered to an instance once on disk.
    mutating func durableRequest(_ command: LIMECommand, service: String, method: String, from session: SessionID) -> [Output] {
        let name = Self.serviceQueueName(service)
        var request: JSONObject = [
            "method": .string(method), "verb": .string(command.method.rawValue), "callerID": .string(command.header.id ?? ""),
        ]
        if let resource = command.resource { request["resource"] = resource }
        if let caller = command.header.from { request["caller"] = .string(caller.description) }
        if let metadata = command.header.metadata {
            request["metadata"] = .object(JSONObject(metadata.sorted { $0.key < $1.key }.map { ($0.key, JSONValue.string($0.value)) }))
        }
        let message = PublishedMessage(
            subject: "$SVC.\(name)", publisher: command.header.from, type: .applicationJSON, body: .json(.object(request)))
        guard queues[name] != nil else {
            return refuse(session, command, ReasonCode.routingDestinationNotFound, "No queue for service '\(service)'")
        }
        let sequence = queues[name]!.nextSequence
        queues[name]!.nextSequence += 1
        return [.persist([QueueCopy(queue: name, queued: QueuedMessage(sequence: sequence, message: message))], then: [])]
    }

    /// The forwarded command a service instance receives for a stored request.
    func serviceCommand(queue name: String, delivery: UInt64, count: Int, queued: QueuedMessage, to node: Node?) -> Envelope? {
        guard case .json(let value) = queued.message.body, let request = value.objectValue, let method = request["method"]?.stringValue,
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
        // Reads through `queues[name]` rather than a local copy, which would make the settling below copy the queue.
        guard let messageID = queues[name]?.machine.messageID(of: delivery), let (queued, count) = queues[name]?.machine.message(messageID),
            case .json(let value) = queued.message.body, let request = value.objectValue
        else { return [] }
        let callerNode = request["caller"]?.stringValue.flatMap { Node($0) }
        let callerID = request["callerID"]?.stringValue
        var answer = response
        answer.header.id = callerID
        answer.header.from = router.node(of: session)
        answer.header.to = callerNode
        let settle: DeliveryAnswer
        if response.status == .failure, response.reason?.code == RelayReasonCode.callAgain {
            if count < 2 {
                // Once more, to whichever instance is free.
                return answerDelivery(.nak(delayMilliseconds: nil), delivery: delivery, queue: name)
            }
            settle = .term(reason: "The instance asked to call again a second time")
            answer.reason = Reason(code: RelayReasonCode.callAgainRefused, description: "The instance asked to call again a second time")
        } else if response.status == .failure {
            settle = .term(reason: response.reason?.description ?? "failed")
        } else {
            settle = .ack
        }
        var outputs = answerDelivery(settle, delivery: delivery, queue: name)
        // The caller may be gone (or may be waiting on another hub after a restart): answer it if it is here.
        if let callerNode, let caller = router.session(of: callerNode) {
            outputs.append(.send(caller, .command(answer)))
        }
        return outputs
    }

    private mutating func answerDelivery(_ answer: DeliveryAnswer, delivery: UInt64, queue name: String) -> [Output] {
        self.answer(answer, delivery: delivery, queue: name)
    }
}
