import CompressNIO
import NIOCore
import RelayCore

/// LIME's session compression over TCP (`compression: gzip`): once the session has negotiated
/// it, the connection's bytes are one gzip stream in each direction.
///
/// Outbound, each write is deflated and sync-flushed, so the peer can read every envelope as soon
/// as it is written. Inbound, what arrives is inflated 64 KiB at a time and passed on in pieces:
/// the LIME framer behind refuses an envelope over `maxEnvelopeBytes` as it grows, so a
/// decompression bomb never takes more memory than a piece and the largest envelope allowed.
package final class GzipStreamCodec: ChannelDuplexHandler, RemovableChannelHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = ByteBuffer
    package typealias OutboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    /// The stream does not inflate.
    package struct CorruptStream: Error {}

    private static let pieceSize = 64 << 10
    private var compressor: ZlibCompressor?
    private var decompressor: ZlibDecompressor?
    private var failed = false

    package init() {}

    package func handlerAdded(context: ChannelHandlerContext) {
        do {
            // A 2^11 window and a small memory level: about 40 KiB per connection for its
            // compressor; the inflater takes any window the peer chose.
            compressor = try ZlibCompressor(
                algorithm: .gzip, configuration: ZlibConfiguration(windowSize: 11, compressionLevel: 1, memoryLevel: 6))
            decompressor = try ZlibDecompressor(algorithm: .gzip, windowSize: 15)
        } catch {
            context.fireErrorCaught(error)
        }
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed, let decompressor else { return }
        var input = unwrapInboundIn(data)
        // A small read gets a small first piece (a few times its size), not 64 KiB each time.
        var capacity = min(Self.pieceSize, max(input.readableBytes * 4, 4096))
        while true {
            var piece = context.channel.allocator.buffer(capacity: capacity)
            capacity = Self.pieceSize
            let before = input.readableBytes
            var full = false
            do {
                try decompressor.inflate(from: &input, to: &piece)
            } catch let error as CompressNIOError where error == .bufferOverflow {
                full = true  // more output waits in zlib
            } catch let error as CompressNIOError where error == .inputBufferOverflow {
                // Everything read; the rest comes with the next bytes.
            } catch {
                failed = true
                context.fireErrorCaught(CorruptStream())
                return
            }
            let produced = piece.readableBytes > 0
            if produced { context.fireChannelRead(wrapInboundOut(piece)) }
            guard full || (input.readableBytes > 0 && (produced || input.readableBytes < before)) else { break }
        }
    }

    package func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard let compressor else {
            promise?.fail(CorruptStream())
            return
        }
        var input = unwrapOutboundIn(data)
        var output = context.channel.allocator.buffer(capacity: compressor.maxSize(from: input))
        do {
            try compressor.deflate(from: &input, to: &output, flush: .sync)
        } catch {
            promise?.fail(error)
            context.fireErrorCaught(error)
            return
        }
        context.write(wrapOutboundOut(output), promise: promise)
    }
}
