// The service operations (registration, discovery, requests, deadlines, cancellation, call-again, period and event subscriptions) of `HubCore`; see HubCore.swift for the state they work on, and HubCore+SubjectRequests.swift for requests over subjects and across hubs.

extension HubCore {
    // MARK: - Services

    var serviceList: [JSONValue] {
        services.keys.sorted().map { .object(serviceJSON($0)) }
    }

    func serviceJSON(_ name: String) -> JSONObject {
        if name == "compound" { return ["compound": .array(compoundList)] }
        guard let entry = services[name] else { return [:] }
        var object = entry.description.json
        object["instances"] = .number(JSONNumber(entry.instances.count))
        return object
    }

    var compoundList: [JSONValue] {
        compounds.keys.sorted().map { name in
            let compound = compounds[name]!
            var object: JSONObject = ["name": .string(compound.name)]
            if let description = compound.description { object["description"] = .string(description) }
            object["methods"] = .array(
                compound.steps.map { step in
                    .object([
                        "service": .string(step.service), "method": .string(step.method),
                        "aliases": .object(
                            JSONObject(step.aliases.sorted { $0.key < $1.key }.map { ($0.key, JSONValue.string($0.value)) })),
                        "presets": .object(step.presets),
                    ])
                })
            return .object(object)
        }
    }

    mutating func registerService(_ command: LIMECommand, name: String, from session: SessionID) -> [Output] {
        guard Self.isValidName(name), name.lowercased() != "compound" else {
            return refuse(
                session, command, ReasonCode.validationInvalidResource,
                "'\(name)' is not a valid service name (letters, digits, '-', '_', '.')")
        }
        if let reason = serveRefusal(name, from: session) { return [reply(session, command.failure(reason))] }
        let description: ServiceDescription
        do {
            description = try ServiceDescription(name: name, json: command.resource)
        } catch {
            return [reply(session, command.failure(error))]
        }
        let key = name.lowercased()
        if var entry = services[key] {
            guard entry.description.methods == description.methods else {
                return refuse(
                    session, command, RelayReasonCode.registrationConflict,
                    "Service '\(name)' is already registered with other methods; instances of one service must describe the same methods")
            }
            guard entry.durable == (command.resource?["durable"]?.boolValue ?? false) else {
                return refuse(
                    session, command, RelayReasonCode.registrationConflict,
                    "Service '\(name)' is already registered \(entry.durable ? "with" : "without") a durable queue")
            }
            if !entry.instances.contains(session) { entry.instances.append(session) }
            services[key] = entry
        } else {
            services[key] = ServiceEntry(
                description: description, instances: [session], durable: command.resource?["durable"]?.boolValue ?? false)
        }
        let durable = services[key]!.durable ? attachDurableInstance(session, service: key) : []
        clusterServicesChanged()
        return durable + [reply(session, command.success())]
    }

    mutating func unregisterService(_ command: LIMECommand, name: String, from session: SessionID) -> [Output] {
        let key = name.lowercased()
        guard var entry = services[key], entry.instances.contains(session) else {
            return refuse(session, command, ReasonCode.commandResourceNotFound, "This session does not serve '\(name)'")
        }
        entry.instances.removeAll { $0 == session }
        services[key] = entry.instances.isEmpty && !entry.durable ? nil : entry
        clusterServicesChanged()
        if entry.durable {
            return detachConsumer(session, token: Self.serviceConsumerToken + ":" + Self.serviceQueueName(key)) + [
                reply(session, command.success())
            ]
        }
        return [reply(session, command.success())]
    }

    /// Picks the instance with the fewest requests outstanding; ties go round in turn.
    mutating func pickInstance(_ service: String) -> SessionID? {
        guard var entry = services[service], !entry.instances.isEmpty else { return nil }
        let count = entry.instances.count
        var best: SessionID?
        var bestLoad = Int.max
        for offset in 0..<count {
            let candidate = entry.instances[(entry.turn + offset) % count]
            let load = outstanding[candidate, default: 0]
            if load < bestLoad {
                best = candidate
                bestLoad = load
            }
        }
        entry.turn = (entry.turn + 1) % count
        services[service] = entry
        return best
    }

    /// `attested`: the caller and its right to admin methods, as another hub said them.
    func checkCall(
        _ command: LIMECommand, service: String, method: String, from session: SessionID, attested: (caller: Node, admin: Bool)? = nil
    ) -> Reason? {
        // Before anything else: a caller may not learn which services exist that it may not call.
        if let refusal = callRefusal(service, method: method, from: session) { return refusal }
        guard let entry = services[service] else {
            return Reason(code: ReasonCode.routingDestinationNotFound, description: "No instance of service '\(service)' is connected")
        }
        guard let description = entry.description.method(method) else {
            return Reason(code: ReasonCode.commandMethodNotSupported, description: "Service '\(service)' has no method '\(method)'")
        }
        let callerIdentity = attested?.caller.identity ?? router.node(of: session)?.identity
        switch description.scope {
        case .public: break
        case .private:
            let serving = Set(entry.instances.compactMap { router.node(of: $0)?.identity })
            if callerIdentity == nil || !serving.contains(callerIdentity!) {
                return Reason(
                    code: ReasonCode.commandNotAllowed,
                    description: "Method '\(method)' of '\(service)' is private to the service's own nodes")
            }
        case .admin:
            if !(attested?.admin ?? mayCallAdminMethods(session)) {
                return Reason(code: ReasonCode.commandNotAllowed, description: "Method '\(method)' of '\(service)' is for administrators")
            }
        }
        if let error = description.validationError(command.resource) {
            return Reason(code: ReasonCode.commandInvalidArgument, description: error)
        }
        return nil
    }

    mutating func request(_ command: LIMECommand, service: String, method: String, from session: SessionID) -> [Output] {
        guard let callerID = command.header.id else {
            return []  // a request nobody waits for cannot be answered; LIME requests carry an id
        }
        if cluster != nil, services[service]?.instances.isEmpty ?? true, services[service]?.durable != true {
            return requestOnCluster(command, service: service, method: method, from: session)
        }
        if let reason = checkCall(command, service: service, method: method, from: session) {
            if reason.code == RelayReasonCode.serviceNotPermitted { statistics.permissionViolations += 1 }
            return [reply(session, command.failure(reason))]
        }
        if services[service]?.durable == true {
            return durableRequest(command, service: service, method: method, from: session)
        }
        let caller = CallerKey(session: session, id: callerID)
        let deadline =
            command.header.metadata?["#deadline"].flatMap { Int($0) }.map { max(1, $0) } ?? configuration.defaultDeadlineMilliseconds
        let description = services[service]!.description.method(method)!
        // A standing request: answered now, then every period or every N events.
        let period = command.header.metadata?["#period"].flatMap { Double($0) }
        let events = command.header.metadata?["#events"].flatMap { Int($0) }
        if period != nil || events != nil {
            if let refusal = Self.standingRefusal(description, method: method, period: period, events: events) {
                return refuse(session, command, ReasonCode.commandNotAllowed, refusal)
            }
            methodSubscriptions[caller] = MethodSubscription(
                callerNode: command.header.from ?? configuration.hubNode, service: service, method: method, command: command,
                periodMilliseconds: period.map { Int($0 * 1000) }, events: events, deadline: deadline)
        }
        return dispatchStanding(command, caller: caller, service: service, method: method, deadline: deadline)
    }

    /// Dispatches a call; a standing request whose call could not even be sent ends there.
    mutating func dispatchStanding(_ command: LIMECommand, caller: CallerKey, service: String, method: String, deadline: Int)
        -> [Output]
    {
        if methodSubscriptions[caller]?.elsewhere == true {
            return callOnCluster(command, caller: caller, service: service, method: method)
        }
        let outputs = dispatch(command, caller: caller, service: service, method: method, purpose: .call, deadline: deadline)
        if !outputs.contains(where: { if case .startTimer(.deadline, _) = $0 { return true } else { return false } }) {
            methodSubscriptions[caller] = nil
        }
        return outputs
    }

    /// Why a standing request's period or event count is refused by the method, or nil.
    static func standingRefusal(_ description: MethodDescription, method: String, period: Double?, events: Int?) -> String? {
        if let period, !(description.minimumPeriod.map { period >= $0 && period > 0 } ?? false) {
            return
                "A period of \(JSONNumber(period)) s is below the minimum of '\(method)' (\(description.minimumPeriod.map { "\(JSONNumber($0)) s" } ?? "no period subscriptions"))"
        }
        if let events, !(description.minimumEvents.map { events >= $0 && events > 0 } ?? false) {
            return
                "\(events) events is below the minimum of '\(method)' (\(description.minimumEvents.map { "\($0) events" } ?? "no event subscriptions"))"
        }
        return nil
    }

    /// Sends a request to an instance and starts its deadline.
    mutating func dispatch(
        _ command: LIMECommand, caller: CallerKey, service: String, method: String, purpose: Purpose, deadline: Int
    ) -> [Output] {
        guard inFlightByCaller[caller] == nil else {
            return refuse(caller.session, command, ReasonCode.validationError, "A request with id '\(caller.id)' is already in flight")
        }
        let limit =
            caller.session == Self.clusterSession ? configuration.maximumRequestsFromCluster : configuration.maximumRequestsPerSession
        guard inFlightBySession[caller.session, default: 0] < limit else {
            return refuse(
                caller.session, command, RelayReasonCode.limitReached, "This session has the maximum of \(limit) requests in flight")
        }
        guard let instance = pickInstance(service) else {
            return [
                reply(
                    caller.session,
                    command.failure(
                        Reason(code: ReasonCode.routingDestinationNotFound, description: "No instance of service '\(service)' is connected")
                    ))
            ]
        }
        let id = nextRequestID
        nextRequestID += 1
        statistics.requests += 1
        let command = tracedRequest(command)
        let flight = InFlight(
            caller: caller, callerNode: command.header.from ?? configuration.hubNode, instance: instance, service: service, method: method,
            command: command, calledAgain: false, purpose: purpose, deadline: deadline)
        inFlight[id] = flight
        inFlightBySession[caller.session, default: 0] += 1
        inFlightByCaller[caller] = id
        outstanding[instance, default: 0] += 1
        return [.send(instance, forwarded(flight, id: id)), .startTimer(.deadline(id), milliseconds: deadline)]
    }

    func forwarded(_ flight: InFlight, id: RequestID) -> Envelope {
        var command = flight.command
        command.header.id = Self.requestIDString(id)
        command.header.from = flight.callerNode
        command.header.to = router.node(of: flight.instance)
        command.uri = "/services/\(flight.service)/\(flight.method)"
        var metadata = command.header.metadata ?? [:]
        metadata["#deadline"] = String(flight.deadline)
        metadata["#period"] = nil
        metadata["#events"] = nil
        command.header.metadata = metadata
        return .command(command)
    }

    mutating func responseReceived(_ response: LIMECommand, request id: RequestID) -> [Output] {
        guard var flight = inFlight[id] else { return [] }
        if response.status == .failure, response.reason?.code == RelayReasonCode.callAgain {
            if flight.calledAgain {
                return finish(id, with: failure(flight, RelayReasonCode.callAgainRefused, "The instance asked to call again a second time"))
            }
            if cluster != nil, let again = callAgainOnCluster(id, flight) { return again }
            // Once more, to the least busy instance (perhaps the same one).
            outstanding[flight.instance, default: 1] -= 1
            guard let instance = pickInstance(flight.service) else {
                return finish(
                    id,
                    with: failure(flight, ReasonCode.routingDestinationNotFound, "No instance of service '\(flight.service)' is connected"))
            }
            flight.instance = instance
            flight.calledAgain = true
            inFlight[id] = flight
            outstanding[instance, default: 0] += 1
            return [.send(instance, forwarded(flight, id: id))]
        }
        return finish(id, with: response)
    }

    /// On a cluster, a call an instance asked to call again goes to the cluster's choice of
    /// instance, on any hub (this one included), as RabbitMQ requeues for any consumer; it travels
    /// with `#calledAgain`, so that a second call-again is refused there. Nil for a call kept here
    /// (a compound method's step, a standing request's call).
    private mutating func callAgainOnCluster(_ id: RequestID, _ flight: InFlight) -> [Output]? {
        guard methodSubscriptions[flight.caller] == nil else { return nil }
        var command = flight.command
        var metadata = command.header.metadata ?? [:]
        metadata["#calledAgain"] = "1"
        metadata["#deadline"] = String(flight.deadline)
        command.header.metadata = metadata
        let subject = "\(flight.service).\(flight.method)"
        switch flight.purpose {
        case .call:
            endFlight(id)
            command.header.id = flight.caller.id
            command.header.from = flight.callerNode
            return [.cancelTimer(.deadline(id))]
                + requestSubject(command, subject: subject, from: flight.caller.session, checkingPublish: false, onClusterOnly: true)
        case .natsReply(let replyTo):
            endFlight(id)
            metadata[Self.deadlineHeader] = metadata.removeValue(forKey: "#deadline")
            command.header.metadata = metadata
            cluster!.pending.append(.publish(Self.publication(of: command, subject: subject, replyTo: replyTo).0))
            return [.cancelTimer(.deadline(id))]
        default:
            return nil
        }
    }

    /// Forgets a request in flight, returning it.
    @discardableResult
    private mutating func endFlight(_ id: RequestID) -> InFlight? {
        guard let flight = inFlight.removeValue(forKey: id) else { return nil }
        countEnded(flight)
        endedRequests.remember(flight.instance, for: id)
        inFlightByCaller[flight.caller] = nil
        outstanding[flight.instance, default: 1] -= 1
        return flight
    }

    /// Ends a request with a response (the instance's, or a failure made by the hub).
    mutating func finish(_ id: RequestID, with response: LIMECommand) -> [Output] {
        guard let flight = endFlight(id) else { return [] }
        var outputs: [Output] = [.cancelTimer(.deadline(id))]
        switch flight.purpose {
        case .call:
            var answer = response
            answer.header.id = flight.caller.id
            answer.header.from = router.node(of: flight.instance) ?? response.header.from
            answer.header.to = flight.callerNode
            answer.method = flight.command.method
            answer.header.metadata = TraceContext.inherited(answer.header.metadata, from: flight.traceContext)
            outputs.append(.send(flight.caller.session, .command(answer)))
            if let subscription = methodSubscriptions[flight.caller], let period = subscription.periodMilliseconds {
                outputs.append(.startTimer(.period(flight.caller), milliseconds: period))
            }
        case .natsReply(let replyTo):
            outputs += publishReply(response, to: replyTo, from: flight.instance, trace: flight.traceContext)
        case .compound(var progress):
            guard response.status == .success else {
                var answer = response
                answer.header.id = flight.caller.id
                answer.header.from = configuration.hubNode
                answer.header.to = flight.callerNode
                answer.method = flight.command.method
                answer.header.metadata = TraceContext.inherited(answer.header.metadata, from: flight.traceContext)
                answer.reason = Reason(
                    code: response.reason?.code ?? ReasonCode.generalError,
                    description:
                        "Compound method '\(progress.name)' failed at \(flight.service).\(flight.method): \(response.reason?.description ?? "failure")"
                )
                outputs.append(.send(flight.caller.session, .command(answer)))
                return outputs
            }
            progress.results["\(flight.service).\(flight.method)"] = response.resource ?? .null
            progress.index += 1
            outputs += compoundStep(progress, caller: flight.caller, callerNode: flight.callerNode, template: flight.command)
        }
        return outputs
    }

    /// Forgets a request whose caller is gone; the instance's late response will be discarded.
    mutating func drop(_ id: RequestID) -> [Output] {
        guard endFlight(id) != nil else { return [] }
        return [.cancelTimer(.deadline(id))]
    }

    /// A request of a session is no longer in flight.
    private mutating func countEnded(_ flight: InFlight) {
        let left = inFlightBySession[flight.caller.session, default: 1] - 1
        inFlightBySession[flight.caller.session] = left > 0 ? left : nil
    }

    func failure(_ flight: InFlight, _ code: Int, _ description: String) -> LIMECommand {
        LIMECommand(
            header: EnvelopeHeader(from: router.node(of: flight.instance)), method: flight.command.method, status: .failure,
            reason: Reason(code: code, description: description))
    }

    /// `delete /requests/ID`: the caller cancels a request, or ends a standing one.
    mutating func cancel(_ command: LIMECommand, callerID: String, from session: SessionID) -> [Output] {
        let caller = CallerKey(session: session, id: callerID)
        var outputs: [Output] = []
        var found = false
        if methodSubscriptions.removeValue(forKey: caller) != nil {
            found = true
            outputs.append(.cancelTimer(.period(caller)))
        }
        if let cancelled = cancelInFlight(caller) {
            found = true
            outputs += cancelled
        }
        // A call of a service on another hub: ended here, and that hub is told.
        if let cancelled = cancelOnCluster(caller) {
            found = true
            outputs += cancelled
        }
        guard found else {
            return outputs + refuse(session, command, ReasonCode.commandResourceNotFound, "No request '\(callerID)' is in flight")
        }
        return outputs + [reply(session, command.success())]
    }

    /// Ends a request in flight to an instance here as cancelled, and tells the instance it can
    /// stop; nil when there is none.
    mutating func cancelInFlight(_ caller: CallerKey) -> [Output]? {
        guard let id = inFlightByCaller[caller], let flight = inFlight[id] else { return nil }
        var outputs = finish(id, with: failure(flight, RelayReasonCode.cancelled, "The caller cancelled the request"))
        // Tell the instance it can stop (one-way; it may ignore it).
        outputs.append(
            .send(
                flight.instance,
                .command(
                    LIMECommand(
                        header: EnvelopeHeader(from: configuration.hubNode), method: .delete, uri: "/requests/\(Self.requestIDString(id))"))
            ))
        return outputs
    }

    /// The hub fired a timer it was asked to start.
    public mutating func timerFired(_ timer: Timer) -> [Output] {
        switch timer {
        case .deadline(let id):
            if let request = subjectRequests[id] {
                return endSubjectRequest(
                    id,
                    with: LIMECommand(
                        method: request.method, status: .failure,
                        reason: Reason(code: RelayReasonCode.timedOut, description: "No reply on the subject in time")))
            }
            guard let flight = inFlight[id] else { return [] }
            statistics.requestsTimedOut += 1
            methodSubscriptions[flight.caller] = nil
            return finish(id, with: failure(flight, RelayReasonCode.timedOut, "No response within \(flight.deadline) ms"))
        case .queue(let name, let timer):
            return queueTimerFired(name, timer)
        case .discovery(let id):
            return discoveryEnded(id)
        case .jetStreamSetUp(let queue):
            return setUpJetStreamQueue(queue)
        case .jetStreamPull(let queue, let pull):
            return jetStreamPullLost(queue, pull)
        case .jetStreamAckWait(let queue, let delivery):
            return jetStreamAckWaitPassed(queue, delivery)
        case .jetStreamStatus(let queue):
            return askForStreamStatus(queue)
        case .period(let caller):
            guard let subscription = methodSubscriptions[caller] else { return [] }
            return dispatchStanding(
                subscription.command, caller: caller, service: subscription.service, method: subscription.method,
                deadline: subscription.deadline)
        }
    }

    /// `observe /services/S/M/events`: an instance of S reports an event of method M; event
    /// subscriptions to it are answered again every N events.
    mutating func methodEvent(service: String, method: String, from session: SessionID) -> [Output] {
        guard services[service]?.instances.contains(session) == true else { return [] }
        announceMethodEvent(service: service, method: method)
        return methodEventCounted(service: service, method: method, elsewhere: false)
    }

    /// Counts an event of a method for the standing requests on it (those whose service is here,
    /// or elsewhere), and calls again each one whose count is reached.
    mutating func methodEventCounted(service: String, method: String, elsewhere: Bool) -> [Output] {
        var outputs: [Output] = []
        for (caller, var subscription) in methodSubscriptions
        where subscription.service == service && subscription.method == method && subscription.elsewhere == elsewhere {
            guard let events = subscription.events else { continue }
            subscription.eventsSeen += 1
            methodSubscriptions[caller] = subscription
            let callInFlight = inFlightByCaller[caller] != nil || subjectRequests.values.contains { $0.caller == caller }
            if subscription.eventsSeen % events == 0, !callInFlight {
                outputs += dispatchStanding(
                    subscription.command, caller: caller, service: service, method: method, deadline: subscription.deadline)
            }
        }
        return outputs
    }
}
