import Testing

@testable import RelayCore

/// The client's short way for deliveries: `LIMEDeliveryScanner` recognises the deliveries the hub
/// writes for publications without the publisher's metadata, and reads from them what the decoder
/// reads.
@Suite struct LIMEDeliveryScannerTests {
    private static func scan(_ bytes: [UInt8]) -> LIMEDeliveryInPlace? {
        var scanner = LIMEDeliveryScanner()
        return bytes.withUnsafeBufferPointer { scanner.scan($0) }
    }

    /// What the decoder reads from the same bytes, in the scanner's terms; nil when it does not
    /// decode to a message.
    private static func decoded(_ bytes: [UInt8]) throws -> LIMEDeliveryInPlace? {
        guard case .message(let message) = try LIMECodec.decode(bytes) else { return nil }
        var content: [UInt8] = []
        message.body.write(into: &content)
        guard let start = bytes.indices.first(where: { bytes[$0...].starts(with: content) }) else { return nil }
        return LIMEDeliveryInPlace(
            subscription: message.header.metadata?["#subscription"] ?? "", subject: message.header.metadata?["#subject"] ?? "",
            publisher: message.header.from, type: message.type, content: start..<start + content.count)
    }

    private static let alice = Node("alice@relay.local/phone")!
    private static let bob = Node("bob@relay.local/desk")!

    /// Publications the hub delivers without the publisher's metadata, in each body it carries.
    private static let published: [PublishedMessage] = [
        PublishedMessage(subject: "orders.eu", publisher: alice, type: .textPlain, body: .text("hello \"you\"\n")),
        PublishedMessage(subject: "orders.eu", publisher: alice, type: .applicationJSON, body: .json(["n": [1, 2.5, nil, true]])),
        PublishedMessage(subject: "ünïcode.€", body: .text("ça va")),
        PublishedMessage(subject: "a", publisher: bob, body: .json(42)),
        PublishedMessage(subject: "bytes.from.nats", body: .bytes(Array("raw".utf8))),
        PublishedMessage(subject: "csv", type: MediaType("text/csv"), body: .content(JSONContent(.string("a,b")))),
    ]

    @Test func deliveriesTheHubWritesAreRecognisedAndReadAsTheDecoderReadsThem() throws {
        for message in Self.published {
            for to in [nil, Self.bob] {
                let bytes = LIMECodec.encodeDelivery(message, token: "sub-7", to: to)
                let delivery = try #require(Self.scan(bytes), "\(String(decoding: bytes, as: UTF8.self))")
                #expect(delivery == (try Self.decoded(bytes)), "\(String(decoding: bytes, as: UTF8.self))")
                #expect(delivery.subscription == "sub-7")
            }
        }
        // The hub's forwarded deliveries (written from a publication's bytes) are read the same way.
        var publications = LIMEPublicationScanner()
        let text = Array(##"{"method":"observe","uri":"/topics/orders.eu","resource":{"total":12}}"##.utf8)
        let publication = try #require(text.withUnsafeBufferPointer { publications.scan($0) })
        var bytes: [UInt8] = []
        text.withUnsafeBytes { envelope in
            LIMECodec.encodeDelivery(
                publication, content: UnsafeRawBufferPointer(rebasing: envelope[publication.resource]),
                from: LIMECodec.quoted(Self.alice), token: "t", to: LIMECodec.quoted(Self.bob), into: &bytes)
        }
        let delivery = try #require(Self.scan(bytes))
        #expect(delivery == (try Self.decoded(bytes)))
        #expect(delivery.publisher == Self.alice && delivery.type == .applicationJSON && delivery.subject == "orders.eu")
        // Written by another hand: members in another order, spaces, an escaped member name.
        for text in [
            ##" { "content" : "x" , "type":"text/plain", "metadata":{"#subscription":"t","#subject":"s"} } "##,
            ##"{"metadata":{"#subject":"s","#subscription":"t"},"\u0066rom":"alice@relay.local","content":[1]}"##,
        ] {
            let bytes = Array(text.utf8)
            let delivery = try #require(Self.scan(bytes), "\(text)")
            #expect(delivery == (try Self.decoded(bytes)), "\(text)")
        }
    }

    /// Found by fuzzing (delivery-scanner): an empty `from` or `to` matched the scanner's memory of
    /// the last node before it had read any, and passed for a node the decoder refuses.
    @Test(arguments: [
        ##"{"to":"","metadata":{"#subject":"s","#subscription":"t"},"content":"x"}"##,
        ##"{"from":"","metadata":{"#subject":"s","#subscription":"t"},"content":"x"}"##,
    ])
    func anEmptyNodeIsNotANodeEvenOnTheFirstScan(_ text: String) {
        var scanner = LIMEDeliveryScanner()
        #expect(Array(text.utf8).withUnsafeBufferPointer { scanner.scan($0) } == nil)
        #expect(throws: Reason.self) { try LIMECodec.decode(Array(text.utf8)) }
    }

    @Test func anythingElseIsLeftToTheDecoder() {
        let declined = [
            // The publisher's metadata, a reply subject, a status, the hub's drop report.
            ##"{"metadata":{"#subject":"s","#subscription":"t","traceId":"1"},"type":"text/plain","content":"x"}"##,
            ##"{"metadata":{"#reply":"_INBOX.1","#subject":"s","#subscription":"t"},"type":"text/plain","content":"x"}"##,
            ##"{"metadata":{"#status":"503","#subject":"s","#subscription":"t"},"type":"text/plain","content":"x"}"##,
            ##"{"metadata":{"#dropped":"12","#subscription":"t"},"type":"text/plain","content":""}"##,
            // Not a subscription's delivery: no token or subject, no content, other envelopes.
            ##"{"metadata":{"#subject":"s"},"content":"x"}"##,
            ##"{"metadata":{"#subscription":"t"},"content":"x"}"##,
            ##"{"content":"x"}"##,
            ##"{"metadata":{"#subject":"s","#subscription":"t"}}"##,
            ##"{"id":"1","method":"get","uri":"/ping"}"##,
            ##"{"event":"received","id":"1"}"##,
            // Other members, a member twice, a key twice, metadata that is not an object of strings.
            ##"{"id":"m1","metadata":{"#subject":"s","#subscription":"t"},"content":"x"}"##,
            ##"{"pp":"bob@relay.local","metadata":{"#subject":"s","#subscription":"t"},"content":"x"}"##,
            ##"{"metadata":{"#subject":"s","#subscription":"t"},"content":"x","content":"y"}"##,
            ##"{"metadata":{"#subject":"s","#subject":"r","#subscription":"t"},"content":"x"}"##,
            ##"{"metadata":{"#subject":"s","#subscription":7},"content":"x"}"##,
            ##"{"metadata":[],"content":"x"}"##,
            // Escapes in the strings read, a null type, nodes that are not nodes.
            ##"{"metadata":{"#subject":"s\u0041","#subscription":"t"},"content":"x"}"##,
            ##"{"metadata":{"#subject":"s","#subscription":"t"},"type":null,"content":"x"}"##,
            ##"{"from":"@@","metadata":{"#subject":"s","#subscription":"t"},"content":"x"}"##,
            ##"{"to":"@@","metadata":{"#subject":"s","#subscription":"t"},"content":"x"}"##,
            // Not valid JSON, or not an object: the decoder reports the error.
            ##"{"metadata":{"#subject":"s","#subscription":"t"},"content":"x"} trailing"##,
            ##"{"metadata":{"#subject":"s","#subscription":"t"},"content":"bad \x escape"}"##,
            ##"{"metadata":{"#subject":"s","#subscription":"t"},"content":[1,2}"##,
            ##"["metadata"]"##,
            "",
        ]
        for text in declined { #expect(Self.scan(Array(text.utf8)) == nil, "\(text)") }
        // Too deep for the limit: declined like the decoder refuses it.
        var scanner = LIMEDeliveryScanner()
        let deep = Array(##"{"metadata":{"#subject":"s","#subscription":"t"},"content":[[[[1]]]]}"##.utf8)
        #expect(deep.withUnsafeBufferPointer { scanner.scan($0, maximumDepth: 3) } == nil)
        #expect(deep.withUnsafeBufferPointer { scanner.scan($0, maximumDepth: 6) } != nil)
    }

    @Test func whatIsReadOnceAndKeptStaysRight() {
        var scanner = LIMEDeliveryScanner()
        func scan(_ token: String, _ subject: String, from: String, type: String) -> LIMEDeliveryInPlace? {
            let text =
                ##"{"from":"\##(from)","metadata":{"#subject":"\##(subject)","#subscription":"\##(token)"},"type":"\##(type)","content":"x"}"##
            return Array(text.utf8).withUnsafeBufferPointer { scanner.scan($0) }
        }
        #expect(scan("t1", "a.b", from: "alice@relay.local/phone", type: "text/plain")?.publisher == Self.alice)
        let next = scan("t2", "a.c", from: "bob@relay.local/desk", type: "text/csv")
        #expect(next?.subscription == "t2" && next?.subject == "a.c" && next?.publisher == Self.bob && next?.type == MediaType("text/csv"))
        // A publisher that is not a node after one that is: declined, and the last one is kept for the next.
        #expect(scan("t2", "a.c", from: "@@", type: "text/csv") == nil)
        #expect(scan("t2", "a.c", from: "bob@relay.local/desk", type: "text/csv")?.publisher == Self.bob)
        #expect(scan("t1", "a.b", from: "alice@relay.local/phone", type: "text/plain")?.publisher == Self.alice)
    }
}
