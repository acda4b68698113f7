import Foundation
import Logging
import NIOCore
import NIOPosix
import RelayCore
import RelayTransport
import Synchronization
import Tracing

// The NATS connections' operations on the hub.
extension Hub {
    // MARK: - NATS connections

    /// Registers an established NATS connection under its node, with what it may do.
    func registerNATS(_ id: SessionID, node: Node, headers: Bool, permissions: Permissions?, source: Admission.Source) {
        state.withLock { state in
            guard let session = state.sessions[id] else { return }
            session.node = node
            session.admission = source
            session.natsHeaders = headers
            joinIdentityGroup(session, in: &state)
            _ = state.core.register(id, node: node, permissions: permissions)
            carryOutClusterOperations(in: &state)
        }
    }

    func natsSubscribe(_ id: SessionID, sid: String, subject: String, queue: String?, echo: Bool) throws(Reason) {
        try state.withLock { state throws(Reason) in
            // A NATS subscriber that lags is a slow consumer, as with nats-server: when more than
            // the session's pending bytes wait for it (`maxPendingBytes`), not at a message count.
            try state.core.subscribe(
                id, token: sid, filter: subject, queue: queue, echo: echo,
                overflow: .bytesOnly)
            carryOutClusterOperations(in: &state)
        }
    }

    func natsUnsubscribe(_ id: SessionID, sid: String, max: Int?) {
        let outputs = state.withLock { state in
            defer { carryOutClusterOperations(in: &state) }
            return state.core.unsubscribe(id, token: sid, after: max) ? [] : state.core.detachConsumer(id, token: sid)
        }
        perform(outputs)
    }

    /// `SUB $RELAY.QUEUE.NAME sid`: a NATS consumer of a durable queue.
    func natsConsume(_ id: SessionID, sid: String, queue: String, credit: Int) throws(Reason) {
        let outputs = try state.withLock { state throws(Reason) in
            try state.core.consume(id, token: sid, queue: queue, credit: credit)
        }
        perform(outputs)
    }

    /// Publishes what one read of a NATS connection brought, in order, through the one publish
    /// pipeline (`publishRead`), emptying `publications`. A PUB left in the read (`bytes`) is
    /// forwarded from there when it is only to be delivered to NATS subscriptions
    /// (`HubCore.forward`); otherwise it is published as usual. Returns the sessions written to
    /// that are far behind, for the publisher to wait on.
    func natsPublish(
        _ publications: inout [NATSPublication], bytes: UnsafeRawBufferPointer, from id: SessionID, noResponders: Bool
    ) -> [PublisherStall.Wait] {
        var number = -1
        return publishRead(&publications, from: id) { publication, pass, core in
            number += 1
            var message: PublishedMessage
            switch publication {
            case .message(let published):
                message = published
            case .inPlace(let publication):
                let payload = UnsafeRawBufferPointer(rebasing: bytes[publication.payload])
                if spans == nil,
                    let recipients = pass.forwarding.recipients(
                        of: publication.subject, hasReplyTo: publication.replyTo != nil, from: id, toNATS: true, core: &core,
                        among: pass.sessions)
                {
                    for (recipient, session) in recipients {
                        pass.resolved.forwardNATS(
                            publication, number: number, payload: payload, to: session.outlet, token: recipient.token,
                            limit: recipient.limit, headers: session.natsHeaders!)
                    }
                    return []
                }
                message = PublishedMessage(
                    subject: publication.subject, replyTo: publication.replyTo, publisher: pass.sessions[id]?.node,
                    body: .bytes(Array(payload)))
            }
            let span = spans?.entered(
                "publish \(message.subject)", kind: .producer, subject: message.subject, dialect: "nats", metadata: &message.metadata)
            var outputs: [HubCore.Output] = []
            core.clientPublished(message, from: id, noResponders: noResponders, into: &outputs)
            span?.end()
            return outputs
        }
    }
}

/// A publication of a NATS connection's read, as the hub receives it.
enum NATSPublication {
    /// Published by the connection's machine.
    case message(PublishedMessage)
    /// A PUB without headers still in the read's bytes.
    case inPlace(NATSPublishInPlace)
}
