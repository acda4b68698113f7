// Requests across dialects and hubs, for `HubCore`: a NATS request on `SERVICE.METHOD` taken as a
// service call and its answer on the reply subject; LIME requests on subjects (`get /topics/S`),
// and LIME calls of services on another hub, answered on the hub's own inbox.

extension HubCore {
    /// The session id the hub publishes its own messages from (no real session has it).
    static let hubSession: SessionID = 0
    /// The header a hub's request to another hub's service carries its deadline in (ms).
    static let deadlineHeader = "Relay-Deadline"

    /// A NATS request on `SERVICE.METHOD` for a registered service: returns the outputs when it was
    /// handled as a service call, nil when it is an ordinary publication.
    mutating func serviceRequest(_ message: PublishedMessage, from session: SessionID) -> [Output]? {
        guard !services.isEmpty, let replyTo = message.replyTo else { return nil }
        let tokens = message.subject.split(separator: ".", maxSplits: 1)
        guard tokens.count == 2, services[tokens[0].lowercased()] != nil else { return nil }
        let service = tokens[0].lowercased()
        let method = String(tokens[1])
        // Service parameters are JSON: a NATS payload that parses as JSON is taken as such, whatever its type.
        let bytes = message.payloadBytes
        let content: JSONValue = bytes.isEmpty ? .null : (try? JSONParser.parse(bytes)) ?? message.limeContent.1.value
        var metadata = message.metadata
        // One call of another hub's standing request: its period or event count is the method's to allow.
        let period = metadata.removeValue(forKey: "#period").flatMap { Double($0) }
        let events = metadata.removeValue(forKey: "#events").flatMap { Int($0) }
        if period != nil || events != nil, let description = services[service]?.description.method(method),
            let refusal = Self.standingRefusal(description, method: method, period: period, events: events)
        {
            return publishReply(
                LIMECommand(method: .get, status: .failure, reason: Reason(code: ReasonCode.commandNotAllowed, description: refusal)),
                to: replyTo, from: Self.hubSession, trace: TraceContext.carried(in: metadata))
        }
        let calledAgain = metadata.removeValue(forKey: "#calledAgain") != nil
        // Who calls from another hub, as that hub said it (its cluster link checked the signature).
        var attested: (caller: Node, admin: Bool)?
        if session == Self.clusterSession, let caller = metadata.removeValue(forKey: ClusterMembership.callerHeader).flatMap(Node.init) {
            attested = (caller, metadata.removeValue(forKey: ClusterMembership.callerAdminHeader) == "1")
        }
        metadata[ClusterMembership.callerHeader] = nil
        metadata[ClusterMembership.callerAdminHeader] = nil
        let carried = metadata.removeValue(forKey: Self.deadlineHeader)
        metadata["#deadline"] = metadata["#deadline"] ?? carried ?? String(configuration.defaultDeadlineMilliseconds)
        let command = LIMECommand(
            header: EnvelopeHeader(id: replyTo, from: message.publisher, metadata: metadata), method: .get,
            uri: "/services/\(service)/\(method)", resource: content == .null ? nil : content)
        if let reason = checkCall(command, service: service, method: method, from: session, attested: attested) {
            return publishReply(
                LIMECommand(method: .get, status: .failure, reason: reason), to: replyTo, from: Self.hubSession,
                trace: TraceContext.carried(in: metadata))
        }
        if services[service]?.durable == true {
            // Stored first, as a LIME caller's request is; answered on the reply subject.
            return durableRequest(command, service: service, method: method, from: session, replyTo: replyTo)
        }
        let deadline = Int(metadata["#deadline"]!) ?? configuration.defaultDeadlineMilliseconds
        let outputs = dispatch(
            command, caller: CallerKey(session: session, id: replyTo), service: service, method: method, purpose: .natsReply(replyTo),
            deadline: deadline)
        // Called again by another hub's instance: a second call-again is refused here.
        if calledAgain, let id = inFlightByCaller[CallerKey(session: session, id: replyTo)] { inFlight[id]?.calledAgain = true }
        // dispatch answers a refused call with a LIME response; a NATS caller gets it on its reply subject.
        return outputs.flatMap { output -> [Output] in
            if case .send(session, .command(let refusal)) = output {
                return publishReply(refusal, to: replyTo, from: Self.hubSession, trace: TraceContext.carried(in: metadata))
            }
            return [output]
        }
    }

    /// Publishes a service's response on a NATS reply subject: the result as JSON, or a failure as
    /// the NATS micro headers `Nats-Service-Error` and `Nats-Service-Error-Code`; with the
    /// response's trace context, or else its request's (`trace`).
    mutating func publishReply(_ response: LIMECommand, to replyTo: String, from session: SessionID, trace: [String: String])
        -> [Output]
    {
        let own = TraceContext.carried(in: response.header.metadata)
        var reply = PublishedMessage(
            subject: replyTo, publisher: router.node(of: session), body: .bytes([]), metadata: own.isEmpty ? trace : own)
        if response.status == .success {
            let resource = response.resource ?? .null
            if let text = resource.stringValue, response.type.map({ !$0.isJSON }) ?? true {
                reply.body = .text(text)
                reply.type = response.type ?? .textPlain
            } else {
                reply.body = .json(resource)
                reply.type = response.type ?? .applicationJSON
            }
        } else {
            let reason = response.reason ?? Reason(code: ReasonCode.generalError, description: "failure")
            reply.metadata[NATSServiceError.descriptionHeader] = reason.description
            reply.metadata[NATSServiceError.codeHeader] = String(reason.code)
        }
        return publish(reply, from: session).outputs
    }

    /// A call of a service with no instance here, on a cluster: a NATS request on `SERVICE.METHOD`,
    /// which a hub with an instance takes (the services' queue group) and answers on this hub's
    /// inbox, like a subject request. The callee's hub checks the parameters; standing requests
    /// stay with instances on the caller's hub.
    mutating func requestOnCluster(_ command: LIMECommand, service: String, method: String, from session: SessionID)
        -> [Output]
    {
        if let refusal = callRefusal(service, method: method, from: session) {
            statistics.permissionViolations += 1
            return [reply(session, command.failure(refusal))]
        }
        let period = command.header.metadata?["#period"].flatMap { Double($0) }
        let events = command.header.metadata?["#events"].flatMap { Int($0) }
        guard period != nil || events != nil, let callerID = command.header.id else {
            // The call was checked as a call, not as a publication.
            return requestSubject(command, subject: "\(service).\(method)", from: session, checkingPublish: false)
        }
        // A standing request: kept here, each call made on the cluster; the serving hub checks the
        // period or event count against the method (they travel as `#` metadata).
        let caller = CallerKey(session: session, id: callerID)
        let deadline = command.header.metadata?["#deadline"].flatMap { Int($0) } ?? configuration.defaultDeadlineMilliseconds
        methodSubscriptions[caller] = MethodSubscription(
            callerNode: command.header.from ?? configuration.hubNode, service: service, method: method, command: command,
            periodMilliseconds: period.map { Int($0 * 1000) }, events: events, deadline: deadline, elsewhere: true)
        return callOnCluster(command, caller: caller, service: service, method: method)
    }

    /// One call of a standing request whose service is on another hub.
    mutating func callOnCluster(_ command: LIMECommand, caller: CallerKey, service: String, method: String) -> [Output] {
        let outputs = requestSubject(command, subject: "\(service).\(method)", from: caller.session, checkingPublish: false)
        if let id = subjectRequests.first(where: { $0.value.caller == caller })?.key { subjectRequests[id]!.standing = true }
        return outputs
    }

    /// `get /topics/SUBJECT` from LIME: a request on a subject (to a NATS responder, for example).
    /// The hub publishes it with a reply subject of its own and answers the caller with the first reply.
    /// `onClusterOnly`: published on the cluster alone, not to this hub's subscribers or services
    /// (a call made again elsewhere).
    /// A service call (`checkingPublish` false) on a cluster whose hubs attest callers says who
    /// calls.
    mutating func requestSubject(
        _ command: LIMECommand, subject: String, from session: SessionID, checkingPublish: Bool = true, onClusterOnly: Bool = false
    ) -> [Output] {
        guard let callerID = command.header.id else { return [] }
        if let error = Subject.publishError(subject) {
            return refuse(session, command, ReasonCode.validationInvalidResource, error)
        }
        if checkingPublish, let reason = publishRefusal(subject, from: session) {
            return [reply(session, command.failure(reason))]
        }
        let id = nextRequestID
        nextRequestID += 1
        let inbox = inboxPrefix + String(id)
        let caller = CallerKey(session: session, id: callerID)
        var metadata = command.header.metadata ?? [:]
        startTrace(in: &metadata)
        subjectRequests[id] = SubjectRequest(
            caller: caller, callerNode: command.header.from, method: command.method, inbox: inbox,
            traceContext: TraceContext.carried(in: metadata))
        subjectRequestsByInbox[inbox] = id
        let deadline = metadata.removeValue(forKey: "#deadline").flatMap { Int($0) } ?? configuration.defaultDeadlineMilliseconds
        var publication = command
        // Another hub's service instance gets the caller's deadline.
        if cluster != nil { metadata[Self.deadlineHeader] = String(deadline) }
        publication.header.metadata = metadata
        var outputs: (outputs: [Output], delivered: Int) = ([], 0)
        if onClusterOnly {
            cluster!.pending.append(.publish(Self.publication(of: publication, subject: subject, replyTo: inbox).0))
        } else {
            outputs = publish(publication, subject: subject, replyTo: inbox, from: session)
        }
        if !checkingPublish, cluster?.attestsCallers == true, let caller = router.node(of: session),
            let index = cluster!.pending.lastIndex(where: { if case .publish(let message) = $0 { message.replyTo == inbox } else { false } }
            ),
            case .publish(let message) = cluster!.pending[index]
        {
            cluster!.pending[index] = .publishCall(message, caller: caller, admin: mayCallAdminMethods(session))
        }
        // On a cluster, no responders is the cluster's to say (a 503 on the inbox).
        guard outputs.delivered > 0 || cluster != nil else {
            return endSubjectRequest(
                id, with: command.failure(Reason(code: ReasonCode.routingDestinationNotFound, description: "No responders on '\(subject)'"))
            )
        }
        outputs.outputs.append(.startTimer(.deadline(id), milliseconds: deadline))
        return outputs.outputs
    }

    /// A publication on one of the hub's inboxes answers a LIME subject request.
    mutating func subjectReply(_ message: PublishedMessage) -> [Output]? {
        guard !subjectRequestsByInbox.isEmpty, let id = subjectRequestsByInbox[message.subject], let request = subjectRequests[id] else {
            return nil
        }
        var response: LIMECommand
        if let code = message.metadata[NATSServiceError.codeHeader].flatMap({ Int($0) }) {
            response = LIMECommand(
                method: request.method, status: .failure,
                reason: Reason(code: code, description: message.metadata[NATSServiceError.descriptionHeader] ?? ""))
        } else if message.status == 503 {
            response = LIMECommand(
                method: request.method, status: .failure,
                reason: Reason(code: ReasonCode.routingDestinationNotFound, description: "No responders"))
        } else {
            let (type, content) = message.limeContent
            response = LIMECommand(method: request.method, type: type, resourceBody: content, status: .success)
        }
        response.header.from = message.publisher
        let trace = TraceContext.carried(in: message.metadata)
        if !trace.isEmpty { response.header.metadata = trace }
        return endSubjectRequest(id, with: response) + [.cancelTimer(.deadline(id))]
    }

    mutating func endSubjectRequest(_ id: RequestID, with response: LIMECommand) -> [Output] {
        guard let request = subjectRequests.removeValue(forKey: id) else { return [] }
        subjectRequestsByInbox[request.inbox] = nil
        var next: [Output] = []
        if request.standing, let subscription = methodSubscriptions[request.caller] {
            let refused = [
                ReasonCode.commandNotAllowed, ReasonCode.commandInvalidArgument, ReasonCode.commandMethodNotSupported,
                ReasonCode.routingDestinationNotFound,
            ]
            if response.status == .failure, let code = response.reason?.code, refused.contains(code) {
                methodSubscriptions[request.caller] = nil
            } else if let period = subscription.periodMilliseconds {
                next.append(.startTimer(.period(request.caller), milliseconds: period))
            }
        }
        var answer = response
        answer.header.id = request.caller.id
        answer.header.to = request.callerNode
        answer.header.metadata = TraceContext.inherited(answer.header.metadata, from: request.traceContext)
        if answer.header.from == nil { answer.header.from = configuration.hubNode }
        return [.send(request.caller.session, .command(answer))] + next
    }
}
