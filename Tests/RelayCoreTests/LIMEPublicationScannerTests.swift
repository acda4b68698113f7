import Testing

@testable import RelayCore

/// The hub's short way for LIME publications: `LIMEPublicationScanner` recognises a plain
/// fire-and-forget publication where it lies, and the delivery written from its bytes is the one
/// the usual path (decode, `HubCore.envelopeReceived`, `encodeDelivery`) writes.
@Suite struct LIMEPublicationScannerTests {
    private static func scan(_ text: String) -> LIMEPublishInPlace? {
        var scanner = LIMEPublicationScanner()
        return Array(text.utf8).withUnsafeBufferPointer { scanner.scan($0) }
    }

    private static let plain = [
        #"{"method":"observe","uri":"/topics/orders.eu","type":"text/plain","resource":"hello \"you\""}"#,
        #"{"id":"p1","method":"observe","uri":"/topics/orders.eu","resource":{"n":[1,2.50,null,true]}}"#,
        #"  { "resource" : 42 , "uri":"/topics/a", "id": 7, "method":"observe" }  "#,
        #"{"method":"observe","uri":"/topics/x","type":"application/vnd.acme+json","resource":"quoted JSON string","id":null}"#,
        #"{"method":"observe","uri":"/topics/x","type":"text/csv","resource":"a,b\nc,d"}"#,
        #"{"method":"observe","uri":"/topics/ünïcode.€","resource":"ça va"}"#,
    ]

    @Test func plainPublicationsAreRecognisedAndReadAsTheDecoderReadsThem() throws {
        let node = Node("alice@relay.local/phone")!
        for text in Self.plain {
            let bytes = Array(text.utf8)
            let publication = try #require(Self.scan(text), "\(text)")
            // The command the hub publishes when it does not forward is the decoder's, with `from` set.
            guard case .command(var decoded) = try LIMECodec.decode(bytes) else {
                Issue.record("not a command: \(text)")
                continue
            }
            decoded.header.from = node
            let command = bytes.withUnsafeBytes { publication.command(from: node, envelope: $0) }
            #expect(command == decoded, "\(text)")
            #expect(publication.subject == HubCore.plainTopic(decoded.uri ?? ""))
            // The resource is the text the decoder keeps, as it arrived.
            var kept: [UInt8] = []
            decoded.resourceBody?.write(into: &kept)
            #expect(Array(bytes[publication.resource]) == kept, "\(text)")
        }
    }

    @Test func anythingElseIsLeftToTheDecoder() {
        let declined = [
            // Other members: metadata, from, to, pp, unknown ones, a member twice.
            #"{"method":"observe","uri":"/topics/a","resource":"x","metadata":{"traceId":"t"}}"#,
            #"{"method":"observe","uri":"/topics/a","resource":"x","from":"bob@relay.local/desk"}"#,
            #"{"method":"observe","uri":"/topics/a","resource":"x","to":"postmaster@relay.local"}"#,
            #"{"method":"observe","uri":"/topics/a","resource":"x","pp":"bob@relay.local"}"#,
            #"{"method":"observe","uri":"/topics/a","resource":"x","extra":1}"#,
            #"{"method":"observe","uri":"/topics/a","resource":"x","resource":"y"}"#,
            // Other commands, other resources, options, encodings the hub decodes.
            #"{"id":"1","method":"set","uri":"/topics/a","resource":"x"}"#,
            #"{"method":"OBSERVE","uri":"/topics/a","resource":"x"}"#,
            #"{"method":"observe","uri":"/services/a/b","resource":"x"}"#,
            #"{"method":"observe","uri":"/topics/a?queue=q","resource":"x"}"#,
            #"{"method":"observe","uri":"/topics/a%2Eb","resource":"x"}"#,
            #"{"method":"observe","uri":"\/topics\/a","resource":"x"}"#,
            #"{"method":"observe","uri":"lime://relay.local/topics/a","resource":"x"}"#,
            #"{"method":"observe","uri":"/topics/","resource":"x"}"#,
            #"{"method":"observe","uri":"/t","resource":"x"}"#,
            #"{"method":"observe","uri":"","resource":"x"}"#,
            // Subjects a publication may not have: the usual path refuses them.
            #"{"method":"observe","uri":"/topics/a.*","resource":"x"}"#,
            #"{"method":"observe","uri":"/topics/a..b","resource":"x"}"#,
            // No resource, a null one, base64 content of a binary type, an id that is not one.
            #"{"method":"observe","uri":"/topics/a"}"#,
            #"{"method":"observe","uri":"/topics/a","resource":null}"#,
            #"{"method":"observe","uri":"/topics/a","type":"application/octet-stream","resource":"AAEC"}"#,
            #"{"id":{"a":1},"method":"observe","uri":"/topics/a","resource":"x"}"#,
            // Not valid JSON, or not an object: the decoder reports the error.
            #"{"method":"observe","uri":"/topics/a","resource":"x"} trailing"#,
            #"{"method":"observe","uri":"/topics/a","resource":"bad \x escape"}"#,
            #"{"method":"observe","uri":"/topics/a","resource":[1,2}"#,
            #"{"method":"observe","uri":"/topics/a","resource":"x""#,
            #"["method","observe"]"#,
            "",
        ]
        for text in declined { #expect(Self.scan(text) == nil, "\(text)") }
        // Too deep for the limit: declined like the decoder refuses it.
        var scanner = LIMEPublicationScanner()
        let deep = Array(#"{"method":"observe","uri":"/topics/a","resource":[[[[1]]]]}"#.utf8)
        #expect(deep.withUnsafeBufferPointer { scanner.scan($0, maximumDepth: 3) } == nil)
        #expect(deep.withUnsafeBufferPointer { scanner.scan($0, maximumDepth: 6) } != nil)
    }

    @Test func aPublishersSubjectAndTypeAreReadOnceAndStayRight() {
        var scanner = LIMEPublicationScanner()
        func scan(_ subject: String, _ type: String) -> LIMEPublishInPlace? {
            Array(#"{"method":"observe","uri":"/topics/\#(subject)","type":"\#(type)","resource":"x"}"#.utf8).withUnsafeBufferPointer {
                scanner.scan($0)
            }
        }
        #expect(scan("a.b", "text/plain")?.subject == "a.b")
        #expect(scan("a.b", "application/json")?.type == .applicationJSON)
        #expect(scan("a.c", "application/json")?.subject == "a.c")
        // An invalid subject after a valid one is declined, and does not replace it.
        #expect(scan("a.>", "text/plain") == nil)
        #expect(scan("a.c", "text/plain")?.subject == "a.c")
    }

    /// The delivery written from the publication's bytes is, byte for byte, the one the hub writes
    /// for the same envelope decoded and published through the core, to the same recipients.
    @Test func forwardedDeliveriesAreTheOnesTheUsualPathWrites() throws {
        let publisher = Node("alice@relay.local/phone")!
        var core = HubCore(configuration: .init(hubNode: Node("postmaster@relay.local/hub")!))
        _ = core.register(1, node: publisher)
        _ = core.register(2, node: Node("bob@relay.local/desk")!)
        _ = core.register(3, node: Node("carol@relay.local")!)
        try core.subscribe(2, token: "orders.*", filter: "orders.*", queue: nil, echo: false)
        try core.subscribe(3, token: "orders.>", filter: "orders.>", queue: nil, echo: false)
        try core.subscribe(1, token: "orders.eu", filter: "orders.eu", queue: nil, echo: true)
        try core.subscribe(2, token: "x", filter: "x", queue: nil, echo: false)
        let nodes: [SessionID: Node] = [1: publisher, 2: Node("bob@relay.local/desk")!, 3: Node("carol@relay.local")!]
        for text in Self.plain where text.contains("orders.eu") || text.contains("/topics/x") {
            let bytes = Array(text.utf8)
            let publication = try #require(Self.scan(text))
            var usual = core
            guard case .command(var command) = try LIMECodec.decode(bytes) else { return }
            command.header.from = publisher
            var expected: [SessionID: [UInt8]] = [:]
            for output in usual.envelopeReceived(.command(command), from: 1) {
                guard case .deliver(let session, let token, let message, _) = output else { continue }
                expected[session, default: []] += LIMECodec.encodeDelivery(message, token: token, to: nodes[session])
            }
            var recipients: [HubCore.Recipient] = []
            #expect(core.forward(subject: publication.subject, hasReplyTo: false, from: 1, accepts: { _ in true }, into: &recipients))
            var forwarded: [SessionID: [UInt8]] = [:]
            bytes.withUnsafeBytes { envelope in
                for recipient in recipients {
                    LIMECodec.encodeDelivery(
                        publication, content: UnsafeRawBufferPointer(rebasing: envelope[publication.resource]),
                        from: LIMECodec.quoted(publisher), token: recipient.token, to: nodes[recipient.session].map(LIMECodec.quoted),
                        into: &forwarded[recipient.session, default: []])
                }
            }
            #expect(!forwarded.isEmpty, "\(text)")
            #expect(forwarded == expected, "\(text)")
            #expect(core.statistics == usual.statistics)
        }
    }
}
