/// The hub's routing core, free of I/O: nodes, subjects, services and the requests in flight.
///
/// Sessions hand it the envelopes of established sessions; it answers with outputs: envelopes to
/// send to sessions, and timers to start or cancel (deadlines, periods). It never reads a clock:
/// the hub starts the timers it asks for and reports them with `timerFired`.
///
/// The operations underneath (subscribe, publish, register, request, respond, cancel) are
/// protocol-neutral; the LIME mapping of `docs/PROTOCOL.md` is in `envelopeReceived`.
public struct HubCore: Sendable {
    public struct Configuration: Sendable {
        public var hubNode: Node
        public var maximumReceiptRoutes: Int
        /// Subscriptions one session may hold.
        public var maximumSubscriptionsPerSession: Int
        /// Requests one session may have in flight.
        public var maximumRequestsPerSession: Int
        /// The deadline of a request that gives none, in milliseconds.
        public var defaultDeadlineMilliseconds: Int
        /// Identities allowed to call `admin` methods.
        public var admins: Set<Identity>

        public init(
            hubNode: Node, maximumReceiptRoutes: Int = 10_000, maximumSubscriptionsPerSession: Int = 10_000,
            maximumRequestsPerSession: Int = 10_000, defaultDeadlineMilliseconds: Int = 30_000, admins: Set<Identity> = []
        ) {
            self.hubNode = hubNode
            self.maximumReceiptRoutes = maximumReceiptRoutes
            self.maximumSubscriptionsPerSession = maximumSubscriptionsPerSession
            self.maximumRequestsPerSession = maximumRequestsPerSession
            self.defaultDeadlineMilliseconds = defaultDeadlineMilliseconds
            self.admins = admins
        }
    }

    /// Timers the core asks the hub to run.
    public enum Timer: Sendable, Hashable {
        /// A request's deadline.
        case deadline(RequestID)
        /// The next call of a period subscription.
        case period(CallerKey)
    }

    public enum Output: Sendable, Equatable {
        case send(SessionID, Envelope)
        case startTimer(Timer, milliseconds: Int)
        case cancelTimer(Timer)
    }

    /// The hub's id of a request it forwarded to an instance.
    public typealias RequestID = UInt64

    /// A caller's request, as the caller names it.
    public struct CallerKey: Sendable, Hashable {
        public var session: SessionID
        public var id: String
    }

    /// Counters for the hub's statistics.
    public struct Statistics: Sendable, Equatable {
        public var published = 0
        public var publicationsDelivered = 0
        public var publicationsUnmatched = 0
        public var requests = 0
        public var requestsTimedOut = 0
        public var lateResponses = 0

        public init() {}
    }

    struct Subscription: Sendable {
        var session: SessionID
        var node: Node
        var filter: String
        var queue: String?
        var echo: Bool
        var token: String
    }

    struct SubscriptionKey: Sendable, Hashable {
        var session: SessionID
        var token: String
    }

    struct ServiceEntry: Sendable {
        var description: ServiceDescription
        var instances: [SessionID]
        var turn = 0
    }

    /// One step of a compound method: a service method, with parameter aliases and preset values.
    struct CompoundStep: Sendable, Hashable {
        var service: String
        var method: String
        /// Caller's parameter name → the method's parameter name.
        var aliases: [String: String]
        var presets: JSONObject
    }

    struct CompoundMethod: Sendable {
        var name: String
        var description: String?
        var steps: [CompoundStep]
        var owner: SessionID
    }

    /// What a forwarded request belongs to.
    enum Purpose: Sendable {
        /// A plain request: the response goes to the caller.
        case call
        /// A step of a compound call.
        case compound(CompoundProgress)
    }

    struct CompoundProgress: Sendable {
        var name: String
        var steps: [CompoundStep]
        var index: Int
        var params: JSONObject
        var results: JSONObject
    }

    struct InFlight: Sendable {
        var caller: CallerKey
        var callerNode: Node
        var instance: SessionID
        var service: String
        var method: String
        var command: LIMECommand
        var calledAgain: Bool
        var purpose: Purpose
        var deadline: Int
    }

    /// A caller's standing request: answered again every period or every N events.
    struct MethodSubscription: Sendable {
        var callerNode: Node
        var service: String
        var method: String
        var command: LIMECommand
        var periodMilliseconds: Int?
        var events: Int?
        var eventsSeen = 0
        var deadline: Int
    }

    public let configuration: Configuration
    public private(set) var router: NodeRouter
    public private(set) var statistics = Statistics()
    var subjects = SubjectIndex<SubscriptionKey>()
    var subscriptions: [SubscriptionKey: Subscription] = [:]
    var subscriptionCounts: [SessionID: Int] = [:]
    var queueTurns: [String: Int] = [:]
    var services: [String: ServiceEntry] = [:]
    var compounds: [String: CompoundMethod] = [:]
    var inFlight: [RequestID: InFlight] = [:]
    var inFlightByCaller: [CallerKey: RequestID] = [:]
    var outstanding: [SessionID: Int] = [:]
    var methodSubscriptions: [CallerKey: MethodSubscription] = [:]
    var nextRequestID: RequestID = 1
    /// Requests that ended (by timeout, cancellation...) and the instance they were sent to, so a
    /// late response from that instance is recognised and discarded rather than routed.
    var endedRequests = RecentMemory<RequestID, SessionID>(capacity: 10_000)

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.router = NodeRouter(
            configuration: .init(hubNode: configuration.hubNode, maximumReceiptRoutes: configuration.maximumReceiptRoutes))
    }

    // MARK: - Sessions

    /// Registers an established session; returns the session it replaced, which the hub must end.
    public mutating func register(_ session: SessionID, node: Node) -> SessionID? {
        router.register(session, node: node)
    }

    /// Forgets everything of a session that closed: its subscriptions, service instances, compound
    /// methods, its own requests; callers of its requests in flight get failures at once.
    public mutating func sessionClosed(_ session: SessionID) -> [Output] {
        var outputs: [Output] = []
        router.unregister(session)
        for (key, subscription) in subscriptions where key.session == session {
            subjects.remove(key, filter: subscription.filter)
            subscriptions[key] = nil
        }
        subscriptionCounts[session] = nil
        for name in Array(services.keys) {
            services[name]?.instances.removeAll { $0 == session }
            if services[name]?.instances.isEmpty == true { services[name] = nil }
        }
        for (name, compound) in compounds where compound.owner == session { compounds[name] = nil }
        for (id, flight) in inFlight {
            if flight.instance == session {
                // Try another instance only for nothing: the request may have had effects; the caller decides.
                outputs += finish(
                    id,
                    with: failure(
                        flight, RelayReasonCode.instanceLost, "The instance of '\(flight.service)' handling the request disconnected"))
            } else if flight.caller.session == session {
                outputs += drop(id)
            }
        }
        for key in methodSubscriptions.keys where key.session == session {
            methodSubscriptions[key] = nil
            outputs.append(.cancelTimer(.period(key)))
        }
        outstanding[session] = nil
        return outputs
    }

    // MARK: - Envelopes

    /// Handles an envelope of an established session (its `from` already set to the session's node).
    public mutating func envelopeReceived(_ envelope: Envelope, from session: SessionID) -> [Output] {
        if case .command(let command) = envelope {
            if command.isResponse, let id = command.header.id.flatMap(Self.requestID) {
                if inFlight[id]?.instance == session { return responseReceived(command, request: id) }
                if endedRequests[id] == session {
                    statistics.lateResponses += 1
                    return []
                }
            }
            if !command.isResponse, isHub(command.header.to), let uri = command.uri,
                let outputs = hubCommand(command, uri: uri, from: session)
            {
                return outputs
            }
        }
        let routing = router.route(envelope, from: session)
        var outputs: [Output] = []
        if let delivery = routing.delivery {
            outputs.reserveCapacity(routing.recipients.count + 1)
            for recipient in routing.recipients { outputs.append(.send(recipient, delivery)) }
        }
        if let reply = routing.reply { outputs.append(.send(session, reply)) }
        return outputs
    }

    private func isHub(_ node: Node?) -> Bool {
        guard let node else { return true }
        let hub = configuration.hubNode
        if node.identity == hub.identity { return node.instance == nil || node.instance?.lowercased() == hub.instance?.lowercased() }
        return node.name == nil && node.instance == nil && node.domain.lowercased() == hub.domain.lowercased()
    }

    /// The hub's resources. Returns nil for what the node router answers (ping, unknown resources).
    private mutating func hubCommand(_ command: LIMECommand, uri: String, from session: SessionID) -> [Output]? {
        let (path, query) = Self.split(uri)
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map { Self.percentDecoded(String($0)) }
        guard let root = segments.first else { return nil }
        let rest = Array(segments.dropFirst())
        switch (root, command.method, rest.count) {
        case ("topics", .subscribe, 1): return subscribe(command, filter: rest[0], query: query, from: session)
        case ("topics", .unsubscribe, 1): return unsubscribe(command, filter: rest[0], query: query, from: session)
        case ("topics", .set, 1), ("topics", .observe, 1): return publish(command, subject: rest[0], from: session)
        case ("services", .get, 0):
            return [reply(session, command.success(type: "application/json", resource: .object(["services": .array(serviceList)])))]
        case ("services", .get, 1) where services[rest[0].lowercased()] == nil && rest[0] != "compound":
            return [
                reply(
                    session,
                    command.failure(Reason(code: ReasonCode.commandResourceNotFound, description: "No service '\(rest[0])' is registered")))
            ]
        case ("services", .get, 1):
            return [reply(session, command.success(type: "application/json", resource: .object(serviceJSON(rest[0].lowercased()))))]
        case ("services", .set, 1): return registerService(command, name: rest[0], from: session)
        case ("services", .delete, 1): return unregisterService(command, name: rest[0], from: session)
        case ("services", .observe, 3) where rest[2] == "events":
            return methodEvent(service: rest[0].lowercased(), method: rest[1], from: session)
        case ("services", _, 2): return request(command, service: rest[0].lowercased(), method: rest[1], from: session)
        case ("requests", .delete, 1): return cancel(command, callerID: rest[0], from: session)
        case ("compound", .get, 0):
            return [reply(session, command.success(type: "application/json", resource: .object(["compound": .array(compoundList)])))]
        case ("compound", .set, 1): return registerCompound(command, name: rest[0], from: session)
        case ("compound", .delete, 1): return unregisterCompound(command, name: rest[0], from: session)
        case ("compound", .get, 1): return callCompound(command, name: rest[0], from: session)
        default: return nil
        }
    }

    // MARK: - Subjects

    private mutating func subscribe(_ command: LIMECommand, filter: String, query: [String: String], from session: SessionID) -> [Output] {
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

    private mutating func unsubscribe(_ command: LIMECommand, filter: String, query: [String: String], from session: SessionID) -> [Output]
    {
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
    private mutating func publish(_ command: LIMECommand, subject: String, from session: SessionID) -> [Output] {
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

    private func delivery(_ subscription: Subscription, publisher: Node?, type: MediaType, content: JSONValue, metadata: [String: String])
        -> Envelope
    {
        var metadata = metadata
        metadata["#subscription"] = subscription.token
        return .message(
            LIMEMessage(header: EnvelopeHeader(from: publisher, to: subscription.node, metadata: metadata), type: type, content: content))
    }

    // MARK: - Services

    private var serviceList: [JSONValue] {
        services.keys.sorted().map { .object(serviceJSON($0)) }
    }

    private func serviceJSON(_ name: String) -> JSONObject {
        if name == "compound" { return ["compound": .array(compoundList)] }
        guard let entry = services[name] else { return [:] }
        var object = entry.description.json
        object["instances"] = .number(JSONNumber(entry.instances.count))
        return object
    }

    private var compoundList: [JSONValue] {
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

    private mutating func registerService(_ command: LIMECommand, name: String, from session: SessionID) -> [Output] {
        guard Self.isValidName(name), name.lowercased() != "compound" else {
            return [
                reply(
                    session,
                    command.failure(
                        Reason(
                            code: ReasonCode.validationInvalidResource,
                            description: "'\(name)' is not a valid service name (letters, digits, '-', '_', '.')")))
            ]
        }
        let description: ServiceDescription
        do {
            description = try ServiceDescription(name: name, json: command.resource)
        } catch {
            return [reply(session, command.failure(error))]
        }
        let key = name.lowercased()
        if var entry = services[key] {
            guard entry.description.methods == description.methods else {
                return [
                    reply(
                        session,
                        command.failure(
                            Reason(
                                code: RelayReasonCode.registrationConflict,
                                description:
                                    "Service '\(name)' is already registered with other methods; instances of one service must describe the same methods"
                            )))
                ]
            }
            if !entry.instances.contains(session) { entry.instances.append(session) }
            services[key] = entry
        } else {
            services[key] = ServiceEntry(description: description, instances: [session])
        }
        return [reply(session, command.success())]
    }

    private mutating func unregisterService(_ command: LIMECommand, name: String, from session: SessionID) -> [Output] {
        let key = name.lowercased()
        guard var entry = services[key], entry.instances.contains(session) else {
            return [
                reply(
                    session,
                    command.failure(Reason(code: ReasonCode.commandResourceNotFound, description: "This session does not serve '\(name)'")))
            ]
        }
        entry.instances.removeAll { $0 == session }
        services[key] = entry.instances.isEmpty ? nil : entry
        return [reply(session, command.success())]
    }

    /// Picks the instance with the fewest requests outstanding; ties go round in turn.
    private mutating func pickInstance(_ service: String) -> SessionID? {
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

    private func checkCall(_ command: LIMECommand, service: String, method: String, from session: SessionID) -> Reason? {
        guard let entry = services[service] else {
            return Reason(code: ReasonCode.routingDestinationNotFound, description: "No instance of service '\(service)' is connected")
        }
        guard let description = entry.description.method(method) else {
            return Reason(code: ReasonCode.commandMethodNotSupported, description: "Service '\(service)' has no method '\(method)'")
        }
        let callerIdentity = router.node(of: session)?.identity
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
            if callerIdentity == nil || !configuration.admins.contains(callerIdentity!) {
                return Reason(code: ReasonCode.commandNotAllowed, description: "Method '\(method)' of '\(service)' is for administrators")
            }
        }
        if let error = description.validationError(command.resource) {
            return Reason(code: ReasonCode.commandInvalidArgument, description: error)
        }
        return nil
    }

    private mutating func request(_ command: LIMECommand, service: String, method: String, from session: SessionID) -> [Output] {
        guard let callerID = command.header.id else {
            return []  // a request nobody waits for cannot be answered; LIME requests carry an id
        }
        if let reason = checkCall(command, service: service, method: method, from: session) {
            return [reply(session, command.failure(reason))]
        }
        let caller = CallerKey(session: session, id: callerID)
        let deadline =
            command.header.metadata?["#deadline"].flatMap { Int($0) }.map { max(1, $0) } ?? configuration.defaultDeadlineMilliseconds
        let description = services[service]!.description.method(method)!
        // A standing request: answered now, then every period or every N events.
        let period = command.header.metadata?["#period"].flatMap { Double($0) }
        let events = command.header.metadata?["#events"].flatMap { Int($0) }
        if period != nil || events != nil {
            if let period {
                guard let minimum = description.minimumPeriod, period >= minimum, period > 0 else {
                    return [
                        reply(
                            session,
                            command.failure(
                                Reason(
                                    code: ReasonCode.commandNotAllowed,
                                    description:
                                        "A period of \(JSONNumber(period)) s is below the minimum of '\(method)' (\(description.minimumPeriod.map { "\(JSONNumber($0)) s" } ?? "no period subscriptions"))"
                                )))
                    ]
                }
            }
            if let events {
                guard let minimum = description.minimumEvents, events >= minimum, events > 0 else {
                    return [
                        reply(
                            session,
                            command.failure(
                                Reason(
                                    code: ReasonCode.commandNotAllowed,
                                    description:
                                        "\(events) events is below the minimum of '\(method)' (\(description.minimumEvents.map { "\($0) events" } ?? "no event subscriptions"))"
                                )))
                    ]
                }
            }
            methodSubscriptions[caller] = MethodSubscription(
                callerNode: command.header.from ?? configuration.hubNode, service: service, method: method, command: command,
                periodMilliseconds: period.map { Int($0 * 1000) }, events: events, deadline: deadline)
        }
        return dispatchStanding(command, caller: caller, service: service, method: method, deadline: deadline)
    }

    /// Dispatches a call; a standing request whose call could not even be sent ends there.
    private mutating func dispatchStanding(_ command: LIMECommand, caller: CallerKey, service: String, method: String, deadline: Int)
        -> [Output]
    {
        let outputs = dispatch(command, caller: caller, service: service, method: method, purpose: .call, deadline: deadline)
        if !outputs.contains(where: { if case .startTimer(.deadline, _) = $0 { return true } else { return false } }) {
            methodSubscriptions[caller] = nil
        }
        return outputs
    }

    /// Sends a request to an instance and starts its deadline.
    private mutating func dispatch(
        _ command: LIMECommand, caller: CallerKey, service: String, method: String, purpose: Purpose, deadline: Int
    ) -> [Output] {
        guard inFlightByCaller[caller] == nil else {
            return [
                reply(
                    caller.session,
                    command.failure(
                        Reason(code: ReasonCode.validationError, description: "A request with id '\(caller.id)' is already in flight")))
            ]
        }
        let perSession = inFlight.values.lazy.filter { $0.caller.session == caller.session }.count
        guard perSession < configuration.maximumRequestsPerSession else {
            return [
                reply(
                    caller.session,
                    command.failure(
                        Reason(
                            code: RelayReasonCode.limitReached,
                            description: "This session has the maximum of \(configuration.maximumRequestsPerSession) requests in flight")))
            ]
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
        let flight = InFlight(
            caller: caller, callerNode: command.header.from ?? configuration.hubNode, instance: instance, service: service, method: method,
            command: command, calledAgain: false, purpose: purpose, deadline: deadline)
        inFlight[id] = flight
        inFlightByCaller[caller] = id
        outstanding[instance, default: 0] += 1
        return [.send(instance, forwarded(flight, id: id)), .startTimer(.deadline(id), milliseconds: deadline)]
    }

    private func forwarded(_ flight: InFlight, id: RequestID) -> Envelope {
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

    private mutating func responseReceived(_ response: LIMECommand, request id: RequestID) -> [Output] {
        guard var flight = inFlight[id] else { return [] }
        if response.status == .failure, response.reason?.code == RelayReasonCode.callAgain {
            if flight.calledAgain {
                return finish(id, with: failure(flight, RelayReasonCode.callAgainRefused, "The instance asked to call again a second time"))
            }
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

    /// Ends a request with a response (the instance's, or a failure made by the hub).
    private mutating func finish(_ id: RequestID, with response: LIMECommand) -> [Output] {
        guard let flight = inFlight.removeValue(forKey: id) else { return [] }
        endedRequests.remember(flight.instance, for: id)
        inFlightByCaller[flight.caller] = nil
        outstanding[flight.instance, default: 1] -= 1
        var outputs: [Output] = [.cancelTimer(.deadline(id))]
        switch flight.purpose {
        case .call:
            var answer = response
            answer.header.id = flight.caller.id
            answer.header.from = router.node(of: flight.instance) ?? response.header.from
            answer.header.to = flight.callerNode
            answer.method = flight.command.method
            outputs.append(.send(flight.caller.session, .command(answer)))
            if let subscription = methodSubscriptions[flight.caller], let period = subscription.periodMilliseconds {
                outputs.append(.startTimer(.period(flight.caller), milliseconds: period))
            }
        case .compound(var progress):
            guard response.status == .success else {
                var answer = response
                answer.header.id = flight.caller.id
                answer.header.from = configuration.hubNode
                answer.header.to = flight.callerNode
                answer.method = flight.command.method
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
    private mutating func drop(_ id: RequestID) -> [Output] {
        guard let flight = inFlight.removeValue(forKey: id) else { return [] }
        endedRequests.remember(flight.instance, for: id)
        inFlightByCaller[flight.caller] = nil
        outstanding[flight.instance, default: 1] -= 1
        return [.cancelTimer(.deadline(id))]
    }

    private func failure(_ flight: InFlight, _ code: Int, _ description: String) -> LIMECommand {
        LIMECommand(
            header: EnvelopeHeader(from: router.node(of: flight.instance)), method: flight.command.method, status: .failure,
            reason: Reason(code: code, description: description))
    }

    /// `delete /requests/ID`: the caller cancels a request, or ends a standing one.
    private mutating func cancel(_ command: LIMECommand, callerID: String, from session: SessionID) -> [Output] {
        let caller = CallerKey(session: session, id: callerID)
        var outputs: [Output] = []
        var found = false
        if methodSubscriptions.removeValue(forKey: caller) != nil {
            found = true
            outputs.append(.cancelTimer(.period(caller)))
        }
        if let id = inFlightByCaller[caller], let flight = inFlight[id] {
            found = true
            outputs += finish(id, with: failure(flight, RelayReasonCode.cancelled, "The caller cancelled the request"))
            // Tell the instance it can stop (one-way; it may ignore it).
            outputs.append(
                .send(
                    flight.instance,
                    .command(
                        LIMECommand(
                            header: EnvelopeHeader(from: configuration.hubNode), method: .delete,
                            uri: "/requests/\(Self.requestIDString(id))"))))
        }
        guard found else {
            return outputs + [
                reply(
                    session,
                    command.failure(Reason(code: ReasonCode.commandResourceNotFound, description: "No request '\(callerID)' is in flight")))
            ]
        }
        return outputs + [reply(session, command.success())]
    }

    /// The hub fired a timer it was asked to start.
    public mutating func timerFired(_ timer: Timer) -> [Output] {
        switch timer {
        case .deadline(let id):
            guard let flight = inFlight[id] else { return [] }
            statistics.requestsTimedOut += 1
            methodSubscriptions[flight.caller] = nil
            return finish(id, with: failure(flight, RelayReasonCode.timedOut, "No response within \(flight.deadline) ms"))
        case .period(let caller):
            guard let subscription = methodSubscriptions[caller] else { return [] }
            return dispatchStanding(
                subscription.command, caller: caller, service: subscription.service, method: subscription.method,
                deadline: subscription.deadline)
        }
    }

    /// `observe /services/S/M/events`: an instance of S reports an event of method M; event
    /// subscriptions to it are answered again every N events.
    private mutating func methodEvent(service: String, method: String, from session: SessionID) -> [Output] {
        guard services[service]?.instances.contains(session) == true else { return [] }
        var outputs: [Output] = []
        for (caller, var subscription) in methodSubscriptions where subscription.service == service && subscription.method == method {
            guard let events = subscription.events else { continue }
            subscription.eventsSeen += 1
            methodSubscriptions[caller] = subscription
            if subscription.eventsSeen % events == 0, inFlightByCaller[caller] == nil {
                outputs += dispatchStanding(
                    subscription.command, caller: caller, service: service, method: method, deadline: subscription.deadline)
            }
        }
        return outputs
    }

    // MARK: - Compound methods

    private mutating func registerCompound(_ command: LIMECommand, name: String, from session: SessionID) -> [Output] {
        func invalid(_ text: String) -> [Output] {
            [
                reply(
                    session,
                    command.failure(Reason(code: ReasonCode.commandInvalidArgument, description: "Invalid compound method: \(text)")))
            ]
        }
        guard Self.isValidName(name) else { return invalid("'\(name)' is not a valid name") }
        guard let object = command.resource?.objectValue, let list = object["methods"]?.arrayValue, !list.isEmpty else {
            return invalid("'methods' must be a non-empty array")
        }
        var steps: [CompoundStep] = []
        for value in list {
            guard let step = value.objectValue, let service = step["service"]?.stringValue?.lowercased(),
                let method = step["method"]?.stringValue
            else {
                return invalid("every step needs 'service' and 'method'")
            }
            guard let description = services[service]?.description.method(method) else {
                return invalid("'\(service).\(method)' is not a registered method")
            }
            var aliases: [String: String] = [:]
            for member in step["aliases"]?.objectValue ?? [:] {
                guard let target = member.value.stringValue, description.parameters.contains(where: { $0.name == target }) else {
                    return invalid("alias '\(member.key)' must name a parameter of '\(service).\(method)'")
                }
                aliases[member.key] = target
            }
            steps.append(CompoundStep(service: service, method: method, aliases: aliases, presets: step["presets"]?.objectValue ?? [:]))
        }
        if let existing = compounds[name.lowercased()], existing.owner != session {
            return [
                reply(
                    session,
                    command.failure(
                        Reason(
                            code: RelayReasonCode.registrationConflict,
                            description: "Compound method '\(name)' is registered by another node")))
            ]
        }
        compounds[name.lowercased()] = CompoundMethod(
            name: name, description: object["description"]?.stringValue, steps: steps, owner: session)
        return [reply(session, command.success())]
    }

    private mutating func unregisterCompound(_ command: LIMECommand, name: String, from session: SessionID) -> [Output] {
        guard let existing = compounds[name.lowercased()], existing.owner == session else {
            return [
                reply(
                    session,
                    command.failure(
                        Reason(code: ReasonCode.commandResourceNotFound, description: "This node registered no compound method '\(name)'")))
            ]
        }
        compounds[name.lowercased()] = nil
        return [reply(session, command.success())]
    }

    private mutating func callCompound(_ command: LIMECommand, name: String, from session: SessionID) -> [Output] {
        guard let callerID = command.header.id else { return [] }
        guard let compound = compounds[name.lowercased()] else {
            return [
                reply(
                    session, command.failure(Reason(code: ReasonCode.commandResourceNotFound, description: "No compound method '\(name)'")))
            ]
        }
        guard command.resource == nil || command.resource?.objectValue != nil else {
            return [
                reply(
                    session,
                    command.failure(Reason(code: ReasonCode.commandInvalidArgument, description: "Parameters must be a JSON object")))
            ]
        }
        let progress = CompoundProgress(
            name: compound.name, steps: compound.steps, index: 0, params: command.resource?.objectValue ?? [:], results: [:])
        return compoundStep(
            progress, caller: CallerKey(session: session, id: callerID), callerNode: command.header.from ?? configuration.hubNode,
            template: command)
    }

    /// Calls the next step of a compound method, or answers the caller when all are done.
    private mutating func compoundStep(_ progress: CompoundProgress, caller: CallerKey, callerNode: Node, template: LIMECommand) -> [Output]
    {
        guard progress.index < progress.steps.count else {
            var answer = LIMECommand(
                header: EnvelopeHeader(id: caller.id, from: configuration.hubNode, to: callerNode), method: template.method,
                type: "application/json", resource: .object(progress.results), status: .success)
            answer.header.metadata = nil
            return [.send(caller.session, .command(answer))]
        }
        let step = progress.steps[progress.index]
        var params = step.presets
        for member in progress.params {
            params[step.aliases[member.key] ?? member.key] = member.value
        }
        // Only what the method takes: a compound's parameters may serve several steps.
        if let method = services[step.service]?.description.method(step.method), !method.acceptsAnyParameters {
            let accepted = Set(method.parameters.map(\.name))
            params = JSONObject(params.members.filter { accepted.contains($0.key) })
        }
        var command = template
        command.resource = .object(params)
        command.header.from = callerNode
        if let reason = checkCall(command, service: step.service, method: step.method, from: caller.session) {
            var failed = template.failure(
                Reason(
                    code: reason.code,
                    description: "Compound method '\(progress.name)' failed at \(step.service).\(step.method): \(reason.description)"))
            failed.header.from = configuration.hubNode
            failed.header.to = callerNode
            return [.send(caller.session, .command(failed))]
        }
        let deadline = template.header.metadata?["#deadline"].flatMap { Int($0) } ?? configuration.defaultDeadlineMilliseconds
        return dispatch(
            command, caller: caller, service: step.service, method: step.method, purpose: .compound(progress), deadline: deadline)
    }

    // MARK: - Helpers

    private func reply(_ session: SessionID, _ response: LIMECommand) -> Output {
        var response = response
        response.header.from = configuration.hubNode
        return .send(session, .command(response))
    }

    private func confirmation(_ command: LIMECommand, resource: JSONObject) -> Envelope {
        var response = command.success(type: "application/json", resource: .object(resource))
        response.header.from = configuration.hubNode
        return .command(response)
    }

    static func requestIDString(_ id: RequestID) -> String { "relay-\(id)" }

    static func requestID(_ text: String) -> RequestID? {
        guard text.hasPrefix("relay-") else { return nil }
        return RequestID(text.dropFirst(6))
    }

    static func isValidName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 128
            && name.unicodeScalars.allSatisfy {
                $0.properties.isAlphabetic || ("0"..."9").contains($0) || "-_.".unicodeScalars.contains($0)
            }
    }

    /// Splits `/path?x=1&y=2` into the path and its query parameters.
    static func split(_ uri: String) -> (String, [String: String]) {
        var path = Substring(uri)
        if path.hasPrefix("lime://"), let slash = path.dropFirst(7).firstIndex(of: "/") { path = path[slash...] }
        guard let mark = path.firstIndex(of: "?") else { return (String(path), [:]) }
        var query: [String: String] = [:]
        for pair in path[path.index(after: mark)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            query[percentDecoded(String(parts[0]))] = parts.count > 1 ? percentDecoded(String(parts[1])) : ""
        }
        return (String(path[..<mark]), query)
    }

    static func percentDecoded(_ text: String) -> String {
        guard text.contains("%") else { return text }
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%"), let high = iterator.next(), let low = iterator.next(),
                let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16)
            {
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
