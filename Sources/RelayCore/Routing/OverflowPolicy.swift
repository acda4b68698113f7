/// What the hub does when an at-most-once subscriber falls behind: more deliveries held for it
/// than its subscription's limit while its connection cannot take more.
public enum OverflowPolicy: String, Sendable, Equatable, CaseIterable {
    /// Keep what is held, drop the new delivery (as MQTT brokers do with a full queue).
    case dropNewest
    /// Drop the oldest held delivery to make room for the new one.
    case dropOldest
    /// End the session as a slow consumer (as nats-server does).
    case disconnect
}

/// A subscription's bound on deliveries held for a slow subscriber.
public struct DeliveryLimit: Sendable, Equatable {
    public var maximumHeld: Int
    public var policy: OverflowPolicy

    public init(maximumHeld: Int, policy: OverflowPolicy) {
        self.maximumHeld = maximumHeld
        self.policy = policy
    }

    /// No count: only the session's pending bytes bound its deliveries, past which the session
    /// ends (a NATS subscription, as in nats-server).
    public static let bytesOnly = DeliveryLimit(maximumHeld: .max, policy: .disconnect)
}
