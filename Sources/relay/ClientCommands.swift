import ArgumentParser
import Foundation
import RelayClient
import RelayCore

/// The options every client command takes.
struct ClientOptions: ParsableArguments {
    @Option(
        help:
            "The hub, ws://, wss://, tcp:// (TLS negotiated with --tls-ca), nats:// or tls:// HOST:PORT (default: $RELAY_SERVER, or ws://127.0.0.1:8080)."
    )
    var server: String = ProcessInfo.processInfo.environment["RELAY_SERVER"] ?? "ws://127.0.0.1:8080"

    @Option(help: "Who to connect as, NAME@DOMAIN[/INSTANCE] (a guest identity is assigned when omitted).")
    var identity: String?

    @Option(help: "A password for the plain scheme (or set RELAY_PASSWORD); guest access when absent.")
    var password: String?

    @Option(help: "A key for the key scheme, or NATS auth_token (or set RELAY_KEY).")
    var key: String?

    @Option(help: "A JWT for the external scheme, or NATS auth_token (or set RELAY_TOKEN).")
    var token: String?

    @Option(name: .customLong("tls-ca"), help: "Trust the certificate authorities of this PEM file (and use TLS).")
    var tlsCA: String?

    @Option(name: .customLong("tls-cert"), help: "A client certificate (PEM), for the transport scheme or a hub that verifies clients.")
    var tlsCertificate: String?

    @Option(name: .customLong("tls-key"), help: "The key of --tls-cert (PEM).")
    var tlsKey: String?

    @Flag(
        help:
            "Compress when the hub agrees: permessage-deflate over WebSocket (messages of 256 bytes and more), LIME's gzip session compression over TCP."
    )
    var compress = false

    @Flag(help: "End when the connection is lost instead of reconnecting (long-running commands reconnect for ever by default).")
    var noReconnect = false

    /// Reconnect for ever, unless --no-reconnect: a subscriber left running should outlive a hub restart.
    var reconnect: ReconnectPolicy { noReconnect ? .never : ReconnectPolicy(maximumAttempts: -1) }

    /// The servers `--server` lists (comma-separated), tried in turn.
    var servers: [String] { server.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }

    /// Whether the server is spoken to over NATS (a hub's NATS port, or a nats-server).
    var isNATS: Bool {
        let server = self.server.lowercased()
        return server.hasPrefix("nats://") || server.hasPrefix("tls://")
    }

    private var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// TLS options when any TLS flag is given (`wss://` and `tls://` use TLS with the system's roots anyway).
    var tls: TLSClientOptions? {
        guard tlsCA != nil || tlsCertificate != nil else { return nil }
        return TLSClientOptions(caFile: tlsCA, certificateFile: tlsCertificate, keyFile: tlsKey)
    }

    func connectNATS() async throws -> NATSClient {
        var options = NATSClient.Options(servers: servers)
        options.reconnect = reconnect
        if let identity { options.user = identity }
        if let password = password ?? environment["RELAY_PASSWORD"] { options.password = password }
        options.token = key ?? token ?? environment["RELAY_KEY"] ?? environment["RELAY_TOKEN"]
        options.tls = tls
        options.name = "relay"
        return try await NATSClient.connect(options: options)
    }

    /// Refuses a command that exists only in LIME.
    func requireLIME(_ command: String) throws {
        if isNATS { throw ValidationError("relay \(command) speaks LIME only: use a ws://, wss:// or tcp:// server") }
    }

    func connect() async throws -> LIMEClient {
        var options = LIMEClient.Options()
        if let identity {
            guard let node = Node(identity) else { throw ValidationError("--identity expects NAME@DOMAIN, got '\(identity)'") }
            options.identity = node.identity
            options.instance = node.instance
        }
        if let password = password ?? environment["RELAY_PASSWORD"] {
            options.authentication = .plain(password: password)
        } else if let key = key ?? environment["RELAY_KEY"] {
            options.authentication = .key(key)
        } else if let token = token ?? environment["RELAY_TOKEN"] {
            options.authentication = .external(token: token)
        } else if tlsCertificate != nil {
            options.authentication = .transport
        }
        options.tls = tls
        options.reconnect = reconnect
        if compress {
            options.compressionThreshold = 256
            options.sessionCompression = true
        }
        return try await LIMEClient.connect(to: servers, options: options)
    }
}

/// Prints one line to standard error for each loss and recovery of a connection, as
/// `COMMAND: disconnected (REASON)` and `COMMAND: reconnected to SERVER`.
func reportConnectionEvents(_ events: AsyncStream<ConnectionEvent>, as command: String) {
    Task {
        for await event in events {
            switch event {
            case .disconnected(let reason): printError("\(command): disconnected (\(reason)); reconnecting")
            case .reconnected(let server): printError("\(command): reconnected to \(server)")
            case .restoreFailed(let what, let reason): printError("\(command): could not restore \(what): \(reason)")
            case .lameDuck: printError("\(command): the server is shutting down (lame duck)")
            case .slowConsumer(let subject): printError("\(command): slow consumer on \(subject): messages are being dropped")
            case .closed: return
            }
        }
    }
}

struct Send: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Send a message to a node and report what became of it.")

    @OptionGroup var client: ClientOptions

    @Option(help: "The recipient, NAME@DOMAIN[/INSTANCE].")
    var to: String

    @Option(help: "The media type of the content; JSON types (application/json, +json) take JSON text.")
    var type: String = "text/plain"

    @Flag(help: "Send without an id: fire-and-forget, no failure notification comes back.")
    var noId = false

    @Argument(help: "The content.")
    var text: String

    func run() async throws {
        try client.requireLIME("send")
        guard let recipient = Node(to) else { throw ValidationError("--to expects NAME@DOMAIN[/INSTANCE], got '\(to)'") }
        let mediaType = MediaType(type)
        let content: JSONValue
        if mediaType.isJSON {
            do { content = try JSONParser.parse(text) } catch { throw ValidationError("content is not JSON: \(error)") }
        } else {
            content = .string(text)
        }
        let connection = try await client.connect()
        let id = noId ? nil : UUID().uuidString.lowercased()
        try await connection.send(LIMEMessage(header: EnvelopeHeader(id: id, to: recipient), type: mediaType, content: content))
        // Ping the hub: its answer comes after any failure it sent for the message, so a failure is seen
        // before finishing.
        _ = try await connection.ping()
        var failure: Reason?
        if let id {
            let notifications = connection.notifications
            try await connection.finish()
            for await notification in notifications where notification.header.id == id && notification.event == .failed {
                failure = notification.reason
            }
        } else {
            try await connection.finish()
        }
        if let failure {
            FileHandle.standardError.write(Data("relay send: failed: \(failure.description) (code \(failure.code))\n".utf8))
            throw ExitCode(1)
        }
    }
}

struct Listen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print every message and notification that arrives, one JSON envelope per line.")

    @OptionGroup var client: ClientOptions

    @Option(help: "Exit after this many messages.")
    var count: Int?

    func run() async throws {
        try client.requireLIME("listen")
        let connection = try await client.connect()
        FileHandle.standardError.write(Data("relay listen: listening as \(connection.localNode)\n".utf8))
        let limit = count
        let printer = LinePrinter()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                var seen = 0
                for await message in connection.messages {
                    printer.print(.message(message))
                    seen += 1
                    if let limit, seen >= limit { break }
                }
            }
            group.addTask {
                for await notification in connection.notifications { printer.print(.notification(notification)) }
            }
            group.addTask {
                for await command in connection.commands { printer.print(.command(command)) }
            }
            // Stop when the message count is reached or the session ends.
            await group.next()
            group.cancelAll()
        }
        if limit != nil { try? await connection.finish() } else { await connection.close() }
    }
}

/// Writes one line per envelope, whole lines only, from several tasks.
final class LinePrinter: Sendable {
    func print(_ envelope: Envelope) {
        var line = LIMECodec.encode(envelope)
        line.append(UInt8(ascii: "\n"))
        FileHandle.standardOutput.write(Data(line))
    }
}
