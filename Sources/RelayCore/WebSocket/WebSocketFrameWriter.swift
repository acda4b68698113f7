/// Writes WebSocket frames (RFC 6455): always whole (FIN set), masked when a client sends them.
public enum WebSocketFrameWriter {
    /// The largest frame header: two bytes, a 64-bit length and a masking key.
    public static let maximumHeaderSize = 14

    /// Appends one frame carrying `payload` to `output`. `maskingKey`, when given (a client must
    /// mask every frame), is four bytes taken in memory order.
    public static func append(
        _ opcode: WebSocketOpcode, payload: UnsafeBufferPointer<UInt8>, maskingKey: UInt32? = nil, into output: inout [UInt8]
    ) {
        let length = payload.count
        output.append(0x80 | opcode.rawValue)
        let maskBit: UInt8 = maskingKey == nil ? 0 : 0x80
        if length < 126 {
            output.append(maskBit | UInt8(length))
        } else if length <= 0xFFFF {
            output.append(maskBit | 126)
            output.append(UInt8(length >> 8))
            output.append(UInt8(length & 0xFF))
        } else {
            output.append(maskBit | 127)
            for shift in stride(from: 56, through: 0, by: -8) { output.append(UInt8((UInt64(length) >> UInt64(shift)) & 0xFF)) }
        }
        guard var key = maskingKey else {
            output.append(contentsOf: payload)
            return
        }
        withUnsafeBytes(of: &key) { output.append(contentsOf: $0) }
        let start = output.count
        output.append(contentsOf: payload)
        output.withUnsafeMutableBufferPointer { all in
            withUnsafeBytes(of: &key) { keyBytes in
                WebSocketFrameParser.applyMask(
                    UnsafeMutableBufferPointer(rebasing: all[start...]), key: keyBytes.assumingMemoryBound(to: UInt8.self))
            }
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
