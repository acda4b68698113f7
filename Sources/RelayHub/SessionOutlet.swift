import NIOCore
import RelayCore
import RelayTransport
import Synchronization

/// What the hub tells a session's connection from outside its event loop.
enum HubSessionEvent: Sendable {
    /// End the session with `failed` and this reason (its node was taken, it is a slow consumer).
    case terminate(Reason)
    /// The hub is shutting down: finish the session.
    case shutdown
    /// The hub is draining (lame-duck mode): tell a client that can hear it to go elsewhere.
    case lameDuck
}

/// One write for a session: an encoded envelope or NATS operation, and, for a subscription's
/// delivery, its name and the bound on how many may wait. The bytes are a slice of the batch they
/// were rendered in: holding a delivery does not copy it (a lagging subscriber's deliveries are
/// all held, one by one).
struct OutletItem: Sendable {
    var token: String?
    var limit: DeliveryLimit?
    var bytes: ArraySlice<UInt8>
}

/// The writes for one session from one pass of the hub, rendered one after another into one
/// array (one allocation per batch rather than per message), with where each ends.
struct OutletBatch: Sendable {
    struct Entry: Sendable {
        var token: String?
        var limit: DeliveryLimit?
        var end: Int
    }

    var bytes: [UInt8] = []
    var entries: [Entry] = []
    /// Whether a delivery of the batch has a bound on how many may wait that the outlet must count
    /// (a LIME subscription's `pending`); a NATS connection's are bounded only by its bytes.
    private(set) var hasCountedDeliveries = false

    /// A batch with room for `capacity` bytes.
    init(capacity: Int = 0) {
        bytes.reserveCapacity(capacity)
    }

    /// Adds a write, rendered by `render` at the end of `bytes`.
    mutating func append(token: String? = nil, limit: DeliveryLimit? = nil, _ render: (inout [UInt8]) -> Void) {
        render(&bytes)
        entries.append(Entry(token: token, limit: limit, end: bytes.count))
        if let limit, limit != .bytesOnly { hasCountedDeliveries = true }
    }

    /// The writes one by one, for holding them. They are slices of one array: if it was made
    /// much larger than its bytes (room for a batch as large as the last), the bytes are copied
    /// out first, so that held deliveries keep no more memory alive than the cap counts.
    var items: [OutletItem] {
        let bytes = self.bytes.capacity > 2 * self.bytes.count + 4096 ? self.bytes.withUnsafeBufferPointer { Array($0) } : self.bytes
        var start = 0
        return entries.map { entry in
            defer { start = entry.end }
            return OutletItem(token: entry.token, limit: entry.limit, bytes: bytes[start..<entry.end])
        }
    }
}

/// The hub's handle on one session's connection: where deliveries are written, from any thread.
///
/// Everything written to the connection, by the hub or by the session's own handler, goes through
/// its `ChannelWriter`, which coalesces it into one flush per turn of the connection's event loop.
/// While the connection can take more (NIO's writability), writes go straight to the writer. While
/// it cannot, deliveries whose number is bounded (a LIME subscription's `pending`; a NATS
/// subscription is bounded by bytes only, and goes to the writer) are held here, at most each
/// subscription's `DeliveryLimit` of them; beyond
/// that its `OverflowPolicy` drops the newest or the oldest (counted, and reported to the
/// subscriber when the connection catches up) or ends the session. Independently, the bytes
/// written but not yet on the wire are capped: past `maximumPendingBytes` the session is a slow
/// consumer and is ended. So one stalled reader cannot make the hub's memory grow without bound.
final class SessionOutlet: Sendable {
    let writer: ChannelWriter
    var channel: any Channel { writer.channel }
    private let maximumPendingBytes: Int
    /// Past these pending bytes, a publisher to this session stalls (stops reading) until they
    /// are written, or `maximumStall` has passed: half the slow-consumer cap.
    let stallBytes: Int
    /// Set when a stall for this session timed out (it is not reading): publishers go on, and
    /// it meets the slow-consumer cap, until it is below `stallBytes` again.
    private let stallTimedOut = Atomic<Bool>(false)
    private let isTerminating = Atomic<Bool>(false)
    /// Set when the session is ended as a slow consumer, until the hub counts it (once).
    private let slowConsumerUncounted = Atomic<Bool>(false)
    private let lastBatchSize = Atomic<Int>(0)
    private let held = Mutex(Held())
    /// The sessions of the same identity, whose pending bytes are capped together.
    private let identityGroup = Mutex<IdentityPendingGroup?>(nil)
    /// Renders "N deliveries of subscription T were dropped" for the subscriber, if its dialect can say it.
    private let dropReport: (@Sendable (String, Int) -> [UInt8]?)?

    private struct Held: Sendable {
        var writable = true
        var items: [OutletItem] = []
        var perToken: [String: Int] = [:]
        var bytes = 0
        var unreported: [String: Int] = [:]
    }

    /// The room to make for the session's next batch: the size of its last one, up to 128 KiB.
    /// Growing each batch from nothing copied its bytes several times over.
    var batchCapacity: Int {
        get { lastBatchSize.load(ordering: .relaxed) }
        set { lastBatchSize.store(min(newValue, 128 << 10), ordering: .relaxed) }
    }

    /// What went through this session, in and out (added to the hub's totals too).
    let traffic: TrafficCounters

    init(
        channel: any Channel, framing: ChannelWriter.Framing, compression: WebSocketCompression? = nil, maximumPendingBytes: Int,
        totals: TrafficCounters? = nil, dropReport: (@Sendable (String, Int) -> [UInt8]?)? = nil
    ) {
        self.traffic = TrafficCounters(totals: totals)
        self.writer = ChannelWriter(channel: channel, framing: framing, compression: compression)
        self.maximumPendingBytes = maximumPendingBytes
        self.stallBytes = maximumPendingBytes / 2
        self.dropReport = dropReport
    }

    /// A future a publisher to this session waits on before it reads more (the session has more
    /// than `stallBytes` waiting to be written), or nil when it need not wait.
    func stall() -> EventLoopFuture<Void>? {
        guard writer.pendingBytes > stallBytes else {
            // Read first: a store on every delivery would contend between publishers' threads.
            if stallTimedOut.load(ordering: .relaxed) { stallTimedOut.store(false, ordering: .relaxed) }
            return nil
        }
        guard !stallTimedOut.load(ordering: .relaxed), !isTerminating.load(ordering: .relaxed) else { return nil }
        return writer.whenPending(atMost: stallBytes)
    }

    /// A stall for this session was given up: it is not catching up.
    func stallTimedOutNow() {
        stallTimedOut.store(true, ordering: .relaxed)
    }

    /// Writes (or holds) a batch's writes in order. Returns how many deliveries were dropped, or
    /// nil when the session is being ended as a slow consumer.
    func send(_ batch: OutletBatch) -> Int? {
        traffic.sent(messages: batch.entries.count, bytes: batch.bytes.count)
        var refused = false
        var dropped = 0
        var overflowed = false
        held.withLock { state in
            // Writes nobody counts go to the writer even while the connection cannot take more
            // (NIO keeps them, within the byte cap): holding them one by one only to write them
            // later cost a copy and an item each, just when the subscriber lags.
            if state.items.isEmpty && (state.writable || !batch.hasCountedDeliveries) {
                // Queued under the lock: what `writabilityChanged` releases is queued under it
                // too, so a later delivery cannot overtake held ones.
                if admits(batch.bytes.count) { writer.enqueue(batch.bytes, ends: batch.entries.map(\.end)) } else { refused = true }
                return
            }
            for item in batch.items {
                if let token = item.token, let limit = item.limit, state.perToken[token, default: 0] >= limit.maximumHeld {
                    switch limit.policy {
                    case .dropNewest:
                        state.unreported[token, default: 0] += 1
                        dropped += 1
                        continue
                    case .dropOldest:
                        if let index = state.items.firstIndex(where: { $0.token == token }) {
                            state.bytes -= state.items.remove(at: index).bytes.count
                            state.perToken[token, default: 1] -= 1
                            state.unreported[token, default: 0] += 1
                            dropped += 1
                        }
                    case .disconnect:
                        overflowed = true
                        return
                    }
                }
                state.items.append(item)
                state.bytes += item.bytes.count
                if let token = item.token { state.perToken[token, default: 0] += 1 }
            }
            if state.bytes + writer.pendingBytes > maximumPendingBytes { overflowed = true }
        }
        if overflowed {
            slowConsumer()
            return nil
        }
        return refused ? nil : dropped
    }

    /// Hands messages to the writer; false when the byte cap would be passed (the session is
    /// being ended instead).
    @discardableResult
    func write(_ messages: [[UInt8]]) -> Bool {
        guard !messages.isEmpty else { return true }
        let size = messages.reduce(0) { $0 + $1.count }
        guard admits(size) else { return false }
        traffic.sent(messages: messages.count, bytes: size)
        writer.enqueue(messages)
        return true
    }

    /// `write` for held deliveries, which are slices of their batches.
    private func write(_ messages: [ArraySlice<UInt8>]) {
        guard !messages.isEmpty, admits(messages.reduce(0) { $0 + $1.count }) else { return }
        writer.enqueue(messages)
    }

    /// Whether `size` more bytes stay within the pending-bytes cap; past it the session is ended
    /// as a slow consumer.
    private func admits(_ size: Int) -> Bool {
        guard writer.pendingBytes + size <= maximumPendingBytes else {
            slowConsumer()
            return false
        }
        if let group = identityGroup.withLock({ $0 }), group.exceeds(adding: size) {
            slowConsumer()
            return false
        }
        return true
    }

    /// Counts this session's pending bytes with the other sessions of its identity from now on.
    func join(_ group: IdentityPendingGroup) {
        group.add(writer)
        identityGroup.withLock { $0 = group }
    }

    /// Stops counting this session with its identity's (it unregistered or closed).
    func leaveIdentityGroup() {
        identityGroup.withLock { $0.take() }?.remove(writer)
    }

    /// Writes a last message after everything queued (past the byte cap: it says why the session
    /// ends), then closes the connection's output, so the peer reads the message and an end of
    /// stream; the hub reads (and drops) what the peer still sends until it closes. Closing at
    /// once would reset a connection whose peer had sent bytes the hub had not read (a `new`
    /// right after connecting, refused by a limit), and a reset can discard the message before
    /// the peer reads it. A peer that reads nothing, or never closes, is closed two seconds later.
    func writeLastAndClose(_ bytes: [UInt8]) {
        let channel = self.channel
        writer.enqueue(bytes)
        // Now, when on the loop: the transport may be closing the connection itself (a WebSocket
        // protocol error), and this message should go out before.
        if channel.eventLoop.inEventLoop { writer.drain() }
        writer.flushed().whenComplete { _ in
            channel.close(mode: .output).whenFailure { _ in channel.close(promise: nil) }
        }
        channel.eventLoop.scheduleTask(in: .seconds(2)) { channel.close(promise: nil) }
    }

    /// The connection's writability changed (called on its event loop): when it can take more,
    /// what was held goes out, followed by a report of what was dropped.
    func writabilityChanged(_ writable: Bool) {
        held.withLock { state in
            state.writable = writable
            guard writable else { return }
            // Queued before the lock is released: a delivery sent meanwhile finds nothing held
            // and goes straight to the writer, so it must not get there first.
            var messages = state.items.map(\.bytes)
            if let dropReport {
                for token in state.unreported.keys.sorted() {
                    if let report = dropReport(token, state.unreported[token]!) { messages.append(report[...]) }
                }
            }
            write(messages)
            state.items.removeAll()
            state.perToken.removeAll()
            state.bytes = 0
            state.unreported.removeAll()
        }
    }

    private func slowConsumer() {
        if terminate(
            Reason(code: ReasonCode.dispatchError, description: "Slow consumer: more than the session's limits waiting to be written"))
        {
            slowConsumerUncounted.store(true, ordering: .relaxed)
        }
    }

    /// Whether the session was ended as a slow consumer since the last call: the hub counts a
    /// slow consumer once, not once per delivery refused after.
    func takeSlowConsumer() -> Bool {
        slowConsumerUncounted.exchange(false, ordering: .relaxed)
    }

    /// Ends the session with a reason; only the first call has an effect (and returns true).
    @discardableResult
    func terminate(_ reason: Reason) -> Bool {
        guard !isTerminating.exchange(true, ordering: .relaxed) else { return false }
        post(.terminate(reason))
        return true
    }

    func post(_ event: HubSessionEvent) {
        let channel = self.channel
        channel.eventLoop.execute {
            channel.pipeline.fireUserInboundEventTriggered(event)
        }
    }
}

/// The sessions of one identity, whose bytes waiting to be written are capped together
/// (`maxPendingBytesPerIdentity`): one user cannot make the hub hold more for it by opening more
/// sessions.
final class IdentityPendingGroup: Sendable {
    let maximum: Int
    private let writers = Mutex<[ChannelWriter]>([])

    init(maximum: Int) {
        self.maximum = maximum
    }

    func add(_ writer: ChannelWriter) {
        writers.withLock { $0.append(writer) }
    }

    /// Removes a writer; returns whether the group is empty now.
    @discardableResult
    func remove(_ writer: ChannelWriter) -> Bool {
        writers.withLock { writers in
            writers.removeAll { $0 === writer }
            return writers.isEmpty
        }
    }

    var isEmpty: Bool { writers.withLock { $0.isEmpty } }

    /// Whether `size` more bytes would take the identity's sessions past the cap together.
    func exceeds(adding size: Int) -> Bool {
        writers.withLock { writers in writers.reduce(size) { $0 + $1.pendingBytes } > maximum }
    }
}
