import Foundation
import Logging
import NIOCore
import NIOPosix
import RelayCore
import RelayTransport
import Synchronization

// The hub's session registry: opening and closing sessions within the per-address limits,
// registering them with their permissions, and the per-identity pending-bytes groups.
extension Hub {
    /// Seconds on a monotonic clock, for the per-address limits.
    static func uptime() -> Double { Double(NIODeadline.now().uptimeNanoseconds) / 1e9 }

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

    /// Opens a session for a new connection from `address` (its IP) over `transport` (`lime-ws`,
    /// `lime-tcp`, `nats`), or says why not.
    func openSession(_ outlet: SessionOutlet, address: String?, port: Int? = nil, transport: String) -> Result<SessionID, OpeningRefusal> {
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
            state.sessions[id] = OpenSession(outlet: outlet, address: address, port: port, transport: transport)
            state.sessionsOpened += 1
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
            defer { carryOutClusterOperations(in: &state) }
            return state.core.sessionClosed(id)
        }
        perform(outputs)
    }

    /// Registers an authenticated session under its node, with what it may do; a session that
    /// held the node is ended.
    func register(_ id: SessionID, node: Node, permissions: Permissions? = nil, source: Admission.Source = .guest) {
        let replaced: SessionOutlet? = state.withLock { state in
            guard let session = state.sessions[id] else { return nil }
            session.node = node
            session.admission = source
            joinIdentityGroup(session, in: &state)
            defer { carryOutClusterOperations(in: &state) }
            guard let replacedID = state.core.register(id, node: node, permissions: permissions) else { return nil }
            return state.sessions[replacedID]?.outlet
        }
        logger.debug("session established", metadata: ["session": "\(id)", "node": "\(node)"])
        replaced?.terminate(.sessionReplaced(by: node))
    }

    func unregister(_ id: SessionID) {
        let outputs = state.withLock { state in
            if let session = state.sessions[id] { leaveIdentityGroup(session, in: &state) }
            state.sessions[id]?.node = nil
            defer { carryOutClusterOperations(in: &state) }
            return state.core.sessionClosed(id)
        }
        perform(outputs)
    }

    /// Counts a session's pending bytes with its identity's other sessions.
    func joinIdentityGroup(_ session: OpenSession, in state: inout State) {
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

    func leaveIdentityGroup(_ session: OpenSession, in state: inout State) {
        session.outlet.leaveIdentityGroup()
        if let identity = session.node?.identity, state.identityGroups[identity]?.isEmpty == true {
            state.identityGroups[identity] = nil
        }
    }

    /// Checks credentials, then hands the verdict to `deliver` on `loop` (called on it): at once
    /// when there is `immediate`ly one (a guest, a certificate: nothing slow to check), otherwise
    /// off the event loop (a password hash takes tens of milliseconds on purpose; jwt-kit's keys are
    /// an actor). A refusal (`isRefusal`) is counted for the address and delivered
    /// `authFailureDelaySeconds` later, which slows guessing. Both dialects' handlers check this way.
    func checkCredentials<Verdict: Sendable>(
        on loop: any EventLoop, from address: String?, immediate: Verdict?, _ check: @escaping @Sendable () async -> Verdict,
        isRefusal: @escaping @Sendable (Verdict) -> Bool, then deliver: @escaping (Verdict) -> Void
    ) {
        if let immediate, !isRefusal(immediate) {
            deliver(immediate)
            return
        }
        let bound = NIOLoopBound(deliver, eventLoop: loop)
        let delay = TimeAmount.nanoseconds(Int64(configuration.limits.authFailureDelaySeconds * 1_000_000_000))
        let refuse: @Sendable (Verdict) -> Void = { verdict in
            self.authenticationFailed(from: address)
            loop.scheduleTask(in: delay) { bound.value(verdict) }
        }
        if let immediate {
            refuse(immediate)
            return
        }
        Task {
            let verdict = await check()
            guard isRefusal(verdict) else {
                loop.execute { bound.value(verdict) }
                return
            }
            refuse(verdict)
        }
    }

    /// The session's connection runs over TLS now.
    func noteSecured(_ id: SessionID) {
        state.withLock { $0.sessions[id]?.secured = true }
    }

    /// Whether `address` failed to authenticate too often lately (see `AddressLimiter`).
    func hasFailedTooOften(_ address: String?) -> Bool {
        state.withLock { $0.limiter.hasFailedTooOften(address, now: Self.uptime()) }
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
}
