import CompressNIO
import NIOCore
import RelayCore

/// What permessage-deflate does on one side of a connection, once negotiated: messages of at
/// least `threshold` bytes are compressed; compressed messages received are inflated, up to
/// `maximumMessageBytes`.
package struct WebSocketCompression: Sendable {
    package let parameters: PerMessageDeflate
    package let isClient: Bool
    /// Smaller messages go uncompressed (a frame's header costs more than deflate saves on them).
    package let threshold: Int

    package init(parameters: PerMessageDeflate, isClient: Bool, threshold: Int) {
        self.parameters = parameters
        self.isClient = isClient
        self.threshold = threshold
    }

    /// Whether this side resets its compressor after each message.
    var resetsCompressor: Bool { isClient ? parameters.clientNoContextTakeover : parameters.serverNoContextTakeover }
    /// Whether the peer resets its compressor after each message, so the inflater may too.
    var peerResetsCompressor: Bool { isClient ? parameters.serverNoContextTakeover : parameters.clientNoContextTakeover }
    /// The window this side compresses with: what was negotiated, at most 2^11 on the server
    /// (each connection's compressor holds about 4 × the window, and a hub has many).
    var windowBits: Int32 {
        let negotiated = Int32((isClient ? parameters.clientMaxWindowBits : parameters.serverMaxWindowBits) ?? 15)
        // zlib cannot write raw deflate with a 2^8 window; 9 is the least (RFC 7692 §7.1.2.1's caveat).
        return max(9, isClient ? (negotiated == 0 ? 15 : negotiated) : min(negotiated, 11))
    }
}

/// Compresses messages for permessage-deflate: raw deflate, each message ended with a sync flush
/// whose four-byte tail (`00 00 ff ff`) is left off (RFC 7692 §7.2.1). Not thread-safe: used
/// under its `ChannelWriter`'s lock.
package final class WebSocketDeflater: @unchecked Sendable {
    private let compression: WebSocketCompression
    private var compressor: ZlibCompressor?
    private var output = ByteBufferAllocator().buffer(capacity: 0)

    package init(_ compression: WebSocketCompression) {
        self.compression = compression
    }

    package var threshold: Int { compression.threshold }

    /// The compressed form of `message`, or nil when it is to go as it is (under the threshold,
    /// or larger once compressed).
    package func compress(_ message: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        guard message.count >= compression.threshold else { return nil }
        do {
            if compressor == nil {
                // Created on the first message that needs it, then kept (reset after each message):
                // about 40 KiB with this window and memory level; making one per message cost
                // more than compressing.
                compressor = try ZlibCompressor(
                    algorithm: .deflate,
                    configuration: ZlibConfiguration(windowSize: compression.windowBits, compressionLevel: 1, memoryLevel: 6))
            }
            var input = ByteBufferAllocator().buffer(capacity: message.count)
            input.writeBytes(message)
            output.clear()
            output.reserveCapacity(compressor!.maxSize(from: input))
            try compressor!.deflate(from: &input, to: &output, flush: .sync)
            if compression.resetsCompressor { try compressor!.reset() }
        } catch {
            compressor = nil
            return nil
        }
        // The sync flush ends with an empty stored block, 00 00 ff ff: the receiver adds it back.
        guard output.readableBytes >= 4 else { return nil }
        let compressed = output.getBytes(at: output.readerIndex, length: output.readableBytes - 4) ?? []
        return compressed.count < message.count ? compressed : nil
    }
}

/// Inflates permessage-deflate messages, never past `maximumMessageBytes`: a message that would
/// is refused before more memory is spent on it (a decompression bomb). Used on its connection's
/// event loop.
package final class WebSocketInflater {
    private let compression: WebSocketCompression
    private let maximumMessageBytes: Int
    private var decompressor: ZlibDecompressor?

    package init(_ compression: WebSocketCompression, maximumMessageBytes: Int) {
        self.compression = compression
        self.maximumMessageBytes = maximumMessageBytes
    }

    package enum InflateError: Error {
        /// The message inflates past the limit.
        case tooLarge
        /// Not a deflate stream.
        case corrupt
    }

    /// The message `compressed` stands for.
    package func inflate(_ compressed: [UInt8], allocator: ByteBufferAllocator) throws(InflateError) -> ByteBuffer {
        var input = allocator.buffer(capacity: compressed.count + 4)
        input.writeBytes(compressed)
        input.writeBytes([0x00, 0x00, 0xFF, 0xFF])
        // Starts at a few times the compressed size and doubles, up to one byte past the limit:
        // filling that byte says the message is too large.
        var capacity = min(max(compressed.count * 4, 1024), maximumMessageBytes + 1)
        var output = allocator.buffer(capacity: capacity)
        do {
            if decompressor == nil { decompressor = try ZlibDecompressor(algorithm: .deflate, windowSize: 15) }
            while true {
                do {
                    try decompressor!.inflate(from: &input, to: &output)
                    break
                } catch let error as CompressNIOError where error == .bufferOverflow {
                    guard capacity <= maximumMessageBytes else { throw InflateError.tooLarge }
                    capacity = min(capacity * 2, maximumMessageBytes + 1)
                    output.reserveCapacity(capacity)
                } catch let error as CompressNIOError where error == .inputBufferOverflow {
                    // All the input is read: the message is complete.
                    break
                }
            }
            guard output.readableBytes <= maximumMessageBytes else { throw InflateError.tooLarge }
            if compression.peerResetsCompressor { try decompressor!.reset() }
        } catch let error as InflateError {
            decompressor = nil
            throw error
        } catch {
            decompressor = nil
            throw .corrupt
        }
        return output
    }
}
