import NIOCore
import NIOSSL
import NIOTLS
import RelayCore

/// Runs one connection of a `NATSClient`: parses with `NATSParser`, feeds
/// `NATSClientConnectionMachine`, and hands what it says to the client.
final class NATSClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var machine: NATSClientConnectionMachine
    private var parser: NATSParser
    private let client: NATSClient
    private let pingInterval: TimeAmount
    private var pingTask: Scheduled<Void>?
    private var readers = ReadersToWake()
    /// Makes the TLS handler when the connection upgrades after INFO.
    private let makeTLSHandler: () throws -> NIOSSLClientHandler

    init(
        machine: NATSClientConnectionMachine, maximumPayload: Int, pingInterval: TimeAmount, client: NATSClient,
        makeTLSHandler: @escaping () throws -> NIOSSLClientHandler
    ) {
        self.machine = machine
        self.parser = NATSParser(role: .client, maximumPayload: maximumPayload)
        self.pingInterval = pingInterval
        self.client = client
        self.makeTLSHandler = makeTLSHandler
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            execute(machine.transportSecured(), context: context)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            for operation in try parser.bytesReceived(unwrapInboundIn(data).readableBytesView) {
                execute(machine.operationReceived(operation), context: context)
            }
        } catch {
            execute(machine.protocolErrorOccurred(error), context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        readers.wakeAll()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        readers.wakeAll()
        pingTask?.cancel()
        machine.peerClosed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A TLS failure (an untrusted certificate...) is worth saying: it will not go away by retrying.
        if error is NIOSSLError || error is BoringSSLError { client.connectionFailed("TLS: \(error)") }
        context.close(promise: nil)
    }

    private func schedulePing(context: ChannelHandlerContext) {
        pingTask = context.eventLoop.assumeIsolated().scheduleTask(in: pingInterval) { [weak self] in
            guard let self else { return }
            self.execute(self.machine.pingIntervalElapsed(), context: context)
            // Outside a read: nothing else would wake a reader a delivery here was meant for.
            self.readers.wakeAll()
            self.schedulePing(context: context)
        }
    }

    private func execute(_ actions: [NATSClientConnectionMachine.Action], context: ChannelHandlerContext) {
        for action in actions {
            switch action {
            case .send(let operations):
                var bytes: [UInt8] = []
                for operation in operations { NATSEncoder.encode(operation, into: &bytes) }
                context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(bytes: bytes)), promise: nil)
            case .startTLS:
                do {
                    try context.pipeline.syncOperations.addHandler(makeTLSHandler(), position: .first)
                } catch {
                    client.connectionFailed("TLS: \(error)")
                    context.close(promise: nil)
                }
            case .connected(let info):
                client.established(context.channel, info: info)
                schedulePing(context: context)
            case .deliver(let subject, let sid, let replyTo, let headers, let payload):
                let message = NATSMessage(subject: subject, replyTo: replyTo, headers: headers, payload: payload)
                readers.add(client.deliver(sid: sid, message: message))
            case .pongReceived:
                client.pongReceived()
            case .serverError(let text):
                client.serverErrorReceived(text)
            case .lameDuckEntered:
                client.lameDuckEntered()
            case .fail(let reason):
                client.connectionFailed(reason)
                context.close(promise: nil)
            }
        }
    }
}
