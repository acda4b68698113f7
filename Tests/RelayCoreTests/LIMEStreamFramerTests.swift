import Testing

@testable import RelayCore

@Suite struct LIMEStreamFramerTests {
    static let envelopes = [
        #"{"id":"1","type":"text/plain","content":"braces } { and \"quotes\" and \\ backslashes"}"#,
        #"{"method":"get","uri":"/ping","resource":{"nested":{"deep":[{"x":"}"}]}}}"#,
        #"{"state":"new"}"#,
    ]

    @Test func splitsEnvelopesAtEveryByteBoundary() throws {
        let stream = Array(Self.envelopes.joined(separator: " \r\n\t").utf8)
        for split in 0...stream.count {
            var framer = LIMEStreamFramer()
            var out = try framer.bytesReceived(stream[..<split])
            out += try framer.bytesReceived(stream[split...])
            #expect(out.map { String(decoding: $0, as: UTF8.self) } == Self.envelopes, "split at \(split)")
            #expect(framer.bufferedByteCount == 0)
        }
    }

    @Test func readsByteByByte() throws {
        let stream = Array(Self.envelopes.joined().utf8)
        var framer = LIMEStreamFramer()
        var out: [[UInt8]] = []
        for byte in stream { out += try framer.bytesReceived([byte]) }
        #expect(out.map { String(decoding: $0, as: UTF8.self) } == Self.envelopes)
    }

    @Test func returnsSeveralEnvelopesFromOneRead() throws {
        var framer = LIMEStreamFramer()
        let out = try framer.bytesReceived(Array(Self.envelopes.joined().utf8))
        #expect(out.count == 3)
    }

    @Test func skipsStrayBytesBetweenEnvelopes() throws {
        var framer = LIMEStreamFramer()
        let out = try framer.bytesReceived(Array(#"garbage]}"{"a":1} xx {"b":2}"#.utf8))
        #expect(out.map { String(decoding: $0, as: UTF8.self) } == [#"{"a":1}"#, #"{"b":2}"#])
    }

    @Test func refusesAnOversizedEnvelopeBeforeBufferingIt() throws {
        var framer = LIMEStreamFramer(maximumEnvelopeSize: 64)
        let big = "{\"content\":\"" + String(repeating: "x", count: 10_000) + "\"}"
        #expect(throws: LIMEStreamFramer.EnvelopeTooLarge(limit: 64)) { try framer.bytesReceived(Array(big.utf8)) }
        #expect(framer.bufferedByteCount == 0)
        // Fed in small pieces, the limit holds as soon as it is passed.
        var piecewise = LIMEStreamFramer(maximumEnvelopeSize: 64)
        var failedAt: Int?
        for (offset, byte) in big.utf8.enumerated() {
            do { _ = try piecewise.bytesReceived([byte]) } catch { failedAt = offset; break }
            #expect(piecewise.bufferedByteCount <= 64)
        }
        #expect(failedAt == 64)
    }

    @Test func anEnvelopeOfExactlyTheLimitPasses() throws {
        let text = #"{"a":"12345"}"#
        var framer = LIMEStreamFramer(maximumEnvelopeSize: text.utf8.count)
        #expect(try framer.bytesReceived(Array(text.utf8)).count == 1)
    }
}
