import Foundation
import RelayCore
import Synchronization

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
    }

    let store: QueueStore
    private let jobs = Mutex<(waiting: [Job], running: Bool)>(([], false))
    /// Called with each job once it is on disk (or with the error that kept it off).
    private let committed: @Sendable (Job, (any Error)?) -> Void

    init(store: QueueStore, committed: @escaping @Sendable (Job, (any Error)?) -> Void) {
        self.store = store
        self.committed = committed
    }

    func submit(_ job: Job) {
        let start = jobs.withLock { state in
            state.waiting.append(job)
            defer { state.running = true }
            return !state.running
        }
        if start { Task { await self.drain() } }
    }

    private func drain() async {
        while true {
            let batch = jobs.withLock { state in
                defer { state.waiting.removeAll() }
                if state.waiting.isEmpty { state.running = false }
                return state.waiting
            }
            guard !batch.isEmpty else { return }
            let messages = batch.flatMap { job in job.copies.map { (queue: $0.queue, message: Self.stored($0.queued)) } }
            var failure: (any Error)?
            do { try await store.append(messages) } catch { failure = error }
            for job in batch { committed(job, failure) }
        }
    }

    func remove(_ sequence: Int64, from queue: String) {
        Task { await store.remove(sequence, from: queue) }
    }

    func recordDeliveries(_ count: Int, of sequence: Int64, in queue: String) {
        Task { await store.recordDeliveries(count, of: sequence, in: queue) }
    }

    // MARK: - Conversions

    static func stored(_ queued: QueuedMessage) -> StoredMessage {
        let message = queued.message
        var metadata = message.metadata
        if let publisher = message.publisher { metadata["#publisher"] = publisher.description }
        if let replyTo = message.replyTo { metadata["#reply"] = replyTo }
        if let status = message.status { metadata["#status"] = String(status) }
        let kind: String =
            switch message.body {
            case .json: "json"
            case .text: "text"
            case .bytes: "bytes"
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
