import RelayCore
import Testing

@Suite struct PerMessageDeflateTests {
    @Test func aBrowsersOfferIsAcceptedWithoutContextTakeover() {
        let offers = PerMessageDeflate.offers(in: ["permessage-deflate; client_max_window_bits"])
        #expect(offers == [PerMessageDeflate(clientMaxWindowBits: 0)])
        let accepted = PerMessageDeflate.accept(offers)
        #expect(accepted == PerMessageDeflate(serverNoContextTakeover: true, clientNoContextTakeover: true, clientMaxWindowBits: 15))
        #expect(
            accepted?.headerValue == "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=15"
        )
    }

    @Test func theFirstValidOfferWinsAndMalformedOnesAreLeftOut() {
        let offers = PerMessageDeflate.offers(in: [
            "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=20",
            #"permessage-deflate; server_max_window_bits="10"; client_no_context_takeover, permessage-deflate"#,
        ])
        #expect(offers == [PerMessageDeflate(clientNoContextTakeover: true, serverMaxWindowBits: 10), PerMessageDeflate()])
        let accepted = PerMessageDeflate.accept(offers)
        #expect(accepted?.serverMaxWindowBits == 10, "a limit on the server's window is kept")
        #expect(accepted?.clientMaxWindowBits == nil, "not offered: not answered")
        #expect(
            PerMessageDeflate.offers(in: ["permessage-deflate; unknown=1", "permessage-deflate; client_no_context_takeover=1"]).isEmpty)
        #expect(PerMessageDeflate.accept([]) == nil)
    }

    @Test func aClientChecksTheAnswer() throws {
        #expect(try PerMessageDeflate.response(in: []) == nil)
        #expect(try PerMessageDeflate.response(in: ["permessage-deflate; server_no_context_takeover"])?.serverNoContextTakeover == true)
        // The bare client_max_window_bits is an offer's, never an answer's.
        #expect(throws: PerMessageDeflateError.self) { try PerMessageDeflate.response(in: ["permessage-deflate; client_max_window_bits"]) }
        #expect(throws: PerMessageDeflateError.self) { try PerMessageDeflate.response(in: ["permessage-deflate, permessage-deflate"]) }
    }

    @Test func rsv1MarksACompressedMessageOnlyWhenNegotiated() {
        var frame: [UInt8] = [0xC1, 0x80, 1, 2, 3, 4]  // FIN, RSV1, text; masked, empty
        var parser = WebSocketFrameParser(expectsMaskedFrames: true, maximumMessageSize: 100)
        let refused = frame.withUnsafeMutableBufferPointer { parser.parse($0).events }
        guard case .failed(let code, _) = refused.first else { Issue.record("RSV1 accepted without the extension"); return }
        #expect(code == WebSocketCloseCode.protocolError)

        var negotiated = WebSocketFrameParser(expectsMaskedFrames: true, maximumMessageSize: 100)
        negotiated.allowsCompression = true
        frame = [0xC1, 0x80, 1, 2, 3, 4]
        #expect(frame.withUnsafeMutableBufferPointer { negotiated.parse($0).events } == [.compressedMessage([])])
        // Never on a control frame.
        frame = [0xC9, 0x80, 1, 2, 3, 4]
        let ping = frame.withUnsafeMutableBufferPointer { negotiated.parse($0).events }
        guard case .failed = ping.first else { Issue.record("RSV1 accepted on a ping"); return }
    }
}
