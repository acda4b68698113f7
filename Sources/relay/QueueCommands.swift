import ArgumentParser
import Foundation
import RelayClient
import RelayCore
import Synchronization

struct Queue: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage durable queues.", subcommands: [Add.self, List.self, Info.self, Remove.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a durable queue that keeps what is published on SUBJECTS.")

        @OptionGroup var client: ClientOptions

        @Argument(help: "The queue's name.")
        var name: String

        @Option(help: "Comma-separated subject filters (wildcards allowed).")
        var subjects: String

        @Option(help: "Deliveries before a message goes to the dead letters.")
        var maxDeliver: Int?

        @Option(help: "How long a delivery may go unanswered: 30s, 500ms, 2m.")
        var ackWait: String = "30s"

        @Option(help: "Where dead letters are published.")
        var deadLetter: String?

        @Option(help: "Keep at most this many messages (the oldest waiting ones are dropped).")
        var maxMessages: Int?

        @Option(help: "Keep at most this many bytes of payload.")
        var maxBytes: Int?

        @Option(help: "Drop messages older than this: 1h, 10m, 30s.")
        var maxAge: String?

        @Option(help: "Expire messages older than this to the dead letters (or drop them without any).")
        var ttl: String?

        func run() async throws {
            try client.requireLIME("queue add")
            guard let ackWait = parseDuration(self.ackWait) else {
                throw ValidationError("--ack-wait: '\(self.ackWait)' is not a duration")
            }
            func seconds(_ text: String?, _ flag: String) throws -> Double? {
                guard let text else { return nil }
                guard let milliseconds = parseDuration(text) else { throw ValidationError("\(flag): '\(text)' is not a duration") }
                return Double(milliseconds) / 1000
            }
            let queue = QueueConfiguration(
                name: name, subjects: subjects.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) },
                maximumMessages: maxMessages, maximumBytes: maxBytes, maximumAgeSeconds: try seconds(maxAge, "--max-age"),
                ackWaitMilliseconds: ackWait, maximumDeliveries: maxDeliver, deadLetterSubject: deadLetter,
                timeToLiveSeconds: try seconds(ttl, "--ttl"))
            if let error = queue.validationError { throw ValidationError(error) }
            let connection = try await client.connect()
            try await connection.createQueue(queue)
            print("queue \(name) created")
            try? await connection.finish()
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "ls", abstract: "List the durable queues.")

        @OptionGroup var client: ClientOptions

        func run() async throws {
            try client.requireLIME("queue ls")
            let connection = try await client.connect()
            for queue in try await connection.queues() {
                let subjects = (queue["subjects"]?.arrayValue ?? []).compactMap(\.stringValue).joined(separator: ",")
                print(
                    "\(queue["name"]?.stringValue ?? "?")  subjects: \(subjects)  messages: \(queue["messages"]?.intValue ?? 0)  consumers: \(queue["consumers"]?.intValue ?? 0)"
                )
            }
            try? await connection.finish()
        }
    }

    struct Info: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a queue's configuration and counts, as JSON.")

        @OptionGroup var client: ClientOptions

        @Argument var name: String

        func run() async throws {
            try client.requireLIME("queue info")
            let connection = try await client.connect()
            do {
                print(JSONWriter.string(try await connection.queueInfo(name)))
            } catch let error as RelayError {
                printError("relay queue info: \(error)")
                throw ExitCode(1)
            }
            try? await connection.finish()
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete a queue and its messages.")

        @OptionGroup var client: ClientOptions

        @Argument var name: String

        func run() async throws {
            try client.requireLIME("queue rm")
            let connection = try await client.connect()
            do {
                try await connection.deleteQueue(name)
            } catch let error as RelayError {
                printError("relay queue rm: \(error)")
                throw ExitCode(1)
            }
            print("queue \(name) deleted")
            try? await connection.finish()
        }
    }
}

/// Reads `30s`, `500ms`, `2m` or a plain number of seconds; returns milliseconds.
func parseDuration(_ text: String) -> Int? {
    let units: [(String, Double)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
    for (suffix, factor) in units where text.hasSuffix(suffix) {
        if let value = Double(text.dropLast(suffix.count)), value > 0 { return Int(value * factor) }
    }
    return Double(text).flatMap { $0 > 0 ? Int($0 * 1000) : nil }
}

struct Consume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Consume a durable queue: one line per delivery, [#N] SUBJECT: DATA (delivery count in parentheses when redelivered).")

    @OptionGroup var client: ClientOptions

    @Argument(help: "The queue.")
    var queue: String

    @Flag(help: "Acknowledge each delivery once printed.")
    var ack = false

    @Option(help: "Exit after this many deliveries.")
    var count: Int?

    @Option(help: "Exit when nothing arrives for this many seconds.")
    var timeout: Double?

    @Option(help: "Unanswered deliveries at once (1 = stop-and-wait).")
    var credit: Int = 1

    func run() async throws {
        try client.requireLIME("consume")
        let connection = try await client.connect()
        reportConnectionEvents(connection.events, as: "relay consume")
        // Without --ack every delivery stays unanswered: credit bounds how many arrive.
        let consumer = try await connection.consume(queue, credit: ack ? credit : max(credit, count ?? credit))
        printError("relay consume: consuming \(queue)")
        let activity = Activity()
        let (ack, count) = (self.ack, self.count)
        let reading = Task {
            var received = 0
            for await delivery in consumer {
                activity.touch()
                received += 1
                let redelivered = delivery.count > 1 ? " (delivery \(delivery.count))" : ""
                FileHandle.standardOutput.write(
                    Data("[#\(received)] \(delivery.publication.subject): \(delivery.publication.text)\(redelivered)\n".utf8))
                if ack { try? await delivery.ack() }
                if let count, received >= count { break }
            }
        }
        if let timeout {
            // Nothing for `timeout` seconds: stop reading.
            Task {
                while !reading.isCancelled {
                    try? await Task.sleep(for: .milliseconds(50))
                    if activity.idleSeconds > timeout { reading.cancel() }
                }
            }
        }
        await reading.value
        reading.cancel()
        // A ping round trip: the acknowledgements have reached the hub.
        _ = try? await connection.ping()
        try? await connection.finish()
    }
}

/// When something last happened, for an idle timeout.
final class Activity: Sendable {
    private let last = Mutex(ContinuousClock.now)
    func touch() { last.withLock { $0 = .now } }
    var idleSeconds: Double {
        let elapsed = ContinuousClock.now - last.withLock { $0 }
        return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    }
}
