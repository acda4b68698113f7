import ArgumentParser
import Foundation
import RelayClient
import RelayCore

/// Reads command-line data as JSON when it is JSON, as text otherwise.
func content(_ text: String) -> JSONValue {
    (try? JSONParser.parse(text)) ?? .string(text)
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data("\(text)\n".utf8))
}

struct Pub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish DATA on SUBJECT; '{{i}}' in DATA becomes the sequence number 1…N.")

    @OptionGroup var client: ClientOptions

    @Argument(help: "The subject, for example orders.created.")
    var subject: String

    @Argument(help: "The data: JSON, or text.")
    var data: String

    @Option(help: "How many messages to publish.")
    var count: Int = 1

    @Flag(help: "Wait for the hub to confirm each publication.")
    var confirm = false

    func run() async throws {
        if client.isNATS { return try await runNATS() }
        let connection = try await client.connect()
        var confirmed = 0
        var failure: (any Error)?
        for sequence in 1...max(count, 1) {
            let body = content(data.replacingOccurrences(of: "{{i}}", with: String(sequence)))
            do {
                if confirm {
                    try await connection.publishConfirmed(subject, body)
                    confirmed += 1
                } else {
                    try await connection.publish(subject, body)
                }
            } catch {
                failure = error
                break
            }
        }
        if confirm { print("confirmed \(confirmed) of \(max(count, 1))") }
        if let failure {
            printError("relay pub: \(failure)")
            throw ExitCode(1)
        }
        // A ping round trip: everything published before it has reached the hub.
        _ = try await connection.ping()
        try await connection.finish()
    }
}

extension Pub {
    /// Over NATS a confirmation is the server's PONG to a PING sent after the publication.
    func runNATS() async throws {
        let connection = try await client.connectNATS()
        let total = max(count, 1)
        var confirmed = 0
        var failure: (any Error)?
        for sequence in 1...total {
            do {
                try connection.publish(subject, data.replacingOccurrences(of: "{{i}}", with: String(sequence)))
                if confirm {
                    try await connection.flush()
                    confirmed += 1
                }
            } catch {
                failure = error
                break
            }
        }
        if confirm { print("confirmed \(confirmed) of \(total)") }
        if let failure {
            printError("relay pub: \(failure)")
            throw ExitCode(1)
        }
        try await connection.drain()
    }
}

struct Sub: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Subscribe to SUBJECT (wildcards * and >) and print one line per delivery: [#N] SUBJECT: DATA.")

    @OptionGroup var client: ClientOptions

    @Argument(help: "The subject filter, for example orders.* or orders.>.")
    var subject: String

    @Option(help: "Join this queue group: each message goes to one member.")
    var queue: String?

    @Option(help: "Exit after this many deliveries.")
    var count: Int?

    func run() async throws {
        if client.isNATS { return try await runNATS() }
        let connection = try await client.connect()
        reportConnectionEvents(connection.events, as: "relay sub")
        let subscription = try await connection.subscribe(subject, queue: queue, bufferSize: 10_000)
        printError("relay sub: subscribed to \(subject)\(queue.map { " in queue group \($0)" } ?? "") as \(connection.localNode)")
        var received = 0
        for await publication in subscription {
            received += 1
            // Written straight away, line by line, so a pipe sees each delivery as it comes.
            FileHandle.standardOutput.write(Data("[#\(received)] \(publication.subject): \(publication.text)\n".utf8))
            if let count, received >= count { break }
        }
        if subscription.droppedCount > 0 { printError("relay sub: \(subscription.droppedCount) messages dropped (slow consumer)") }
        if count.map({ received < $0 }) ?? true {
            // The subscription ended with the session (--no-reconnect, or out of attempts).
            let reason = await connection.waitUntilEnded()
            printError("relay sub: the session ended: \(reason?.description ?? "finished")")
            throw ExitCode.failure
        }
        try? await connection.finish()
    }
}

extension Sub {
    func runNATS() async throws {
        let connection = try await client.connectNATS()
        reportConnectionEvents(connection.events, as: "relay sub")
        let subscription = try connection.subscribe(subject, queue: queue)
        try await connection.flush()
        printError("relay sub: subscribed to \(subject)\(queue.map { " in queue group \($0)" } ?? "") over NATS")
        var received = 0
        for await message in subscription {
            received += 1
            FileHandle.standardOutput.write(Data("[#\(received)] \(message.subject): \(message.text)\n".utf8))
            if let count, received >= count { break }
        }
        if subscription.droppedCount > 0 { printError("relay sub: \(subscription.droppedCount) messages dropped (slow consumer)") }
        if count.map({ received < $0 }) ?? true {
            printError("relay sub: the connection is closed")
            throw ExitCode.failure
        }
        await connection.close()
    }
}

struct Reply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve SERVICE as an echo service: every method answers with its request's parameters.")

    @OptionGroup var client: ClientOptions

    @Argument(help: "The service name.")
    var service: String

    @Option(help: "Exit after answering this many requests.")
    var count: Int?

    func run() async throws {
        if client.isNATS { return try await runNATS() }
        let connection = try await client.connect()
        reportConnectionEvents(connection.events, as: "relay reply")
        let answered = AsyncStream.makeStream(of: Void.self)
        var definition = ServiceDefinition(service, description: "Echo service (relay reply)")
        definition.method("*", description: "Answers with the request's parameters") { params, context in
            answered.continuation.yield()
            return ["method": .string(context.method), "params": params ?? .null]
        }
        let registration = try await connection.serve(definition)
        printError("relay reply: serving \(service) as \(connection.localNode)")
        var total = 0
        for await _ in answered.stream {
            total += 1
            if let count, total >= count { break }
        }
        // A handler counts its request before its answer is sent: stopping waits for the answers,
        // and the ping for the hub to have read them.
        try await registration.stop()
        _ = try await connection.ping()
        try? await connection.finish()
    }
}

extension Reply {
    /// Over NATS a service is a queue group on `SERVICE.>`; the method is the rest of the subject.
    func runNATS() async throws {
        let connection = try await client.connectNATS()
        reportConnectionEvents(connection.events, as: "relay reply")
        let requests = try connection.subscribe("\(service).>", queue: service)
        try await connection.flush()
        printError("relay reply: serving \(service) over NATS on \(service).>")
        var total = 0
        for await request in requests {
            guard let replyTo = request.replyTo else { continue }
            let method = String(request.subject.dropFirst(service.count + 1))
            let params = request.payload.isEmpty ? JSONValue.null : content(request.text)
            var headers = NATSHeaders()
            headers.append("Content-Type", "application/json")
            try connection.publish(replyTo, JSONWriter.bytes(["method": .string(method), "params": params]), headers: headers)
            total += 1
            if let count, total >= count { break }
        }
        try await connection.drain()
    }
}

struct Request: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Call a method of SERVICE and print the result; on failure print the reason and exit non-zero.")

    @OptionGroup var client: ClientOptions

    @Argument(help: "The service name.")
    var service: String

    @Argument(help: "The method (a leading '/' is allowed).")
    var path: String

    @Argument(help: "The parameters, as a JSON object.")
    var parameters: String?

    @Option(help: "The deadline in seconds.")
    var timeout: Double = 30

    @Option(help: "The LIME method of the request: get, set, delete or merge.")
    var verb: String = "get"

    func run() async throws {
        guard let method = CommandMethod(rawValue: verb) else { throw ValidationError("unknown method '\(verb)'") }
        var params: JSONValue?
        if let parameters {
            do { params = try JSONParser.parse(parameters) } catch { throw ValidationError("parameters are not JSON: \(error)") }
        }
        let name = path.hasPrefix("/") ? String(path.dropFirst()) : path
        if client.isNATS { return try await runNATS(method: name, params: params) }
        let connection = try await client.connect()
        do {
            let result = try await connection.call(
                service, name, params, verb: method, timeout: .milliseconds(Int64(timeout * 1000)))
            print(JSONWriter.string(result))
        } catch let error as RelayError {
            printError("relay request: \(error)")
            try? await connection.finish()
            throw ExitCode(1)
        }
        try? await connection.finish()
    }
}

extension Request {
    /// Over NATS a request goes to the subject `SERVICE.METHOD` (how the hub exposes its services
    /// to NATS, and how `relay reply` serves over NATS).
    func runNATS(method: String, params: JSONValue?) async throws {
        let connection = try await client.connectNATS()
        let subject = "\(service).\(method.replacingOccurrences(of: "/", with: "."))"
        do {
            let reply = try await connection.request(
                subject, params.map(JSONWriter.bytes) ?? [], timeout: .milliseconds(Int64(timeout * 1000)))
            if let error = reply.headers?[NATSServiceError.descriptionHeader] {
                printError("relay request: \(error) (code \(reply.headers?[NATSServiceError.codeHeader] ?? "?"))")
                await connection.close()
                throw ExitCode(1)
            }
            print(reply.text)
        } catch let error as NATSClientError {
            printError("relay request: \(error)")
            await connection.close()
            throw ExitCode(1)
        }
        await connection.close()
    }
}

struct Services: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the services registered with the hub.")

    @OptionGroup var client: ClientOptions

    @Flag(help: "Print the full JSON descriptions.")
    var json = false

    func run() async throws {
        try client.requireLIME("services")
        let connection = try await client.connect()
        let services = try await connection.services()
        for service in services {
            if json {
                print(JSONWriter.string(service))
                continue
            }
            let methods = (service["methods"]?.arrayValue ?? []).compactMap { $0["name"]?.stringValue }.joined(separator: ", ")
            let instances = service["instances"]?.intValue ?? 0
            print("\(service["name"]?.stringValue ?? "?")  instances: \(instances)  methods: \(methods)")
        }
        try? await connection.finish()
    }
}
