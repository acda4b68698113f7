import NIOCore
import NIOSSL
import NIOTLS

/// Serves TLS and plaintext on one port: a connection whose first byte opens a TLS handshake
/// record (0x16) gets the TLS handlers `makeTLSHandlers` builds, placed right after this one;
/// any other connection goes on in plaintext. Either way this handler then leaves the pipeline.
///
/// The WebSocket listener puts it in front of HTTP (`ws://` and `wss://` on one port); the NATS
/// listener in front of the NATS handler, which has sent INFO by the time the client's first
/// bytes (a TLS ClientHello, or CONNECT) arrive. Whether plaintext is then acceptable is the
/// session machines' decision (`requiresTLS`, `tlsRequired`), so refusals are protocol errors.
package final class TLSSniffer: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = ByteBuffer

    private let makeTLSHandlers: () -> [any ChannelHandler]

    /// `makeTLSHandlers` is asked when a handshake arrives (so a reloaded certificate serves the
    /// next connection).
    package init(makeTLSHandlers: @escaping () -> [any ChannelHandler]) {
        self.makeTLSHandlers = makeTLSHandlers
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return }
        if first == 0x16 {
            do {
                try context.pipeline.syncOperations.addHandlers(makeTLSHandlers(), position: .after(self))
            } catch {
                context.fireErrorCaught(error)
                return
            }
        }
        // Goes to the TLS handler just added, or on in plaintext.
        context.fireChannelRead(data)
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

/// Closes a connection whose handshake does not complete within `timeout`: a client that opens
/// connections and never finishes holds no resources for long. It leaves the pipeline by itself
/// when TLS's handshake completes; for another handshake (a WebSocket upgrade), whoever added it
/// removes it when that is done.
package final class HandshakeDeadline: ChannelInboundHandler, RemovableChannelHandler {
    package typealias InboundIn = NIOAny

    private let timeout: TimeAmount
    private let timedOut: @Sendable () -> Void
    private var task: Scheduled<Void>?

    /// `timedOut` is told of each connection closed for it (the hub counts them).
    package init(timeout: TimeAmount, timedOut: @escaping @Sendable () -> Void = {}) {
        self.timeout = timeout
        self.timedOut = timedOut
    }

    package func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        let timedOut = self.timedOut
        task = context.eventLoop.scheduleTask(in: timeout) {
            timedOut()
            channel.close(promise: nil)
        }
    }

    package func handlerRemoved(context: ChannelHandlerContext) {
        task?.cancel()
    }

    package func channelInactive(context: ChannelHandlerContext) {
        task?.cancel()
        context.fireChannelInactive()
    }

    package func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            task?.cancel()
            context.fireUserInboundEventTriggered(event)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}
