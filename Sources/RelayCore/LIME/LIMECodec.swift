/// Converts LIME envelopes to and from their JSON form.
///
/// Writing omits null fields and writes metadata values as strings; reading is lenient where real
/// clients differ from the specification (a `reason` sent as a plain string, metadata numbers,
/// a numeric `id`, an `authentication` that repeats the `scheme`).
public enum LIMECodec {
    /// Decodes one envelope from its JSON bytes.
    ///
    /// The envelope's members are read as values, except `content` and `resource`: those are
    /// checked and kept as the JSON text they arrived in (`JSONContent`), so the hub forwards a
    /// publication's payload without building it, and writes it out again as it came.
    public static func decode(_ bytes: some Collection<UInt8>, maximumDepth: Int = JSONParser.defaultMaximumDepth) throws(Reason)
        -> Envelope
    {
        var nodes = NodeCache(capacity: 0)
        return try decode(bytes, maximumDepth: maximumDepth, nodes: &nodes)
    }

    /// The nodes last read by a connection's decoder: the envelopes of one connection name the same
    /// few nodes (the peer, the hub, a publisher) again and again, and parsing one costs several
    /// strings.
    package struct NodeCache {
        private var entries: [(text: String, node: Node)] = []
        private var next = 0
        private let capacity: Int

        package init(capacity: Int = 8) { self.capacity = capacity }

        mutating func node(_ text: String) -> Node? {
            for entry in entries where entry.text == text { return entry.node }
            guard let node = Node(text) else { return nil }
            guard capacity > 0 else { return node }
            if entries.count < capacity {
                entries.append((text, node))
            } else {
                entries[next] = (text, node)
                next = (next + 1) % capacity
            }
            return node
        }
    }

    /// Decodes one envelope, looking nodes up in (and adding them to) `nodes`.
    package static func decode(_ bytes: some Collection<UInt8>, maximumDepth: Int, nodes: inout NodeCache) throws(Reason) -> Envelope {
        let scanned: Result<Members, JSONParseError>? = bytes.withContiguousStorageIfAvailable { buffer in
            scan(buffer, maximumDepth: maximumDepth)
        }
        let members: Members
        do {
            members = try (scanned ?? Array(bytes).withUnsafeBufferPointer { scan($0, maximumDepth: maximumDepth) }).get()
        } catch {
            throw Reason(code: ReasonCode.validationError, description: "Malformed JSON: \(error)")
        }
        return try decode(members, nodes: &nodes)
    }

    /// Decodes one envelope from a parsed JSON value.
    public static func decode(_ value: JSONValue) throws(Reason) -> Envelope {
        guard var object = value.objectValue else {
            throw Reason(code: ReasonCode.validationError, description: "An envelope must be a JSON object")
        }
        var members = Members()
        members.content = object["content"].map { JSONContent($0) }
        members.resource = object["resource"].map { JSONContent($0) }
        members.metadata = Members.Metadata(object["metadata"])
        object["content"] = nil
        object["resource"] = nil
        object["metadata"] = nil
        for member in object { members.set(member.key, member.value) }
        var nodes = NodeCache(capacity: 0)
        return try decode(members, nodes: &nodes)
    }

    /// An envelope's members. Those the decoder reads have their own slots, found by comparing
    /// the name's bytes: no string is made for the name and no object is searched (an object's
    /// lookups and string comparisons were a good part of decoding). `content` and `resource`
    /// are kept as text.
    struct Members {
        var id: JSONValue?
        var from: JSONValue?
        var to: JSONValue?
        var pp: JSONValue?
        var type: JSONValue?
        var method: JSONValue?
        var uri: JSONValue?
        var status: JSONValue?
        var reason: JSONValue?
        var event: JSONValue?
        var state: JSONValue?
        /// Every other member (a session's negotiation, members LIME does not define).
        var others = JSONObject()
        var content: JSONContent?
        var resource: JSONContent?
        /// Set when the document is valid JSON but not an object.
        var nonObject: JSONValue?
        /// `metadata`, read straight into strings: every delivery has some, and building it as a
        /// JSON object first, then converting it, was a good part of decoding one.
        var metadata = Metadata.absent

        /// Puts a member in its slot; a member given twice keeps its last value.
        mutating func set(_ name: JSONParser.MemberName, _ value: JSONValue) {
            if name.is("type") {
                type = value
            } else if name.is("method") {
                method = value
            } else if name.is("uri") {
                uri = value
            } else if name.is("from") {
                from = value
            } else if name.is("to") {
                to = value
            } else if name.is("id") {
                id = value
            } else if name.is("status") {
                status = value
            } else if name.is("reason") {
                reason = value
            } else if name.is("event") {
                event = value
            } else if name.is("state") {
                state = value
            } else if name.is("pp") {
                pp = value
            } else {
                others[name.string] = value
            }
        }

        /// `set` for a name given as a string (an envelope built as a JSON value).
        mutating func set(_ name: String, _ value: JSONValue) {
            var name = name
            name.withUTF8 { set(JSONParser.MemberName(bytes: $0), value) }
        }

        enum Metadata {
            /// Absent or null.
            case absent
            case strings([String: String])
            /// Not an object: an error once the envelope is decoded.
            case invalid

            init(_ value: JSONValue?) {
                switch value {
                case nil, .null?: self = .absent
                case .object(let object)?:
                    var strings: [String: String] = [:]
                    for member in object { if let text = Metadata.string(member.value) { strings[member.key] = text } }
                    self = .strings(strings)
                default: self = .invalid
                }
            }

            /// A metadata value as text: strings as they are, other values as their JSON; null drops the key.
            static func string(_ value: JSONValue) -> String? {
                switch value {
                case .string(let text): text
                case .number(let number): number.literal
                case .bool(let flag): flag ? "true" : "false"
                case .null: nil
                default: JSONWriter.string(value)
                }
            }
        }

    }

    /// Reads the top-level object of an envelope. Every member is parsed into its slot (`Members`)
    /// except `content` and `resource`, which are only checked (`JSONParser.skipValue`: the same
    /// errors as parsing) and copied, and `metadata`, read into strings. A member given twice
    /// counts once, with its last value, as in `JSONObject`.
    static func scan(_ buffer: UnsafeBufferPointer<UInt8>, maximumDepth: Int) -> Result<Members, JSONParseError> {
        var parser = JSONParser(bytes: buffer, maximumDepth: maximumDepth)
        var members = Members()
        do throws(JSONParseError) {
            parser.skipWhitespace()
            guard parser.index < buffer.count, buffer[parser.index] == UInt8(ascii: "{") else {
                // Not an object: parsed as any value, so the error (or the refusal) is the usual one.
                members.nonObject = try JSONParser.parse(buffer, maximumDepth: maximumDepth)
                return .success(members)
            }
            try parser.walkObject(depth: 1) { (parser: inout JSONParser, name: JSONParser.MemberName) throws(JSONParseError) in
                let isContent = name.is("content")
                if isContent || name.is("resource") {
                    let start = parser.index
                    try parser.skipValue(depth: 1)
                    let text = JSONContent(validatedText: Array(UnsafeBufferPointer(rebasing: buffer[start..<parser.index])))
                    if isContent { members.content = text } else { members.resource = text }
                } else if name.is("metadata") {
                    guard parser.index < buffer.count, buffer[parser.index] == UInt8(ascii: "{") else {
                        members.metadata = Members.Metadata(try parser.parseValue(depth: 1))
                        return
                    }
                    var strings: [String: String] = [:]
                    try parser.walkObject(depth: 2) { (parser: inout JSONParser, name: JSONParser.MemberName) throws(JSONParseError) in
                        // Parsed as `parseValue` would parse the object's members (same depth, same errors).
                        let value = try parser.parseValue(depth: 2)
                        strings[name.string] = Members.Metadata.string(value)
                    }
                    members.metadata = .strings(strings)
                } else {
                    members.set(name, try parser.parseValue(depth: 1))
                }
            }
            parser.skipWhitespace()
            guard parser.index == buffer.count else { throw parser.error("unexpected data after the JSON value") }
            return .success(members)
        } catch {
            return .failure(error)
        }
    }

    private static func decode(_ members: Members, nodes: inout NodeCache) throws(Reason) -> Envelope {
        if members.nonObject != nil {
            throw Reason(code: ReasonCode.validationError, description: "An envelope must be a JSON object")
        }
        let header = try decodeHeader(members, nodes: &nodes)
        if let content = members.content {
            return .message(try decodeMessage(members, content: content, header: header))
        }
        if members.event != nil {
            return .notification(try decodeNotification(members, header: header))
        }
        if members.method != nil {
            return .command(try decodeCommand(members, header: header))
        }
        if members.state != nil {
            return .session(try decodeSession(members, header: header))
        }
        throw Reason(
            code: ReasonCode.validationError,
            description: "Unknown envelope: none of 'content', 'event', 'method' or 'state' is present")
    }

    /// Encodes an envelope as compact JSON bytes.
    public static func encode(_ envelope: Envelope) -> [UInt8] {
        switch envelope {
        case .message(let message): return encode(message)
        case .command(let command): return encode(command)
        default: return JSONWriter.bytes(.object(jsonObject(envelope)))
        }
    }

    /// Messages and commands are written straight out, members in the order `jsonObject` gives
    /// them: they are what the hub and the client write per publication and delivery, and
    /// building the object first cost most of the time.
    static func encode(_ message: LIMEMessage) -> [UInt8] {
        var writer = DirectWriter(header: message.header)
        writer.member("type", string: message.type.rawValue)
        writer.member("content", message.body)
        return writer.finish()
    }

    static func encode(_ command: LIMECommand) -> [UInt8] {
        var writer = DirectWriter(header: command.header)
        writer.member("method", string: command.method.rawValue)
        if let uri = command.uri { writer.member("uri", string: uri) }
        if let type = command.type { writer.member("type", string: type.rawValue) }
        if let resource = command.resourceBody { writer.member("resource", resource) }
        if let status = command.status { writer.member("status", string: status.rawValue) }
        if let reason = command.reason { writer.member("reason", encodeReason(reason)) }
        return writer.finish()
    }

    /// The bytes of `message.limeEnvelope(token:to:)`, what a LIME subscriber receives. When the
    /// publisher sent no metadata (the usual case) the metadata members and their order are known
    /// (`#reply` < `#status` < `#subject` < `#subscription`), so the envelope is written straight
    /// out, the content as it arrived.
    public static func encodeDelivery(_ message: PublishedMessage, token: String, to node: Node?) -> [UInt8] {
        var output: [UInt8] = []
        encodeDelivery(message, token: token, to: node, into: &output)
        return output
    }

    /// `encodeDelivery`, appended to `output` (a batch of writes for one connection).
    public static func encodeDelivery(_ message: PublishedMessage, token: String, to node: Node?, into output: inout [UInt8]) {
        guard message.metadata.isEmpty else {
            output += encode(message.limeEnvelope(token: token, to: node))
            return
        }
        let (type, content) = message.limeContent
        writeDelivery(
            replyTo: message.replyTo, status: message.status, subject: message.subject, token: token, type: type, into: &output,
            header: { $0.header(EnvelopeHeader(from: message.publisher, to: node)) }
        ) { content.write(into: &$0) }
    }

    /// A node as JSON text (a quoted string), written once per session by the hub so deliveries
    /// copy it rather than write each node's parts again.
    public static func quoted(_ node: Node) -> [UInt8] {
        var output: [UInt8] = []
        writeNode(node, into: &output)
        return output
    }

    /// A node as a JSON string of its `description`, written part by part rather than built first.
    private static func writeNode(_ node: Node, into output: inout [UInt8]) {
        output.append(UInt8(ascii: "\""))
        if let name = node.name {
            JSONWriter.writeEscaped(name, into: &output)
            output.append(UInt8(ascii: "@"))
        }
        JSONWriter.writeEscaped(node.domain, into: &output)
        if let instance = node.instance {
            output.append(UInt8(ascii: "/"))
            JSONWriter.writeEscaped(instance, into: &output)
        }
        output.append(UInt8(ascii: "\""))
    }

    /// The bytes of the delivery of a publication forwarded from where it lies
    /// (`LIMEPublishInPlace`): the same as `encodeDelivery` writes for the publication the usual
    /// path makes of it, with `content`, the resource's JSON text, copied as it arrived. The
    /// publisher and the recipient are given as `quoted` nodes.
    public static func encodeDelivery(
        _ publication: LIMEPublishInPlace, content: UnsafeRawBufferPointer, from publisher: [UInt8]?, token: String,
        to node: [UInt8]?, into output: inout [UInt8]
    ) {
        writeDelivery(
            replyTo: nil, status: nil, subject: publication.subject, token: token, type: publication.deliveredType, into: &output,
            header: { writer in
                if let publisher { writer.member("from", quoted: publisher) }
                if let node { writer.member("to", quoted: node) }
            }
        ) { $0.append(contentsOf: content) }
    }

    /// A delivery without the publisher's metadata, whose members and their order are known.
    private static func writeDelivery(
        replyTo: String?, status: Int?, subject: String, token: String, type: MediaType, into output: inout [UInt8],
        header: (inout DirectWriter) -> Void, content: (inout [UInt8]) -> Void
    ) {
        var writer = DirectWriter(appendingTo: consume output)
        header(&writer)
        writer.name("metadata")
        writer.output.append(UInt8(ascii: "{"))
        if let replyTo { writer.pair("#reply", replyTo) }
        if let status { writer.pair("#status", String(status)) }
        writer.pair("#subject", subject)
        writer.pair("#subscription", token, last: true)
        writer.output.append(UInt8(ascii: "}"))
        writer.member("type", string: type.rawValue)
        writer.name("content")
        content(&writer.output)
        output = writer.finish()
    }

    /// Writes an envelope's members one by one, starting with its header.
    private struct DirectWriter {
        var output: [UInt8] = []
        var first = true

        /// Starts an envelope with its header, at the end of `output` when given (moved in, not copied).
        init(header: EnvelopeHeader, appendingTo existing: [UInt8] = []) {
            self.init(appendingTo: existing)
            self.header(header)
        }

        /// Starts an envelope at the end of `existing` (moved in, not copied).
        init(appendingTo existing: [UInt8]) {
            output = existing
            // Grown geometrically: many envelopes may be appended to one batch.
            if output.capacity - output.count < 256 { output.reserveCapacity(Swift.max(output.count + 256, output.capacity * 2)) }
            output.append(UInt8(ascii: "{"))
        }

        mutating func header(_ header: EnvelopeHeader) {
            if let id = header.id { member("id", string: id) }
            if let from = header.from { member("from", node: from) }
            if let to = header.to { member("to", node: to) }
            if let pp = header.pp { member("pp", node: pp) }
            if let metadata = header.metadata, !metadata.isEmpty {
                name("metadata")
                output.append(UInt8(ascii: "{"))
                for (index, key) in metadata.keys.sorted().enumerated() {
                    if index > 0 { output.append(UInt8(ascii: ",")) }
                    JSONWriter.writeString(key, into: &output)
                    output.append(UInt8(ascii: ":"))
                    JSONWriter.writeString(metadata[key]!, into: &output)
                }
                output.append(UInt8(ascii: "}"))
            }
        }

        mutating func name(_ name: StaticString) {
            if !first { output.append(UInt8(ascii: ",")) }
            first = false
            output.append(UInt8(ascii: "\""))
            name.withUTF8Buffer { output.append(contentsOf: $0) }
            output.append(contentsOf: "\":".utf8)
        }

        mutating func member(_ name: StaticString, string: String) {
            self.name(name)
            JSONWriter.writeString(string, into: &output)
        }

        mutating func member(_ name: StaticString, node: Node) {
            self.name(name)
            LIMECodec.writeNode(node, into: &output)
        }

        /// A member whose value is JSON text already (a `quoted` node).
        mutating func member(_ name: StaticString, quoted: [UInt8]) {
            self.name(name)
            output.append(contentsOf: quoted)
        }

        mutating func member(_ name: StaticString, _ value: JSONValue) {
            self.name(name)
            JSONWriter.write(value, into: &output)
        }

        mutating func member(_ name: StaticString, _ content: JSONContent) {
            self.name(name)
            content.write(into: &output)
        }

        /// One string member of an object being written member by member.
        mutating func pair(_ key: StaticString, _ value: String, last: Bool = false) {
            output.append(UInt8(ascii: "\""))
            key.withUTF8Buffer { output.append(contentsOf: $0) }
            output.append(contentsOf: "\":".utf8)
            JSONWriter.writeString(value, into: &output)
            if !last { output.append(UInt8(ascii: ",")) }
        }

        mutating func finish() -> [UInt8] {
            output.append(UInt8(ascii: "}"))
            return output
        }
    }

    /// The JSON object form of an envelope.
    public static func jsonObject(_ envelope: Envelope) -> JSONObject {
        var object = JSONObject()
        let header = envelope.header
        if let id = header.id { object["id"] = .string(id) }
        if let from = header.from { object["from"] = .string(from.description) }
        if let to = header.to { object["to"] = .string(to.description) }
        if let pp = header.pp { object["pp"] = .string(pp.description) }
        if let metadata = header.metadata, !metadata.isEmpty {
            var members = JSONObject()
            for key in metadata.keys.sorted() { members[key] = .string(metadata[key]!) }
            object["metadata"] = .object(members)
        }
        switch envelope {
        case .message(let message):
            object["type"] = .string(message.type.rawValue)
            object["content"] = message.content
        case .notification(let notification):
            object["event"] = .string(notification.event.rawValue)
            if let reason = notification.reason { object["reason"] = encodeReason(reason) }
        case .command(let command):
            object["method"] = .string(command.method.rawValue)
            if let uri = command.uri { object["uri"] = .string(uri) }
            if let type = command.type { object["type"] = .string(type.rawValue) }
            if let resource = command.resource { object["resource"] = resource }
            if let status = command.status { object["status"] = .string(status.rawValue) }
            if let reason = command.reason { object["reason"] = encodeReason(reason) }
        case .session(let session):
            object["state"] = .string(session.state.rawValue)
            if let options = session.encryptionOptions { object["encryptionOptions"] = .array(options.map { .string($0) }) }
            if let encryption = session.encryption { object["encryption"] = .string(encryption) }
            if let options = session.compressionOptions { object["compressionOptions"] = .array(options.map { .string($0) }) }
            if let compression = session.compression { object["compression"] = .string(compression) }
            if let scheme = session.scheme { object["scheme"] = .string(scheme) }
            if let options = session.schemeOptions { object["schemeOptions"] = .array(options.map { .string($0) }) }
            if let authentication = session.authentication { object["authentication"] = authentication }
            if let reason = session.reason { object["reason"] = encodeReason(reason) }
        }
        return object
    }

    static func encodeReason(_ reason: Reason) -> JSONValue {
        ["code": .number(JSONNumber(reason.code)), "description": .string(reason.description)]
    }

    // MARK: - Reading

    private static func invalid(_ field: String, _ expectation: String) -> Reason {
        Reason(code: ReasonCode.validationError, description: "Invalid '\(field)': \(expectation)")
    }

    private static func optionalString(_ value: JSONValue?, _ key: String) throws(Reason) -> String? {
        switch value {
        case nil, .null?: return nil
        case .string(let text)?: return text
        default: throw invalid(key, "expected a string")
        }
    }

    private static func optionalNode(_ value: JSONValue?, _ key: String, nodes: inout NodeCache) throws(Reason) -> Node? {
        guard let text = try optionalString(value, key) else { return nil }
        guard let node = nodes.node(text) else {
            throw Reason(
                code: ReasonCode.validationInvalidIdentity, description: "Invalid '\(key)': '\(text)' is not a node (name@domain/instance)")
        }
        return node
    }

    private static func decodeHeader(_ members: Members, nodes: inout NodeCache) throws(Reason) -> EnvelopeHeader {
        var header = EnvelopeHeader()
        switch members.id {
        case nil, .null?: break
        case .string(let id)?: header.id = id
        case .number(let number)?: header.id = number.literal
        default: throw invalid("id", "expected a string")
        }
        header.from = try optionalNode(members.from, "from", nodes: &nodes)
        header.to = try optionalNode(members.to, "to", nodes: &nodes)
        header.pp = try optionalNode(members.pp, "pp", nodes: &nodes)
        switch members.metadata {
        case .absent: break
        case .strings(let strings): header.metadata = strings
        case .invalid: throw invalid("metadata", "expected an object of strings")
        }
        return header
    }

    /// Reads a reason as an object `{code, description}`, or leniently as a plain string.
    static func decodeReason(_ value: JSONValue?) throws(Reason) -> Reason? {
        switch value {
        case nil, .null?: return nil
        case .string(let text)?: return Reason(code: ReasonCode.generalError, description: text)
        case .object(let object)?:
            let code = object["code"]?.intValue ?? object["code"]?.stringValue.flatMap { Int($0) } ?? ReasonCode.generalError
            let description = object["description"]?.stringValue ?? ""
            return Reason(code: code, description: description)
        default: throw invalid("reason", "expected an object with 'code' and 'description'")
        }
    }

    /// A case of a LIME enumeration, whatever the case of its letters. Read as it is first: it is
    /// almost always lowercase already, and lowercasing makes a string.
    private static func caseInsensitive<Value: RawRepresentable<String>>(_: Value.Type, _ text: String) -> Value? {
        Value(rawValue: text) ?? Value(rawValue: text.lowercased())
    }

    private static func decodeMessage(_ members: Members, content: JSONContent, header: EnvelopeHeader) throws(Reason) -> LIMEMessage {
        let type: MediaType
        if let text = try optionalString(members.type, "type") {
            type = MediaType(text)
        } else {
            // LIME requires a type; infer the obvious one rather than refuse a usable message.
            type = content.isString ? .textPlain : .applicationJSON
        }
        return LIMEMessage(header: header, type: type, body: content)
    }

    private static func decodeNotification(_ members: Members, header: EnvelopeHeader) throws(Reason) -> LIMENotification {
        guard let text = members.event?.stringValue, let event = caseInsensitive(NotificationEvent.self, text) else {
            throw invalid("event", "expected one of \(NotificationEvent.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return LIMENotification(header: header, event: event, reason: try decodeReason(members.reason))
    }

    private static func decodeCommand(_ members: Members, header: EnvelopeHeader) throws(Reason) -> LIMECommand {
        guard let text = members.method?.stringValue, let method = caseInsensitive(CommandMethod.self, text) else {
            throw Reason(
                code: ReasonCode.validationInvalidMethod,
                description: "Invalid 'method': expected one of \(CommandMethod.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var status: CommandStatus?
        if let text = try optionalString(members.status, "status") {
            guard let value = caseInsensitive(CommandStatus.self, text) else {
                throw Reason(code: ReasonCode.validationInvalidStatus, description: "Invalid 'status': expected success or failure")
            }
            status = value
        }
        let resource = members.resource
        return LIMECommand(
            header: header, method: method, uri: try optionalString(members.uri, "uri"),
            type: try optionalString(members.type, "type").map { MediaType($0) }, resourceBody: resource?.isNull == true ? nil : resource,
            status: status,
            reason: try decodeReason(members.reason))
    }

    private static func optionalStrings(_ object: JSONObject, _ key: String) throws(Reason) -> [String]? {
        switch object[key] {
        case nil, .null?: return nil
        case .array(let elements)?:
            var strings: [String] = []
            for element in elements {
                guard let text = element.stringValue else { throw invalid(key, "expected an array of strings") }
                strings.append(text)
            }
            return strings
        default: throw invalid(key, "expected an array of strings")
        }
    }

    private static func decodeSession(_ members: Members, header: EnvelopeHeader) throws(Reason) -> LIMESession {
        guard let text = members.state?.stringValue, let state = caseInsensitive(SessionState.self, text) else {
            throw invalid("state", "expected one of \(SessionState.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let object = members.others
        var authentication = object["authentication"]
        if authentication == .null { authentication = nil }
        return LIMESession(
            header: header, state: state, encryptionOptions: try optionalStrings(object, "encryptionOptions"),
            encryption: try optionalString(object["encryption"], "encryption"),
            compressionOptions: try optionalStrings(object, "compressionOptions"),
            compression: try optionalString(object["compression"], "compression"), scheme: try optionalString(object["scheme"], "scheme"),
            schemeOptions: try optionalStrings(object, "schemeOptions"), authentication: authentication,
            reason: try decodeReason(members.reason))
    }
}
