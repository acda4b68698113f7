import Foundation
import NIOCore
import NIOPosix
import RelayCore
import RelayTransport
import Synchronization

/// An async/await LIME client for a Relay hub (or any LIME server), over WebSocket or TCP.
///
/// ```swift
/// let client = try await LIMEClient.connect(to: "ws://127.0.0.1:8080", identity: "alice@relay.local")
/// try await client.send(Message(to: Node("bob@relay.local"), text: "hello"))
/// for await message in client.messages { print(message.content) }
/// try await client.finish()
/// ```
public final class LIMEClient: Sendable {
    /// How the client proves who it is.
    public enum Authentication: Sendable {
        /// Any identity, no secret (when the hub offers guest access).
        case guest
        /// A password checked by the hub (sent base64-encoded, as LIME's `plain` scheme says).
        case plain(password: String)
        /// A per-identity key (`relay passwd --key` makes one; sent base64-encoded).
        case key(String)
        /// A token the hub checks, a JWT (LIME's `external` scheme; sent base64-encoded).
        case external(token: String, issuer: String? = nil)
        /// The TLS client certificate of `Options.tls` names the identity.
        case transport

        /// The scheme and the `authentication` object of the session's `authenticating` envelope.
        var sessionFields: (scheme: String, authentication: JSONObject) {
            switch self {
            case .guest: return ("guest", [:])
            case .plain(let password): return ("plain", ["password": .string(Data(password.utf8).base64EncodedString())])
            case .key(let key): return ("key", ["key": .string(Data(key.utf8).base64EncodedString())])
            case .external(let token, let issuer):
                var fields: JSONObject = ["token": .string(Data(token.utf8).base64EncodedString())]
                if let issuer { fields["issuer"] = .string(issuer) }
                return ("external", fields)
            case .transport: return ("transport", [:])
            }
        }
    }

    /// What the client is given at connect time and keeps for every reconnection.
    public struct Options: Sendable {
        /// The identity to authenticate as (`name@domain`); nil lets a guest hub pick one.
        public var identity: Identity?
        /// The instance to ask for; the hub assigns one when nil.
        public var instance: String?
        public var authentication: Authentication
        /// The deadline of a request when none is given.
        public var requestTimeout: Duration
        /// How long connecting and establishing the session may take.
        public var connectTimeout: Duration
        /// The largest envelope accepted from the server.
        public var maximumEnvelopeBytes: Int
        /// Envelopes held per incoming stream until the application reads them; newer ones are
        /// dropped (and counted in `droppedCount`) when it is full.
        public var bufferSize: Int
        /// Bytes sent and not yet written to the connection beyond which sending waits.
        public var maximumPendingBytes = 4 << 20
        /// TLS: with options, a `tcp://` session insists on TLS (negotiated after `new`); `wss://`
        /// is TLS anyway (the system's roots when nil).
        public var tls: TLSClientOptions?
        /// How the client reconnects when the connection is lost (`.never` to end instead).
        public var reconnect = ReconnectPolicy()
        /// Over WebSocket, offer permessage-deflate: when the server accepts, messages of at least
        /// this many bytes are compressed (nil: no compression).
        public var compressionThreshold: Int?
        /// Over `tcp://`, choose LIME's session compression (`gzip`) when the server offers it.
        public var sessionCompression = false
        /// How often the client pings the hub (`get /ping`) to notice a connection that went
        /// silent (a paused network, a frozen hub); nil: never.
        public var pingInterval: Duration? = .seconds(60)
        /// Pings in a row left unanswered (each waits `pingInterval`) before the connection is
        /// taken for lost, closed, and reconnected as `reconnect` says.
        public var maximumPingsOutstanding = 2

        public init(
            identity: Identity? = nil, instance: String? = nil, authentication: Authentication = .guest,
            requestTimeout: Duration = .seconds(30), connectTimeout: Duration = .seconds(10),
            maximumEnvelopeBytes: Int = LIMEStreamFramer.defaultMaximumEnvelopeSize, bufferSize: Int = 10_000
        ) {
            self.identity = identity
            self.instance = instance
            self.authentication = authentication
            self.requestTimeout = requestTimeout
            self.connectTimeout = connectTimeout
            self.maximumEnvelopeBytes = maximumEnvelopeBytes
            self.bufferSize = bufferSize
        }
    }

    /// The connection in use, or what waits for the next one.
    struct Link: Sendable {
        /// The connection while it is up and restored.
        var transport: LIMETransport?
        /// Envelopes sent while reconnecting, in order, with their size in all.
        var held: [[UInt8]] = []
        var heldBytes = 0
        var session: (local: Node, remote: Node?)
        var server: String
        var reconnects = 0
    }

    let core: ClientCore
    let options: Options
    let link: Mutex<Link>
    let servers: [String]
    let group: any EventLoopGroup
    var connectionEvents: ConnectionEvents { core.events }
    let supervisor = Mutex<Task<Void, Never>?>(nil)
    let keepalive = Mutex<Task<Void, Never>?>(nil)

    /// The node the hub gave this client (on the connection in use).
    public var localNode: Node { link.withLock { $0.session.local } }
    /// The hub's node.
    public var remoteNode: Node? { link.withLock { $0.session.remote } }
    /// The server of the connection in use (or the last one).
    public var connectedServer: String { link.withLock { $0.server } }
    /// How many times the client has reconnected.
    public var reconnectCount: Int { link.withLock { $0.reconnects } }
    /// The permessage-deflate parameters the server accepted on the connection in use, or nil
    /// when it is not compressed (`Options.compressionThreshold`).
    public var negotiatedCompression: PerMessageDeflate? { link.withLock { $0.transport?.compression?.parameters } }
    /// Whether a connection is up (and what was set up on it restored).
    public var isConnected: Bool { link.withLock { $0.transport != nil } }

    /// What happens to the connection: `disconnected`, `reconnected`, `slowConsumer`... (the newest
    /// 100 wait for a reader).
    public var events: AsyncStream<ConnectionEvent> { connectionEvents.stream }

    /// Messages addressed to this client, in arrival order.
    public var messages: AsyncStream<LIMEMessage> { core.messages }
    /// Notifications (receipts) addressed to this client.
    public var notifications: AsyncStream<LIMENotification> { core.notifications }
    /// Command requests addressed to this client (pings are answered automatically).
    public var commands: AsyncStream<LIMECommand> { core.commands }
    /// Envelopes dropped because a stream's buffer was full.
    public var droppedCount: Int { core.droppedCount }

    private init(core: ClientCore, options: Options, servers: [String], group: any EventLoopGroup, first: Connection) {
        self.core = core
        self.options = options
        self.servers = servers
        self.group = group
        self.link = Mutex(Link(transport: first.transport, session: first.session, server: first.server))
    }

    /// Connects with an identity given as text (`name@domain`).
    public static func connect(
        to url: String, identity: String? = nil, authentication: Authentication = .guest,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> LIMEClient {
        var options = Options(authentication: authentication)
        if let identity {
            guard let node = Node(identity) else {
                throw LIMEClientError.sessionFailed(
                    Reason(code: ReasonCode.validationInvalidIdentity, description: "'\(identity)' is not name@domain"))
            }
            options.identity = node.identity
            options.instance = node.instance
        }
        return try await connect(to: url, options: options, group: group)
    }

    /// Connects to `ws://HOST:PORT[/PATH]`, `wss://HOST:PORT[/PATH]` or `tcp://HOST:PORT` (also
    /// `net.tcp://`) and establishes a session.
    public static func connect(
        to url: String, options: Options, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> LIMEClient {
        try await connect(to: [url], options: options, group: group)
    }

    /// Connects to the first of `urls` that establishes a session (each is tried once, in the
    /// order `ReconnectPolicy.shuffleServers` gives), and reconnects over them when the
    /// connection is lost, as `Options.reconnect` says.
    public static func connect(
        to urls: [String], options: Options, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> LIMEClient {
        guard !urls.isEmpty else { throw LIMEClientError.invalidURL("") }
        for url in urls where LIMEEndpoint(url) == nil { throw LIMEClientError.invalidURL(url) }
        var rotation = ServerRotation(urls, shuffled: options.reconnect.shuffleServers)
        let core = ClientCore(bufferSize: options.bufferSize, reconnects: options.reconnect.maximumAttempts != 0)
        var lastError: any Error = LIMEClientError.invalidURL("")
        for _ in 0..<rotation.count {
            let url = rotation.next()
            do {
                let first = try await openSession(to: url, core: core, options: options, instance: options.instance, group: group)
                let client = LIMEClient(core: core, options: options, servers: rotation.servers, group: group, first: first)
                client.startSupervising(after: rotation)
                client.startKeepalive()
                return client
            } catch {
                lastError = error
            }
        }
        core.ended(Reason(code: ReasonCode.sessionError, description: "\(lastError)"))
        throw lastError
    }

    /// An established session on a new connection.
    struct Connection: Sendable {
        let transport: LIMETransport
        let session: (local: Node, remote: Node?)
        let server: String
    }

    /// Opens a connection to `url` and establishes a session on it with the options' identity and
    /// credentials (asking for `instance`).
    static func openSession(
        to url: String, core: ClientCore, options: Options, instance: String?, group: any EventLoopGroup
    ) async throws -> Connection {
        guard let endpoint = LIMEEndpoint(url) else { throw LIMEClientError.invalidURL(url) }
        let (scheme, authentication) = options.authentication.sessionFields
        let machine = LIMEClientSessionMachine(
            configuration: .init(
                identity: options.identity, instance: instance, scheme: scheme, authentication: authentication,
                compression: options.sessionCompression ? "gzip" : "none", encryption: options.tls != nil ? "tls" : "none"))
        let tls = options.tls ?? TLSClientOptions()
        let host = endpoint.host
        let generation = core.beginConnection()
        let transport: LIMETransport
        do {
            transport = try await LIMETransportConnector.connect(
                to: endpoint, group: group, connectTimeout: options.connectTimeout,
                maximumEnvelopeBytes: options.maximumEnvelopeBytes, compressionThreshold: options.compressionThreshold,
                makeTLSHandler: { try tls.makeHandler(host: host) }
            ) { reader in
                LIMEClientHandler(machine: machine, reader: reader, core: core, generation: generation) { try tls.makeHandler(host: host) }
            }
        } catch LIMETransportError.upgradeRefused {
            throw LIMEClientError.upgradeRefused
        }
        // The wait for `established` ends by the session or by the connection: at the deadline, or
        // when the task is cancelled (a `finish()` during a reconnection), the connection is ended
        // with the reason, which fails the wait. A deadline racing the wait would leave it behind.
        let channel = transport.channel
        let timeout = "Timed out: establishing the session"
        let deadline = channel.eventLoop.scheduleTask(in: TimeAmount(options.connectTimeout)) {
            core.connectionEnded(generation, reason: Reason(code: ReasonCode.sessionError, description: timeout))
            channel.close(promise: nil)
        }
        defer { deadline.cancel() }
        do {
            let session = try await withTaskCancellationHandler {
                try await core.waitForEstablishment()
            } onCancel: {
                core.connectionEnded(generation, reason: Reason(code: ReasonCode.sessionError, description: "Cancelled"))
                channel.close(promise: nil)
            }
            return Connection(transport: transport, session: session, server: url)
        } catch LIMEClientError.sessionFailed(let reason) where reason.description == timeout {
            channel.close(promise: nil)
            throw LIMEClientError.timedOut("establishing the session")
        } catch {
            channel.close(promise: nil)
            throw error
        }
    }

    // MARK: - Sending

    /// Sends a message. A message with an `id` may come back as notifications (receipts).
    public func send(_ message: LIMEMessage) async throws {
        try await write(.message(message))
    }

    /// Sends a notification (a receipt about a message received).
    public func send(_ notification: LIMENotification) async throws {
        try await write(.notification(notification))
    }

    /// Sends a command without waiting for a response (a response to a request, or a one-way command).
    public func send(_ command: LIMECommand) async throws {
        try await write(.command(command))
    }

    /// Queues an envelope; waits for the connection to take it only when more than
    /// `Options.maximumPendingBytes` are waiting, so a fast publisher is held back instead of
    /// filling memory. While reconnecting it is held, in order, up to the reconnect buffer.
    private func write(_ envelope: Envelope) async throws {
        if let writer = try enqueue(LIMECodec.encode(envelope)), writer.pendingBytes > options.maximumPendingBytes {
            try await writer.flushed().get()
        }
    }

    /// Hands bytes to the connection, or holds them while there is none; returns the writer that
    /// took them. Under the link's lock, so that nothing overtakes what is held.
    @discardableResult
    func enqueue(_ bytes: [UInt8]) throws -> ChannelWriter? {
        if let reason = core.endReason { throw LIMEClientError.sessionFailed(reason) }
        return try link.withLock { link in
            if let writer = link.transport?.writer {
                writer.enqueue(bytes)
                return writer
            }
            guard link.heldBytes + bytes.count <= options.reconnect.bufferBytes else { throw LIMEClientError.reconnectBufferFull }
            link.held.append(bytes)
            link.heldBytes += bytes.count
            return nil
        }
    }

    /// Sends a command request and waits for its response, at most `timeout` (default: the options'
    /// request timeout). The response is returned whatever its status; a failure response carries
    /// the reason. Cancelling the calling task abandons the wait; a late response is discarded.
    ///
    /// If the connection is lost before the response comes, the request fails with
    /// `LIMEClientError.disconnected`; with `retry`, it is sent again once reconnected (within the
    /// same deadline), which may carry it out twice. One made while reconnecting is held and
    /// sent once reconnected.
    public func request(_ command: LIMECommand, timeout: Duration? = nil, retry: Bool = false) async throws -> LIMECommand {
        let deadline = ContinuousClock.now + (timeout ?? options.requestTimeout)
        while true {
            do {
                return try await request(command, until: deadline) { try self.enqueue($0) }
            } catch LIMEClientError.disconnected where retry && ContinuousClock.now < deadline {
                continue
            }
        }
    }

    /// One attempt of a request, sent by `send` (the link, or a connection being restored).
    func request(
        _ command: LIMECommand, until deadline: ContinuousClock.Instant, send: @escaping @Sendable ([UInt8]) throws -> Void
    ) async throws -> LIMECommand {
        var command = command
        let id = command.header.id ?? UUID().uuidString.lowercased()
        command.header.id = id
        let bytes = LIMECodec.encode(.command(command))
        let core = self.core
        let eventLoop = group.any()
        let what = "\(command.method.rawValue) \(command.uri ?? "") (id \(id))"
        // The deadline's timer is cancelled as soon as the answer is in: at thousands of requests
        // a second, timers left to expire would pile up for the whole timeout.
        let deadlineTimer = DeadlineTimer()
        defer { deadlineTimer.cancel() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<LIMECommand, any Error>) in
                guard core.addPending(id, continuation) else {
                    continuation.resume(
                        throwing: LIMEClientError.sessionFailed(
                            core.endReason ?? Reason(code: ReasonCode.sessionError, description: "The session has ended")))
                    return
                }
                deadlineTimer.set(
                    eventLoop.scheduleTask(deadline: NIODeadline.now() + TimeAmount(deadline - ContinuousClock.now)) {
                        core.removePending(id)?.resume(throwing: LIMEClientError.timedOut(what))
                    })
                do {
                    try send(bytes)
                } catch {
                    core.removePending(id)?.resume(throwing: error)
                }
            }
        } onCancel: {
            core.removePending(id)?.resume(throwing: CancellationError())
        }
    }

    /// Sends `get /ping` to the hub and waits for the answer.
    public func ping(timeout: Duration? = nil) async throws -> LIMECommand {
        try await request(LIMECommand(method: .get, uri: "/ping"), timeout: timeout)
    }

    // MARK: - Ending

    /// Finishes the session cleanly (`finishing` → `finished`) and closes the connection; the
    /// client does not reconnect afterwards.
    public func finish() async throws {
        core.becomeFinal()
        stopKeepalive()
        await stopSupervising()
        defer { connectionEvents.post(.closed) }
        guard let channel = link.withLock({ $0.transport?.channel }), channel.isActive, !core.isDisconnected else {
            core.ended(nil)
            return
        }
        channel.eventLoop.execute { channel.pipeline.fireUserInboundEventTriggered(ClientCore.FinishRequested()) }
        // A hub that never answers `finished`: the connection is closed at the deadline, which
        // ends the wait (a deadline racing it would leave the wait behind).
        let timedOut = Atomic<Bool>(false)
        let deadline = channel.eventLoop.scheduleTask(in: TimeAmount(options.connectTimeout)) {
            timedOut.store(true, ordering: .relaxed)
            channel.close(promise: nil)
        }
        _ = await core.waitForEnd()
        deadline.cancel()
        try? await channel.closeFuture.get()
        if timedOut.load(ordering: .relaxed) { throw LIMEClientError.timedOut("finishing the session") }
    }

    /// Closes the connection without finishing the session; the client does not reconnect.
    public func close() async {
        core.becomeFinal()
        stopKeepalive()
        await stopSupervising()
        defer { connectionEvents.post(.closed) }
        if let channel = link.withLock({ $0.transport?.channel }), channel.isActive, !core.isDisconnected {
            try? await channel.close()
        }
        core.ended(Reason(code: ReasonCode.sessionError, description: "The connection closed"))
        _ = await core.waitForEnd()
    }

    /// Waits until the session ends for good (finished, closed, or out of reconnect attempts);
    /// returns the failure reason, or nil for a clean finish.
    public func waitUntilEnded() async -> Reason? {
        await core.waitForEnd()
    }
}

/// A request's deadline timer, cancelled when the request ends whichever way.
private final class DeadlineTimer: Sendable {
    private let timer = Mutex<Scheduled<Void>?>(nil)

    func set(_ scheduled: Scheduled<Void>) { timer.withLock { $0 = scheduled } }

    func cancel() { timer.withLock { $0?.cancel() } }
}
