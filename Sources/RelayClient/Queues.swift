import Foundation
import RelayCore
import Synchronization

/// A message delivered from a durable queue: answer it with `ack`, `nak`, `inProgress` or `term`.
public struct QueueDelivery: Sendable {
    public let publication: Publication
    /// The delivery's id (a new one for each delivery of a message).
    public let id: String
    /// How many times this message has been delivered, this time included.
    public let count: Int
    /// The message's place in its queue (0 when the dialect does not say, as over NATS).
    public let sequence: Int64
    let answerer: QueueAnswerer

    /// Done: the message is forgotten.
    public func ack() async throws {
        try await answerer.answer(id: id, .ack)
    }

    /// Not now: deliver it again, after `delay` if given.
    public func nak(delay: Duration? = nil) async throws {
        try await answerer.answer(id: id, .nak(delay: delay))
    }

    /// Still working on it: the ack deadline starts again.
    public func inProgress() async throws {
        try await answerer.answer(id: id, .inProgress)
    }

    /// Never again: the message goes to the queue's dead letters with the reason.
    public func term(reason: String) async throws {
        try await answerer.answer(id: id, .term(reason: reason))
    }
}

/// Where a delivery's answer goes: a LIME notification about it, or (NATS) JetStream's bodies
/// published on its ack subject.
enum QueueAnswerer: Sendable {
    case lime(LIMEClient)
    case nats(NATSClient, replyTo: String)

    enum Answer {
        case ack
        case nak(delay: Duration?)
        case inProgress
        case term(reason: String)
    }

    func answer(id: String, _ answer: Answer) async throws {
        switch self {
        case .lime(let client):
            try await client.send(Self.notification(id: id, answer))
        case .nats(let client, let replyTo):
            let body: String
            switch answer {
            case .ack: body = "+ACK"
            case .nak(let delay): body = delay.map { #"-NAK {"delay": \#($0.nanoseconds)}"# } ?? "-NAK"
            case .inProgress: body = "+WPI"
            case .term(let reason): body = "+TERM \(reason)"
            }
            try client.publish(replyTo, body)
        }
    }

    private static func notification(id: String, _ answer: Answer) -> LIMENotification {
        switch answer {
        case .ack:
            return LIMENotification(header: EnvelopeHeader(id: id), event: .consumed)
        case .nak(let delay):
            var header = EnvelopeHeader(id: id)
            if let delay { header.metadata = ["#delay": String(delay.milliseconds)] }
            return LIMENotification(header: header, event: .failed, reason: Reason(code: RelayReasonCode.nak, description: "nak"))
        case .inProgress:
            return LIMENotification(header: EnvelopeHeader(id: id), event: .received)
        case .term(let reason):
            return LIMENotification(
                header: EnvelopeHeader(id: id), event: .failed, reason: Reason(code: ReasonCode.applicationError, description: reason))
        }
    }
}

/// A consumer of a durable queue: an `AsyncSequence` of deliveries. Consumers of one queue compete;
/// at most `credit` deliveries are unanswered at once. Leaving the loop, `stop()` or a lost
/// connection hands what it held to the other consumers at once.
public final class QueueConsumer: AsyncSequence, Sendable {
    public typealias Element = QueueDelivery

    public let queue: String
    private let subscription: SubjectSubscription
    private let client: LIMEClient

    init(queue: String, subscription: SubjectSubscription, client: LIMEClient) {
        self.queue = queue
        self.subscription = subscription
        self.client = client
    }

    public func stop() async throws {
        try await subscription.unsubscribe()
    }

    public func makeAsyncIterator() -> Iterator {
        Iterator(base: subscription.makeAsyncIterator(), client: client)
    }

    public struct Iterator: AsyncIteratorProtocol {
        var base: SubjectSubscription.Iterator
        let client: LIMEClient

        public mutating func next() async -> QueueDelivery? {
            guard let publication = await base.next() else { return nil }
            return QueueDelivery(
                publication: publication, id: publication.metadata["#delivery"] ?? "",
                count: publication.metadata["#deliveries"].flatMap { Int($0) } ?? 1,
                sequence: publication.metadata["#sequence"].flatMap { Int64($0) } ?? 0, answerer: .lime(client))
        }
    }
}

extension LIMEClient {
    /// Creates a durable queue (or accepts the same configuration again).
    public func createQueue(_ queue: QueueConfiguration) async throws {
        var resource = queue.json
        resource["name"] = nil
        try await expectSuccess(
            LIMECommand(method: .set, uri: "/queues/\(queue.name)", type: .applicationJSON, resource: .object(resource)))
    }

    /// Deletes a queue and its messages.
    public func deleteQueue(_ name: String) async throws {
        try await expectSuccess(LIMECommand(method: .delete, uri: "/queues/\(name)"))
    }

    /// The queues with their configuration and counts.
    public func queues() async throws -> [JSONValue] {
        try await expectSuccess(LIMECommand(method: .get, uri: "/queues"))?["queues"]?.arrayValue ?? []
    }

    /// One queue's configuration and counts.
    public func queueInfo(_ name: String) async throws -> JSONValue {
        try await expectSuccess(LIMECommand(method: .get, uri: "/queues/\(name)")) ?? .null
    }

    /// Consumes a durable queue with acknowledgements; `credit` deliveries may be unanswered at once
    /// (1 is stop-and-wait; nil is unlimited).
    public func consume(_ queue: String, credit: Int? = 1, bufferSize: Int = 1000) async throws -> QueueConsumer {
        let token = "queue:\(queue)"
        let inbox = SubscriptionInbox(bufferSize: bufferSize, policy: .dropNewest, fellBehind: slowConsumerReporter(queue))
        core.addSubscription(token, inbox)
        let command = LIMECommand(method: .subscribe, uri: "/queues/\(queue)?credit=\(credit.map(String.init) ?? "unlimited")")
        do {
            try await expectSuccess(command)
        } catch {
            core.removeSubscription(token)
            throw error
        }
        // After a reconnection the consumer is registered again; what it had not acknowledged
        // comes again, as the hub redelivers what a lost session held.
        core.addRestoration(.init(key: token, command: command, awaitsResponse: true))
        let subscription = SubjectSubscription(
            filter: queue, queue: nil, token: token, inbox: inbox, client: self, unsubscribeURI: "/queues/\(queue)")
        return QueueConsumer(queue: queue, subscription: subscription, client: self)
    }

    @discardableResult
    func expectSuccess(_ command: LIMECommand) async throws -> JSONValue? {
        let response = try await request(command)
        guard response.status == .success else { throw RelayError(response.reason ?? Reason(code: 1, description: "failed")) }
        return response.resource
    }
}
