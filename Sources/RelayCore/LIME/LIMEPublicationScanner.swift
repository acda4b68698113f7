/// A fire-and-forget publication (`observe /topics/SUBJECT`) read where it lies in the bytes of its
/// envelope, so the hub can forward its resource as it arrived instead of decoding the envelope
/// into an `Envelope` and encoding a delivery from that (`HubCore.forward`).
public struct LIMEPublishInPlace: Sendable, Equatable {
    /// The command's `id`, if it had one (a one-way command gets no response; kept for the usual path).
    public var id: String?
    public var subject: String
    /// The `type` given, if any.
    public var type: MediaType?
    /// Where the resource's JSON text lies in the envelope's bytes (offsets from their start).
    public var resource: Range<Int>
    /// Whether the resource is a JSON string.
    public var resourceIsString: Bool

    public init(id: String? = nil, subject: String, type: MediaType?, resource: Range<Int>, resourceIsString: Bool) {
        self.id = id
        self.subject = subject
        self.type = type
        self.resource = resource
        self.resourceIsString = resourceIsString
    }

    /// The type subscribers receive: the one given, or inferred as the hub infers it for any
    /// publication (a string is `text/plain`, anything else `application/json`).
    public var deliveredType: MediaType { type ?? (resourceIsString ? .textPlain : .applicationJSON) }

    /// The command `LIMECodec.decode` reads from the same bytes, with `from` set to `node` as the
    /// session machine sets it: what the hub publishes the usual way when it does not forward.
    public func command(from node: Node?, envelope: UnsafeRawBufferPointer) -> LIMECommand {
        LIMECommand(
            header: EnvelopeHeader(id: id, from: node), method: .observe, uri: "/topics/" + subject, type: type,
            resourceBody: JSONContent(validatedText: Array(envelope[resource])))
    }
}

/// Recognises fire-and-forget publications in envelope bytes (`LIMEPublishInPlace`), for the hub's
/// short way. Only the plain shape is recognised: the members `method` (exactly `observe`), `uri`
/// (`/topics/SUBJECT`, a valid subject, nothing to decode), `resource` (not null) and optionally
/// `id` and `type`, each once, without escapes in the strings read. Everything else (metadata,
/// `from`, `to`, a binary type whose content is base64, invalid JSON) is left to `LIMECodec.decode`,
/// which reads it, or reports the error, as usual.
///
/// Keeps the last subject and type it read: a publisher's are mostly the same, and reusing them
/// makes no string.
public struct LIMEPublicationScanner {
    /// The last subject read and found valid; nil before the first (an empty subject is not
    /// valid, so it must not pass for one already checked).
    private var lastSubject: String?
    private var lastType: MediaType = .textPlain

    public init() {}

    /// The publication in `bytes`, or nil when they are not a plain fire-and-forget publication.
    public mutating func scan(_ bytes: UnsafeBufferPointer<UInt8>, maximumDepth: Int = JSONParser.defaultMaximumDepth)
        -> LIMEPublishInPlace?
    {
        guard let found: Found = JSONParser.walkEnvelope(bytes, maximumDepth: maximumDepth), found.isObserve, let uri = found.uri,
            let resource = found.resource
        else { return nil }
        let prefix: StaticString = "/topics/"
        guard uri.count > prefix.utf8CodeUnitCount,
            bytes[uri].starts(with: UnsafeBufferPointer(start: prefix.utf8Start, count: prefix.utf8CodeUnitCount))
        else { return nil }
        let subjectBytes = UnsafeBufferPointer(rebasing: bytes[uri.lowerBound + prefix.utf8CodeUnitCount..<uri.upperBound])
        guard !subjectBytes.contains(where: { $0 == UInt8(ascii: "/") || $0 == UInt8(ascii: "?") || $0 == UInt8(ascii: "%") }) else {
            return nil
        }
        if lastSubject?.hasUTF8(subjectBytes) != true {
            let subject = String(decoding: subjectBytes, as: UTF8.self)
            guard Subject.publishError(subject) == nil else { return nil }
            lastSubject = subject
        }
        var type: MediaType?
        if let range = found.type {
            let typeBytes = UnsafeBufferPointer(rebasing: bytes[range])
            if !lastType.rawValue.hasUTF8(typeBytes) { lastType = MediaType(String(decoding: typeBytes, as: UTF8.self)) }
            type = lastType
        }
        let resourceIsString = bytes[resource.lowerBound] == UInt8(ascii: "\"")
        // A string of another type than text or JSON is base64 (binary content): the hub decodes it.
        if let type, resourceIsString, !type.isJSON, !type.rawValue.hasPrefix("text/") { return nil }
        return LIMEPublishInPlace(id: found.id, subject: lastSubject!, type: type, resource: resource, resourceIsString: resourceIsString)
    }

    /// What the scan found so far; `read` throws to stop at the first member outside the plain shape.
    private struct Found: LIMEScannedMembers {
        var isObserve = false
        var hasMethod = false
        var hasID = false
        var id: String?
        var uri: Range<Int>?
        var type: Range<Int>?
        var resource: Range<Int>?

        mutating func read(_ name: JSONParser.MemberName, _ parser: inout JSONParser) throws(JSONParseError) {
            if name.is("method"), !hasMethod {
                hasMethod = true
                let method = try parser.plainString()
                isObserve = "observe".hasUTF8(parser.bytes[method])
            } else if name.is("uri"), uri == nil {
                uri = try parser.plainString()
            } else if name.is("resource"), resource == nil {
                guard parser.index < parser.bytes.count, parser.bytes[parser.index] != UInt8(ascii: "n") else { throw JSONParser.notPlain }
                let start = parser.index
                try parser.skipValue(depth: 1)
                resource = start..<parser.index
            } else if name.is("type"), type == nil {
                type = try parser.plainString()
            } else if name.is("id"), !hasID {
                hasID = true
                // As the header reads it: a string, a number's literal, or null for none.
                switch try parser.parseValue(depth: 1) {
                case .string(let text): id = text
                case .number(let number): id = number.literal
                case .null: id = nil
                default: throw JSONParser.notPlain
                }
            } else {
                throw JSONParser.notPlain
            }
            guard isObserve || !hasMethod else { throw JSONParser.notPlain }
        }
    }
}

/// The members an in-place scanner reads from an envelope, one at a time (`read` throws to stop at
/// the first outside the shape it reads).
protocol LIMEScannedMembers {
    init()
    mutating func read(_ name: JSONParser.MemberName, _ parser: inout JSONParser) throws(JSONParseError)
}

/// A scanner of one envelope shape, read where it lies (the hub's publications, the client's
/// deliveries); `LIMEEnvelopeReader` offers each envelope to one before decoding it.
public protocol LIMEInPlaceScanner {
    associatedtype Recognised
    mutating func scan(_ bytes: UnsafeBufferPointer<UInt8>, maximumDepth: Int) -> Recognised?
}

extension LIMEPublicationScanner: LIMEInPlaceScanner {}
extension LIMEDeliveryScanner: LIMEInPlaceScanner {}

extension JSONParser {
    /// Walks `bytes` as one JSON object (and nothing else), each member read by `Members.read`;
    /// nil when they are not, or when `read` throws: not the shape a scanner reads, or not valid
    /// JSON, which the usual path then reads or reports.
    static func walkEnvelope<Members: LIMEScannedMembers>(_ bytes: UnsafeBufferPointer<UInt8>, maximumDepth: Int) -> Members? {
        var parser = JSONParser(bytes: bytes, maximumDepth: maximumDepth)
        parser.skipWhitespace()
        guard parser.index < bytes.count, bytes[parser.index] == UInt8(ascii: "{") else { return nil }
        var members = Members()
        do {
            try parser.walkObject(depth: 1) { (parser: inout JSONParser, name: MemberName) throws(JSONParseError) in
                try members.read(name, &parser)
            }
            parser.skipWhitespace()
        } catch {
            return nil
        }
        return parser.index == bytes.count ? members : nil
    }

    /// Thrown by the in-place scanners to stop at the first thing outside the shape they read.
    static let notPlain = JSONParseError(message: "not the plain shape", offset: 0)

    /// At a string member without escapes: where its text lies (checked as a string is).
    mutating func plainString() throws(JSONParseError) -> Range<Int> {
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw Self.notPlain }
        let start = index + 1
        try skipString()
        let text = start..<index - 1
        guard !bytes[text].contains(UInt8(ascii: "\\")) else { throw Self.notPlain }
        return text
    }
}
