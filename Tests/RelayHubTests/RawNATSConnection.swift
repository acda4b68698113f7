import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import Synchronization

/// A TCP connection that speaks raw NATS: the test writes protocol lines, and every line that
/// comes back (INFO, -ERR, PONG, MSG and its payload) is collected. It can upgrade to TLS after
/// INFO as a NATS client does. For checking what the hub says, word for word.
final class RawNATSConnection: Sendable {
    let channel: any Channel
    let lines: AsyncStream<String>
    private let handshake: EventLoopPromise<Void>

    private init(channel: any Channel, lines: AsyncStream<String>, handshake: EventLoopPromise<Void>) {
        self.channel = channel
        self.lines = lines
        self.handshake = handshake
    }

    static func connect(port: Int) async throws -> RawNATSConnection {
        let (stream, input) = AsyncStream.makeStream(of: String.self)
        let group = MultiThreadedEventLoopGroup.singleton
        let handshake = group.next().makePromise(of: Void.self)
        let channel = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(LineCollector(input: input, handshake: handshake))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawNATSConnection(channel: channel, lines: stream, handshake: handshake)
    }

    func send(_ text: String) async throws {
        try await channel.writeAndFlush(channel.allocator.buffer(string: text))
    }

    /// Starts TLS as the client (trusting `caFile`, checking the name `localhost`) and waits for
    /// the handshake.
    func startTLS(caFile: String) async throws {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .file(caFile)
        let context = try NIOSSLContext(configuration: configuration)
        let channel = self.channel
        try await channel.eventLoop.submit {
            try channel.pipeline.syncOperations.addHandler(
                try NIOSSLClientHandler(context: context, serverHostname: "localhost"), position: .first)
        }.get()
        try await handshake.futureResult.get()
    }

    func close() async {
        try? await channel.close()
    }
}

private final class LineCollector: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    private let input: AsyncStream<String>.Continuation
    private let handshake: EventLoopPromise<Void>
    private var pending: [UInt8] = []

    init(input: AsyncStream<String>.Continuation, handshake: EventLoopPromise<Void>) {
        self.input = input
        self.handshake = handshake
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        pending += unwrapInboundIn(data).readableBytesView
        while let end = pending.firstIndex(of: UInt8(ascii: "\n")) {
            let line = pending[..<end].last == UInt8(ascii: "\r") ? pending[..<(end - 1)] : pending[..<end]
            input.yield(String(decoding: line, as: UTF8.self))
            pending.removeSubrange(...end)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event { handshake.succeed() }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        handshake.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        handshake.fail(ChannelError.ioOnClosedChannel)
        input.finish()
        context.fireChannelInactive()
    }
}
