import RelayCore

/// A subscription of a `RelayConnection`: an `AsyncSequence` of publications, over either dialect.
/// Leaving the loop, or `unsubscribe()`, ends it at the server.
public final class RelaySubscription: AsyncSequence, Sendable {
    public typealias Element = Publication

    enum Base: Sendable {
        case lime(SubjectSubscription)
        case nats(NATSSubscription)
    }

    let base: Base

    init(_ base: Base) {
        self.base = base
    }

    /// Publications dropped because the application read too slowly.
    public var droppedCount: Int {
        switch base {
        case .lime(let subscription): subscription.droppedCount
        case .nats(let subscription): subscription.droppedCount
        }
    }

    public func unsubscribe() async throws {
        switch base {
        case .lime(let subscription): try await subscription.unsubscribe()
        case .nats(let subscription): try subscription.unsubscribe()
        }
    }

    public func makeAsyncIterator() -> Iterator {
        switch base {
        case .lime(let subscription): Iterator(base: .lime(subscription.makeAsyncIterator()))
        case .nats(let subscription): Iterator(base: .nats(subscription.makeAsyncIterator()))
        }
    }

    public struct Iterator: AsyncIteratorProtocol {
        enum Base {
            case lime(SubjectSubscription.Iterator)
            case nats(NATSSubscription.Iterator)
        }

        var base: Base

        public mutating func next() async -> Publication? {
            switch base {
            case .lime(var iterator):
                defer { base = .lime(iterator) }
                return await iterator.next()
            case .nats(var iterator):
                defer { base = .nats(iterator) }
                return await iterator.next().map(Publication.init)
            }
        }
    }
}

/// A service served by a `RelayConnection`.
public final class RelayServiceRegistration: Sendable {
    enum Base: Sendable {
        case lime(ServiceRegistration)
        case nats(NATSSubscription, Task<Void, Never>, NATSClient)
    }

    let base: Base

    init(_ base: Base) {
        self.base = base
    }

    /// Stops serving; requests in progress are still answered.
    public func stop() async throws {
        switch base {
        case .lime(let registration):
            try await registration.stop()
        case .nats(let requests, let worker, let client):
            try requests.unsubscribe()
            // The server has the UNSUB when this returns: no request goes to this instance after.
            try await client.flush()
            await worker.value
        }
    }
}

/// A consumer of a durable queue of a `RelayConnection`: an `AsyncSequence` of deliveries to
/// answer (`ack`, `nak`, `inProgress`, `term`).
public final class RelayConsumer: AsyncSequence, Sendable {
    public typealias Element = QueueDelivery

    enum Base: Sendable {
        case lime(QueueConsumer)
        case nats(NATSSubscription, NATSClient)
    }

    let base: Base

    init(_ base: Base) {
        self.base = base
    }

    public func stop() async throws {
        switch base {
        case .lime(let consumer): try await consumer.stop()
        case .nats(let subscription, _): try subscription.unsubscribe()
        }
    }

    public func makeAsyncIterator() -> Iterator {
        switch base {
        case .lime(let consumer): Iterator(base: .lime(consumer.makeAsyncIterator()))
        case .nats(let subscription, let client): Iterator(base: .nats(subscription.makeAsyncIterator(), client))
        }
    }

    public struct Iterator: AsyncIteratorProtocol {
        enum Base {
            case lime(QueueConsumer.Iterator)
            case nats(NATSSubscription.Iterator, NATSClient)
        }

        var base: Base

        public mutating func next() async -> QueueDelivery? {
            switch base {
            case .lime(var iterator):
                defer { base = .lime(iterator) }
                return await iterator.next()
            case .nats(var iterator, let client):
                defer { base = .nats(iterator, client) }
                guard let message = await iterator.next() else { return nil }
                // The ack subject, `$RELAY.ACK.QUEUE.DELIVERY`, names the delivery.
                let replyTo = message.replyTo ?? ""
                return QueueDelivery(
                    publication: Publication(message), id: replyTo, count: 1, sequence: 0, answerer: .nats(client, replyTo: replyTo))
            }
        }
    }
}

extension Publication {
    /// A NATS message as a publication: `Content-Type` is its type (JSON content parsed), the
    /// other headers its metadata.
    init(_ message: NATSMessage) {
        let (contentType, metadata) = message.headers?.typeAndMetadata ?? (nil, [:])
        let type = contentType ?? .textPlain
        let content: JSONValue = type.isJSON ? ((try? JSONParser.parse(message.payload)) ?? .string(message.text)) : .string(message.text)
        self.init(subject: message.subject, publisher: nil, type: type, body: JSONContent(content), metadata: metadata)
    }

    init(subject: String, publisher: Node?, type: MediaType, body: JSONContent, metadata: [String: String]) {
        self.subject = subject
        self.publisher = publisher
        self.type = type
        self.body = body
        self.metadata = metadata
    }
}
