import Foundation
import RelayCore
import RelayHub
import Testing

@Suite(.timeLimit(.minutes(1))) struct QueueStoreTests {
    private func temporaryDirectory() -> String {
        let path = NSTemporaryDirectory() + "relay-store-" + UUID().uuidString
        return path
    }

    private func message(_ sequence: Int64) -> StoredMessage {
        StoredMessage(
            sequence: sequence, subject: "orders.\(sequence)", type: "application/json", body: Array(#"{"n":\#(sequence)}"#.utf8),
            metadata: ["traceId": "t\(sequence)"], storedAt: 1_700_000_000_000 + sequence)
    }

    @Test func confirmedMessagesSurviveReopeningWithGroupedCommits() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try await QueueStore.open(directory: directory)
        try await store.saveQueue(QueueConfiguration(name: "orders", subjects: ["orders.>"], maximumDeliveries: 5))
        // Many publishers at once: their appends share transactions.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for sequence in 1...500 { group.addTask { try await store.append(message(Int64(sequence)), to: "orders") } }
            try await group.waitForAll()
        }
        let commits = await store.commits
        #expect(commits < 500, "appends were grouped into \(commits) commits")
        await store.remove(2, from: "orders")
        await store.recordDeliveries(3, of: 1, in: "orders")
        try await store.close()

        let reopened = try await QueueStore.open(directory: directory)
        let queues = try await reopened.loadQueues()
        #expect(queues == [QueueConfiguration(name: "orders", subjects: ["orders.>"], maximumDeliveries: 5)])
        let messages = try await reopened.loadMessages("orders")
        #expect(messages.count == 499)
        #expect(
            messages.first
                == StoredMessage(
                    sequence: 1, subject: "orders.1", type: "application/json", body: Array(#"{"n":1}"#.utf8), metadata: ["traceId": "t1"],
                    deliveries: 3, storedAt: 1_700_000_000_001))
        #expect(messages.map(\.sequence) == [1] + Array(3...500))
        #expect(try await reopened.lastSequence("orders") == 500)
        try await reopened.deleteQueue("orders")
        #expect(try await reopened.loadQueues().isEmpty)
        #expect(try await reopened.loadMessages("orders").isEmpty)
        try await reopened.close()
    }

    @Test func theFileIsInWALMode() async throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try await QueueStore.open(directory: directory)
        try await store.append(message(1), to: "q")
        // WAL mode keeps a -wal file beside the database while it is open.
        #expect(FileManager.default.fileExists(atPath: directory + "/relay.sqlite3-wal"))
        try await store.close()
    }

    @Test func invalidQueueConfigurationsAreRefused() {
        #expect(QueueConfiguration(name: "bad name", subjects: ["a"]).validationError != nil)
        #expect(QueueConfiguration(name: "q", subjects: []).validationError != nil)
        #expect(QueueConfiguration(name: "q", subjects: ["a..b"]).validationError != nil)
        #expect(QueueConfiguration(name: "q", subjects: ["a.>"], deadLetterSubject: "dead.*").validationError != nil)
        #expect(throws: Reason.self) { try QueueConfiguration(json: ["name": "q", "subjects": []]) }
    }
}
