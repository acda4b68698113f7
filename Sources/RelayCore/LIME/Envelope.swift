/// A LIME reason: why something failed.
public struct Reason: Sendable, Hashable, Error, CustomStringConvertible {
    public var code: Int
    public var description: String

    public init(code: Int, description: String) {
        self.code = code
        self.description = description
    }
}

/// The reason codes of the LIME specification that Relay uses.
public enum ReasonCode {
    public static let generalError = 1
    public static let sessionError = 11
    public static let sessionRegistrationError = 12
    public static let sessionAuthenticationFailed = 13
    public static let sessionInvalidActionForState = 15
    public static let sessionNegotiationTimeout = 16
    public static let sessionNegotiationInvalidOptions = 17
    public static let validationError = 21
    public static let validationEmptyDocument = 22
    public static let validationInvalidResource = 23
    public static let validationInvalidStatus = 24
    public static let validationInvalidIdentity = 25
    public static let validationInvalidRecipients = 26
    public static let validationInvalidMethod = 27
    public static let authorizationError = 31
    public static let authorizationUnauthorizedSender = 32
    public static let routingError = 41
    public static let routingDestinationNotFound = 42
    public static let routingGatewayNotFound = 43
    public static let routingRouteNotFound = 44
    public static let dispatchError = 51
    public static let commandProcessingError = 61
    public static let commandResourceNotSupported = 62
    public static let commandMethodNotSupported = 63
    public static let commandInvalidArgument = 64
    public static let commandInvalidSessionMode = 65
    public static let commandNotAllowed = 66
    public static let commandResourceNotFound = 67
    public static let messageUnsupportedContentType = 71
    public static let applicationError = 101
}

/// The fields every envelope shares.
public struct EnvelopeHeader: Sendable, Hashable {
    public var id: String?
    public var from: Node?
    public var to: Node?
    /// "Per procurationem": the node the sender acts on behalf of.
    public var pp: Node?
    public var metadata: [String: String]?

    public init(id: String? = nil, from: Node? = nil, to: Node? = nil, pp: Node? = nil, metadata: [String: String]? = nil) {
        self.id = id
        self.from = from
        self.to = to
        self.pp = pp
        self.metadata = metadata
    }
}

/// A LIME media type such as `text/plain` or `application/vnd.lime.ping+json`.
public struct MediaType: Sendable, Hashable, CustomStringConvertible, ExpressibleByStringLiteral {
    public let rawValue: String

    public init(_ rawValue: String) { self.rawValue = rawValue }
    public init(stringLiteral value: String) { self.rawValue = value }

    /// Whether content of this type travels as a JSON value: subtype `json` or a `+json` suffix.
    public var isJSON: Bool {
        // The usual types, without splitting and lower-casing.
        switch rawValue {
        case "application/json": return true
        case "text/plain": return false
        default: break
        }
        let essence = rawValue.split(separator: ";", maxSplits: 1).first.map { $0.trimmingWhitespace().lowercased() } ?? ""
        guard let slash = essence.firstIndex(of: "/") else { return false }
        let subtype = essence[essence.index(after: slash)...]
        return subtype == "json" || subtype.hasSuffix("+json")
    }

    public var description: String { rawValue }

    public static let textPlain: MediaType = "text/plain"
    public static let applicationJSON: MediaType = "application/json"
    public static let ping: MediaType = "application/vnd.lime.ping+json"
}

extension String {
    func trimmingWhitespace() -> Substring { self[...].trimmingWhitespace() }
}

extension Substring {
    func trimmingWhitespace() -> Substring {
        var result = self
        while let first = result.first, first.isWhitespace { result.removeFirst() }
        while let last = result.last, last.isWhitespace { result.removeLast() }
        return result
    }
}

/// Content: a message's payload.
public struct LIMEMessage: Sendable, Hashable {
    public var header: EnvelopeHeader
    public var type: MediaType
    /// The content, possibly still as the JSON text it arrived in.
    public var body: JSONContent

    /// A JSON value for JSON media types, a `.string` otherwise (base64 for binary).
    public var content: JSONValue {
        get { body.value }
        set { body = JSONContent(newValue) }
    }

    public init(header: EnvelopeHeader = EnvelopeHeader(), type: MediaType, content: JSONValue) {
        self.init(header: header, type: type, body: JSONContent(content))
    }

    public init(header: EnvelopeHeader = EnvelopeHeader(), type: MediaType, body: JSONContent) {
        self.header = header
        self.type = type
        self.body = body
    }

    /// A `text/plain` message.
    public init(id: String? = nil, to: Node?, text: String) {
        self.init(header: EnvelopeHeader(id: id, to: to), type: .textPlain, content: .string(text))
    }
}

/// The events a notification reports about a message.
public enum NotificationEvent: String, Sendable, Hashable, CaseIterable {
    case accepted, validated, authorized, dispatched, received, consumed, failed
}

/// A receipt about a message, identified by the message's id.
public struct LIMENotification: Sendable, Hashable {
    public var header: EnvelopeHeader
    public var event: NotificationEvent
    public var reason: Reason?

    public init(header: EnvelopeHeader = EnvelopeHeader(), event: NotificationEvent, reason: Reason? = nil) {
        self.header = header
        self.event = event
        self.reason = reason
    }
}

/// The LIME command methods.
public enum CommandMethod: String, Sendable, Hashable, CaseIterable {
    case get, set, delete, subscribe, unsubscribe, observe, merge
}

/// The status of a command response.
public enum CommandStatus: String, Sendable, Hashable {
    case success, failure
}

/// A request on a resource (no status) or its response (with status).
public struct LIMECommand: Sendable, Hashable {
    public var header: EnvelopeHeader
    public var method: CommandMethod
    public var uri: String?
    public var type: MediaType?
    /// The resource, possibly still as the JSON text it arrived in.
    public var resourceBody: JSONContent?
    public var status: CommandStatus?
    public var reason: Reason?

    /// The resource's value.
    public var resource: JSONValue? {
        get { resourceBody?.value }
        set { resourceBody = newValue.map { JSONContent($0) } }
    }

    public init(
        header: EnvelopeHeader = EnvelopeHeader(), method: CommandMethod, uri: String? = nil, type: MediaType? = nil,
        resource: JSONValue? = nil, status: CommandStatus? = nil, reason: Reason? = nil
    ) {
        self.init(
            header: header, method: method, uri: uri, type: type, resourceBody: resource.map { JSONContent($0) }, status: status,
            reason: reason)
    }

    public init(
        header: EnvelopeHeader = EnvelopeHeader(), method: CommandMethod, uri: String? = nil, type: MediaType? = nil,
        resourceBody: JSONContent?, status: CommandStatus? = nil, reason: Reason? = nil
    ) {
        self.header = header
        self.method = method
        self.uri = uri
        self.type = type
        self.resourceBody = resourceBody
        self.status = status
        self.reason = reason
    }

    /// Whether this is a response (it carries a status) rather than a request.
    public var isResponse: Bool { status != nil }

    /// The success response to this request: same id, echoed method, addressed back to the sender.
    public func success(type: MediaType? = nil, resource: JSONValue? = nil) -> LIMECommand {
        LIMECommand(
            header: EnvelopeHeader(id: header.id, to: header.pp ?? header.from), method: method, type: type,
            resource: resource, status: .success)
    }

    /// The failure response to this request.
    public func failure(_ reason: Reason) -> LIMECommand {
        LIMECommand(header: EnvelopeHeader(id: header.id, to: header.pp ?? header.from), method: method, status: .failure, reason: reason)
    }
}

/// The session states of the LIME specification.
public enum SessionState: String, Sendable, Hashable, CaseIterable {
    case new, negotiating, authenticating, established, finishing, finished, failed
}

/// A session envelope: how the two sides negotiate, authenticate and end a session.
public struct LIMESession: Sendable, Hashable {
    public var header: EnvelopeHeader
    public var state: SessionState
    public var encryptionOptions: [String]?
    public var encryption: String?
    public var compressionOptions: [String]?
    public var compression: String?
    public var scheme: String?
    public var schemeOptions: [String]?
    public var authentication: JSONValue?
    public var reason: Reason?

    public init(
        header: EnvelopeHeader = EnvelopeHeader(), state: SessionState, encryptionOptions: [String]? = nil,
        encryption: String? = nil, compressionOptions: [String]? = nil, compression: String? = nil,
        scheme: String? = nil, schemeOptions: [String]? = nil, authentication: JSONValue? = nil, reason: Reason? = nil
    ) {
        self.header = header
        self.state = state
        self.encryptionOptions = encryptionOptions
        self.encryption = encryption
        self.compressionOptions = compressionOptions
        self.compression = compression
        self.scheme = scheme
        self.schemeOptions = schemeOptions
        self.authentication = authentication
        self.reason = reason
    }
}

/// One of the four LIME envelopes.
public enum Envelope: Sendable, Hashable {
    case session(LIMESession)
    case message(LIMEMessage)
    case notification(LIMENotification)
    case command(LIMECommand)

    /// The shared fields of whichever envelope this is.
    public var header: EnvelopeHeader {
        get {
            switch self {
            case .session(let value): value.header
            case .message(let value): value.header
            case .notification(let value): value.header
            case .command(let value): value.header
            }
        }
        // Changed in place: the hub sets `from` on every envelope it routes, and a get-then-set
        // copied (retained and released) every field of the envelope to do it.
        _modify {
            switch consume self {
            case .session(var value):
                defer { self = .session(value) }
                yield &value.header
            case .message(var value):
                defer { self = .message(value) }
                yield &value.header
            case .notification(var value):
                defer { self = .notification(value) }
                yield &value.header
            case .command(var value):
                defer { self = .command(value) }
                yield &value.header
            }
        }
    }

    /// The envelope's kind as LIME names it, for logs and errors.
    public var kind: String {
        switch self {
        case .session: "session"
        case .message: "message"
        case .notification: "notification"
        case .command: "command"
        }
    }
}
