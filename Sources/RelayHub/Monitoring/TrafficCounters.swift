import Synchronization

/// Messages and bytes in and out, counted where they pass: each session's outlet keeps its own
/// and adds to the hub's totals. Relaxed atomics: a count is read for monitoring, not ordering.
final class TrafficCounters: Sendable {
    private let messagesIn = Atomic<Int>(0)
    private let bytesIn = Atomic<Int>(0)
    private let messagesOut = Atomic<Int>(0)
    private let bytesOut = Atomic<Int>(0)
    /// Where these counts are added too (the hub's totals), if anywhere.
    private let totals: TrafficCounters?

    init(totals: TrafficCounters? = nil) {
        self.totals = totals
    }

    /// A read brought `bytes`, and `messages` envelopes or publications.
    func received(messages: Int, bytes: Int) {
        if messages > 0 { messagesIn.add(messages, ordering: .relaxed) }
        if bytes > 0 { bytesIn.add(bytes, ordering: .relaxed) }
        totals?.received(messages: messages, bytes: bytes)
    }

    /// `messages` writes of `bytes` in all went to the connection's writer.
    func sent(messages: Int, bytes: Int) {
        messagesOut.add(messages, ordering: .relaxed)
        bytesOut.add(bytes, ordering: .relaxed)
        totals?.sent(messages: messages, bytes: bytes)
    }

    var snapshot: Traffic {
        Traffic(
            messagesIn: messagesIn.load(ordering: .relaxed), bytesIn: bytesIn.load(ordering: .relaxed),
            messagesOut: messagesOut.load(ordering: .relaxed), bytesOut: bytesOut.load(ordering: .relaxed))
    }
}

/// A snapshot of `TrafficCounters`.
public struct Traffic: Sendable, Equatable {
    public var messagesIn = 0
    public var bytesIn = 0
    public var messagesOut = 0
    public var bytesOut = 0
}
