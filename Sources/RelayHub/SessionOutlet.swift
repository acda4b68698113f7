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

    /// Writes one encoded envelope. Returns false when the session is a slow consumer and the
    /// envelope was not written (the session is being ended).
    @discardableResult
    func send(_ bytes: ByteBuffer) -> Bool {
        let size = bytes.readableBytes
        let pending = pendingBytes.add(size, ordering: .relaxed).newValue
        guard pending <= maximumPendingBytes else {
            pendingBytes.subtract(size, ordering: .relaxed)
            terminate(
                Reason(
                    code: ReasonCode.dispatchError,
                    description: "Slow consumer: more than \(maximumPendingBytes) bytes waiting to be written"))
            return false
        }
        channel.writeAndFlush(bytes).whenComplete { [self] _ in
            pendingBytes.subtract(size, ordering: .relaxed)
        }
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
