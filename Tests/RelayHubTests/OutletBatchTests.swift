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
