import Foundation
import Logging
import NIOCore
import NIOPosix
import RelayCore
import RelayTransport
import Synchronization

/// The hub's shared state: every open session and the router that decides where envelopes go.
///
/// Connections call it from their own event loops; one lock guards the router and the outlets, and
/// the writes themselves happen outside it.
public final class Hub: Sendable {
    /// Counters shown in the hub's statistics.
    public struct Statistics: Sendable, Equatable {
        public var sessionsOpen = 0
        public var sessionsEstablished = 0
        public var connectionsRefused = 0
        public var slowConsumers = 0
        /// Deliveries dropped by subscriptions' overflow policies while their subscribers lagged.
        public var droppedDeliveries = 0
        public var envelopesRouted = 0
        public var envelopesDelivered = 0
        public var envelopesUndeliverable = 0
        public var receiptsRouted = 0
        /// Publications, requests, timeouts and permission violations.
        public var core = HubCore.Statistics()
        /// Credentials refused.
        public var authenticationFailures = 0
        /// Connections refused because their address had as many open as allowed.
        public var connectionsRefusedPerAddress = 0
        /// Connections refused because their address failed to authenticate too often.
        public var connectionsRefusedAfterFailures = 0
    }

    /// An open session's outlet, with what rendering its deliveries needs (looked up once per
    /// delivery). A class, so that the lookup does not copy its fields; changed only under the
    /// hub's lock.
    private final class OpenSession: @unchecked Sendable {
        let outlet: SessionOutlet
        /// The node it holds, once established.
        var node: Node? {
            didSet { quotedNode = node.map(LIMECodec.quoted) }
        }
        /// `node` as JSON text, for the deliveries the hub forwards to it or from it.
        private(set) var quotedNode: [UInt8]?
        /// For NATS connections, whether they enabled headers; nil for LIME sessions.
        var natsHeaders: Bool?
        /// The peer's IP address, for the per-address limits.
        let address: String?

        init(outlet: SessionOutlet, address: String?) {
            self.outlet = outlet
            self.address = address
        }
    }

    private struct State {
        var core: HubCore
        var sessions: [SessionID: OpenSession] = [:]
        var timers: [HubCore.Timer: Scheduled<Void>] = [:]
        var nextSessionID: SessionID = 1
        var connectionsRefused = 0
        var slowConsumers = 0
        var droppedDeliveries = 0
        var acceptingSessions = true
        var sweep: RepeatedTask?
        var limiter: AddressLimiter
        /// The pending-bytes groups of established identities.
        var identityGroups: [Identity: IdentityPendingGroup] = [:]
    }

    public let configuration: HubConfiguration
    let authenticator: Authenticator
    /// The TLS certificate every listener serves, when TLS is configured.
    let tls: TLSContextStore?
    let logger: Logger
    /// The server id NATS clients see in INFO.
    let serverID = "RELAY" + String(UInt64.random(in: .min ... .max), radix: 36).uppercased()
    private let timerLoop: any EventLoop
    private let state: Mutex<State>
    private let persistence = Mutex<QueuePersistence?>(nil)

    public init(
        configuration: HubConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "relay.hub")
    ) throws {
        self.configuration = configuration
        self.authenticator = try Authenticator(configuration: configuration)
        self.tls = try configuration.tls.map(TLSContextStore.init(settings:))
        self.logger = logger
        self.timerLoop = group.any()
        guard !authenticator.schemes.isEmpty else {
            throw HubError.invalidConfiguration("guest access is off and no users are configured: nobody could connect")
        }
        var admins = Set<Identity>()
        for text in configuration.admins {
            guard let identity = Identity(text) else { throw HubError.invalidConfiguration("admin '\(text)' is not name@domain") }
            admins.insert(identity)
        }
        let limits = configuration.limits
        let core = HubCore(
            configuration: .init(
                hubNode: configuration.hubNode, maximumReceiptRoutes: limits.maxReceiptRoutes,
                maximumSubscriptionsPerSession: limits.maxSubscriptionsPerSession,
                maximumRequestsPerSession: limits.maxRequestsPerSession,
                defaultDeadlineMilliseconds: Int(limits.defaultRequestTimeoutSeconds * 1000), admins: admins,
                defaultDeliveryLimit: DeliveryLimit(maximumHeld: limits.maxHeldPerSubscription, policy: .dropNewest),
                maximumSubscriptionsPerIdentity: limits.maxSubscriptionsPerIdentity))
        self.state = Mutex(
            State(
                core: core,
                limiter: AddressLimiter(
                    maximumConnections: limits.maxConnectionsPerAddress, maximumFailures: limits.maxAuthFailuresPerAddress,
                    windowSeconds: limits.authFailureWindowSeconds, appliesToLoopback: limits.addressLimitsOnLoopback)))
    }

    /// A snapshot of the counters.
    public var statistics: Statistics {
        state.withLock { state in
            Statistics(
                sessionsOpen: state.sessions.count, sessionsEstablished: state.core.router.sessionCount,
                connectionsRefused: state.connectionsRefused, slowConsumers: state.slowConsumers,
                droppedDeliveries: state.droppedDeliveries,
                envelopesRouted: state.core.router.statistics.routed, envelopesDelivered: state.core.router.statistics.delivered,
                envelopesUndeliverable: state.core.router.statistics.undeliverable,
                receiptsRouted: state.core.router.statistics.receiptsRouted, core: state.core.statistics,
                authenticationFailures: state.limiter.statistics.authenticationFailures,
                connectionsRefusedPerAddress: state.limiter.statistics.connectionsRefusedPerAddress,
                connectionsRefusedAfterFailures: state.limiter.statistics.connectionsRefusedAfterFailures)
        }
    }

    /// Seconds on a monotonic clock, for the per-address limits.
    private static func uptime() -> Double { Double(NIODeadline.now().uptimeNanoseconds) / 1e9 }

    /// Reads the TLS certificate, key and CA again (SIGHUP): new connections get them, open
    /// sessions keep going.
    public func reloadCertificates() throws {
        try tls?.reload()
        if tls != nil { logger.info("TLS certificates reloaded") }
    }

    /// Why the hub does not open a session for a new connection.
    enum OpeningRefusal: Error, Equatable {
        /// The hub holds its maximum of sessions, or is shutting down.
        case full
        /// The address has as many connections open as allowed.
        case tooManyFromAddress
        /// The address failed to authenticate too often lately.
        case tooManyFailures

        /// What a LIME client is told.
        var reason: Reason {
            switch self {
            case .full: Reason(code: ReasonCode.sessionError, description: "The hub is full or shutting down; try again later")
            case .tooManyFromAddress: Reason(code: ReasonCode.sessionError, description: "Too many connections from this address")
            case .tooManyFailures:
                Reason(
                    code: ReasonCode.sessionAuthenticationFailed,
                    description: "Too many failed authentications from this address; try again later")
            }
        }

        /// What a NATS client is told, as nats-server words it.
        var natsError: NATSProtocolError.Kind {
            self == .tooManyFailures ? .authorization : .maximumConnections
        }
    }

    /// Opens a session for a new connection from `address` (its IP), or says why not.
    func openSession(_ outlet: SessionOutlet, address: String?) -> Result<SessionID, OpeningRefusal> {
        state.withLock { state in
            guard state.acceptingSessions, state.sessions.count < configuration.limits.maxSessions else {
                state.connectionsRefused += 1
                return .failure(.full)
            }
            switch state.limiter.connectionOpened(from: address, now: Self.uptime()) {
            case .tooManyConnections?:
                state.connectionsRefused += 1
                return .failure(.tooManyFromAddress)
            case .tooManyFailures?:
                state.connectionsRefused += 1
                return .failure(.tooManyFailures)
            case nil:
                break
            }
            let id = state.nextSessionID
            state.nextSessionID += 1
            state.sessions[id] = OpenSession(outlet: outlet, address: address)
            return .success(id)
        }
    }

    /// Forgets a session whose connection closed; its callers and its requests are dealt with.
    func closeSession(_ id: SessionID) {
        let outputs = state.withLock { state in
            if let session = state.sessions.removeValue(forKey: id) {
                state.limiter.connectionClosed(from: session.address)
                leaveIdentityGroup(session, in: &state)
            }
            return state.core.sessionClosed(id)
        }
        perform(outputs)
    }

    /// Registers an authenticated session under its node, with what it may do; a session that
    /// held the node is ended.
    func register(_ id: SessionID, node: Node, permissions: Permissions? = nil) {
        let replaced: SessionOutlet? = state.withLock { state in
            guard let session = state.sessions[id] else { return nil }
            session.node = node
            joinIdentityGroup(session, in: &state)
            guard let replacedID = state.core.register(id, node: node, permissions: permissions) else { return nil }
            return state.sessions[replacedID]?.outlet
        }
        logger.debug("session established", metadata: ["session": "\(id)", "node": "\(node)"])
        replaced?.terminate(Reason(code: ReasonCode.sessionError, description: "Another session was established as node '\(node)'"))
    }

    func unregister(_ id: SessionID) {
        let outputs = state.withLock { state in
            if let session = state.sessions[id] { leaveIdentityGroup(session, in: &state) }
            state.sessions[id]?.node = nil
            return state.core.sessionClosed(id)
        }
        perform(outputs)
    }

    /// Counts a session's pending bytes with its identity's other sessions.
    private func joinIdentityGroup(_ session: OpenSession, in state: inout State) {
        guard let identity = session.node?.identity else { return }
        let group =
            state.identityGroups[identity]
            ?? {
                let group = IdentityPendingGroup(maximum: configuration.limits.maxPendingBytesPerIdentity)
                state.identityGroups[identity] = group
                return group
            }()
        session.outlet.join(group)
    }

    private func leaveIdentityGroup(_ session: OpenSession, in state: inout State) {
        session.outlet.leaveIdentityGroup()
        if let identity = session.node?.identity, state.identityGroups[identity]?.isEmpty == true {
            state.identityGroups[identity] = nil
        }
    }

    /// A connection from `address` presented credentials the hub refused.
    func authenticationFailed(from address: String?) {
        state.withLock { $0.limiter.authenticationFailed(from: address, now: Self.uptime()) }
    }

    func noteSlowConsumer() {
        state.withLock { $0.slowConsumers += 1 }
    }

    func verify(_ credentials: CredentialsPresented, fallbackName: String, transport: TransportFacts) async -> Result<Admission, Reason> {
        await authenticator.verify(credentials, fallbackName: fallbackName, transport: transport)
    }

    /// Hands what an established session sent in one read cycle to the core, in order, and
    /// carries out what it says, emptying `items` (envelopes are moved into the core, not copied).
    /// A publication read in place is forwarded from its bytes when it is only to be delivered to
    /// LIME subscriptions (`HubCore.forward`); otherwise it is published as usual.
    func route(_ items: inout [LIMERouted], from sender: SessionID) {
        let resolved = state.withLock { state in
            var resolved = Resolved()
            var outputs: [HubCore.Output] = []
            var forwarding = Forwarding()
            // Sessions do not change while the lock is held.
            let sessions = state.sessions
            let publisher = sessions[sender]
            items.drainInOrder { item in
                switch item {
                case .envelope(let envelope):
                    outputs = state.core.envelopeReceived(envelope, from: sender)
                case .publication(let publication, let bytes):
                    bytes.withUnsafeBytes { envelope in
                        guard
                            let recipients = forwarding.recipients(
                                of: publication.subject, hasReplyTo: false, from: sender, toNATS: false, core: &state.core,
                                among: sessions)
                        else {
                            outputs = state.core.envelopeReceived(
                                .command(publication.command(from: publisher?.node, envelope: envelope)), from: sender)
                            return
                        }
                        let content = UnsafeRawBufferPointer(rebasing: envelope[publication.resource])
                        for (recipient, session) in recipients {
                            resolved.add(session.outlet, token: recipient.token, limit: recipient.limit) {
                                LIMECodec.encodeDelivery(
                                    publication, content: content, from: publisher?.quotedNode, token: recipient.token,
                                    to: session.quotedNode, into: &$0)
                            }
                        }
                    }
                }
                resolve(outputs, into: &resolved, in: &state)
                outputs.removeAll(keepingCapacity: true)
            }
            return resolved
        }
        dispatch(resolved)
    }

    /// The recipients of a publication the core forwards (`HubCore.forward`), each with its
    /// session, looked up once by `accepts`. Kept across a read's publications so its arrays keep
    /// their capacity.
    private struct Forwarding {
        private var recipients: [HubCore.Recipient] = []
        private var sessions: [OpenSession] = []

        /// The recipients, or nil when the core does not forward the publication to sessions of
        /// the dialect asked for (NATS when `toNATS`, LIME otherwise).
        mutating func recipients(
            of subject: String, hasReplyTo: Bool, from sender: SessionID, toNATS: Bool, core: inout HubCore,
            among open: [SessionID: OpenSession]
        ) -> Zip2Sequence<[HubCore.Recipient], [OpenSession]>? {
            // Taken out of `self` so that `accepts` may append while `forward` appends too.
            var recipients = self.recipients
            var sessions = self.sessions
            self.recipients = []
            self.sessions = []
            recipients.removeAll(keepingCapacity: true)
            sessions.removeAll(keepingCapacity: true)
            let forwards = core.forward(
                subject: subject, hasReplyTo: hasReplyTo, from: sender,
                accepts: { session in
                    guard let session = open[session], (session.natsHeaders != nil) == toNATS else { return false }
                    sessions.append(session)
                    return true
                }, into: &recipients)
            self.recipients = recipients
            self.sessions = sessions
            return forwards ? zip(recipients, sessions) : nil
        }
    }

    /// Carries out the core's outputs: writes (outside the lock) and timers.
    private func perform(_ outputs: [HubCore.Output]) {
        guard !outputs.isEmpty else { return }
        dispatch(state.withLock { resolve(outputs, in: &$0) })
    }

    /// Runs `change` on the core and renders its outputs under one acquisition of the lock, then
    /// carries them out.
    private func perform(_ change: (inout HubCore) -> [HubCore.Output]) {
        dispatch(state.withLock { state in resolve(change(&state.core), in: &state) })
    }

    /// What the core's outputs come to once sessions are looked up: writes grouped by session,
    /// and the outputs for the queue store. Timers are started and cancelled here.
    private struct Resolved {
        var batches: [(outlet: SessionOutlet, batch: OutletBatch)] = []
        var storage: [HubCore.Output] = []
        private var batchIndex: [ObjectIdentifier: Int] = [:]
        // A NATS message fanned out to several connections is rendered once and copied: the MSG
        // is the same for each when their sids are (clients number their subscriptions from 1).
        // (Kept as separate variables: checking an optional tuple copied it, retaining its fields.)
        private var lastMessage: PublishedMessage?
        private var lastInPlace = -1
        private var lastSID = ""
        private var lastHeaders = false
        private var lastRendered = (batch: -1, bytes: 0..<0)

        /// Adds a write to the outlet's batch; returns where it landed (batch, bytes).
        @discardableResult
        mutating func add(
            _ outlet: SessionOutlet, token: String? = nil, limit: DeliveryLimit? = nil, _ render: (inout [UInt8]) -> Void
        ) -> (batch: Int, bytes: Range<Int>) {
            let index: Int
            if let last = batches.indices.last, batches[last].outlet === outlet {
                index = last
            } else if let known = batchIndex[ObjectIdentifier(outlet)] {
                index = known
            } else {
                index = batches.count
                batchIndex[ObjectIdentifier(outlet)] = index
                batches.append((outlet, OutletBatch(capacity: outlet.batchCapacity)))
            }
            let start = batches[index].batch.bytes.count
            batches[index].batch.append(token: token, limit: limit, render)
            return (index, start..<batches[index].batch.bytes.count)
        }

        /// A delivery to a NATS subscription: copied from the last one when it would be the same
        /// bytes for another connection, rendered by `render` otherwise.
        mutating func addNATS(
            _ outlet: SessionOutlet, token: String, limit: DeliveryLimit?, headers: Bool, isLast: Bool,
            _ render: (inout [UInt8]) -> Void
        ) -> Bool {
            if isLast, lastSID == token, lastHeaders == headers, batches[lastRendered.batch].outlet !== outlet {
                let bytes = batches[lastRendered.batch].batch.bytes[lastRendered.bytes]
                add(outlet, token: token, limit: limit) { $0 += bytes }
                return false
            }
            lastRendered = add(outlet, token: token, limit: limit, render)
            lastSID = token
            lastHeaders = headers
            return true
        }

        mutating func deliverNATS(
            _ message: PublishedMessage, to outlet: SessionOutlet, token: String, limit: DeliveryLimit?, headers: Bool
        ) {
            let isLast = lastMessage?.isSame(as: message) == true
            if addNATS(
                outlet, token: token, limit: limit, headers: headers, isLast: isLast,
                { output in
                    NATSEncoder.encodeMessage(message, sid: token, headersEnabled: headers, into: &output)
                })
            {
                lastMessage = message
                lastInPlace = -1
            }
        }

        /// A delivery of the `number`th publication of a read, forwarded from where it lies.
        mutating func forwardNATS(
            _ publication: NATSPublishInPlace, number: Int, payload: UnsafeRawBufferPointer, to outlet: SessionOutlet,
            token: String, limit: DeliveryLimit?, headers: Bool
        ) {
            if addNATS(
                outlet, token: token, limit: limit, headers: headers, isLast: lastInPlace == number,
                { output in
                    NATSEncoder.encodeMessage(
                        subject: publication.subject, sid: token, replyTo: publication.replyTo, payload: payload, into: &output)
                })
            {
                lastMessage = nil
                lastInPlace = number
            }
        }
    }

    /// Under the lock: renders each delivery for its session's dialect and groups the writes per
    /// session, in order, so each session's writes cross to its event loop once.
    private func resolve(_ outputs: [HubCore.Output], in state: inout State) -> Resolved {
        var resolved = Resolved()
        resolve(outputs, into: &resolved, in: &state)
        return resolved
    }

    private func resolve(_ outputs: [HubCore.Output], into resolved: inout Resolved, in state: inout State) {
        for output in outputs {
            switch output {
            case .send(let session, let envelope):
                if let outlet = state.sessions[session]?.outlet { resolved.add(outlet) { $0 += LIMECodec.encode(envelope) } }
            case .deliver(let session, let token, let message, let limit):
                guard let recipient = state.sessions[session] else { continue }
                if let headers = recipient.natsHeaders {
                    resolved.deliverNATS(message, to: recipient.outlet, token: token, limit: limit, headers: headers)
                } else {
                    resolved.add(recipient.outlet, token: token, limit: limit) {
                        LIMECodec.encodeDelivery(message, token: token, to: recipient.node, into: &$0)
                    }
                }
            case .startTimer(let timer, let milliseconds):
                state.timers[timer]?.cancel()
                state.timers[timer] = timerLoop.scheduleTask(in: .milliseconds(Int64(milliseconds))) { [weak self] in
                    self?.timerFired(timer)
                }
            case .cancelTimer(let timer):
                state.timers.removeValue(forKey: timer)?.cancel()
            case .persist, .unpersist, .recordDeliveries, .saveQueue, .deleteQueue:
                resolved.storage.append(output)
            case .refused(let session, let refusal):
                guard let recipient = state.sessions[session] else { continue }
                resolved.add(recipient.outlet) { bytes in
                    if recipient.natsHeaders != nil {
                        NATSEncoder.encode(.error(refusal.reason.description), into: &bytes)
                    } else {
                        bytes += LIMECodec.encode(.message(Self.refusalNotice(refusal, to: recipient.node, from: configuration.hubNode)))
                    }
                }
            }
        }
    }

    /// What a LIME session is told of something it sent without asking for an answer that its
    /// permissions refused (NATS sessions get nats-server's `-ERR`).
    static func refusalNotice(_ refusal: Refusal, to node: Node?, from hub: Node) -> LIMEMessage {
        LIMEMessage(
            header: EnvelopeHeader(from: hub, to: node), type: "application/vnd.relay.refused+json",
            content: [
                "operation": .string(refusal.operation.rawValue), "target": .string(refusal.target),
                "reason": ["code": .number(JSONNumber(refusal.reason.code)), "description": .string(refusal.reason.description)],
            ])
    }

    /// Outside the lock: hands each session its writes, counts drops and slow consumers, and
    /// passes storage work to the queue store.
    private func dispatch(_ resolved: Resolved) {
        var dropped = 0
        for (outlet, batch) in resolved.batches {
            outlet.batchCapacity = batch.bytes.count
            switch outlet.send(batch) {
            case nil: noteSlowConsumer()
            case let count?: dropped += count
            }
        }
        if dropped > 0 { state.withLock { $0.droppedDeliveries += dropped } }
        if !resolved.storage.isEmpty { store(resolved.storage) }
    }

    // MARK: - Durable queues

    /// Opens the queue store in the data directory and brings back the queues and their messages.
    func openStore() async throws {
        let store = try await QueueStore.open(directory: configuration.data)
        var restored: [(QueueConfiguration, [(QueuedMessage, deliveries: Int, storedAt: Int64)])] = []
        for queue in try await store.loadQueues() {
            let messages = try await store.loadMessages(queue.name).map {
                (QueuePersistence.queued($0), deliveries: $0.deliveries, storedAt: $0.storedAt)
            }
            restored.append((queue, messages))
        }
        let persistence = QueuePersistence(store: store) { [weak self] job, error in
            self?.persisted(job, error: error)
        }
        self.persistence.withLock { $0 = persistence }
        var outputs: [HubCore.Output] = []
        state.withLock { state in
            for (queue, messages) in restored { state.core.restoreQueue(queue, messages: messages) }
        }
        for settings in configuration.queues {
            do {
                outputs += try state.withLock { state throws(Reason) in try state.core.createQueue(settings.configuration) }
            } catch {
                throw HubError.invalidConfiguration("queue '\(settings.name)': \(error.description)")
            }
        }
        let total = restored.reduce(0) { $0 + $1.1.count }
        // Age and time-to-live are checked once a second.
        let sweep = timerLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [weak self] _ in
            guard let self else { return }
            let outputs = self.state.withLock { $0.core.sweepQueues(now: Self.now()) }
            self.perform(outputs)
        }
        state.withLock { $0.sweep = sweep }
        logger.info(
            "durable queues ready", metadata: ["data": "\(configuration.data)", "queues": "\(restored.count)", "messages": "\(total)"])
        perform(outputs)
    }

    /// Milliseconds since 1970: the time the core is given for retention.
    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    func closeStore() async {
        state.withLock { $0.sweep?.cancel() }
        let persistence = self.persistence.withLock { $0.take() }
        try? await persistence?.close()
    }

    private func store(_ outputs: [HubCore.Output]) {
        guard let persistence = persistence.withLock({ $0 }) else {
            logger.error("durable queue output without a store")
            return
        }
        for output in outputs {
            switch output {
            case .persist(let copies, let then): persistence.submit(.persist(.init(copies: copies, then: then)))
            case .unpersist(let queue, let sequence): persistence.submit(.write(.remove(queue: queue, sequence: sequence)))
            case .recordDeliveries(let queue, let sequence, let count):
                persistence.submit(.write(.deliveries(queue: queue, sequence: sequence, count: count)))
            case .saveQueue(let queue): persistence.submit(.write(.saveQueue(queue)))
            case .deleteQueue(let name): persistence.submit(.write(.deleteQueue(name)))
            default: break
            }
        }
    }

    /// A group of stored messages is on disk: deliver them and confirm their publishers.
    private func persisted(_ job: QueuePersistence.Job, error: (any Error)?) {
        if let error {
            logger.error("storing a publication failed", metadata: ["error": "\(error)"])
            // The message is not delivered, and a publisher waiting for confirmation learns why.
            let failures: [HubCore.Output] = job.then.compactMap { output in
                guard case .send(let session, .command(var response)) = output else { return nil }
                response.status = .failure
                response.type = nil
                response.resource = nil
                response.reason = Reason(code: ReasonCode.dispatchError, description: "The message could not be stored: \(error)")
                return .send(session, .command(response))
            }
            perform(failures)
            return
        }
        let now = Self.now()
        let outputs = state.withLock { state in
            job.copies.flatMap { state.core.persisted(queue: $0.queue, $0.queued, at: now) }
        }
        perform(outputs + job.then)
    }

    // MARK: - NATS connections

    /// Registers an established NATS connection under its node, with what it may do.
    func registerNATS(_ id: SessionID, node: Node, headers: Bool, permissions: Permissions?) {
        state.withLock { state in
            guard let session = state.sessions[id] else { return }
            session.node = node
            session.natsHeaders = headers
            joinIdentityGroup(session, in: &state)
            _ = state.core.register(id, node: node, permissions: permissions)
        }
    }

    func natsSubscribe(_ id: SessionID, sid: String, subject: String, queue: String?, echo: Bool) throws(Reason) {
        try state.withLock { state throws(Reason) in
            // A NATS subscriber that lags is a slow consumer, as with nats-server: when more than
            // the session's pending bytes wait for it (`maxPendingBytes`), not at a message count.
            try state.core.subscribe(
                id, token: sid, filter: subject, queue: queue, echo: echo,
                overflow: .bytesOnly)
        }
    }

    func natsUnsubscribe(_ id: SessionID, sid: String, max: Int?) {
        let outputs = state.withLock { state in
            state.core.unsubscribe(id, token: sid, after: max) ? [] : state.core.detachConsumer(id, token: sid)
        }
        perform(outputs)
    }

    /// `SUB $RELAY.QUEUE.NAME sid`: a NATS consumer of a durable queue.
    func natsConsume(_ id: SessionID, sid: String, queue: String, credit: Int) throws(Reason) {
        let outputs = try state.withLock { state throws(Reason) in
            try state.core.consume(id, token: sid, queue: queue, credit: credit)
        }
        perform(outputs)
    }

    /// Publishes what one read of a NATS connection brought, in order, under one acquisition of
    /// the lock. A PUB left in the read (`bytes`) is forwarded from there when it is only to be
    /// delivered to NATS subscriptions (`HubCore.forward`); otherwise it is published as usual.
    func natsPublish(_ publications: [NATSPublication], bytes: UnsafeRawBufferPointer, from id: SessionID, noResponders: Bool) {
        let resolved = state.withLock { state in
            var resolved = Resolved()
            var outputs: [HubCore.Output] = []
            var forwarding = Forwarding()
            // Sessions do not change while the lock is held.
            let sessions = state.sessions
            for (number, publication) in publications.enumerated() {
                let message: PublishedMessage
                switch publication {
                case .message(let published):
                    message = published
                case .inPlace(let publication):
                    let payload = UnsafeRawBufferPointer(rebasing: bytes[publication.payload])
                    if let recipients = forwarding.recipients(
                        of: publication.subject, hasReplyTo: publication.replyTo != nil, from: id, toNATS: true, core: &state.core,
                        among: sessions)
                    {
                        for (recipient, session) in recipients {
                            resolved.forwardNATS(
                                publication, number: number, payload: payload, to: session.outlet, token: recipient.token,
                                limit: recipient.limit, headers: session.natsHeaders!)
                        }
                        continue
                    }
                    message = PublishedMessage(
                        subject: publication.subject, replyTo: publication.replyTo, publisher: sessions[id]?.node,
                        body: .bytes(Array(payload)))
                }
                state.core.clientPublished(message, from: id, noResponders: noResponders, into: &outputs)
                resolve(outputs, into: &resolved, in: &state)
                outputs.removeAll(keepingCapacity: true)
            }
            return resolved
        }
        dispatch(resolved)
    }

    private func timerFired(_ timer: HubCore.Timer) {
        let outputs = state.withLock { state in
            state.timers[timer] = nil
            return state.core.timerFired(timer)
        }
        perform(outputs)
    }

    /// Stops accepting sessions and asks every open one to finish; returns their channels so the
    /// caller can wait for them to close.
    func beginShutdown() -> [any Channel] {
        let outlets = state.withLock { state in
            state.acceptingSessions = false
            return state.sessions.values.map(\.outlet)
        }
        for outlet in outlets { outlet.post(.shutdown) }
        return outlets.map(\.channel)
    }
}

/// A publication of a NATS connection's read, as the hub receives it.
enum NATSPublication {
    /// Published by the connection's machine.
    case message(PublishedMessage)
    /// A PUB without headers still in the read's bytes.
    case inPlace(NATSPublishInPlace)
}

/// What a LIME session sent in one read cycle, as the hub receives it.
enum LIMERouted {
    /// Decoded, with `from` set by the session's machine.
    case envelope(Envelope)
    /// A fire-and-forget publication still in the bytes of its envelope.
    case publication(LIMEPublishInPlace, LIMEEnvelopeBytes)
}
