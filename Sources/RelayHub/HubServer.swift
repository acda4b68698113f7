import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import RelayCore
import RelayTransport
import ServiceLifecycle
import Synchronization
import Tracing
import UnixSignals

/// The hub's listeners: LIME over WebSocket and over TCP, sharing one `Hub`.
public final class HubServer: Sendable {
    public let hub: Hub
    private let group: any EventLoopGroup
    /// The session listeners (WebSocket, TCP, NATS); the monitoring one is kept apart, open
    /// until the drain is over.
    private let listeners = Mutex<[any Channel]>([])
    private let monitoring = Mutex<(any Channel)?>(nil)

    public init(
        configuration: HubConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "relay.hub"), tracer: (any Tracer)? = nil
    ) throws {
        self.hub = try Hub(configuration: configuration, group: group, logger: logger, tracer: tracer)
        self.group = group
    }

    /// The addresses the hub listens on, once started (useful with port 0).
    public private(set) var boundAddresses: BoundAddresses {
        get { bound.withLock { $0 } }
        set { bound.withLock { $0 = newValue } }
    }
    private let bound = Mutex(BoundAddresses())

    /// Where each listener ended up.
    public struct BoundAddresses: Sendable {
        public var webSocket: SocketAddress?
        public var tcp: SocketAddress?
        public var nats: SocketAddress?
        public var http: SocketAddress?
    }

    /// Binds every configured listener.
    public func start() async throws {
        let configuration = hub.configuration
        let exposed = [configuration.ws, configuration.tcp, configuration.nats].compactMap { $0 }.filter { !Self.isLoopback($0.host) }
        if !exposed.isEmpty && configuration.guest {
            hub.logger.warning(
                "guest access is on and listeners are reachable from other machines: anyone there may connect (docs/SECURITY.md)",
                metadata: ["listeners": "\(exposed.map(\.description).joined(separator: ", "))"])
        }
        if !exposed.isEmpty && configuration.tls == nil {
            hub.logger.warning("listeners reachable from other machines speak plaintext: configure TLS (docs/SECURITY.md)")
        }
        // Joined first: on a cluster with JetStream, the configured queues are made as streams.
        if let cluster = configuration.cluster {
            do {
                hub.joinCluster(try await ClusterLink.connect(cluster, hubID: hub.serverID))
            } catch {
                throw HubError.cannotJoinCluster("the cluster (\(cluster.servers.joined(separator: ", "))) cannot be reached: \(error)")
            }
        }
        do {
            try await hub.openStore()
        } catch let error as HubError {
            await hub.leaveCluster()
            throw error
        } catch {
            await hub.leaveCluster()
            throw HubError.unusableDataDirectory("the data directory '\(configuration.data)' cannot be used: \(Self.reason(error))")
        }
        do {
            try await bindListeners()
        } catch {
            // What did open is closed again: the hub does not run half its listeners.
            for channel in listeners.withLock({ $0 }) { try? await channel.close() }
            try? await monitoring.withLock({ $0 })?.close()
            await hub.leaveCluster()
            await hub.closeStore()
            throw error
        }
    }

    /// `error`'s reason in words: the system's for an I/O error (`Address already in use`).
    static func reason(_ error: any Error) -> String {
        if let error = error as? IOError { return String(cString: strerror(error.errnoCode)) }
        // Foundation's file errors carry the system's in their underlying error.
        let underlying = (error as NSError).userInfo[NSUnderlyingErrorKey] as? NSError
        if let underlying, underlying.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(underlying.code))) }
        return (error as NSError).localizedDescription
    }

    private func bind(_ name: String, _ address: HostAndPort, _ open: (HostAndPort) async throws -> any Channel) async throws -> any Channel
    {
        do {
            return try await open(address)
        } catch {
            throw HubError.cannotListen("\(name) cannot listen on \(address): \(Self.reason(error))")
        }
    }

    private func bindListeners() async throws {
        let configuration = hub.configuration
        if let address = configuration.ws {
            let channel = try await bind("LIME over WebSocket", address, bindWebSocket)
            listeners.withLock { $0.append(channel) }
            boundAddresses.webSocket = channel.localAddress
            let bound = Self.describe(channel.localAddress, fallback: address)
            let urls =
                configuration.tls == nil
                ? "ws://\(bound)" : configuration.tls!.required ? "wss://\(bound)" : "ws://\(bound) and wss://\(bound)"
            hub.logger.info("LIME over WebSocket listening on \(urls)")
        }
        if let address = configuration.nats {
            let channel = try await bind("NATS", address, bindNATS)
            listeners.withLock { $0.append(channel) }
            boundAddresses.nats = channel.localAddress
            let tls = configuration.tls.map { $0.required ? " (TLS required)" : " (TLS available)" } ?? ""
            hub.logger.info("NATS listening on nats://\(Self.describe(channel.localAddress, fallback: address))\(tls)")
        }
        if let address = configuration.http {
            let channel = try await bind("monitoring", address, bindMonitoring)
            monitoring.withLock { $0 = channel }
            boundAddresses.http = channel.localAddress
            let tls = configuration.tls.map { $0.required ? " (TLS required)" : " (TLS available)" } ?? ""
            hub.logger.info("monitoring listening on http://\(Self.describe(channel.localAddress, fallback: address))\(tls)")
        }
        if let address = configuration.tcp {
            let channel = try await bind("LIME over TCP", address, bindTCP)
            listeners.withLock { $0.append(channel) }
            boundAddresses.tcp = channel.localAddress
            let tls =
                configuration.tls.map { $0.required ? " (TLS required, negotiated in the session)" : " (TLS negotiated in the session)" }
                ?? ""
            hub.logger.info("LIME over TCP listening on tcp://\(Self.describe(channel.localAddress, fallback: address))\(tls)")
        }
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || AddressLimiter.isLoopback(host)
    }

    static func describe(_ address: SocketAddress?, fallback: HostAndPort) -> String {
        guard let address, let port = address.port else { return fallback.description }
        return HostAndPort(host: address.ipAddress ?? fallback.host, port: port).description
    }

    /// Drains and stops (lame-duck mode, as nats-server): the session listeners stop accepting and
    /// `/healthz` turns 503; NATS clients are told (INFO with `ldm`) so they reconnect elsewhere;
    /// requests in flight get their answers, for up to `drainTimeout` (the configuration's
    /// `drainTimeoutSeconds` when nil); then every session is finished and given `timeout` to
    /// close, queued writes reach the disk, and the monitoring listener closes last.
    public func shutdown(drainTimeout: Duration? = nil, timeout: TimeAmount = .seconds(5)) async {
        let listening = listeners.withLock { channels in
            defer { channels.removeAll() }
            return channels
        }
        for channel in listening { try? await channel.close() }
        let drain = drainTimeout ?? .nanoseconds(Int64(hub.configuration.drainTimeoutSeconds * 1_000_000_000))
        let waiting = hub.enterLameDuck()
        if waiting > 0 {
            hub.logger.info("draining: waiting for the requests in flight", metadata: ["requests": "\(waiting)", "timeout": "\(drain)"])
        }
        let deadline = ContinuousClock.now + drain
        // Checked every 50 ms: answers come from other connections, on their own loops.
        while hub.requestsInFlight > 0, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(50)) }
        let sessions = hub.beginShutdown()
        let closed = EventLoopFuture.andAllComplete(sessions.map(\.closeFuture), on: group.any())
        let closing = group.any().scheduleTask(in: timeout) {
            for channel in sessions { channel.close(promise: nil) }
        }
        try? await closed.get()
        closing.cancel()
        await hub.leaveCluster()
        await hub.closeStore()
        try? await monitoring.withLock({ $0 })?.close()
        let statistics = hub.statistics
        hub.logger.info(
            "hub stopped",
            metadata: [
                "routed": "\(statistics.envelopesRouted)", "delivered": "\(statistics.envelopesDelivered)",
                "undeliverable": "\(statistics.envelopesUndeliverable)", "slowConsumers": "\(statistics.slowConsumers)",
                "connectionsRefused": "\(statistics.connectionsRefused)",
            ])
    }

    private func bindTCP(_ address: HostAndPort) async throws -> any Channel {
        let hub = self.hub
        return try await bind(address) { LIMEConnectionHandler(hub: hub, framing: .stream) }
    }

    private func bindNATS(_ address: HostAndPort) async throws -> any Channel {
        let hub = self.hub
        // The client's first bytes after INFO tell a TLS handshake from CONNECT.
        return try await bind(address, sniffingTLS: true) { NATSConnectionHandler(hub: hub) }
    }

    /// A plain TCP listener whose connections each get the handler `makeHandler` builds, behind a
    /// `TLSSniffer` when `sniffingTLS` and TLS is configured.
    private func bind(
        _ address: HostAndPort, sniffingTLS: Bool = false, makeHandler: @escaping @Sendable () -> any ChannelHandler
    ) async throws -> any Channel {
        let hub = self.hub
        let sniffs = sniffingTLS && hub.tls != nil
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if sniffs { try channel.pipeline.syncOperations.addHandler(TLSSniffer { hub.tlsServerHandlers() }) }
                    try channel.pipeline.syncOperations.addHandler(makeHandler())
                }
            }
            .bind(host: address.host, port: address.port).get()
    }

    private func bindWebSocket(_ address: HostAndPort) async throws -> any Channel {
        let hub = self.hub
        let maximum = hub.configuration.limits.maxEnvelopeBytes
        let compression = hub.configuration.compression
        let upgrader = LIMEWebSocketServerUpgrader(
            maximumMessageBytes: maximum, compressionThreshold: compression.websocket ? compression.threshold : nil
        ) { negotiated in
            LIMEConnectionHandler(hub: hub, framing: .messages, compression: negotiated)
        }
        // `ws://` and `wss://` on one port: a connection that opens with a TLS handshake gets TLS.
        let sniffs = hub.tls != nil
        // The upgrade has the time a session has to establish; the session's own timer takes over after.
        let upgradeTimeout = TimeAmount.nanoseconds(Int64(hub.configuration.limits.establishTimeoutSeconds * 1_000_000_000))
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                let fallback = HTTPUpgradeRequiredHandler()
                do {
                    try channel.pipeline.syncOperations.addHandler(
                        HandshakeDeadline(timeout: upgradeTimeout) { hub.noteHandshakeTimeout() }, name: Self.upgradeDeadline)
                    if sniffs { try channel.pipeline.syncOperations.addHandler(TLSSniffer { hub.tlsServerHandlers() }) }
                } catch {
                    return channel.eventLoop.makeFailedFuture(error)
                }
                return channel.pipeline.configureHTTPServerPipeline(
                    withServerUpgrade: (
                        upgraders: [upgrader],
                        completionHandler: { context in
                            context.pipeline.removeHandler(fallback, promise: nil)
                            context.pipeline.removeHandler(name: Self.upgradeDeadline, promise: nil)
                        }
                    )
                ).flatMap {
                    channel.pipeline.addHandler(fallback)
                }
            }
            .bind(host: address.host, port: address.port).get()
    }
}

extension HubServer {
    /// The name of the WebSocket upgrade's deadline in a connection's pipeline.
    static let upgradeDeadline = "relay.upgrade-deadline"

    /// The monitoring endpoints' HTTP/1.1 listener.
    fileprivate func bindMonitoring(_ address: HostAndPort) async throws -> any Channel {
        let routes = MonitoringRoutes(server: self)
        let hub = self.hub
        // `http://` and `https://` on one port when TLS is configured, as the WebSocket listener.
        let sniffs = hub.tls != nil
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                if sniffs {
                    do {
                        try channel.pipeline.syncOperations.addHandler(TLSSniffer { hub.tlsServerHandlers() })
                    } catch {
                        return channel.eventLoop.makeFailedFuture(error)
                    }
                }
                return channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(MonitoringHandler(routes: routes))
                    }
                }
            }
            .bind(host: address.host, port: address.port).get()
    }

    /// Where each listener is, for `/varz`.
    var listenerSummary: JSONObject {
        let bound = boundAddresses
        var summary: JSONObject = [:]
        let tls = hub.configuration.tls
        for (name, address, scheme) in [
            ("ws", bound.webSocket, tls == nil ? "ws" : tls!.required ? "wss" : "ws+wss"), ("tcp", bound.tcp, "tcp"),
            ("nats", bound.nats, "nats"), ("http", bound.http, tls == nil ? "http" : tls!.required ? "https" : "http+https"),
        ] {
            guard let address, let port = address.port else { continue }
            summary[name] = .string("\(scheme)://\(address.ipAddress ?? "?"):\(port)")
        }
        return summary
    }

    /// Why the hub is not healthy: a listener that stopped accepting, a drain, failing storage.
    var unhealthyReason: String? {
        if let reason = hub.unhealthyReason { return reason }
        let listening = listeners.withLock { $0 }
        if listening.isEmpty { return "the listeners are not open" }
        if let closed = (listening + [monitoring.withLock { $0 }].compactMap { $0 }).first(where: { !$0.isActive }) {
            return "a listener stopped accepting (\(closed.localAddress?.description ?? "?"))"
        }
        return nil
    }
}

/// Answers plain HTTP requests on the WebSocket port: this port speaks LIME over WebSocket only.
final class HTTPUpgradeRequiredHandler: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .end = unwrapInboundIn(data) else { return }
        let body = context.channel.allocator.buffer(
            string: "This is a Relay hub: connect with a LIME WebSocket client (subprotocol lime).\n")
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: "\(body.readableBytes)")
        headers.add(name: "Connection", value: "close")
        headers.add(name: "Upgrade", value: "websocket")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .upgradeRequired, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}

/// Runs a `HubServer` under swift-service-lifecycle: starts it; on SIGHUP reads the
/// configuration again (`configurationSource`, when given) and the TLS certificates; on graceful
/// shutdown (SIGINT/SIGTERM) drains and finishes every session before returning.
public struct HubService: Service {
    public let server: HubServer
    /// Whether SIGHUP reloads the TLS certificate, key and CA files.
    public var reloadsCertificatesOnSIGHUP: Bool
    /// Reads the configuration again for SIGHUP (the file, with the command line's flags).
    public var configurationSource: (@Sendable () throws -> HubConfiguration)?

    public init(
        server: HubServer, reloadsCertificatesOnSIGHUP: Bool = true,
        configurationSource: (@Sendable () throws -> HubConfiguration)? = nil
    ) {
        self.server = server
        self.reloadsCertificatesOnSIGHUP = reloadsCertificatesOnSIGHUP
        self.configurationSource = configurationSource
    }

    public func run() async throws {
        try await server.start()
        let hub = server.hub
        await withTaskGroup(of: Void.self) { group in
            group.addTask { try? await gracefulShutdown() }
            let source = configurationSource
            if (reloadsCertificatesOnSIGHUP && hub.tls != nil) || source != nil {
                let certificates = reloadsCertificatesOnSIGHUP && hub.tls != nil
                group.addTask {
                    for await _ in await UnixSignalsSequence(trapping: .sighup) {
                        if let source {
                            do {
                                try hub.reload(try source())
                            } catch {
                                // The configuration in force stays: a bad file must not take the hub down.
                                hub.logger.error("configuration not reloaded", metadata: ["error": "\(error)"])
                            }
                        }
                        guard certificates else { continue }
                        do {
                            try hub.reloadCertificates()
                        } catch {
                            // The certificate in use stays: a bad file must not take the listeners down.
                            hub.logger.error("TLS certificates not reloaded", metadata: ["error": "\(error)"])
                        }
                    }
                }
            }
            await group.next()
            group.cancelAll()
        }
        await server.shutdown()
    }
}
