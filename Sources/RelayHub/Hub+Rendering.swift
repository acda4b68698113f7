import Foundation
import Logging
import NIOCore
import NIOPosix
import RelayCore
import RelayTransport
import Synchronization
import Tracing

// What the core's outputs come to: rendered for each session's dialect under the lock, grouped
// per session, then handed to the sessions' outlets outside it.
extension Hub {
    /// What the core's outputs come to once sessions are looked up: writes grouped by session,
    /// and the outputs for the queue store. Timers are started and cancelled here.
    struct Resolved {
        var batches: [(outlet: SessionOutlet, batch: OutletBatch)] = []
        var storage: [HubCore.Output] = []
        private var batchIndex: [ObjectIdentifier: Int] = [:]
        // A NATS message fanned out to several connections is rendered once and copied: the MSG
        // is the same for each when their sids are (clients number their subscriptions from 1).
        // (Kept as separate variables: checking an optional tuple copied it, retaining its fields.)
        private var lastMessage: PublishedMessage?
        private var lastInPlace = -1
        private var lastSID = ""
        private var lastHeaders = false
        private var lastRendered = (batch: -1, bytes: 0..<0)

        /// Adds a write to the outlet's batch; returns where it landed (batch, bytes).
        @discardableResult
        mutating func add(
            _ outlet: SessionOutlet, token: String? = nil, limit: DeliveryLimit? = nil, _ render: (inout [UInt8]) -> Void
        ) -> (batch: Int, bytes: Range<Int>) {
            let index: Int
            if let last = batches.indices.last, batches[last].outlet === outlet {
                index = last
            } else if let known = batchIndex[ObjectIdentifier(outlet)] {
                index = known
            } else {
                index = batches.count
                batchIndex[ObjectIdentifier(outlet)] = index
                batches.append((outlet, OutletBatch(capacity: outlet.batchCapacity)))
            }
            let start = batches[index].batch.bytes.count
            batches[index].batch.append(token: token, limit: limit, render)
            return (index, start..<batches[index].batch.bytes.count)
        }

        /// A delivery to a NATS subscription: copied from the last one when it would be the same
        /// bytes for another connection, rendered by `render` otherwise.
        mutating func addNATS(
            _ outlet: SessionOutlet, token: String, limit: DeliveryLimit?, headers: Bool, isLast: Bool,
            _ render: (inout [UInt8]) -> Void
        ) -> Bool {
            if isLast, lastSID == token, lastHeaders == headers, batches[lastRendered.batch].outlet !== outlet {
                let bytes = batches[lastRendered.batch].batch.bytes[lastRendered.bytes]
                add(outlet, token: token, limit: limit) { $0 += bytes }
                return false
            }
            lastRendered = add(outlet, token: token, limit: limit, render)
            lastSID = token
            lastHeaders = headers
            return true
        }

        mutating func deliverNATS(
            _ message: PublishedMessage, to outlet: SessionOutlet, token: String, limit: DeliveryLimit?, headers: Bool
        ) {
            let isLast = lastMessage?.isSame(as: message) == true
            if addNATS(
                outlet, token: token, limit: limit, headers: headers, isLast: isLast,
                { output in
                    NATSEncoder.encodeMessage(message, sid: token, headersEnabled: headers, into: &output)
                })
            {
                lastMessage = message
                lastInPlace = -1
            }
        }

        /// A delivery of the `number`th publication of a read, forwarded from where it lies.
        mutating func forwardNATS(
            _ publication: NATSPublishInPlace, number: Int, payload: UnsafeRawBufferPointer, to outlet: SessionOutlet,
            token: String, limit: DeliveryLimit?, headers: Bool
        ) {
            if addNATS(
                outlet, token: token, limit: limit, headers: headers, isLast: lastInPlace == number,
                { output in
                    NATSEncoder.encodeMessage(
                        subject: publication.subject, sid: token, replyTo: publication.replyTo, payload: payload, into: &output)
                })
            {
                lastMessage = nil
                lastInPlace = number
            }
        }
    }

    /// Under the lock: renders each delivery for its session's dialect and groups the writes per
    /// session, in order, so each session's writes cross to its event loop once.
    func resolve(_ outputs: [HubCore.Output], in state: inout State) -> Resolved {
        var resolved = Resolved()
        resolve(outputs, into: &resolved, in: &state)
        return resolved
    }

    func resolve(_ outputs: [HubCore.Output], into resolved: inout Resolved, in state: inout State) {
        defer { carryOutClusterOperations(in: &state) }
        for output in outputs {
            switch output {
            case .send(let session, let envelope):
                if let outlet = state.sessions[session]?.outlet { resolved.add(outlet) { $0 += LIMECodec.encode(envelope) } }
            case .deliver(let session, let token, let message, let limit):
                guard let recipient = state.sessions[session] else { continue }
                spans?.delivered(message, session: session)
                if let headers = recipient.natsHeaders {
                    resolved.deliverNATS(message, to: recipient.outlet, token: token, limit: limit, headers: headers)
                } else {
                    resolved.add(recipient.outlet, token: token, limit: limit) {
                        LIMECodec.encodeDelivery(message, token: token, to: recipient.node, into: &$0)
                    }
                }
            case .startTimer(let timer, let milliseconds):
                // Every request sent to an instance has a deadline: its latency runs from here.
                if case .deadline(let id) = timer, state.requestStarts[id] == nil, let target = state.core.requestTarget(id) {
                    let span = spans?.requestStarted(service: target.service, method: target.method, metadata: target.metadata)
                    state.requestStarts[id] = (ContinuousClock.now, target.service, target.method, span)
                }
                state.timers[timer]?.cancel()
                state.timers[timer] = timerLoop.scheduleTask(in: .milliseconds(Int64(milliseconds))) { [weak self] in
                    self?.timerFired(timer)
                }
            case .cancelTimer(let timer):
                if case .deadline(let id) = timer { requestEnded(id, timedOut: false, in: &state) }
                state.timers.removeValue(forKey: timer)?.cancel()
            case .persist, .unpersist, .recordDeliveries, .saveQueue, .deleteQueue:
                resolved.storage.append(output)
            case .refused(let session, let refusal):
                guard let recipient = state.sessions[session] else { continue }
                resolved.add(recipient.outlet) { bytes in
                    if recipient.natsHeaders != nil {
                        NATSEncoder.encode(.error(refusal.reason.description), into: &bytes)
                    } else {
                        bytes += LIMECodec.encode(.message(Self.refusalNotice(refusal, to: recipient.node, from: configuration.hubNode)))
                    }
                }
            }
        }
    }

    /// A request's deadline was cancelled (it was answered or cancelled) or passed: its latency.
    func requestEnded(_ id: HubCore.RequestID, timedOut: Bool, in state: inout State) {
        guard let start = state.requestStarts.removeValue(forKey: id) else { return }
        if let span = start.span {
            if timedOut { span.setStatus(SpanStatus(code: .error, message: "timed out")) }
            span.end()
        }
        let elapsed = ContinuousClock.now - start.at
        metrics.requestEnded(service: start.service, method: start.method, after: elapsed)
        state.latencies[start.service, default: [:]][start.method, default: LatencySample()].add(elapsed)
    }

    /// What a LIME session is told of something it sent without asking for an answer that its
    /// permissions refused (NATS sessions get nats-server's `-ERR`).
    static func refusalNotice(_ refusal: Refusal, to node: Node?, from hub: Node) -> LIMEMessage {
        LIMEMessage(
            header: EnvelopeHeader(from: hub, to: node), type: "application/vnd.relay.refused+json",
            content: [
                "operation": .string(refusal.operation.rawValue), "target": .string(refusal.target),
                "reason": ["code": .number(JSONNumber(refusal.reason.code)), "description": .string(refusal.reason.description)],
            ])
    }

    /// Outside the lock: hands each session its writes, counts drops and slow consumers, and
    /// passes storage work to the queue store.
    /// Returns the sessions written to that are far behind (`SessionOutlet.stall`): their
    /// publisher may wait for them before it reads more.
    @discardableResult
    func dispatch(_ resolved: Resolved) -> [PublisherStall.Wait] {
        var dropped = 0
        var stalls: [PublisherStall.Wait] = []
        for (outlet, batch) in resolved.batches {
            outlet.batchCapacity = batch.bytes.count
            switch outlet.send(batch) {
            case nil: if outlet.takeSlowConsumer() { noteSlowConsumer() }
            case let count?: dropped += count
            }
            if let stall = outlet.stall() { stalls.append(PublisherStall.Wait(outlet: outlet, drained: stall)) }
        }
        if dropped > 0 { state.withLock { $0.droppedDeliveries += dropped } }
        if !resolved.storage.isEmpty { store(resolved.storage) }
        return stalls
    }
}
