/// Splits a TCP byte stream into LIME envelopes.
///
/// LIME over TCP sends JSON objects back to back. The framer counts braces outside string
/// literals (a backslash inside a string escapes the next byte), skips whatever lies between
/// envelopes (whitespace or stray bytes), and refuses an envelope larger than `maximumEnvelopeSize`
/// as soon as it has seen that many bytes of it, so a peer cannot make it buffer without bound.
public struct LIMEStreamFramer: Sendable {
    /// The default largest envelope, 1 MiB.
    public static let defaultMaximumEnvelopeSize = 1 << 20

    /// The framing failed: the envelope in progress is too large.
    public struct EnvelopeTooLarge: Error, Sendable, Equatable {
        public let limit: Int
    }

    public let maximumEnvelopeSize: Int
    private var buffer: [UInt8] = []
    /// Whether an envelope is in progress (its bytes so far are in `buffer`).
    private var inEnvelope = false
    private var depth = 0
    private var inString = false
    private var escaping = false

    public init(maximumEnvelopeSize: Int = defaultMaximumEnvelopeSize) {
        self.maximumEnvelopeSize = maximumEnvelopeSize
    }

    /// Bytes held for an envelope not yet complete.
    public var bufferedByteCount: Int { buffer.count }

    /// Feeds received bytes and returns every envelope they complete, in order.
    public mutating func bytesReceived(_ bytes: some Sequence<UInt8>) throws(EnvelopeTooLarge) -> [[UInt8]] {
        try bytesReceived(bytes, upTo: .max).envelopes
    }

    /// Feeds received bytes up to the end of the `limit`th envelope they complete; returns those
    /// envelopes and how many bytes were read. The rest is the caller's: after a session's
    /// `compression: gzip` confirmation, it is already compressed.
    public mutating func bytesReceived(_ bytes: some Sequence<UInt8>, upTo limit: Int) throws(EnvelopeTooLarge) -> (
        envelopes: [[UInt8]], consumed: Int
    ) {
        var envelopes: [[UInt8]] = []
        // Scanned through a pointer: iterating a generic sequence byte by byte was most of the
        // cost of LIME over TCP.
        let consumed =
            bytes.withContiguousStorageIfAvailable { scan($0, into: &envelopes, limit: limit) }
            ?? Array(bytes).withUnsafeBufferPointer { scan($0, into: &envelopes, limit: limit) }
        guard let consumed else { throw EnvelopeTooLarge(limit: maximumEnvelopeSize) }
        return (envelopes, consumed)
    }

    /// Splits `bytes` into `envelopes`, stopping after `limit` of them; returns how many bytes it
    /// read, or nil (and everything held dropped) when the envelope in progress grew past the
    /// maximum.
    private mutating func scan(_ bytes: UnsafeBufferPointer<UInt8>, into envelopes: inout [[UInt8]], limit: Int) -> Int? {
        var index = 0
        while index < bytes.count, envelopes.count < limit {
            if !inEnvelope {
                // Between envelopes: skip everything until an opening brace.
                while index < bytes.count, bytes[index] != UInt8(ascii: "{") { index += 1 }
                guard index < bytes.count else { return index }
                inEnvelope = true
            }
            let start = index
            // Look no further than the limit allows, so an oversized envelope is refused as soon
            // as its first byte too many arrives.
            let end = Swift.min(bytes.count, start + (maximumEnvelopeSize - buffer.count + 1))
            var complete = false
            while index < end, !complete {
                let byte = bytes[index]
                index += 1
                if inString {
                    if escaping {
                        escaping = false
                    } else if byte == UInt8(ascii: "\\") {
                        escaping = true
                    } else if byte == UInt8(ascii: "\"") {
                        inString = false
                    }
                } else if byte == UInt8(ascii: "\"") {
                    inString = true
                } else if byte == UInt8(ascii: "{") {
                    depth += 1
                } else if byte == UInt8(ascii: "}") {
                    depth -= 1
                    complete = depth == 0
                }
            }
            let piece = UnsafeBufferPointer(rebasing: bytes[start..<index])
            guard buffer.count + piece.count <= maximumEnvelopeSize else {
                buffer.removeAll()
                inEnvelope = false
                depth = 0
                inString = false
                escaping = false
                return nil
            }
            guard complete else {
                buffer.append(contentsOf: piece)
                continue
            }
            if buffer.isEmpty {
                envelopes.append(Array(piece))
            } else {
                buffer.append(contentsOf: piece)
                envelopes.append(buffer)
                buffer.removeAll(keepingCapacity: buffer.capacity <= 64 * 1024)
            }
            inEnvelope = false
        }
        return index
    }
}
