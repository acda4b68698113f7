/// An incremental parser of the NATS client protocol, free of I/O.
///
/// Feed it bytes as they arrive; it returns every complete operation. It reads the operations of one
/// side: a server parses CONNECT, PUB, HPUB, SUB, UNSUB, PING, PONG; a client parses INFO, MSG,
/// HMSG, PING, PONG, +OK, -ERR. Limits are checked before bytes are buffered: a control line longer
/// than `maximumControlLine`, or a payload larger than `maximumPayload`, is an error at once.
public struct NATSParser: Sendable {
    public enum Role: Sendable {
        /// Parses what clients send.
        case server
        /// Parses what servers send.
        case client
    }

    public static let defaultMaximumControlLine = 4096
    public static let defaultMaximumPayload = 1 << 20

    public let role: Role
    public var maximumControlLine: Int
    public var maximumPayload: Int
    private var buffer: [UInt8] = []
    private var start = 0
    /// An operation whose control line is read and whose payload is awaited.
    private var awaiting: Awaiting?

    private enum Awaiting: Sendable {
        case publish(subject: String, replyTo: String?, headerSize: Int?, total: Int)
        case message(subject: String, sid: String, replyTo: String?, headerSize: Int?, total: Int)

        var total: Int {
            switch self {
            case .publish(_, _, _, let total), .message(_, _, _, _, let total): total
            }
        }
    }

    public init(role: Role, maximumControlLine: Int = defaultMaximumControlLine, maximumPayload: Int = defaultMaximumPayload) {
        self.role = role
        self.maximumControlLine = maximumControlLine
        self.maximumPayload = maximumPayload
    }

    /// Bytes held for an operation not yet complete.
    public var bufferedByteCount: Int { buffer.count - start }

    /// Feeds received bytes; returns the operations they complete, in order. After an error the
    /// parser should not be fed again (the connection ends).
    public mutating func bytesReceived(_ bytes: some Sequence<UInt8>) throws(NATSProtocolError) -> [NATSOperation] {
        buffer.append(contentsOf: bytes)
        var operations: [NATSOperation] = []
        while let operation = try next() { operations.append(operation) }
        if start > 0 && (start == buffer.count || start > 65_536) {
            buffer.removeSubrange(0..<start)
            start = 0
        }
        return operations
    }

    private mutating func next() throws(NATSProtocolError) -> NATSOperation? {
        if let pending = awaiting {
            let needed = pending.total + 2
            guard buffer.count - start >= needed else { return nil }
            let payloadEnd = start + pending.total
            guard buffer[payloadEnd] == 0x0D, buffer[payloadEnd + 1] == 0x0A else {
                throw NATSProtocolError(.parser, detail: "payload not followed by CRLF")
            }
            awaiting = nil
            let operation = try complete(pending, body: buffer[start..<payloadEnd])
            start = payloadEnd + 2
            return operation
        }
        guard let newline = buffer[start...].firstIndex(of: 0x0A) else {
            if buffer.count - start > maximumControlLine { throw NATSProtocolError(.maximumControlLine) }
            return nil
        }
        var lineEnd = newline
        if lineEnd > start, buffer[lineEnd - 1] == 0x0D { lineEnd -= 1 }
        guard lineEnd - start <= maximumControlLine else { throw NATSProtocolError(.maximumControlLine) }
        let line = buffer[start..<lineEnd]
        start = newline + 1
        if line.isEmpty { return try next() }
        return try controlLine(line)
    }

    private static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }

    private mutating func controlLine(_ line: ArraySlice<UInt8>) throws(NATSProtocolError) -> NATSOperation? {
        let opEnd = line.firstIndex(where: Self.isSpace) ?? line.endIndex
        let op = String(decoding: line[line.startIndex..<opEnd], as: UTF8.self).uppercased()
        let rest = line[opEnd...].drop(while: Self.isSpace)
        let arguments = rest.split(whereSeparator: Self.isSpace).map { String(decoding: $0, as: UTF8.self) }
        switch (role, op) {
        case (_, "PING"): return .ping
        case (_, "PONG"): return .pong
        case (.server, "CONNECT"): return .connect(try json(rest, op))
        case (.server, "PUB"):
            guard arguments.count == 2 || arguments.count == 3, let size = Int(arguments.last!), size >= 0 else {
                throw NATSProtocolError(.parser, detail: "PUB expects: subject [reply] size")
            }
            try checkPayload(size)
            awaiting = .publish(subject: arguments[0], replyTo: arguments.count == 3 ? arguments[1] : nil, headerSize: nil, total: size)
        case (.server, "HPUB"):
            guard arguments.count == 3 || arguments.count == 4, let headerSize = Int(arguments[arguments.count - 2]),
                let total = Int(arguments.last!), headerSize >= 0, total >= headerSize
            else { throw NATSProtocolError(.parser, detail: "HPUB expects: subject [reply] header-size total-size") }
            try checkPayload(total)
            awaiting = .publish(
                subject: arguments[0], replyTo: arguments.count == 4 ? arguments[1] : nil, headerSize: headerSize, total: total)
        case (.server, "SUB"):
            guard arguments.count == 2 || arguments.count == 3 else {
                throw NATSProtocolError(.parser, detail: "SUB expects: subject [queue] sid")
            }
            return .subscribe(subject: arguments[0], queue: arguments.count == 3 ? arguments[1] : nil, sid: arguments.last!)
        case (.server, "UNSUB"):
            guard arguments.count == 1 || arguments.count == 2 else { throw NATSProtocolError(.parser, detail: "UNSUB expects: sid [max]") }
            var max: Int?
            if arguments.count == 2 {
                guard let value = Int(arguments[1]), value >= 0 else {
                    throw NATSProtocolError(.parser, detail: "UNSUB max must be a number")
                }
                max = value
            }
            return .unsubscribe(sid: arguments[0], max: max)
        case (.client, "INFO"): return .info(try json(rest, op))
        case (.client, "MSG"):
            guard arguments.count == 3 || arguments.count == 4, let size = Int(arguments.last!), size >= 0 else {
                throw NATSProtocolError(.parser, detail: "MSG expects: subject sid [reply] size")
            }
            try checkPayload(size)
            awaiting = .message(
                subject: arguments[0], sid: arguments[1], replyTo: arguments.count == 4 ? arguments[2] : nil, headerSize: nil, total: size)
        case (.client, "HMSG"):
            guard arguments.count == 4 || arguments.count == 5, let headerSize = Int(arguments[arguments.count - 2]),
                let total = Int(arguments.last!), headerSize >= 0, total >= headerSize
            else { throw NATSProtocolError(.parser, detail: "HMSG expects: subject sid [reply] header-size total-size") }
            try checkPayload(total)
            awaiting = .message(
                subject: arguments[0], sid: arguments[1], replyTo: arguments.count == 5 ? arguments[2] : nil, headerSize: headerSize,
                total: total)
        case (.client, "+OK"): return .ok
        case (.client, "-ERR"):
            var text = String(decoding: rest, as: UTF8.self)
            if text.hasPrefix("'") && text.hasSuffix("'") && text.count >= 2 { text = String(text.dropFirst().dropLast()) }
            return .error(text)
        default:
            throw NATSProtocolError(.unknownOperation, detail: "'\(op)'")
        }
        return try next()
    }

    private func checkPayload(_ size: Int) throws(NATSProtocolError) {
        guard size <= maximumPayload else {
            throw NATSProtocolError(.maximumPayload, detail: "\(size) bytes, the maximum is \(maximumPayload)")
        }
    }

    private func json(_ bytes: ArraySlice<UInt8>, _ op: String) throws(NATSProtocolError) -> JSONObject {
        do {
            guard let object = try JSONParser.parse(bytes).objectValue else {
                throw NATSProtocolError(.parser, detail: "\(op) expects a JSON object")
            }
            return object
        } catch let error as NATSProtocolError {
            throw error
        } catch {
            throw NATSProtocolError(.parser, detail: "\(op): \(error)")
        }
    }

    private func complete(_ pending: Awaiting, body: ArraySlice<UInt8>) throws(NATSProtocolError) -> NATSOperation {
        func split(_ headerSize: Int?) throws(NATSProtocolError) -> (NATSHeaders?, [UInt8]) {
            guard let headerSize else { return (nil, Array(body)) }
            let headerEnd = body.startIndex + headerSize
            return (try NATSHeaders(parsing: body[body.startIndex..<headerEnd]), Array(body[headerEnd...]))
        }
        switch pending {
        case .publish(let subject, let replyTo, let headerSize, _):
            let (headers, payload) = try split(headerSize)
            return .publish(subject: subject, replyTo: replyTo, headers: headers, payload: payload)
        case .message(let subject, let sid, let replyTo, let headerSize, _):
            let (headers, payload) = try split(headerSize)
            return .message(subject: subject, sid: sid, replyTo: replyTo, headers: headers, payload: payload)
        }
    }
}
