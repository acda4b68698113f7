/// `get /services` on a cluster: every hub's services, with their instances summed.
///
/// The hub asks the others on `$RELAY.SERVICES` (each clustered hub holds it), adds what answers
/// within the discovery window to its own list, and answers the caller when the window ends. A
/// hub that does not answer in time is left out of that answer.
struct ClusterDiscovery: Sendable {
    var caller: SessionID
    var command: LIMECommand
    /// One service's name (`get /services/NAME`), or nil for the list.
    var service: String?
    /// Services by name, instances summed.
    var found: [String: JSONObject]
}

extension ClusterMembership {
    /// Where hubs ask each other for their services.
    public static let servicesSubject = "$RELAY.SERVICES"
    var discoveryPrefix: String { inboxPrefix + "d." }
}

extension HubCore {
    /// Starts a discovery for `get /services` (`name` nil) or `get /services/NAME`.
    mutating func discoverServices(_ command: LIMECommand, name: String?, from session: SessionID) -> [Output] {
        let id = nextRequestID
        nextRequestID += 1
        var discovery = ClusterDiscovery(caller: session, command: command, service: name, found: [:])
        merge(serviceList, into: &discovery)
        cluster!.discoveries[id] = discovery
        cluster!.pending.append(
            .publish(
                PublishedMessage(
                    subject: ClusterMembership.servicesSubject, replyTo: cluster!.discoveryPrefix + String(id), body: .bytes([])))
        )
        return [.startTimer(.discovery(id), milliseconds: cluster!.discoveryWindowMilliseconds)]
    }

    /// Another hub's discovery asks for this hub's services, or one answers this hub's.
    mutating func discoveryMessageReceived(_ message: PublishedMessage) -> [Output]? {
        if message.subject == ClusterMembership.servicesSubject {
            if let replyTo = message.replyTo {
                cluster!.pending.append(
                    .publish(PublishedMessage(subject: replyTo, type: .applicationJSON, body: .json(["services": .array(serviceList)]))))
            }
            return []
        }
        guard message.subject.hasPrefix(cluster!.discoveryPrefix) else { return nil }
        guard let id = RequestID(message.subject.dropFirst(cluster!.discoveryPrefix.count)), var discovery = cluster!.discoveries[id],
            let answer = try? JSONParser.parse(message.payloadBytes), let list = answer["services"]?.arrayValue
        else { return [] }
        merge(list, into: &discovery)
        cluster!.discoveries[id] = discovery
        return []
    }

    /// The window ended: the caller gets what was found.
    mutating func discoveryEnded(_ id: RequestID) -> [Output] {
        guard let discovery = cluster?.discoveries.removeValue(forKey: id) else { return [] }
        let command = discovery.command
        guard let name = discovery.service else {
            let list = discovery.found.keys.sorted().map { JSONValue.object(discovery.found[$0]!) }
            return [reply(discovery.caller, command.success(type: "application/json", resource: .object(["services": .array(list)])))]
        }
        guard let service = discovery.found[name] else {
            return refuse(discovery.caller, command, ReasonCode.commandResourceNotFound, "No service '\(name)' is registered")
        }
        return [reply(discovery.caller, command.success(type: "application/json", resource: .object(service)))]
    }

    private func merge(_ list: [JSONValue], into discovery: inout ClusterDiscovery) {
        for case .object(let service) in list {
            guard let name = service["name"]?.stringValue?.lowercased() else { continue }
            if discovery.service != nil && discovery.service != name { continue }
            if var known = discovery.found[name] {
                let instances = (known["instances"]?.intValue ?? 0) + (service["instances"]?.intValue ?? 0)
                known["instances"] = .number(JSONNumber(instances))
                discovery.found[name] = known
            } else {
                discovery.found[name] = service
            }
        }
    }
}

extension ClusterMembership {
    /// Where a hub tells the others that a call it forwarded was cancelled: `{"inbox": …}`.
    public static let cancelSubject = "$RELAY.CANCEL"
}

extension HubCore {
    /// A caller cancels its call of a service on another hub: the call ends here as cancelled,
    /// and every hub is told, so that the one serving it cancels it there. Nil when the caller
    /// has no such call.
    mutating func cancelOnCluster(_ caller: CallerKey) -> [Output]? {
        guard cluster != nil, let (id, request) = subjectRequests.first(where: { $0.value.caller == caller }) else { return nil }
        cluster!.pending.append(
            .publish(
                PublishedMessage(
                    subject: ClusterMembership.cancelSubject, type: .applicationJSON, body: .json(["inbox": .string(request.inbox)]))))
        var outputs = endSubjectRequest(
            id,
            with: LIMECommand(
                method: request.method, status: .failure,
                reason: Reason(code: RelayReasonCode.cancelled, description: "The caller cancelled the request")))
        outputs.append(.cancelTimer(.deadline(id)))
        return outputs
    }

    /// Another hub's caller cancelled a call this hub serves (its reply subject names it).
    mutating func clusterCancelReceived(_ message: PublishedMessage) -> [Output]? {
        guard message.subject == ClusterMembership.cancelSubject else { return nil }
        guard let inbox = (try? JSONParser.parse(message.payloadBytes))?["inbox"]?.stringValue else { return [] }
        return cancelInFlight(CallerKey(session: Self.clusterSession, id: inbox)) ?? []
    }
}

extension ClusterMembership {
    /// Where a hub tells the others an instance reported an event of a method:
    /// `{"service": …, "method": …}` (standing requests on other hubs count it).
    public static let eventsSubject = "$RELAY.EVENTS"
}

extension HubCore {
    /// An instance here reported an event of a method: the other hubs are told.
    mutating func announceMethodEvent(service: String, method: String) {
        guard cluster != nil else { return }
        cluster!.pending.append(
            .publish(
                PublishedMessage(
                    subject: ClusterMembership.eventsSubject, type: .applicationJSON,
                    body: .json(["service": .string(service), "method": .string(method)]))))
    }

    /// Another hub's instance reported an event: standing requests here on that method count it.
    mutating func clusterMethodEventReceived(_ message: PublishedMessage) -> [Output]? {
        guard message.subject == ClusterMembership.eventsSubject else { return nil }
        guard let event = try? JSONParser.parse(message.payloadBytes), let service = event["service"]?.stringValue,
            let method = event["method"]?.stringValue
        else { return [] }
        return methodEventCounted(service: service, method: method, elsewhere: true)
    }
}
