/// The client side of a LIME session: asks for each state; the server decides.
///
/// Driven by events like the server machine. Once established it answers `get /ping` by itself and
/// hands every other envelope to the application.
public struct LIMEClientSessionMachine: Sendable {
    public struct Configuration: Sendable {
        /// The identity to authenticate as; the server picks one when nil (guest only).
        public var identity: Identity?
        /// The instance to ask for; the server assigns one when nil.
        public var instance: String?
        /// The scheme, for example `guest` or `plain`.
        public var scheme: String
        /// The scheme's data, for example `{"password": "<base64>"}`.
        public var authentication: JSONObject
        /// The compression and encryption chosen when the server negotiates. With encryption
        /// `tls` the client insists on TLS: it never sends credentials over a connection that the
        /// server did not secure.
        public var compression: String
        public var encryption: String

        public init(
            identity: Identity?, instance: String? = nil, scheme: String = "guest", authentication: JSONObject = JSONObject(),
            compression: String = "none", encryption: String = "none"
        ) {
            self.identity = identity
            self.instance = instance
            self.scheme = scheme
            self.authentication = authentication
            self.compression = compression
            self.encryption = encryption
        }
    }

    public enum State: Sendable, Hashable {
        case idle
        case new
        case negotiating
        /// The negotiation chose TLS: the connection is being upgraded.
        case securingTransport
        case authenticating
        case established(local: Node, remote: Node?)
        case finishing
        case finished
        case failed(Reason)
    }

    public enum Action: Sendable, Hashable {
        case none
        case send(Envelope)
        /// Start TLS on the connection as its client, then report `transportSecured`.
        case startTLS
        /// From the next byte on, the connection is a gzip stream both ways (`compression: gzip`
        /// confirmed): what follows the confirmation in the read is already compressed.
        case startCompression
        /// The session is established: the server gave this node to the client.
        case established(local: Node, remote: Node?)
        /// Hand an envelope to the application.
        case deliver(Envelope)
        /// The session ended cleanly; close the connection.
        case finished
        /// The session failed (the server said so, or the server broke the protocol); close the connection.
        case failed(Reason)
    }

    public let configuration: Configuration
    public private(set) var state: State = .idle
    private var sessionID: String?
    /// Whether the connection runs over TLS (`wss://`, or once the negotiated upgrade is done).
    public private(set) var isTransportSecured = false
    /// The encryption the client chose when the server negotiated.
    private var chosenEncryption = "none"
    private var chosenCompression = "none"

    /// Whether the next envelope may be the confirmation of `compression: gzip`, after which the
    /// bytes are compressed: the reader must then stop after one envelope.
    public var awaitsCompressionSwitch: Bool { state == .negotiating && chosenCompression == "gzip" }

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// The transport is connected: ask for a new session.
    public mutating func connected() -> Action {
        guard state == .idle else { return .none }
        state = .new
        return .send(.session(LIMESession(state: .new)))
    }

    /// Whether a delivery read in place (`LIMEDeliveryInPlace`) goes to its subscription as it is:
    /// in the states where `envelopeReceived` delivers a message. Before, it is decoded and received
    /// as an envelope, which answers it as the state requires.
    public var deliversInPlace: Bool {
        switch state {
        case .established, .finishing: true
        default: false
        }
    }

    /// An envelope arrived from the server.
    public mutating func envelopeReceived(_ envelope: consuming Envelope) -> Action {
        switch state {
        case .idle:
            // A server may refuse a connection before the client has asked for anything (a limit
            // reached): its `failed` can arrive before the transport reports itself ready.
            if case .session(let session) = envelope, session.state == .failed { return sessionEnded(session) }
            return .none
        case .finished, .failed:
            return .none
        case .established(let local, _):
            if case .session(let session) = envelope { return sessionEnded(session) }
            if case .command(let command) = envelope, !command.isResponse, command.method == .get,
                command.uri == "/ping", command.header.id != nil
            {
                var reply = command.success(type: .ping, resource: .object(JSONObject()))
                reply.header.from = local
                return .send(.command(reply))
            }
            return .deliver(envelope)
        case .finishing:
            if case .session(let session) = envelope { return sessionEnded(session) }
            return .deliver(envelope)
        case .securingTransport:
            return protocolViolation("the server sent a \(envelope.kind) before the TLS handshake")
        case .new, .negotiating, .authenticating:
            guard case .session(let session) = envelope else {
                return protocolViolation("the server sent a \(envelope.kind) before the session was established")
            }
            return handshakeSessionReceived(session)
        }
    }

    /// The connection runs over TLS: from the start (`wss://`), or once the upgrade is done.
    public mutating func transportSecured() -> Action {
        isTransportSecured = true
        if state == .securingTransport { state = .negotiating }
        return .none
    }

    private mutating func handshakeSessionReceived(_ session: LIMESession) -> Action {
        if let id = session.header.id { sessionID = id }
        switch session.state {
        case .negotiating:
            guard session.compressionOptions != nil || session.encryptionOptions != nil else {
                // The server confirms the options; it will send `authenticating` next, after the
                // TLS handshake when TLS was chosen.
                if (session.encryption ?? chosenEncryption) == "tls" && !isTransportSecured {
                    state = .securingTransport
                    return .startTLS
                }
                if (session.compression ?? chosenCompression) == "gzip" {
                    chosenCompression = "started"
                    return .startCompression
                }
                return .none
            }
            state = .negotiating
            let compression = pick(configuration.compression, from: session.compressionOptions)
            let encryption = isTransportSecured ? "none" : pick(configuration.encryption, from: session.encryptionOptions)
            if configuration.encryption == "tls" && !isTransportSecured && encryption != "tls" {
                return refuseInsecure()
            }
            chosenEncryption = encryption ?? "none"
            chosenCompression = compression ?? "none"
            return .send(
                .session(
                    LIMESession(
                        header: EnvelopeHeader(id: sessionID), state: .negotiating, encryption: encryption, compression: compression)))
        case .authenticating:
            if configuration.encryption == "tls" && !isTransportSecured { return refuseInsecure() }
            if let offered = session.schemeOptions, !offered.contains(where: { $0.lowercased() == configuration.scheme.lowercased() }) {
                state = .failed(
                    Reason(
                        code: ReasonCode.sessionAuthenticationFailed,
                        description:
                            "The server does not offer scheme '\(configuration.scheme)' (it offers \(offered.joined(separator: ", ")))"))
                if case .failed(let reason) = state { return .failed(reason) }
            }
            state = .authenticating
            let from = configuration.identity.map { Node(identity: $0, instance: configuration.instance) }
            return .send(
                .session(
                    LIMESession(
                        header: EnvelopeHeader(id: sessionID, from: from), state: .authenticating, scheme: configuration.scheme,
                        authentication: .object(configuration.authentication))))
        case .established:
            guard let local = session.header.to else {
                return protocolViolation("the established session names no node for the client")
            }
            state = .established(local: local, remote: session.header.from)
            return .established(local: local, remote: session.header.from)
        case .failed, .finished:
            return sessionEnded(session)
        default:
            return protocolViolation("unexpected session state '\(session.state.rawValue)' during the handshake")
        }
    }

    /// The client asked for TLS and the server did not secure the connection: the credentials stay
    /// unsent.
    private mutating func refuseInsecure() -> Action {
        let reason = Reason(
            code: ReasonCode.sessionNegotiationInvalidOptions, description: "The server does not offer TLS; the credentials were not sent")
        state = .failed(reason)
        return .failed(reason)
    }

    private func pick(_ preferred: String, from options: [String]?) -> String? {
        guard let options, !options.isEmpty else { return nil }
        return options.contains(preferred) ? preferred : options[0]
    }

    private mutating func sessionEnded(_ session: LIMESession) -> Action {
        switch session.state {
        case .finished:
            state = .finished
            return .finished
        case .failed:
            let reason = session.reason ?? Reason(code: ReasonCode.sessionError, description: "The server failed the session")
            state = .failed(reason)
            return .failed(reason)
        default:
            return protocolViolation("unexpected session state '\(session.state.rawValue)'")
        }
    }

    private mutating func protocolViolation(_ text: String) -> Action {
        let reason = Reason(code: ReasonCode.sessionInvalidActionForState, description: "Protocol violation: \(text)")
        state = .failed(reason)
        return .failed(reason)
    }

    /// The application wants to end the session.
    public mutating func finishRequested() -> Action {
        switch state {
        case .established:
            state = .finishing
            return .send(.session(LIMESession(header: EnvelopeHeader(id: sessionID), state: .finishing)))
        case .finishing, .finished, .failed:
            return .none
        default:
            state = .finished
            return .finished
        }
    }

    /// The connection closed or broke.
    public mutating func peerClosed() -> Action {
        switch state {
        case .finished, .failed:
            return .none
        case .finishing:
            state = .finished
            return .finished
        default:
            let reason = Reason(code: ReasonCode.sessionError, description: "The connection closed")
            state = .failed(reason)
            return .failed(reason)
        }
    }

    /// A local failure (for example an undecodable envelope from the server).
    public mutating func invalidInputReceived(_ reason: Reason) -> Action {
        switch state {
        case .finished, .failed: return .none
        default:
            state = .failed(reason)
            return .failed(reason)
        }
    }
}
