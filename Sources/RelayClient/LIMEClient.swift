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
    }

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

    private let channel: any Channel
    /// Coalesces what the client sends into one flush per turn of the connection's event loop (the
    /// session handler's own envelopes go through it too, so the order is kept).
    private let writer: ChannelWriter
    let core: ClientCore
    let options: Options

    /// The node the hub gave this client.
    public let localNode: Node
    /// The hub's node.
    public let remoteNode: Node?

    /// Messages addressed to this client, in arrival order.
    public var messages: AsyncStream<LIMEMessage> { core.messages }
    /// Notifications (receipts) addressed to this client.
    public var notifications: AsyncStream<LIMENotification> { core.notifications }
    /// Command requests addressed to this client (pings are answered automatically).
    public var commands: AsyncStream<LIMECommand> { core.commands }
    /// Envelopes dropped because a stream's buffer was full.
    public var droppedCount: Int { core.droppedCount }

    private init(
        transport: LIMETransport, core: ClientCore, options: Options, localNode: Node, remoteNode: Node?
    ) {
        self.channel = transport.channel
        self.writer = transport.writer
        self.core = core
        self.options = options
        self.localNode = localNode
        self.remoteNode = remoteNode
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
        guard let endpoint = LIMEEndpoint(url) else { throw LIMEClientError.invalidURL(url) }
        let core = ClientCore(bufferSize: options.bufferSize)
        var authentication = JSONObject()
        let scheme: String
        switch options.authentication {
        case .guest:
            scheme = "guest"
        case .plain(let password):
            scheme = "plain"
            authentication["password"] = .string(Data(password.utf8).base64EncodedString())
        case .key(let key):
            scheme = "key"
            authentication["key"] = .string(Data(key.utf8).base64EncodedString())
        case .external(let token, let issuer):
            scheme = "external"
            authentication["token"] = .string(Data(token.utf8).base64EncodedString())
            if let issuer { authentication["issuer"] = .string(issuer) }
        case .transport:
            scheme = "transport"
        }
        let machine = LIMEClientSessionMachine(
            configuration: .init(
                identity: options.identity, instance: options.instance, scheme: scheme, authentication: authentication,
                encryption: options.tls != nil ? "tls" : "none"))
        let tls = options.tls ?? TLSClientOptions()
        let host = endpoint.host
        let transport: LIMETransport
        do {
            transport = try await LIMETransportConnector.connect(
                to: endpoint, group: group, connectTimeout: options.connectTimeout,
                maximumEnvelopeBytes: options.maximumEnvelopeBytes, makeTLSHandler: { try tls.makeHandler(host: host) }
            ) { reader in
                LIMEClientHandler(machine: machine, reader: reader, core: core) { try tls.makeHandler(host: host) }
            }
        } catch LIMETransportError.upgradeRefused {
            throw LIMEClientError.upgradeRefused
        }
        do {
            let (local, remote) = try await withDeadline(options.connectTimeout, what: "establishing the session") {
                try await core.waitForEstablishment()
            }
            return LIMEClient(transport: transport, core: core, options: options, localNode: local, remoteNode: remote)
        } catch {
            transport.channel.close(promise: nil)
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
    /// filling memory.
    private func write(_ envelope: Envelope) async throws {
        if let reason = core.endReason { throw LIMEClientError.sessionFailed(reason) }
        if writer.enqueue(LIMECodec.encode(envelope)) > options.maximumPendingBytes {
            try await writer.flushed().get()
        }
    }

    /// Sends a command request and waits for its response, at most `timeout` (default: the options'
    /// request timeout). The response is returned whatever its status; a failure response carries
    /// the reason. Cancelling the calling task abandons the wait; a late response is discarded.
    public func request(_ command: LIMECommand, timeout: Duration? = nil) async throws -> LIMECommand {
        var command = command
        let id = command.header.id ?? UUID().uuidString.lowercased()
        command.header.id = id
        let deadline = timeout ?? options.requestTimeout
        let bytes = LIMECodec.encode(.command(command))
        let writer = self.writer
        let channel = self.channel
        let core = self.core
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
                    channel.eventLoop.scheduleTask(in: TimeAmount(deadline)) {
                        core.removePending(id)?.resume(throwing: LIMEClientError.timedOut(what))
                    })
                writer.enqueue(bytes)
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

    /// Finishes the session cleanly (`finishing` → `finished`) and closes the connection.
    public func finish() async throws {
        let channel = self.channel
        channel.eventLoop.execute { channel.pipeline.fireUserInboundEventTriggered(ClientCore.FinishRequested()) }
        _ = try await withDeadline(options.connectTimeout, what: "finishing the session") { await self.core.waitForEnd() }
        try? await channel.closeFuture.get()
    }

    /// Closes the connection without finishing the session.
    public func close() async {
        try? await channel.close()
        _ = await core.waitForEnd()
    }

    /// Waits until the session ends; returns the failure reason, or nil for a clean finish.
    public func waitUntilEnded() async -> Reason? {
        await core.waitForEnd()
    }
}

/// Runs `body`, failing with `LIMEClientError.timedOut` if it takes longer than `limit`.
func withDeadline<T: Sendable>(_ limit: Duration, what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            throw LIMEClientError.timedOut(what)
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}

/// A request's deadline timer, cancelled when the request ends whichever way.
private final class DeadlineTimer: Sendable {
    private let timer = Mutex<Scheduled<Void>?>(nil)

    func set(_ scheduled: Scheduled<Void>) { timer.withLock { $0 = scheduled } }

    func cancel() { timer.withLock { $0?.cancel() } }
}
