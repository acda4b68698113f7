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

    /// A publisher's stall waits for the writer to drain to a mark: it is released when the bytes
    /// are written, and when the connection closes with them unwritten.
    @Test func aWaitForTheWriterToDrainEndsWhenItDrainsOrTheConnectionCloses() async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                // The peer reads nothing, so what is written stays pending.
                channel.setOption(ChannelOptions.autoRead, value: false)
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(to: server.localAddress!).get()
        let writer = ChannelWriter(channel: client, framing: .stream)
        #expect(writer.whenPending(atMost: 0) == nil, "nothing pending: no wait")
        for _ in 0..<400 { writer.enqueue([UInt8](repeating: 7, count: 64 << 10)) }  // 25 MiB: more than the sockets hold
        try await eventually { writer.pendingBytes > 1 << 20 }
        let drained = try #require(writer.whenPending(atMost: 1 << 20))
        try await client.close()
        try await drained.get()
        #expect(writer.whenPending(atMost: 0) == nil, "closed: no wait")
        try await server.close()
    }
}
