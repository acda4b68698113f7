import Foundation
import RelayCore
import Synchronization
import Tracing

/// Carries the core's storage outputs to the `QueueStore`, in order.
///
/// Publications kept by durable queues are written in the order the core produced them, and all
/// that wait while a group is committing go into the next group: each group is one transaction and
/// one fsync. Only after its group is on disk is a message handed to the core for delivery (and its
/// publisher confirmed).
final class QueuePersistence: Sendable {
    struct Job: Sendable {
        var copies: [QueueCopy]
        var then: [HubCore.Output]
        /// When it was handed over, for the confirmation latency (`relay_queue_confirmation_duration_seconds`).
        var submittedAt = ContinuousClock.now
        /// Its `queue store` span, when the hub makes spans.
        var span: (any Span)?
    }

    enum Operation: Sendable {
        case persist(Job)
        case write(QueueStore.Write)
    }

    let store: QueueStore
    private let jobs = Mutex<(waiting: [Operation], running: Bool, idle: [CheckedContinuation<Void, Never>])>(([], false, []))
    /// Called with each job once it is on disk (or with the error that kept it off).
    private let committed: @Sendable (Job, (any Error)?) -> Void

    init(store: QueueStore, committed: @escaping @Sendable (Job, (any Error)?) -> Void) {
        self.store = store
        self.committed = committed
    }

    /// Hands an operation to the store, after every one submitted before it.
    func submit(_ operation: Operation) {
        let start = jobs.withLock { state in
            state.waiting.append(operation)
            defer { state.running = true }
            return !state.running
        }
        if start { Task { await self.drain() } }
    }

    private func drain() async {
        while true {
            let (batch, idle) = jobs.withLock { state in
                defer { state.waiting.removeAll() }
                if state.waiting.isEmpty {
                    state.running = false
                    defer { state.idle.removeAll() }
                    return ([Operation](), state.idle)
                }
                return (state.waiting, [])
            }
            guard !batch.isEmpty else {
                for waiter in idle { waiter.resume() }
                return
            }
            // Writes go into the store's next group in order; the publications' appends close the
            // group, and the group's commit confirms them all.
            var persisted: [Job] = []
            for operation in batch {
                switch operation {
                case .write(let write): await store.enqueue(write)
                case .persist(let job): persisted.append(job)
                }
            }
            let messages = persisted.flatMap { job in job.copies.map { (queue: $0.queue, message: Self.stored($0.queued)) } }
            var failure: (any Error)?
            do {
                if messages.isEmpty { try await store.sync() } else { try await store.append(messages) }
            } catch {
                failure = error
            }
            for job in persisted { committed(job, failure) }
        }
    }

    /// Waits until everything submitted is on disk, then closes the store.
    func close() async throws {
        await withCheckedContinuation { continuation in
            let running = jobs.withLock { state in
                if state.running { state.idle.append(continuation) }
                return state.running
            }
            if !running { continuation.resume() }
        }
        try await store.close()
    }

    // MARK: - Conversions

    static func stored(_ queued: QueuedMessage) -> StoredMessage {
        let message = queued.message
        var metadata = message.metadata
        if let publisher = message.publisher { metadata["#publisher"] = publisher.description }
        if let replyTo = message.replyTo { metadata["#reply"] = replyTo }
        if let status = message.status { metadata["#status"] = String(status) }
        let kind: String =
            switch message.storedBody {
            case .json: "json"
            case .text: "text"
            case .bytes, .content: "bytes"
            }
        metadata["#body"] = kind
        return StoredMessage(
            sequence: queued.sequence, subject: message.subject, type: message.type?.rawValue, body: message.payloadBytes,
            metadata: metadata, storedAt: Int64(Date().timeIntervalSince1970 * 1000))
    }

    static func queued(_ stored: StoredMessage) -> QueuedMessage {
        var metadata = stored.metadata
        let publisher = metadata.removeValue(forKey: "#publisher").flatMap { Node($0) }
        let replyTo = metadata.removeValue(forKey: "#reply")
        let status = metadata.removeValue(forKey: "#status").flatMap { Int($0) }
        let body: PublishedMessage.Body
        switch metadata.removeValue(forKey: "#body") {
        case "json": body = (try? JSONParser.parse(stored.body)).map { .json($0) } ?? .bytes(stored.body)
        case "text": body = .text(String(decoding: stored.body, as: UTF8.self))
        default: body = .bytes(stored.body)
        }
        let message = PublishedMessage(
            subject: stored.subject, replyTo: replyTo, publisher: publisher, type: stored.type.map { MediaType($0) }, body: body,
            metadata: metadata, status: status)
        return QueuedMessage(sequence: stored.sequence, message: message)
    }
}
