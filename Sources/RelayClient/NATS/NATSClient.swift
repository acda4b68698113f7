import Foundation
import NIOCore
import NIOPosix
import RelayCore
import RelayTransport
import Synchronization

/// A message received on a NATS subscription.
public struct NATSMessage: Sendable, Equatable {
    public var subject: String
    public var replyTo: String?
    public var headers: NATSHeaders?
    public var payload: [UInt8]

    /// The payload as UTF-8 text.
    public var text: String { String(decoding: payload, as: UTF8.self) }
}

/// Errors of the NATS client.
public enum NATSClientError: Error, Equatable, CustomStringConvertible {
    case invalidURL(String)
    /// No server could be reached (each one's failure is in the text).
    case connectionFailed(String)
    /// A request found nobody subscribed to its subject (status 503).
    case noResponders
    case timedOut
    /// The client was closed, or gave up reconnecting.
    case closed
    /// Publications wait while the client reconnects, up to a bound; this one did not fit.
    case reconnectBufferFull
    /// More than `maximumPendingBytes` are waiting to be written: the connection cannot keep up.
    /// Wait with `writesDrained()` before publishing more.
    case writeBufferFull
    /// The server refused an operation (`-ERR`).
    case serverError(String)
    /// The connection was lost while the request waited for its reply (the client reconnects).
    case disconnected

    public var description: String {
        switch self {
        case .invalidURL(let url): "Invalid NATS URL '\(url)': expected nats://HOST:PORT or tls://HOST:PORT"
        case .connectionFailed(let text): "Could not connect: \(text)"
        case .noResponders: "No responders are available for the request"
        case .timedOut: "Timed out"
        case .closed: "The connection is closed"
        case .reconnectBufferFull: "The reconnect buffer is full"
        case .writeBufferFull: "More than the maximum of pending bytes are waiting to be written"
        case .serverError(let text): "Server error: \(text)"
        case .disconnected: "Disconnected: the connection was lost before the reply came"
        }
    }
}

/// An async/await client of the NATS protocol, for a Relay hub's NATS port or a nats-server.
///
/// It connects to one of several servers, and when the connection is lost it reconnects with
/// exponential backoff and full jitter, resubscribes everything (queue groups and remaining
/// auto-unsubscribe counts included), and sends the publications it held meanwhile (up to
/// `reconnectBufferBytes`; beyond that `publish` fails). Requests share one reply inbox.
public final class NATSClient: Sendable {
    public struct Options: Sendable {
        public var servers: [String]
        public var name: String?
        public var user: String?
        public var password: String?
        /// A token for CONNECT's `auth_token` (a hub user's key, a JWT, nats-server's token).
        public var token: String?
        /// TLS: with options the client insists on TLS with every server (as with `tls://`
        /// URLs); without, it upgrades when a server requires it, trusting the system's roots.
        public var tls: TLSClientOptions?
        public var echo = true
        /// How the client reconnects when the connection is lost (`.never` to end instead).
        public var reconnect = ReconnectPolicy()
        /// Bytes published but not yet written to the connection, at most; beyond that `publish`
        /// fails with `writeBufferFull` (writes are coalesced, one flush per turn of the event loop).
        public var maximumPendingBytes = 64 << 20
        public var pingInterval: Duration = .seconds(120)
        public var maximumPingsOutstanding = 2
        public var connectTimeout: Duration = .seconds(5)
        public var requestTimeout: Duration = .seconds(5)
        public var maximumPayload = NATSParser.defaultMaximumPayload

        public init(servers: [String]) {
            self.servers = servers
        }
    }

    struct Server: Sendable {
        var host: String
        var port: Int
        var user: String?
        var password: String?
        /// `tls://`: TLS is required with this server.
        var tls = false
    }

    struct SubscriptionRecord: Sendable {
        var subject: String
        var queue: String?
        var limit: Int?
        var delivered = 0
        let inbox: NATSSubscriptionInbox?
        /// Called for each message instead of buffering it (`subscribe(_:queue:handler:)`).
        var handler: (@Sendable (NATSMessage) -> Void)? = nil
    }

    struct FlushWaiter: Sendable {
        let id: Int
        var continuation: CheckedContinuation<Void, any Error>?
    }

    struct State: Sendable {
        /// The connection's writer while connected.
        var writer: ChannelWriter?
        var closed = false
        var subscriptions: [String: SubscriptionRecord] = [:]
        var nextSid = 1
        var held: [[UInt8]] = []
        var heldBytes = 0
        /// One per PING sent for a flush, in order (PONGs come back in order); a waiter that
        /// timed out leaves its place, empty, for its PONG.
        var flushWaiters: [FlushWaiter] = []
        var nextFlush = 0
        var requests: [String: CheckedContinuation<NATSMessage, any Error>] = [:]
        var nextRequest = 0
        var inboxSid: String?
        var info: JSONObject = [:]
        var reconnects = 0
        /// Why the last connection failed, as the server or the handshake said.
        var lastFailure: String?
        /// Servers of the cluster the servers announced (INFO `connect_urls`), not yet tried.
        var discovered: [Server] = []
        var known: Set<String> = []
    }

    public let options: Options
    let servers: [Server]
    let group: any EventLoopGroup
    let state = Mutex(State())
    let inboxPrefix = "_INBOX." + String(UInt64.random(in: .min ... .max), radix: 36)
    private let firstConnection = Mutex<CheckedContinuation<Void, any Error>?>(nil)
    private let manager = Mutex<Task<Void, Never>?>(nil)
    private let (serverErrors, serverErrorInput) = AsyncStream.makeStream(of: String.self, bufferingPolicy: .bufferingNewest(100))
    private let connectionEvents = ConnectionEvents()

    /// What happens to the connection: `disconnected`, `reconnected`, `lameDuck`,
    /// `slowConsumer`... (the newest 100 wait for a reader).
    public var events: AsyncStream<ConnectionEvent> { connectionEvents.stream }

    /// The server's errors that leave the connection open (`-ERR 'Permissions Violation for
    /// Publish to "x"'`, `'Invalid Subject'`...), as nats.go's error handler sees them; the newest
    /// 100 wait for a reader.
    public var errors: AsyncStream<String> { serverErrors }

    init(options: Options, servers: [Server], group: any EventLoopGroup) {
        self.options = options
        self.servers = servers
        self.group = group
    }

    /// Connects to the first server that answers (`nats://[user:pass@]HOST:PORT`) and keeps
    /// the connection up until `close()`.
    public static func connect(
        options: Options, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> NATSClient {
        var servers: [Server] = []
        for url in options.servers {
            guard let components = URLComponents(string: url), let scheme = components.scheme?.lowercased(),
                scheme == "nats" || scheme == "tls", let host = components.host
            else {
                throw NATSClientError.invalidURL(url)
            }
            servers.append(
                Server(
                    host: host, port: components.port ?? 4222, user: components.user, password: components.password, tls: scheme == "tls"))
        }
        guard !servers.isEmpty else { throw NATSClientError.invalidURL("") }
        let client = NATSClient(options: options, servers: servers, group: group)
        try await withCheckedThrowingContinuation { continuation in
            client.firstConnection.withLock { $0 = continuation }
            let task = Task { await client.maintainConnection() }
            client.manager.withLock { $0 = task }
        }
        return client
    }

    /// Connects to one server URL with default options.
    public static func connect(to url: String) async throws -> NATSClient {
        try await connect(options: Options(servers: [url]))
    }

    /// What the server said about itself in INFO.
    public var serverInfo: JSONObject { state.withLock { $0.info } }

    /// How many times the client has reconnected.
    public var reconnectCount: Int { state.withLock { $0.reconnects } }

    /// Whether a connection is up now.
    public var isConnected: Bool { state.withLock { $0.writer != nil } }

    // MARK: - Connection management

    private func maintainConnection() async {
        var rotation = ServerRotation(servers, shuffled: options.reconnect.shuffleServers)
        state.withLock { $0.known = Set(servers.map { "\($0.host):\($0.port)" }) }
        var failures = 0
        var everConnected = false
        var errors: [String] = []
        while !state.withLock({ $0.closed }) {
            let discovered = state.withLock { state in
                defer { state.discovered.removeAll() }
                return state.discovered
            }
            for server in discovered { rotation.add(server) }
            let server = rotation.next()
            do {
                let channel = try await open(server)
                // A server that accepts the connection but never finishes the handshake (frozen,
                // or behind a paused network) is left after the connect timeout.
                let handshake = channel.eventLoop.scheduleTask(in: TimeAmount(options.connectTimeout)) { [self] in
                    if state.withLock({ $0.writer?.channel !== channel }) {
                        connectionFailed("no handshake within \(options.connectTimeout)")
                        channel.close(promise: nil)
                    }
                }
                try await channel.closeFuture.get()
                handshake.cancel()
                if let failure = state.withLock({ $0.lastFailure.take() }) { errors.append("\(server.host):\(server.port): \(failure)") }
            } catch {
                errors.append("\(server.host):\(server.port): \(error)")
            }
            let wasUp = connectionLost()
            if wasUp {
                everConnected = true
                failures = 0
                connectionEvents.post(.disconnected(reason: errors.last ?? "the connection closed"))
                errors.removeAll()
            } else {
                failures += 1
            }
            if state.withLock({ $0.closed }) { break }
            if !everConnected && failures >= servers.count {
                // The first connect tries each server once, then reports.
                resumeFirstConnection(throwing: NATSClientError.connectionFailed(errors.joined(separator: "; ")))
                shutDown()
                return
            }
            if everConnected && !options.reconnect.allowsAttempt(after: failures) {
                shutDown()
                return
            }
            try? await Task.sleep(for: options.reconnect.delay(after: failures))
        }
    }

    private func open(_ server: Server) async throws -> any Channel {
        var connect: JSONObject = [
            "verbose": false, "pedantic": false, "lang": "swift", "version": "relay", "protocol": 1, "headers": true,
            "no_responders": true, "echo": .bool(options.echo),
        ]
        if let name = options.name { connect["name"] = .string(name) }
        if let user = server.user ?? options.user { connect["user"] = .string(user) }
        if let password = server.password ?? options.password { connect["pass"] = .string(password) }
        if let token = options.token { connect["auth_token"] = .string(token) }
        let machine = NATSClientConnectionMachine(
            configuration: .init(
                connect: connect, maximumPingsOutstanding: options.maximumPingsOutstanding, requiresTLS: server.tls || options.tls != nil))
        let tls = options.tls ?? TLSClientOptions()
        let host = server.host
        let maximumPayload = options.maximumPayload
        let pingInterval = TimeAmount(options.pingInterval)
        return try await ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(TimeAmount(options.connectTimeout))
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        NATSClientHandler(machine: machine, maximumPayload: maximumPayload, pingInterval: pingInterval, client: self) {
                            try tls.makeHandler(host: host)
                        })
                }
            }
            .connect(host: server.host, port: server.port).get()
    }

    /// The handshake is done on `channel`: resubscribe everything and send what was held.
    func established(_ channel: any Channel, info: JSONObject) {
        state.withLock { state in
            if state.closed { return }
            var bytes: [UInt8] = []
            for sid in state.subscriptions.keys.sorted(by: { Int($0) ?? 0 < Int($1) ?? 0 }) {
                let record = state.subscriptions[sid]!
                NATSEncoder.encode(.subscribe(subject: record.subject, queue: record.queue, sid: sid), into: &bytes)
                if let limit = record.limit {
                    NATSEncoder.encode(.unsubscribe(sid: sid, max: max(limit - record.delivered, 1)), into: &bytes)
                }
            }
            for held in state.held { bytes.append(contentsOf: held) }
            state.held.removeAll()
            state.heldBytes = 0
            if state.info.isEmpty == false {
                state.reconnects += 1
                connectionEvents.post(
                    .reconnected(server: "nats://\(channel.remoteAddress?.ipAddress ?? "?"):\(channel.remoteAddress?.port ?? 0)"))
            }
            state.info = info
            // A cluster's servers announce the others: they join the servers to reconnect to.
            if case .array(let urls)? = info["connect_urls"] {
                for case .string(let url) in urls where !state.known.contains(url) {
                    guard let separator = url.lastIndex(of: ":"), let port = Int(url[url.index(after: separator)...]) else { continue }
                    let host = String(url[..<separator]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
                    state.known.insert(url)
                    state.discovered.append(Server(host: host, port: port, tls: servers.first?.tls ?? false))
                }
            }
            let writer = ChannelWriter(channel: channel, framing: .stream)
            state.writer = writer
            if !bytes.isEmpty { writer.enqueue(bytes) }
        }
        resumeFirstConnection(throwing: nil)
    }

    /// The connection went away; returns whether it had been established.
    private func connectionLost() -> Bool {
        let (wasUp, waiters, requests) = state.withLock { state in
            let wasUp = state.writer != nil
            // Requests in flight lose their replies with the connection; those made while
            // reconnecting are held with their publication and wait on.
            let requests = wasUp ? Array(state.requests.values) : []
            defer {
                state.writer = nil
                state.flushWaiters.removeAll()
                if wasUp { state.requests.removeAll() }
            }
            return (wasUp, state.flushWaiters.compactMap(\.continuation), requests)
        }
        for waiter in waiters { waiter.resume(throwing: NATSClientError.closed) }
        for request in requests { request.resume(throwing: NATSClientError.disconnected) }
        return wasUp
    }

    private func resumeFirstConnection(throwing error: (any Error)?) {
        guard let continuation = firstConnection.withLock({ $0.take() }) else { return }
        if let error { continuation.resume(throwing: error) } else { continuation.resume() }
    }

    /// Ends everything: streams finish, waiters fail.
    private func shutDown() {
        let (channel, subscriptions, waiters, requests) = state.withLock { state in
            state.closed = true
            defer {
                state.subscriptions.removeAll()
                state.flushWaiters.removeAll()
                state.requests.removeAll()
                state.writer = nil
            }
            return (
                state.writer?.channel, Array(state.subscriptions.values), state.flushWaiters.compactMap(\.continuation),
                Array(state.requests.values)
            )
        }
        channel?.close(promise: nil)
        for subscription in subscriptions { subscription.inbox?.finish() }
        for waiter in waiters { waiter.resume(throwing: NATSClientError.closed) }
        for request in requests { request.resume(throwing: NATSClientError.closed) }
        resumeFirstConnection(throwing: NATSClientError.closed)
        connectionEvents.post(.closed)
    }

    // MARK: - From the connection

    /// Hands a message to its subscription. Returns the subscription whose reader must be woken
    /// at the end of the read (the messages of one read are taken together).
    func deliver(sid: String, message: NATSMessage) -> (any InboxWaking)? {
        if let inboxSid = state.withLock({ $0.inboxSid }), sid == inboxSid {
            let token = String(message.subject.dropFirst(inboxPrefix.count + 1))
            guard let waiter = state.withLock({ $0.requests.removeValue(forKey: token) }) else { return nil }
            if message.headers?.status == 503 {
                waiter.resume(throwing: NATSClientError.noResponders)
            } else {
                waiter.resume(returning: message)
            }
            return nil
        }
        let (inbox, handler, last): (NATSSubscriptionInbox?, (@Sendable (NATSMessage) -> Void)?, Bool) = state.withLock { state in
            guard var record = state.subscriptions[sid] else { return (nil, nil, false) }
            record.delivered += 1
            if let limit = record.limit, record.delivered >= limit {
                state.subscriptions[sid] = nil
                return (record.inbox, record.handler, true)
            }
            state.subscriptions[sid] = record
            return (record.inbox, record.handler, false)
        }
        if let handler {
            handler(message)
            return nil
        }
        guard let inbox else { return nil }
        let wakeNeeded = inbox.enqueue(message)
        // The auto-unsubscribe limit is reached: the last message is in, the sequence ends.
        if last {
            inbox.finish()
            return nil
        }
        return wakeNeeded ? inbox : nil
    }

    func connectionFailed(_ reason: String) {
        state.withLock { $0.lastFailure = reason }
    }

    func lameDuckEntered() {
        connectionEvents.post(.lameDuck)
    }

    func serverErrorReceived(_ text: String) {
        serverErrorInput.yield(text)
    }

    func pongReceived() {
        let waiter = state.withLock { state in state.flushWaiters.isEmpty ? nil : state.flushWaiters.removeFirst().continuation }
        waiter?.resume()
    }

    // MARK: - Sending

    /// Writes an operation now, or holds it while reconnecting.
    func write(_ operation: NATSOperation) throws {
        let bytes = NATSEncoder.encode(operation)
        try state.withLock { state in
            if state.closed { throw NATSClientError.closed }
            if let writer = state.writer {
                guard writer.pendingBytes + bytes.count <= options.maximumPendingBytes else { throw NATSClientError.writeBufferFull }
                writer.enqueue(bytes)
                return
            }
            guard state.heldBytes + bytes.count <= options.reconnect.bufferBytes else { throw NATSClientError.reconnectBufferFull }
            state.held.append(bytes)
            state.heldBytes += bytes.count
        }
    }

    /// Bytes published and not yet written to the connection.
    public var pendingWriteBytes: Int { state.withLock { $0.writer?.pendingBytes ?? 0 } }

    /// Waits until everything published so far is written to the connection (not processed by the
    /// server: that is `flush`). A publisher sending as fast as it can calls it now and then to
    /// stay under `maximumPendingBytes`.
    public func writesDrained() async {
        guard let writer = state.withLock({ $0.writer }) else { return }
        try? await writer.flushed().get()
    }

    /// Publishes `payload` on `subject`.
    public func publish(_ subject: String, _ payload: [UInt8], replyTo: String? = nil, headers: NATSHeaders? = nil) throws {
        try write(.publish(subject: subject, replyTo: replyTo, headers: headers, payload: payload))
    }

    /// Publishes text.
    public func publish(_ subject: String, _ text: String, replyTo: String? = nil, headers: NATSHeaders? = nil) throws {
        try publish(subject, Array(text.utf8), replyTo: replyTo, headers: headers)
    }

    /// Waits until the server has processed everything sent so far (a PING answered by PONG).
    public func flush(timeout: Duration? = nil) async throws {
        let limit = timeout ?? options.requestTimeout
        let id = state.withLock { state in
            state.nextFlush += 1
            return state.nextFlush
        }
        // The deadline takes the waiter out of its place (a deadline racing the wait would leave
        // the wait behind); its PONG, if it comes, finds the place empty. Set once the waiter is in.
        let deadline = Mutex<Scheduled<Void>?>(nil)
        defer { deadline.withLock { $0?.cancel() } }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let failure: (any Error)? = state.withLock { state in
                guard !state.closed else { return NATSClientError.closed }
                guard let writer = state.writer else { return NATSClientError.closed }
                state.flushWaiters.append(FlushWaiter(id: id, continuation: continuation))
                writer.enqueue(NATSEncoder.encode(.ping))
                return nil
            }
            if let failure {
                continuation.resume(throwing: failure)
                return
            }
            let timer = group.any().scheduleTask(in: TimeAmount(limit)) { [self] in
                let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
                    guard let index = state.flushWaiters.firstIndex(where: { $0.id == id }) else { return nil }
                    defer { state.flushWaiters[index].continuation = nil }
                    return state.flushWaiters[index].continuation
                }
                waiter?.resume(throwing: LIMEClientError.timedOut("flush"))
            }
            deadline.withLock { $0 = timer }
        }
    }

    /// Subscribes to a subject (wildcards allowed), optionally in a queue group.
    public func subscribe(
        _ subject: String, queue: String? = nil, bufferSize: Int = 10_000, policy: SlowConsumerPolicy = .dropNewest
    ) throws -> NATSSubscription {
        let inbox = NATSSubscriptionInbox(bufferSize: bufferSize, policy: policy) { [connectionEvents] in
            connectionEvents.post(.slowConsumer(subject: subject))
        }
        let sid = try state.withLock { state in
            if state.closed { throw NATSClientError.closed }
            let sid = String(state.nextSid)
            state.nextSid += 1
            state.subscriptions[sid] = SubscriptionRecord(subject: subject, queue: queue, inbox: inbox)
            return sid
        }
        try write(.subscribe(subject: subject, queue: queue, sid: sid))
        return NATSSubscription(sid: sid, subject: subject, queue: queue, inbox: inbox, client: self)
    }

    /// Subscribes with a handler that is called with each message, in order, on the
    /// connection's event loop, instead of a buffered sequence: for a hub that relays a
    /// cluster's messages (the handler must not block). Returns the subscription's sid.
    package func subscribe(_ subject: String, queue: String? = nil, handler: @escaping @Sendable (NATSMessage) -> Void) throws -> String {
        let sid = try state.withLock { state in
            if state.closed { throw NATSClientError.closed }
            let sid = String(state.nextSid)
            state.nextSid += 1
            state.subscriptions[sid] = SubscriptionRecord(subject: subject, queue: queue, inbox: nil, handler: handler)
            return sid
        }
        try write(.subscribe(subject: subject, queue: queue, sid: sid))
        return sid
    }

    /// Ends a subscription now, or after `max` messages in all.
    package func unsubscribe(sid: String, max: Int? = nil) throws {
        let inbox: NATSSubscriptionInbox?? = state.withLock { state in
            guard var record = state.subscriptions[sid] else { return .none }
            if let max, record.delivered < max {
                record.limit = max
                state.subscriptions[sid] = record
                return .some(nil)
            }
            state.subscriptions[sid] = nil
            return .some(record.inbox)
        }
        guard let inbox else { return }
        inbox?.finish()
        try write(.unsubscribe(sid: sid, max: max))
    }

    /// Sends a request and waits for the first reply, on the client's one shared reply inbox.
    /// If the connection is lost before the reply comes, it fails with `disconnected`; with
    /// `retry`, it is sent again after reconnecting, within the same timeout (which may carry it
    /// out twice).
    public func request(
        _ subject: String, _ payload: [UInt8], headers: NATSHeaders? = nil, timeout: Duration? = nil, retry: Bool = false
    ) async throws -> NATSMessage {
        let deadline = ContinuousClock.now + (timeout ?? options.requestTimeout)
        while true {
            do {
                return try await request(subject, payload, headers: headers, timeout: deadline - ContinuousClock.now)
            } catch NATSClientError.disconnected where retry && ContinuousClock.now < deadline {
                continue
            }
        }
    }

    private func request(_ subject: String, _ payload: [UInt8], headers: NATSHeaders?, timeout: Duration) async throws -> NATSMessage {
        let (token, subscribe) = state.withLock { state -> (String, String?) in
            state.nextRequest += 1
            var subscribe: String?
            if state.inboxSid == nil {
                let sid = String(state.nextSid)
                state.nextSid += 1
                state.inboxSid = sid
                state.subscriptions[sid] = SubscriptionRecord(subject: inboxPrefix + ".*", inbox: nil)
                subscribe = sid
            }
            return (String(state.nextRequest), subscribe)
        }
        if let sid = subscribe { try write(.subscribe(subject: inboxPrefix + ".*", queue: nil, sid: sid)) }
        let replyTo = inboxPrefix + "." + token
        let limit = timeout
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<NATSMessage, any Error>) in
                state.withLock { $0.requests[token] = continuation }
                do {
                    try publish(subject, payload, replyTo: replyTo, headers: headers)
                } catch {
                    state.withLock { $0.requests.removeValue(forKey: token) }?.resume(throwing: error)
                    return
                }
                // A timed-out request frees only its own entry; the shared inbox stays.
                group.any().scheduleTask(in: TimeAmount(limit)) { [self] in
                    state.withLock { $0.requests.removeValue(forKey: token) }?.resume(throwing: NATSClientError.timedOut)
                }
            }
        } onCancel: {
            state.withLock { $0.requests.removeValue(forKey: token) }?.resume(throwing: CancellationError())
        }
    }

    /// Unsubscribes everything, waits until the server has processed what was sent, and closes.
    public func drain() async throws {
        let sids = state.withLock { Array($0.subscriptions.keys) }
        for sid in sids { try? unsubscribe(sid: sid) }
        try? await flush()
        await close()
    }

    /// Closes the connection; subscriptions end, waiting requests fail.
    public func close() async {
        let task = manager.withLock { $0 }
        shutDown()
        task?.cancel()
        await task?.value
        serverErrorInput.finish()
    }
}
