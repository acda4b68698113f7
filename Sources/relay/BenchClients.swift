import Foundation
import RelayClient
import RelayCore

/// What `relay bench` needs of a connection, over either dialect, so each workload is written once.
protocol BenchConnection: Sendable {
    /// Publishes without waiting for the server.
    func publish(_ subject: String, _ payload: [UInt8]) async throws
    /// Waits until the server has everything published so far (or at least the connection has).
    func settle() async throws
    /// Receives publications on `subject` (in `queue` if given) until `handle` returns false.
    func receive(_ subject: String, queue: String?, bufferSize: Int, _ handle: @escaping @Sendable ([UInt8]) -> Bool) async throws
        -> Task<Void, Never>
    /// Answers requests on the bench's request subject (or service) with their payload.
    func serveEcho() async throws -> Task<Void, Never>
    /// One request to the echo, waiting for the answer.
    func request(_ payload: [UInt8]) async throws
    /// Makes sure the durable queue (a JetStream stream on NATS, with `replicas`) `name` keeps `subject`.
    func createQueue(_ name: String, subject: String, replicas: Int) async throws
    /// One publication kept by a durable queue, waiting until the server confirms it is stored.
    func publishConfirmed(_ subject: String, _ payload: [UInt8]) async throws
    func close() async
}

enum BenchError: Error, CustomStringConvertible {
    case unexpectedAnswer(String)

    var description: String {
        switch self {
        case .unexpectedAnswer(let text): "Unexpected answer: \(text)"
        }
    }
}

/// The request subject (NATS) and echo service (LIME) of the request/reply workload.
let benchRequestSubject = "bench.reqrep"

struct NATSBenchConnection: BenchConnection {
    let client: NATSClient

    func publish(_ subject: String, _ payload: [UInt8]) async throws {
        do {
            try client.publish(subject, payload)
        } catch NATSClientError.writeBufferFull {
            // Hold the publisher back until the connection has caught up, then go on.
            await client.writesDrained()
            try client.publish(subject, payload)
        }
        if client.pendingWriteBytes > 8 << 20 { await client.writesDrained() }
    }

    func settle() async throws { try await client.flush() }

    func receive(_ subject: String, queue: String?, bufferSize: Int, _ handle: @escaping @Sendable ([UInt8]) -> Bool) async throws
        -> Task<Void, Never>
    {
        let subscription = try client.subscribe(subject, queue: queue, bufferSize: bufferSize)
        try await client.flush()
        return Task {
            for await message in subscription where !handle(message.payload) { break }
        }
    }

    func serveEcho() async throws -> Task<Void, Never> {
        let requests = try client.subscribe(benchRequestSubject)
        try await client.flush()
        let client = self.client
        return Task {
            for await request in requests { if let replyTo = request.replyTo { try? client.publish(replyTo, request.payload) } }
        }
    }

    func request(_ payload: [UInt8]) async throws {
        _ = try await client.request(benchRequestSubject, payload)
    }

    func createQueue(_ name: String, subject: String, replicas: Int) async throws {
        let configuration: JSONValue = [
            "name": .string(name), "subjects": [.string(subject)], "storage": "file", "num_replicas": .number(JSONNumber(replicas)),
        ]
        let answer = try await client.request("$JS.API.STREAM.CREATE.\(name)", JSONWriter.bytes(configuration))
        let response = try? JSONParser.parse(answer.payload)
        // A stream left by an earlier run (10058: the name is in use) is fine; any other error is not.
        if let error = response?["error"], error["err_code"]?.intValue != 10058 {
            throw BenchError.unexpectedAnswer(answer.text)
        }
    }

    func publishConfirmed(_ subject: String, _ payload: [UInt8]) async throws {
        let answer = try await client.request(subject, payload)
        guard (try? JSONParser.parse(answer.payload))?["seq"] != nil else { throw BenchError.unexpectedAnswer(answer.text) }
    }

    func close() async { await client.close() }
}

struct LIMEBenchConnection: BenchConnection {
    let client: LIMEClient

    private static func content(_ payload: [UInt8]) -> JSONValue { .string(String(decoding: payload, as: UTF8.self)) }

    func publish(_ subject: String, _ payload: [UInt8]) async throws {
        try await client.publish(subject, Self.content(payload), type: .textPlain)
    }

    func settle() async throws { _ = try await client.ping() }

    func receive(_ subject: String, queue: String?, bufferSize: Int, _ handle: @escaping @Sendable ([UInt8]) -> Bool) async throws
        -> Task<Void, Never>
    {
        let subscription = try await client.subscribe(subject, queue: queue, bufferSize: bufferSize, heldAtHub: bufferSize)
        return Task {
            for await publication in subscription where !handle(Array(publication.text.utf8)) { break }
        }
    }

    func serveEcho() async throws -> Task<Void, Never> {
        var echo = ServiceDefinition(benchRequestSubject, description: "relay bench echo")
        echo.method("echo") { params, _ in params ?? .null }
        // The service lasts as long as the connection.
        _ = try await client.serve(echo)
        return Task {}
    }

    func request(_ payload: [UInt8]) async throws {
        _ = try await client.call(benchRequestSubject, "echo", ["data": Self.content(payload)])
    }

    func createQueue(_ name: String, subject: String, replicas: Int) async throws {
        try await client.createQueue(QueueConfiguration(name: name, subjects: [subject]))
    }

    func publishConfirmed(_ subject: String, _ payload: [UInt8]) async throws {
        try await client.publishConfirmed(subject, Self.content(payload), type: .textPlain)
    }

    func close() async { await client.close() }
}

extension ClientOptions {
    /// A connection for the bench in the server's dialect.
    func connectBench() async throws -> any BenchConnection {
        isNATS ? NATSBenchConnection(client: try await connectNATS()) : LIMEBenchConnection(client: try await connect())
    }
}
