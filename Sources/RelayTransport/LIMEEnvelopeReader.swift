import NIOCore
import RelayCore

/// Turns inbound buffers into LIME envelopes for either transport, with the same limits on both.
///
/// Over TCP (`stream`) the bytes are split by `LIMEStreamFramer`; over WebSocket (`messages`) each
/// buffer is one text frame and so one envelope.
package struct LIMEEnvelopeReader {
    package enum Framing {
        case stream
        case messages
    }

    /// The envelopes read from one buffer, and the error that stopped reading, if any.
    package struct Batch {
        package var envelopes: [Envelope] = []
        package var error: Reason?
    }

    private var framer: LIMEStreamFramer?
    private let maximumEnvelopeSize: Int
    private let maximumDepth: Int
    /// The few nodes a connection's envelopes name, read once.
    private var nodes = LIMECodec.NodeCache()

    package init(framing: Framing, maximumEnvelopeSize: Int, maximumDepth: Int = JSONParser.defaultMaximumDepth) {
        self.framer = framing == .stream ? LIMEStreamFramer(maximumEnvelopeSize: maximumEnvelopeSize) : nil
        self.maximumEnvelopeSize = maximumEnvelopeSize
        self.maximumDepth = maximumDepth
    }

    package mutating func read(_ buffer: ByteBuffer) -> Batch {
        var batch = Batch()
        guard var framer else {
            guard buffer.readableBytes <= maximumEnvelopeSize else {
                batch.error = tooLarge
                return batch
            }
            decode(buffer.readableBytesView, into: &batch)
            return batch
        }
        do {
            let pieces = try framer.bytesReceived(buffer.readableBytesView)
            self.framer = framer
            for piece in pieces where batch.error == nil { decode(piece, into: &batch) }
        } catch {
            self.framer = framer
            batch.error = tooLarge
        }
        return batch
    }

    private mutating func decode(_ bytes: some Collection<UInt8>, into batch: inout Batch) {
        do {
            batch.envelopes.append(try LIMECodec.decode(bytes, maximumDepth: maximumDepth, nodes: &nodes))
        } catch {
            batch.error = error
        }
    }

    package var tooLarge: Reason {
        Reason(code: ReasonCode.validationError, description: "Envelope larger than the maximum of \(maximumEnvelopeSize) bytes")
    }

    /// The LIME reason for a transport error that means the peer sent too much, or nil.
    package func reason(for error: any Error) -> Reason? {
        if let failure = error as? WebSocketFailure, failure.code == WebSocketCloseCode.messageTooBig { return tooLarge }
        return nil
    }
}
