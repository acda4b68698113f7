import NIOCore
import NIOSSL
import NIOTLS
import RelayCore
import RelayTransport

/// Runs the client side of one LIME session: feeds envelopes into `LIMEClientSessionMachine`
/// and carries out its actions, handing deliveries to the `ClientCore`.
final class LIMEClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var machine: LIMEClientSessionMachine
    private var reader: LIMEEnvelopeReader
    private let core: ClientCore
    /// The number of this connection in the client's life (`ClientCore.beginConnection`).
    private let generation: Int
    /// Frames what the session sends for its transport; given when the transport is ready.
    private var writer: ChannelWriter?
    private var readers = ReadersToWake()
    /// The session switched to `compression: gzip` (the codec is in the pipeline).
    private var compressionStarted = false
    /// Makes the TLS handler when the session negotiates TLS over TCP.
    private let makeTLSHandler: () throws -> NIOSSLClientHandler

    init(
        machine: LIMEClientSessionMachine, reader: LIMEEnvelopeReader, core: ClientCore, generation: Int,
        makeTLSHandler: @escaping () throws -> NIOSSLClientHandler
    ) {
        self.machine = machine
        self.reader = reader
        self.core = core
        self.generation = generation
        self.makeTLSHandler = makeTLSHandler
    }

    private func start(context: ChannelHandlerContext, writer: ChannelWriter) {
        guard self.writer == nil else { return }
        self.writer = writer
        // `wss://`: the connection is TLS from the start.
        if (try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self)) != nil {
            execute(machine.transportSecured(), context: context)
        }
        execute(machine.connected(), context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        // The confirmation of `compression: gzip` may share its read with what follows it,
        // already compressed: one envelope at a time until the switch, the rest through the codec.
        while machine.awaitsCompressionSwitch {
            let (rest, error) = reader.readOne(buffer) { execute(machine.envelopeReceived($0), context: context) }
            if let error {
                execute(machine.invalidInputReceived(error), context: context)
                return
            }
            guard let rest else { return }
            if compressionStarted {
                // From the head of the pipeline, where the codec now is.
                context.pipeline.fireChannelRead(NIOAny(rest))
                return
            }
            buffer = rest
        }
        let error = reader.read(
            buffer,
            deliverInPlace: { delivery, bytes in
                // A subscription that has ended meanwhile: decoded and counted as the core counts it.
                guard machine.deliversInPlace, let inbox = core.subscription(delivery.subscription) else { return false }
                if inbox.enqueue(bytes.withUnsafeBytes { Publication(delivery, envelope: $0) }) { readers.add(inbox) }
                return true
            }
        ) { execute(machine.envelopeReceived($0), context: context) }
        if let reason = error {
            execute(machine.invalidInputReceived(reason), context: context)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        readers.wakeAll()
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        readers.wakeAll()
        execute(machine.peerClosed(), context: context)
        core.connectionEnded(generation, reason: Reason(code: ReasonCode.sessionError, description: "The connection closed"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let reason = reader.reason(for: error) ?? Reason(code: ReasonCode.generalError, description: "Connection error: \(error)")
        execute(machine.invalidInputReceived(reason), context: context)
        // Outside a read: nothing else would wake a reader a delivery here was meant for.
        readers.wakeAll()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event {
            execute(machine.transportSecured(), context: context)
        } else if let ready = event as? LIMETransportReady {
            // Over WebSocket this comes once the upgrade is complete and the HTTP handlers are gone.
            start(context: context, writer: ready.writer)
        } else if event is ClientCore.FinishRequested {
            execute(machine.finishRequested(), context: context)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func execute(_ action: consuming LIMEClientSessionMachine.Action, context: ChannelHandlerContext) {
        switch consume action {
        case .none:
            break
        case .send(let envelope):
            writer?.enqueue(LIMECodec.encode(envelope))
        case .startCompression:
            // What was written so far went out uncompressed; from here on both ways are gzip.
            writer?.drain()
            do {
                try context.pipeline.syncOperations.addHandler(GzipStreamCodec(), position: .before(self))
                compressionStarted = true
            } catch {
                execute(
                    machine.invalidInputReceived(Reason(code: ReasonCode.sessionError, description: "gzip: \(error)")), context: context)
            }
        case .startTLS:
            // The server confirmed TLS: the handshake starts now, before anything else is sent.
            do {
                try context.pipeline.syncOperations.addHandler(makeTLSHandler(), position: .first)
            } catch {
                execute(machine.invalidInputReceived(Reason(code: ReasonCode.sessionError, description: "TLS: \(error)")), context: context)
            }
        case .established(let local, let remote):
            core.established(local: local, remote: remote)
        case .deliver(let envelope):
            readers.add(core.deliver(envelope))
        case .finished:
            core.connectionEnded(generation, reason: nil)
            context.close(promise: nil)
        case .failed(let reason):
            core.connectionEnded(generation, reason: reason)
            context.close(promise: nil)
        }
    }
}
