/// What a client presented to authenticate: the hub decides whether it may in.
public struct CredentialsPresented: Sendable, Hashable {
    public var scheme: String
    /// The identity the client asked for, if it gave one.
    public var identity: Identity?
    /// The scheme's data, for example `{"password": "<base64>"}` for `plain`.
    public var authentication: JSONObject
}

/// The server side of a LIME session: decides every state change; the client only asks.
///
/// It is a plain value driven by events (an envelope arrived, credentials were checked, a timer
/// fired, the peer closed) and returns the one action the connection must carry out. It never
/// touches a socket or a clock, so every guard is tested directly.
public struct LIMEServerSessionMachine: Sendable {
    public struct Configuration: Sendable {
        /// The id of this session, chosen by the hub.
        public var sessionID: String
        /// The hub's node, sent as `from` in session envelopes.
        public var serverNode: Node
        /// The authentication schemes offered, in order of preference.
        public var schemes: [String]
        /// Compression options; negotiation happens only when this or `encryptionOptions` has more than one.
        public var compressionOptions: [String]
        public var encryptionOptions: [String]
        /// The instance given to a client that asks for none.
        public var assignedInstance: String
        /// Whether a session must run over TLS: over TCP, `encryptionOptions` is then `["tls"]`;
        /// over WebSocket, the connection itself must be `wss://` (`transportSecured` before `new`).
        public var requiresTLS: Bool
        /// Whether the `transport` scheme is offered to a client whose TLS certificate was verified.
        public var offersTransportScheme: Bool

        public init(
            sessionID: String, serverNode: Node, schemes: [String] = ["guest"], compressionOptions: [String] = ["none"],
            encryptionOptions: [String] = ["none"], assignedInstance: String, requiresTLS: Bool = false,
            offersTransportScheme: Bool = false
        ) {
            self.sessionID = sessionID
            self.serverNode = serverNode
            self.schemes = schemes
            self.compressionOptions = compressionOptions
            self.encryptionOptions = encryptionOptions
            self.assignedInstance = assignedInstance
            self.requiresTLS = requiresTLS
            self.offersTransportScheme = offersTransportScheme
        }
    }

    public enum State: Sendable, Hashable {
        case new
        case negotiating
        /// The negotiation chose TLS: the connection is being upgraded (`transportSecured` next).
        case securingTransport
        case authenticating
        /// Waiting for the hub to check the credentials of the node asked for.
        case verifyingCredentials(requestedInstance: String?)
        case established(Node)
        case finished
        case failed(Reason)
    }

    /// What the connection must do next.
    public enum Action: Sendable, Hashable {
        case none
        /// Send these envelopes, in order.
        case send([Envelope])
        /// Send this envelope (the negotiation's confirmation, in plaintext), then start TLS on the
        /// connection as its server and report `transportSecured` once the handshake is done.
        case sendAndStartTLS(Envelope)
        /// Send this envelope (the negotiation's confirmation, uncompressed), then make the
        /// connection a gzip stream both ways and send `then` through it (`compression: gzip`).
        case sendAndStartCompression(Envelope, then: [Envelope])
        /// Check these credentials and report back with `credentialsAccepted` or `credentialsRejected`.
        case verifyCredentials(CredentialsPresented)
        /// Register the session under this node, then send the reply (the `established` envelope).
        case establish(Node, reply: Envelope)
        /// Route an envelope of the established session; `from` is already the session's node.
        case route(Envelope)
        /// Send this envelope, then close the connection (a `failed` session, or `finished` before establishment).
        case sendAndClose(Envelope)
        /// Unregister the established node, send this envelope (`finished` or `failed`), then close.
        case unregisterSendAndClose(Envelope)
        /// Unregister the established node; the connection is already gone.
        case unregister(Node)
        /// Close without sending anything more.
        case close
    }

    public let configuration: Configuration
    public private(set) var state: State = .new
    /// Whether the connection runs over TLS, and whether the client's certificate was verified.
    public private(set) var isTransportSecured = false
    private var isClientCertified = false

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// The node of the established session, if it is established.
    public var establishedNode: Node? {
        if case .established(let node) = state { return node }
        return nil
    }

    /// Whether a publication read in place (`LIMEPublishInPlace`) goes to the hub as it is: once
    /// established, where any command is routed with `from` set to the session's node. Before, it
    /// is decoded and received as an envelope, which answers it as the state requires.
    public var routesPublicationsInPlace: Bool {
        if case .established = state { return true }
        return false
    }

    private var needsNegotiation: Bool {
        guard !isTransportSecured else { return configuration.compressionOptions.count > 1 }
        // A single option other than `none` is negotiated too: the client must know to start TLS.
        return configuration.compressionOptions.count > 1 || configuration.encryptionOptions.count > 1
            || configuration.encryptionOptions != ["none"]
    }

    private var encryptionOptions: [String] {
        isTransportSecured ? ["none"] : configuration.encryptionOptions
    }

    private func sessionEnvelope(_ state: SessionState, to: Node? = nil, reason: Reason? = nil) -> LIMESession {
        LIMESession(
            header: EnvelopeHeader(id: configuration.sessionID, from: configuration.serverNode, to: to), state: state, reason: reason)
    }

    // MARK: - Events

    /// An envelope arrived from the client.
    public mutating func envelopeReceived(_ envelope: consuming Envelope) -> Action {
        switch state {
        case .finished, .failed:
            return .none
        case .established(let node):
            return establishedEnvelopeReceived(envelope, node: node)
        case .securingTransport:
            // Nothing but the TLS handshake may come before the upgrade is done.
            return fail(Reason(code: ReasonCode.sessionInvalidActionForState, description: "An envelope arrived before the TLS handshake"))
        case .new, .negotiating, .authenticating, .verifyingCredentials:
            guard case .session(let session) = envelope else {
                return fail(
                    Reason(
                        code: ReasonCode.sessionInvalidActionForState,
                        description: "A \(envelope.kind) envelope cannot be sent before the session is established"))
            }
            return handshakeSessionReceived(session)
        }
    }

    private mutating func handshakeSessionReceived(_ session: LIMESession) -> Action {
        if state != .new, let id = session.header.id, id != configuration.sessionID {
            return fail(Reason(code: ReasonCode.sessionError, description: "Invalid session id '\(id)'"))
        }
        switch (state, session.state) {
        case (.new, .new):
            if configuration.requiresTLS && !isTransportSecured && !configuration.encryptionOptions.contains("tls") {
                return fail(Reason(code: ReasonCode.sessionError, description: "TLS is required: connect with wss://"))
            }
            if needsNegotiation {
                state = .negotiating
                var reply = sessionEnvelope(.negotiating)
                reply.compressionOptions = configuration.compressionOptions
                reply.encryptionOptions = encryptionOptions
                return .send([.session(reply)])
            }
            return startAuthenticating(prefix: [])
        case (.negotiating, .negotiating):
            let compression = session.compression ?? "none"
            let encryption = session.encryption ?? "none"
            guard encryptionOptions.contains(encryption) else {
                return fail(
                    Reason(
                        code: ReasonCode.sessionNegotiationInvalidOptions,
                        description: configuration.requiresTLS
                            ? "TLS is required: negotiate encryption 'tls'" : "Encryption '\(encryption)' was not offered"))
            }
            guard configuration.compressionOptions.contains(compression) else {
                return fail(
                    Reason(code: ReasonCode.sessionNegotiationInvalidOptions, description: "Compression '\(compression)' was not offered"))
            }
            var confirmation = sessionEnvelope(.negotiating)
            confirmation.compression = compression
            confirmation.encryption = encryption
            if encryption == "tls" {
                // gzip is offered only where TLS is not (compress-then-encrypt invites CRIME).
                guard compression == "none" else {
                    return fail(
                        Reason(code: ReasonCode.sessionNegotiationInvalidOptions, description: "Compression is not offered with TLS"))
                }
                state = .securingTransport
                return .sendAndStartTLS(.session(confirmation))
            }
            if compression == "gzip" {
                guard case .send(let rest) = startAuthenticating(prefix: []) else { return .none }
                return .sendAndStartCompression(.session(confirmation), then: rest)
            }
            return startAuthenticating(prefix: [.session(confirmation)])
        case (.authenticating, .authenticating):
            return credentialsReceived(session)
        case (_, .finishing):
            state = .finished
            return .sendAndClose(.session(sessionEnvelope(.finished)))
        default:
            return fail(
                Reason(
                    code: ReasonCode.sessionInvalidActionForState,
                    description: "A '\(session.state.rawValue)' session envelope is not valid in state '\(stateName)'"))
        }
    }

    private mutating func startAuthenticating(prefix: [Envelope]) -> Action {
        state = .authenticating
        var reply = sessionEnvelope(.authenticating)
        reply.schemeOptions = schemes
        return .send(prefix + [.session(reply)])
    }

    /// The schemes offered: `transport` first when the client's certificate was verified.
    private var schemes: [String] {
        isClientCertified && configuration.offersTransportScheme ? ["transport"] + configuration.schemes : configuration.schemes
    }

    /// The connection runs over TLS now: from the start (`wss://`, before `new`), or once the
    /// upgrade the negotiation asked for is done (then the server offers its schemes).
    /// `clientCertified`: the client presented a certificate the hub verified.
    public mutating func transportSecured(clientCertified: Bool) -> Action {
        isTransportSecured = true
        isClientCertified = clientCertified
        guard state == .securingTransport else { return .none }
        return startAuthenticating(prefix: [])
    }

    private mutating func credentialsReceived(_ session: LIMESession) -> Action {
        let authentication = session.authentication?.objectValue ?? JSONObject()
        // The top-level field is the specification's; lime-python also nests it in `authentication`.
        guard let scheme = (session.scheme ?? authentication["scheme"]?.stringValue)?.lowercased() else {
            return fail(Reason(code: ReasonCode.sessionAuthenticationFailed, description: "No authentication scheme given"))
        }
        guard schemes.contains(scheme) else {
            return fail(
                Reason(
                    code: ReasonCode.sessionAuthenticationFailed,
                    description: "Scheme '\(scheme)' was not offered (offered: \(schemes.joined(separator: ", ")))"))
        }
        state = .verifyingCredentials(requestedInstance: session.header.from?.instance)
        return .verifyCredentials(
            CredentialsPresented(scheme: scheme, identity: session.header.from?.identity, authentication: authentication))
    }

    /// The hub accepted the credentials; `identity` is the identity the session gets.
    public mutating func credentialsAccepted(identity: Identity) -> Action {
        guard case .verifyingCredentials(let requestedInstance) = state else { return .none }
        let node = Node(identity: identity, instance: requestedInstance ?? configuration.assignedInstance)
        state = .established(node)
        return .establish(node, reply: .session(sessionEnvelope(.established, to: node)))
    }

    /// The hub refused the credentials.
    public mutating func credentialsRejected(_ reason: Reason) -> Action {
        guard case .verifyingCredentials = state else { return .none }
        return fail(reason)
    }

    private mutating func establishedEnvelopeReceived(_ envelope: consuming Envelope, node: Node) -> Action {
        if case .session(let session) = envelope {
            if let id = session.header.id, id != configuration.sessionID {
                return fail(Reason(code: ReasonCode.sessionError, description: "Invalid session id '\(id)'"))
            }
            guard session.state == .finishing else {
                return fail(
                    Reason(
                        code: ReasonCode.sessionInvalidActionForState,
                        description: "A '\(session.state.rawValue)' session envelope is not valid in state 'established'"))
            }
            state = .finished
            return .unregisterSendAndClose(.session(sessionEnvelope(.finished, to: node)))
        }
        var routed = consume envelope
        // The hub, not the client, says who sent it.
        routed.header.from = node
        return .route(routed)
    }

    /// The bytes could not be read as an envelope (malformed, unknown or oversized).
    public mutating func invalidInputReceived(_ reason: Reason) -> Action {
        fail(reason)
    }

    /// The session did not reach `established` in the time the hub allows.
    public mutating func establishmentTimedOut() -> Action {
        switch state {
        case .new, .negotiating, .securingTransport, .authenticating, .verifyingCredentials:
            return fail(Reason(code: ReasonCode.sessionNegotiationTimeout, description: "The session was not established in time"))
        default:
            return .none
        }
    }

    /// The hub is shutting down: established sessions are finished, others closed.
    /// The hub entered lame-duck mode: an established session is told, with a one-way
    /// `observe` of `LIMEServerSessionMachine.lameDuckURI`, that it will be finished soon (nats-server's
    /// `ldm`, in LIME's words; a client with no use for it ignores an `observe`).
    public mutating func lameDuckEntered() -> Action {
        guard case .established(let node) = state else { return .none }
        let notice = LIMECommand(
            header: EnvelopeHeader(from: configuration.serverNode, to: node), method: .observe, uri: Self.lameDuckURI,
            type: "application/vnd.relay.lame-duck+json", resource: .object([:]))
        return .send([.command(notice)])
    }

    /// The resource a lame-duck notice is about.
    public static let lameDuckURI = "/relay/lame-duck"

    public mutating func shutdownRequested() -> Action {
        switch state {
        case .established(let node):
            state = .finished
            return .unregisterSendAndClose(.session(sessionEnvelope(.finished, to: node)))
        case .finished, .failed:
            return .none
        default:
            state = .finished
            return .sendAndClose(.session(sessionEnvelope(.finished)))
        }
    }

    /// The hub ends this session because another session took its node, or a limit was exceeded.
    public mutating func terminated(_ reason: Reason) -> Action {
        fail(reason)
    }

    /// The connection closed.
    public mutating func peerClosed() -> Action {
        let node = establishedNode
        if case .failed = state {} else { state = .finished }
        return node.map(Action.unregister) ?? .none
    }

    private mutating func fail(_ reason: Reason) -> Action {
        let wasEstablished = establishedNode
        switch state {
        case .finished, .failed: return .none
        default: break
        }
        state = .failed(reason)
        let envelope = Envelope.session(sessionEnvelope(.failed, to: wasEstablished, reason: reason))
        if wasEstablished != nil { return .unregisterSendAndClose(envelope) }
        return .sendAndClose(envelope)
    }

    private var stateName: String {
        switch state {
        case .new: "new"
        case .negotiating, .securingTransport: "negotiating"
        case .authenticating, .verifyingCredentials: "authenticating"
        case .established: "established"
        case .finished: "finished"
        case .failed: "failed"
        }
    }
}
