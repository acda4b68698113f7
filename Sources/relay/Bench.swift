import ArgumentParser
import Foundation
import Histogram
import RelayClient
import RelayCore
import Synchronization

/// `relay bench`: end-to-end throughput and latency with Relay's own clients, against a hub over
/// LIME (ws://, tcp://) or NATS, or against a nats-server (nats://), so the same client measures
/// both (scripts/bench-vs-nats runs them side by side).
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure throughput and latency percentiles (p50, p90, p99, p99.9, max) of a workload.",
        discussion: """
            pubsub: publishers → 1 subscriber. fanout: 1 publisher → N subscribers. queue: 1 publisher → a queue \
            group of N. reqrep: requesters each waiting for its answer. confirmed: publishers each waiting until \
            a durable queue (a JetStream stream on nats-server, which needs -js) has stored the message. \
            idle: opens --connections sessions, prints {"connected":N} and holds them until standard input \
            closes (scripts/bench-vs-nats reads the server's memory meanwhile). \
            reconnect: runs the server itself on --server's port (relay serve, or nats-server with --nats-server), \
            connects --subscribers clients (default 10), then --count times (default 5) kills it and starts it \
            again, timing each client from the server listening again to its subscription restored.
            Latency is from the (intended) send time to reception, or to the answer. With --rate the publishers \
            send at a constant rate and latency counts from when each message was due, so a stall is not \
            hidden (no coordinated omission); without it they send as fast as they can, and the latency \
            includes the queueing of that burst.
            """)

    enum Workload: String, ExpressibleByArgument, CaseIterable {
        case pubsub, fanout, queue, reqrep, confirmed, idle, reconnect
    }

    @OptionGroup var client: ClientOptions

    @Argument(help: "pubsub, fanout, queue, reqrep, confirmed, idle or reconnect.")
    var workload: Workload

    @Option(help: "Messages (or requests) in all; default 100000 (10000 for reqrep and confirmed).")
    var count: Int?

    @Option(help: "Run for this many seconds instead of a count.")
    var duration: Double?

    @Option(help: "Payload size in bytes.")
    var size: Int = 128

    @Option(help: "Publishers (pubsub, confirmed) or concurrent requesters (reqrep), one connection each.")
    var publishers: Int = 1

    @Option(help: "Subscribers (fanout, default 10) or queue-group members (queue, default 3), one connection each.")
    var subscribers: Int?

    @Option(help: "Sessions the idle workload opens.")
    var connections: Int = 10_000

    @Option(help: "Send at this many messages per second in all, instead of as fast as possible.")
    var rate: Double?

    enum Filler: String, ExpressibleByArgument {
        /// The same byte over and over: compresses as well as anything can.
        case x
        /// Words and numbers drawn at random from a short list, as text and JSON tend to be; 1,024
        /// different payloads in turn.
        case words
    }

    @Option(help: "What fills the payload after its timestamp: x (one byte repeated) or words (text-like).")
    var filler: Filler = .x

    @Option(
        help:
            "Where subscribers and the responder connect, comma-separated (each in turn); default --server. For traffic across the hubs of a cluster (scripts/bench-cluster)."
    )
    var receiveServer: String?

    @Option(help: "confirmed: copies of the JetStream stream on nats-server (a hub's clustered queues take its own setting).")
    var replicas = 1

    @Flag(help: "reconnect: run nats-server (instead of this relay serve) as the server that is killed and restarted.")
    var natsServer = false

    @Flag(help: "Print a JSON summary instead of text.")
    var json = false

    @Flag(help: "No progress bar (it is shown only on a terminal anyway).")
    var noProgress = false

    func validate() throws {
        guard size >= 24 else { throw ValidationError("--size must be at least 24 bytes (the payload carries the send time)") }
        guard publishers >= 1, (subscribers ?? 1) >= 1 else { throw ValidationError("--publishers and --subscribers must be positive") }
        if let rate, rate <= 0 { throw ValidationError("--rate must be positive") }
        if let duration, duration <= 0 { throw ValidationError("--duration must be positive") }
        if count != nil && duration != nil { throw ValidationError("give --count or --duration, not both") }
    }

    func run() async throws {
        MemoryTuning.apply()
        if workload == .idle { return try await holdIdleSessions() }
        if workload == .reconnect {
            // Clients reconnect with the default policy (what an application gets), for ever.
            return try await ReconnectBench(
                server: client.server, clients: subscribers ?? 10, rounds: count ?? 5, natsServer: natsServer,
                policy: ReconnectPolicy(maximumAttempts: -1), json: json
            ).run()
        }
        let plan = Plan(
            total: duration == nil ? count ?? ([.reqrep, .confirmed].contains(workload) ? 10_000 : 100_000) : nil,
            deadline: duration.map { Self.now() + UInt64($0 * 1e9) }, senders: workload == .fanout || workload == .queue ? 1 : publishers,
            rate: rate)
        let receivers = workload == .fanout ? subscribers ?? 10 : workload == .queue ? subscribers ?? 3 : 1
        let progress = Progress(expected: plan.total)
        let showProgress = !json && !noProgress && isatty(STDERR_FILENO) == 1
        let bar = showProgress ? Task { await progress.draw() } : nil
        let ioBefore = Self.ioBytes()
        var result: Outcome
        switch workload {
        case .pubsub, .fanout, .queue: result = try await publishSubscribe(plan, receivers: receivers, progress: progress)
        case .reqrep, .confirmed, .idle, .reconnect: result = try await requests(plan, progress: progress)
        }
        let ioAfter = Self.ioBytes()
        (result.wireRead, result.wireWritten) = (ioAfter.read - ioBefore.read, ioAfter.written - ioBefore.written)
        bar?.cancel()
        if showProgress { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        report(result, receivers: receivers)
    }

    // MARK: - Workloads

    /// How much to send: a count split over the senders, or until a deadline; paced or not.
    struct Plan: Sendable {
        var total: Int?
        var deadline: UInt64?
        var senders: Int
        var rate: Double?

        /// Messages for sender `index` (nil: until the deadline).
        func share(_ index: Int) -> Int? {
            total.map { $0 / senders + (index < $0 % senders ? 1 : 0) }
        }

        /// Nanoseconds between one sender's messages at the constant rate.
        var interval: Double? { rate.map { 1e9 * Double(senders) / $0 } }
    }

    struct Outcome {
        var sent: Int
        var received: Int
        var expected: Int
        var seconds: Double
        var latencies: Histogram<UInt64>
        /// Bytes the bench process read and wrote (its connections' traffic, compressed or not).
        var wireRead = 0
        var wireWritten = 0
    }

    private func publishSubscribe(_ plan: Plan, receivers count: Int, progress: Progress) async throws -> Outcome {
        let subject = "bench.\(workload.rawValue)"
        var receivers: [any BenchConnection] = []
        var recorders: [LatencyRecorder] = []
        var tasks: [Task<Void, Never>] = []
        let tally = Tally()
        for index in 0..<count {
            let connection = try await receiving(index).connectBench()
            let recorder = LatencyRecorder()
            let task = try await connection.receive(
                subject, queue: workload == .queue ? "bench-workers" : nil, bufferSize: 1 << 20
            ) { payload in
                recorder.record(Self.now() &- Self.sentTime(payload))
                return tally.received()
            }
            receivers.append(connection)
            recorders.append(recorder)
            tasks.append(task)
        }
        var senders: [any BenchConnection] = []
        for _ in 0..<plan.senders { senders.append(try await client.connectBench()) }
        try await interestCrossed()
        let start = Self.now()
        progress.start(at: start)
        let sent = try await withThrowingTaskGroup(of: Int.self) { group in
            for (index, sender) in senders.enumerated() {
                group.addTask {
                    try await send(plan, share: plan.share(index), progress: progress) { try await sender.publish(subject, $0) }
                }
            }
            var sent = 0
            for try await count in group { sent += count }
            return sent
        }
        for sender in senders { try await sender.settle() }
        let expected = sent * (workload == .fanout ? count : 1)
        // What is still on its way gets ten seconds; what does not arrive by then is reported lost.
        let received = await tally.wait(for: expected, timeout: .seconds(10))
        let seconds = Double(Self.now() - start) / 1e9
        for task in tasks { task.cancel() }
        var latencies = LatencyRecorder.empty
        for recorder in recorders { latencies.add(recorder.histogram) }
        for connection in senders + receivers { await connection.close() }
        return Outcome(sent: sent, received: received, expected: expected, seconds: seconds, latencies: latencies)
    }

    private func requests(_ plan: Plan, progress: Progress) async throws -> Outcome {
        var responder: (any BenchConnection)?
        var echo: Task<Void, Never>?
        if workload == .reqrep {
            let connection = try await receiving(0).connectBench()
            echo = try await connection.serveEcho()
            responder = connection
        }
        var senders: [any BenchConnection] = []
        for _ in 0..<plan.senders { senders.append(try await client.connectBench()) }
        try await interestCrossed()
        if workload == .confirmed { try await senders[0].createQueue("bench", subject: "bench.confirmed", replicas: replicas) }
        let latencies = LatencyRecorder()
        let start = Self.now()
        progress.start(at: start)
        let sent = try await withThrowingTaskGroup(of: Int.self) { group in
            for (index, sender) in senders.enumerated() {
                group.addTask {
                    try await send(plan, share: plan.share(index), progress: progress) { payload in
                        if workload == .reqrep {
                            try await sender.request(payload)
                        } else {
                            try await sender.publishConfirmed("bench.confirmed", payload)
                        }
                        latencies.record(Self.now() &- Self.sentTime(payload))
                    }
                }
            }
            var sent = 0
            for try await count in group { sent += count }
            return sent
        }
        let seconds = Double(Self.now() - start) / 1e9
        echo?.cancel()
        for connection in senders + [responder].compactMap({ $0 }) { await connection.close() }
        return Outcome(sent: sent, received: sent, expected: sent, seconds: seconds, latencies: latencies.histogram)
    }

    /// With receivers on other servers of a cluster, their subscriptions take a moment to reach
    /// the publishers' server through the routes; a fixed half second, outside the timing, is
    /// plenty on loopback (a message sent before would be counted lost).
    private func interestCrossed() async throws {
        if receiveServer != nil { try await Task.sleep(for: .milliseconds(500)) }
    }

    /// The client options of receiver `index`: on the `--receive-server`s in turn, or `--server`.
    private func receiving(_ index: Int) -> ClientOptions {
        let servers = receiveServer?.split(separator: ",").map(String.init) ?? []
        guard !servers.isEmpty else { return client }
        var options = client
        options.server = servers[index % servers.count]
        return options
    }

    /// One sender's loop: `share` messages (or until the deadline), as fast as `transmit` goes or
    /// paced at the plan's rate. Each payload carries the time it was due. Returns how many it sent.
    private func send(_ plan: Plan, share: Int?, progress: Progress, _ transmit: ([UInt8]) async throws -> Void) async throws -> Int {
        var sent = 0
        let start = Self.now()
        // Words: 1,024 different payloads in turn, more than any compression window holds, so a
        // compressed stream cannot just refer back to the previous message.
        var payloads = filler == .words ? (0..<1024).map { _ in Self.words(size) } : [[UInt8](repeating: UInt8(ascii: "x"), count: size)]
        var next = 0
        while share.map({ sent < $0 }) ?? (Self.now() < plan.deadline!) {
            var due = Self.now()
            if let interval = plan.interval {
                due = start + UInt64(Double(sent) * interval)
                let now = Self.now()
                // Sleep when ahead; when behind, send at once, stamped with the time it was due.
                if due > now + 200_000 { try await Task.sleep(nanoseconds: due - now) }
            }
            Self.stamp(due, into: &payloads[next])
            try await transmit(payloads[next])
            next = (next + 1) % payloads.count
            sent += 1
            if sent % 256 == 0 { progress.sent(256) }
        }
        progress.sent(sent % 256)
        return sent
    }

    /// Opens `connections` sessions, a hundred at a time, says so on standard output, and keeps
    /// them open until standard input closes.
    private func holdIdleSessions() async throws {
        var sessions: [any BenchConnection] = []
        sessions.reserveCapacity(connections)
        while sessions.count < connections {
            let batch = min(100, connections - sessions.count)
            sessions += try await withThrowingTaskGroup(of: (any BenchConnection).self) { group in
                for _ in 0..<batch { group.addTask { try await client.connectBench() } }
                var opened: [any BenchConnection] = []
                for try await session in group { opened.append(session) }
                return opened
            }
        }
        FileHandle.standardOutput.write(Data((JSONWriter.string(["connected": .number(JSONNumber(sessions.count))]) + "\n").utf8))
        // Standard input is read on a thread of its own; its end releases the sessions.
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread.detachNewThread {
                while readLine() != nil {}
                continuation.resume()
            }
        }
        for session in sessions { await session.close() }
    }

    // MARK: - Measuring

    private static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// The first 20 bytes of a payload: the time it was due, in nanoseconds, as decimal digits.
    private static func stamp(_ time: UInt64, into payload: inout [UInt8]) {
        var value = time
        for index in stride(from: 19, through: 0, by: -1) {
            payload[index] = UInt8(ascii: "0") + UInt8(value % 10)
            value /= 10
        }
    }

    /// `size` bytes of words chosen at random from a short list, separated by spaces.
    static func words(_ size: Int) -> [UInt8] {
        let list = [
            "order", "price", "quantity", "customer", "status", "shipped", "pending", "total", "currency", "EUR", "sku", "warehouse",
        ]
        var generator = SystemRandomNumberGenerator()
        var text: [UInt8] = []
        while text.count < size {
            text += Array(list.randomElement(using: &generator)!.utf8)
            text.append(UInt8(ascii: " "))
            text += Array(String(Int.random(in: 0..<10_000, using: &generator)).utf8)
            text.append(UInt8(ascii: " "))
        }
        return Array(text.prefix(size))
    }

    /// Bytes this process has read and written through system calls (`/proc/self/io`): for the
    /// bench, its sockets' traffic, so what is on the wire after compression.
    static func ioBytes() -> (read: Int, written: Int) {
        guard let text = try? String(contentsOfFile: "/proc/self/io", encoding: .utf8) else { return (0, 0) }
        var values: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":")
            if parts.count == 2 { values[String(parts[0])] = Int(parts[1].trimmingCharacters(in: .whitespaces)) }
        }
        return (values["rchar"] ?? 0, values["wchar"] ?? 0)
    }

    private static func sentTime(_ payload: [UInt8]) -> UInt64 {
        var value: UInt64 = 0
        for byte in payload.prefix(20) {
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { return now() }
            value = value * 10 + UInt64(byte - UInt8(ascii: "0"))
        }
        return value
    }

    private func report(_ outcome: Outcome, receivers: Int) {
        let sentRate = Double(outcome.sent) / outcome.seconds
        let deliveredRate = Double(outcome.received) / outcome.seconds
        let names = ["p50", "p90", "p99", "p99.9"]
        var latency: [String: Double] = [:]
        for (name, percentile) in zip(names, [50.0, 90, 99, 99.9]) {
            latency[name] = Double(outcome.latencies.valueAtPercentile(percentile)) / 1000
        }
        latency["max"] = Double(outcome.latencies.max) / 1000
        let lost = outcome.expected - outcome.received
        if json {
            var object: JSONObject = [
                "workload": .string(workload.rawValue), "server": .string(client.server), "size": .number(JSONNumber(size)),
                "publishers": .number(JSONNumber(workload == .fanout || workload == .queue ? 1 : publishers)),
                "subscribers": .number(JSONNumber(receivers)), "count": .number(JSONNumber(outcome.sent)),
                "delivered": .number(JSONNumber(outcome.received)), "lost": .number(JSONNumber(lost)),
                "seconds": .number(JSONNumber(outcome.seconds)), "messagesPerSecond": .number(JSONNumber(sentRate)),
                "deliveredPerSecond": .number(JSONNumber(deliveredRate)),
            ]
            if let rate { object["rate"] = .number(JSONNumber(rate)) }
            object["wireBytesWritten"] = .number(JSONNumber(outcome.wireWritten))
            object["wireBytesRead"] = .number(JSONNumber(outcome.wireRead))
            var percentiles = JSONObject()
            for key in names + ["max"] { percentiles[key] = .number(JSONNumber(latency[key]!)) }
            object["latencyMicroseconds"] = .object(percentiles)
            print(JSONWriter.string(.object(object)))
            return
        }
        let seconds = String(format: "%.3f", outcome.seconds)
        print("\(workload.rawValue) \(client.server): \(outcome.sent) × \(size) B in \(seconds) s = \(Int(sentRate)) msg/s")
        if outcome.sent > 0 {
            let perMessage = Double(outcome.wireWritten + outcome.wireRead) / Double(outcome.sent)
            print(
                String(
                    format: "on the wire (this process): %d B written, %d B read, %.1f B per message", outcome.wireWritten,
                    outcome.wireRead, perMessage))
        }
        if outcome.received != outcome.sent || receivers > 1 {
            print("delivered: \(outcome.received) (\(Int(deliveredRate)) msg/s)\(lost > 0 ? ", LOST \(lost)" : "")")
        }
        print(
            String(
                format: "latency µs: p50 %.0f  p90 %.0f  p99 %.0f  p99.9 %.0f  max %.0f", latency["p50"]!, latency["p90"]!, latency["p99"]!,
                latency["p99.9"]!, latency["max"]!))
    }
}

/// Latencies in nanoseconds, recorded from any task (up to a minute).
final class LatencyRecorder: Sendable {
    static var empty: Histogram<UInt64> { Histogram(highestTrackableValue: 60_000_000_000) }
    private let state = Mutex(LatencyRecorder.empty)

    func record(_ nanoseconds: UInt64) { state.withLock { _ = $0.record(nanoseconds) } }
    var histogram: Histogram<UInt64> { state.withLock { $0 } }
}

/// Counts deliveries across receivers and wakes the bench when all it expects have arrived.
final class Tally: Sendable {
    private struct State {
        var received = 0
        var expected: Int?
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    /// One more delivery; always true (receivers run until cancelled).
    func received() -> Bool {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.received += 1
            guard let expected = state.expected, state.received >= expected else { return nil }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
        return true
    }

    /// Waits until `expected` deliveries have arrived, at most `timeout`; returns how many did.
    func wait(for expected: Int, timeout: Duration) async -> Int {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let done = self.state.withLock { state -> Bool in
                        state.expected = expected
                        if state.received >= expected { return true }
                        state.waiter = continuation
                        return false
                    }
                    if done { continuation.resume() }
                }
            }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            // Whichever came first: release the other.
            let waiter = state.withLock { state in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
            group.cancelAll()
        }
        return state.withLock { $0.received }
    }
}

/// The progress bar on standard error: messages sent, and the share of the total.
final class Progress: Sendable {
    private let expected: Int?
    private let counts = Mutex((sent: 0, start: UInt64(0)))

    init(expected: Int?) { self.expected = expected }

    func start(at time: UInt64) { counts.withLock { $0.start = time } }
    func sent(_ count: Int) { counts.withLock { $0.sent += count } }

    func draw() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(200))
            let (sent, start) = counts.withLock { ($0.sent, $0.start) }
            guard start > 0 else { continue }
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            var line = "\r\u{1B}[K"
            if let expected, expected > 0 {
                let share = min(Double(sent) / Double(expected), 1)
                let width = 30
                let filled = Int(share * Double(width))
                line += "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "] "
                line += String(format: "%3.0f%% ", share * 100)
            }
            line += "\(sent) sent, \(Int(Double(sent) / max(elapsed, 0.001))) msg/s"
            FileHandle.standardError.write(Data(line.utf8))
        }
    }
}
