import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// A LIME server address: `ws://HOST:PORT[/PATH]`, `wss://HOST:PORT[/PATH]` or `tcp://HOST:PORT`
/// (also `net.tcp://`; TLS over TCP is negotiated in the session).
package struct LIMEEndpoint: Sendable {
    package enum Transport: Sendable {
        case tcp
        case webSocket(path: String)
    }

    package var transport: Transport
    package var host: String
    package var port: Int
    /// Whether the connection starts with TLS (`wss://`).
    package var secure = false

    package init?(_ text: String) {
        guard let components = URLComponents(string: text), let scheme = components.scheme?.lowercased(),
            let host = components.host, !host.isEmpty
        else { return nil }
        self.host = host
        switch scheme {
        case "ws", "wss":
            transport = .webSocket(path: components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath)
            port = components.port ?? 8080
            secure = scheme == "wss"
        case "tcp", "net.tcp":
            transport = .tcp
            port = components.port ?? 55321
        default:
            return nil
        }
    }
}

/// Errors of connecting a LIME transport.
package enum LIMETransportError: Error {
    case upgradeRefused
}

/// Posted into the pipeline when the transport is ready for envelopes (after a WebSocket upgrade),
/// with the writer that frames them for it.
package struct LIMETransportReady: Sendable {
    package let writer: ChannelWriter
}

/// An open LIME transport: its channel, and the writer every envelope sent on it goes through.
package struct LIMETransport: Sendable {
    package let channel: any Channel
    package let writer: ChannelWriter
    /// permessage-deflate, when the WebSocket upgrade negotiated it.
    package var compression: WebSocketCompression?
}

/// Opens a LIME transport to a server and puts the handler that `makeHandler` builds on top of it:
/// over TCP directly, over WebSocket after the upgrade (subprotocol `lime`, one envelope per frame).
/// `LIMETransportReady` is fired through the pipeline once envelopes can be sent.
package enum LIMETransportConnector {
    /// `makeTLSHandler` gives the handler TLS runs in for `wss://`, first in the pipeline.
    package static func connect(
        to endpoint: LIMEEndpoint, group: any EventLoopGroup, connectTimeout: Duration, maximumEnvelopeBytes maximum: Int,
        compressionThreshold: Int? = nil, makeTLSHandler: (@Sendable () throws -> any ChannelHandler)? = nil,
        makeHandler: @escaping @Sendable (LIMEEnvelopeReader) -> any ChannelHandler
    ) async throws -> LIMETransport {
        let bootstrap = ClientBootstrap(group: group)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(TimeAmount(connectTimeout))
        switch endpoint.transport {
        case .tcp:
            let channel = try await bootstrap.channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        makeHandler(LIMEEnvelopeReader(framing: .stream, maximumEnvelopeSize: maximum)))
                }
            }.connect(host: endpoint.host, port: endpoint.port).get()
            return ready(channel, framing: .stream)
        case .webSocket(let path):
            let upgradeResult = group.next().makePromise(of: Bool.self)
            // Made here, not in the initializer, so that what it negotiated can be read after.
            let upgrader = LIMEWebSocketClientUpgrader(maximumMessageBytes: maximum, compressionThreshold: compressionThreshold) {
                makeHandler(LIMEEnvelopeReader(framing: .messages, maximumEnvelopeSize: maximum))
            }
            let channel: any Channel
            do {
                channel = try await bootstrap.channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if endpoint.secure, let makeTLSHandler { try channel.pipeline.syncOperations.addHandler(makeTLSHandler()) }
                        var headers = HTTPHeaders()
                        headers.add(name: "Host", value: "\(endpoint.host):\(endpoint.port)")
                        headers.add(name: "Sec-WebSocket-Protocol", value: "lime")
                        headers.add(name: "Content-Length", value: "0")
                        let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: headers)
                        let configuration = NIOTypedHTTPClientUpgradeConfiguration(
                            upgradeRequestHead: head, upgraders: [upgrader],
                            notUpgradingCompletionHandler: { channel in channel.eventLoop.makeSucceededFuture(false) })
                        try channel.pipeline.syncOperations.configureUpgradableHTTPClientPipeline(
                            configuration: .init(upgradeConfiguration: configuration)
                        ).cascade(to: upgradeResult)
                    }
                }.connect(host: endpoint.host, port: endpoint.port).get()
            } catch {
                upgradeResult.succeed(false)
                throw error
            }
            guard try await upgradeResult.futureResult.get() else {
                channel.close(promise: nil)
                throw LIMETransportError.upgradeRefused
            }
            return ready(channel, framing: .webSocket(masked: true), compression: upgrader.negotiated.withLock { $0 })
        }
    }

    private static func ready(_ channel: any Channel, framing: ChannelWriter.Framing, compression: WebSocketCompression? = nil)
        -> LIMETransport
    {
        let writer = ChannelWriter(channel: channel, framing: framing, compression: compression)
        channel.eventLoop.execute { channel.pipeline.fireUserInboundEventTriggered(LIMETransportReady(writer: writer)) }
        return LIMETransport(channel: channel, writer: writer, compression: compression)
    }
}
