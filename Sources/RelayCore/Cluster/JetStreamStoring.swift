// What goes into the streams of durable queues on JetStream (see JetStreamQueues.swift): a
// publication a queue keeps, published with a reply subject for JetStream's PubAck, and what waits
// for it (a publisher's confirmation, a durable service's request, a message moved from the hub's
// own store).

/// What a publication on a queue's stream waits for: JetStream's PubAck.
struct PubAckWait: Sendable {
    /// Carried out once stored (a publisher's confirmation).
    var whenStored: [HubCore.Output] = []
    /// A durable service's request, whose caller is told when JetStream does not store it.
    var request: JSONObject?
    /// A message moved from this hub's own store: kept there if JetStream does not take it.
    var migrating: (queue: String, sequence: Int64)?
}

extension HubCore {
    /// The subject of a publication goes to a stream of a queue here: it is published on the
    /// cluster with a reply subject for JetStream's PubAck; returns that PubAck's number (the
    /// caller may attach its confirmation with `confirmWhenStored`).
    mutating func jetStreamReply(for message: PublishedMessage) -> String? {
        guard message.replyTo == nil, let queues = cluster?.jetStreamQueues, !queues.isEmpty,
            queues.values.contains(where: { queue in
                queue.configuration.subjects.contains { Subject.matches(filter: $0, subject: message.subject) }
            })
        else { return nil }
        let number = cluster!.nextPubAck
        cluster!.nextPubAck += 1
        cluster!.pubAcks.remember(PubAckWait(), for: number)
        cluster!.lastPubAck = number
        return cluster!.jetStreamPrefix + "ack.\(number)"
    }

    /// `then` is carried out once JetStream stored the publication just published (a publisher's
    /// confirmation); false when it went to no stream.
    mutating func confirmWhenStored(_ then: [Output]) -> Bool {
        guard let number = cluster?.lastPubAck else { return false }
        cluster!.lastPubAck = nil
        cluster!.pubAcks.remember(PubAckWait(whenStored: then), for: number)
        return true
    }

    /// Publishes `message` on the cluster for a queue's stream, with what waits for JetStream's
    /// PubAck (a durable service's request, whose caller is told if it is not stored; a message
    /// moved from the hub's store).
    mutating func storeOnJetStream(_ message: PublishedMessage, waiting wait: PubAckWait) {
        var message = message
        let number = cluster!.nextPubAck
        cluster!.nextPubAck += 1
        message.replyTo = cluster!.jetStreamPrefix + "ack.\(number)"
        cluster!.pubAcks.remember(wait, for: number)
        cluster!.pending.append(.publish(message))
    }

    /// A queue this hub stored while it ran alone, on a hub now clustered with JetStream: served
    /// as a stream (a durable service's under its stream subject), and its stored messages moved
    /// there once the stream is ready; each leaves the hub's store when JetStream has it. Their
    /// delivery counts and ages start again.
    mutating func migrateToJetStream(_ stored: QueueConfiguration, messages: [QueuedMessage]) -> [Output] {
        var configuration = stored
        let service = stored.name.hasPrefix("svc_") && stored.subjects == ["$SVC.\(stored.name)"]
        if service { configuration.subjects = [Self.serviceStreamSubject(stored.name)] }
        var outputs: [Output] = []
        if cluster!.jetStreamQueues[configuration.name] == nil {
            outputs += (try? createJetStreamQueue(configuration, announce: !service)) ?? []
        }
        guard cluster!.jetStreamQueues[configuration.name] != nil else { return outputs }
        // The store's copy of the queue goes once its messages are JetStream's: else a queue
        // deleted on the cluster would come back from it at the next start.
        guard !messages.isEmpty else { return outputs + [.deleteQueue(stored.name)] }
        cluster!.jetStreamQueues[configuration.name]!.storedName = stored.name
        cluster!.jetStreamQueues[configuration.name]!.migration += messages.map { queued in
            var queued = queued
            if service { queued.message.subject = configuration.subjects[0] }
            return queued
        }
        return outputs + migrateIfReady(configuration.name)
    }

    /// Publishes a ready queue's messages from the hub's store into its stream.
    mutating func migrateIfReady(_ name: String) -> [Output] {
        guard let queue = cluster?.jetStreamQueues[name], queue.ready, !queue.migration.isEmpty else { return [] }
        cluster!.jetStreamQueues[name]!.migration = []
        cluster!.jetStreamQueues[name]!.migrationsInFlight += queue.migration.count
        for queued in queue.migration {
            var message = queued.message
            message.replyTo = nil
            storeOnJetStream(
                message,
                waiting: PubAckWait(whenStored: [.unpersist(queue: name, sequence: queued.sequence)], migrating: (name, queued.sequence)))
        }
        return []
    }

    /// A moved message is JetStream's: out of the hub's store, and the store's copy of the queue
    /// too once every one is (none refused).
    mutating func migrated(_ name: String, then outputs: [Output]) -> [Output] {
        guard var queue = cluster?.jetStreamQueues[name] else { return outputs }
        queue.migrated += 1
        queue.migrationsInFlight -= 1
        cluster!.jetStreamQueues[name] = queue
        guard queue.migrationsInFlight == 0, queue.migration.isEmpty, queue.migrationFailures == 0, let stored = queue.storedName else {
            return outputs
        }
        return outputs + [.deleteQueue(stored)]
    }

    /// JetStream did not store a publication: its confirmations fail, or its caller is told, or
    /// a moved message stays in the hub's store (moved again at the next start).
    mutating func notStored(_ wait: PubAckWait, _ error: String) -> [Output] {
        if let migrating = wait.migrating {
            cluster!.jetStreamQueues[migrating.queue]?.migrationFailures += 1
            cluster!.jetStreamQueues[migrating.queue]?.migrationsInFlight -= 1
            return []
        }
        guard let request = wait.request else { return wait.whenStored.map { Self.failedConfirmation($0, error) } }
        let failure = LIMECommand(
            method: request["verb"]?.stringValue.flatMap(CommandMethod.init(rawValue:)) ?? .get, status: .failure,
            reason: Reason(code: ReasonCode.generalError, description: "JetStream did not store the request: \(error)"))
        return answerCaller(failure, of: request)
    }

    /// A failed confirmation instead of the success it would have been.
    static func failedConfirmation(_ output: Output, _ error: String) -> Output {
        guard case .send(let session, .command(let confirmation)) = output else { return output }
        var failure = LIMECommand(
            method: confirmation.method, status: .failure,
            reason: Reason(code: ReasonCode.generalError, description: "JetStream did not store it: \(error)"))
        failure.header = confirmation.header
        return .send(session, .command(failure))
    }
}
