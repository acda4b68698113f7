import Foundation
import Logging
import RelayClient
import RelayCore
import RelayHub
import Synchronization
import Testing

/// Lines written by a `LineLogHandler`, kept for the test.
final class CapturedLines: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    func logger(_ format: LineLogHandler.Format, level: Logger.Level = .info) -> Logger {
        Logger(label: "relay.test") { label in
            var handler = LineLogHandler(label: label, format: format) { line in self.lines.withLock { $0.append(line) } }
            handler.logLevel = level
            return handler
        }
    }
}

@Suite(.timeLimit(.minutes(1))) struct LoggingTests {
    @Test func logfmtQuotesWhatNeedsIt() {
        let captured = CapturedLines()
        captured.logger(.logfmt).info("a \"quoted\" word", metadata: ["empty": "", "plain": "x=1", "n": "42"])
        let line = captured.all.first ?? ""
        #expect(line.hasPrefix("time=") && line.hasSuffix("\n"))
        #expect(line.contains(#" level=info logger=relay.test msg="a \"quoted\" word" empty="" n=42 plain="x=1""#), "\(line)")
    }

    @Test func jsonLinesParse() throws {
        let captured = CapturedLines()
        captured.logger(.json).warning("tab\there \"q\" \u{1}", metadata: ["session": "7"])
        let value = try JSONParser.parse(captured.all.first ?? "")
        #expect(value["msg"] == "tab\there \"q\" \u{1}" && value["session"] == "7" && value["level"] == "warning")
    }

    /// A line about a session names it: session id, address, transport, and the node once known.
    @Test(arguments: LineLogHandler.Format.allCases)
    func linesAboutASessionNameIt(_ format: LineLogHandler.Format) async throws {
        let captured = CapturedLines()
        let hash = try PasswordHash.make(password: "pw", rounds: 1000).description
        try await withHub(
            { configuration in
                configuration.users = [.init(identity: "alice@relay.local", password: hash)]
                configuration.limits.authFailureDelaySeconds = 0
            }, logger: captured.logger(format)
        ) { hub in
            await #expect(throws: LIMEClientError.self) {
                _ = try await hub.connect(.tcp, as: "alice@relay.local", authentication: .plain(password: "wrong"))
            }
        }
        let refusal = try #require(captured.all.first { $0.contains("authentication refused") })
        for field in ["session", "address", "transport", "scheme", "level", "time"] { #expect(refusal.contains(field), "\(field) in \(refusal)") }
        #expect(refusal.contains("127.0.0.1") && refusal.contains("lime-tcp"))
        #expect(!refusal.contains("wrong"), "a password was logged")
        if format == .json { _ = try JSONParser.parse(refusal) }
    }
}
