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
            let reply = replyTo.map { " \($0)" } ?? ""
            if let headers {
                let headerSize = headers.bytes.count
                line("HPUB \(subject)\(reply) \(headerSize) \(headerSize + payload.count)")
            } else {
                line("PUB \(subject)\(reply) \(payload.count)")
            }
            body(headers, payload)
        case .message(let subject, let sid, let replyTo, let headers, let payload):
            let reply = replyTo.map { " \($0)" } ?? ""
            if let headers {
                let headerSize = headers.bytes.count
                line("HMSG \(subject) \(sid)\(reply) \(headerSize) \(headerSize + payload.count)")
            } else {
                line("MSG \(subject) \(sid)\(reply) \(payload.count)")
            }
            body(headers, payload)
        case .subscribe(let subject, let queue, let sid): line("SUB \(subject)\(queue.map { " \($0)" } ?? "") \(sid)")
        case .unsubscribe(let sid, let max): line("UNSUB \(sid)\(max.map { " \($0)" } ?? "")")
        case .ok: line("+OK")
        case .error(let text): line("-ERR '\(text)'")
        case .ping: line("PING")
        case .pong: line("PONG")
        }
    }
}
