/// Converts LIME envelopes to and from their JSON form.
///
/// Writing omits null fields and writes metadata values as strings; reading is lenient where real
/// clients differ from the specification (a `reason` sent as a plain string, metadata numbers,
/// a numeric `id`, an `authentication` that repeats the `scheme`).
public enum LIMECodec {
    /// Decodes one envelope from its JSON bytes.
    public static func decode(_ bytes: some Collection<UInt8>, maximumDepth: Int = JSONParser.defaultMaximumDepth) throws(Reason)
        -> Envelope
    {
        let value: JSONValue
        do {
            value = try JSONParser.parse(bytes, maximumDepth: maximumDepth)
        } catch {
            throw Reason(code: ReasonCode.validationError, description: "Malformed JSON: \(error)")
        }
        return try decode(value)
    }

    /// Decodes one envelope from a parsed JSON value.
    public static func decode(_ value: JSONValue) throws(Reason) -> Envelope {
        guard let object = value.objectValue else {
            throw Reason(code: ReasonCode.validationError, description: "An envelope must be a JSON object")
        }
        let header = try decodeHeader(object)
        if object["content"] != nil {
            return .message(try decodeMessage(object, header: header))
        }
        if object["event"] != nil {
            return .notification(try decodeNotification(object, header: header))
        }
        if object["method"] != nil {
            return .command(try decodeCommand(object, header: header))
        }
        if object["state"] != nil {
            return .session(try decodeSession(object, header: header))
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
        writer.member("content", message.content)
        return writer.finish()
    }

    static func encode(_ command: LIMECommand) -> [UInt8] {
        var writer = DirectWriter(header: command.header)
        writer.member("method", string: command.method.rawValue)
        if let uri = command.uri { writer.member("uri", string: uri) }
        if let type = command.type { writer.member("type", string: type.rawValue) }
        if let resource = command.resource { writer.member("resource", resource) }
        if let status = command.status { writer.member("status", string: status.rawValue) }
        if let reason = command.reason { writer.member("reason", encodeReason(reason)) }
        return writer.finish()
    }

    /// Writes an envelope's members one by one, starting with its header.
    private struct DirectWriter {
        var output: [UInt8] = []
        var first = true

        init(header: EnvelopeHeader) {
            output.reserveCapacity(256)
            output.append(UInt8(ascii: "{"))
            if let id = header.id { member("id", string: id) }
            if let from = header.from { member("from", string: from.description) }
            if let to = header.to { member("to", string: to.description) }
            if let pp = header.pp { member("pp", string: pp.description) }
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

        mutating func member(_ name: StaticString, _ value: JSONValue) {
            self.name(name)
            JSONWriter.write(value, into: &output)
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

    private static func optionalString(_ object: JSONObject, _ key: String) throws(Reason) -> String? {
        switch object[key] {
        case nil, .null?: return nil
        case .string(let text)?: return text
        default: throw invalid(key, "expected a string")
        }
    }

    private static func optionalNode(_ object: JSONObject, _ key: String) throws(Reason) -> Node? {
        guard let text = try optionalString(object, key) else { return nil }
        guard let node = Node(text) else {
            throw Reason(
                code: ReasonCode.validationInvalidIdentity, description: "Invalid '\(key)': '\(text)' is not a node (name@domain/instance)")
        }
        return node
    }

    private static func decodeHeader(_ object: JSONObject) throws(Reason) -> EnvelopeHeader {
        var header = EnvelopeHeader()
        switch object["id"] {
        case nil, .null?: break
        case .string(let id)?: header.id = id
        case .number(let number)?: header.id = number.literal
        default: throw invalid("id", "expected a string")
        }
        header.from = try optionalNode(object, "from")
        header.to = try optionalNode(object, "to")
        header.pp = try optionalNode(object, "pp")
        switch object["metadata"] {
        case nil, .null?: break
        case .object(let members)?:
            var metadata: [String: String] = [:]
            for member in members {
                switch member.value {
                case .string(let text): metadata[member.key] = text
                case .number(let number): metadata[member.key] = number.literal
                case .bool(let flag): metadata[member.key] = flag ? "true" : "false"
                case .null: continue
                default: metadata[member.key] = JSONWriter.string(member.value)
                }
            }
            header.metadata = metadata
        default: throw invalid("metadata", "expected an object of strings")
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

    private static func decodeMessage(_ object: JSONObject, header: EnvelopeHeader) throws(Reason) -> LIMEMessage {
        let content = object["content"]!
        let type: MediaType
        if let text = try optionalString(object, "type") {
            type = MediaType(text)
        } else {
            // LIME requires a type; infer the obvious one rather than refuse a usable message.
            type = content.stringValue != nil ? .textPlain : .applicationJSON
        }
        return LIMEMessage(header: header, type: type, content: content)
    }

    private static func decodeNotification(_ object: JSONObject, header: EnvelopeHeader) throws(Reason) -> LIMENotification {
        guard let text = object["event"]?.stringValue, let event = NotificationEvent(rawValue: text.lowercased()) else {
            throw invalid("event", "expected one of \(NotificationEvent.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return LIMENotification(header: header, event: event, reason: try decodeReason(object["reason"]))
    }

    private static func decodeCommand(_ object: JSONObject, header: EnvelopeHeader) throws(Reason) -> LIMECommand {
        guard let text = object["method"]?.stringValue, let method = CommandMethod(rawValue: text.lowercased()) else {
            throw Reason(
                code: ReasonCode.validationInvalidMethod,
                description: "Invalid 'method': expected one of \(CommandMethod.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var status: CommandStatus?
        if let text = try optionalString(object, "status") {
            guard let value = CommandStatus(rawValue: text.lowercased()) else {
                throw Reason(code: ReasonCode.validationInvalidStatus, description: "Invalid 'status': expected success or failure")
            }
            status = value
        }
        var resource = object["resource"]
        if resource == .null { resource = nil }
        return LIMECommand(
            header: header, method: method, uri: try optionalString(object, "uri"),
            type: try optionalString(object, "type").map { MediaType($0) }, resource: resource, status: status,
            reason: try decodeReason(object["reason"]))
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

    private static func decodeSession(_ object: JSONObject, header: EnvelopeHeader) throws(Reason) -> LIMESession {
        guard let text = object["state"]?.stringValue, let state = SessionState(rawValue: text.lowercased()) else {
            throw invalid("state", "expected one of \(SessionState.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var authentication = object["authentication"]
        if authentication == .null { authentication = nil }
        return LIMESession(
            header: header, state: state, encryptionOptions: try optionalStrings(object, "encryptionOptions"),
            encryption: try optionalString(object, "encryption"),
            compressionOptions: try optionalStrings(object, "compressionOptions"),
            compression: try optionalString(object, "compression"), scheme: try optionalString(object, "scheme"),
            schemeOptions: try optionalStrings(object, "schemeOptions"), authentication: authentication,
            reason: try decodeReason(object["reason"]))
    }
}
