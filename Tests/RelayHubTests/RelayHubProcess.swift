import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A `relay serve` process (the binary built beside the tests) on fixed loopback ports, so that it
/// can be stopped, killed and started again where its clients expect it, on the same data.
final class RelayHubProcess: Sendable {
    enum Stop: String, Sendable, CustomTestStringConvertible {
        /// SIGKILL: nothing is finished, the clients see their connections reset.
        case kill
        /// SIGTERM: the hub drains and finishes every session.
        case terminate
        var testDescription: String { rawValue }
    }

    private let process = Mutex<Process?>(nil)
    let wsPort: Int
    let tcpPort: Int
    let natsPort: Int
    let data: String
    /// Given to `relay serve` beyond the ports (`--cluster URLS`...).
    let arguments: [String]

    var ws: String { "ws://127.0.0.1:\(wsPort)" }
    var tcp: String { "tcp://127.0.0.1:\(tcpPort)" }
    var nats: String { "nats://127.0.0.1:\(natsPort)" }

    init(arguments: [String] = []) async throws {
        self.arguments = arguments
        (wsPort, tcpPort, natsPort) = (try Self.freePort(), try Self.freePort(), try Self.freePort())
        data = temporaryDataDirectory()
        try await start()
    }

    static var binary: String {
        let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("relay").path
        return ProcessInfo.processInfo.environment["RELAY_BIN"] ?? beside
    }

    /// Starts the hub and returns once it listens on every port.
    func start() async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments =
            [
                "serve", "--ws", "127.0.0.1:\(wsPort)", "--tcp", "127.0.0.1:\(tcpPort)", "--nats", "127.0.0.1:\(natsPort)", "--http", "off",
                "--data", data, "--drain-timeout", "2",
            ] + arguments
        let log = Pipe()
        process.standardError = log
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        var text = ""
        let handle = log.fileHandleForReading
        while ["ws://", "tcp://", "nats://"].contains(where: { !text.contains("listening on \($0)") }) {
            let chunk = handle.availableData
            if chunk.isEmpty { throw TestFailure("relay serve exited: \(text)") }
            text += String(decoding: chunk, as: UTF8.self)
        }
        // The log goes on being read, so that the hub never blocks on a full pipe.
        Thread.detachNewThread { while !handle.availableData.isEmpty {} }
        self.process.withLock { $0 = process }
    }

    /// Stops the hub as `how` says and waits until it has exited.
    func stop(_ how: Stop) {
        guard let process = self.process.withLock({ $0.take() }) else { return }
        kill(process.processIdentifier, how == .kill ? SIGKILL : SIGTERM)
        process.waitUntilExit()
    }

    /// Freezes the hub (SIGSTOP), as a network pause would: its connections stay open and nothing
    /// is answered. `resume` thaws it.
    func pause() {
        if let process = self.process.withLock({ $0 }) { stopAndWait(process.processIdentifier) }
    }

    func resume() {
        if let process = self.process.withLock({ $0 }) { kill(process.processIdentifier, SIGCONT) }
    }

    deinit {
        if let process = self.process.withLock({ $0 }) { kill(process.processIdentifier, SIGCONT) }
        stop(.kill)
        try? FileManager.default.removeItem(atPath: data)
    }

    /// A port nothing listens on now (the kernel's pick for a socket bound to port 0).
    private static func freePort() throws -> Int { try RelayHubTests.freePort() }
}

/// A port nothing listens on now (the kernel's pick for a socket bound to port 0).
func freePort() throws -> Int {
    let (descriptor, port) = try listeningSocket()
    close(descriptor)
    return port
}

/// A socket listening on a loopback port of the kernel's choosing, and that port.
func listeningSocket() throws -> (Int32, Int) {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let listening = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(descriptor, $0, length) == 0 && listen(descriptor, 8) == 0 && getsockname(descriptor, $0, &length) == 0
        }
    }
    guard listening else {
        close(descriptor)
        throw TestFailure("cannot listen on loopback")
    }
    return (descriptor, Int(UInt16(bigEndian: address.sin_port)))
}
