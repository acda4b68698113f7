/// The limits an attacker reaches first, per IP address: connections open at once, and failed
/// authentications within a window, after which the address's new connections are refused until
/// the window has passed. A plain value: the hub keeps it under its lock and gives it the time.
///
/// Loopback addresses are exempt unless `appliesToLoopback`: local tools, tests and benchmarks
/// open many connections from one address.
struct AddressLimiter: Sendable {
    var maximumConnections: Int
    var maximumFailures: Int
    var windowSeconds: Double
    var appliesToLoopback: Bool

    /// Why a connection is refused.
    enum Refusal: Sendable, Equatable {
        case tooManyConnections
        case tooManyFailures
    }

    /// Counters of what the limits refused.
    struct Statistics: Sendable, Equatable {
        var connectionsRefusedPerAddress = 0
        var connectionsRefusedAfterFailures = 0
        var authenticationFailures = 0
    }

    private var connections: [String: Int] = [:]
    private var failures: [String: (count: Int, since: Double)] = [:]
    private(set) var statistics = Statistics()
    /// The most addresses whose failures are remembered: beyond it, expired entries are swept,
    /// and if that is not enough the oldest go, so a scan from many addresses cannot grow it.
    static let maximumRemembered = 10_000

    init(maximumConnections: Int, maximumFailures: Int, windowSeconds: Double, appliesToLoopback: Bool) {
        self.maximumConnections = maximumConnections
        self.maximumFailures = maximumFailures
        self.windowSeconds = windowSeconds
        self.appliesToLoopback = appliesToLoopback
    }

    static func isLoopback(_ address: String) -> Bool {
        address.hasPrefix("127.") || address == "::1" || address.hasPrefix("::ffff:127.")
    }

    private func exempt(_ address: String?) -> Bool {
        guard let address else { return true }
        return !appliesToLoopback && Self.isLoopback(address)
    }

    /// A connection from `address` opened: counted, or refused (then not counted).
    mutating func connectionOpened(from address: String?, now: Double) -> Refusal? {
        guard let address, !exempt(address) else { return nil }
        if let entry = failures[address] {
            if now - entry.since >= windowSeconds {
                failures[address] = nil
            } else if entry.count >= maximumFailures {
                statistics.connectionsRefusedAfterFailures += 1
                return .tooManyFailures
            }
        }
        guard connections[address, default: 0] < maximumConnections else {
            statistics.connectionsRefusedPerAddress += 1
            return .tooManyConnections
        }
        connections[address, default: 0] += 1
        return nil
    }

    /// Whether `address` failed to authenticate `maximumFailures` times within the window (what
    /// refuses its new connections), for requests that carry credentials on a connection of their
    /// own kind (the monitoring endpoints').
    func hasFailedTooOften(_ address: String?, now: Double) -> Bool {
        guard !exempt(address), let address, let entry = failures[address] else { return false }
        return now - entry.since < windowSeconds && entry.count >= maximumFailures
    }

    /// A connection counted by `connectionOpened` closed.
    mutating func connectionClosed(from address: String?) {
        guard let address, !exempt(address), let count = connections[address] else { return }
        connections[address] = count > 1 ? count - 1 : nil
    }

    /// A connection from `address` failed to authenticate.
    mutating func authenticationFailed(from address: String?, now: Double) {
        statistics.authenticationFailures += 1
        guard let address, !exempt(address) else { return }
        if let entry = failures[address], now - entry.since < windowSeconds {
            failures[address] = (entry.count + 1, entry.since)
            return
        }
        if failures.count >= Self.maximumRemembered { forgetOld(now: now) }
        failures[address] = (1, now)
    }

    private mutating func forgetOld(now: Double) {
        failures = failures.filter { now - $0.value.since < windowSeconds }
        while failures.count >= Self.maximumRemembered, let oldest = failures.min(by: { $0.value.since < $1.value.since }) {
            failures[oldest.key] = nil
        }
    }

    /// Addresses with connections open, and addresses whose failures are remembered.
    var trackedAddresses: (connections: Int, failures: Int) { (connections.count, failures.count) }
}
