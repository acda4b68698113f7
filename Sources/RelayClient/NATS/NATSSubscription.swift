import RelayCore
import Synchronization

/// Where the NATS client puts the messages of one subscription.
typealias NATSSubscriptionInbox = BoundedInbox<NATSMessage>

/// A NATS subscription: an `AsyncSequence` of messages with a bounded buffer; every drop by its
/// `SlowConsumerPolicy` is counted in `droppedCount`. Leaving the loop unsubscribes.
public final class NATSSubscription: AsyncSequence, Sendable {
    public typealias Element = NATSMessage

    public let sid: String
    public let subject: String
    public let queue: String?
    private let inbox: NATSSubscriptionInbox
    private let client: NATSClient
    private let ended = Atomic<Bool>(false)

    init(sid: String, subject: String, queue: String?, inbox: NATSSubscriptionInbox, client: NATSClient) {
        self.sid = sid
        self.subject = subject
        self.queue = queue
        self.inbox = inbox
        self.client = client
    }

    public var droppedCount: Int { inbox.dropped.load(ordering: .relaxed) }

    /// Ends the subscription now.
    public func unsubscribe() throws {
        guard !ended.exchange(true, ordering: .relaxed) else { return }
        try client.unsubscribe(sid: sid)
    }

    /// Ends the subscription once `messages` have been delivered in all (NATS auto-unsubscribe).
    public func unsubscribe(after messages: Int) throws {
        try client.unsubscribe(sid: sid, max: messages)
    }

    fileprivate func iteratorEnded() {
        try? unsubscribe()
    }

    public func makeAsyncIterator() -> Iterator {
        Iterator(guardian: NATSIteratorGuardian(self), inbox: inbox)
    }

    public struct Iterator: AsyncIteratorProtocol {
        fileprivate let guardian: NATSIteratorGuardian
        let inbox: NATSSubscriptionInbox

        public mutating func next() async -> NATSMessage? {
            await inbox.next()
        }
    }
}

/// Unsubscribes when the loop that iterated a subscription is left.
final class NATSIteratorGuardian: Sendable {
    let subscription: NATSSubscription
    init(_ subscription: NATSSubscription) { self.subscription = subscription }
    deinit { subscription.iteratorEnded() }
}
