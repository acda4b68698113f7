import Testing

@testable import RelayCore

/// What a parser event stands for, with bytes in place of ranges, to compare across splits.
private enum Read: Equatable {
    case message([UInt8])
    case ping([UInt8])
    case pong
    case close(UInt16?)
    case failed(UInt16)
}

/// Feeds `chunks` one by one as a connection would, keeping an incomplete frame for the next.
private func read(_ chunks: [[UInt8]], masked: Bool, maximum: Int = 1 << 20) -> [Read] {
    var parser = WebSocketFrameParser(expectsMaskedFrames: masked, maximumMessageSize: maximum)
    var held: [UInt8] = []
    var out: [Read] = []
    for chunk in chunks {
        var bytes = held + chunk
        let (events, consumed) = bytes.withUnsafeMutableBufferPointer { parser.parse($0) }
        for event in events {
            switch event {
            case .message(let range): out.append(.message(Array(bytes[range])))
            case .joinedMessage(let joined): out.append(.message(joined))
            case .compressedMessage: out.append(.failed(0))  // never without allowsCompression
            case .ping(let range): out.append(.ping(Array(bytes[range])))
            case .pong: out.append(.pong)
            case .close(let code): out.append(.close(code))
            case .failed(let code, _): out.append(.failed(code))
            }
        }
        held = Array(bytes[consumed...])
    }
    return out
}

private let key: UInt32 = {
    // The masking key of RFC 6455 §5.7's examples: 37 fa 21 3d.
    var key: UInt32 = 0
    withUnsafeMutableBytes(of: &key) { $0.copyBytes(from: [0x37, 0xFA, 0x21, 0x3D]) }
    return key
}()

@Suite struct WebSocketFrameTests {
    @Test func readsAndWritesTheExamplesOfRFC6455() {
        let hello = Array("Hello".utf8)
        let unmasked: [UInt8] = [0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F]
        let masked: [UInt8] = [0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58]
        #expect(WebSocketFrameWriter.frame(.text, payload: hello) == unmasked)
        #expect(WebSocketFrameWriter.frame(.text, payload: hello, maskingKey: key) == masked)
        #expect(read([unmasked], masked: false) == [.message(hello)])
        #expect(read([masked], masked: true) == [.message(hello)])
        // A fragmented message, then a ping.
        let fragmented: [UInt8] = [0x01, 0x03, 0x48, 0x65, 0x6C, 0x80, 0x02, 0x6C, 0x6F, 0x89, 0x05] + hello
        #expect(read([fragmented], masked: false) == [.message(hello), .ping(hello)])
        // 256 bytes with a 16-bit length, 65536 with a 64-bit one.
        let header256 = Array(WebSocketFrameWriter.frame(.binary, payload: Array(repeating: 7, count: 256)).prefix(4))
        #expect(header256 == [0x82, 0x7E, 0x01, 0x00])
        let header64k = Array(WebSocketFrameWriter.frame(.binary, payload: Array(repeating: 7, count: 65536)).prefix(10))
        #expect(header64k == [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])
    }

    @Test(arguments: [0, 1, 7, 8, 9, 125, 126, 127, 65535, 65536, 70000])
    func aWrittenFrameReadsBackWhole(size: Int) {
        let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        for masked in [false, true] {
            let frame = WebSocketFrameWriter.frame(.text, payload: payload, maskingKey: masked ? key : nil)
            #expect(read([frame], masked: masked) == [.message(payload)], "masked: \(masked)")
        }
    }

    @Test func framesSplitAtEveryByteReadTheSame() {
        var stream: [UInt8] = []
        let messages = [Array("{\"state\":\"new\"}".utf8), Array(repeating: 0x41, count: 300), []]
        for message in messages { WebSocketFrameWriter.append(.text, payload: message, maskingKey: key, into: &stream) }
        // A message in three fragments with a ping between them, then a close with its code.
        let parts: [(UInt8, [UInt8])] = [(0x01, [1, 2]), (0x89, [9]), (0x00, [3]), (0x80, [4, 5])]
        for (first, payload) in parts {
            var frame = WebSocketFrameWriter.frame(.text, payload: payload, maskingKey: key)
            frame[0] = first
            stream += frame
        }
        WebSocketFrameWriter.append(.close, payload: [0x03, 0xE8], maskingKey: key, into: &stream)
        let expected = messages.map { Read.message($0) } + [.ping([9]), .message([1, 2, 3, 4, 5]), .close(1000)]
        #expect(read([stream], masked: true) == expected)
        for split in 0...stream.count {
            #expect(read([Array(stream[..<split]), Array(stream[split...])], masked: true) == expected, "split at \(split)")
        }
        #expect(read(stream.map { [$0] }, masked: true) == expected)
    }

    @Test func aFrameMaskedTheWrongWayIsAProtocolError() {
        let hello = Array("Hello".utf8)
        #expect(read([WebSocketFrameWriter.frame(.text, payload: hello)], masked: true) == [.failed(1002)])
        #expect(read([WebSocketFrameWriter.frame(.text, payload: hello, maskingKey: key)], masked: false) == [.failed(1002)])
    }

    @Test(
        arguments: [
            [0xC1, 0x00],  // a reserved bit
            [0x83, 0x00],  // opcode 3 is reserved
            [0x09, 0x00],  // a fragmented ping
            [0x89, 0x7E, 0x00, 0x7E],  // a 126-byte ping
            [0x80, 0x00],  // a continuation with nothing to continue
            [0x01, 0x01, 0x41, 0x81, 0x01, 0x42],  // a new message inside a fragmented one
            [0x88, 0x01, 0x03],  // a one-byte close code
        ] as [[UInt8]])
    func malformedFramesAreProtocolErrors(frame: [UInt8]) {
        // Anything after the error is not read.
        #expect(read([frame + [0x81, 0x01, 0x41]], masked: false) == [.failed(1002)])
    }

    @Test func aMessageOverTheLimitFailsAsSoonAsItsHeaderIsRead() {
        // Only the header of a 1 MiB frame: refused before its payload is waited for.
        let header = Array(WebSocketFrameWriter.frame(.text, payload: Array(repeating: 0, count: 1 << 20)).prefix(10))
        #expect(read([header], masked: false, maximum: 4096) == [.failed(1009)])
        // Fragments that only together pass the limit.
        let first = WebSocketFrameWriter.frame(.text, payload: Array(repeating: 0x41, count: 3000))
        var second = WebSocketFrameWriter.frame(.text, payload: Array(repeating: 0x41, count: 3000))
        var opening = first
        opening[0] = 0x01
        second[0] = 0x80
        #expect(read([opening, second], masked: false, maximum: 4096) == [.failed(1009)])
        // Exactly the limit passes.
        let exact = Array(repeating: UInt8(0x41), count: 4096)
        #expect(read([WebSocketFrameWriter.frame(.text, payload: exact)], masked: false, maximum: 4096) == [.message(exact)])
    }

    @Test func aCloseWithoutACodeAndAPongAreRead() {
        let frames = WebSocketFrameWriter.frame(.pong, payload: [1]) + WebSocketFrameWriter.frame(.close, payload: [])
        #expect(read([frames], masked: false) == [.pong, .close(nil)])
    }
}
