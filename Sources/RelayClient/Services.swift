import Foundation
import RelayCore
import Synchronization

/// An error a service handler throws to answer with a particular failure.
public struct ServiceError: Error, Sendable {
    public let reason: Reason

    public init(code: Int = ReasonCode.applicationError, _ description: String) {
        self.reason = Reason(code: code, description: description)
    }

    /// Asks the hub to deliver the request once more, to any instance (nuropb's call-again).
    /// A request that is called again twice fails.
    public static func callAgain(_ description: String = "Call again") -> ServiceError {
        ServiceError(code: RelayReasonCode.callAgain, description)
    }
}

/// What a handler learns about the request it serves.
public struct RequestContext: Sendable {
    /// The caller's node.
    public let caller: Node?
    /// The method called.
    public let method: String
    /// The request's metadata (trace ids and the like; `#deadline` in milliseconds).
    public let metadata: [String: String]
}

/// A service's methods and their handlers, to be served with `LIMEClient.serve`.
///
/// ```swift
/// var inventory = ServiceDefinition("inventory", description: "Stock levels")
/// inventory.method("stock") { (query: StockQuery, _) in StockLevel(count: 3) }
/// let registration = try await client.serve(inventory)
/// ```
public struct ServiceDefinition: Sendable {
    typealias Handler = @Sendable (JSONValue?, RequestContext) async throws -> JSONValue

    public let name: String
    public var description: String?
    public var version: String?
    /// Whether requests go through a durable queue: stored before they are handed out, one at a
    /// time to each instance, redelivered if an instance goes away before answering.
    public var durable = false
    private(set) var methods: [MethodDescription] = []
    private(set) var handlers: [String: Handler] = [:]

    public init(_ name: String, description: String? = nil, version: String? = nil) {
        self.name = name
        self.description = description
        self.version = version
    }

    /// The description registered with the hub.
    public var serviceDescription: ServiceDescription {
        ServiceDescription(name: name, description: description, version: version, methods: methods)
    }

    /// Adds a method whose parameters and result are `Codable` types; its parameter description is
    /// read from `Parameters` (names, JSON types, which are optional).
    public mutating func method<Parameters: Decodable & Sendable, Result: Encodable & Sendable>(
        _ name: String, description: String? = nil, scope: MethodScope = .public, minimumPeriod: Double? = nil,
        minimumEvents: Int? = nil, _ handler: @escaping @Sendable (Parameters, RequestContext) async throws -> Result
    ) {
        let parameters = ParameterInspector.describe(Parameters.self)
        methods.append(
            MethodDescription(
                name: name, description: description, scope: scope, parameters: parameters ?? [], minimumPeriod: minimumPeriod,
                minimumEvents: minimumEvents, acceptsAnyParameters: parameters == nil))
        handlers[name] = { params, context in
            let decoded: Parameters
            do {
                decoded = try JSONDecoder().decode(Parameters.self, from: Data(JSONWriter.bytes(params ?? .object([:]))))
            } catch {
                throw ServiceError(code: ReasonCode.commandInvalidArgument, "Invalid parameters for '\(name)': \(error)")
            }
            let result = try await handler(decoded, context)
            let encoded = try JSONEncoder().encode(result)
            return try JSONParser.parse(Array(encoded))
        }
    }

    /// Adds a method that takes and returns raw JSON; `parameters` nil accepts any parameters.
    /// The name `*` serves every method not named otherwise.
    public mutating func method(
        _ name: String, description: String? = nil, scope: MethodScope = .public, parameters: [ParameterDescription]? = nil,
        minimumPeriod: Double? = nil, minimumEvents: Int? = nil,
        _ handler: @escaping @Sendable (JSONValue?, RequestContext) async throws -> JSONValue
    ) {
        methods.append(
            MethodDescription(
                name: name, description: description, scope: scope, parameters: parameters ?? [], minimumPeriod: minimumPeriod,
                minimumEvents: minimumEvents, acceptsAnyParameters: parameters == nil))
        handlers[name] = handler
    }

    func handler(for method: String) -> Handler? {
        handlers[method] ?? handlers["*"]
    }
}

/// A service being served; `stop()` unregisters it.
public final class ServiceRegistration: Sendable {
    public let name: String
    private let client: LIMEClient
    private let worker: Task<Void, Never>
    private let running: RunningHandlers

    init(name: String, client: LIMEClient, worker: Task<Void, Never>, running: RunningHandlers) {
        self.name = name
        self.client = client
        self.worker = worker
        self.running = running
    }

    /// Reports an event of a method: callers subscribed to every N events of it are answered again.
    public func reportEvent(_ method: String) async throws {
        try await client.send(LIMECommand(method: .observe, uri: "/services/\(name)/\(method)/events"))
    }

    /// Unregisters the service; requests in progress are still answered, and it returns once
    /// their answers are sent (so finishing the connection afterwards does not lose them).
    public func stop() async throws {
        client.core.removeService(name)
        client.core.removeRestoration("service:\(name)")
        worker.cancel()
        let response = try await client.request(LIMECommand(method: .delete, uri: "/services/\(name)"))
        await running.waitUntilIdle()
        if response.status == .failure, let reason = response.reason { throw RelayError(reason) }
    }
}

extension LIMEClient {
    /// Calls a method of a service and returns its result; a failure (no instance, bad parameters,
    /// timeout, the handler's error) throws `RelayError` with the reason. Cancelling the task cancels
    /// the request at the hub. A call in flight when the connection is lost fails with
    /// `LIMEClientError.disconnected`, or with `retry` is made again once reconnected.
    public func call(
        _ service: String, _ method: String, _ params: JSONValue? = nil, verb: CommandMethod = .get, timeout: Duration? = nil,
        metadata: [String: String] = [:], retry: Bool = false
    ) async throws -> JSONValue {
        let deadline = timeout ?? options.requestTimeout
        var metadata = metadata
        metadata["#deadline"] = String(deadline.milliseconds)
        let id = UUID().uuidString.lowercased()
        let command = LIMECommand(
            header: EnvelopeHeader(id: id, metadata: metadata), method: verb, uri: "/services/\(service)/\(method)", resource: params)
        // The hub's deadline answers first; ours is a little later, for a hub that does not answer at all.
        let response = try await withTaskCancellationHandler {
            try await request(command, timeout: deadline + .seconds(2), retry: retry)
        } onCancel: {
            Task {
                try? await self.send(
                    LIMECommand(header: EnvelopeHeader(id: UUID().uuidString.lowercased()), method: .delete, uri: "/requests/\(id)"))
            }
        }
        guard response.status == .success else { throw RelayError(response.reason ?? Reason(code: 1, description: "request failed")) }
        return response.resource ?? .null
    }

    /// Calls a method with `Codable` parameters and result.
    public func call<Parameters: Encodable, Result: Decodable>(
        _ service: String, _ method: String, _ params: Parameters, as: Result.Type, verb: CommandMethod = .get, timeout: Duration? = nil
    ) async throws -> Result {
        let encoded = try JSONParser.parse(Array(try JSONEncoder().encode(params)))
        let result = try await call(service, method, encoded, verb: verb, timeout: timeout)
        return try JSONDecoder().decode(Result.self, from: Data(JSONWriter.bytes(result)))
    }

    /// Sends a command to a service: returns once an instance has accepted it, without waiting for
    /// it to be carried out.
    public func command(_ service: String, _ method: String, _ params: JSONValue? = nil, timeout: Duration? = nil) async throws {
        _ = try await call(service, method, params, verb: .set, timeout: timeout, metadata: ["#kind": "command"])
    }

    /// A standing request: answered now, then every `period` seconds or every `events` events of the
    /// method, until the sequence is left. Each element is a result, or the failure that ended it.
    public func watch(
        _ service: String, _ method: String, _ params: JSONValue? = nil, period: Double? = nil, events: Int? = nil
    ) async throws -> AsyncStream<Result<JSONValue, RelayError>> {
        let id = UUID().uuidString.lowercased()
        var metadata: [String: String] = [:]
        if let period { metadata["#period"] = String(period) }
        if let events { metadata["#events"] = String(events) }
        let (responses, input) = AsyncStream.makeStream(of: LIMECommand.self, bufferingPolicy: .bufferingNewest(100))
        core.addResponseStream(id, input)
        let command = LIMECommand(
            header: EnvelopeHeader(id: id, metadata: metadata), method: .get, uri: "/services/\(service)/\(method)", resource: params)
        try await send(command)
        // Asked again after a reconnection, with the same id: the answers go on in this stream.
        core.addRestoration(.init(key: "watch:\(id)", command: command, awaitsResponse: false))
        let (results, output) = AsyncStream.makeStream(of: Result<JSONValue, RelayError>.self, bufferingPolicy: .bufferingNewest(100))
        let relay = Task {
            for await response in responses {
                if response.status == .success {
                    output.yield(.success(response.resource ?? .null))
                } else {
                    // A failure ends the standing request.
                    output.yield(.failure(RelayError(response.reason ?? Reason(code: 1, description: "failed"))))
                    break
                }
            }
            output.finish()
        }
        output.onTermination = { [core] _ in
            relay.cancel()
            core.removeResponseStream(id)
            core.removeRestoration("watch:\(id)")
            input.finish()
            Task {
                try? await self.send(
                    LIMECommand(header: EnvelopeHeader(id: UUID().uuidString.lowercased()), method: .delete, uri: "/requests/\(id)"))
            }
        }
        return results
    }

    /// The services registered with the hub, as `get /services` lists them.
    public func services() async throws -> [JSONValue] {
        let response = try await request(LIMECommand(method: .get, uri: "/services"))
        guard response.status == .success else { throw RelayError(response.reason ?? Reason(code: 1, description: "failed")) }
        return response.resource?["services"]?.arrayValue ?? []
    }

    /// Registers a service and serves its requests until `stop()` or the session ends; each request
    /// runs in its own task.
    public func serve(_ definition: ServiceDefinition) async throws -> ServiceRegistration {
        let (requests, input) = AsyncStream.makeStream(of: LIMECommand.self)
        core.addService(definition.name, input)
        var description = definition.serviceDescription.json
        if definition.durable { description["durable"] = true }
        let registration = LIMECommand(
            method: .set, uri: "/services/\(definition.name)", type: "application/vnd.relay.service+json", resource: .object(description))
        let response: LIMECommand
        do {
            response = try await request(registration)
        } catch {
            core.removeService(definition.name)
            throw error
        }
        guard response.status == .success else {
            core.removeService(definition.name)
            throw RelayError(response.reason ?? Reason(code: 1, description: "registration failed"))
        }
        core.addRestoration(.init(key: "service:\(definition.name)", command: registration, awaitsResponse: true))
        let running = RunningHandlers()
        let worker = Task { [self] in
            for await request in requests {
                if request.method == .delete, let target = request.uri?.split(separator: "/").last.map(String.init) {
                    // The caller cancelled: stop the handler if it still runs.
                    running.cancel(target)
                    continue
                }
                guard let id = request.header.id else { continue }
                running.start(id) { await self.handle(request, definition: definition) }
            }
        }
        return ServiceRegistration(name: definition.name, client: self, worker: worker, running: running)
    }

    private func handle(_ request: LIMECommand, definition: ServiceDefinition) async {
        let method = request.uri?.split(separator: "/").last.map(String.init) ?? ""
        let context = RequestContext(caller: request.header.from, method: method, metadata: request.header.metadata ?? [:])
        guard let handler = definition.handler(for: method) else {
            try? await send(request.failure(Reason(code: ReasonCode.commandMethodNotSupported, description: "No method '\(method)'")))
            return
        }
        let isCommand = context.metadata["#kind"] == "command"
        if isCommand {
            // A command is confirmed as soon as it is accepted, then carried out.
            try? await send(request.success())
        }
        let reply: LIMECommand
        do {
            let result = try await handler(request.resource, context)
            reply = request.success(type: .applicationJSON, resource: result)
        } catch let error as ServiceError {
            reply = request.failure(error.reason)
        } catch is CancellationError {
            return
        } catch {
            reply = request.failure(Reason(code: ReasonCode.applicationError, description: "\(error)"))
        }
        if !isCommand { try? await send(reply) }
    }
}

/// The handler tasks of a served service, by request id, so a cancellation can stop one.
final class RunningHandlers: Sendable {
    private let tasks = Mutex<[String: Task<Void, Never>]>([:])

    func start(_ id: String, _ body: @escaping @Sendable () async -> Void) {
        tasks.withLock { tasks in
            tasks[id] = Task {
                await body()
                self.finished(id)
            }
        }
    }

    private func finished(_ id: String) {
        _ = tasks.withLock { $0.removeValue(forKey: id) }
    }

    func cancel(_ id: String) {
        tasks.withLock { $0.removeValue(forKey: id) }?.cancel()
    }

    /// Returns once no handler runs (each has sent its answer).
    func waitUntilIdle() async {
        while let task = tasks.withLock({ $0.values.first }) { await task.value }
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
