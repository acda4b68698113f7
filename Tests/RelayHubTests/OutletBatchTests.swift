import NIOCore
import NIOEmbedded
import RelayCore
import Testing

@testable import RelayHub

/// A session's writes from one pass of the hub, rendered into one array: held one by one when the
/// connection cannot take them, each must come back exactly as it was rendered, with its limit.
@Suite struct OutletBatchTests {
    @Test func heldWritesComeBackOneByOneAsRendered() {
        var batch = OutletBatch()
        let limit = DeliveryLimit(maximumHeld: 2, policy: .dropOldest)
        batch.append { $0 += Array("first".utf8) }
        batch.append(token: "sub", limit: limit) { $0 += [] }
        batch.append(token: "sub", limit: limit) { $0 += Array("third, longer".utf8) }
        #expect(batch.bytes == Array("firstthird, longer".utf8))
        #expect(batch.entries.map(\.end) == [5, 5, 18])
        let items = batch.items
        #expect(items.map { String(decoding: $0.bytes, as: UTF8.self) } == ["first", "", "third, longer"])
        #expect(items.map(\.token) == [nil, "sub", "sub"])
        #expect(items.map(\.limit) == [nil, limit, limit])
    }

    /// A batch is made with room for one as large as the session's last; held deliveries are
    /// slices, so a small batch in a large array is copied out rather than kept alive whole.
    @Test func heldWritesOfAMostlyEmptyBatchDoNotKeepItsRoomAlive() {
        func address(_ bytes: ArraySlice<UInt8>) -> UnsafePointer<UInt8>? { bytes.withUnsafeBufferPointer { $0.baseAddress } }
        var roomy = OutletBatch(capacity: 128 << 10)
        roomy.append { $0 += Array("small".utf8) }
        let held = roomy.items
        #expect(held.map { String(decoding: $0.bytes, as: UTF8.self) } == ["small"])
        #expect(address(held[0].bytes) != address(roomy.bytes[...]))
        var snug = OutletBatch()
        snug.append { $0 += Array("small".utf8) }
        #expect(address(snug.items[0].bytes) == address(snug.bytes[...]))
    }
}

/// While a connection cannot take more, deliveries counted per subscription (LIME's `pending`) are
/// held one by one; those bounded by bytes alone (NATS) go to the writer, in order behind any held.
@Suite struct SessionOutletTests {
    private func batch(_ text: String, limit: DeliveryLimit?) -> OutletBatch {
        var batch = OutletBatch()
        batch.append(token: "t", limit: limit) { $0 += Array(text.utf8) }
        return batch
    }

    private func written(_ channel: EmbeddedChannel) throws -> String {
        channel.embeddedEventLoop.run()
        var text = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
        return text
    }

    @Test func deliveriesBoundedByBytesAloneAreWrittenWhileTheConnectionLags() throws {
        let channel = EmbeddedChannel()
        let outlet = SessionOutlet(channel: channel, framing: .stream, maximumPendingBytes: 64)
        let bytesOnly = DeliveryLimit.bytesOnly
        let counted = DeliveryLimit(maximumHeld: 1, policy: .dropNewest)
        outlet.writabilityChanged(false)
        #expect(outlet.send(batch("nats1 ", limit: bytesOnly)) == 0)
        #expect(try written(channel) == "nats1 ")
        // A counted delivery is held; what comes after it waits behind it, and its overflow drops.
        #expect(outlet.send(batch("lime1 ", limit: counted)) == 0)
        #expect(outlet.send(batch("lime2 ", limit: counted)) == 1)
        #expect(outlet.send(batch("nats2 ", limit: bytesOnly)) == 0)
        #expect(try written(channel) == "")
        outlet.writabilityChanged(true)
        #expect(try written(channel) == "lime1 nats2 ")
        // The byte cap still holds: past it the session is a slow consumer.
        outlet.writabilityChanged(false)
        #expect(outlet.send(batch(String(repeating: "x", count: 65), limit: bytesOnly)) == nil)
    }
}
