/// A subscription's delivery read where it lies in the bytes of its envelope, so the client can
/// hand the subscriber its publication without decoding the envelope into an `Envelope` (whose
/// metadata dictionary it would take apart again).
public struct LIMEDeliveryInPlace: Sendable, Equatable {
    /// The subscription it is for (the hub's `#subscription` token).
    public var subscription: String
    /// The subject it was published on (`#subject`).
    public var subject: String
    /// The publisher (`from`), if named.
    public var publisher: Node?
    /// The `type` given, or inferred as the decoder infers it (a string is `text/plain`, anything
    /// else `application/json`).
    public var type: MediaType
    /// Where the content's JSON text lies in the envelope's bytes (offsets from their start).
    public var content: Range<Int>
}

/// Recognises the deliveries the hub writes for a publication without the publisher's metadata
/// (`LIMECodec.encodeDelivery`) in envelope bytes (`LIMEDeliveryInPlace`), for the client's short
/// way. Only that shape is recognised: the members `metadata` (exactly `#subject` and
/// `#subscription`), `content`, and optionally `from`, `to` and `type`, each once, without escapes
/// in the strings read. Everything else (an `id`, metadata the publisher gave, a reply subject, a
/// hub's drop report, invalid JSON or nodes) is left to `LIMECodec.decode`, which reads it, or
/// reports the error, as usual.
///
/// Keeps the last token, subject, type and nodes it read: a subscription's deliveries mostly
/// repeat them, and reusing them makes no string.
public struct LIMEDeliveryScanner {
    private var lastToken = ""
    private var lastSubject = ""
    private var lastType: MediaType = .textPlain
    /// The last `from` and `to` read and found to be nodes; nil before the first (an empty
    /// string is no node, so it must not pass for one already checked).
    private var lastFrom: String?
    private var lastPublisher: Node?
    private var lastTo: String?

    public init() {}

    /// The delivery in `bytes`, or nil when they are not a delivery of the plain shape.
    public mutating func scan(_ bytes: UnsafeBufferPointer<UInt8>, maximumDepth: Int = JSONParser.defaultMaximumDepth)
        -> LIMEDeliveryInPlace?
    {
        guard let found: Found = JSONParser.walkEnvelope(bytes, maximumDepth: maximumDepth), let token = found.token,
            let subject = found.subject, let content = found.content
        else { return nil }
        Self.reuse(&lastToken, bytes[token])
        Self.reuse(&lastSubject, bytes[subject])
        var publisher: Node?
        if let from = found.from {
            if lastFrom?.hasUTF8(bytes[from]) != true {
                let text = String(decoding: bytes[from], as: UTF8.self)
                // Not a node: the decoder refuses the envelope, and says why.
                guard let node = Node(text) else { return nil }
                lastFrom = text
                lastPublisher = node
            }
            publisher = lastPublisher
        }
        if let to = found.to, lastTo?.hasUTF8(bytes[to]) != true {
            let text = String(decoding: bytes[to], as: UTF8.self)
            guard Node(text) != nil else { return nil }
            lastTo = text
        }
        let type: MediaType
        if let range = found.type {
            if !lastType.rawValue.hasUTF8(bytes[range]) { lastType = MediaType(String(decoding: bytes[range], as: UTF8.self)) }
            type = lastType
        } else {
            type = bytes[content.lowerBound] == UInt8(ascii: "\"") ? .textPlain : .applicationJSON
        }
        return LIMEDeliveryInPlace(subscription: lastToken, subject: lastSubject, publisher: publisher, type: type, content: content)
    }

    /// Makes `string` the text of `bytes`, unless it already is.
    private static func reuse(_ string: inout String, _ bytes: Slice<UnsafeBufferPointer<UInt8>>) {
        if !string.hasUTF8(bytes) { string = String(decoding: bytes, as: UTF8.self) }
    }

    /// What the scan found so far; `read` throws to stop at the first member outside the shape.
    private struct Found: LIMEScannedMembers {
        var hasMetadata = false
        var token: Range<Int>?
        var subject: Range<Int>?
        var from: Range<Int>?
        var to: Range<Int>?
        var type: Range<Int>?
        var content: Range<Int>?

        mutating func read(_ name: JSONParser.MemberName, _ parser: inout JSONParser) throws(JSONParseError) {
            if name.is("content"), content == nil {
                let start = parser.index
                try parser.skipValue(depth: 1)
                content = start..<parser.index
            } else if name.is("metadata"), !hasMetadata {
                hasMetadata = true
                guard parser.index < parser.bytes.count, parser.bytes[parser.index] == UInt8(ascii: "{") else { throw JSONParser.notPlain }
                try parser.walkObject(depth: 2) { (parser: inout JSONParser, name: JSONParser.MemberName) throws(JSONParseError) in
                    if name.is("#subscription"), token == nil {
                        token = try parser.plainString()
                    } else if name.is("#subject"), subject == nil {
                        subject = try parser.plainString()
                    } else {
                        throw JSONParser.notPlain
                    }
                }
            } else if name.is("from"), from == nil {
                from = try parser.plainString()
            } else if name.is("to"), to == nil {
                to = try parser.plainString()
            } else if name.is("type"), type == nil {
                type = try parser.plainString()
            } else {
                throw JSONParser.notPlain
            }
        }
    }
}
