/// What happens to a client's connection, as the application sees it (`LIMEClient.events`,
/// `NATSClient.events`); nats.go's disconnect, reconnect, lame-duck and error handlers in one
/// sequence.
public enum ConnectionEvent: Sendable, Equatable {
    /// The connection was lost; the client reconnects unless its policy says not to.
    case disconnected(reason: String)
    /// The client is connected again (to `server`), with everything restored.
    case reconnected(server: String)
    /// Something the client had set up could not be restored after reconnecting (a subscription
    /// the server now refuses, a service name taken meanwhile...).
    case restoreFailed(what: String, reason: String)
    /// The server is shutting down gracefully: it will close the connection soon, and the client
    /// will reconnect to another server (or to this one when it is back).
    case lameDuck
    /// A subscription's buffer is full and messages are being dropped (reported once each time
    /// it falls behind, not for every drop).
    case slowConsumer(subject: String)
    /// The client has ended: closed by the application, or out of reconnect attempts.
    case closed
}

/// The events of one client: a bounded stream (the newest 100 wait for a reader).
final class ConnectionEvents: Sendable {
    let stream: AsyncStream<ConnectionEvent>
    private let input: AsyncStream<ConnectionEvent>.Continuation

    init() {
        (stream, input) = AsyncStream.makeStream(of: ConnectionEvent.self, bufferingPolicy: .bufferingNewest(100))
    }

    func post(_ event: ConnectionEvent) {
        input.yield(event)
        if event == .closed { input.finish() }
    }
}
