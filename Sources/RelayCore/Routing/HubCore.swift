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
        /// Subscriptions all sessions of one identity may hold together.
        public var maximumSubscriptionsPerIdentity: Int
        /// Requests one session may have in flight.
        public var maximumRequestsPerSession: Int
        /// Requests from the cluster (every other hub's callers, and NATS clients of the cluster)
        /// that may be in flight here together: they share one session, but are not one client.
        public var maximumRequestsFromCluster: Int
        /// The deadline of a request that gives none, in milliseconds.
        public var defaultDeadlineMilliseconds: Int
        /// Identities allowed to call `admin` methods.
        public var admins: Set<Identity>
        /// The bound on deliveries held for a slow LIME subscriber, unless it asks otherwise.
        public var defaultDeliveryLimit: DeliveryLimit
        /// When set, a message that comes without a valid W3C `traceparent` gets a new one, with
        /// ids from this generator (see `TraceContext`); when nil, trace context is only carried.
        public var traceIdentifiers: TraceIdentifierGenerator?

        public init(
            hubNode: Node, maximumReceiptRoutes: Int = 10_000, maximumSubscriptionsPerSession: Int = 10_000,
            maximumRequestsPerSession: Int = 10_000, defaultDeadlineMilliseconds: Int = 30_000, admins: Set<Identity> = [],
            defaultDeliveryLimit: DeliveryLimit = DeliveryLimit(maximumHeld: 10_000, policy: .dropNewest),
            maximumSubscriptionsPerIdentity: Int = 100_000, traceIdentifiers: TraceIdentifierGenerator? = nil,
            maximumRequestsFromCluster: Int = 100_000
        ) {
            self.maximumRequestsFromCluster = maximumRequestsFromCluster
            self.traceIdentifiers = traceIdentifiers
            self.maximumSubscriptionsPerIdentity = maximumSubscriptionsPerIdentity
            self.defaultDeliveryLimit = defaultDeliveryLimit
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
        /// A durable queue's ack wait or nak delay.
        case queue(String, DeliveryMachine<QueuedMessage>.Timer)
        /// The end of a cluster discovery's window (`get /services` on a cluster).
        case discovery(RequestID)
        /// Ask JetStream again for a queue's stream and consumer (it refused, or was not ready).
        case jetStreamSetUp(String)
        /// A pull JetStream should have ended by now (it ends one when it expires): taken as lost.
        case jetStreamPull(String, Int)
        /// A JetStream delivery's ack wait: JetStream will deliver it again, so it no longer takes
        /// its consumer's credit here.
        case jetStreamAckWait(String, UInt64)
        /// Time to ask JetStream for a queue's stream state again.
        case jetStreamStatus(String)
    }

    public enum Output: Sendable, Equatable {
        // The large cases are boxed: outputs are put in arrays by the thousand (a fan-out's
        // deliveries), and each takes as much room as the largest case: 304 bytes unboxed, 48 boxed.
        indirect case send(SessionID, Envelope)
        /// A publication for one of a session's subscriptions (named by `token`); the session's
        /// dialect renders it. `limit` bounds how many may wait for a slow subscriber.
        case deliver(SessionID, token: String, PublishedMessage, limit: DeliveryLimit?)
        case startTimer(Timer, milliseconds: Int)
        case cancelTimer(Timer)
        /// Store the copies of a publication kept by durable queues; once they are on disk, report
        /// each with `persisted` and carry out `then` (a publisher's confirmation).
        indirect case persist([QueueCopy], then: [Output])
        /// Forget a stored message (acknowledged, dead-lettered or dropped).
        case unpersist(queue: String, sequence: Int64)
        /// Record a stored message's delivery count.
        case recordDeliveries(queue: String, sequence: Int64, count: Int)
        /// Store a queue's configuration, or forget the queue and its messages.
        indirect case saveQueue(QueueConfiguration)
        case deleteQueue(String)
        /// Tell a session that something it sent without asking for an answer was refused (a
        /// publication or a message its permissions do not allow); its dialect says it its way.
        indirect case refused(SessionID, Refusal)
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
        /// Operations refused by a session's permissions.
        public var permissionViolations = 0
        /// Subscriptions refused by the per-session or per-identity bound.
        public var subscriptionsRefusedByLimits = 0

        public init() {}
    }

    struct Subscription: Sendable {
        /// A slot of `subscriptionSlots` that is free holds `vacant`.
        static let vacant = Subscription(session: 0, node: nil, filter: "", queue: nil, echo: false, token: "", isLive: false)

        var session: SessionID
        var node: Node?
        var filter: String
        var queue: String?
        var echo: Bool
        var token: String
        var delivered = 0
        /// Ends the subscription after this many deliveries (NATS auto-unsubscribe).
        var limit: Int?
        /// How many deliveries may wait for a slow subscriber, and what happens beyond.
        var overflow: DeliveryLimit?
        var isLive = true
        /// The subscriber's permissions deny some subjects within the filter: each delivery's
        /// subject is checked (`Permissions.allowsDelivery`).
        var checksDelivery = false
    }

    struct SubscriptionKey: Sendable, Hashable {
        var session: SessionID
        var token: String
    }

    struct ServiceEntry: Sendable {
        var description: ServiceDescription
        var instances: [SessionID]
        var turn = 0
        /// Requests go through a durable queue (see HubCore+DurableServices).
        var durable = false
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
        /// A NATS request: the response is published on the caller's reply subject.
        case natsReply(String)
    }

    /// A LIME request to a subject, waiting for a reply on the hub's inbox subject.
    struct SubjectRequest: Sendable {
        var caller: CallerKey
        var callerNode: Node?
        var method: CommandMethod
        var inbox: String
        /// The request's trace context, for its answer.
        var traceContext: [String: String]
        /// One call of a standing request whose service is on another hub.
        var standing = false
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

        /// The request's trace context, which its response gets when it carries none.
        var traceContext: [String: String] { TraceContext.carried(in: command.header.metadata) }
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
        /// The service is on another hub: each call goes through the cluster.
        var elsewhere = false
    }

    public internal(set) var configuration: Configuration
    public internal(set) var router: NodeRouter
    public internal(set) var statistics = Statistics()
    /// Subscriptions live in slots; the subject index holds slot numbers, so a publication reaches
    /// its subscriptions without hashing their names. A freed slot is reused by the next one.
    var subjects = SubjectIndex<Int>()
    var subscriptionSlots: [Subscription] = []
    var freeSubscriptionSlots: [Int] = []
    var subscriptionSlotsByKey: [SubscriptionKey: Int] = [:]
    var subscriptionCounts: [SessionID: Int] = [:]
    /// Subscriptions of each identity's sessions together, for `maximumSubscriptionsPerIdentity`.
    var subscriptionCountsByIdentity: [Identity: Int] = [:]
    var queueTurns: [String: Int] = [:]
    var services: [String: ServiceEntry] = [:]
    var compounds: [String: CompoundMethod] = [:]
    var inFlight: [RequestID: InFlight] = [:]
    /// How many of `inFlight` each session has (counted, not scanned, for its limit).
    var inFlightBySession: [SessionID: Int] = [:]
    var inFlightByCaller: [CallerKey: RequestID] = [:]
    var outstanding: [SessionID: Int] = [:]
    var methodSubscriptions: [CallerKey: MethodSubscription] = [:]
    var nextRequestID: RequestID = 1
    /// Requests that ended (by timeout, cancellation...) and the instance they were sent to, so a
    /// late response from that instance is recognised and discarded rather than routed.
    var endedRequests = RecentMemory<RequestID, SessionID>(capacity: 10_000)
    /// LIME requests to subjects (answered by NATS responders or anyone replying), by hub id.
    var subjectRequests: [RequestID: SubjectRequest] = [:]
    var subjectRequestsByInbox: [String: RequestID] = [:]
    /// Durable queues, by name.
    var queues: [String: DurableQueue] = [:]
    /// Which queues keep a subject, by subject: filled on first use, emptied when queues come or
    /// go (so a publication does not match every queue's filters each time).
    var queuesBySubject: [String: [String]] = [:]
    /// The permissions of the sessions that have some (see HubCore+Permissions); a session that
    /// is not here may do everything but call `admin` methods.
    var permissions: [SessionID: Permissions] = [:]
    /// Makes the trace context of messages that come without one, when the configuration asks.
    var traceIdentifiers: TraceIdentifierGenerator?
    /// The trace context of requests published with a reply subject, by that subject, so that a
    /// reply that carries none gets its request's (see HubCore+Tracing).
    var replyTraces = RecentMemory<String, [String: String]>(capacity: 10_000)
    /// Set once the hub joins a cluster (see Cluster/ClusterMembership.swift).
    public internal(set) var cluster: ClusterMembership?

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.traceIdentifiers = configuration.traceIdentifiers
        self.router = NodeRouter(
            configuration: .init(hubNode: configuration.hubNode, maximumReceiptRoutes: configuration.maximumReceiptRoutes))
    }

    // MARK: - Sessions

    /// Registers an established session, with its permissions if it has any; returns the session
    /// it replaced, which the hub must end.
    public mutating func register(_ session: SessionID, node: Node, permissions: Permissions? = nil) -> SessionID? {
        self.permissions[session] = permissions
        let first = cluster != nil && !router.hasSessions(of: node.identity)
        let replaced = router.register(session, node: node)
        if first { clusterNodeInterest(node.identity, added: true) }
        return replaced
    }

    /// Forgets everything of a session that closed: its subscriptions, service instances, compound
    /// methods, its own requests; callers of its requests in flight get failures at once.
    public mutating func sessionClosed(_ session: SessionID) -> [Output] {
        var outputs: [Output] = []
        let identity = router.node(of: session)?.identity
        router.unregister(session)
        if let identity, cluster != nil, !router.hasSessions(of: identity) { clusterNodeInterest(identity, added: false) }
        permissions[session] = nil
        for key in subscriptionSlotsByKey.keys.filter({ $0.session == session }) { removeSubscription(key) }
        subscriptionCounts[session] = nil
        for name in Array(services.keys) {
            services[name]?.instances.removeAll { $0 == session }
            // A durable service keeps its queue and its registration: requests wait for an instance.
            if services[name]?.instances.isEmpty == true && services[name]?.durable != true { services[name] = nil }
        }
        clusterServicesChanged()
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
        outputs += detachConsumers(of: session)
        return outputs
    }

    // MARK: - Envelopes

    /// Handles an envelope of an established session (its `from` already set to the session's node).
    ///
    /// The envelope is consumed: a publication's command is moved into the core's routing rather
    /// than copied out of the enum (a retain and a release per field, per message).
    public mutating func envelopeReceived(_ envelope: consuming Envelope, from session: SessionID) -> [Output] {
        switch consume envelope {
        case .command(let command):
            if let outputs = commandReceived(command, from: session) { return outputs }
            return route(.command(command), from: session)
        case .notification(let notification):
            if isHub(notification.header.to), let outputs = queueAnswer(notification, from: session) { return outputs }
            return route(.notification(notification), from: session)
        case let other:
            return route(other, from: session)
        }
    }

    /// A command for the hub itself (a publication, a subscription, a queue's or a service's
    /// answer), or nil when the node router routes it.
    private mutating func commandReceived(_ command: LIMECommand, from session: SessionID) -> [Output]? {
        if command.isResponse, let id = command.header.id, let (queue, delivery) = Self.parseQueueDeliveryID(id),
            queues[queue] != nil || cluster?.jetStreamQueues[queue] != nil
        {
            return durableResponse(command, queue: queue, delivery: delivery, from: session)
        }
        if command.isResponse, let id = command.header.id.flatMap(Self.requestID) {
            if inFlight[id]?.instance == session { return responseReceived(command, request: id) }
            if endedRequests[id] == session {
                statistics.lateResponses += 1
                return []
            }
        }
        if !command.isResponse, isHub(command.header.to), let uri = command.uri {
            return hubCommand(command, uri: uri, from: session)
        }
        return nil
    }

    /// Routes an envelope between nodes.
    mutating func route(_ envelope: Envelope, from session: SessionID) -> [Output] {
        if !permissions.isEmpty, let refusal = sendRefusal(envelope, from: session) { return refusal }
        // On a cluster, a node not connected here may be on another hub (never for what came
        // from there: that would loop).
        let elsewhere = cluster != nil && session != Self.clusterSession
        let routing = router.route(envelope, from: session, elsewhere: elsewhere)
        var outputs: [Output] = []
        if let delivery = routing.delivery {
            outputs.reserveCapacity(routing.recipients.count + 1)
            for recipient in routing.recipients { outputs.append(.send(recipient, delivery)) }
            if let remote = routing.remote {
                sendOnCluster(delivery, to: remote, from: session, onlyThere: routing.recipients.isEmpty)
            }
        }
        if let reply = routing.reply { outputs.append(.send(session, reply)) }
        return outputs
    }

    func isHub(_ node: Node?) -> Bool {
        guard let node else { return true }
        let hub = configuration.hubNode
        if node.identity == hub.identity { return node.instance == nil || node.instance?.lowercased() == hub.instance?.lowercased() }
        return node.name == nil && node.instance == nil && node.domain.lowercased() == hub.domain.lowercased()
    }

    /// The hub's resources. Returns nil for what the node router answers (ping, unknown resources).
    mutating func hubCommand(_ command: LIMECommand, uri: String, from session: SessionID) -> [Output]? {
        // Publications are most of what arrives: `/topics/SUBJECT` with nothing to decode or split.
        if command.method == .observe || command.method == .set, let subject = Self.plainTopic(uri) {
            return publish(command, subject: subject, from: session)
        }
        let (path, query) = Self.split(uri)
        let segments = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst().map { Self.percentDecoded(String($0)) }
        guard let root = segments.first else { return nil }
        let rest = Array(segments.dropFirst())
        switch (root, command.method, rest.count) {
        case ("topics", .subscribe, 1): return subscribe(command, filter: rest[0], query: query, from: session)
        case ("topics", .unsubscribe, 1): return unsubscribe(command, filter: rest[0], query: query, from: session)
        case ("topics", .set, 1), ("topics", .observe, 1): return publish(command, subject: rest[0], from: session)
        case ("topics", .get, 1): return requestSubject(command, subject: rest[0], from: session)
        case ("services", .get, 0) where cluster != nil: return discoverServices(command, name: nil, from: session)
        case ("services", .get, 1) where cluster != nil && rest[0] != "compound":
            return discoverServices(command, name: rest[0].lowercased(), from: session)
        case ("services", .get, 0):
            return [reply(session, command.success(type: "application/json", resource: .object(["services": .array(serviceList)])))]
        case ("services", .get, 1) where services[rest[0].lowercased()] == nil && rest[0] != "compound":
            return refuse(session, command, ReasonCode.commandResourceNotFound, "No service '\(rest[0])' is registered")
        case ("services", .get, 1):
            return [reply(session, command.success(type: "application/json", resource: .object(serviceJSON(rest[0].lowercased()))))]
        case ("services", .set, 1): return registerService(command, name: rest[0], from: session)
        case ("services", .delete, 1): return unregisterService(command, name: rest[0], from: session)
        case ("services", .observe, 3) where rest[2] == "events":
            return methodEvent(service: rest[0].lowercased(), method: rest[1], from: session)
        case ("services", _, 2): return request(command, service: rest[0].lowercased(), method: rest[1], from: session)
        case ("requests", .delete, 1): return cancel(command, callerID: rest[0], from: session)
        case ("queues", _, _): return queueCommand(command, rest: rest, query: query, from: session)
        case ("compound", .get, 0):
            return [reply(session, command.success(type: "application/json", resource: .object(["compound": .array(compoundList)])))]
        case ("compound", .set, 1): return registerCompound(command, name: rest[0], from: session)
        case ("compound", .delete, 1): return unregisterCompound(command, name: rest[0], from: session)
        case ("compound", .get, 1): return callCompound(command, name: rest[0], from: session)
        default: return nil
        }
    }

    // MARK: - Helpers

    /// A failure response to a request, from the hub.
    func refuse(_ session: SessionID, _ command: LIMECommand, _ code: Int, _ description: String) -> [Output] {
        [reply(session, command.failure(Reason(code: code, description: description)))]
    }

    func reply(_ session: SessionID, _ response: LIMECommand) -> Output {
        var response = response
        response.header.from = configuration.hubNode
        return .send(session, .command(response))
    }

    func confirmation(_ command: LIMECommand, resource: JSONObject) -> Envelope {
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
    /// The subject of `/topics/SUBJECT` when it has no query, no further segment and no percent
    /// escape (what `split` and `percentDecoded` would give unchanged), or nil.
    public static func plainTopic(_ uri: String) -> String? {
        let bytes = uri.utf8
        let prefix = "/topics/".utf8
        guard bytes.count > prefix.count, bytes.starts(with: prefix) else { return nil }
        let rest = bytes.dropFirst(prefix.count)
        guard !rest.contains(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "%") }) else { return nil }
        return String(Substring(rest))
    }

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
        guard text.utf8.contains(UInt8(ascii: "%")) else { return text }
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
