import Testing

@testable import RelayCore

/// `LIMECodec.decode(bytes)` scans an envelope, keeping `content` and `resource` as the text they
/// arrived in. It must give the same envelope, or the same error at the same byte, as parsing the
/// whole document into a `JSONValue` first and decoding that.
@Suite struct LIMEScannerTests {
    /// The reference: the whole document parsed, then decoded.
    private static func decodedFromValue(_ bytes: [UInt8], maximumDepth: Int) -> Result<Envelope, Reason> {
        let value: JSONValue
        do {
            value = try JSONParser.parse(bytes, maximumDepth: maximumDepth)
        } catch {
            return .failure(Reason(code: ReasonCode.validationError, description: "Malformed JSON: \(error)"))
        }
        do {
            return .success(try LIMECodec.decode(value))
        } catch {
            return .failure(error)
        }
    }

    private static func scanned(_ bytes: [UInt8], maximumDepth: Int) -> Result<Envelope, Reason> {
        do {
            return .success(try LIMECodec.decode(bytes, maximumDepth: maximumDepth))
        } catch {
            return .failure(error)
        }
    }

    static let edgeCases: [String] = [
        #"{ "type" : "text/plain" , "content" : "caf\u00e9 \"quoted\" \ud83d\ude00" }"#,
        #"{"content":{"a":[1,2.50,{"b":null}],"c":"d"} ,"type":"application/json"}"#,
        #"{"content":"x","content":{"y":1},"type":"application/json"}"#,
        #"{"method":"set","uri":"/x","resource":null}"#,
        #"{"method":"set","uri":"/x","resource":"a","resource":[true,false,null,-0.5e+3]}"#,
        #"{"method":"observe","uri":"/topics/a","unknown":{"deep":[[[1]]]},"resource":{}}"#,
        #"{"content":null}"#,
        #"{"content":"abc}"#,
        #"{"content":"\x"}"#,
        #"{"content":"\u12"}"#,
        #"{"content":"\ud800"}"#,
        #"{"content":"\udc00x"}"#,
        #"{"content":"\ud800\u0041"}"#,
        #"{"content":[1,2,}"#,
        #"{"content":tru}"#,
        #"{"content":01}"#,
        #"{"content":-}"#,
        #"{"content":1.}"#,
        #"{"content":1e}"#,
        #"{"content":{"a" 1}}"#,
        #"{"content":{"a":1,}}"#,
        #"{"content":{1:2}}"#,
        #"{"content":[1 2]}"#,
        #"{"content":1} x"#,
        #"{"content":1,}"#,
        #"{"content":1"#,
        #"{"content""#,
        #"{"content":"#,
        #"{"#,
        #"{}"#,
        #"[1]"#,
        #""x""#,
        "",
        "   ",
        #"{"id":7,"event":"received"}"#,
        #"{"event":"nonsense"}"#,
        #"{"from":"not a node@","content":"x"}"#,
        "{\"content\":\"tab\there\"}",
        // Member names are matched by their bytes: escaped, non-ASCII, repeated and misplaced ones.
        #"{"\u0066rom":"a@b.c/d","c\u006Fntent":"x","typ\u0065":"text/plain"}"#,
        #"{"fr\u00f6m":"x","fröm":"y","content":"z"}"#,
        #"{"method":"get","uri":"/a","uri":"/b","id":"1","id":2,"from":"a@b","from":null}"#,
        #"{"state":"authenticating","scheme":"plain","authentication":{"password":"cA=="},"encryptionOptions":["none"],"reason":"r"}"#,
        #"{"state":"new","compression":5}"#,
        #"{"to":5,"content":"x"}"#,
        #"{"pp":"x@y/z","to":"caf\u00e9@x.y","content":"\u00e9l\u00e8ve"}"#,
        #"{"event":"failed","reason":{"code":42,"description":"no"},"id":"n1"}"#,
        #"{"method":"set","status":"SUCCESS","type":"application/json","metadata":{"k":1,"\u006b":"2"}}"#,
        #"{"":1,"t":2,"typ":3,"types":4,"content":"x"}"#,
    ]

    @Test(arguments: edgeCases)
    func agreesWithTheFullParse(_ text: String) {
        let bytes = Array(text.utf8)
        #expect(Self.scanned(bytes, maximumDepth: 64) == Self.decodedFromValue(bytes, maximumDepth: 64))
    }

    @Test func agreesOnInvalidUTF8AndControlCharacters() {
        let prefix = Array(#"{"type":"text/plain","content":""#.utf8)
        let suffix = Array(#""}"#.utf8)
        let insides: [[UInt8]] = [
            [0xFF], [0xC3], [0xC3, 0x28], [0xE0, 0x80, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xC3, 0xA9],
            [0xF0, 0x9F, 0x98, 0x80], [0x01], [0xC3, 0x5C, 0x6E], [0x61, 0x5C, 0x6E, 0xFF],
        ]
        for inside in insides {
            let bytes = prefix + inside + suffix
            #expect(Self.scanned(bytes, maximumDepth: 64) == Self.decodedFromValue(bytes, maximumDepth: 64), "\(inside)")
        }
    }

    @Test func agreesOnNestingDepth() {
        for depth in [0, 1, 2, 3, 5] {
            for nesting in 0...5 {
                let text =
                    #"{"type":"application/json","content":"# + String(repeating: "[", count: nesting)
                    + String(repeating: "]", count: nesting) + (nesting == 0 ? "1" : "") + "}"
                let bytes = Array(text.utf8)
                #expect(
                    Self.scanned(bytes, maximumDepth: depth) == Self.decodedFromValue(bytes, maximumDepth: depth),
                    "depth \(depth), nesting \(nesting)")
            }
        }
    }

    /// Every specification example, and thousands of damaged copies of them (a byte changed,
    /// dropped or repeated): the scanner and the full parse agree on each.
    @Test func agreesOnDamagedEnvelopes() {
        var random = SplitMix64(seed: 6)
        let replacements = Array(#"{}[]:,"\ 0a-.e"#.utf8) + [0xFF, 0x01]
        var compared = 0
        for example in specificationExamples + Self.edgeCases {
            let original = Array(example.utf8)
            #expect(Self.scanned(original, maximumDepth: 64) == Self.decodedFromValue(original, maximumDepth: 64))
            guard !original.isEmpty else { continue }
            for _ in 0..<100 {
                var damaged = original
                let position = Int(random.next() % UInt64(damaged.count))
                switch random.next() % 3 {
                case 0: damaged[position] = replacements[Int(random.next() % UInt64(replacements.count))]
                case 1: damaged.remove(at: position)
                default: damaged.insert(damaged[position], at: position)
                }
                let scanned = Self.scanned(damaged, maximumDepth: 64)
                let reference = Self.decodedFromValue(damaged, maximumDepth: 64)
                #expect(scanned == reference, "\(String(decoding: damaged, as: UTF8.self))")
                compared += 1
            }
        }
        #expect(compared > 5_000)
    }

    /// What arrived is what goes out: the content's text, spacing and number spelling included,
    /// is written back byte for byte, and its value is still there when asked for.
    @Test func forwardsContentAsItArrived() throws {
        let content = #"{ "price" : 2.50, "tags" : [ "a" ,"b" ] }"#
        let text = #"{"to":"b@relay.local","type":"application/json","content":"# + content + "}"
        let envelope = try LIMECodec.decode(Array(text.utf8))
        guard case .message(let message) = envelope else {
            Issue.record("expected a message")
            return
        }
        #expect(message.body.jsonBytes == Array(content.utf8))
        #expect(message.content == ["price": .number(JSONNumber(2.5)), "tags": ["a", "b"]])
        #expect(String(decoding: LIMECodec.encode(envelope), as: UTF8.self).hasSuffix(#""content":"# + content + "}"))
    }

    /// A LIME publication reaches a LIME subscriber with the publisher's bytes, and a NATS
    /// subscriber with the value's (an unescaped string for text).
    @Test func publicationsKeepTheirContentAcrossTheHub() throws {
        let resource = #"{"n" : 1.50}"#
        let command = try LIMECodec.decode(
            Array(#"{"method":"observe","uri":"/topics/a","type":"application/json","resource":\#(resource)}"#.utf8))
        guard case .command(let publication) = command else {
            Issue.record("expected a command")
            return
        }
        let message = PublishedMessage(
            subject: "a", type: publication.type, body: .content(try #require(publication.resourceBody)))
        let delivery = LIMECodec.encode(message.limeEnvelope(token: "a", to: Node("b@relay.local")))
        #expect(String(decoding: delivery, as: UTF8.self).contains(#""content":{"n" : 1.50}"#))
        #expect(message.payloadBytes == Array(resource.utf8))
        let text = PublishedMessage(subject: "a", type: .textPlain, body: .content(JSONContent(validatedText: Array(#""a\"b""#.utf8))))
        #expect(text.payloadBytes == Array(#"a"b"#.utf8))
        #expect(text.body == .text(#"a"b"#))
    }
}

@Suite struct LIMEDeliveryEncodingTests {
    /// `encodeDelivery` writes what encoding `limeEnvelope` gives, byte for byte, for every shape
    /// of publication: with and without a reply subject, a status, metadata (which takes the
    /// general path), a publisher, content as it arrived or as a value, and text needing escapes.
    @Test func agreesWithTheEnvelopeItStandsFor() throws {
        let scanned = try #require(
            try LIMECodec.decode(Array(#"{"method":"observe","uri":"/t","resource":{ "a" : [1, 2.50] }}"#.utf8)).commandValue?
                .resourceBody)
        let bodies: [PublishedMessage.Body] = [
            .content(scanned), .json(["k": "v"]), .text("line\n\"quoted\""), .bytes([0xFF, 0x00]), .bytes(Array("plain".utf8)),
        ]
        var checked = 0
        for body in bodies {
            for replyTo in [nil, "_INBOX.1"] {
                for status in [nil, 503] {
                    for metadata in [[:], ["traceId": "t\u{1}", "#delivery": "relay-q:x:1"]] {
                        for publisher in [nil, Node("pub@relay.local/π")] {
                            let message = PublishedMessage(
                                subject: "orders.\"new\"", replyTo: replyTo, publisher: publisher, type: nil, body: body,
                                metadata: metadata, status: status)
                            let node = Node("sub@relay.local/1")
                            let expected = LIMECodec.encode(message.limeEnvelope(token: "orders.*?queue=w", to: node))
                            #expect(LIMECodec.encodeDelivery(message, token: "orders.*?queue=w", to: node) == expected)
                            // Appended to a batch, after what it holds, the same bytes.
                            var batch = Array("earlier".utf8)
                            LIMECodec.encodeDelivery(message, token: "orders.*?queue=w", to: node, into: &batch)
                            #expect(batch == Array("earlier".utf8) + expected)
                            checked += 1
                        }
                    }
                }
            }
        }
        #expect(checked == 80)
    }
}

extension Envelope {
    fileprivate var commandValue: LIMECommand? {
        if case .command(let command) = self { return command }
        return nil
    }
}

@Suite struct LIMENodeCacheTests {
    /// A connection's decoder keeps the nodes it has read; what it decodes through the cache, even
    /// while evicting, equals what a decoder without one gives, and bad nodes are still refused.
    @Test func decodesTheSameThroughTheCache() throws {
        var nodes = LIMECodec.NodeCache(capacity: 2)
        let senders = ["a@relay.local/1", "B@relay.local/2", "a@relay.local/1", "c@x/3", "b@relay.local/2", "a@relay.local/1"]
        for (index, sender) in (senders + senders).enumerated() {
            let text = #"{"id":"\#(index)","from":"\#(sender)","to":"hub@relay.local","type":"text/plain","content":"x"}"#
            let cached = try LIMECodec.decode(Array(text.utf8), maximumDepth: 64, nodes: &nodes)
            let fresh = try LIMECodec.decode(Array(text.utf8))
            #expect(cached == fresh)
            #expect(cached.header.from?.description == sender)
        }
        let bad = Array(#"{"from":"a@b@c","content":"x"}"#.utf8)
        #expect(throws: Reason.self) { try LIMECodec.decode(bad, maximumDepth: 64, nodes: &nodes) }
    }
}
