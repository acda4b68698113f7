import ArgumentParser
import NIOCore
import NIOPosix
import RelayTransport
import Synchronization

/// `relay forwarder` (hidden): the cost floor for `relay bench` over NATS. A bare SwiftNIO server
/// that speaks just enough NATS for the bench's pub/sub and fan-out workloads: INFO on connect,
/// PONG to PING, and every PUB forwarded as MSG to every subscription of every connection,
/// whatever the subject, through the same coalescing `ChannelWriter` as the hub. No subject
/// index, no session state, no checks: what the hub spends beyond this is its own overhead.
struct Forwarder: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A bare NIO forwarder of NATS frames: the floor the hub's overhead is measured against.", shouldDisplay: false)

    @Option(help: "Where to listen, HOST:PORT.")
    var listen = "127.0.0.1:14444"

    func run() async throws {
        let parts = listen.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]) else { throw ValidationError("--listen takes HOST:PORT") }
        let subscribers = ForwarderSubscribers()
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ForwarderHandler(subscribers: subscribers))
                }
            }
            .bind(host: String(parts[0]), port: port).get()
        print("forwarding NATS frames on \(listen)")
        try await channel.closeFuture.get()
    }
}

/// Every subscription of every connection: its writer and sid.
final class ForwarderSubscribers: Sendable {
    let all = Mutex<[(writer: ChannelWriter, sid: [UInt8])]>([])
}

final class ForwarderHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    private let subscribers: ForwarderSubscribers
    private var writer: ChannelWriter?
    private var pending: [UInt8] = []

    init(subscribers: ForwarderSubscribers) { self.subscribers = subscribers }

    func channelActive(context: ChannelHandlerContext) {
        let writer = ChannelWriter(channel: context.channel, framing: .stream)
        self.writer = writer
        writer.enqueue(
            Array(#"INFO {"server_id":"forwarder","version":"2.9.0","proto":1,"headers":false,"max_payload":1048576}"#.utf8) + [13, 10])
    }

    func channelInactive(context: ChannelHandlerContext) {
        subscribers.all.withLock { $0.removeAll { $0.writer === self.writer } }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        pending.append(contentsOf: unwrapInboundIn(data).readableBytesView)
        var start = 0
        var outgoing: [UInt8] = []
        var targets: [(writer: ChannelWriter, sid: [UInt8])]?
        // What this read brings each subscription, handed over once at the end (as the hub does).
        var batches: [[UInt8]] = []
        while let newline = pending[start...].firstIndex(of: 10) {
            let line = pending[start..<(newline > start && pending[newline - 1] == 13 ? newline - 1 : newline)]
            let fields = line.split(separator: 32)
            guard let verb = fields.first.map({ String(decoding: $0, as: UTF8.self).uppercased() }) else {
                start = newline + 1
                continue
            }
            if verb == "PUB", fields.count >= 3, let size = Int(String(decoding: fields[fields.count - 1], as: UTF8.self)) {
                guard pending.count >= newline + 1 + size + 2 else { break }
                let payload = pending[(newline + 1)..<(newline + 1 + size)]
                if targets == nil {
                    targets = subscribers.all.withLock { $0 }
                    batches = Array(repeating: [], count: targets!.count)
                }
                for (index, target) in targets!.enumerated() {
                    batches[index] += "MSG ".utf8
                    batches[index] += fields[1]
                    batches[index].append(32)
                    batches[index] += target.sid
                    batches[index] += " \(size)\r\n".utf8
                    batches[index] += payload
                    batches[index] += [13, 10]
                }
                start = newline + 1 + size + 2
                continue
            }
            if verb == "PING" { outgoing += Array("PONG\r\n".utf8) }
            if verb == "SUB", fields.count >= 3, let writer {
                subscribers.all.withLock { $0.append((writer, Array(fields[fields.count - 1]))) }
            }
            start = newline + 1
        }
        for (index, target) in (targets ?? []).enumerated() where !batches[index].isEmpty { target.writer.enqueue(batches[index]) }
        pending.removeSubrange(0..<start)
        if !outgoing.isEmpty { writer?.enqueue(outgoing) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        writer?.drain()
    }
}
