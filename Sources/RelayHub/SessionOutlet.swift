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

/// The hub's handle on one session's connection: where deliveries are written, from any thread.
///
/// It counts the bytes written but not yet on the wire; past the limit the session is a slow
/// consumer and is ended, so one stalled reader cannot make the hub's memory grow without bound.
final class SessionOutlet: Sendable {
    let channel: any Channel
    private let maximumPendingBytes: Int
    private let pendingBytes = Atomic<Int>(0)
    private let isTerminating = Atomic<Bool>(false)

    init(channel: any Channel, maximumPendingBytes: Int) {
        self.channel = channel
        self.maximumPendingBytes = maximumPendingBytes
    }

    /// Writes encoded envelopes (or NATS operations) in order, with one flush, in one hop to the
    /// channel's event loop. Returns false when the session is a slow consumer and nothing was
    /// written (the session is being ended).
    @discardableResult
    func send(_ buffers: [ByteBuffer]) -> Bool {
        guard let last = buffers.last else { return true }
        let size = buffers.reduce(0) { $0 + $1.readableBytes }
        let pending = pendingBytes.add(size, ordering: .relaxed).newValue
        guard pending <= maximumPendingBytes else {
            pendingBytes.subtract(size, ordering: .relaxed)
            terminate(
                Reason(
                    code: ReasonCode.dispatchError,
                    description: "Slow consumer: more than \(maximumPendingBytes) bytes waiting to be written"))
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
