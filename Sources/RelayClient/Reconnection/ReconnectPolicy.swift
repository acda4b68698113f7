/// How a client reconnects after losing its connection: how often it tries, how long it waits
/// between tries, which server it tries next and how much it holds for the server meanwhile.
/// Shared by `LIMEClient` and `NATSClient`.
///
/// The wait before each attempt is exponential backoff with full jitter: a random duration between
/// zero and `baseDelay × 2^failures`, capped at `maximumDelay`. The randomness spreads the clients
/// of a restarted hub over the interval instead of having them all come back at once.
public struct ReconnectPolicy: Sendable, Equatable {
    /// Attempts after a loss before the client gives up and ends; -1 tries forever, 0 never
    /// reconnects (as nats.go's `MaxReconnects`).
    public var maximumAttempts: Int
    /// The cap of the first wait; each failure doubles it.
    public var baseDelay: Duration
    /// No wait is longer than this.
    public var maximumDelay: Duration
    /// Whether the list of servers is shuffled once (as nats.go does by default), so that clients
    /// given the same list spread over the servers; the list is tried in turn either way.
    public var shuffleServers: Bool
    /// Bytes of publications held while disconnected, sent in order after reconnecting; a
    /// publication that does not fit fails at once.
    public var bufferBytes: Int

    public init(
        maximumAttempts: Int = 60, baseDelay: Duration = .milliseconds(50), maximumDelay: Duration = .seconds(2),
        shuffleServers: Bool = true, bufferBytes: Int = 8 << 20
    ) {
        self.maximumAttempts = maximumAttempts
        self.baseDelay = baseDelay
        self.maximumDelay = maximumDelay
        self.shuffleServers = shuffleServers
        self.bufferBytes = bufferBytes
    }

    /// No reconnection: a lost connection ends the client.
    public static let never = ReconnectPolicy(maximumAttempts: 0)

    /// Whether another attempt is allowed after `failures` attempts that failed since the loss.
    public func allowsAttempt(after failures: Int) -> Bool {
        maximumAttempts < 0 || failures < maximumAttempts
    }

    /// The upper bound of the wait before the attempt that follows `failures` failed ones.
    public func delayCap(after failures: Int) -> Duration {
        let doubled = baseDelay * (1 << min(max(failures, 0), 30))
        return min(maximumDelay, doubled)
    }

    /// The wait before the attempt that follows `failures` failed ones: uniform in
    /// `0...delayCap(after:)`.
    public func delay(after failures: Int, using generator: inout some RandomNumberGenerator) -> Duration {
        let cap = delayCap(after: failures).nanoseconds
        return .nanoseconds(Int64.random(in: 0...max(cap, 0), using: &generator))
    }

    /// The wait before the attempt that follows `failures` failed ones, with the system's randomness.
    public func delay(after failures: Int) -> Duration {
        var generator = SystemRandomNumberGenerator()
        return delay(after: failures, using: &generator)
    }
}

/// The servers a client tries, in turn: shuffled once when the policy says so, then rotated, so
/// that a reconnect starts with the server after the one that was lost.
struct ServerRotation<Server: Sendable>: Sendable {
    private(set) var servers: [Server]
    private var position = 0

    init(_ servers: [Server], shuffled: Bool) {
        precondition(!servers.isEmpty, "a client needs at least one server")
        self.servers = shuffled ? servers.shuffled() : servers
    }

    /// The server to try now; the next call gives the one after it.
    mutating func next() -> Server {
        defer { position = (position + 1) % servers.count }
        return servers[position]
    }

    var count: Int { servers.count }

    /// Adds a server (one a cluster announced), tried after those there are.
    mutating func add(_ server: Server) {
        servers.append(server)
    }
}

extension Duration {
    /// The duration in whole nanoseconds (saturating); the command line's benchmarks use it too.
    package var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? .max : product.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue
    }
}
