/// Writes WebSocket frames (RFC 6455): always whole (FIN set), masked when a client sends them.
public enum WebSocketFrameWriter {
    /// The largest frame header: two bytes, a 64-bit length and a masking key.
    public static let maximumHeaderSize = 14

    /// The size of the frame carrying `payloadCount` bytes, masked or not.
    public static func frameSize(payloadCount: Int, masked: Bool) -> Int {
        let length = payloadCount < 126 ? 0 : payloadCount <= 0xFFFF ? 2 : 8
        return 2 + length + (masked ? 4 : 0) + payloadCount
    }

    /// Writes one frame carrying `payload` at the start of `output`, which must hold
    /// `frameSize(payloadCount:masked:)` bytes; returns that size. `maskingKey`, when given (a
    /// client must mask every frame), is four bytes taken in memory order. The payload is copied
    /// once, and masked where it lands.
    /// `compressed` sets RSV1: the payload is a permessage-deflate message.
    public static func write(
        _ opcode: WebSocketOpcode, payload: UnsafeBufferPointer<UInt8>, maskingKey: UInt32? = nil, compressed: Bool = false,
        to output: UnsafeMutableRawBufferPointer
    ) -> Int {
        let length = payload.count
        var index = 0
        func put(_ byte: UInt8) {
            output[index] = byte
            index += 1
        }
        put(0x80 | (compressed ? 0x40 : 0) | opcode.rawValue)
        let maskBit: UInt8 = maskingKey == nil ? 0 : 0x80
        if length < 126 {
            put(maskBit | UInt8(length))
        } else if length <= 0xFFFF {
            put(maskBit | 126)
            put(UInt8(length >> 8))
            put(UInt8(length & 0xFF))
        } else {
            put(maskBit | 127)
            for shift in stride(from: 56, through: 0, by: -8) { put(UInt8((UInt64(length) >> UInt64(shift)) & 0xFF)) }
        }
        if var key = maskingKey {
            withUnsafeBytes(of: &key) { for byte in $0 { put(byte) } }
        }
        let body = UnsafeMutableRawBufferPointer(rebasing: output[index..<index + length]).bindMemory(to: UInt8.self)
        if let base = payload.baseAddress, length > 0 { body.baseAddress!.update(from: base, count: length) }
        if var key = maskingKey {
            withUnsafeBytes(of: &key) { WebSocketFrameParser.applyMask(body, key: $0.assumingMemoryBound(to: UInt8.self)) }
        }
        return index + length
    }

    /// Appends one frame carrying `payload` to `output` (see `write`).
    public static func append(
        _ opcode: WebSocketOpcode, payload: UnsafeBufferPointer<UInt8>, maskingKey: UInt32? = nil, into output: inout [UInt8]
    ) {
        let size = frameSize(payloadCount: payload.count, masked: maskingKey != nil)
        let start = output.count
        output.append(contentsOf: repeatElement(0, count: size))
        output.withUnsafeMutableBytes { all in
            _ = write(opcode, payload: payload, maskingKey: maskingKey, to: UnsafeMutableRawBufferPointer(rebasing: all[start...]))
        }
    }

    /// `append` for a payload held in an array.
    public static func append(_ opcode: WebSocketOpcode, payload: [UInt8], maskingKey: UInt32? = nil, into output: inout [UInt8]) {
        payload.withUnsafeBufferPointer { append(opcode, payload: $0, maskingKey: maskingKey, into: &output) }
    }

    /// One frame carrying `payload`.
    public static func frame(_ opcode: WebSocketOpcode, payload: [UInt8], maskingKey: UInt32? = nil) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(payload.count + maximumHeaderSize)
        append(opcode, payload: payload, maskingKey: maskingKey, into: &output)
        return output
    }
}
