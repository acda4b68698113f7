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

    /// Decodes the envelopes in `buffer`, handing each to `body` as it is read (moved, not
    /// collected: over WebSocket a buffer is one envelope, and an array for it cost an allocation
    /// per message). Returns the error that stopped reading, if any; what was read before it has
    /// been handed over.
    package mutating func read(_ buffer: ByteBuffer, _ body: (consuming Envelope) -> Void) -> Reason? {
        guard var framer else {
            guard buffer.readableBytes <= maximumEnvelopeSize else { return tooLarge }
            return decode(buffer.readableBytesView, body)
        }
        do {
            let pieces = try framer.bytesReceived(buffer.readableBytesView)
            self.framer = framer
            for piece in pieces {
                if let error = decode(piece, body) { return error }
            }
            return nil
        } catch {
            self.framer = framer
            return tooLarge
        }
    }

    private mutating func decode(_ bytes: some Collection<UInt8>, _ body: (consuming Envelope) -> Void) -> Reason? {
        do {
            body(try LIMECodec.decode(bytes, maximumDepth: maximumDepth, nodes: &nodes))
            return nil
        } catch {
            return error
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
