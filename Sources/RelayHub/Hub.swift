import Foundation
import Logging
import NIOCore
import RelayCore
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
        public var envelopesRouted = 0
        public var envelopesDelivered = 0
        public var envelopesUndeliverable = 0
        public var receiptsRouted = 0
    }

    private struct State {
        var router: NodeRouter
        var outlets: [SessionID: SessionOutlet] = [:]
        var nextSessionID: SessionID = 1
        var connectionsRefused = 0
        var slowConsumers = 0
        var acceptingSessions = true
    }

    public let configuration: HubConfiguration
    let authenticator: Authenticator
    let logger: Logger
    private let state: Mutex<State>

    public init(configuration: HubConfiguration, logger: Logger = Logger(label: "relay.hub")) throws {
        self.configuration = configuration
        self.authenticator = try Authenticator(configuration: configuration)
        self.logger = logger
        guard !authenticator.schemes.isEmpty else {
            throw HubError.invalidConfiguration("guest access is off and no users are configured: nobody could connect")
        }
        let router = NodeRouter(
            configuration: .init(hubNode: configuration.hubNode, maximumReceiptRoutes: configuration.limits.maxReceiptRoutes))
        self.state = Mutex(State(router: router))
    }

    /// A snapshot of the counters.
    public var statistics: Statistics {
        state.withLock { state in
            Statistics(
                sessionsOpen: state.outlets.count, sessionsEstablished: state.router.sessionCount,
                connectionsRefused: state.connectionsRefused, slowConsumers: state.slowConsumers,
                envelopesRouted: state.router.statistics.routed, envelopesDelivered: state.router.statistics.delivered,
                envelopesUndeliverable: state.router.statistics.undeliverable,
                receiptsRouted: state.router.statistics.receiptsRouted)
        }
    }

    /// Opens a session for a new connection; nil when the hub is full or shutting down.
    func openSession(_ outlet: SessionOutlet) -> SessionID? {
        state.withLock { state in
            guard state.acceptingSessions, state.outlets.count < configuration.limits.maxSessions else {
                state.connectionsRefused += 1
                return nil
            }
            let id = state.nextSessionID
            state.nextSessionID += 1
            state.outlets[id] = outlet
            return id
        }
    }

    /// Forgets a session whose connection closed.
    func closeSession(_ id: SessionID) {
        state.withLock { state in
            state.outlets[id] = nil
            state.router.unregister(id)
        }
    }

    /// Registers an authenticated session under its node; a session that held the node is ended.
    func register(_ id: SessionID, node: Node) {
        let replaced: SessionOutlet? = state.withLock { state in
            guard let replacedID = state.router.register(id, node: node) else { return nil }
            return state.outlets[replacedID]
        }
        logger.debug("session established", metadata: ["session": "\(id)", "node": "\(node)"])
        replaced?.terminate(Reason(code: ReasonCode.sessionError, description: "Another session was established as node '\(node)'"))
    }

    func unregister(_ id: SessionID) {
        state.withLock { $0.router.unregister(id) }
    }

    func noteSlowConsumer() {
        state.withLock { $0.slowConsumers += 1 }
    }

    func verify(_ credentials: CredentialsPresented, fallbackName: String) -> Result<Identity, Reason> {
        authenticator.verify(credentials, fallbackName: fallbackName)
    }

    /// Routes an envelope from an established session, writes it to its recipients, and returns the
    /// answer meant for the sender, if any.
    func route(_ envelope: Envelope, from sender: SessionID, allocator: ByteBufferAllocator) -> Envelope? {
        var targets: [SessionOutlet] = []
        let routing = state.withLock { state in
            let routing = state.router.route(envelope, from: sender)
            targets.reserveCapacity(routing.recipients.count)
            for recipient in routing.recipients {
                if let outlet = state.outlets[recipient] { targets.append(outlet) }
            }
            return routing
        }
        if routing.dropped {
            logger.debug(
                "undeliverable envelope dropped", metadata: ["kind": "\(envelope.kind)", "to": "\(envelope.header.to?.description ?? "")"])
        }
        if let delivery = routing.delivery, !targets.isEmpty {
            // One encoding, shared by every recipient.
            let bytes = allocator.buffer(bytes: LIMECodec.encode(delivery))
            for outlet in targets where !outlet.send(bytes) { noteSlowConsumer() }
        }
        return routing.reply
    }

    /// Stops accepting sessions and asks every open one to finish; returns their channels so the
    /// caller can wait for them to close.
    func beginShutdown() -> [any Channel] {
        let outlets = state.withLock { state in
            state.acceptingSessions = false
            return Array(state.outlets.values)
        }
        for outlet in outlets { outlet.post(.shutdown) }
        return outlets.map(\.channel)
    }
}
