import Foundation
import Logging
import NIOCore
import NIOPosix
import RelayCore
import SQLiteNIO

/// A message kept by a durable queue.
public struct StoredMessage: Sendable, Equatable {
    /// The message's place in its queue (increasing).
    public var sequence: Int64
    public var subject: String
    public var type: String?
    public var body: [UInt8]
    public var metadata: [String: String]
    /// How many times it has been delivered.
    public var deliveries: Int
    /// When it was stored, in milliseconds since 1970.
    public var storedAt: Int64

    public init(
        sequence: Int64, subject: String, type: String?, body: [UInt8], metadata: [String: String], deliveries: Int = 0, storedAt: Int64
    ) {
        self.sequence = sequence
        self.subject = subject
        self.type = type
        self.body = body
        self.metadata = metadata
        self.deliveries = deliveries
        self.storedAt = storedAt
    }
}

/// Durable queues in a SQLite file (WAL mode, `synchronous=FULL`).
///
/// Writes are grouped: appends, removals and delivery counts that arrive while a transaction is
/// being committed go into the next one, so many publishers share each fsync. `append` returns only
/// once its transaction is committed: a publisher confirmed after that finds its message again after
/// a crash (`kill -9`) or a restart.
public actor QueueStore {
    public enum Write: Sendable {
        case append(queue: String, message: StoredMessage)
        case remove(queue: String, sequence: Int64)
        case deliveries(queue: String, sequence: Int64, count: Int)
        case saveQueue(QueueConfiguration)
        case deleteQueue(String)
    }

    private let connection: SQLiteConnection
    private var pending: [(Write, CheckedContinuation<Void, any Error>?)] = []
    private var committing = false
    /// Transactions committed, for statistics and tests.
    public private(set) var commits = 0
    public private(set) var writesCommitted = 0

    private init(connection: SQLiteConnection) {
        self.connection = connection
    }

    /// Opens (or creates) `relay.sqlite3` in `directory`.
    public static func open(directory: String) async throws -> QueueStore {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = (directory as NSString).appendingPathComponent("relay.sqlite3")
        let connection = try await SQLiteConnection.open(
            storage: .file(path: path), threadPool: .singleton, on: MultiThreadedEventLoopGroup.singleton.any())
        for statement in [
            "PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL",
            "CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY, config TEXT NOT NULL)",
            """
            CREATE TABLE IF NOT EXISTS messages (queue TEXT NOT NULL, seq INTEGER NOT NULL, subject TEXT NOT NULL, type TEXT,
            body BLOB NOT NULL, metadata TEXT NOT NULL, deliveries INTEGER NOT NULL DEFAULT 0, stored_at INTEGER NOT NULL,
            PRIMARY KEY (queue, seq))
            """,
        ] {
            _ = try await connection.query(statement)
        }
        return QueueStore(connection: connection)
    }

    // MARK: - Queues

    /// Stores a queue's configuration; returns once it is on disk.
    public func saveQueue(_ queue: QueueConfiguration) async throws {
        try await write(.saveQueue(queue))
    }

    /// Forgets a queue and its messages; returns once that is on disk.
    public func deleteQueue(_ name: String) async throws {
        try await write(.deleteQueue(name))
    }

    private func write(_ write: Write) async throws {
        try await withCheckedThrowingContinuation { continuation in
            pending.append((write, continuation))
            startCommitting()
        }
    }

    /// Queues a write without waiting for it; it is committed with the next group.
    public func enqueue(_ write: Write) {
        pending.append((write, nil))
        startCommitting()
    }

    public func loadQueues() async throws -> [QueueConfiguration] {
        try await connection.query("SELECT config FROM queues ORDER BY name").compactMap { row in
            guard let text = row.column("config")?.string, let object = try JSONParser.parse(text).objectValue else { return nil }
            return try QueueConfiguration(json: object)
        }
    }

    /// The messages of a queue, in order.
    public func loadMessages(_ queue: String) async throws -> [StoredMessage] {
        let rows = try await connection.query(
            "SELECT seq, subject, type, body, metadata, deliveries, stored_at FROM messages WHERE queue = ? ORDER BY seq", [.text(queue)])
        return rows.map { row in
            var metadata: [String: String] = [:]
            if let text = row.column("metadata")?.string, let object = try? JSONParser.parse(text).objectValue {
                for member in object { metadata[member.key] = member.value.stringValue }
            }
            let body = row.column("body")?.blob.map { Array($0.readableBytesView) } ?? []
            return StoredMessage(
                sequence: Int64(row.column("seq")?.integer ?? 0), subject: row.column("subject")?.string ?? "",
                type: row.column("type")?.string, body: body, metadata: metadata, deliveries: row.column("deliveries")?.integer ?? 0,
                storedAt: Int64(row.column("stored_at")?.integer ?? 0))
        }
    }

    /// The highest sequence used in a queue (0 when empty).
    public func lastSequence(_ queue: String) async throws -> Int64 {
        let rows = try await connection.query("SELECT MAX(seq) AS last FROM messages WHERE queue = ?", [.text(queue)])
        return Int64(rows.first?.column("last")?.integer ?? 0)
    }

    // MARK: - Grouped writes

    /// Stores a message; returns once it is committed to disk.
    public func append(_ message: StoredMessage, to queue: String) async throws {
        try await withCheckedThrowingContinuation { continuation in
            pending.append((.append(queue: queue, message: message), continuation))
            startCommitting()
        }
    }

    /// Stores several messages (of one or more queues) in one group; returns once all are on disk.
    public func append(_ messages: [(queue: String, message: StoredMessage)]) async throws {
        guard let last = messages.last else { return }
        for item in messages.dropLast() { pending.append((.append(queue: item.queue, message: item.message), nil)) }
        try await withCheckedThrowingContinuation { continuation in
            pending.append((.append(queue: last.queue, message: last.message), continuation))
            startCommitting()
        }
    }

    /// Forgets an acknowledged (or dead-lettered, or expired) message; committed with the next group.
    public func remove(_ sequence: Int64, from queue: String) {
        pending.append((.remove(queue: queue, sequence: sequence), nil))
        startCommitting()
    }

    /// Records how often a message has been delivered, so a restart keeps counting.
    public func recordDeliveries(_ count: Int, of sequence: Int64, in queue: String) {
        pending.append((.deliveries(queue: queue, sequence: sequence, count: count), nil))
        startCommitting()
    }

    /// Waits until everything written so far is committed.
    public func sync() async throws {
        try await withCheckedThrowingContinuation { continuation in
            pending.append((.deliveries(queue: "", sequence: -1, count: 0), continuation))
            startCommitting()
        }
    }

    private func startCommitting() {
        guard !committing else { return }
        committing = true
        Task { await self.commitLoop() }
    }

    private func commitLoop() async {
        while !pending.isEmpty {
            let batch = pending
            pending.removeAll(keepingCapacity: true)
            var failure: (any Error)?
            do {
                _ = try await connection.query("BEGIN IMMEDIATE")
                for (write, _) in batch {
                    switch write {
                    case .append(let queue, let message):
                        var metadata = JSONObject()
                        for key in message.metadata.keys.sorted() { metadata[key] = .string(message.metadata[key]!) }
                        _ = try await connection.query(
                            "INSERT OR REPLACE INTO messages (queue, seq, subject, type, body, metadata, deliveries, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            [
                                .text(queue), .integer(Int(message.sequence)), .text(message.subject),
                                message.type.map { .text($0) } ?? .null,
                                .blob(ByteBuffer(bytes: message.body)), .text(JSONWriter.string(.object(metadata))),
                                .integer(message.deliveries),
                                .integer(Int(message.storedAt)),
                            ])
                    case .remove(let queue, let sequence):
                        _ = try await connection.query(
                            "DELETE FROM messages WHERE queue = ? AND seq = ?", [.text(queue), .integer(Int(sequence))])
                    case .saveQueue(let queue):
                        _ = try await connection.query(
                            "INSERT INTO queues (name, config) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET config = excluded.config",
                            [.text(queue.name), .text(JSONWriter.string(.object(queue.json)))])
                    case .deleteQueue(let name):
                        _ = try await connection.query("DELETE FROM messages WHERE queue = ?", [.text(name)])
                        _ = try await connection.query("DELETE FROM queues WHERE name = ?", [.text(name)])
                    case .deliveries(let queue, let sequence, let count):
                        guard sequence >= 0 else { continue }
                        _ = try await connection.query(
                            "UPDATE messages SET deliveries = ? WHERE queue = ? AND seq = ?",
                            [.integer(count), .text(queue), .integer(Int(sequence))])
                    }
                }
                _ = try await connection.query("COMMIT")
                commits += 1
                writesCommitted += batch.count
            } catch {
                failure = error
                _ = try? await connection.query("ROLLBACK")
            }
            for (_, continuation) in batch {
                if let failure { continuation?.resume(throwing: failure) } else { continuation?.resume() }
            }
        }
        committing = false
    }

    public func close() async throws {
        try await sync()
        try await connection.close()
    }
}
