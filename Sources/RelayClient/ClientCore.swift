import NIOCore
import RelayCore
import Synchronization

/// The state a `LIMEClient` shares between the application's tasks and its connection's event loop:
/// the handshake's waiter, the requests awaiting responses, and the streams of incoming envelopes.
final class ClientCore: Sendable {
    /// Posted into the pipeline to finish the session.
    struct FinishRequested: Sendable {}

    private struct State {
        var connectWaiter: CheckedContinuation<(Node, Node?), any Error>?
        var session: (local: Node, remote: Node?)?
        var pending: [String: CheckedContinuation<LIMECommand, any Error>] = [:]
        /// Responses to standing requests (period and event subscriptions), by request id.
        var responseStreams: [String: AsyncStream<LIMECommand>.Continuation] = [:]
        /// Subject subscriptions, by the token the hub puts in `#subscription`.
        var subscriptions: [String: SubscriptionInbox] = [:]
        /// Services this client serves, by lowercased name.
        var services: [String: AsyncStream<LIMECommand>.Continuation] = [:]
        var endReason: Reason??
        var endWaiters: [CheckedContinuation<Reason?, Never>] = []
        /// The number of the connection in use; what an older one reports is ignored.
        var generation = 0
        /// Why the current connection was lost, until the next one begins.
        var lost: Reason?
        var lossWaiter: CheckedContinuation<Reason?, Never>?
        /// The next loss ends the client: the application finished or closed it, or it does not
        /// reconnect.
        var final = false
        /// What re-creates, on a new connection, what the application set up, in its order.
        var restorations: [Restoration] = []
    }

    /// A command that re-creates something on a new connection: a subscription, a consumer, a
    /// served service, a standing request.
    struct Restoration: Sendable {
        /// What it restores (a subscription's token, `service:NAME`, `watch:ID`).
        let key: String
        let command: LIMECommand
        /// Whether the hub answers it (a standing request's answers go to its stream instead).
        let awaitsResponse: Bool
    }

    private let state = Mutex(State())
    let messages: AsyncStream<LIMEMessage>
    let notifications: AsyncStream<LIMENotification>
    let commands: AsyncStream<LIMECommand>
    private let messageInput: AsyncStream<LIMEMessage>.Continuation
    private let notificationInput: AsyncStream<LIMENotification>.Continuation
    private let commandInput: AsyncStream<LIMECommand>.Continuation
    private let dropped = Atomic<Int>(0)

    /// Where `lameDuck` (and the client's other connection events) go.
    let events: ConnectionEvents

    init(bufferSize: Int, reconnects: Bool, events: ConnectionEvents = ConnectionEvents()) {
        self.events = events
        state.withLock { $0.final = !reconnects }
        (messages, messageInput) = AsyncStream.makeStream(of: LIMEMessage.self, bufferingPolicy: .bufferingOldest(bufferSize))
        (notifications, notificationInput) = AsyncStream.makeStream(
            of: LIMENotification.self, bufferingPolicy: .bufferingOldest(bufferSize))
        (commands, commandInput) = AsyncStream.makeStream(of: LIMECommand.self, bufferingPolicy: .bufferingOldest(bufferSize))
    }

    /// Envelopes dropped because the application did not read its stream fast enough.
    var droppedCount: Int { dropped.load(ordering: .relaxed) }

    var session: (local: Node, remote: Node?)? { state.withLock { $0.session } }

    /// Why the session ended (a clean finish reads as "The session finished"), or nil while it lasts.
    var endReason: Reason? {
        state.withLock { state in
            guard let ended = state.endReason else { return nil }
            return ended ?? Reason(code: ReasonCode.sessionError, description: "The session finished")
        }
    }

    /// Waits until the session is established (or fails).
    func waitForEstablishment() async throws -> (Node, Node?) {
        try await withCheckedThrowingContinuation { continuation in
            let result: Result<(Node, Node?), any Error>? = state.withLock { state in
                if let session = state.session { return .success(session) }
                if let lost = state.lost { return .failure(LIMEClientError.sessionFailed(lost)) }
                if let ended = state.endReason {
                    return .failure(
                        LIMEClientError.sessionFailed(ended ?? Reason(code: ReasonCode.sessionError, description: "The session ended")))
                }
                state.connectWaiter = continuation
                return nil
            }
            if let result { continuation.resume(with: result) }
        }
    }

    func established(local: Node, remote: Node?) {
        let waiter = state.withLock { state in
            state.session = (local, remote)
            defer { state.connectWaiter = nil }
            return state.connectWaiter
        }
        waiter?.resume(returning: (local, remote))
    }

    /// Hands an envelope to whoever waits for it. Returns a subscription whose reader must be
    /// woken at the end of the read (deliveries of one read are taken together).
    func deliver(_ envelope: consuming Envelope) -> (any InboxWaking)? {
        switch consume envelope {
        case .message(let message):
            if let token = message.header.metadata?["#subscription"], let inbox = subscription(token) {
                return inbox.enqueue(message) ? inbox : nil
            }
            countDrop(messageInput.yield(message))
        case .notification(let notification):
            countDrop(notificationInput.yield(notification))
        case .command(let command) where command.isResponse:
            // No waiter: a late response to a request that timed out or was cancelled.
            guard let id = command.header.id else { return nil }
            let (waiter, stream) = state.withLock { ($0.pending.removeValue(forKey: id), $0.responseStreams[id]) }
            if let waiter {
                waiter.resume(returning: command)
            } else if let stream {
                stream.yield(command)
            }
        case .command(let command) where command.method == .delete && command.uri?.hasPrefix("/requests/relay-") == true:
            if !deliverCancellation(command) { countDrop(commandInput.yield(command)) }
        case .command(let command) where command.method == .observe && command.uri == LIMEServerSessionMachine.lameDuckURI:
            events.post(.lameDuck)
        case .command(let command):
            if let service = Self.serviceName(of: command), let inbox = state.withLock({ $0.services[service] }) {
                inbox.yield(command)
                return nil
            }
            countDrop(commandInput.yield(command))
        case .session:
            break
        }
        return nil
    }

    /// The service a forwarded request is for (`/services/NAME/...`, or `/requests/ID` cancellations
    /// which go to every service), or nil.
    private static func serviceName(of command: LIMECommand) -> String? {
        guard let uri = command.uri, uri.hasPrefix("/services/") else { return nil }
        return uri.dropFirst("/services/".count).split(separator: "/").first.map { $0.lowercased() }
    }

    /// The inbox of the subscription `token` names, if it is one of this connection's.
    func subscription(_ token: String) -> SubscriptionInbox? {
        state.withLock { $0.subscriptions[token] }
    }

    func addSubscription(_ token: String, _ inbox: SubscriptionInbox) {
        state.withLock { $0.subscriptions[token] = inbox }
    }

    func removeSubscription(_ token: String) {
        state.withLock { $0.subscriptions[token] = nil }
    }

    func addResponseStream(_ id: String, _ continuation: AsyncStream<LIMECommand>.Continuation) {
        state.withLock { $0.responseStreams[id] = continuation }
    }

    func removeResponseStream(_ id: String) {
        state.withLock { $0.responseStreams[id] = nil }
    }

    func addService(_ name: String, _ continuation: AsyncStream<LIMECommand>.Continuation) {
        state.withLock { $0.services[name.lowercased()] = continuation }
    }

    func removeService(_ name: String) {
        state.withLock { $0.services[name.lowercased()] = nil }
    }

    /// Hub cancellations (`delete /requests/relay-N`) go to every served service.
    func deliverCancellation(_ command: LIMECommand) -> Bool {
        let inboxes = state.withLock { Array($0.services.values) }
        for inbox in inboxes { inbox.yield(command) }
        return !inboxes.isEmpty
    }

    private func countDrop<T>(_ result: AsyncStream<T>.Continuation.YieldResult) {
        if case .dropped = result { dropped.add(1, ordering: .relaxed) }
    }

    /// Registers a request awaiting its response; false when the session has ended.
    func addPending(_ id: String, _ continuation: CheckedContinuation<LIMECommand, any Error>) -> Bool {
        state.withLock { state in
            guard state.endReason == nil else { return false }
            state.pending[id] = continuation
            return true
        }
    }

    func removePending(_ id: String) -> CheckedContinuation<LIMECommand, any Error>? {
        state.withLock { $0.pending.removeValue(forKey: id) }
    }

    /// The session ended: nil reason for a clean finish.
    func ended(_ reason: Reason?) {
        let (connectWaiter, pending, endWaiters, streams, inboxes, services, lossWaiter) = state.withLock { state in
            if state.endReason == nil { state.endReason = .some(reason) }
            defer {
                state.lossWaiter = nil
                state.restorations.removeAll()
                state.connectWaiter = nil
                state.pending.removeAll()
                state.endWaiters.removeAll()
                state.responseStreams.removeAll()
                state.subscriptions.removeAll()
                state.services.removeAll()
            }
            return (
                state.connectWaiter, Array(state.pending.values), state.endWaiters, Array(state.responseStreams.values),
                Array(state.subscriptions.values), Array(state.services.values), state.lossWaiter
            )
        }
        lossWaiter?.resume(returning: nil)
        for stream in streams { stream.finish() }
        for inbox in inboxes { inbox.finish() }
        for service in services { service.finish() }
        let error = LIMEClientError.sessionFailed(reason ?? Reason(code: ReasonCode.sessionError, description: "The session finished"))
        connectWaiter?.resume(throwing: error)
        for waiter in pending { waiter.resume(throwing: error) }
        for waiter in endWaiters { waiter.resume(returning: reason) }
        messageInput.finish()
        notificationInput.finish()
        commandInput.finish()
    }

    // MARK: - Connections coming and going

    /// A new connection begins; returns its number, which its handler reports with.
    func beginConnection() -> Int {
        state.withLock { state in
            state.generation += 1
            state.lost = nil
            state.session = nil
            return state.generation
        }
    }

    /// Connection `generation` ended: the session finished (nil) or failed, or the connection
    /// closed. The first report counts. The client ends if it is not to reconnect; otherwise the
    /// requests waiting for responses fail with `disconnected` and the reconnection is woken.
    func connectionEnded(_ generation: Int, reason: Reason?) {
        let outcome = state.withLock {
            state -> (
                waiters: [CheckedContinuation<LIMECommand, any Error>], connect: CheckedContinuation<(Node, Node?), any Error>?,
                loss: CheckedContinuation<Reason?, Never>?, lost: Reason
            )? in
            // Replaced by a session of the same node: reconnecting would replace that one in turn.
            if reason?.isSessionReplacement == true { state.final = true }
            guard generation == state.generation, state.lost == nil, state.endReason == nil, !state.final else { return nil }
            let lost = reason ?? Reason(code: ReasonCode.sessionError, description: "The hub finished the session")
            state.lost = lost
            defer {
                state.pending.removeAll()
                state.connectWaiter = nil
                state.lossWaiter = nil
            }
            return (Array(state.pending.values), state.connectWaiter, state.lossWaiter, lost)
        }
        guard let outcome else {
            let ends = state.withLock { $0.generation == generation && $0.endReason == nil && $0.final }
            if ends { ended(reason) }
            return
        }
        for waiter in outcome.waiters { waiter.resume(throwing: LIMEClientError.disconnected) }
        outcome.connect?.resume(throwing: LIMEClientError.sessionFailed(outcome.lost))
        outcome.loss?.resume(returning: outcome.lost)
    }

    /// Waits until the current connection is lost; returns why, or nil once the client has ended
    /// or is to end.
    func waitForLoss() async -> Reason? {
        await withCheckedContinuation { continuation in
            let now: Reason?? = state.withLock { state in
                if state.endReason != nil || state.final { return .some(nil) }
                if let lost = state.lost { return .some(lost) }
                state.lossWaiter = continuation
                return nil
            }
            if let now { continuation.resume(returning: now) }
        }
    }

    /// Whether the connection is lost and not yet replaced.
    var isDisconnected: Bool { state.withLock { $0.lost != nil && $0.endReason == nil } }

    /// The application finishes or closes the client: the next loss ends it, and a reconnection
    /// waiting for a loss stops waiting.
    func becomeFinal() {
        let waiter = state.withLock { state in
            state.final = true
            defer { state.lossWaiter = nil }
            return state.lossWaiter
        }
        waiter?.resume(returning: nil)
    }

    /// Whether the client ends at the next loss instead of reconnecting.
    var isFinal: Bool { state.withLock { $0.final } }

    /// Whether the session ended for good.
    var hasEnded: Bool { state.withLock { $0.endReason != nil } }

    // MARK: - Restorations

    func addRestoration(_ restoration: Restoration) {
        state.withLock { state in
            state.restorations.removeAll { $0.key == restoration.key }
            state.restorations.append(restoration)
        }
    }

    func removeRestoration(_ key: String) {
        state.withLock { $0.restorations.removeAll { $0.key == key } }
    }

    var restorations: [Restoration] { state.withLock { $0.restorations } }

    /// Waits until the session ends; returns the failure reason, or nil for a clean finish.
    func waitForEnd() async -> Reason? {
        await withCheckedContinuation { continuation in
            let ended: Reason?? = state.withLock { state in
                if let reason = state.endReason { return .some(reason) }
                state.endWaiters.append(continuation)
                return nil
            }
            if let ended { continuation.resume(returning: ended) }
        }
    }
}

/// Errors of the LIME client.
public enum LIMEClientError: Error, CustomStringConvertible, Equatable {
    /// The URL is not `ws://HOST:PORT[/PATH]` or `tcp://HOST:PORT`.
    case invalidURL(String)
    /// The session failed or ended; the reason says why.
    case sessionFailed(Reason)
    /// No response came before the deadline.
    case timedOut(String)
    /// The WebSocket upgrade was refused.
    case upgradeRefused
    /// The connection was lost while the request waited for its response (the client
    /// reconnects; a request sent again may be carried out twice).
    case disconnected
    /// Envelopes wait while the client reconnects, up to `ReconnectPolicy.bufferBytes`; this one
    /// did not fit.
    case reconnectBufferFull
    /// The server's protocol cannot express this (a NATS server has no services, for one).
    case unsupported(String)

    public var description: String {
        switch self {
        case .invalidURL(let url): "Invalid server URL '\(url)': expected ws://HOST:PORT or tcp://HOST:PORT"
        case .sessionFailed(let reason): "Session failed: \(reason.description) (code \(reason.code))"
        case .timedOut(let what): "Timed out: \(what)"
        case .upgradeRefused: "The server refused the WebSocket upgrade"
        case .disconnected: "Disconnected: the connection was lost before the response came"
        case .reconnectBufferFull: "The reconnect buffer is full"
        case .unsupported(let what): "Not supported: \(what)"
        }
    }
}
