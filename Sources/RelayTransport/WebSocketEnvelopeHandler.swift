import Crypto
import NIOCore
import NIOHTTP1
import RelayCore
import Synchronization

/// The peer broke the WebSocket protocol, or sent a message over the limit; the connection is
/// closed with `code` (RFC 6455 §7.4.1).
package struct WebSocketFailure: Error, Sendable, Equatable {
    package let code: UInt16
    package let description: String
}

/// Carries one LIME envelope per WebSocket text frame, for both the hub and the client.
///
/// Inbound, it reads frames from the connection's bytes with `WebSocketFrameParser` and passes
/// each message on as a `ByteBuffer`: a slice of the bytes read, unmasked in place, so a read of
/// many small frames is neither copied nor split into a buffer each. It answers pings and ends the
/// connection on a close frame; a protocol error reaches the session handler as a
/// `WebSocketFailure` (`errorCaught`), and the connection is then closed with its code.
///
/// Outbound, whatever is written is already framed: the connection's `ChannelWriter` renders
/// each envelope as a text frame (masked on the client side), so a batch of deliveries is one
/// buffer and one write. This handler writes only control frames: pongs, and the close frame
/// before the connection closes.
package final class WebSocketEnvelopeHandler: ChannelDuplexHandler, RemovableChannelHandler {
    package typealias InboundIn = ByteBuffer
    package typealias InboundOut = ByteBuffer
    package typealias OutboundIn = ByteBuffer
    package typealias OutboundOut = ByteBuffer

    private let isClient: Bool
    private var parser: WebSocketFrameParser
    /// The start of a frame not yet complete, read again with what follows.
    private var pending: ByteBuffer?
    private var maskingKeys = MaskingKeys()
    private var sentClose = false
    /// The close code for a connection that ends because of a protocol error.
    private var failureCode: UInt16?

    /// Inflates compressed messages when permessage-deflate was negotiated.
    private let inflater: WebSocketInflater?

    package init(isClient: Bool, maximumMessageBytes: Int, compression: WebSocketCompression? = nil) {
        self.isClient = isClient
        self.parser = WebSocketFrameParser(expectsMaskedFrames: !isClient, maximumMessageSize: maximumMessageBytes)
        parser.allowsCompression = compression != nil
        self.inflater = compression.map { WebSocketInflater($0, maximumMessageBytes: maximumMessageBytes) }
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        if var held = pending {
            // Released first, so appending to it does not copy what it holds.
            pending = nil
            held.writeBuffer(&buffer)
            buffer = held
        }
        let base = buffer.readerIndex
        let (events, consumed) = buffer.withUnsafeMutableReadableBytes { parser.parse($0.bindMemory(to: UInt8.self)) }
        if consumed == 0 {
            // Only the start of a frame (a large one arriving over several reads): kept as it is.
            pending = buffer
        } else if consumed < buffer.readableBytes {
            // The start of the next frame, copied out so the rest of the read can be freed.
            var rest = context.channel.allocator.buffer(capacity: buffer.readableBytes - consumed)
            rest.writeImmutableBuffer(buffer.getSlice(at: base + consumed, length: buffer.readableBytes - consumed)!)
            pending = rest
        }
        for event in events {
            switch event {
            case .message(let range):
                context.fireChannelRead(wrapInboundOut(buffer.getSlice(at: base + range.lowerBound, length: range.count)!))
            case .joinedMessage(let bytes):
                context.fireChannelRead(wrapInboundOut(context.channel.allocator.buffer(bytes: bytes)))
            case .compressedMessage(let bytes):
                do throws(WebSocketInflater.InflateError) {
                    guard let inflater else { throw .corrupt }
                    context.fireChannelRead(wrapInboundOut(try inflater.inflate(bytes, allocator: context.channel.allocator)))
                } catch {
                    let failure =
                        error == .tooLarge
                        ? WebSocketFailure(
                            code: WebSocketCloseCode.messageTooBig, description: "A compressed message inflates past the limit")
                        : WebSocketFailure(code: WebSocketCloseCode.invalidPayload, description: "A compressed message does not inflate")
                    failureCode = failure.code
                    context.fireErrorCaught(failure)
                    return
                }
            case .ping(let range):
                let payload = buffer.getBytes(at: base + range.lowerBound, length: range.count) ?? []
                context.writeAndFlush(wrapOutboundOut(frame(.pong, payload, context: context)), promise: nil)
            case .pong:
                break
            case .close(let code):
                // Echo the close, then end the connection; the peer has said it sends no more.
                guard !sentClose else {
                    context.close(promise: nil)
                    return
                }
                sentClose = true
                let closeFrame = frame(.close, closePayload(code ?? WebSocketCloseCode.normal), context: context)
                context.writeAndFlush(wrapOutboundOut(closeFrame)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
                return
            case .failed(let code, let description):
                failureCode = code
                // The session handler may say why in its own protocol before closing.
                context.fireErrorCaught(WebSocketFailure(code: code, description: description))
                return
            }
        }
    }

    package func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // A half-close (the session's last word written) gets the close frame too: RFC 6455 wants
        // one before the TCP connection ends, with the failure's code when there was one.
        guard mode != .input, !sentClose, context.channel.isActive else {
            context.close(mode: mode, promise: promise)
            return
        }
        sentClose = true
        let closeFrame = frame(.close, closePayload(failureCode ?? WebSocketCloseCode.normal), context: context)
        context.writeAndFlush(wrapOutboundOut(closeFrame)).assumeIsolated().whenComplete { _ in
            context.close(mode: mode, promise: promise)
        }
    }

    private func closePayload(_ code: UInt16) -> [UInt8] { [UInt8(code >> 8), UInt8(code & 0xFF)] }

    private func frame(_ opcode: WebSocketOpcode, _ payload: [UInt8], context: ChannelHandlerContext) -> ByteBuffer {
        let key = isClient ? maskingKeys.next() : nil
        return context.channel.allocator.buffer(bytes: WebSocketFrameWriter.frame(opcode, payload: payload, maskingKey: key))
    }
}

/// The `Sec-WebSocket-Accept` answer to a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
func webSocketAccept(for key: String) -> String {
    let digest = Insecure.SHA1.hash(data: Array((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))
    return Base64.encode(Array(digest))
}

/// Upgrades an HTTP/1.1 request to a LIME session over WebSocket (RFC 6455 §4.2), echoing the
/// `lime` subprotocol when the client offers it.
package final class LIMEWebSocketServerUpgrader: HTTPServerProtocolUpgrader, Sendable {
    package let supportedProtocol = "websocket"
    package let requiredUpgradeHeaders: [String] = []
    private let maximumMessageBytes: Int
    /// permessage-deflate is accepted when given: messages of at least this many bytes are
    /// compressed.
    private let compressionThreshold: Int?
    private let makeSession: @Sendable (WebSocketCompression?) -> any ChannelHandler

    /// `makeSession` builds the handler of each upgraded connection's session, given what was
    /// negotiated for compression.
    package init(
        maximumMessageBytes: Int, compressionThreshold: Int? = nil,
        makeSession: @escaping @Sendable (WebSocketCompression?) -> any ChannelHandler
    ) {
        self.maximumMessageBytes = maximumMessageBytes
        self.compressionThreshold = compressionThreshold
        self.makeSession = makeSession
    }

    /// What this request's offers of permessage-deflate come to (the same in the response and
    /// in the upgrade: both read the request).
    private func compression(for request: HTTPRequestHead) -> WebSocketCompression? {
        guard let threshold = compressionThreshold else { return nil }
        let offers = PerMessageDeflate.offers(in: request.headers[canonicalForm: "sec-websocket-extensions"].map(String.init))
        return PerMessageDeflate.accept(offers).map { WebSocketCompression(parameters: $0, isClient: false, threshold: threshold) }
    }

    package func buildUpgradeResponse(channel: any Channel, upgradeRequest: HTTPRequestHead, initialResponseHeaders: HTTPHeaders)
        -> EventLoopFuture<HTTPHeaders>
    {
        let keys = upgradeRequest.headers[canonicalForm: "sec-websocket-key"]
        let versions = upgradeRequest.headers[canonicalForm: "sec-websocket-version"]
        guard keys.count == 1, versions == ["13"] else {
            return channel.eventLoop.makeFailedFuture(
                WebSocketFailure(code: WebSocketCloseCode.protocolError, description: "Not a WebSocket 13 upgrade"))
        }
        var headers = initialResponseHeaders
        headers.replaceOrAdd(name: "Upgrade", value: "websocket")
        headers.replaceOrAdd(name: "Connection", value: "upgrade")
        headers.add(name: "Sec-WebSocket-Accept", value: webSocketAccept(for: String(keys[0])))
        // Clients that ask for no subprotocol are served too.
        let offered = upgradeRequest.headers[canonicalForm: "sec-websocket-protocol"].map { $0.lowercased() }
        if offered.contains("lime") { headers.add(name: "Sec-WebSocket-Protocol", value: "lime") }
        if let compression = compression(for: upgradeRequest) {
            headers.add(name: "Sec-WebSocket-Extensions", value: compression.parameters.headerValue)
        }
        return channel.eventLoop.makeSucceededFuture(headers)
    }

    package func upgrade(context: ChannelHandlerContext, upgradeRequest: HTTPRequestHead) -> EventLoopFuture<Void> {
        let channel = context.channel
        let compression = compression(for: upgradeRequest)
        return channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandlers([
                WebSocketEnvelopeHandler(isClient: false, maximumMessageBytes: maximumMessageBytes, compression: compression),
                makeSession(compression),
            ])
        }
    }
}

/// Asks an HTTP/1.1 server to upgrade to a LIME session over WebSocket, and checks its answer.
package final class LIMEWebSocketClientUpgrader: NIOTypedHTTPClientProtocolUpgrader {
    package typealias UpgradeResult = Bool
    package let supportedProtocol = "websocket"
    package let requiredUpgradeHeaders: [String] = []
    private let key: String
    private let maximumMessageBytes: Int
    /// permessage-deflate is offered when given: messages of at least this many bytes are then
    /// compressed, if the server accepts.
    private let compressionThreshold: Int?
    private let makeSession: @Sendable () -> any ChannelHandler
    /// What the server accepted, for the connection's writer.
    package let negotiated = Mutex<WebSocketCompression?>(nil)

    package init(maximumMessageBytes: Int, compressionThreshold: Int? = nil, makeSession: @escaping @Sendable () -> any ChannelHandler) {
        var generator = SystemRandomNumberGenerator()
        self.key = Base64.encode((0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) })
        self.maximumMessageBytes = maximumMessageBytes
        self.compressionThreshold = compressionThreshold
        self.makeSession = makeSession
    }

    package func addCustom(upgradeRequestHeaders: inout HTTPHeaders) {
        upgradeRequestHeaders.add(name: "Sec-WebSocket-Key", value: key)
        upgradeRequestHeaders.add(name: "Sec-WebSocket-Version", value: "13")
        if compressionThreshold != nil {
            upgradeRequestHeaders.add(name: "Sec-WebSocket-Extensions", value: PerMessageDeflate.clientOffer.headerValue)
        }
    }

    package func shouldAllowUpgrade(upgradeResponse: HTTPResponseHead) -> Bool {
        guard upgradeResponse.headers[canonicalForm: "sec-websocket-accept"] == [Substring(webSocketAccept(for: key))] else { return false }
        // An extension the client did not offer, or an answer it cannot accept, fails the upgrade.
        let extensions = upgradeResponse.headers[canonicalForm: "sec-websocket-extensions"].map(String.init)
        let answer: PerMessageDeflate?
        do { answer = try PerMessageDeflate.response(in: extensions) } catch { return false }
        guard let accepted = answer else { return extensions.isEmpty }
        guard let threshold = compressionThreshold else { return false }
        negotiated.withLock { $0 = WebSocketCompression(parameters: accepted, isClient: true, threshold: threshold) }
        return true
    }

    package func upgrade(channel: any Channel, upgradeResponse: HTTPResponseHead) -> EventLoopFuture<Bool> {
        let compression = negotiated.withLock { $0 }
        return channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandlers([
                WebSocketEnvelopeHandler(isClient: true, maximumMessageBytes: maximumMessageBytes, compression: compression), makeSession(),
            ])
            return true
        }
    }
}
