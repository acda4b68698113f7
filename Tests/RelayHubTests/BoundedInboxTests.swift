import RelayCore
import Testing

@testable import RelayClient

/// The subscription buffer both clients share: filled during a read, its reader woken once.
@Suite struct BoundedInboxTests {
    @Test func aWaitingReaderIsWokenOnceForWhatOneReadBrought() async throws {
        let inbox = BoundedInbox<Int>(bufferSize: 10, policy: .dropNewest)
        let reader = Task { () -> [Int] in
            var seen: [Int] = []
            while let value = await inbox.next() { seen.append(value) }
            return seen
        }
        // Enqueue until the reader is seen waiting: the first enqueue that finds it asks for a wake.
        var wakes = 0
        var value = 0
        while wakes == 0 {
            if inbox.enqueue(value) { wakes += 1 }
            value += 1
            await Task.yield()
        }
        // Further enqueues before the wake do not ask again.
        #expect(!inbox.enqueue(1000))
        inbox.wake()
        inbox.finish()
        let seen = await reader.value
        #expect(seen == Array(0..<value) + [1000])
        #expect(inbox.dropped.load(ordering: .relaxed) == 0)
    }

    @Test(arguments: [SlowConsumerPolicy.dropNewest, .dropOldest])
    func aFullBufferDropsByItsPolicyAndCounts(_ policy: SlowConsumerPolicy) async {
        let inbox = BoundedInbox<Int>(bufferSize: 3, policy: policy)
        for value in 0..<5 { _ = inbox.enqueue(value) }
        inbox.finish()
        var seen: [Int] = []
        while let value = await inbox.next() { seen.append(value) }
        #expect(seen == (policy == .dropNewest ? [0, 1, 2] : [2, 3, 4]))
        #expect(inbox.dropped.load(ordering: .relaxed) == 2)
    }

    @Test func finishingHandsOverWhatIsBufferedThenEnds() async {
        let inbox = BoundedInbox<Int>(bufferSize: 10, policy: .dropNewest)
        let reader = Task { () -> [Int] in
            var seen: [Int] = []
            while let value = await inbox.next() { seen.append(value) }
            return seen
        }
        for value in 0..<4 { _ = inbox.enqueue(value) }
        inbox.finish()
        #expect(await reader.value == [0, 1, 2, 3])
        #expect(!inbox.enqueue(9))
    }

    @Test func cancellingTheReaderEndsTheSequence() async {
        let inbox = BoundedInbox<Int>(bufferSize: 10, policy: .dropNewest)
        let reader = Task { await inbox.next() }
        reader.cancel()
        #expect(await reader.value == nil)
        #expect(await inbox.next() == nil)
    }
}

/// A subscriber gets the same publication from a delivery read in place as from the delivery decoded.
@Suite struct PublicationInPlaceTests {
    @Test func aDeliveryReadInPlaceIsThePublicationTheDecoderGives() throws {
        let alice = Node("alice@relay.local/phone")!
        let messages = [
            PublishedMessage(subject: "orders.eu", publisher: alice, type: .textPlain, body: .text("hello \"you\"")),
            PublishedMessage(subject: "orders.eu", type: .applicationJSON, body: .json(["n": [1, 2.5, nil]])),
            PublishedMessage(subject: "raw", body: .bytes(Array("from NATS".utf8))),
        ]
        var scanner = LIMEDeliveryScanner()
        for message in messages {
            let bytes = LIMECodec.encodeDelivery(message, token: "t", to: Node("bob@relay.local"))
            let delivery = try #require(bytes.withUnsafeBufferPointer { scanner.scan($0) })
            guard case .message(let decoded) = try LIMECodec.decode(bytes) else {
                Issue.record("not a message")
                continue
            }
            let publication = bytes.withUnsafeBytes { Publication(delivery, envelope: $0) }
            #expect(publication == Publication(decoded))
            #expect(publication.text == Publication(decoded).text)
        }
    }
}
