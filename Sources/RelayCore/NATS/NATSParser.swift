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
    /// The subject of the last PUB: a client publishes to few subjects, and reusing the string
    /// saves allocating one per message.
    private var lastSubject = ""

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
        var operations: [NATSOperation] = []
        try bytesReceived(bytes) { operations.append($0) }
        return operations
    }

    /// Feeds received bytes and hands each operation they complete to `body`, in order: each is
    /// moved, not copied (a hub parses one PUB per message).
    public mutating func bytesReceived(
        _ bytes: some Sequence<UInt8>, _ body: (consuming NATSOperation) -> Void
    ) throws(NATSProtocolError) {
        try bytesReceived(bytes, body, publishInPlace: { _ in false })
    }

    /// `bytesReceived`, offering each PUB without headers whose payload lies whole in `bytes` to
    /// `publishInPlace` first, its payload left where it is (a hub forwards it from there). When
    /// that returns false, or the PUB arrived in pieces, it comes to `body` as usual.
    public mutating func bytesReceived(
        _ bytes: some Sequence<UInt8>, _ body: (consuming NATSOperation) -> Void,
        publishInPlace: (NATSPublishInPlace) -> Bool
    ) throws(NATSProtocolError) {
        let parsed = bytes.withContiguousStorageIfAvailable { bytes in
            Result { () throws(NATSProtocolError) in try bytesReceived(contiguous: bytes, body, publishInPlace: publishInPlace) }
        }
        if let parsed { return try parsed.get() }
        buffer.append(contentsOf: bytes)
        try parseBuffered(body)
    }

    /// The bytes of a read are parsed where they lie, and only an incomplete tail is kept. An
    /// operation begun in an earlier read is completed first, in the parser's buffer, with just
    /// the bytes it needs: the rest of the read is then parsed in place as well.
    private mutating func bytesReceived(
        contiguous bytes: UnsafeBufferPointer<UInt8>, _ body: (consuming NATSOperation) -> Void,
        publishInPlace: (NATSPublishInPlace) -> Bool
    ) throws(NATSProtocolError) {
        var offset = 0
        while start < buffer.count, offset < bytes.count {
            let end: Int
            if let total = awaiting?.total {
                end = min(offset + total + 2 - (buffer.count - start), bytes.count)
            } else {
                end = bytes[offset...].firstIndex(of: 0x0A).map { $0 + 1 } ?? bytes.count
            }
            buffer.append(contentsOf: bytes[offset..<end])
            offset = end
            try parseBuffered(body)
        }
        guard offset < bytes.count else { return }
        var reader = reader(over: bytes, from: offset)
        reader.inPlace = true
        defer {
            awaiting = reader.awaiting
            lastSubject = reader.lastSubject
            buffer.removeAll(keepingCapacity: true)
            start = 0
            buffer.append(contentsOf: bytes[reader.start...])
        }
        while let item = try reader.next() {
            switch consume item {
            case .operation(let operation): body(operation)
            case .publishInPlace(let publication):
                if !publishInPlace(publication) {
                    body(
                        .publish(
                            subject: publication.subject, replyTo: publication.replyTo, headers: nil,
                            payload: Array(bytes[publication.payload])))
                }
            }
        }
    }

    /// Parses what the parser's buffer holds.
    private mutating func parseBuffered(_ body: (consuming NATSOperation) -> Void) throws(NATSProtocolError) {
        try buffer.withUnsafeBufferPointer { bytes throws(NATSProtocolError) in
            var reader = reader(over: bytes, from: start)
            defer {
                start = reader.start
                awaiting = reader.awaiting
                lastSubject = reader.lastSubject
            }
            while let item = try reader.next() {
                // Not in place: this buffer is the parser's own.
                guard case .operation(let operation) = consume item else { continue }
                body(operation)
            }
        }
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start > 65_536 {
            buffer.removeSubrange(0..<start)
            start = 0
        }
    }

    // Read through a pointer: slicing the array per line and per field retained its storage
    // each time, the parser's largest cost.
    private func reader(over bytes: UnsafeBufferPointer<UInt8>, from start: Int) -> Reader {
        Reader(
            bytes: bytes, start: start, awaiting: awaiting, role: role, maximumControlLine: maximumControlLine,
            maximumPayload: maximumPayload, lastSubject: lastSubject)
    }

    private static func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }

    /// The whitespace-separated arguments of a control line, as ranges into the buffer: up to
    /// six, without allocating (a PUB is parsed per message).
    private struct Arguments {
        private var ranges: (Range<Int>, Range<Int>, Range<Int>, Range<Int>, Range<Int>, Range<Int>) = (
            0..<0, 0..<0, 0..<0, 0..<0, 0..<0, 0..<0
        )
        /// How many there are (more than six counts as seven: always an error).
        private(set) var count = 0

        init(_ bytes: UnsafeBufferPointer<UInt8>, _ line: Range<Int>) {
            var index = line.lowerBound
            while index < line.upperBound {
                while index < line.upperBound && NATSParser.isSpace(bytes[index]) { index += 1 }
                guard index < line.upperBound else { break }
                let begin = index
                while index < line.upperBound && !NATSParser.isSpace(bytes[index]) { index += 1 }
                append(begin..<index)
            }
        }

        private mutating func append(_ range: Range<Int>) {
            switch count {
            case 0: ranges.0 = range
            case 1: ranges.1 = range
            case 2: ranges.2 = range
            case 3: ranges.3 = range
            case 4: ranges.4 = range
            case 5: ranges.5 = range
            default: count = 6
            }
            count += 1
        }

        subscript(_ index: Int) -> Range<Int> {
            switch index {
            case 0: ranges.0
            case 1: ranges.1
            case 2: ranges.2
            case 3: ranges.3
            case 4: ranges.4
            default: ranges.5
            }
        }

        var last: Range<Int> { self[count - 1] }
    }

    /// The operation name, upper-cased as bytes (names are ASCII).
    private enum Op {
        case ping, pong, connect, pub, hpub, sub, unsub, info, msg, hmsg, ok, err, unknown

        init(_ name: Slice<UnsafeBufferPointer<UInt8>>) {
            func upper(_ byte: UInt8) -> UInt8 { byte >= 0x61 && byte <= 0x7A ? byte - 0x20 : byte }
            var word: UInt64 = 0
            guard name.count <= 8 else {
                self = .unknown
                return
            }
            for byte in name { word = word << 8 | UInt64(upper(byte)) }
            switch word {
            case Op.pack("PING"): self = .ping
            case Op.pack("PONG"): self = .pong
            case Op.pack("CONNECT"): self = .connect
            case Op.pack("PUB"): self = .pub
            case Op.pack("HPUB"): self = .hpub
            case Op.pack("SUB"): self = .sub
            case Op.pack("UNSUB"): self = .unsub
            case Op.pack("INFO"): self = .info
            case Op.pack("MSG"): self = .msg
            case Op.pack("HMSG"): self = .hmsg
            case Op.pack("+OK"): self = .ok
            case Op.pack("-ERR"): self = .err
            default: self = .unknown
            }
        }

        static func pack(_ text: StaticString) -> UInt64 {
            var word: UInt64 = 0
            text.withUTF8Buffer { for byte in $0 { word = word << 8 | UInt64(byte) } }
            return word
        }
    }

    /// The parsing itself, over the buffered bytes of one `bytesReceived`.
    private struct Reader {
        var bytes: UnsafeBufferPointer<UInt8>
        var start: Int
        var awaiting: Awaiting?
        let role: Role
        let maximumControlLine: Int
        let maximumPayload: Int
        var lastSubject: String
        /// Whether a PUB without headers may be handed over as `publishInPlace`.
        var inPlace = false

        enum Item {
            case operation(NATSOperation)
            case publishInPlace(NATSPublishInPlace)
        }

        mutating func next() throws(NATSProtocolError) -> Item? {
            if let total = awaiting?.total {
                guard bytes.count - start >= total + 2 else { return nil }
                let payloadEnd = start + total
                guard bytes[payloadEnd] == 0x0D, bytes[payloadEnd + 1] == 0x0A else {
                    throw NATSProtocolError(.parser, detail: "payload not followed by CRLF")
                }
                defer { start = payloadEnd + 2 }
                if inPlace, case .publish(let subject, let replyTo, nil, _) = awaiting {
                    awaiting = nil
                    return .publishInPlace(NATSPublishInPlace(subject: subject, replyTo: replyTo, payload: start..<payloadEnd))
                }
                // Taken, not copied: a copy would retain the subject and reply strings once more.
                return .operation(try complete(awaiting.take()!, body: start..<payloadEnd))
            }
            guard let newline = bytes[start...].firstIndex(of: 0x0A) else {
                // A line of exactly the maximum may have its CR here and its LF in the next read
                // (found by fuzzing: refused when cut there, accepted whole).
                let carriageReturn = bytes.count > start && bytes[bytes.count - 1] == 0x0D ? 1 : 0
                if bytes.count - start > maximumControlLine + carriageReturn { throw NATSProtocolError(.maximumControlLine) }
                return nil
            }
            var lineEnd = newline
            if lineEnd > start, bytes[lineEnd - 1] == 0x0D { lineEnd -= 1 }
            guard lineEnd - start <= maximumControlLine else { throw NATSProtocolError(.maximumControlLine) }
            let line = start..<lineEnd
            start = newline + 1
            if line.isEmpty { return try next() }
            return try controlLine(line)
        }

        func string(_ range: Range<Int>) -> String {
            String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
        }

        /// A non-negative decimal number, or nil.
        func number(_ range: Range<Int>) -> Int? {
            guard !range.isEmpty, range.count <= 18 else { return nil }
            var value = 0
            for byte in bytes[range] {
                guard byte >= 0x30 && byte <= 0x39 else { return nil }
                value = value * 10 + Int(byte - 0x30)
            }
            return value
        }

        /// A PUB's subject: the last one again when the bytes are the same.
        mutating func subject(_ range: Range<Int>) -> String {
            let same = lastSubject.utf8.withContiguousStorageIfAvailable { $0.elementsEqual(bytes[range]) } ?? false
            if !same { lastSubject = string(range) }
            return lastSubject
        }

        mutating func controlLine(_ line: Range<Int>) throws(NATSProtocolError) -> Item? {
            var opEnd = line.lowerBound
            while opEnd < line.upperBound && !NATSParser.isSpace(bytes[opEnd]) { opEnd += 1 }
            let name = bytes[line.lowerBound..<opEnd]
            var restStart = opEnd
            while restStart < line.upperBound && NATSParser.isSpace(bytes[restStart]) { restStart += 1 }
            let rest = restStart..<line.upperBound
            let arguments = Arguments(bytes, rest)
            let count = arguments.count
            switch (role, Op(name)) {
            case (_, .ping): return .operation(.ping)
            case (_, .pong): return .operation(.pong)
            case (.server, .connect): return .operation(.connect(try json(rest, "CONNECT")))
            case (.server, .pub):
                guard count == 2 || count == 3, let size = number(arguments.last) else {
                    throw NATSProtocolError(.parser, detail: "PUB expects: subject [reply] size")
                }
                try checkPayload(size)
                awaiting = .publish(
                    subject: subject(arguments[0]), replyTo: count == 3 ? string(arguments[1]) : nil, headerSize: nil, total: size)
            case (.server, .hpub):
                guard count == 3 || count == 4, let headerSize = number(arguments[count - 2]), let total = number(arguments.last),
                    total >= headerSize
                else { throw NATSProtocolError(.parser, detail: "HPUB expects: subject [reply] header-size total-size") }
                try checkPayload(total)
                awaiting = .publish(
                    subject: string(arguments[0]), replyTo: count == 4 ? string(arguments[1]) : nil, headerSize: headerSize, total: total)
            case (.server, .sub):
                guard count == 2 || count == 3 else {
                    throw NATSProtocolError(.parser, detail: "SUB expects: subject [queue] sid")
                }
                return .operation(
                    .subscribe(subject: string(arguments[0]), queue: count == 3 ? string(arguments[1]) : nil, sid: string(arguments.last)))
            case (.server, .unsub):
                guard count == 1 || count == 2 else { throw NATSProtocolError(.parser, detail: "UNSUB expects: sid [max]") }
                var max: Int?
                if count == 2 {
                    guard let value = number(arguments[1]) else {
                        throw NATSProtocolError(.parser, detail: "UNSUB max must be a number")
                    }
                    max = value
                }
                return .operation(.unsubscribe(sid: string(arguments[0]), max: max))
            case (.client, .info): return .operation(.info(try json(rest, "INFO")))
            case (.client, .msg):
                guard count == 3 || count == 4, let size = number(arguments.last) else {
                    throw NATSProtocolError(.parser, detail: "MSG expects: subject sid [reply] size")
                }
                try checkPayload(size)
                awaiting = .message(
                    subject: string(arguments[0]), sid: string(arguments[1]), replyTo: count == 4 ? string(arguments[2]) : nil,
                    headerSize: nil, total: size)
            case (.client, .hmsg):
                guard count == 4 || count == 5, let headerSize = number(arguments[count - 2]), let total = number(arguments.last),
                    total >= headerSize
                else { throw NATSProtocolError(.parser, detail: "HMSG expects: subject sid [reply] header-size total-size") }
                try checkPayload(total)
                awaiting = .message(
                    subject: string(arguments[0]), sid: string(arguments[1]), replyTo: count == 5 ? string(arguments[2]) : nil,
                    headerSize: headerSize, total: total)
            case (.client, .ok): return .operation(.ok)
            case (.client, .err):
                var text = string(rest)
                if text.hasPrefix("'") && text.hasSuffix("'") && text.count >= 2 { text = String(text.dropFirst().dropLast()) }
                return .operation(.error(text))
            default:
                throw NATSProtocolError(.unknownOperation, detail: "'\(String(decoding: name, as: UTF8.self).uppercased())'")
            }
            return try next()
        }

        func checkPayload(_ size: Int) throws(NATSProtocolError) {
            guard size <= maximumPayload else {
                throw NATSProtocolError(.maximumPayload, detail: "\(size) bytes, the maximum is \(maximumPayload)")
            }
        }

        func json(_ range: Range<Int>, _ op: String) throws(NATSProtocolError) -> JSONObject {
            do {
                guard let object = try JSONParser.parse(Array(bytes[range])).objectValue else {
                    throw NATSProtocolError(.parser, detail: "\(op) expects a JSON object")
                }
                return object
            } catch let error as NATSProtocolError {
                throw error
            } catch {
                throw NATSProtocolError(.parser, detail: "\(op): \(error)")
            }
        }

        func complete(_ pending: consuming Awaiting, body: Range<Int>) throws(NATSProtocolError) -> NATSOperation {
            func split(_ headerSize: Int?) throws(NATSProtocolError) -> (NATSHeaders?, [UInt8]) {
                guard let headerSize else { return (nil, Array(bytes[body])) }
                let headerEnd = body.lowerBound + headerSize
                return (try NATSHeaders(parsing: Array(bytes[body.lowerBound..<headerEnd])[...]), Array(bytes[headerEnd..<body.upperBound]))
            }
            switch consume pending {
            case .publish(let subject, let replyTo, let headerSize, _):
                let (headers, payload) = try split(headerSize)
                return .publish(subject: subject, replyTo: replyTo, headers: headers, payload: payload)
            case .message(let subject, let sid, let replyTo, let headerSize, _):
                let (headers, payload) = try split(headerSize)
                return .message(subject: subject, sid: sid, replyTo: replyTo, headers: headers, payload: payload)
            }
        }

    }
}

/// A PUB without headers whose payload was left in the bytes given to the parser.
public struct NATSPublishInPlace: Sendable, Equatable {
    public var subject: String
    public var replyTo: String?
    /// Where the payload lies in those bytes (offsets from their start).
    public var payload: Range<Int>

    public init(subject: String, replyTo: String?, payload: Range<Int>) {
        self.subject = subject
        self.replyTo = replyTo
        self.payload = payload
    }
}
