import NIOCore
import RelayCore
import Synchronization

#if canImport(Darwin)
    import Darwin
#else
    import Glibc
#endif

/// Coalesces writes to one channel, from any thread, into one flush per turn of its event loop.
///
/// Writing and flushing each message costs a hop to the event loop, a pass through the pipeline
/// and a system call; at a hundred thousand messages a second that is most of the work. Here,
/// whatever is queued before the channel's loop next runs goes out together, as one buffer and
/// one flush: the bytes as they are (a byte stream: TCP, NATS), or each message framed as a
/// WebSocket text frame. Everything written to the channel goes through its writer, so the order
/// is the order of `enqueue`.
package final class ChannelWriter: Sendable {
    /// How queued messages reach the channel.
    package enum Framing: Sendable, Equatable {
        /// Concatenated as they are.
        case stream
        /// One WebSocket text frame each; masked, as RFC 6455 requires of a client, when `masked`.
        case webSocket(masked: Bool)
    }

    package let channel: any Channel
    private let framing: Framing
    /// Compresses WebSocket messages when permessage-deflate was negotiated (used under the lock).
    private let deflater: WebSocketDeflater?
    private let state: Mutex<State>
    /// Bytes queued or written and not yet on the wire.
    private let unsent = Atomic<Int>(0)

    private struct State: @unchecked Sendable {
        /// What is queued: bytes as they are, or WebSocket frames rendered where they are queued.
        var queued: ByteBuffer
        var maskingKeys = MaskingKeys()
        var queuedBytes = 0
        /// The size of the last drain, up to 256 KiB: the next buffer is made that large when
        /// something is queued, so that a steady stream does not grow it from nothing (copying as
        /// it grows) on every turn, and an idle connection holds none.
        var lastDrainSize = 0
        /// The buffer of a drain whose write has completed, kept for the next batch while the
        /// connection is busy: a fresh one of that size is fresh memory, whose pages fault on first
        /// write (a tenth of the hub's time on LIME fan-out). Dropped when the writer is idle.
        var spare: ByteBuffer?
        var drainScheduled = false
        /// Promises completed when what was queued before them is on the wire.
        var waiters: [EventLoopPromise<Void>] = []
        /// The last write of the last drain: when it completes, everything before it has.
        var lastWrite: EventLoopFuture<Void>?
        /// Promises completed once no more than their bytes are pending (a stalled publisher).
        var lowWaiters: [(bytes: Int, promise: EventLoopPromise<Void>)] = []
    }

    package init(channel: any Channel, framing: Framing, compression: WebSocketCompression? = nil) {
        self.channel = channel
        self.framing = framing
        self.deflater = compression.map(WebSocketDeflater.init)
        self.state = Mutex(State(queued: channel.allocator.buffer(capacity: 0)))
        // What was queued may never be written once the connection is gone: whoever waits for
        // it to drain waits no more (a promise left unfulfilled would also leak).
        channel.closeFuture.whenComplete { [weak self] _ in self?.releaseLowWaiters(all: true) }
    }

    /// Bytes queued or written and not yet on the wire.
    package var pendingBytes: Int { unsent.load(ordering: .relaxed) }

    /// Whether a written drain's buffer is kept for the next batch (only while busy).
    package var holdsSpareBuffer: Bool { state.withLock { $0.spare != nil } }

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

    /// Queues messages in order, under one lock; returns the bytes now pending, these included.
    @discardableResult
    package func enqueue(_ messages: [ArraySlice<UInt8>]) -> Int {
        append(messages)
    }

    /// Queues messages laid out one after another in `bytes`, each ending where the next of `ends`
    /// says (a batch rendered into one array); returns the bytes now pending, these included.
    @discardableResult
    package func enqueue(_ bytes: [UInt8], ends: [Int]) -> Int {
        guard case .webSocket = framing else { return append(CollectionOfOne(bytes)) }
        return append(ends.indices.lazy.map { index in bytes[(index == 0 ? 0 : ends[index - 1])..<ends[index]] })
    }

    /// All the `enqueue`s. Generic only inside this module, where it is specialised: a generic
    /// entry point called from other modules would look up type metadata on every call.
    private func append<Messages: Collection>(_ messages: Messages) -> Int where Messages.Element: Collection<UInt8> {
        var size = 0
        let schedule = state.withLock { state -> Bool in
            if state.queued.capacity == 0 {
                if let spare = state.spare.take() {
                    state.queued = spare
                } else if state.lastDrainSize > 0 {
                    state.queued.reserveCapacity(state.lastDrainSize)
                }
            }
            let before = state.queued.writerIndex
            switch framing {
            case .stream:
                for bytes in messages { state.queued.writeBytes(bytes) }
            case .webSocket(let masked):
                for bytes in messages {
                    let key = masked ? state.maskingKeys.next() : nil
                    let frame = { (payload: UnsafeBufferPointer<UInt8>) in
                        if let deflater = self.deflater, let compressed = deflater.compress(payload) {
                            compressed.withUnsafeBufferPointer {
                                Self.writeFrame($0, maskingKey: key, compressed: true, into: &state.queued)
                            }
                        } else {
                            Self.writeFrame(payload, maskingKey: key, into: &state.queued)
                        }
                    }
                    if bytes.withContiguousStorageIfAvailable(frame) == nil { Array(bytes).withUnsafeBufferPointer(frame) }
                }
            }
            size = state.queued.writerIndex - before
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

    /// A future that succeeds once no more than `bytes` are pending (queued or written and not
    /// yet on the wire), or nil when that is so already. A publisher to this connection waits on
    /// it (stalls) while the connection catches up.
    package func whenPending(atMost bytes: Int) -> EventLoopFuture<Void>? {
        guard pendingBytes > bytes, channel.isActive else { return nil }
        let promise = channel.eventLoop.makePromise(of: Void.self)
        state.withLock { $0.lowWaiters.append((bytes, promise)) }
        // The last write may have completed meanwhile, or the connection closed.
        releaseLowWaiters(all: !channel.isActive)
        return promise.futureResult
    }

    /// Completes the low-water waiters the pending bytes are at or below now (`all`: every one,
    /// the connection being closed).
    private func releaseLowWaiters(all: Bool = false) {
        let pending = pendingBytes
        let released = state.withLock { state -> [EventLoopPromise<Void>] in
            guard !state.lowWaiters.isEmpty else { return [] }
            var released: [EventLoopPromise<Void>] = []
            state.lowWaiters.removeAll { waiter in
                guard all || waiter.bytes >= pending else { return false }
                released.append(waiter.promise)
                return true
            }
            return released
        }
        for promise in released { promise.succeed() }
    }

    /// Writes what is queued, with one flush. Runs on the channel's loop, when scheduled or when a
    /// handler ends a read cycle.
    package func drain() {
        let (queued, size, waiters, previous) = state.withLock { state in
            defer {
                state.queuedBytes = 0
                state.drainScheduled = false
                state.waiters.removeAll()
            }
            var queued: ByteBuffer?
            if state.queued.readableBytes > 0 {
                state.lastDrainSize = min(state.queued.readableBytes, 256 << 10)
                queued = state.queued
                state.queued = channel.allocator.buffer(capacity: 0)
            } else {
                state.spare = nil  // idle
            }
            return (queued, state.queuedBytes, state.waiters, state.lastWrite)
        }
        guard let queued else {
            // Nothing new: waiters are done when the previous drain's writes are.
            for waiter in waiters {
                if let previous { previous.cascade(to: waiter) } else { waiter.succeed() }
            }
            return
        }
        let promise = channel.eventLoop.makePromise(of: Void.self)
        channel.writeAndFlush(queued, promise: promise)
        let future = promise.futureResult
        state.withLock { $0.lastWrite = future }
        future.whenComplete { _ in
            self.unsent.subtract(size, ordering: .relaxed)
            self.recycle(queued)
            self.releaseLowWaiters()
        }
        for waiter in waiters { future.cascade(to: waiter) }
    }

    /// Keeps a written drain's buffer, emptied, as the spare while the writer is busy (more is
    /// queued, or a drain is due); drops any spare once it is idle, so an idle connection holds
    /// none (a drain that finds nothing queued drops it too).
    private func recycle(_ written: ByteBuffer) {
        var buffer = written
        buffer.clear()
        state.withLock { state in
            if state.queued.readableBytes == 0, !state.drainScheduled {
                state.spare = nil
            } else if state.spare == nil {
                state.spare = buffer
            }
        }
    }

    /// One text frame carrying `payload`, written (and masked) straight into `buffer`: the
    /// payload is copied once.
    private static func writeFrame(
        _ payload: UnsafeBufferPointer<UInt8>, maskingKey: UInt32?, compressed: Bool = false, into buffer: inout ByteBuffer
    ) {
        let size = WebSocketFrameWriter.frameSize(payloadCount: payload.count, masked: maskingKey != nil)
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: size) { output in
            WebSocketFrameWriter.write(.text, payload: payload, maskingKey: maskingKey, compressed: compressed, to: output)
        }
    }
}

/// Masking keys for a client's WebSocket frames, drawn from the system's secure generator a few
/// thousand at a time, in one call (RFC 6455 asks for unpredictable keys; a system call per
/// frame, or per eight bytes as `SymmetricKey` draws them, was a visible part of a publishing
/// client's time).
struct MaskingKeys {
    private static let batch = 4096
    private var keys: [UInt32] = []

    mutating func next() -> UInt32 {
        if keys.isEmpty {
            keys = [UInt32](repeating: 0, count: Self.batch)
            keys.withUnsafeMutableBytes { Self.fillRandom($0) }
        }
        return keys.removeLast()
    }

    private static func fillRandom(_ buffer: UnsafeMutableRawBufferPointer) {
        #if canImport(Darwin)
            arc4random_buf(buffer.baseAddress!, buffer.count)
        #else
            // getentropy gives at most 256 bytes a call: 64 calls for the whole batch.
            var filled = 0
            while filled < buffer.count {
                let count = min(256, buffer.count - filled)
                if getentropy(buffer.baseAddress! + filled, count) != 0 {
                    // No kernel generator (it has been in Linux since 3.17): fall back to the standard one.
                    var generator = SystemRandomNumberGenerator()
                    for index in filled..<buffer.count { buffer[index] = generator.next() }
                    return
                }
                filled += count
            }
        #endif
    }
}
