import Foundation
import Logging
import NIOCore
import NIOPosix
import RelayCore
import RelayTransport
import Synchronization
import Tracing

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
        /// Connections closed because their TLS handshake or WebSocket upgrade did not finish in time.
        public var handshakeTimeouts = 0
        /// Times a publisher's connection stopped reading for a lagging subscriber (`PublisherStall`).
        public var publisherStalls = 0
    }

    /// An open session's outlet, with what rendering its deliveries needs (looked up once per
    /// delivery). A class, so that the lookup does not copy its fields; changed only under the
    /// hub's lock.
    final class OpenSession: @unchecked Sendable {
        let outlet: SessionOutlet
        /// The node it holds, once established.
        var node: Node? {
            didSet { quotedNode = node.map(LIMECodec.quoted) }
        }
        /// `node` as JSON text, for the deliveries the hub forwards to it or from it.
        private(set) var quotedNode: [UInt8]?
        /// For NATS connections, whether they enabled headers; nil for LIME sessions.
        var natsHeaders: Bool?
        /// The peer's IP address and port, for the per-address limits and monitoring.
        let address: String?
        let port: Int?
        /// `lime-ws`, `lime-tcp` or `nats`.
        let transport: String
        /// Whether the connection runs over TLS.
        var secured = false
        /// Where its permissions came from, once established.
        var admission: Admission.Source?
        let openedAt = ContinuousClock.now

        init(outlet: SessionOutlet, address: String?, port: Int?, transport: String) {
            self.outlet = outlet
            self.address = address
            self.port = port
            self.transport = transport
        }
    }

    struct State {
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
        /// Sessions opened since the hub started.
        var sessionsOpened = 0
        /// The last failure to store durable messages, for `/healthz`.
        var storageFailure: String?
        /// When each request in flight was sent to its instance, for its latency.
        var requestStarts: [HubCore.RequestID: (at: ContinuousClock.Instant, service: String, method: String, span: (any Span)?)] = [:]
        /// The latest latencies of each service's methods, for `/servicez`'s percentiles.
        var latencies: [String: [String: LatencySample]] = [:]
        /// The cluster connections, once the hub joined one.
        var cluster: ClusterLink?
    }

    /// The configuration in force, and the authenticator made from it: both change on a reload
    /// (SIGHUP), so they are read under their own lock.
    let settings: Mutex<(configuration: HubConfiguration, authenticator: Authenticator)>
    public var configuration: HubConfiguration { settings.withLock { $0.configuration } }
    var authenticator: Authenticator { settings.withLock { $0.authenticator } }
    /// The TLS certificate every listener serves, when TLS is configured.
    let tls: TLSContextStore?
    /// Connections closed because their TLS handshake or WebSocket upgrade did not finish in time.
    private let handshakeTimeouts = Atomic<Int>(0)
    /// Counted by the connections' `PublisherStall`s.
    let publisherStalls = Atomic<Int>(0)
    /// Messages and bytes in and out of every session, closed ones included.
    let traffic = TrafficCounters()
    /// `/metrics`, and the latencies it records.
    let metrics = HubMetrics()
    /// Who may read the monitoring endpoints.
    let monitoringAccess = MonitoringAccess()
    /// When the hub was made, for `uptime`.
    let startedAt = ContinuousClock.now

    /// The handlers that run TLS as the server of a new connection (the hub counts its timeouts).
    func tlsServerHandlers() -> [any ChannelHandler] {
        tls?.serverHandlers { [self] in noteHandshakeTimeout() } ?? []
    }

    func noteHandshakeTimeout() {
        handshakeTimeouts.add(1, ordering: .relaxed)
    }
    let logger: Logger
    /// The server id NATS clients see in INFO.
    let serverID = "RELAY" + String(UInt64.random(in: .min ... .max), radix: 36).uppercased()
    let timerLoop: any EventLoop
    let state: Mutex<State>
    let persistence = Mutex<QueuePersistence?>(nil)
    /// The hub's spans, when the process has a tracer.
    let spans: HubSpans?

    /// A hub on `configuration`. Its spans go to `tracer`, by default the one bootstrapped in
    /// `InstrumentationSystem` (bootstrap it first); none are made for the no-op tracer.
    public init(
        configuration: HubConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "relay.hub"), tracer: (any Tracer)? = nil
    ) throws {
        self.spans = HubSpans(tracer: tracer ?? InstrumentationSystem.tracer)
        let authenticator = try Self.checkedAuthenticator(configuration)
        self.settings = Mutex((configuration, authenticator))
        self.tls = try configuration.tls.map(TLSContextStore.init(settings:))
        self.logger = logger
        self.timerLoop = group.any()
        let limits = configuration.limits
        let core = HubCore(configuration: try Self.coreConfiguration(configuration))
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
                connectionsRefusedAfterFailures: state.limiter.statistics.connectionsRefusedAfterFailures,
                handshakeTimeouts: handshakeTimeouts.load(ordering: .relaxed), publisherStalls: publisherStalls.load(ordering: .relaxed))
        }
    }

    /// Reads the TLS certificate, key and CA again (SIGHUP): new connections get them, open
    /// sessions keep going.
    public func reloadCertificates() throws {
        try tls?.reload()
        if tls != nil { logger.info("TLS certificates reloaded") }
    }

    /// Hands what an established session sent in one read cycle to the core, in order, and
    /// carries out what it says, emptying `items` (envelopes are moved into the core, not copied).
    /// A publication read in place is forwarded from its bytes when it is only to be delivered to
    /// LIME subscriptions (`HubCore.forward`); otherwise it is published as usual.
    func route(_ items: inout [LIMERouted], from sender: SessionID) -> [PublisherStall.Wait] {
        publishRead(&items, from: sender) { item, pass, core in
            switch item {
            case .envelope(let envelope):
                return received(envelope, from: sender, core: &core)
            case .publication(let publication, let bytes):
                return bytes.withUnsafeBytes { envelope in
                    let publisher = pass.sessions[sender]
                    guard spans == nil,
                        let recipients = pass.forwarding.recipients(
                            of: publication.subject, hasReplyTo: false, from: sender, toNATS: false, core: &core, among: pass.sessions)
                    else {
                        return received(.command(publication.command(from: publisher?.node, envelope: envelope)), from: sender, core: &core)
                    }
                    let content = UnsafeRawBufferPointer(rebasing: envelope[publication.resource])
                    for (recipient, session) in recipients {
                        pass.resolved.add(session.outlet, token: recipient.token, limit: recipient.limit) {
                            LIMECodec.encodeDelivery(
                                publication, content: content, from: publisher?.quotedNode, token: recipient.token,
                                to: session.quotedNode, into: &$0)
                        }
                    }
                    return []
                }
            }
        }
    }

    /// What one read's publications share while the hub handles them under its lock: the
    /// sessions (they do not change meanwhile), the forwarding arrays, and the writes rendered.
    struct ReadPass {
        let sessions: [SessionID: OpenSession]
        var forwarding = Forwarding()
        var resolved = Resolved()
    }

    /// The one publish pipeline of every dialect: under one acquisition of the lock, each item a
    /// session's read brought (in order, emptying `items`) is handed to `handle`, which forwards
    /// it from its bytes into `pass.resolved` or gives it to the core and returns the core's
    /// outputs; those are rendered, and everything is written once the lock is released. Returns
    /// the sessions written to that are far behind, for the publisher to wait on.
    func publishRead<Item>(
        _ items: inout [Item], from sender: SessionID,
        _ handle: (consuming Item, inout ReadPass, inout HubCore) -> [HubCore.Output]
    ) -> [PublisherStall.Wait] {
        let resolved = state.withLock { state in
            var pass = ReadPass(sessions: state.sessions)
            items.drainInOrder { item in
                // Resolved even when empty: it carries out the core's cluster operations too.
                resolve(handle(item, &pass, &state.core), into: &pass.resolved, in: &state)
            }
            return pass.resolved
        }
        return dispatch(resolved)
    }

    /// Hands an envelope to the core, inside its entry span when the hub makes spans (which read
    /// every publication whole: none is forwarded from its bytes then).
    func received(_ envelope: consuming Envelope, from sender: SessionID, core: inout HubCore) -> [HubCore.Output] {
        guard let spans else { return core.envelopeReceived(envelope, from: sender) }
        var envelope = envelope
        let span = spans.entered(&envelope)
        defer { span?.end() }
        return core.envelopeReceived(envelope, from: sender)
    }

    /// The recipients of a publication the core forwards (`HubCore.forward`), each with its
    /// session, looked up once by `accepts`. Kept across a read's publications so its arrays keep
    /// their capacity.
    struct Forwarding {
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
    func perform(_ outputs: [HubCore.Output]) {
        guard !outputs.isEmpty else { return }
        dispatch(state.withLock { resolve(outputs, in: &$0) })
    }

    /// Runs `change` on the core and renders its outputs under one acquisition of the lock, then
    /// carries them out.
    func perform(_ change: (inout HubCore) -> [HubCore.Output]) {
        dispatch(state.withLock { state in resolve(change(&state.core), in: &state) })
    }

    func timerFired(_ timer: HubCore.Timer) {
        let outputs = state.withLock { state in
            state.timers[timer] = nil
            if case .deadline(let id) = timer { requestEnded(id, timedOut: true, in: &state) }
            return state.core.timerFired(timer)
        }
        perform(outputs)
    }

    /// Stops accepting sessions and asks every open one to finish; returns their channels so the
    /// caller can wait for them to close.
    /// Lame-duck mode: no new sessions, `/healthz` says draining, and every session is told (NATS
    /// with `ldm`, LIME with an `observe` of `/relay/lame-duck`);
    /// returns the requests still in flight.
    func enterLameDuck() -> Int {
        let (outlets, inFlight) = state.withLock { state in
            state.acceptingSessions = false
            return (state.sessions.values.map(\.outlet), state.core.requestsInFlight)
        }
        for outlet in outlets { outlet.post(.lameDuck) }
        return inFlight
    }

    /// Requests sent to instances and not answered yet.
    public var requestsInFlight: Int { state.withLock { $0.core.requestsInFlight } }

    func beginShutdown() -> [any Channel] {
        let outlets = state.withLock { state in
            state.acceptingSessions = false
            return state.sessions.values.map(\.outlet)
        }
        for outlet in outlets { outlet.post(.shutdown) }
        return outlets.map(\.channel)
    }
}

/// What a LIME session sent in one read cycle, as the hub receives it.
enum LIMERouted {
    /// Decoded, with `from` set by the session's machine.
    case envelope(Envelope)
    /// A fire-and-forget publication still in the bytes of its envelope.
    case publication(LIMEPublishInPlace, LIMEEnvelopeBytes)
}
