/// What a clustered hub's core keeps of the cluster (docs/CLUSTER.md): the subscriptions it holds
/// on it, the operations waiting for the hub to carry out, and what tells its own traffic apart.
public struct ClusterMembership: Sendable {
    /// What the hub does on its cluster connection, in the order the core asked.
    public enum Operation: Sendable, Equatable {
        /// Subscribe or unsubscribe (`ClusterInterest`).
        case interest(ClusterInterest.Action)
        /// Publish a local publication on the cluster, for the other hubs and NATS clients there.
        case publish(PublishedMessage)
        /// Publish a call of a service on another hub, saying who calls (`caller`, an
        /// administrator or not) in a way the other hubs can check (`attestsCallers`).
        case publishCall(PublishedMessage, caller: Node, admin: Bool)
    }

    /// The headers in which a hub says who calls a service on another hub, kept (as metadata)
    /// only when the hub's cluster link checked them (docs/CLUSTER.md).
    public static let callerHeader = "Relay-Caller"
    public static let callerAdminHeader = "Relay-Caller-Admin"

    /// The queue group the hubs serving a service share on the cluster: one hub takes each
    /// request of `SERVICE.>`.
    public static let serviceQueue = "relay.services"
    /// The type of a LIME envelope crossing to a node on another hub.
    public static let envelopeType: MediaType = "application/vnd.relay.envelope+json"

    /// The hub's id on the cluster, unique among the hubs (its inbox subjects carry it).
    public let hubID: String
    var interest = ClusterInterest()
    /// Cluster subscriptions for the hub itself (its inbox, the services it serves): what arrives
    /// on them is answered by the core, not delivered to subscribers.
    var ownSubscriptions: Set<String> = []
    /// The services held on the cluster, by name.
    var servedServices: Set<String> = []
    var pending: [Operation] = []
    /// Reply subjects of requests that local subscribers received: the cluster's 503 (no
    /// responders elsewhere) for them is not passed on, a local responder answers.
    var answeredLocally = RecentMemory<String, Bool>(capacity: 10_000)
    /// Envelopes sent to nodes on other hubs that would get a failure if none holds the node,
    /// by the number in their reply subject: the sender and the failure (the cluster's 503).
    var nodeFailures = RecentMemory<Int, (session: SessionID, failure: Envelope)>(capacity: 10_000)
    var nextNodeFailure = 1
    /// `get /services` waiting for the other hubs' answers, by the number in their inbox.
    var discoveries: [HubCore.RequestID: ClusterDiscovery] = [:]
    /// How long a discovery waits for the other hubs.
    public let discoveryWindowMilliseconds: Int
    /// Durable queues are JetStream's when set (JetStreamQueues.swift).
    public let jetStream: JetStreamSettings?
    /// Whether calls across hubs say who calls (the hubs share a secret).
    public internal(set) var attestsCallers = false
    var jetStreamQueues: [String: JetStreamQueue] = [:]
    /// What waits for JetStream's PubAck of a publication (a confirmation), by its number.
    var pubAcks = RecentMemory<Int, PubAckWait>(capacity: 10_000)
    var nextPubAck = 1
    /// The PubAck number of the publication just published, for `confirmWhenStored`.
    var lastPubAck: Int?
    /// Cluster messages not passed on because their subscription had ended, or a 503 for a
    /// request answered locally.
    public internal(set) var messagesDiscarded = 0
    public internal(set) var messagesReceived = 0
    public internal(set) var messagesPublished = 0

    init(hubID: String, discoveryWindowMilliseconds: Int, jetStream: JetStreamSettings?) {
        self.hubID = hubID
        self.discoveryWindowMilliseconds = discoveryWindowMilliseconds
        self.jetStream = jetStream
    }

    /// The prefix of the hub's inbox subjects (LIME requests to subjects wait for replies there).
    public var inboxPrefix: String { "_INBOX.relay.\(hubID)." }

    /// Where envelopes for the nodes of `identity` go on the cluster: messages, notifications and
    /// commands to a full node to every hub with a session of the identity (the one holding the
    /// node delivers), commands to the bare identity to one of them (`commandSubject`, a queue group).
    public static func nodeSubject(_ identity: Identity) -> String { "$RELAY.NODE.\(identity.description.lowercased())" }
    public static func commandSubject(_ identity: Identity) -> String { "$RELAY.CMD.\(identity.description.lowercased())" }
    static let nodeQueue = "relay.nodes"
    var nodeFailurePrefix: String { inboxPrefix + "n." }

    /// Subjects of system namespaces (`$RELAY.`, nats-server's `$SYS.`, `$JS.`...): what clients
    /// publish or subscribe there stays on their hub, so none can forge or overhear the hubs'
    /// traffic on the cluster, and the hub's local JetStream answers stay its own.
    static func isSystem(_ subject: String) -> Bool { subject.utf8.first == UInt8(ascii: "$") }

    /// How many distinct subscriptions the hub holds on the cluster.
    public var subscriptionCount: Int { interest.count }
}

extension HubCore {
    /// The inbox subjects' prefix: the hub's own on a cluster, so hubs never share one.
    var inboxPrefix: String { cluster?.inboxPrefix ?? "_INBOX.relay." }

    /// Makes the hub a member of a cluster under `hubID`: from now on, local publications are also
    /// published on the cluster, local subscriptions are held there, and queue groups get one
    /// delivery across all hubs. Subscriptions made before are held too.
    /// With `jetStream`, durable queues created from now on are JetStream streams (join before
    /// creating them).
    /// With `attestsCallers` (the hubs share a secret), calls of services on other hubs say who
    /// calls, and calls from other hubs that say so are taken as that caller's (private and admin
    /// methods).
    public mutating func joinCluster(
        hubID: String, discoveryWindowMilliseconds: Int = 250, jetStream: JetStreamSettings? = nil, attestsCallers: Bool = false
    ) {
        var membership = ClusterMembership(
            hubID: hubID, discoveryWindowMilliseconds: discoveryWindowMilliseconds, jetStream: jetStream)
        membership.attestsCallers = attestsCallers
        for slot in subscriptionSlots.indices where subscriptionSlots[slot].isLive {
            let subscription = subscriptionSlots[slot]
            if let action = membership.interest.localSubscriptionAdded(.init(filter: subscription.filter, queue: subscription.queue)) {
                membership.pending.append(.interest(action))
            }
        }
        for filter in [
            membership.inboxPrefix + ">", ClusterMembership.servicesSubject, ClusterMembership.queuesSubject,
            ClusterMembership.cancelSubject, ClusterMembership.eventsSubject,
        ] {
            if case .subscribe(let sid, _, _)? = membership.interest.localSubscriptionAdded(.init(filter: filter)) {
                membership.ownSubscriptions.insert(sid)
                membership.pending.append(.interest(.subscribe(sid: sid, filter: filter, queue: nil)))
            }
        }
        cluster = membership
        for identity in router.identities { clusterNodeInterest(identity, added: true) }
        clusterServicesChanged()
        if jetStream != nil { askForQueues() }
    }

    /// What the hub must do on its cluster connection since it last asked, in order.
    public mutating func takeClusterOperations() -> [ClusterMembership.Operation] {
        guard cluster != nil, !cluster!.pending.isEmpty else { return [] }
        defer { cluster!.pending.removeAll(keepingCapacity: true) }
        return cluster!.pending
    }

    /// The session that stands for the cluster in the core: what came from other hubs.
    public static let clusterSession: SessionID = .max

    /// A local subscription was made or ended: held on the cluster while some local one wants it.
    mutating func clusterSubscription(filter: String, queue: String?, added: Bool) {
        guard cluster != nil, !ClusterMembership.isSystem(filter) else { return }
        let key = ClusterInterest.Key(filter: filter, queue: queue)
        let action = added ? cluster!.interest.localSubscriptionAdded(key) : cluster!.interest.localSubscriptionRemoved(key)
        if let action { cluster!.pending.append(.interest(action)) }
    }

    /// The services with an instance here are held on the cluster as queue subscriptions of
    /// `NAME.>`, so NATS requests to them from other hubs come to one hub with an instance.
    mutating func clusterServicesChanged() {
        guard cluster != nil else { return }
        let served = Set(services.filter { !$0.value.instances.isEmpty }.keys)
        guard served != cluster!.servedServices else { return }
        for name in served.subtracting(cluster!.servedServices) {
            let key = ClusterInterest.Key(filter: name + ".>", queue: ClusterMembership.serviceQueue)
            if case .subscribe(let sid, _, _)? = cluster!.interest.localSubscriptionAdded(key) {
                cluster!.ownSubscriptions.insert(sid)
                cluster!.pending.append(.interest(.subscribe(sid: sid, filter: key.filter, queue: key.queue)))
            }
        }
        for name in cluster!.servedServices.subtracting(served) {
            let key = ClusterInterest.Key(filter: name + ".>", queue: ClusterMembership.serviceQueue)
            if case .unsubscribe(let sid)? = cluster!.interest.localSubscriptionRemoved(key) {
                cluster!.ownSubscriptions.remove(sid)
                cluster!.pending.append(.interest(.unsubscribe(sid: sid)))
            }
        }
        cluster!.servedServices = served
    }

    /// A session of `identity` is the first here, or the last left: the hub holds the identity's
    /// node subjects on the cluster while it has one.
    mutating func clusterNodeInterest(_ identity: Identity, added: Bool) {
        let keys = [
            ClusterInterest.Key(filter: ClusterMembership.nodeSubject(identity)),
            ClusterInterest.Key(filter: ClusterMembership.commandSubject(identity), queue: ClusterMembership.nodeQueue),
        ]
        for key in keys {
            if added, case .subscribe(let sid, _, _)? = cluster!.interest.localSubscriptionAdded(key) {
                cluster!.ownSubscriptions.insert(sid)
                cluster!.pending.append(.interest(.subscribe(sid: sid, filter: key.filter, queue: key.queue)))
            } else if !added, case .unsubscribe(let sid)? = cluster!.interest.localSubscriptionRemoved(key) {
                cluster!.ownSubscriptions.remove(sid)
                cluster!.pending.append(.interest(.unsubscribe(sid: sid)))
            }
        }
    }

    /// Sends an envelope to a node on other hubs, as its JSON. When no session here took it
    /// (`onlyThere`) and the sender should hear of a failure, the reply subject lets the
    /// cluster's 503 (nobody holds the node) come back as the failure (42).
    mutating func sendOnCluster(_ envelope: Envelope, to node: Node, from session: SessionID, onlyThere: Bool) {
        let isCommand: Bool
        if case .command = envelope { isCommand = true } else { isCommand = false }
        let subject =
            isCommand && node.instance == nil
            ? ClusterMembership.commandSubject(node.identity) : ClusterMembership.nodeSubject(node.identity)
        var replyTo: String?
        if onlyThere, let failure = router.undeliverableReply(envelope) {
            let number = cluster!.nextNodeFailure
            cluster!.nextNodeFailure += 1
            cluster!.nodeFailures.remember((session, failure), for: number)
            replyTo = cluster!.nodeFailurePrefix + String(number)
        }
        cluster!.pending.append(
            .publish(
                PublishedMessage(
                    subject: subject, replyTo: replyTo, type: ClusterMembership.envelopeType, body: .bytes(LIMECodec.encode(envelope)))))
        cluster!.messagesPublished += 1
    }

    /// An envelope for a node from another hub, or the cluster's 503 for one this hub sent.
    private mutating func nodeEnvelopeReceived(_ message: PublishedMessage) -> [Output]? {
        let subject = message.subject
        if subject.hasPrefix(cluster!.nodeFailurePrefix) {
            guard message.status == 503, let number = Int(subject.dropFirst(cluster!.nodeFailurePrefix.count)),
                let failure = cluster!.nodeFailures.forget(number)
            else { return [] }
            return [.send(failure.session, failure.failure)]
        }
        guard subject.hasPrefix("$RELAY.NODE.") || subject.hasPrefix("$RELAY.CMD.") else { return nil }
        guard let envelope = try? LIMECodec.decode(message.payloadBytes) else {
            cluster!.messagesDiscarded += 1
            return []
        }
        return route(envelope, from: Self.clusterSession)
    }

    /// After a local publication was delivered here: publish it on the cluster too (never what
    /// came from the cluster, which would loop). Returns whether it went.
    mutating func publishOnCluster(_ message: PublishedMessage, from session: SessionID, deliveredLocally: Int) -> Bool {
        guard cluster != nil, session != Self.clusterSession, !ClusterMembership.isSystem(message.subject) else { return false }
        if deliveredLocally > 0, let replyTo = message.replyTo { cluster!.answeredLocally.remember(true, for: replyTo) }
        var message = message
        if let replyTo = jetStreamReply(for: message) { message.replyTo = replyTo }
        cluster!.pending.append(.publish(message))
        cluster!.messagesPublished += 1
        return true
    }

    /// A message came from the cluster on subscription `sid`. On one of the hub's own (its inbox,
    /// a service) the core answers it; otherwise it goes to the local subscriptions that
    /// subscription stands for only (same filter and queue group: a hub holding overlapping
    /// filters gets a message once per filter), a queue group's to one member. `now`
    /// (milliseconds since 1970) expires JetStream queue messages past their time-to-live.
    public mutating func clusterMessageReceived(_ message: PublishedMessage, sid: String, now: Int64? = nil) -> [Output] {
        guard cluster != nil, let key = cluster!.interest.key(forClusterSubscription: sid) else {
            cluster?.messagesDiscarded += 1
            return []
        }
        cluster!.messagesReceived += 1
        if message.status == 503, cluster!.answeredLocally[message.subject] != nil {
            cluster!.messagesDiscarded += 1
            return []
        }
        if cluster!.ownSubscriptions.contains(sid) {
            if let outputs = jetStreamMessageReceived(message, now: now) { return outputs }
            if let outputs = queueChangeReceived(message) { return outputs }
            if let outputs = clusterCancelReceived(message) { return outputs }
            if let outputs = clusterMethodEventReceived(message) { return outputs }
            if let outputs = nodeEnvelopeReceived(message) { return outputs }
            if let outputs = discoveryMessageReceived(message) { return outputs }
            if let outputs = specialPublication(message, from: Self.clusterSession, jetStream: false) { return outputs }
            cluster!.messagesDiscarded += 1
            return []
        }
        // The hubs' own traffic (node envelopes, their inboxes' answers) is never a delivery,
        // whatever a subscriber's wildcard matches.
        if ClusterMembership.isSystem(message.subject) || message.subject.hasPrefix("_INBOX.relay.") {
            cluster!.messagesDiscarded += 1
            return []
        }
        var outputs: [Output] = []
        var members: [Int] = []
        for slot in subjects.match(message.subject) {
            guard subscriptionSlots[slot].isLive, subscriptionSlots[slot].queue == key.queue, subscriptionSlots[slot].filter == key.filter
            else { continue }
            if subscriptionSlots[slot].checksDelivery, !deliveryAllowed(message.subject, toSlot: slot) { continue }
            if key.queue == nil {
                outputs.append(deliver(message, toSlot: slot))
            } else {
                members.append(slot)
            }
        }
        if key.queue != nil, members.isEmpty { cluster!.messagesDiscarded += 1 }
        if let queue = key.queue, !members.isEmpty {
            let turn = queueTurns[queue, default: 0]
            queueTurns[queue] = turn &+ 1
            members.sort()
            outputs.append(deliver(message, toSlot: members[turn % members.count]))
        }
        statistics.publicationsDelivered += outputs.count
        return outputs
    }
}
