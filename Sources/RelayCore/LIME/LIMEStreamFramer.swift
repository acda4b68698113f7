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
        var envelopes: [[UInt8]] = []
        for byte in bytes {
            guard inEnvelope else {
                // Between envelopes: skip everything until an opening brace.
                if byte == UInt8(ascii: "{") {
                    inEnvelope = true
                    buffer.append(byte)
                    depth = 1
                }
                continue
            }
            buffer.append(byte)
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
                if depth == 0 {
                    envelopes.append(buffer)
                    buffer.removeAll(keepingCapacity: buffer.capacity <= 64 * 1024)
                    inEnvelope = false
                    continue
                }
            }
            if buffer.count > maximumEnvelopeSize {
                buffer.removeAll()
                inEnvelope = false
                depth = 0
                inString = false
                escaping = false
                throw EnvelopeTooLarge(limit: maximumEnvelopeSize)
            }
        }
        return envelopes
    }
}
