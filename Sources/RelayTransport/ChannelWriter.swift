import NIOCore
import Synchronization

/// Coalesces writes to one channel, from any thread, into one flush per turn of its event loop.
///
/// Writing and flushing each message costs a hop to the event loop, a pass through the pipeline
/// and a system call; at a hundred thousand messages a second that is most of the work. Here,
/// whatever is queued before the channel's loop next runs goes out together: one buffer (a
/// byte stream: TCP, NATS) or one frame per message (WebSocket), and one flush. Everything
/// written to the channel goes through its writer, so the order is the order of `enqueue`.
package final class ChannelWriter: Sendable {
    /// How queued messages reach the channel: concatenated into one buffer, or one buffer each
    /// (each becomes a WebSocket frame).
    package enum Framing: Sendable {
        case stream
        case messages
    }

    package let channel: any Channel
    private let framing: Framing
    private let state: Mutex<State>
    /// Bytes queued or written and not yet on the wire.
    private let unsent = Atomic<Int>(0)

    private struct State: @unchecked Sendable {
        var stream: ByteBuffer
        var messages: [ByteBuffer] = []
        var queuedBytes = 0
        var drainScheduled = false
        /// Promises completed when what was queued before them is on the wire.
        var waiters: [EventLoopPromise<Void>] = []
        /// The last write of the last drain: when it completes, everything before it has.
        var lastWrite: EventLoopFuture<Void>?
    }

    package init(channel: any Channel, framing: Framing) {
        self.channel = channel
        self.framing = framing
        self.state = Mutex(State(stream: channel.allocator.buffer(capacity: 0)))
    }

    /// Bytes queued or written and not yet on the wire.
    package var pendingBytes: Int { unsent.load(ordering: .relaxed) }

    /// Queues one message; returns the bytes now pending, these included.
    @discardableResult
    package func enqueue(_ bytes: [UInt8]) -> Int {
        append(CollectionOfOne(bytes))
    }

    /// Queues messages in order, under one lock; returns the bytes now pending, these included.
    @discardableResult
    package func enqueue(_ messages: [[UInt8]]) -> Int {
        append(messages)
    }

    /// Queues messages laid out one after another in `bytes`, each ending where the next of `ends`
    /// says (a batch rendered into one array); returns the bytes now pending, these included.
    @discardableResult
    package func enqueue(_ bytes: [UInt8], ends: [Int]) -> Int {
        guard framing == .messages else { return append(CollectionOfOne(bytes)) }
        return append(ends.indices.lazy.map { index in bytes[(index == 0 ? 0 : ends[index - 1])..<ends[index]] })
    }

    /// All the `enqueue`s. Generic only inside this module, where it is specialised: a generic
    /// entry point called from other modules would look up type metadata on every call.
    private func append<Messages: Collection>(_ messages: Messages) -> Int where Messages.Element: Collection<UInt8> {
        var size = 0
        // One buffer per message (a WebSocket frame each) is made before taking the lock.
        var buffers: [ByteBuffer] = []
        if framing == .messages {
            buffers.reserveCapacity(messages.count)
            for bytes in messages { buffers.append(channel.allocator.buffer(bytes: bytes)) }
        }
        let schedule = state.withLock { state -> Bool in
            switch framing {
            case .stream:
                for bytes in messages {
                    size += bytes.count
                    state.stream.writeBytes(bytes)
                }
            case .messages:
                for buffer in buffers { size += buffer.readableBytes }
                state.messages.append(contentsOf: buffers)
            }
            state.queuedBytes += size
            defer { state.drainScheduled = true }
            return !state.drainScheduled
        }
        let pending = unsent.add(size, ordering: .relaxed).newValue
        if schedule { channel.eventLoop.execute { self.drain() } }
        return pending
    }

    /// A future that succeeds once everything queued so far is on the wire (fails if the
    /// connection closes first).
    package func flushed() -> EventLoopFuture<Void> {
        let promise = channel.eventLoop.makePromise(of: Void.self)
        let schedule = state.withLock { state -> Bool in
            state.waiters.append(promise)
            defer { state.drainScheduled = true }
            return !state.drainScheduled
        }
        if schedule { channel.eventLoop.execute { self.drain() } }
        return promise.futureResult
    }

    /// Writes what is queued, with one flush. Runs on the channel's loop, when scheduled or when a
    /// handler ends a read cycle.
    package func drain() {
        let (stream, messages, size, waiters, previous) = state.withLock { state in
            defer {
                state.messages.removeAll(keepingCapacity: true)
                state.queuedBytes = 0
                state.drainScheduled = false
                state.waiters.removeAll()
            }
            let stream = state.stream
            if stream.readableBytes > 0 { state.stream = channel.allocator.buffer(capacity: 0) }
            return (stream, state.messages, state.queuedBytes, state.waiters, state.lastWrite)
        }
        var last: ByteBuffer?
        switch framing {
        case .stream:
            if stream.readableBytes > 0 { last = stream }
        case .messages:
            for buffer in messages.dropLast() { channel.write(buffer, promise: nil) }
            last = messages.last
        }
        guard let last else {
            // Nothing new: waiters are done when the previous drain's writes are.
            for waiter in waiters {
                if let previous { previous.cascade(to: waiter) } else { waiter.succeed() }
            }
            return
        }
        let promise = channel.eventLoop.makePromise(of: Void.self)
        channel.writeAndFlush(last, promise: promise)
        let future = promise.futureResult
        state.withLock { $0.lastWrite = future }
        future.whenComplete { _ in self.unsent.subtract(size, ordering: .relaxed) }
        for waiter in waiters { future.cascade(to: waiter) }
    }
}
