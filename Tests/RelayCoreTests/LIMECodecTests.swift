import Testing

@testable import RelayCore

/// The envelope examples of the LIME specification (limeprotocol.org), each of which must survive
/// decode → encode → decode unchanged and encode to the same JSON as the original.
let specificationExamples: [String] = [
    // Messages
    ##"{"id":"65603604-fe19-479c-c885-3195b196fe8e","from":"skyler@breakingbad.com/bedroom","to":"ww@breakingbad.com","type":"text/plain","content":"Walter, are you in danger?"}"##,
    ##"{"from":"skyler@breakingbad.com/bedroom","to":"ww@breakingbad.com","type":"application/vnd.lime.location+json","content":{"latitude":-19.918899,"longitude":-43.959275,"altitude":853,"text":"Breaking bad studio"}}"##,
    ##"{"id":"8fcf23cd-e5ef-4e5c-b6f1-28f75106f42a","from":"heisenberg@breakingbad.com/home","to":"skyler@breakingbad.com","type":"application/vnd.lime.chatstate+json","content":{"state":"composing"}}"##,
    ##"{"id":"1","to":"ww@breakingbad.com","type":"image/png","content":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="}"##,
    ##"{"id":"2","from":"a@b.com/c","to":"d@e.com","metadata":{"#sent":"2024-01-01T00:00:00Z","traceId":"abc"},"type":"application/json","content":[1,2,3]}"##,
    // Notifications
    ##"{"id":"48600604-ce09-479c-b985-1195b196fe8e","from":"skyler@breakingbad.com/bedroom","to":"heisenberg@breakingbad.com/bedroom","event":"received"}"##,
    ##"{"id":"9d0c4fea-75c7-432a-a164-c1a219bc17a8","from":"skyler@breakingbad.com/bedroom","to":"heisenberg@breakingbad.com/bedroom","event":"failed","reason":{"code":42,"description":"The destination was not found"}}"##,
    ##"{"id":"9d0c4fea-75c7-432a-a164-c1a219bc17a8","from":"postmaster@breakingbad.com/#server1","to":"heisenberg@breakingbad.com/bedroom","event":"accepted"}"##,
    ##"{"id":"9d0c4fea-75c7-432a-a164-c1a219bc17a8","from":"postmaster@breakingbad.com/#server1","to":"heisenberg@breakingbad.com/bedroom","event":"dispatched"}"##,
    ##"{"id":"9d0c4fea-75c7-432a-a164-c1a219bc17a8","from":"skyler@breakingbad.com/bedroom","to":"heisenberg@breakingbad.com/bedroom","event":"consumed"}"##,
    // Commands
    ##"{"id":"4609d0a3-00eb-4e16-9d44-27d115c6eb31","to":"postmaster@breakingbad.com","method":"get","uri":"/account"}"##,
    ##"{"id":"4609d0a3-00eb-4e16-9d44-27d115c6eb31","from":"postmaster@breakingbad.com/#server1","to":"skyler@breakingbad.com/bedroom","method":"get","type":"application/vnd.lime.account+json","resource":{"email":"skyler@breakingbad.com","phoneNumber":"+1 505 503-4455","photoUri":"http://www.breakingbad.com/skyler.jpg"},"status":"success"}"##,
    ##"{"id":"5","method":"set","uri":"/contacts","type":"application/vnd.lime.contact+json","resource":{"identity":"heisenberg@breakingbad.com","name":"Walter White"}}"##,
    ##"{"id":"5","from":"postmaster@breakingbad.com/#server1","to":"skyler@breakingbad.com/bedroom","method":"set","status":"success"}"##,
    ##"{"id":"6","from":"postmaster@breakingbad.com/#server1","to":"skyler@breakingbad.com/bedroom","method":"get","status":"failure","reason":{"code":67,"description":"The resource was not found"}}"##,
    ##"{"id":"7","method":"delete","uri":"/contacts/heisenberg@breakingbad.com"}"##,
    ##"{"from":"skyler@breakingbad.com/bedroom","to":"heisenberg@breakingbad.com","method":"observe","uri":"/presence","type":"application/vnd.lime.presence+json","resource":{"status":"available"}}"##,
    ##"{"id":"8","method":"merge","uri":"/account","type":"application/vnd.lime.account+json","resource":{"fullName":"Skyler White"}}"##,
    ##"{"id":"9","method":"subscribe","uri":"lime://skyler@breakingbad.com/presence"}"##,
    ##"{"id":"10","to":"postmaster@breakingbad.com","method":"get","uri":"/ping"}"##,
    ##"{"id":"10","from":"postmaster@breakingbad.com/#server1","method":"get","type":"application/vnd.lime.ping+json","resource":{},"status":"success"}"##,
    // Sessions
    ##"{"state":"new"}"##,
    ##"{"id":"0676fb7f-8ed1-4d20-a7a6-4b8cba7d9b4b","from":"server@limeprotocol.org/default","state":"negotiating","encryptionOptions":["none","tls"],"compressionOptions":["none"]}"##,
    ##"{"id":"0676fb7f-8ed1-4d20-a7a6-4b8cba7d9b4b","state":"negotiating","encryption":"tls","compression":"none"}"##,
    ##"{"id":"0676fb7f-8ed1-4d20-a7a6-4b8cba7d9b4b","from":"server@limeprotocol.org/default","state":"authenticating","schemeOptions":["plain","transport"]}"##,
    ##"{"id":"0676fb7f-8ed1-4d20-a7a6-4b8cba7d9b4b","from":"golang@limeprotocol.org/default","state":"authenticating","scheme":"plain","authentication":{"password":"Zm9vYmFy"}}"##,
    ##"{"id":"0676fb7f-8ed1-4d20-a7a6-4b8cba7d9b4b","from":"server@limeprotocol.org/default","to":"golang@limeprotocol.org/default","state":"established"}"##,
    ##"{"id":"0676fb7f-8ed1-4d20-a7a6-4b8cba7d9b4b","state":"finishing"}"##,
    ##"{"id":"0676fb7f-8ed1-4d20-a7a6-4b8cba7d9b4b","from":"server@limeprotocol.org/default","state":"finished"}"##,
    ##"{"id":"0676fb7f-8ed1-4d20-a7a6-4b8cba7d9b4b","from":"server@limeprotocol.org/default","state":"failed","reason":{"code":13,"description":"The authentication failed"}}"##,
]

@Suite struct LIMECodecTests {
    /// Messages and commands are written by a direct writer; it must agree byte for byte with the
    /// general one (the JSON object of `jsonObject`), for every specification example and for
    /// envelopes that use every member and need escaping.
    @Test func theDirectWriterAgreesWithTheGeneralOne() throws {
        var envelopes = try specificationExamples.map { try LIMECodec.decode(Array($0.utf8)) }
        let header = EnvelopeHeader(
            id: "a\"b", from: Node("x@relay.local/1"), to: Node("y@relay.local"), pp: Node("z@relay.local/π"),
            metadata: ["#b": "line\nbreak", "a": "tab\there", "ü": "\u{1}"])
        envelopes.append(.message(LIMEMessage(header: header, type: "application/json", content: ["k": [1, "two", nil, true]])))
        envelopes.append(
            .command(
                LIMECommand(
                    header: header, method: .set, uri: "/topics/a.b", type: .textPlain, resource: "text \"quoted\"",
                    status: .failure, reason: Reason(code: 42, description: "why \\"))))
        var checked = 0
        for envelope in envelopes {
            switch envelope {
            case .message, .command:
                #expect(LIMECodec.encode(envelope) == JSONWriter.bytes(.object(LIMECodec.jsonObject(envelope))))
                checked += 1
            default: continue
            }
        }
        #expect(checked >= 10)
    }

    @Test(arguments: specificationExamples)
    func roundTripsSpecificationExample(_ text: String) throws {
        let envelope = try LIMECodec.decode(Array(text.utf8))
        let encoded = LIMECodec.encode(envelope)
        #expect(try LIMECodec.decode(encoded) == envelope)
        // Same JSON as the original, member order aside.
        #expect(try JSONParser.parse(encoded) == JSONParser.parse(text))
    }

    @Test func classifiesEnvelopesByTheirKeys() throws {
        #expect(try LIMECodec.decode(Array(specificationExamples[0].utf8)).kind == "message")
        #expect(try LIMECodec.decode(Array(#"{"event":"received","id":"1"}"#.utf8)).kind == "notification")
        #expect(try LIMECodec.decode(Array(#"{"method":"get","uri":"/x"}"#.utf8)).kind == "command")
        #expect(try LIMECodec.decode(Array(#"{"state":"new"}"#.utf8)).kind == "session")
    }

    @Test func omitsNullFields() throws {
        let envelope = try LIMECodec.decode(
            Array(#"{"id":null,"from":null,"to":"a@b.c","type":"text/plain","content":"x","metadata":null}"#.utf8))
        #expect(String(decoding: LIMECodec.encode(envelope), as: UTF8.self) == #"{"to":"a@b.c","type":"text/plain","content":"x"}"#)
    }

    @Test func writesMetadataValuesAsStrings() throws {
        let envelope = try LIMECodec.decode(Array(#"{"metadata":{"n":42,"b":true,"s":"x"},"type":"text/plain","content":"x"}"#.utf8))
        #expect(envelope.header.metadata == ["n": "42", "b": "true", "s": "x"])
        let written = try JSONParser.parse(LIMECodec.encode(envelope))
        #expect(written["metadata"] == ["b": "true", "n": "42", "s": "x"])
    }

    @Test(arguments: [
        #"{"n":42,"b":false,"s":"x","o":{"k":[1,null]},"a":[true],"z":null}"#,
        #"{"d":"first","d":"second","e":"gone","e":null}"#,
        #"{}"#, "null", #""text""#, "[1]", "7",
    ])
    func readsMetadataFromBytesAsFromAValue(_ metadata: String) throws {
        // The reader takes metadata straight into strings; reading the envelope as a JSON value
        // first must give the same header, or the same error.
        let text = #"{"type":"text/plain","content":"x","metadata":"# + metadata + "}"
        let fromBytes = Result { () throws(Reason) in try LIMECodec.decode(Array(text.utf8)) }
        let fromValue = Result { () throws(Reason) in try LIMECodec.decode(try! JSONParser.parse(Array(text.utf8))) }
        #expect(fromBytes == fromValue)
        if metadata.hasPrefix("{\"n\"") {
            #expect(try fromBytes.get().header.metadata == ["n": "42", "b": "false", "s": "x", "o": #"{"k":[1,null]}"#, "a": "[true]"])
        }
        if metadata.hasPrefix("{\"d\"") { #expect(try fromBytes.get().header.metadata == ["d": "second"]) }
        if ["null", "{}"].contains(metadata) { #expect(try fromBytes.get().header.metadata == (metadata == "{}" ? [:] : nil)) }
        if ["[1]", "7", #""text""#].contains(metadata) {
            #expect(throws: Reason.self) { try fromBytes.get() }
        }
    }

    @Test func readsReasonLeniently() throws {
        let asString = try LIMECodec.decode(Array(#"{"id":"1","event":"failed","reason":"it broke"}"#.utf8))
        guard case .notification(let notification) = asString else { Issue.record("not a notification"); return }
        #expect(notification.reason == Reason(code: 1, description: "it broke"))
        let asObject = try LIMECodec.decode(Array(#"{"id":"1","event":"failed","reason":{"code":"42","description":"gone"}}"#.utf8))
        guard case .notification(let other) = asObject else { Issue.record("not a notification"); return }
        #expect(other.reason == Reason(code: 42, description: "gone"))
    }

    @Test func treatsContentAsJSONOnlyForJSONMediaTypes() throws {
        #expect(MediaType("application/json").isJSON)
        #expect(MediaType("application/vnd.lime.ping+json").isJSON)
        #expect(MediaType("Application/JSON; charset=utf-8").isJSON)
        #expect(!MediaType("text/plain").isJSON)
        #expect(!MediaType("application/jsonx").isJSON)
        let json = try LIMECodec.decode(Array(#"{"type":"application/json","content":{"a":1}}"#.utf8))
        guard case .message(let message) = json else { Issue.record("not a message"); return }
        #expect(message.content == ["a": 1])
        let text = LIMEMessage(to: Node("a@b.c"), text: #"{"not":"json"}"#)
        #expect(String(decoding: LIMECodec.encode(.message(text)), as: UTF8.self).contains(#""content":"{\"not\":\"json\"}""#))
    }

    @Test(arguments: [
        (#"[1,2]"#, ReasonCode.validationError),
        (#"{"id":"1"}"#, ReasonCode.validationError),
        (#"{"method":"fetch","uri":"/x"}"#, ReasonCode.validationInvalidMethod),
        (#"{"method":"get","status":"maybe"}"#, ReasonCode.validationInvalidStatus),
        (#"{"event":"exploded","id":"1"}"#, ReasonCode.validationError),
        (#"{"state":"dancing"}"#, ReasonCode.validationError),
        (#"{"to":"a@b@c","type":"text/plain","content":"x"}"#, ReasonCode.validationInvalidIdentity),
        (#"{"to":42,"type":"text/plain","content":"x"}"#, ReasonCode.validationError),
        (#"{"state":"new""#, ReasonCode.validationError),
    ])
    func refusesInvalidEnvelopesWithAReason(_ text: String, _ code: Int) {
        #expect(throws: Reason.self) { try LIMECodec.decode(Array(text.utf8)) }
        do {
            _ = try LIMECodec.decode(Array(text.utf8))
        } catch {
            #expect(error.code == code)
            #expect(!error.description.isEmpty)
        }
    }
}

@Suite struct NodeTests {
    @Test func parsesTheThreeParts() throws {
        let node = try #require(Node("skyler@breakingbad.com/bedroom"))
        #expect(node.name == "skyler")
        #expect(node.domain == "breakingbad.com")
        #expect(node.instance == "bedroom")
        #expect(Node("breakingbad.com")?.name == nil)
        #expect(Node("a@b/c/d")?.instance == "c/d")
        #expect(Node("postmaster@breakingbad.com/#server1")?.instance == "#server1")
    }

    @Test(arguments: ["", "@b", "a@", "a@b/", "a:b@c", "a@b@c", "a<b@c", "a@/x"])
    func refusesInvalidNodes(_ text: String) {
        #expect(Node(text) == nil)
    }

    @Test func comparesCaseInsensitively() {
        #expect(Node("Skyler@BreakingBad.com/Bedroom") == Node("skyler@breakingbad.com/bedroom"))
        #expect(Set([Node("A@b.c")!, Node("a@B.C")!]).count == 1)
        #expect(Node("a@b.c/x") != Node("a@b.c/y"))
        #expect(Node("Skyler@BreakingBad.com/Bedroom")?.description == "Skyler@BreakingBad.com/Bedroom")
    }
}
