/// The options a NATS client sends in CONNECT.
public struct NATSConnectOptions: Sendable, Equatable {
    public var verbose = false
    public var pedantic = false
    public var echo = true
    public var headers = false
    public var noResponders = false
    public var name: String?
    public var user: String?
    public var password: String?
    public var token: String?

    public init() {}

    init(_ object: JSONObject) {
        verbose = object["verbose"]?.boolValue ?? false
        pedantic = object["pedantic"]?.boolValue ?? false
        echo = object["echo"]?.boolValue ?? true
        headers = object["headers"]?.boolValue ?? false
        noResponders = object["no_responders"]?.boolValue ?? false
        name = object["name"]?.stringValue
        user = object["user"]?.stringValue
        password = object["pass"]?.stringValue
        token = object["auth_token"]?.stringValue
    }
}

/// The server side of one NATS client connection, free of I/O: what nats-server does with each
/// operation, as actions for the hub to carry out.
public struct NATSServerConnectionMachine: Sendable {
    public struct Configuration: Sendable {
        /// The INFO object sent on connect (server id, version, max_payload, headers, client id...).
        public var info: JSONObject
        /// Whether CONNECT must carry credentials.
        public var authRequired: Bool
        /// Pings the client may leave unanswered before the connection is stale.
        public var maximumPingsOutstanding: Int
        /// The node a connection is registered as when its CONNECT names nobody (or it sends none).
        public var anonymousNode: Node?
        /// Whether the client must upgrade to TLS after INFO before anything else (`tls_required`).
        public var tlsRequired: Bool

        public init(
            info: JSONObject, authRequired: Bool = false, maximumPingsOutstanding: Int = 2, anonymousNode: Node? = nil,
            tlsRequired: Bool = false
        ) {
            self.info = info
            self.authRequired = authRequired
            self.maximumPingsOutstanding = maximumPingsOutstanding
            self.anonymousNode = anonymousNode
            self.tlsRequired = tlsRequired
        }
    }

    public enum State: Sendable, Equatable {
        case awaitingConnect
        case authenticating(NATSConnectOptions)
        case connected(NATSConnectOptions)
        case closed
    }

    public enum Action: Sendable, Equatable {
        case send([NATSOperation])
        /// Check the credentials of CONNECT, then report `connectAccepted` or `connectRejected`.
        case authenticate(NATSConnectOptions)
        /// The connection is established with these options: register it with the hub as `publisher`.
        case register(NATSConnectOptions)
        case subscribe(sid: String, subject: String, queue: String?)
        case unsubscribe(sid: String, max: Int?)
        /// Publish this message (headers already turned into metadata, type and status).
        case publish(PublishedMessage)
        /// Publish a PUB whose payload is still where the parser found it, in the bytes it was given.
        case forward(NATSPublishInPlace)
        /// Send `-ERR` with the error's text, then close.
        case failAndClose(NATSProtocolError)
    }

    public let configuration: Configuration
    public private(set) var state: State = .awaitingConnect {
        didSet {
            // Kept apart from `state`: reading them per operation would copy the options' strings.
            if case .connected(let options) = state {
                (verbose, headers, isConnected) = (options.verbose, options.headers, true)
            } else {
                isConnected = false
            }
        }
    }
    private var isConnected = false
    private var verbose = false
    private var headers = false
    private var pingsOutstanding = 0
    /// Whether the connection runs over TLS.
    public private(set) var isTransportSecured = false
    /// The node the connection is registered as: the publisher of what it publishes.
    public private(set) var publisher: Node?
    /// The last subject published to that was valid: clients publish to few subjects, and checking
    /// each one again was a visible part of the cost of a message.
    private var lastValidSubject = ""
    /// Operations that arrived while credentials were being checked.
    private var deferred: [NATSOperation] = []
    /// A protocol error that came after them: reported once they are carried out, as nats-server
    /// carries out what a connection sent before its bad operation.
    private var deferredError: NATSProtocolError?

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// The options of the established connection.
    public var options: NATSConnectOptions? {
        if case .connected(let options) = state { return options }
        return nil
    }

    /// The connection opened: the server speaks first, with INFO.
    public mutating func connected() -> [Action] {
        [.send([.info(configuration.info)])]
    }

    /// The hub entered lame-duck mode: a connected client gets INFO again with `ldm`, as
    /// nats-server sends it, so it reconnects to another server.
    public mutating func lameDuckEntered() -> [Action] {
        guard isConnected else { return [] }
        var info = configuration.info
        info["ldm"] = true
        return [.send([.info(info)])]
    }

    /// The client upgraded the connection to TLS after INFO.
    public mutating func transportSecured() {
        isTransportSecured = true
    }

    /// The client did not connect (CONNECT, or the TLS handshake) in the time the hub allows.
    public mutating func connectTimedOut() -> [Action] {
        switch state {
        case .awaitingConnect, .authenticating: fail(NATSProtocolError(.authenticationTimeout))
        default: []
        }
    }

    /// An operation arrived from the client.
    public mutating func operationReceived(_ operation: NATSOperation) -> [Action] {
        var actions: [Action] = []
        operationReceived(operation, into: &actions)
        return actions
    }

    /// An operation arrived: its actions are appended to `actions` (one array for a whole read,
    /// the operation moved in rather than copied).
    public mutating func operationReceived(_ operation: consuming NATSOperation, into actions: inout [Action]) {
        switch state {
        case .closed:
            return
        case .authenticating:
            deferred.append(operation)
        case .awaitingConnect:
            if configuration.tlsRequired && !isTransportSecured {
                actions += fail(NATSProtocolError(.tlsRequired))
                return
            }
            if case .connect(let object) = operation {
                let options = NATSConnectOptions(object)
                state = .authenticating(options)
                actions.append(.authenticate(options))
                return
            }
            // Without credentials to check, a client may start straight away (telnet users do).
            guard !configuration.authRequired else {
                actions += fail(NATSProtocolError(.authorization, detail: "CONNECT expected first"))
                return
            }
            state = .connected(NATSConnectOptions())
            publisher = configuration.anonymousNode
            actions.append(.register(NATSConnectOptions()))
            connectedOperation(operation, into: &actions)
        case .connected:
            connectedOperation(operation, into: &actions)
        }
    }

    /// A PUB without headers arrived, its payload left in the parser's input (`NATSParser`'s
    /// `publishInPlace`). Returns false when the machine needs it as an operation (before the
    /// connection is established); otherwise its actions are appended: `.forward`, or an error.
    public mutating func publishInPlaceReceived(_ publication: NATSPublishInPlace, into actions: inout [Action]) -> Bool {
        // Before the connection is established it goes the usual way, which checks everything.
        guard isConnected else { return false }
        guard checkPublishSubject(publication.subject, into: &actions) else { return true }
        actions.append(.forward(publication))
        if verbose { actions.append(.send([.ok])) }
        return true
    }

    /// Whether a PUB's subject is valid; if not, the error is appended.
    private mutating func checkPublishSubject(_ subject: String, into actions: inout [Action]) -> Bool {
        if subject != lastValidSubject {
            if Subject.publishError(subject) != nil {
                actions.append(.send([.error(NATSProtocolError(.invalidPublishSubject).errText)]))
                return false
            }
            lastValidSubject = subject
        }
        return true
    }

    /// The hub accepted the credentials of CONNECT, as those of `node` (nil: the anonymous node).
    public mutating func connectAccepted(as node: Node? = nil) -> [Action] {
        guard case .authenticating(let options) = state else { return [] }
        state = .connected(options)
        publisher = node ?? configuration.anonymousNode
        var actions: [Action] = [.register(options)]
        if options.verbose { actions.append(.send([.ok])) }
        let waiting = deferred
        deferred = []
        for operation in waiting where state != .closed { operationReceived(operation, into: &actions) }
        if let error = deferredError.take() { actions += fail(error) }
        return actions
    }

    /// The hub refused the credentials of CONNECT.
    public mutating func connectRejected() -> [Action] {
        guard case .authenticating = state else { return [] }
        return fail(NATSProtocolError(.authorization))
    }

    private mutating func connectedOperation(_ operation: consuming NATSOperation, into actions: inout [Action]) {
        switch consume operation {
        case .ping:
            actions.append(.send([.pong]))
            return
        case .pong:
            pingsOutstanding = 0
            return
        case .connect:
            // A second CONNECT changes nothing that matters here; nats-server accepts it.
            break
        case .publish(let subject, let replyTo, let headers, let payload):
            guard checkPublishSubject(subject, into: &actions) else { return }
            if headers != nil && !self.headers {
                actions += fail(NATSProtocolError(.parser, detail: "HPUB without headers enabled in CONNECT"))
                return
            }
            actions.append(.publish(publication(subject: subject, replyTo: replyTo, headers: headers, payload: payload)))
        case .subscribe(let subject, let queue, let sid):
            if Subject.filterError(subject) != nil || queue.map({ $0.isEmpty }) == true {
                actions.append(.send([.error(NATSProtocolError(.invalidSubject).errText)]))
                return
            }
            actions.append(.subscribe(sid: sid, subject: subject, queue: queue))
        case .unsubscribe(let sid, let max):
            actions.append(.unsubscribe(sid: sid, max: max))
        case .info, .message, .ok, .error:
            actions += fail(NATSProtocolError(.unknownOperation))
            return
        }
        if verbose { actions.append(.send([.ok])) }
    }

    /// A PUB or HPUB as the core's publication: `Content-Type` is its type, the status stays a
    /// status, other headers are metadata (a repeated header's values joined with ", ").
    private func publication(subject: String, replyTo: String?, headers: NATSHeaders?, payload: [UInt8]) -> PublishedMessage {
        guard let headers else { return PublishedMessage(subject: subject, replyTo: replyTo, publisher: publisher, body: .bytes(payload)) }
        let (type, metadata) = headers.typeAndMetadata
        return PublishedMessage(
            subject: subject, replyTo: replyTo, publisher: publisher, type: type, body: .bytes(payload), metadata: metadata,
            status: headers.status)
    }

    /// The bytes could not be parsed (the connection reads nothing more). While credentials are
    /// being checked, the error waits for the operations before it.
    public mutating func protocolErrorOccurred(_ error: NATSProtocolError) -> [Action] {
        if case .authenticating = state {
            deferredError = deferredError ?? error
            return []
        }
        return fail(error)
    }

    /// The keepalive interval passed: ping, or end a connection whose pings went unanswered.
    public mutating func pingIntervalElapsed() -> [Action] {
        guard case .connected = state else { return [] }
        if pingsOutstanding >= configuration.maximumPingsOutstanding {
            return fail(NATSProtocolError(.staleConnection))
        }
        pingsOutstanding += 1
        return [.send([.ping])]
    }

    /// The hub ends the connection (slow consumer, shutdown...).
    public mutating func terminated(_ error: NATSProtocolError) -> [Action] {
        fail(error)
    }

    public mutating func peerClosed() {
        state = .closed
    }

    private mutating func fail(_ error: NATSProtocolError) -> [Action] {
        guard state != .closed else { return [] }
        state = .closed
        return [.failAndClose(error)]
    }
}
