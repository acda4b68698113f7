// What the hub's monitoring endpoints read of `HubCore` (docs/OPERATIONS.md): interest per
// subject and queue group, subscriptions per session, queues and services with their counts.

extension HubCore {
    /// The subscriptions to one filter (in one queue group, if any).
    public struct SubjectInterest: Sendable, Equatable {
        public var filter: String
        public var queue: String?
        public var subscriptions: Int
    }

    /// Interest per filter and queue group, ordered by filter then group.
    public var subjectInterest: [SubjectInterest] {
        struct Key: Hashable {
            var filter: String
            var queue: String?
        }
        var counts: [Key: Int] = [:]
        for slot in subscriptionSlots where slot.isLive { counts[Key(filter: slot.filter, queue: slot.queue), default: 0] += 1 }
        return counts.map { SubjectInterest(filter: $0.key.filter, queue: $0.key.queue, subscriptions: $0.value) }
            .sorted { ($0.filter, $0.queue ?? "") < ($1.filter, $1.queue ?? "") }
    }

    /// How many subscriptions a session holds.
    public func subscriptionCount(of session: SessionID) -> Int {
        subscriptionCounts[session, default: 0]
    }

    /// Each durable queue's configuration and counts, by name (as `get /queues/NAME` answers).
    public var queueSummaries: [JSONObject] {
        (queues.keys.sorted() + (cluster?.jetStreamQueues.keys.sorted() ?? [])).map(queueJSON)
    }

    /// Each service: its description's name, instances, requests outstanding, durable or not.
    public var serviceSummaries: [JSONObject] {
        var outstandingByService: [String: Int] = [:]
        for flight in inFlight.values { outstandingByService[flight.service, default: 0] += 1 }
        return services.keys.sorted().map { name in
            let entry = services[name]!
            return [
                "name": .string(entry.description.name), "instances": .number(JSONNumber(entry.instances.count)),
                "outstanding": .number(JSONNumber(outstandingByService[name, default: 0])), "durable": .bool(entry.durable),
                "methods": .array(entry.description.methods.map { .string($0.name) }),
            ]
        }
    }

    /// Requests in flight across all services.
    public var requestsInFlight: Int { inFlight.count }
}

extension HubCore {
    /// The service and method a request in flight was sent to, for its latency.
    public func requestTarget(_ id: RequestID) -> (service: String, method: String, metadata: [String: String]?)? {
        inFlight[id].map { ($0.service, $0.method, $0.command.header.metadata) }
    }
}
