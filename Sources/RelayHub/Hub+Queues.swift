import Foundation
import Logging
import NIOCore
import NIOPosix
import RelayCore
import RelayTransport
import Synchronization
import Tracing

// Durable queues: the SQLite store behind the core's queue outputs.
extension Hub {
    // MARK: - Durable queues

    /// Opens the queue store in the data directory and brings back the queues and their messages.
    func openStore() async throws {
        let store = try await QueueStore.open(directory: configuration.data)
        var restored: [(QueueConfiguration, [(QueuedMessage, deliveries: Int, storedAt: Int64)])] = []
        for queue in try await store.loadQueues() {
            let messages = try await store.loadMessages(queue.name).map {
                (QueuePersistence.queued($0), deliveries: $0.deliveries, storedAt: $0.storedAt)
            }
            restored.append((queue, messages))
        }
        let persistence = QueuePersistence(store: store) { [weak self] job, error in
            self?.persisted(job, error: error)
        }
        self.persistence.withLock { $0 = persistence }
        var outputs: [HubCore.Output] = []
        state.withLock { state in
            for (queue, messages) in restored { outputs += state.core.restoreQueue(queue, messages: messages) }
        }
        for settings in configuration.queues {
            do {
                outputs += try state.withLock { state throws(Reason) in try state.core.createQueue(settings.configuration) }
            } catch {
                throw HubError.invalidConfiguration("queue '\(settings.name)': \(error.description)")
            }
        }
        let total = restored.reduce(0) { $0 + $1.1.count }
        // Age and time-to-live are checked once a second.
        let sweep = timerLoop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [weak self] _ in
            guard let self else { return }
            let outputs = self.state.withLock { $0.core.sweepQueues(now: Self.now()) }
            self.perform(outputs)
        }
        state.withLock { $0.sweep = sweep }
        logger.info(
            "durable queues ready", metadata: ["data": "\(configuration.data)", "queues": "\(restored.count)", "messages": "\(total)"])
        if configuration.cluster != nil, configuration.cluster?.jetStream != false, total > 0 {
            logger.info("moving the stored queues' messages into JetStream", metadata: ["messages": "\(total)"])
        }
        state.withLock { carryOutClusterOperations(in: &$0) }
        perform(outputs)
    }

    /// Milliseconds since 1970: the time the core is given for retention.
    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    func closeStore() async {
        state.withLock { $0.sweep?.cancel() }
        let persistence = self.persistence.withLock { $0.take() }
        try? await persistence?.close()
    }

    func store(_ outputs: [HubCore.Output]) {
        guard let persistence = persistence.withLock({ $0 }) else {
            logger.error("durable queue output without a store")
            return
        }
        for output in outputs {
            switch output {
            case .persist(let copies, let then):
                persistence.submit(.persist(.init(copies: copies, then: then, span: spans?.storeStarted(copies))))
            case .unpersist(let queue, let sequence): persistence.submit(.write(.remove(queue: queue, sequence: sequence)))
            case .recordDeliveries(let queue, let sequence, let count):
                persistence.submit(.write(.deliveries(queue: queue, sequence: sequence, count: count)))
            case .saveQueue(let queue): persistence.submit(.write(.saveQueue(queue)))
            case .deleteQueue(let name): persistence.submit(.write(.deleteQueue(name)))
            default: break
            }
        }
    }

    /// A group of stored messages is on disk: deliver them and confirm their publishers.
    func persisted(_ job: QueuePersistence.Job, error: (any Error)?) {
        if let error { job.span?.recordError(error) }
        job.span?.end()
        if let error {
            logger.error("storing a publication failed", metadata: ["error": "\(error)"])
            state.withLock { $0.storageFailure = "storing a publication failed: \(error)" }
            // The message is not delivered, and a publisher waiting for confirmation learns why.
            let failures: [HubCore.Output] = job.then.compactMap { output in
                guard case .send(let session, .command(var response)) = output else { return nil }
                response.status = .failure
                response.type = nil
                response.resource = nil
                response.reason = Reason(code: ReasonCode.dispatchError, description: "The message could not be stored: \(error)")
                return .send(session, .command(response))
            }
            perform(failures)
            return
        }
        metrics.queueConfirmed(after: ContinuousClock.now - job.submittedAt)
        let now = Self.now()
        let outputs = state.withLock { state in
            job.copies.flatMap { state.core.persisted(queue: $0.queue, $0.queued, at: now) }
        }
        perform(outputs + job.then)
    }
}
