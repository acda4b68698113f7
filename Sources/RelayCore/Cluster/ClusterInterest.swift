/// Which subscriptions a clustered hub holds on the nats-server cluster, for its local sessions'
/// subscriptions (docs/CLUSTER.md).
///
/// A hub subscribes on the cluster only to what some local session wants. There is one cluster
/// subscription per distinct (filter, queue group): the first local subscription to it subscribes
/// on the cluster, and the last one to leave unsubscribes. A queue group becomes a cluster queue
/// subscription under the group's name, so that one hub of all those with members gets each
/// message, then gives it to one local member.
///
/// Each cluster subscription stands for exactly one local (filter, queue group). A message that
/// arrives on it goes to the local subscriptions of that filter and group only. So a hub whose
/// sessions hold overlapping filters (`orders.*` and `orders.>`) still delivers each message once
/// per local subscription, although nats-server sends it once per matching cluster subscription.
/// The hub's cluster connection is opened with `echo: false`, so its own publications never come
/// back to it.
///
/// Plain values in, actions out: the hub carries out `subscribe` and `unsubscribe` on its cluster
/// `NATSClient`.
public struct ClusterInterest: Sendable {
    /// A filter and the queue group it is held in, if any.
    public struct Key: Hashable, Sendable {
        public var filter: String
        public var queue: String?

        public init(filter: String, queue: String? = nil) {
            self.filter = filter
            self.queue = queue
        }
    }

    public enum Action: Equatable, Sendable {
        /// Subscribe on the cluster, under this subscription id.
        case subscribe(sid: String, filter: String, queue: String?)
        /// End that cluster subscription.
        case unsubscribe(sid: String)
    }

    private struct Held {
        var sid: String
        /// Local subscriptions that want it.
        var count: Int
    }

    private var held: [Key: Held] = [:]
    private var keys: [String: Key] = [:]
    private var nextSid = 1

    public init() {}

    /// How many distinct cluster subscriptions the hub holds.
    public var count: Int { held.count }

    /// A local session subscribed to `filter` (in `queue`): subscribe on the cluster if it is the
    /// first.
    public mutating func localSubscriptionAdded(_ key: Key) -> Action? {
        if var existing = held[key] {
            existing.count += 1
            held[key] = existing
            return nil
        }
        let sid = "c\(nextSid)"
        nextSid += 1
        held[key] = Held(sid: sid, count: 1)
        keys[sid] = key
        return .subscribe(sid: sid, filter: key.filter, queue: key.queue)
    }

    /// A local subscription ended (unsubscribed, or its session went away): unsubscribe on the
    /// cluster if it was the last. An unknown key changes nothing.
    public mutating func localSubscriptionRemoved(_ key: Key) -> Action? {
        guard var existing = held[key] else { return nil }
        existing.count -= 1
        guard existing.count == 0 else {
            held[key] = existing
            return nil
        }
        held[key] = nil
        keys[existing.sid] = nil
        return .unsubscribe(sid: existing.sid)
    }

    /// The local (filter, queue group) that a message from the cluster on `sid` is for; nil for
    /// a subscription ended meanwhile (a message already on its way when the hub unsubscribed).
    public func key(forClusterSubscription sid: String) -> Key? {
        keys[sid]
    }

    /// Everything held, to subscribe again on a new cluster connection, in the order made.
    public var subscriptions: [Action] {
        held.sorted { Int($0.value.sid.dropFirst()) ?? 0 < Int($1.value.sid.dropFirst()) ?? 0 }.map {
            .subscribe(sid: $0.value.sid, filter: $0.key.filter, queue: $0.key.queue)
        }
    }
}
