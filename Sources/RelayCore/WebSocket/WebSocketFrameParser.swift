/// The opcodes of RFC 6455 frames.
public enum WebSocketOpcode: UInt8, Sendable {
    case continuation = 0x0
    case text = 0x1
    case binary = 0x2
    case close = 0x8
    case ping = 0x9
    case pong = 0xA

    var isControl: Bool { rawValue & 0x8 != 0 }
}

/// Close codes of RFC 6455 §7.4.1 that the parser and its users send.
public enum WebSocketCloseCode {
    public static let normal: UInt16 = 1000
    public static let protocolError: UInt16 = 1002
    /// The payload is not what it should be (a compressed message that does not inflate).
    public static let invalidPayload: UInt16 = 1007
    public static let messageTooBig: UInt16 = 1009
}

/// Reads WebSocket frames (RFC 6455) from received bytes, in place.
///
/// Given the bytes at hand, it returns the messages and control frames they hold completely and
/// how many bytes those took; the caller keeps the rest (the start of a frame) and gives it again
/// with what follows. A message that came in one frame is returned as a range of the given bytes,
/// unmasked in place, so the common case copies nothing; a fragmented one is joined here. Frame
/// headers are checked as soon as they are complete: a frame or message over the limit, a frame
/// masked the wrong way for the role, reserved bits, unknown opcodes and malformed control frames
/// end reading with `failed` and the close code to send, so no peer can make the caller buffer
/// more than one header and `maximumMessageSize` bytes.
public struct WebSocketFrameParser: Sendable {
    public enum Event: Sendable, Equatable {
        /// A text or binary message sent in one frame: this range of the bytes given, unmasked.
        case message(Range<Int>)
        /// A text or binary message sent in fragments, joined.
        case joinedMessage([UInt8])
        /// A message compressed by permessage-deflate (RSV1 set on its first frame), its fragments
        /// joined, still compressed: the caller inflates it (`allowsCompression` only).
        case compressedMessage([UInt8])
        /// A ping, with the range of its payload (to be echoed in a pong).
        case ping(Range<Int>)
        case pong
        /// The peer closes, with its status code if it gave one.
        case close(code: UInt16?)
        /// The peer broke the protocol: close with `code`. Nothing after this is read.
        case failed(code: UInt16, description: String)
    }

    /// Whether frames must arrive masked (a server reading a client) or unmasked (a client).
    public let expectsMaskedFrames: Bool
    /// The largest message, in payload bytes, whether in one frame or in fragments.
    public let maximumMessageSize: Int
    /// Whether permessage-deflate was negotiated: RSV1 then marks a compressed message.
    public var allowsCompression = false
    /// The fragments so far of a message sent in pieces.
    private var fragments: [UInt8]?
    /// Whether the message being joined is compressed.
    private var fragmentsCompressed = false
    private var failed = false

    public init(expectsMaskedFrames: Bool, maximumMessageSize: Int) {
        self.expectsMaskedFrames = expectsMaskedFrames
        self.maximumMessageSize = maximumMessageSize
    }

    /// Reads the frames complete in `bytes`, unmasking their payloads in place. Returns them in
    /// order and how many bytes they took; what is left is an incomplete frame.
    public mutating func parse(_ bytes: UnsafeMutableBufferPointer<UInt8>) -> (events: [Event], consumed: Int) {
        var events: [Event] = []
        var offset = 0
        while !failed {
            let event: Event?
            switch frame(in: bytes, at: offset) {
            case .incomplete:
                return (events, offset)
            case .failed(let code, let description):
                event = .failed(code: code, description: description)
            case .frame(let fin, let opcode, let compressed, let payload):
                offset = payload.upperBound
                event = received(fin: fin, opcode: opcode, compressed: compressed, payload: payload, in: bytes)
            }
            guard let event else { continue }
            events.append(event)
            if case .failed = event {
                // Nothing after a protocol error is read.
                failed = true
                fragments = nil
            }
        }
        return (events, bytes.count)
    }

    private enum FrameResult {
        case incomplete
        case failed(UInt16, String)
        case frame(fin: Bool, opcode: WebSocketOpcode, compressed: Bool, payload: Range<Int>)
    }

    /// The frame starting at `start`, its payload unmasked, once all of it is there.
    private func frame(in bytes: UnsafeMutableBufferPointer<UInt8>, at start: Int) -> FrameResult {
        let available = bytes.count - start
        guard available >= 2 else { return .incomplete }
        let first = bytes[start]
        let second = bytes[start + 1]
        guard let opcode = WebSocketOpcode(rawValue: first & 0x0F) else {
            return .failed(WebSocketCloseCode.protocolError, "Unknown opcode \(first & 0x0F)")
        }
        // RSV1 is permessage-deflate's, on the first frame of a data message only (RFC 7692 §6).
        let compressed = first & 0x40 != 0
        guard first & 0x30 == 0, !compressed || (allowsCompression && (opcode == .text || opcode == .binary)) else {
            return .failed(WebSocketCloseCode.protocolError, "Reserved bits set without an extension")
        }
        let fin = first & 0x80 != 0
        let masked = second & 0x80 != 0
        guard masked == expectsMaskedFrames else {
            return .failed(
                WebSocketCloseCode.protocolError,
                expectsMaskedFrames ? "A client's frame must be masked" : "A server's frame must not be masked")
        }
        var headerSize = 2
        var length = UInt64(second & 0x7F)
        if length == 126 {
            headerSize = 4
            guard available >= headerSize else { return .incomplete }
            length = UInt64(bytes[start + 2]) << 8 | UInt64(bytes[start + 3])
        } else if length == 127 {
            headerSize = 10
            guard available >= headerSize else { return .incomplete }
            length = (0..<8).reduce(0) { $0 << 8 | UInt64(bytes[start + 2 + $1]) }
            guard length >> 63 == 0 else { return .failed(WebSocketCloseCode.protocolError, "Frame length out of range") }
        }
        if opcode.isControl {
            guard fin, length <= 125 else {
                return .failed(WebSocketCloseCode.protocolError, "A control frame must be whole and at most 125 bytes")
            }
        } else {
            let before = opcode == .continuation ? fragments?.count ?? 0 : 0
            guard length <= UInt64(maximumMessageSize - before) else {
                return .failed(WebSocketCloseCode.messageTooBig, "Message larger than the maximum of \(maximumMessageSize) bytes")
            }
        }
        let keyStart = start + headerSize
        if masked { headerSize += 4 }
        let payloadStart = start + headerSize
        guard bytes.count - payloadStart >= Int(length) else { return .incomplete }
        let payload = payloadStart..<(payloadStart + Int(length))
        if masked {
            Self.applyMask(
                UnsafeMutableBufferPointer(rebasing: bytes[payload]), key: UnsafeBufferPointer(rebasing: bytes[keyStart..<keyStart + 4]))
        }
        return .frame(fin: fin, opcode: opcode, compressed: compressed, payload: payload)
    }

    private mutating func received(
        fin: Bool, opcode: WebSocketOpcode, compressed: Bool, payload: Range<Int>, in bytes: UnsafeMutableBufferPointer<UInt8>
    ) -> Event? {
        switch opcode {
        case .text, .binary:
            guard fragments == nil else {
                return .failed(code: WebSocketCloseCode.protocolError, description: "A new message began before the fragmented one ended")
            }
            if fin { return compressed ? .compressedMessage(Array(UnsafeBufferPointer(rebasing: bytes[payload]))) : .message(payload) }
            fragments = Array(UnsafeBufferPointer(rebasing: bytes[payload]))
            fragmentsCompressed = compressed
            return nil
        case .continuation:
            guard fragments != nil else {
                return .failed(code: WebSocketCloseCode.protocolError, description: "A continuation frame without a message to continue")
            }
            fragments!.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[payload]))
            guard fin else { return nil }
            defer { fragments = nil }
            return fragmentsCompressed ? .compressedMessage(fragments!) : .joinedMessage(fragments!)
        case .ping:
            return .ping(payload)
        case .pong:
            return .pong
        case .close:
            switch payload.count {
            case 0: return .close(code: nil)
            case 1:
                return .failed(code: WebSocketCloseCode.protocolError, description: "A close frame's status code is two bytes")
            default: return .close(code: UInt16(bytes[payload.lowerBound]) << 8 | UInt16(bytes[payload.lowerBound + 1]))
            }
        }
    }

    /// XORs `payload` with the 4-byte masking `key` (RFC 6455 §5.3), eight bytes at a time: masks
    /// and unmasks alike.
    public static func applyMask(_ payload: UnsafeMutableBufferPointer<UInt8>, key: UnsafeBufferPointer<UInt8>) {
        guard let base = payload.baseAddress, payload.count > 0 else { return }
        var wide: UInt64 = 0
        withUnsafeMutableBytes(of: &wide) { word in
            for index in 0..<8 { word[index] = key[index & 3] }
        }
        let raw = UnsafeMutableRawPointer(base)
        var index = 0
        while index + 8 <= payload.count {
            let word = raw.loadUnaligned(fromByteOffset: index, as: UInt64.self)
            raw.storeBytes(of: word ^ wide, toByteOffset: index, as: UInt64.self)
            index += 8
        }
        while index < payload.count {
            payload[index] ^= key[index & 3]
            index += 1
        }
    }
}
