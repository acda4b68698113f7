/// One operation of the NATS client protocol, in either direction.
public enum NATSOperation: Sendable, Equatable {
    // Client to server.
    case connect(JSONObject)
    /// `PUB` (no headers) or `HPUB` (headers present).
    case publish(subject: String, replyTo: String?, headers: NATSHeaders?, payload: [UInt8])
    case subscribe(subject: String, queue: String?, sid: String)
    case unsubscribe(sid: String, max: Int?)
    // Server to client.
    case info(JSONObject)
    /// `MSG` (no headers) or `HMSG` (headers present).
    case message(subject: String, sid: String, replyTo: String?, headers: NATSHeaders?, payload: [UInt8])
    case ok
    case error(String)
    // Both.
    case ping
    case pong
}

/// A NATS header block: `NATS/1.0[ status[ description]]` then `Key: Value` lines.
///
/// Keys keep their spelling and may repeat; lookups ignore case.
public struct NATSHeaders: Sendable, Equatable {
    /// A status code such as 503 (no responders), if the block carries one.
    public var status: Int?
    public var statusDescription: String?
    public var fields: [(name: String, value: String)]

    public init(status: Int? = nil, statusDescription: String? = nil, fields: [(name: String, value: String)] = []) {
        self.status = status
        self.statusDescription = statusDescription
        self.fields = fields
    }

    /// Every value of `name`, in order.
    public func values(_ name: String) -> [String] {
        let lowered = name.lowercased()
        return fields.filter { $0.name.lowercased() == lowered }.map(\.value)
    }

    /// The first value of `name`.
    public subscript(name: String) -> String? { values(name).first }

    /// `Content-Type` as a media type, and the other fields as metadata (a repeated field's
    /// values joined with ", "): what a NATS message's headers are to a LIME message.
    public var typeAndMetadata: (type: MediaType?, metadata: [String: String]) {
        var metadata: [String: String] = [:]
        var type: MediaType?
        for field in fields {
            if field.name.lowercased() == "content-type" {
                type = MediaType(field.value)
            } else {
                metadata[field.name] = metadata[field.name].map { "\($0), \(field.value)" } ?? field.value
            }
        }
        return (type, metadata)
    }

    public mutating func append(_ name: String, _ value: String) {
        fields.append((name, value))
    }

    public static func == (lhs: NATSHeaders, rhs: NATSHeaders) -> Bool {
        lhs.status == rhs.status && lhs.statusDescription == rhs.statusDescription && lhs.fields.count == rhs.fields.count
            && zip(lhs.fields, rhs.fields).allSatisfy { $0.name == $1.name && $0.value == $1.value }
    }

    /// The wire form, ending with the blank line.
    public var bytes: [UInt8] {
        var text = "NATS/1.0"
        if let status {
            text += " \(status)"
            if let statusDescription, !statusDescription.isEmpty { text += " \(statusDescription)" }
        }
        text += "\r\n"
        for field in fields { text += "\(field.name): \(field.value)\r\n" }
        text += "\r\n"
        return Array(text.utf8)
    }

    /// Parses a header block (including its final blank line).
    public init(parsing bytes: some Collection<UInt8>) throws(NATSProtocolError) {
        let text = String(decoding: bytes, as: UTF8.self)
        var lines = text.components(separatedByCRLF: ())
        guard let first = lines.first, first.hasPrefix("NATS/1.0") else {
            throw NATSProtocolError(.parser, detail: "headers must start with NATS/1.0")
        }
        lines.removeFirst()
        let statusPart = first.dropFirst("NATS/1.0".count).trimmingWhitespace()
        if !statusPart.isEmpty {
            let pieces = statusPart.split(separator: " ", maxSplits: 1)
            guard let code = Int(pieces[0]) else { throw NATSProtocolError(.parser, detail: "invalid header status '\(pieces[0])'") }
            status = code
            statusDescription = pieces.count > 1 ? String(pieces[1]) : nil
        }
        fields = []
        for line in lines where !line.isEmpty {
            guard let colon = line.firstIndex(of: ":") else { throw NATSProtocolError(.parser, detail: "header line without ':'") }
            let name = line[..<colon].trimmingWhitespace()
            guard !name.isEmpty else { throw NATSProtocolError(.parser, detail: "empty header name") }
            fields.append((String(name), String(line[line.index(after: colon)...].trimmingWhitespace())))
        }
    }
}

extension String {
    /// Lines split at CRLF (a bare LF is accepted too; Swift reads CRLF as one newline character).
    fileprivate func components(separatedByCRLF: ()) -> [Substring] {
        split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
    }
}

/// A NATS protocol error, worded as nats-server words it in `-ERR`.
public struct NATSProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case unknownOperation, maximumPayload, maximumControlLine, parser, invalidSubject, invalidPublishSubject
        case authorization, slowConsumer, staleConnection, maximumConnections, maximumSubscriptions
        case tlsRequired, authenticationTimeout
    }

    public let kind: Kind
    /// What exactly was wrong (for logs; the `-ERR` text is the fixed wording).
    public let detail: String

    public init(_ kind: Kind, detail: String = "") {
        self.kind = kind
        self.detail = detail
    }

    /// The text of the `-ERR` line.
    public var errText: String {
        switch kind {
        case .unknownOperation: "Unknown Protocol Operation"
        case .maximumPayload: "Maximum Payload Violation"
        case .maximumControlLine: "Maximum Control Line Exceeded"
        case .parser: "Parser Error"
        case .invalidSubject: "Invalid Subject"
        case .invalidPublishSubject: "Invalid Publish Subject"
        case .authorization: "Authorization Violation"
        case .slowConsumer: "Slow Consumer"
        case .staleConnection: "Stale Connection"
        case .maximumConnections: "Maximum Connections Exceeded"
        case .maximumSubscriptions: "Maximum Subscriptions Exceeded"
        case .tlsRequired: "Secure Connection - TLS Required"
        case .authenticationTimeout: "Authentication Timeout"
        }
    }

    /// Whether nats-server closes the connection after this error.
    public var closesConnection: Bool {
        switch kind {
        case .invalidSubject, .invalidPublishSubject, .maximumSubscriptions: false
        default: true
        }
    }

    public var description: String { detail.isEmpty ? errText : "\(errText): \(detail)" }
}
