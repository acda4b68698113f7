/// A message published on a subject, in the core's protocol-neutral form.
///
/// LIME publications carry a media type and a JSON or text content; NATS publications carry bytes
/// and headers. Each dialect renders it for its subscribers: LIME as a message envelope, NATS as
/// MSG/HMSG.
public struct PublishedMessage: Sendable, Equatable {
    public enum Body: Sendable, Equatable {
        case json(JSONValue)
        case text(String)
        case bytes([UInt8])
        /// A LIME publication's content as it arrived: a JSON value for JSON types, a JSON string
        /// for text. LIME subscribers get it as it came; NATS subscribers get the value's bytes.
        case content(JSONContent)

        /// Content as it arrived equals the JSON value or text it stands for.
        public static func == (lhs: Body, rhs: Body) -> Bool {
            switch (lhs.resolved, rhs.resolved) {
            case (.json(let left), .json(let right)): left == right
            case (.text(let left), .text(let right)): left == right
            case (.bytes(let left), .bytes(let right)): left == right
            default: false
            }
        }

        /// `.content` as the `.text` or `.json` it stands for; other cases as they are.
        var resolved: Body {
            guard case .content(let content) = self else { return self }
            return content.stringValue.map { .text($0) } ?? .json(content.value)
        }
    }

    /// The fields live in one shared box, copied only when a copy is changed: a publication is
    /// handed through parser actions, core outputs and per-recipient rendering, and copying seven
    /// reference-counted fields each time was a fifth of the hub's time on the NATS path.
    private final class Storage: @unchecked Sendable {
        var subject: String
        var replyTo: String?
        var publisher: Node?
        var type: MediaType?
        var body: Body
        var metadata: [String: String]
        var status: Int?

        init(
            subject: String, replyTo: String?, publisher: Node?, type: MediaType?, body: Body, metadata: [String: String],
            status: Int?
        ) {
            self.subject = subject
            self.replyTo = replyTo
            self.publisher = publisher
            self.type = type
            self.body = body
            self.metadata = metadata
            self.status = status
        }

        func copy() -> Storage {
            Storage(subject: subject, replyTo: replyTo, publisher: publisher, type: type, body: body, metadata: metadata, status: status)
        }
    }

    private var storage: Storage

    private mutating func unique() -> Storage {
        if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
        return storage
    }

    public var subject: String {
        get { storage.subject }
        set { unique().subject = newValue }
    }
    /// Where responses go (a NATS request's reply subject).
    public var replyTo: String? {
        get { storage.replyTo }
        set { unique().replyTo = newValue }
    }
    /// The publisher's node.
    public var publisher: Node? {
        get { storage.publisher }
        set { unique().publisher = newValue }
    }
    /// The media type (LIME `type`, NATS `Content-Type` header), when known.
    public var type: MediaType? {
        get { storage.type }
        set { unique().type = newValue }
    }
    public var body: Body {
        get { storage.body }
        set { unique().body = newValue }
    }
    /// LIME metadata, or NATS headers (repeated headers joined with ", ").
    public var metadata: [String: String] {
        get { storage.metadata }
        set { unique().metadata = newValue }
    }
    /// A NATS status (503 for no responders).
    public var status: Int? {
        get { storage.status }
        set { unique().status = newValue }
    }

    public init(
        subject: String, replyTo: String? = nil, publisher: Node? = nil, type: MediaType? = nil, body: Body,
        metadata: [String: String] = [:], status: Int? = nil
    ) {
        storage = Storage(
            subject: subject, replyTo: replyTo, publisher: publisher, type: type, body: body, metadata: metadata, status: status)
    }

    /// Whether both are the same publication (copies of one value, not just equal ones): cheap.
    package func isSame(as other: PublishedMessage) -> Bool { storage === other.storage }

    public static func == (lhs: PublishedMessage, rhs: PublishedMessage) -> Bool {
        lhs.storage === rhs.storage
            || (lhs.subject == rhs.subject && lhs.replyTo == rhs.replyTo && lhs.publisher == rhs.publisher && lhs.type == rhs.type
                && lhs.body == rhs.body && lhs.metadata == rhs.metadata && lhs.status == rhs.status)
    }

    /// The payload bytes, as NATS sends them.
    public var payloadBytes: [UInt8] {
        switch body {
        case .json(let value): JSONWriter.bytes(value)
        case .text(let text): Array(text.utf8)
        case .bytes(let bytes): bytes
        case .content(let content): content.stringValue.map { Array($0.utf8) } ?? content.jsonBytes
        }
    }

    /// The body as a stored queue keeps it: JSON, text or bytes.
    public var storedBody: Body { body.resolved }

    /// The content as a LIME message carries it: a JSON value for JSON types, text otherwise,
    /// base64 for bytes that are not UTF-8.
    public var limeContent: (MediaType, JSONContent) {
        switch body {
        case .json(let value): return (type ?? .applicationJSON, JSONContent(value))
        case .text(let text): return (type ?? .textPlain, JSONContent(.string(text)))
        case .content(let content): return (type ?? (content.isString ? .textPlain : .applicationJSON), content)
        case .bytes(let bytes):
            if let type, type.isJSON, let value = try? JSONParser.parse(bytes) { return (type, JSONContent(value)) }
            if let text = String(validating: bytes, as: UTF8.self) { return (type ?? .textPlain, JSONContent(.string(text))) }
            return (type ?? "application/octet-stream", JSONContent(.string(Base64.encode(bytes))))
        }
    }

    /// The LIME message a subscriber of `node` receives through its subscription `token`.
    public func limeEnvelope(token: String, to node: Node?) -> Envelope {
        var metadata = self.metadata
        metadata["#subject"] = subject
        metadata["#subscription"] = token
        if let replyTo { metadata["#reply"] = replyTo }
        if let status { metadata["#status"] = String(status) }
        let (type, content) = limeContent
        // A durable queue's delivery carries an id: the consumer acknowledges it with a notification.
        return .message(
            LIMEMessage(
                header: EnvelopeHeader(id: metadata["#delivery"], from: publisher, to: node, metadata: metadata), type: type,
                body: content))
    }

    /// The NATS operation a subscriber with subscription `sid` receives. Headers are sent when the
    /// message has metadata, a type or a status and the client enabled headers.
    public func natsOperation(sid: String, headersEnabled: Bool) -> NATSOperation {
        var headers: NATSHeaders?
        if headersEnabled, mayHaveNATSHeaders {
            var block = NATSHeaders(status: status)
            if let type, !isDefaultNATSType { block.append("Content-Type", type.rawValue) }
            for key in metadata.keys.sorted() where !key.hasPrefix("#") { block.append(key, metadata[key]!) }
            if block.status != nil || !block.fields.isEmpty { headers = block }
        }
        return .message(subject: subject, sid: sid, replyTo: replyTo, headers: headers, payload: payloadBytes)
    }

    /// Whether a NATS subscriber with headers enabled may get an HMSG (a status, a type or metadata).
    var mayHaveNATSHeaders: Bool { status != nil || type != nil || !metadata.isEmpty }

    /// Text without a declared type needs no Content-Type on the NATS side.
    private var isDefaultNATSType: Bool {
        switch body {
        case .text: return type == .textPlain
        case .content(let content): return type == .textPlain && content.isString
        case .json, .bytes: return false
        }
    }
}

/// Standard base64, without Foundation (RelayCore depends on nothing).
public enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var output: [UInt8] = []
        output.reserveCapacity((bytes.count + 2) / 3 * 4)
        var index = 0
        while index < bytes.count {
            let b0 = bytes[index]
            let b1 = index + 1 < bytes.count ? bytes[index + 1] : 0
            let b2 = index + 2 < bytes.count ? bytes[index + 2] : 0
            output.append(alphabet[Int(b0 >> 2)])
            output.append(alphabet[Int((b0 & 0x03) << 4 | b1 >> 4)])
            output.append(index + 1 < bytes.count ? alphabet[Int((b1 & 0x0F) << 2 | b2 >> 6)] : UInt8(ascii: "="))
            output.append(index + 2 < bytes.count ? alphabet[Int(b2 & 0x3F)] : UInt8(ascii: "="))
            index += 3
        }
        return String(decoding: output, as: UTF8.self)
    }

    public static func decode(_ text: String) -> [UInt8]? {
        var values: [UInt8] = []
        for byte in text.utf8 where byte != UInt8(ascii: "=") && byte != 0x0A && byte != 0x0D {
            guard let value = alphabet.firstIndex(of: byte) else { return nil }
            values.append(UInt8(value))
        }
        var output: [UInt8] = []
        var index = 0
        while index + 1 < values.count {
            output.append(values[index] << 2 | values[index + 1] >> 4)
            if index + 2 < values.count { output.append(values[index + 1] << 4 | values[index + 2] >> 2) }
            if index + 3 < values.count { output.append(values[index + 2] << 6 | values[index + 3]) }
            index += 4
        }
        return output
    }
}
