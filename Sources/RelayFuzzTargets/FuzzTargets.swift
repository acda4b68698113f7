import RelayCore

/// The fuzz targets: each reads any bytes and checks what must hold whatever they are, returning
/// what went wrong (nil when all held). A crash, a trap or a leak is found by the sanitizers;
/// a broken invariant by the target. `relay-fuzz` runs them under libFuzzer (`scripts/fuzz`),
/// and `FuzzCorpusTests` runs the corpus kept in the repository through them on every test run.
public enum FuzzTarget: String, CaseIterable, Sendable {
    case limeFramer = "lime-framer"
    case limeDecoder = "lime-decoder"
    case publicationScanner = "publication-scanner"
    case deliveryScanner = "delivery-scanner"
    case json
    case natsServer = "nats-server"
    case natsClient = "nats-client"
    case subjectIndex = "subject-index"
    case webSocket = "websocket"

    /// Runs the target on one input.
    public func run(_ data: UnsafeBufferPointer<UInt8>) -> String? {
        switch self {
        case .limeFramer: Self.limeFramer(data)
        case .limeDecoder: Self.limeDecoder(data)
        case .publicationScanner: Self.publicationScanner(data)
        case .deliveryScanner: Self.deliveryScanner(data)
        case .json: Self.json(data)
        case .natsServer: Self.nats(data, role: .server)
        case .natsClient: Self.nats(data, role: .client)
        case .subjectIndex: Self.subjectIndex(data)
        case .webSocket: Self.webSocket(data)
        }
    }

    /// The first byte says how a stream is cut into reads (1 to 64 bytes each); the rest is the stream.
    private static func plan(_ data: UnsafeBufferPointer<UInt8>) -> (chunk: Int, stream: [UInt8]) {
        guard let first = data.first else { return (1, []) }
        return (Int(first % 64) + 1, Array(data.dropFirst()))
    }

    private static func chunks(_ bytes: [UInt8], _ size: Int) -> [ArraySlice<UInt8>] {
        stride(from: 0, to: bytes.count, by: size).map { bytes[$0..<min($0 + size, bytes.count)] }
    }

    // MARK: - LIME

    /// Envelopes are the same however the stream is cut, each a balanced object.
    static func limeFramer(_ data: UnsafeBufferPointer<UInt8>) -> String? {
        let (size, stream) = plan(data)
        let limit = 4096
        var whole = LIMEStreamFramer(maximumEnvelopeSize: limit)
        var cut = LIMEStreamFramer(maximumEnvelopeSize: limit)
        let all = Result { () throws(LIMEStreamFramer.EnvelopeTooLarge) in try whole.bytesReceived(stream) }
        var pieces: [[UInt8]] = []
        var failed = false
        for chunk in chunks(stream, size) {
            do { pieces += try cut.bytesReceived(chunk) } catch {
                failed = true
                break
            }
        }
        switch all {
        case .success(let envelopes):
            if failed { return "a cut stream was refused, the whole one not" }
            if envelopes != pieces { return "envelopes differ between the whole and the cut stream" }
            for envelope in envelopes where envelope.first != UInt8(ascii: "{") || envelope.last != UInt8(ascii: "}") {
                return "an envelope is not an object"
            }
            if whole.bufferedByteCount > limit || cut.bufferedByteCount > limit { return "more than the limit held" }
        case .failure:
            if !failed { return "the whole stream was refused, the cut one not" }
        }
        return nil
    }

    /// What decodes encodes to what decodes the same.
    static func limeDecoder(_ data: UnsafeBufferPointer<UInt8>) -> String? {
        guard let envelope = try? LIMECodec.decode(data, maximumDepth: 32) else { return nil }
        let encoded = LIMECodec.encode(envelope)
        guard let again = try? LIMECodec.decode(encoded, maximumDepth: 64) else { return "an encoded envelope does not decode" }
        return again == envelope ? nil : "an envelope changed through encoding"
    }

    /// What the hub's scanner accepts, the decoder reads as the same publication.
    static func publicationScanner(_ data: UnsafeBufferPointer<UInt8>) -> String? {
        var scanner = LIMEPublicationScanner()
        guard let publication = scanner.scan(data, maximumDepth: 32) else { return nil }
        guard case .command(let decoded)? = try? LIMECodec.decode(data, maximumDepth: 32) else {
            return "the scanner accepted what the decoder refuses"
        }
        let command = publication.command(from: nil, envelope: UnsafeRawBufferPointer(data))
        if command != decoded { return "the scanner's command differs from the decoder's" }
        if decoded.uri != "/topics/" + publication.subject { return "the subject differs" }
        return Array(data[publication.resource]) == (decoded.resourceBody?.jsonBytes ?? []) ? nil : "the resource's bytes differ"
    }

    /// What the client's scanner accepts, the decoder reads as the same delivery.
    static func deliveryScanner(_ data: UnsafeBufferPointer<UInt8>) -> String? {
        var scanner = LIMEDeliveryScanner()
        guard let delivery = scanner.scan(data, maximumDepth: 32) else { return nil }
        guard case .message(let decoded)? = try? LIMECodec.decode(data, maximumDepth: 32) else {
            return "the scanner accepted what the decoder refuses"
        }
        let metadata = decoded.header.metadata ?? [:]
        if metadata["#subject"] != delivery.subject || metadata["#subscription"] != delivery.subscription {
            return "subject or subscription differ"
        }
        if decoded.header.from != delivery.publisher { return "the publisher differs" }
        if decoded.type != delivery.type { return "the type differs" }
        return Array(data[delivery.content]) == decoded.body.jsonBytes ? nil : "the content's bytes differ"
    }

    // MARK: - JSON

    /// What parses, written and parsed again, is the same value.
    static func json(_ data: UnsafeBufferPointer<UInt8>) -> String? {
        guard let value = try? JSONParser.parse(data, maximumDepth: 32) else { return nil }
        var written: [UInt8] = []
        JSONWriter.write(value, into: &written)
        guard let again = try? JSONParser.parse(written, maximumDepth: 64) else { return "written JSON does not parse" }
        return again == value ? nil : "a value changed through writing"
    }

    // MARK: - NATS

    /// Operations are the same however the stream is cut, and whether PUBs are taken in place.
    static func nats(_ data: UnsafeBufferPointer<UInt8>, role: NATSParser.Role) -> String? {
        let (size, stream) = plan(data)
        var whole = NATSParser(role: role, maximumControlLine: 256, maximumPayload: 4096)
        var cut = NATSParser(role: role, maximumControlLine: 256, maximumPayload: 4096)
        var expected: [NATSOperation] = []
        var wholeFailed = false
        do { try whole.bytesReceived(stream) { expected.append($0) } } catch { wholeFailed = true }
        var operations: [NATSOperation] = []
        var cutFailed = false
        for chunk in chunks(stream, size) {
            do {
                try Array(chunk).withUnsafeBufferPointer { read throws(NATSProtocolError) in
                    try cut.bytesReceived(read, { operations.append($0) }) { publication in
                        // Taken in place: what the hub forwards must be the PUB the parser would give.
                        operations.append(
                            .publish(
                                subject: publication.subject, replyTo: publication.replyTo, headers: nil,
                                payload: Array(read[publication.payload])))
                        return true
                    }
                }
            } catch {
                cutFailed = true
                break
            }
        }
        if wholeFailed != cutFailed { return "one way of reading refused the stream, the other not" }
        if !wholeFailed, operations != expected { return "operations differ between the whole and the cut stream" }
        if whole.bufferedByteCount > 256 + 4096 + 4 || cut.bufferedByteCount > 256 + 4096 + 4 { return "more than the limits held" }
        return nil
    }

    // MARK: - Subjects

    /// The index matches what the token-by-token definition matches, through inserts and removals.
    static func subjectIndex(_ data: UnsafeBufferPointer<UInt8>) -> String? {
        var index = SubjectIndex<Int>(cacheCapacity: 8)
        var model: [(entry: Int, filter: String)] = []
        var bytes = data.makeIterator()
        func name(wildcards: Bool) -> String? {
            guard let count = bytes.next() else { return nil }
            var tokens: [String] = []
            for position in 0..<(Int(count % 4) + 1) {
                guard let byte = bytes.next() else { return nil }
                let alphabet = wildcards ? ["a", "b", "c", "*", ">"] : ["a", "b", "c"]
                var token = alphabet[Int(byte) % alphabet.count]
                if token == ">" && position != Int(count % 4) { token = "*" }
                tokens.append(token)
            }
            return tokens.joined(separator: ".")
        }
        // At most 32 operations an input: the model is checked by brute force, which longer inputs
        // made slow without finding more (what a few hundred bytes cannot reach, many do not either).
        var operations = 0
        while let operation = bytes.next(), operations < 32 {
            operations += 1
            switch operation % 3 {
            case 0:
                guard let entry = bytes.next(), let filter = name(wildcards: true) else { return nil }
                let pair = (Int(entry % 8), filter)
                if !model.contains(where: { $0 == pair }) {
                    index.insert(pair.0, filter: filter)
                    model.append(pair)
                }
            case 1:
                guard let entry = bytes.next(), let filter = name(wildcards: true) else { return nil }
                let pair = (Int(entry % 8), filter)
                let removed = index.remove(pair.0, filter: filter)
                let known = model.firstIndex { $0 == pair }
                if removed != (known != nil) { return "remove disagrees with what was inserted" }
                if let known { model.remove(at: known) }
            default:
                guard let subject = name(wildcards: false) else { return nil }
                let matched = Set(index.match(subject))
                let expected = Set(model.filter { Subject.matches(filter: $0.filter, subject: subject) }.map(\.entry))
                if matched != expected { return "matches of '\(subject)' differ from the definition" }
            }
        }
        return nil
    }

    // MARK: - WebSocket

    /// Messages are the same however the stream is cut; nothing is read after a failure.
    static func webSocket(_ data: UnsafeBufferPointer<UInt8>) -> String? {
        let (size, stream) = plan(data)
        func read(_ pieces: [ArraySlice<UInt8>]) -> [String] {
            var parser = WebSocketFrameParser(expectsMaskedFrames: true, maximumMessageSize: 4096)
            // Compressed frames are read too (RSV1), as by a hub that negotiated permessage-deflate.
            parser.allowsCompression = size % 2 == 0
            var pending: [UInt8] = []
            var seen: [String] = []
            for piece in pieces {
                pending += piece
                let (events, consumed) = pending.withUnsafeMutableBufferPointer { buffer in
                    let (events, consumed) = parser.parse(buffer)
                    // Messages point into the buffer: read them before it changes.
                    let described = events.map { event -> String in
                        switch event {
                        case .message(let range): "message \(Array(buffer[range]))"
                        case .joinedMessage(let bytes): "message \(bytes)"
                        case .compressedMessage(let bytes): "compressed \(bytes)"
                        case .ping(let range): "ping \(Array(buffer[range]))"
                        case .pong: "pong"
                        case .close(let code): "close \(code.map(String.init) ?? "-")"
                        case .failed(let code, _): "failed \(code)"
                        }
                    }
                    return (described, consumed)
                }
                seen += events
                pending.removeFirst(consumed)
                if seen.last?.hasPrefix("failed") == true { return seen }
                if pending.count > 4096 + 14 + 4096 { return seen + ["held too much"] }
            }
            return seen
        }
        let whole = read([stream[...]])
        let cut = read(chunks(stream, size))
        if whole.contains("held too much") || cut.contains("held too much") { return "more than a header and a message held" }
        return whole == cut ? nil : "events differ between the whole and the cut stream"
    }
}
