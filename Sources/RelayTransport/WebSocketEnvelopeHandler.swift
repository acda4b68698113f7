import NIOCore
import NIOWebSocket

/// Carries one LIME envelope per WebSocket text frame, for both the hub and the client.
///
/// Inbound, it passes each data frame's payload on as a `ByteBuffer` (frames are already
/// reassembled by `NIOWebSocketFrameAggregator`), answers pings and ends the connection on a close
/// frame. Outbound, it wraps each `ByteBuffer` in a text frame (masked when it is the client side)
/// and sends a close frame before the connection closes.
package final class WebSocketEnvelopeHandler: ChannelDuplexHandler, RemovableChannelHandler {
    package typealias InboundIn = WebSocketFrame
    package typealias InboundOut = ByteBuffer
    package typealias OutboundIn = ByteBuffer
    package typealias OutboundOut = WebSocketFrame

    private let isClient: Bool
    private var sentClose = false

    package init(isClient: Bool) {
        self.isClient = isClient
    }

    private var maskKey: WebSocketMaskingKey? {
        isClient ? WebSocketMaskingKey.random() : nil
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text, .binary:
            var payload = frame.unmaskedData
            if payload.readableBytes == 0 { return }
            context.fireChannelRead(wrapInboundOut(payload.readSlice(length: payload.readableBytes)!))
        case .ping:
            let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: maskKey, data: frame.unmaskedData)
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .connectionClose:
            // Echo the close, then end the connection; the peer has said it sends no more.
            if !sentClose {
                sentClose = true
                var data = frame.unmaskedData
                let code = data.readWebSocketErrorCode() ?? .normalClosure
                var reply = context.channel.allocator.buffer(capacity: 2)
                reply.write(webSocketErrorCode: code)
                let closeFrame = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: maskKey, data: reply)
                context.writeAndFlush(wrapOutboundOut(closeFrame)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            } else {
                context.close(promise: nil)
            }
        default:
            break
        }
    }

    package func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let payload = unwrapOutboundIn(data)
        let frame = WebSocketFrame(fin: true, opcode: .text, maskKey: maskKey, data: payload)
        context.write(wrapOutboundOut(frame), promise: promise)
    }

    package func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard mode == .all, !sentClose, context.channel.isActive else {
            context.close(mode: mode, promise: promise)
            return
        }
        sentClose = true
        var data = context.channel.allocator.buffer(capacity: 2)
        data.write(webSocketErrorCode: .normalClosure)
        let frame = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: maskKey, data: data)
        context.writeAndFlush(wrapOutboundOut(frame)).assumeIsolated().whenComplete { _ in
            context.close(mode: mode, promise: promise)
        }
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// Adds what sits between an upgraded WebSocket and a LIME session handler, on either side:
    /// fragments reassembled up to the envelope limit, then one text frame per envelope.
    package func addLIMEWebSocketHandlers(isClient: Bool, maximumEnvelopeBytes: Int, session: any ChannelHandler) throws {
        try addHandlers([
            NIOWebSocketFrameAggregator(
                minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 4096, maxAccumulatedFrameSize: maximumEnvelopeBytes),
            WebSocketEnvelopeHandler(isClient: isClient),
            session,
        ])
    }
}
