import RelayCore
import Synchronization

/// What JetStream's API answered with an error (`{"error":{"code":…,"err_code":…,"description":…}}`).
public struct JetStreamError: Error, Equatable, CustomStringConvertible {
    /// The HTTP-like code (400, 404, 503...).
    public var code: Int
    /// JetStream's own error code (10058: stream name already in use...), when given.
    public var errorCode: Int?
    public var text: String

    public var description: String { "JetStream: \(text) (\(code)\(errorCode.map { ", \($0)" } ?? ""))" }
}

/// JetStream, the persistence layer of nats-server, over a `NATSClient`: streams, publications
/// acknowledged once stored (`PubAck`), durable pull consumers, and the acknowledgements of the
/// messages they deliver. It speaks JetStream's JSON API (`$JS.API.…`) with plain requests, so it
/// works through any connection of the client, reconnections included.
public struct JetStream: Sendable {
    let client: NATSClient
    /// The API's prefix (`$JS.API`; another for a JetStream domain).
    public var apiPrefix = "$JS.API"
    /// How long an API request may take.
    public var timeout: Duration = .seconds(5)

    /// A stream's configuration, as far as Relay uses it.
    public struct StreamConfiguration: Sendable, Equatable {
        public var name: String
        public var subjects: [String]
        /// Copies kept on different servers (1 to 5; the cluster needs that many).
        public var replicas = 1
        public var maximumMessages: Int?
        public var maximumBytes: Int?
        public var maximumAge: Duration?
        /// Kept on disk (true) or in memory.
        public var onDisk = true

        public init(name: String, subjects: [String]) {
            self.name = name
            self.subjects = subjects
        }

        var json: JSONObject {
            var object: JSONObject = [
                "name": .string(name), "subjects": .array(subjects.map { .string($0) }), "num_replicas": .number(JSONNumber(replicas)),
                "storage": .string(onDisk ? "file" : "memory"), "retention": "limits", "discard": "old",
            ]
            if let maximumMessages { object["max_msgs"] = .number(JSONNumber(maximumMessages)) }
            if let maximumBytes { object["max_bytes"] = .number(JSONNumber(maximumBytes)) }
            if let maximumAge { object["max_age"] = .number(JSONNumber(Int(maximumAge.nanoseconds))) }
            return object
        }
    }

    /// A durable consumer's configuration: explicit acknowledgements, every message from the start.
    public struct ConsumerConfiguration: Sendable, Equatable {
        public var durableName: String
        /// How long a delivery waits for its acknowledgement before it is delivered again.
        public var ackWait: Duration = .seconds(30)
        /// Deliveries of one message at most (nil: no limit); past it, JetStream sends an advisory.
        public var maximumDeliveries: Int?
        /// Only the stream's messages on this subject (nil: all).
        public var filterSubject: String?

        public init(durableName: String) {
            self.durableName = durableName
        }

        var json: JSONObject {
            var object: JSONObject = [
                "durable_name": .string(durableName), "ack_policy": "explicit", "deliver_policy": "all",
                "ack_wait": .number(JSONNumber(Int(ackWait.nanoseconds))),
                "max_deliver": .number(JSONNumber(maximumDeliveries ?? -1)),
            ]
            if let filterSubject { object["filter_subject"] = .string(filterSubject) }
            return object
        }
    }

    /// What JetStream answered a publication: where it is stored.
    public struct PubAck: Sendable, Equatable {
        public var stream: String
        public var sequence: Int
        /// The publication repeated an earlier one's `Nats-Msg-Id` (within the stream's window).
        public var duplicate: Bool

        public init(stream: String, sequence: Int, duplicate: Bool = false) {
            self.stream = stream
            self.sequence = sequence
            self.duplicate = duplicate
        }
    }

    /// Creates a stream, or finds it as it is when one of that name exists with the same
    /// configuration (JetStream's answer to a repeated create).
    public func createStream(_ configuration: StreamConfiguration) async throws {
        _ = try await api("STREAM.CREATE.\(configuration.name)", .object(configuration.json))
    }

    /// Deletes a stream and its messages.
    public func deleteStream(_ name: String) async throws {
        _ = try await api("STREAM.DELETE.\(name)", nil)
    }

    /// A stream's state: `messages`, `bytes`, `first_seq`, `last_seq`, `consumer_count`...
    public func streamState(_ name: String) async throws -> JSONObject {
        try await api("STREAM.INFO.\(name)", nil)["state"]?.objectValue ?? [:]
    }

    /// One stored message, by its sequence (for a dead letter, say): subject, headers, payload.
    public func storedMessage(stream: String, sequence: Int) async throws -> NATSMessage {
        let answer = try await api("STREAM.MSG.GET.\(stream)", ["seq": .number(JSONNumber(sequence))])
        guard let message = answer["message"]?.objectValue, let subject = message["subject"]?.stringValue else {
            throw JetStreamError(code: 500, text: "no message in the answer")
        }
        let payload = message["data"]?.stringValue.flatMap(Base64.decode) ?? []
        let headers = message["hdrs"]?.stringValue.flatMap(Base64.decode).flatMap { try? NATSHeaders(parsing: $0) }
        return NATSMessage(subject: subject, replyTo: nil, headers: headers, payload: payload)
    }

    /// Removes a message from a stream.
    public func deleteMessage(stream: String, sequence: Int) async throws {
        _ = try await api("STREAM.MSG.DELETE.\(stream)", ["seq": .number(JSONNumber(sequence))])
    }

    /// Publishes and waits until the stream that keeps `subject` has stored it. `messageID`
    /// (`Nats-Msg-Id`) lets JetStream drop a repeat of it, as after a retry.
    public func publish(_ subject: String, _ payload: [UInt8], headers: NATSHeaders? = nil, messageID: String? = nil) async throws
        -> PubAck
    {
        var headers = headers
        if let messageID {
            headers = headers ?? NATSHeaders()
            headers!.append("Nats-Msg-Id", messageID)
        }
        let answer: NATSMessage
        do {
            answer = try await client.request(subject, payload, headers: headers, timeout: timeout)
        } catch NATSClientError.noResponders {
            throw JetStreamError(code: 503, text: "no stream keeps '\(subject)'")
        }
        let object = try Self.checked(answer)
        guard let stream = object["stream"]?.stringValue, let sequence = object["seq"]?.intValue else {
            throw JetStreamError(code: 500, text: "not a PubAck: \(answer.text)")
        }
        return PubAck(stream: stream, sequence: sequence, duplicate: object["duplicate"]?.boolValue ?? false)
    }

    /// Creates a durable consumer of `stream` (or finds it, when the same one exists).
    public func createConsumer(stream: String, _ configuration: ConsumerConfiguration) async throws {
        _ = try await api(
            "CONSUMER.DURABLE.CREATE.\(stream).\(configuration.durableName)",
            ["stream_name": .string(stream), "config": .object(configuration.json)])
    }

    /// Pulls up to `batch` messages from a durable consumer, waiting up to `wait` for the first
    /// ones; returns what came (maybe nothing). Each must be acknowledged (`JetStreamMessage`).
    public func fetch(stream: String, consumer: String, batch: Int, wait: Duration = .seconds(1)) async throws -> [JetStreamMessage] {
        let inbox = client.fetchInbox()
        let subscription = try client.subscribe(inbox, bufferSize: max(batch, 16))
        defer { try? subscription.unsubscribe() }
        let request: JSONObject = ["batch": .number(JSONNumber(batch)), "expires": .number(JSONNumber(Int(wait.nanoseconds)))]
        try client.publish("\(apiPrefix).CONSUMER.MSG.NEXT.\(stream).\(consumer)", JSONWriter.bytes(.object(request)), replyTo: inbox)
        var messages: [JetStreamMessage] = []
        // The server ends the pull itself (a 404 or 408 status) when `wait` passes; the local
        // deadline only covers a server that went away.
        let deadline = Deadline(after: wait + timeout) { try? subscription.unsubscribe() }
        defer { deadline.cancel() }
        for await message in subscription {
            if let status = message.headers?.status {
                // 404: nothing there; 408: the pull expired; 409: the consumer went away.
                if status == 409 { throw JetStreamError(code: 409, text: message.headers?.statusDescription ?? "consumer deleted") }
                if status == 100 { continue }
                break
            }
            guard let delivered = JetStreamMessage(message, client: client) else { continue }
            messages.append(delivered)
            if messages.count == batch { break }
        }
        return messages
    }

    /// Deletes a durable consumer.
    public func deleteConsumer(stream: String, consumer: String) async throws {
        _ = try await api("CONSUMER.DELETE.\(stream).\(consumer)", nil)
    }

    /// One API request: its answer, or the error it reports.
    @discardableResult
    func api(_ operation: String, _ body: JSONValue?) async throws -> JSONObject {
        let payload = body.map { JSONWriter.bytes($0) } ?? []
        let answer: NATSMessage
        do {
            answer = try await client.request("\(apiPrefix).\(operation)", payload, timeout: timeout)
        } catch NATSClientError.noResponders {
            throw JetStreamError(code: 503, text: "JetStream is not enabled on the server")
        }
        return try Self.checked(answer)
    }

    static func checked(_ answer: NATSMessage) throws -> JSONObject {
        guard let value = try? JSONParser.parse(answer.payload), case .object(let object) = value else {
            throw JetStreamError(code: 500, text: "not JSON: \(answer.text)")
        }
        if let error = object["error"]?.objectValue {
            throw JetStreamError(
                code: error["code"]?.intValue ?? 500, errorCode: error["err_code"]?.intValue,
                text: error["description"]?.stringValue ?? "error")
        }
        return object
    }
}

/// A message a durable pull consumer delivered, with what its reply subject tells
/// (`$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`), and
/// its acknowledgements.
public struct JetStreamMessage: Sendable {
    public var message: NATSMessage
    public var stream: String
    public var consumer: String
    /// How many times it has been delivered, this one included.
    public var deliveries: Int
    public var streamSequence: Int
    public var consumerSequence: Int
    /// Messages left for the consumer after this one.
    public var pending: Int
    let client: NATSClient

    init?(_ message: NATSMessage, client: NATSClient) {
        guard let reply = message.replyTo, reply.hasPrefix("$JS.ACK.") else { return nil }
        let tokens = reply.split(separator: ".").map(String.init)
        // $JS ACK <stream> <consumer> <delivered> <stream seq> <consumer seq> <time> <pending>, or
        // with a domain and account hash after ACK (11 or more tokens).
        let fields = tokens.count >= 11 ? Array(tokens[4...]) : Array(tokens[2...])
        guard fields.count >= 7, let deliveries = Int(fields[2]), let streamSequence = Int(fields[3]),
            let consumerSequence = Int(fields[4]), let pending = Int(fields[6])
        else { return nil }
        self.message = message
        self.stream = fields[0]
        self.consumer = fields[1]
        self.deliveries = deliveries
        self.streamSequence = streamSequence
        self.consumerSequence = consumerSequence
        self.pending = pending
        self.client = client
    }

    /// Done with: JetStream forgets it for this consumer.
    public func ack() throws { try reply("+ACK") }

    /// Not done: deliver it again, after `delay` if given.
    public func nak(delay: Duration? = nil) throws {
        guard let delay else { return try reply("-NAK") }
        try reply("-NAK " + JSONWriter.string(.object(["delay": .number(JSONNumber(Int(delay.nanoseconds)))])))
    }

    /// Still working on it: the ack wait starts again.
    public func inProgress() throws { try reply("+WPI") }

    /// Never deliver it again (it goes to no one: a dead letter is the caller's to make).
    public func term() throws { try reply("+TERM") }

    private func reply(_ text: String) throws {
        try client.publish(message.replyTo!, Array(text.utf8))
    }
}

extension NATSClient {
    /// JetStream over this connection.
    public var jetStream: JetStream { JetStream(client: self) }

    /// A fresh inbox for one pull, outside the shared request inbox's `_INBOX.<id>.*`.
    func fetchInbox() -> String {
        let number = state.withLock { state in
            state.nextRequest += 1
            return state.nextRequest
        }
        return inboxPrefix + "F." + String(number)
    }
}

/// Runs `expired` once after a duration unless cancelled first.
private final class Deadline: Sendable {
    private let task: Task<Void, Never>

    init(after duration: Duration, _ expired: @escaping @Sendable () -> Void) {
        task = Task {
            try? await Task.sleep(for: duration)
            if !Task.isCancelled { expired() }
        }
    }

    func cancel() { task.cancel() }
}
