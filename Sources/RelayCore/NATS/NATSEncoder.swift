/// Writes NATS operations as bytes.
public enum NATSEncoder {
    public static func encode(_ operation: NATSOperation) -> [UInt8] {
        var output: [UInt8] = []
        encode(operation, into: &output)
        return output
    }

    public static func encode(_ operation: NATSOperation, into output: inout [UInt8]) {
        func line(_ text: String) {
            output.append(contentsOf: text.utf8)
            output.append(contentsOf: [0x0D, 0x0A])
        }
        func body(_ headers: NATSHeaders?, _ payload: [UInt8]) {
            if let headers { output.append(contentsOf: headers.bytes) }
            output.append(contentsOf: payload)
            output.append(contentsOf: [0x0D, 0x0A])
        }
        switch operation {
        case .connect(let object): line("CONNECT " + JSONWriter.string(.object(object)))
        case .info(let object): line("INFO " + JSONWriter.string(.object(object)))
        case .publish(let subject, let replyTo, let headers, let payload):
            // MSG and PUB go out per message: written byte by byte, without building strings.
            let headerSize = headers?.bytes.count
            reserve(subject.utf8.count + (replyTo?.utf8.count ?? 0) + payload.count + (headerSize ?? 0) + 40, in: &output)
            output.append(contentsOf: headers == nil ? "PUB ".utf8 : "HPUB ".utf8)
            fields(subject, nil, replyTo, headerSize, payload.count, into: &output)
            body(headers, payload)
        case .message(let subject, let sid, let replyTo, let headers, let payload):
            let headerSize = headers?.bytes.count
            reserve(subject.utf8.count + sid.utf8.count + (replyTo?.utf8.count ?? 0) + payload.count + (headerSize ?? 0) + 40, in: &output)
            output.append(contentsOf: headers == nil ? "MSG ".utf8 : "HMSG ".utf8)
            fields(subject, sid, replyTo, headerSize, payload.count, into: &output)
            body(headers, payload)
        case .subscribe(let subject, let queue, let sid): line("SUB \(subject)\(queue.map { " \($0)" } ?? "") \(sid)")
        case .unsubscribe(let sid, let max): line("UNSUB \(sid)\(max.map { " \($0)" } ?? "")")
        case .ok: line("+OK")
        case .error(let text): line("-ERR '\(text)'")
        case .ping: line("PING")
        case .pong: line("PONG")
        }
    }

    /// The MSG a subscriber with subscription `sid` receives, written straight from the publication
    /// when it is bytes without headers (NATS to NATS, per delivery); otherwise as
    /// `PublishedMessage.natsOperation` renders it.
    public static func encodeMessage(_ message: PublishedMessage, sid: String, headersEnabled: Bool) -> [UInt8] {
        var output: [UInt8] = []
        encodeMessage(message, sid: sid, headersEnabled: headersEnabled, into: &output)
        return output
    }

    /// `encodeMessage`, appended to `output` (a batch of writes for one connection).
    public static func encodeMessage(_ message: PublishedMessage, sid: String, headersEnabled: Bool, into output: inout [UInt8]) {
        guard case .bytes(let payload) = message.body, !headersEnabled || !message.mayHaveNATSHeaders else {
            encode(message.natsOperation(sid: sid, headersEnabled: headersEnabled), into: &output)
            return
        }
        payload.withUnsafeBytes { encodeMessage(subject: message.subject, sid: sid, replyTo: message.replyTo, payload: $0, into: &output) }
    }

    /// A MSG without headers, its payload copied from where it lies (a hub forwarding a PUB from
    /// the bytes it read).
    public static func encodeMessage(
        subject: String, sid: String, replyTo: String?, payload: UnsafeRawBufferPointer, into output: inout [UInt8]
    ) {
        reserve(subject.utf8.count + sid.utf8.count + (replyTo?.utf8.count ?? 0) + payload.count + 40, in: &output)
        output.append(contentsOf: "MSG ".utf8)
        fields(subject, sid, replyTo, nil, payload.count, into: &output)
        output.append(contentsOf: payload)
        output.append(0x0D)
        output.append(0x0A)
    }

    /// Room for `count` more bytes, growing geometrically: reserving exactly what each of many
    /// appends to one batch needs would reallocate the batch every time.
    private static func reserve(_ count: Int, in output: inout [UInt8]) {
        let needed = output.count + count
        if needed > output.capacity { output.reserveCapacity(Swift.max(needed, output.capacity * 2)) }
    }

    /// `subject [sid] [reply] [header-size] total-size CRLF`.
    private static func fields(
        _ subject: String, _ sid: String?, _ replyTo: String?, _ headerSize: Int?, _ payloadSize: Int, into output: inout [UInt8]
    ) {
        appendUTF8(subject, to: &output)
        if let sid {
            output.append(0x20)
            appendUTF8(sid, to: &output)
        }
        if let replyTo {
            output.append(0x20)
            appendUTF8(replyTo, to: &output)
        }
        output.append(0x20)
        if let headerSize {
            decimal(headerSize, into: &output)
            output.append(0x20)
        }
        decimal((headerSize ?? 0) + payloadSize, into: &output)
        output.append(0x0D)
        output.append(0x0A)
    }

    /// A string's bytes, copied at once (appending its `utf8` view goes byte by byte).
    private static func appendUTF8(_ text: String, to output: inout [UInt8]) {
        var text = text
        text.withUTF8 { output.append(contentsOf: $0) }
    }

    private static func decimal(_ value: Int, into output: inout [UInt8]) {
        var divisor = 1
        while divisor <= value / 10 { divisor *= 10 }
        while divisor > 0 {
            output.append(0x30 + UInt8(value / divisor % 10))
            divisor /= 10
        }
    }
}
