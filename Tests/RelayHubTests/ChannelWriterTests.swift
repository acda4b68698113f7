import NIOCore
import NIOPosix
import RelayTransport
import Synchronization
import Testing

/// The writer every connection sends through, over a real loopback socket.
@Suite struct ChannelWriterTests {
    /// Collects what the peer receives, and says when it has `expected` bytes.
    private final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received = Mutex<[UInt8]>([])
        let (bytes, input) = AsyncStream.makeStream(of: Int.self)

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            let count = received.withLock { received in
                received += buffer.readableBytesView
                return received.count
            }
            input.yield(count)
        }
    }

    /// A writer kept busy by a peer that reads slowly writes each batch into the buffer of a drain
    /// already written: every byte arrives, in order; once idle, it holds no buffer.
    @Test func buffersReusedWhileBusyCarryEveryByteInOrderAndIdleHoldsNone() async throws {
        let collector = Collector()
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(ChannelOptions.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 4096))
            .childChannelInitializer { channel in channel.pipeline.addHandler(collector) }
            .bind(host: "127.0.0.1", port: 0).get()
        let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(to: server.localAddress!).get()
        let writer = ChannelWriter(channel: client, framing: .stream)
        var expected: [UInt8] = []
        for index in 0..<60_000 {
            let message = Array("message \(index) \(String(repeating: "x", count: index % 97));".utf8)
            expected += message
            writer.enqueue(message)
            if index % 500 == 0 { await Task.yield() }
        }
        try await writer.flushed().get()
        let total = expected.count
        _ = try await firstElement(collector.bytes, where: { $0 >= total })
        #expect(collector.received.withLock { $0 } == expected)
        #expect(!writer.holdsSpareBuffer)
        try await client.close()
        try await server.close()
    }
}
