import NIOCore
import RelayCore
import Synchronization

/// What the hub tells a session's connection from outside its event loop.
enum HubSessionEvent: Sendable {
    /// End the session with `failed` and this reason (its node was taken, it is a slow consumer).
    case terminate(Reason)
    /// The hub is shutting down: finish the session.
    case shutdown
}

/// One write for a session: an encoded envelope or NATS operation, and, for a subscription's
/// delivery, its name and the bound on how many may wait.
struct OutletItem: Sendable {
    var token: String?
    var limit: DeliveryLimit?
    var buffer: ByteBuffer
}

/// The hub's handle on one session's connection: where deliveries are written, from any thread.
///
/// While the connection can take more (NIO's writability), writes go straight out. While it
/// cannot, deliveries are held here, at most each subscription's `DeliveryLimit` of them; beyond
/// that its `OverflowPolicy` drops the newest or the oldest (counted, and reported to the
/// subscriber when the connection catches up) or ends the session. Independently, the bytes
/// written but not yet on the wire are capped: past `maximumPendingBytes` the session is a slow
/// consumer and is ended. So one stalled reader cannot make the hub's memory grow without bound.
final class SessionOutlet: Sendable {
    let channel: any Channel
    private let maximumPendingBytes: Int
    private let pendingBytes = Atomic<Int>(0)
    private let isTerminating = Atomic<Bool>(false)
    private let held = Mutex(Held())
    /// Renders "N deliveries of subscription T were dropped" for the subscriber, if its dialect can say it.
    private let dropReport: (@Sendable (String, Int) -> ByteBuffer?)?

    private struct Held: Sendable {
        var writable = true
        var items: [OutletItem] = []
        var perToken: [String: Int] = [:]
        var bytes = 0
        var unreported: [String: Int] = [:]
    }

    init(channel: any Channel, maximumPendingBytes: Int, dropReport: (@Sendable (String, Int) -> ByteBuffer?)? = nil) {
        self.channel = channel
        self.maximumPendingBytes = maximumPendingBytes
        self.dropReport = dropReport
    }

    /// Writes (or holds) items in order. Returns how many deliveries were dropped, or nil when the
    /// session is being ended as a slow consumer.
    func send(_ items: [OutletItem]) -> Int? {
        var direct: [ByteBuffer] = []
        var dropped = 0
        var overflowed = false
        held.withLock { state in
            if state.writable && state.items.isEmpty {
                direct = items.map(\.buffer)
                return
            }
            for item in items {
                if let token = item.token, let limit = item.limit, state.perToken[token, default: 0] >= limit.maximumHeld {
                    switch limit.policy {
                    case .dropNewest:
                        state.unreported[token, default: 0] += 1
                        dropped += 1
                        continue
                    case .dropOldest:
                        if let index = state.items.firstIndex(where: { $0.token == token }) {
                            state.bytes -= state.items.remove(at: index).buffer.readableBytes
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
                state.bytes += item.buffer.readableBytes
                if let token = item.token { state.perToken[token, default: 0] += 1 }
            }
            if state.bytes + pendingBytes.load(ordering: .relaxed) > maximumPendingBytes { overflowed = true }
        }
        if overflowed {
            slowConsumer()
            return nil
        }
        if !direct.isEmpty && !write(direct) { return nil }
        return dropped
    }

    /// Writes buffers with one flush, in one hop to the channel's event loop; false when the byte
    /// cap is passed (the session is being ended).
    private func write(_ buffers: [ByteBuffer]) -> Bool {
        guard let last = buffers.last else { return true }
        let size = buffers.reduce(0) { $0 + $1.readableBytes }
        let pending = pendingBytes.add(size, ordering: .relaxed).newValue
        guard pending <= maximumPendingBytes else {
            pendingBytes.subtract(size, ordering: .relaxed)
            slowConsumer()
            return false
        }
        let channel = self.channel
        let write = { [self] in
            for buffer in buffers.dropLast() { channel.write(buffer, promise: nil) }
            // Writes complete in order: when the last is on the wire, all are.
            channel.writeAndFlush(last).whenComplete { _ in
                self.pendingBytes.subtract(size, ordering: .relaxed)
            }
        }
        // On the session's own loop (a reply to what it just sent) the write happens now, so it
        // keeps its place before anything the connection writes next.
        if channel.eventLoop.inEventLoop { write() } else { channel.eventLoop.execute(write) }
        return true
    }

    /// The connection's writability changed (called on its event loop): when it can take more,
    /// what was held goes out, followed by a report of what was dropped.
    func writabilityChanged(_ writable: Bool) {
        let (items, reports) = held.withLock { state -> ([OutletItem], [String: Int]) in
            state.writable = writable
            guard writable else { return ([], [:]) }
            defer {
                state.items.removeAll()
                state.perToken.removeAll()
                state.bytes = 0
                state.unreported.removeAll()
            }
            return (state.items, state.unreported)
        }
        var buffers = items.map(\.buffer)
        if let dropReport {
            for token in reports.keys.sorted() { if let report = dropReport(token, reports[token]!) { buffers.append(report) } }
        }
        _ = write(buffers)
    }

    private func slowConsumer() {
        terminate(
            Reason(code: ReasonCode.dispatchError, description: "Slow consumer: more than the session's limits waiting to be written"))
    }

    /// Ends the session with a reason; only the first call has an effect.
    func terminate(_ reason: Reason) {
        guard !isTerminating.exchange(true, ordering: .relaxed) else { return }
        post(.terminate(reason))
    }

    func post(_ event: HubSessionEvent) {
        let channel = self.channel
        channel.eventLoop.execute {
            channel.pipeline.fireUserInboundEventTriggered(event)
        }
    }
}
