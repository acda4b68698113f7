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
    private var publications = LIMEPublicationScanner()
    private var deliveries = LIMEDeliveryScanner()

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
        read(buffer, offer: { _, _ in false }, body)
    }

    /// `read` for the hub: each plain fire-and-forget publication (`LIMEPublicationScanner`) is
    /// offered to `publishInPlace` first, with the bytes it lies in; when that returns false the
    /// envelope is decoded and handed to `body` as usual.
    package mutating func read(
        _ buffer: ByteBuffer, publishInPlace: (LIMEPublishInPlace, LIMEEnvelopeBytes) -> Bool, _ body: (consuming Envelope) -> Void
    ) -> Reason? {
        read(buffer, scanning: \.publications, take: publishInPlace, body)
    }

    /// `read` for the client: each subscription's delivery of the plain shape (`LIMEDeliveryScanner`)
    /// is offered to `deliverInPlace` first, as `read(_:publishInPlace:_:)` offers publications.
    package mutating func read(
        _ buffer: ByteBuffer, deliverInPlace: (LIMEDeliveryInPlace, LIMEEnvelopeBytes) -> Bool, _ body: (consuming Envelope) -> Void
    ) -> Reason? {
        read(buffer, scanning: \.deliveries, take: deliverInPlace, body)
    }

    /// Reads with the scanner at `path`: what it recognises is offered to `take`.
    private mutating func read<Scanner: LIMEInPlaceScanner>(
        _ buffer: ByteBuffer, scanning path: WritableKeyPath<Self, Scanner>, take: (Scanner.Recognised, LIMEEnvelopeBytes) -> Bool,
        _ body: (consuming Envelope) -> Void
    ) -> Reason? {
        // Taken out for the read, which owns `self`; put back after.
        var scanner = self[keyPath: path]
        defer { self[keyPath: path] = scanner }
        let maximumDepth = maximumDepth
        return read(
            buffer, offer: { pointer, bytes in scanner.scan(pointer, maximumDepth: maximumDepth).map { take($0, bytes) } ?? false }, body)
    }

    /// Reads each envelope in `buffer`: offered first, with its bytes, to `offer`, which returns
    /// whether it took it; decoded and handed to `body` otherwise.
    private mutating func read(
        _ buffer: ByteBuffer, offer: (UnsafeBufferPointer<UInt8>, LIMEEnvelopeBytes) -> Bool, _ body: (consuming Envelope) -> Void
    ) -> Reason? {
        guard var framer else {
            guard buffer.readableBytes <= maximumEnvelopeSize else { return tooLarge }
            if buffer.withUnsafeReadableBytes({ offer($0.assumingMemoryBound(to: UInt8.self), .buffer(buffer)) }) {
                return nil
            }
            return decode(buffer.readableBytesView, body)
        }
        do {
            let pieces = try framer.bytesReceived(buffer.readableBytesView)
            self.framer = framer
            for piece in pieces {
                if piece.withUnsafeBufferPointer({ offer($0, .array(piece)) }) { continue }
                if let error = decode(piece, body) { return error }
            }
            return nil
        } catch {
            self.framer = framer
            return tooLarge
        }
    }

    /// Reads at most one envelope from `buffer` (over TCP), handing it to `body`; returns the
    /// bytes after it, unread, or the error that stopped reading. For the read that may hold
    /// the confirmation of `compression: gzip`, after which the bytes are compressed.
    package mutating func readOne(_ buffer: ByteBuffer, _ body: (consuming Envelope) -> Void) -> (rest: ByteBuffer?, error: Reason?) {
        guard var framer else { return (nil, read(buffer, body)) }
        do {
            let (pieces, consumed) = try framer.bytesReceived(buffer.readableBytesView, upTo: 1)
            self.framer = framer
            for piece in pieces {
                if let error = decode(piece, body) { return (nil, error) }
            }
            let rest = buffer.getSlice(at: buffer.readerIndex + consumed, length: buffer.readableBytes - consumed)
            return (rest?.readableBytes == 0 ? nil : rest, nil)
        } catch {
            self.framer = framer
            return (nil, tooLarge)
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
        if error is GzipStreamCodec.CorruptStream {
            return Reason(code: ReasonCode.validationError, description: "The compressed stream does not inflate")
        }
        return nil
    }
}

/// The bytes of one envelope as the reader got them: a WebSocket frame's payload (a slice of the
/// read) or an envelope split from a TCP stream.
package enum LIMEEnvelopeBytes {
    case buffer(ByteBuffer)
    case array([UInt8])

    package func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        switch self {
        case .buffer(let buffer): try buffer.withUnsafeReadableBytes(body)
        case .array(let array): try array.withUnsafeBytes(body)
        }
    }
}
