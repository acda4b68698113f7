import Foundation
import NIOCore
import NIOPosix
import RelayCore

/// One API over both dialects: the same program publishes, subscribes (in queue groups), makes
/// requests, calls and serves services and consumes durable queues over LIME (`ws://`, `wss://`,
/// `tcp://`, a Relay hub) or over NATS (`nats://`, `tls://`, a Relay hub or any NATS server),
/// chosen by the URL.
///
/// Over NATS a service is what `relay reply` and the hub make of it: method `M` of service `S` is
/// a request on the subject `S.M`, served by a queue group `S` on `S.>`, a failure told by the NATS
/// micro headers `Nats-Service-Error` and `Nats-Service-Error-Code`. Durable queues need a Relay
/// hub (`$RELAY.QUEUE.NAME`). What NATS cannot express throws `LIMEClientError.unsupported`.
///
/// ```swift
/// let connection = try await RelayConnection.connect(to: "nats://127.0.0.1:4222")
/// let orders = try await connection.subscribe("orders.>", queue: "workers")
/// try await connection.publish("orders.new", ["id": 7])
/// ```
public final class RelayConnection: Sendable {
    /// What either dialect needs to connect.
    public struct Options: Sendable {
        /// LIME: the identity (`name@domain[/instance]`); NATS: the user name.
        public var identity: String?
        /// LIME `plain`; NATS CONNECT's password.
        public var password: String?
        /// LIME `external` (a JWT); NATS CONNECT's `auth_token`.
        public var token: String?
        public var tls: TLSClientOptions?
        public var reconnect = ReconnectPolicy()
        public var requestTimeout: Duration = .seconds(30)

        public init(identity: String? = nil, password: String? = nil, token: String? = nil) {
            self.identity = identity
            self.password = password
            self.token = token
        }
    }

    public enum Dialect: Sendable {
        case lime
        case nats
    }

    enum Backend: Sendable {
        case lime(LIMEClient)
        case nats(NATSClient)
    }

    let backend: Backend

    /// The dialect the URL chose.
    public var dialect: Dialect {
        if case .lime = backend { .lime } else { .nats }
    }

    /// The LIME client underneath, for what only LIME has (messages to nodes, standing requests...).
    public var lime: LIMEClient? {
        if case .lime(let client) = backend { client } else { nil }
    }

    /// The NATS client underneath, for what only NATS has (headers, auto-unsubscribe...).
    public var nats: NATSClient? {
        if case .nats(let client) = backend { client } else { nil }
    }

    init(_ backend: Backend) {
        self.backend = backend
    }

    /// Connects to `url` (or a comma-separated list of URLs of one dialect).
    public static func connect(
        to url: String, options: Options = Options(), group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> RelayConnection {
        let urls = url.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
        let isNATS = { (url: String) in url.lowercased().hasPrefix("nats://") || url.lowercased().hasPrefix("tls://") }
        guard let first = urls.first, urls.allSatisfy({ isNATS($0) == isNATS(first) }) else {
            throw LIMEClientError.invalidURL(url)
        }
        if isNATS(first) {
            var natsOptions = NATSClient.Options(servers: urls)
            natsOptions.user = options.identity
            natsOptions.password = options.password
            natsOptions.token = options.token
            natsOptions.tls = options.tls
            natsOptions.reconnect = options.reconnect
            natsOptions.requestTimeout = options.requestTimeout
            return RelayConnection(.nats(try await NATSClient.connect(options: natsOptions, group: group)))
        }
        var limeOptions = LIMEClient.Options(requestTimeout: options.requestTimeout)
        if let identity = options.identity {
            guard let node = Node(identity) else { throw LIMEClientError.invalidURL("identity '\(identity)' is not name@domain") }
            limeOptions.identity = node.identity
            limeOptions.instance = node.instance
        }
        if let password = options.password {
            limeOptions.authentication = .plain(password: password)
        } else if let token = options.token {
            limeOptions.authentication = .external(token: token)
        }
        limeOptions.tls = options.tls
        limeOptions.reconnect = options.reconnect
        return RelayConnection(.lime(try await LIMEClient.connect(to: urls, options: limeOptions, group: group)))
    }

    /// What happens to the connection (`disconnected`, `reconnected`...).
    public var events: AsyncStream<ConnectionEvent> {
        switch backend {
        case .lime(let client): client.events
        case .nats(let client): client.events
        }
    }

    // MARK: - Publish and subscribe

    /// Publishes `content` on `subject`: over NATS a string as its text, any other JSON value as
    /// JSON text with `Content-Type: application/json` (what the hub gives NATS subscribers of a
    /// LIME publication).
    public func publish(_ subject: String, _ content: JSONValue, type: MediaType? = nil) async throws {
        switch backend {
        case .lime(let client):
            try await client.publish(subject, content, type: type)
        case .nats(let client):
            let (payload, headers) = Self.natsPayload(content, type: type)
            try client.publish(subject, payload, headers: headers)
        }
    }

    /// Subscribes to a subject filter, optionally in a queue group.
    public func subscribe(_ filter: String, queue: String? = nil, bufferSize: Int = 1000) async throws -> RelaySubscription {
        switch backend {
        case .lime(let client):
            return RelaySubscription(.lime(try await client.subscribe(filter, queue: queue, bufferSize: bufferSize)))
        case .nats(let client):
            let subscription = try client.subscribe(filter, queue: queue, bufferSize: bufferSize)
            // Subscribed at the server when this returns, as with LIME.
            try await client.flush()
            return RelaySubscription(.nats(subscription))
        }
    }

    /// Sends a request on a subject and returns the first reply's content.
    public func request(_ subject: String, _ content: JSONValue, timeout: Duration? = nil) async throws -> JSONValue {
        switch backend {
        case .lime(let client):
            return try await client.requestOnSubject(subject, content, timeout: timeout)
        case .nats(let client):
            let (payload, headers) = Self.natsPayload(content, type: nil)
            do {
                return Publication(try await client.request(subject, payload, headers: headers, timeout: timeout)).content
            } catch NATSClientError.noResponders {
                throw RelayError(Reason(code: ReasonCode.routingDestinationNotFound, description: "No one listens on '\(subject)'"))
            }
        }
    }

    // MARK: - Services

    /// Calls `method` of `service` and returns its result; a failure throws `RelayError`.
    public func call(_ service: String, _ method: String, _ params: JSONValue? = nil, timeout: Duration? = nil) async throws -> JSONValue {
        switch backend {
        case .lime(let client):
            return try await client.call(service, method, params, timeout: timeout)
        case .nats(let client):
            let (payload, headers) = Self.natsPayload(params ?? .object([:]), type: nil)
            let reply: NATSMessage
            do {
                reply = try await client.request("\(service).\(method)", payload, headers: headers, timeout: timeout)
            } catch NATSClientError.noResponders {
                throw RelayError(
                    Reason(code: ReasonCode.routingDestinationNotFound, description: "No instance of service '\(service)' is available"))
            }
            if let code = reply.headers?[NATSServiceError.codeHeader].flatMap({ Int($0) }) {
                throw RelayError(Reason(code: code, description: reply.headers?[NATSServiceError.descriptionHeader] ?? ""))
            }
            return Publication(reply).content
        }
    }

    /// Serves a service until `stop()`: over NATS a queue group named after it on `SERVICE.>`.
    public func serve(_ definition: ServiceDefinition) async throws -> RelayServiceRegistration {
        switch backend {
        case .lime(let client):
            return RelayServiceRegistration(.lime(try await client.serve(definition)))
        case .nats(let client):
            if definition.durable { throw LIMEClientError.unsupported("durable services over NATS") }
            let requests = try client.subscribe("\(definition.name).>", queue: definition.name)
            try await client.flush()
            let worker = Task { await Self.answer(requests, of: definition, on: client) }
            return RelayServiceRegistration(.nats(requests, worker, client))
        }
    }

    /// Answers each request of a NATS service in its own task, as `LIMEClient.serve` does.
    private static func answer(_ requests: NATSSubscription, of definition: ServiceDefinition, on client: NATSClient) async {
        await withTaskGroup(of: Void.self) { group in
            for await request in requests {
                guard let replyTo = request.replyTo else { continue }
                group.addTask {
                    let method = String(request.subject.dropFirst(definition.name.count + 1))
                    let metadata = Dictionary(request.headers?.fields.map { ($0.name, $0.value) } ?? [], uniquingKeysWith: { a, _ in a })
                    let context = RequestContext(caller: nil, method: method, metadata: metadata)
                    var headers = NATSHeaders()
                    var payload: [UInt8] = []
                    do {
                        guard let handler = definition.handler(for: method) else {
                            throw ServiceError(code: ReasonCode.commandMethodNotSupported, "No method '\(method)'")
                        }
                        let params = request.payload.isEmpty ? nil : Publication(request).content
                        payload = JSONWriter.bytes(try await handler(params, context))
                        headers.append("Content-Type", "application/json")
                    } catch let error as ServiceError {
                        NATSServiceError.describe(error.reason, in: &headers)
                    } catch {
                        NATSServiceError.describe(Reason(code: ReasonCode.applicationError, description: "\(error)"), in: &headers)
                    }
                    try? client.publish(replyTo, payload, headers: headers)
                }
            }
        }
    }

    // MARK: - Durable queues

    /// Consumes a durable queue with acknowledgements (over NATS, a Relay hub's `$RELAY.QUEUE.NAME`).
    public func consume(_ queue: String, credit: Int = 1) async throws -> RelayConsumer {
        switch backend {
        case .lime(let client):
            return RelayConsumer(.lime(try await client.consume(queue, credit: credit)))
        case .nats(let client):
            guard client.serverInfo["go"]?.stringValue?.hasPrefix("relay") == true else {
                throw LIMEClientError.unsupported("durable queues over NATS need a Relay hub (a NATS server has JetStream instead)")
            }
            let subscription = try client.subscribe(HubCore.queueSubjectPrefix + queue)
            try await client.flush()
            return RelayConsumer(.nats(subscription, client))
        }
    }

    // MARK: - Ending

    /// Finishes cleanly: LIME `finished`; NATS drains (unsubscribes, flushes, closes).
    public func finish() async throws {
        switch backend {
        case .lime(let client): try await client.finish()
        case .nats(let client): try await client.drain()
        }
    }

    /// Closes at once.
    public func close() async {
        switch backend {
        case .lime(let client): await client.close()
        case .nats(let client): await client.close()
        }
    }

    /// A JSON value as NATS carries it: a string as its text, the rest as JSON text with
    /// `Content-Type: application/json`.
    static func natsPayload(_ content: JSONValue, type: MediaType?) -> ([UInt8], NATSHeaders?) {
        if let text = content.stringValue, type == nil || type?.isJSON == false {
            return (Array(text.utf8), type.map { NATSHeaders(fields: [("Content-Type", $0.rawValue)]) })
        }
        return (JSONWriter.bytes(content), NATSHeaders(fields: [("Content-Type", (type ?? .applicationJSON).rawValue)]))
    }
}
