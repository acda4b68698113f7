import Benchmark
import Foundation
import RelayHub

/// Confirmed publication to disk: `concurrency` publishers each wait for their message to be
/// committed (WAL, synchronous=FULL); the store groups what arrives during a commit.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .throughput], scalingFactor: .kilo, maxDuration: .seconds(10), maxIterations: 20)

    for concurrency in [1, 16, 128] {
        Benchmark("confirmed append, \(concurrency) publishers") { benchmark in
            let directory = NSTemporaryDirectory() + "relay-bench-" + UUID().uuidString
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let store = try await QueueStore.open(directory: directory)
            let body = Array(repeating: UInt8(ascii: "x"), count: 128)
            let total = benchmark.scaledIterations.count
            benchmark.startMeasurement()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<concurrency {
                    group.addTask {
                        var sequence = Int64(worker) + 1
                        while sequence <= Int64(total) {
                            try await store.append(
                                StoredMessage(sequence: sequence, subject: "bench", type: nil, body: body, metadata: [:], storedAt: 0),
                                to: "bench")
                            sequence += Int64(concurrency)
                        }
                    }
                }
                try await group.waitForAll()
            }
            benchmark.stopMeasurement()
            try await store.close()
        }
    }
}
