import Foundation
import Logging
import NIOCore
import NIOPosix
import RelayClient
import RelayCore
import RelayHub
import RelayTransport
import Synchronization
import Testing
import Tracing

/// Runs `body` against a hub listening on free loopback ports, then shuts it down.
func withHub<T>(
    _ configure: (inout HubConfiguration) throws -> Void = { _ in }, logger given: Logger? = nil, tracer: (any Tracer)? = nil,
    _ body: (TestHub) async throws -> T
) async throws -> T {
    var configuration = HubConfiguration()
    configuration.ws = HostAndPort(host: "127.0.0.1", port: 0)
    configuration.tcp = HostAndPort(host: "127.0.0.1", port: 0)
    configuration.nats = HostAndPort(host: "127.0.0.1", port: 0)
    configuration.http = HostAndPort(host: "127.0.0.1", port: 0)
    let data = temporaryDataDirectory()
    configuration.data = data
    // Only the directory made here is removed; a test that names its own keeps it.
    defer { try? FileManager.default.removeItem(atPath: data) }
    try configure(&configuration)
    var logger = given ?? Logger(label: "relay.test")
    if given == nil { logger.logLevel = .warning }
    let server = try HubServer(configuration: configuration, logger: logger, tracer: tracer)
    try await server.start()
    let hub = TestHub(server: server)
    do {
        let result = try await body(hub)
        await server.shutdown()
        return result
    } catch {
        await server.shutdown()
        throw error
    }
}

/// A fresh directory for a hub's durable queues.
func temporaryDataDirectory() -> String {
    NSTemporaryDirectory() + "relay-test-" + UUID().uuidString
}

struct TestHub {
    let server: HubServer

    var ws: String { "ws://127.0.0.1:\(server.boundAddresses.webSocket!.port!)" }
    var tcp: String { "tcp://127.0.0.1:\(server.boundAddresses.tcp!.port!)" }
    var natsPort: Int { server.boundAddresses.nats!.port! }

    func url(_ transport: Transport) -> String { transport == .ws ? ws : tcp }

    /// A client of this hub that does not reconnect (unless told to): the hub of a test goes
    /// away when the test ends, and its clients should end with it, not retry in the background.
    func connect(
        _ transport: Transport, as identity: String, authentication: LIMEClient.Authentication = .guest,
        reconnect: ReconnectPolicy = .never
    ) async throws -> LIMEClient {
        let node = Node(identity)!
        var options = LIMEClient.Options(identity: node.identity, instance: node.instance, authentication: authentication)
        options.reconnect = reconnect
        return try await LIMEClient.connect(to: url(transport), options: options)
    }
}

enum Transport: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case ws, tcp
    var testDescription: String { rawValue }
}

/// Waits for the first element of a stream, failing the test after `seconds`.
func firstElement<S: AsyncSequence & Sendable>(
    _ sequence: S, within seconds: Double = 10, where predicate: @escaping @Sendable (S.Element) -> Bool = { _ in true }
) async throws -> S.Element where S.Element: Sendable {
    try await withThrowingTaskGroup(of: S.Element?.self) { group in
        group.addTask {
            for try await element in sequence where predicate(element) { return element }
            return nil
        }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            return nil
        }
        defer { group.cancelAll() }
        guard let element = try await group.next() ?? nil else {
            throw TestFailure("no matching element within \(seconds) s")
        }
        return element
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A connection that speaks raw LIME: what the test writes goes out as it is, and every envelope
/// (or undecodable piece) that comes back is collected. For feeding the hub bad input.
final class RawConnection: Sendable {
    let channel: any Channel
    let received: AsyncStream<Envelope>
    /// Frames what is sent for the transport (a WebSocket text frame each, or bytes as they are).
    private let writer: ChannelWriter
    private let closed: EventLoopFuture<Void>

    private init(transport: LIMETransport, received: AsyncStream<Envelope>) {
        self.channel = transport.channel
        self.writer = transport.writer
        self.received = received
        self.closed = channel.closeFuture
    }

    static func connect(_ url: String, maximumEnvelopeBytes: Int = 8 << 20) async throws -> RawConnection {
        let (stream, input) = AsyncStream.makeStream(of: Envelope.self)
        let transport = try await LIMETransportConnector.connect(
            to: LIMEEndpoint(url)!, group: MultiThreadedEventLoopGroup.singleton, connectTimeout: .seconds(5),
            maximumEnvelopeBytes: maximumEnvelopeBytes
        ) { reader in
            CollectingHandler(reader: reader, input: input)
        }
        return RawConnection(transport: transport, received: stream)
    }

    func send(_ text: String) async throws {
        try await send(bytes: Array(text.utf8))
    }

    func send(bytes: [UInt8]) async throws {
        writer.enqueue(bytes)
        try await writer.flushed().get()
    }

    /// Performs the guest handshake as `identity` and returns the session id.
    func establish(as identity: String) async throws -> String {
        var iterator = received.makeAsyncIterator()
        try await send(#"{"state":"new"}"#)
        guard case .session(let authenticating)? = await iterator.next(), let id = authenticating.header.id else {
            throw TestFailure("no authenticating session")
        }
        try await send(#"{"id":"\#(id)","from":"\#(identity)","state":"authenticating","scheme":"guest","authentication":{}}"#)
        guard case .session(let established)? = await iterator.next(), established.state == .established else {
            throw TestFailure("not established")
        }
        return id
    }

    /// Waits until the hub closes the connection.
    func waitForClose(within seconds: Double = 10) async throws {
        let closed = self.closed
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await closed.get() }
            group.addTask {
                try await Task.sleep(for: .seconds(seconds))
                throw TestFailure("the hub did not close the connection within \(seconds) s")
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    func close() async {
        try? await channel.close()
    }
}

private final class CollectingHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private var reader: LIMEEnvelopeReader
    private let input: AsyncStream<Envelope>.Continuation

    init(reader: LIMEEnvelopeReader, input: AsyncStream<Envelope>.Continuation) {
        self.reader = reader
        self.input = input
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // A decoding error would show in the test as an envelope that never arrives.
        _ = reader.read(unwrapInboundIn(data)) { input.yield($0) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        input.finish()
        context.fireChannelInactive()
    }
}

extension AsyncStream<Envelope> {
    /// The first `failed` session envelope.
    func failedSession(within seconds: Double = 10) async throws -> LIMESession {
        let envelope = try await firstElement(self, within: seconds) {
            if case .session(let session) = $0 { return session.state == .failed }
            return false
        }
        guard case .session(let session) = envelope else { throw TestFailure("unreachable") }
        return session
    }
}
