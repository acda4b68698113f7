/// The client side of one NATS connection, free of I/O: the handshake (INFO → CONNECT → PING →
/// PONG), answering the server's PINGs, and keepalive with stale-connection detection.
public struct NATSClientConnectionMachine: Sendable {
    public struct Configuration: Sendable {
        /// The CONNECT object (verbose, pedantic, headers, no_responders, name, user/pass...).
        public var connect: JSONObject
        /// Unanswered PINGs before the connection counts as stale.
        public var maximumPingsOutstanding: Int
        /// Whether the client insists on TLS (a `tls://` URL, or TLS options): it upgrades after
        /// INFO and never sends CONNECT in plaintext. Without it, it upgrades when the server
        /// requires TLS (`tls_required`), as nats.go and nats-py do.
        public var requiresTLS: Bool

        public init(connect: JSONObject, maximumPingsOutstanding: Int = 2, requiresTLS: Bool = false) {
            self.connect = connect
            self.maximumPingsOutstanding = maximumPingsOutstanding
            self.requiresTLS = requiresTLS
        }
    }

    public enum State: Sendable, Equatable {
        case awaitingInfo
        /// INFO asked for TLS (or the client did): the connection is being upgraded.
        case securingTransport
        case awaitingPong
        case connected
        case closed
    }

    public enum Action: Sendable, Equatable {
        case send([NATSOperation])
        /// Start TLS on the connection as its client, then report `transportSecured`.
        case startTLS
        /// The handshake is done; `info` is what the server said about itself.
        case connected(info: JSONObject)
        /// A message for one of the client's subscriptions.
        case deliver(subject: String, sid: String, replyTo: String?, headers: NATSHeaders?, payload: [UInt8])
        /// A PONG answered one of the client's PINGs (sent for a flush).
        case pongReceived
        /// The server reported an error that does not end the connection.
        case serverError(String)
        /// The server entered lame-duck mode (an INFO with `ldm`): it will close the connection
        /// soon, and the client should be ready to go elsewhere.
        case lameDuckEntered
        /// The connection cannot go on: close it (and reconnect, unless the client is closing).
        case fail(String)
    }

    public let configuration: Configuration
    public private(set) var state: State = .awaitingInfo
    private var info: JSONObject = [:]
    private var pingsOutstanding = 0

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    public mutating func operationReceived(_ operation: NATSOperation) -> [Action] {
        switch (state, operation) {
        case (.closed, _):
            return []
        case (.awaitingInfo, .info(let object)):
            info = object
            let required = object["tls_required"]?.boolValue == true
            let available = required || object["tls_available"]?.boolValue == true
            if configuration.requiresTLS && !available { return fail("the server does not offer TLS") }
            if required || configuration.requiresTLS {
                state = .securingTransport
                return [.startTLS]
            }
            state = .awaitingPong
            // The PING proves the server accepted CONNECT: its PONG (or an -ERR) comes back first.
            return [.send([.connect(configuration.connect), .ping])]
        case (.awaitingInfo, _):
            return fail("expected INFO from the server")
        case (_, .ping):
            return [.send([.pong])]
        case (.awaitingPong, .pong):
            state = .connected
            return [.connected(info: info)]
        case (.connected, .pong):
            pingsOutstanding = 0
            return [.pongReceived]
        case (.connected, .info(let object)) where object["ldm"]?.boolValue == true:
            return [.lameDuckEntered]
        case (_, .ok), (_, .info):
            return []
        case (_, .error(let text)):
            // nats-server keeps the connection after these; everything else it closes.
            if text.hasPrefix("Invalid Subject") || text.hasPrefix("Invalid Publish Subject") || text.hasPrefix("Permissions Violation") {
                return [.serverError(text)]
            }
            return fail(text)
        case (.connected, .message(let subject, let sid, let replyTo, let headers, let payload)):
            return [.deliver(subject: subject, sid: sid, replyTo: replyTo, headers: headers, payload: payload)]
        default:
            return fail("unexpected operation during the handshake")
        }
    }

    /// The TLS handshake the machine asked for is done: the handshake goes on, encrypted.
    public mutating func transportSecured() -> [Action] {
        guard state == .securingTransport else { return [] }
        state = .awaitingPong
        return [.send([.connect(configuration.connect), .ping])]
    }

    /// The keepalive interval passed.
    public mutating func pingIntervalElapsed() -> [Action] {
        guard state == .connected else { return [] }
        if pingsOutstanding >= configuration.maximumPingsOutstanding { return fail("Stale Connection") }
        pingsOutstanding += 1
        return [.send([.ping])]
    }

    /// The bytes could not be parsed.
    public mutating func protocolErrorOccurred(_ error: NATSProtocolError) -> [Action] {
        fail(error.description)
    }

    public mutating func peerClosed() {
        state = .closed
    }

    private mutating func fail(_ reason: String) -> [Action] {
        guard state != .closed else { return [] }
        state = .closed
        return [.fail(reason)]
    }
}
