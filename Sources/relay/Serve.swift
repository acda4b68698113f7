import ArgumentParser
import Logging
import NIOPosix
import RelayHub
import RelayTransport
import ServiceLifecycle

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a hub (LIME over WebSocket and TCP, NATS) on embedded defaults, or as a configuration file says.")

    @Option(name: .customLong("ws"), help: "Where LIME over WebSocket listens, HOST:PORT (default 127.0.0.1:8080).")
    var webSocket: String?

    @Option(name: .customLong("tcp"), help: "Where LIME over TCP listens, HOST:PORT (default 127.0.0.1:55321).")
    var tcp: String?

    @Option(name: .customLong("nats"), help: "Where the NATS client protocol listens, HOST:PORT (default 127.0.0.1:4222).")
    var nats: String?

    @Option(
        name: .customLong("http"), help: "Where the monitoring endpoints listen, HOST:PORT (default 127.0.0.1:8222; 'off' turns them off).")
    var http: String?

    @Option(name: .customLong("drain-timeout"), help: "Seconds SIGTERM's drain waits for requests in flight (default 30).")
    var drainTimeout: Double?

    @Option(name: .customLong("data"), help: "Where durable queues are kept (default .relay-data).")
    var data: String?

    @Option(name: .customLong("config"), help: "A JSON configuration file (see the README).")
    var configFile: String?

    @Option(name: .customLong("threads"), help: "Event-loop threads serving connections (default: one per core).")
    var threads: Int?

    @Option(name: .customLong("tls-cert"), help: "Serve TLS on every listener with this certificate chain (PEM); SIGHUP reloads it.")
    var tlsCertificate: String?

    @Option(name: .customLong("tls-key"), help: "The private key of --tls-cert (PEM).")
    var tlsKey: String?

    @Option(name: .customLong("tls-ca"), help: "Check client certificates against these authorities (PEM).")
    var tlsCA: String?

    @Flag(name: .customLong("tls-verify"), help: "Require a client certificate signed by --tls-ca.")
    var tlsVerify = false

    @Flag(name: .customLong("tls-required"), help: "Refuse plaintext clients.")
    var tlsRequired = false

    @Flag(name: .customLong("create-trace-context"), help: "Start a W3C trace for messages that come without a traceparent.")
    var createTraceContext = false

    @Flag(name: .customLong("ws-compression"), help: "Accept WebSocket permessage-deflate from clients that offer it.")
    var webSocketCompression = false

    @Flag(name: .customLong("session-compression"), help: "Offer LIME's gzip session compression over plaintext TCP.")
    var sessionCompression = false

    @Option(
        name: .customLong("cluster"),
        help: "Join a nats-server cluster: its servers, comma-separated (nats://h1:4222,nats://h2:4222); docs/CLUSTER.md.")
    var cluster: String?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @Option(name: .customLong("log-format"), help: "logfmt or json: one line per event on standard error (default logfmt).")
    var logFormat: String = "logfmt"

    func run() async throws {
        MemoryTuning.apply()
        let configuration = try self.configuration()
        guard let level = Logger.Level(rawValue: logLevel) else { throw ValidationError("unknown log level '\(logLevel)'") }
        guard let format = LineLogHandler.Format(rawValue: logFormat) else {
            throw ValidationError("--log-format expects logfmt or json, got '\(logFormat)'")
        }
        LoggingSystem.bootstrap { label in
            var handler = LineLogHandler(label: label, format: format)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "relay")
        if let threads, threads < 1 { throw ValidationError("--threads expects a positive number, got \(threads)") }
        let loops = threads.map { MultiThreadedEventLoopGroup(numberOfThreads: $0) } ?? .singleton
        let server = try HubServer(configuration: configuration, group: loops, logger: logger)
        // SIGHUP reads the file again. What the listener, data and TLS flags set cannot change
        // without a restart anyway (the hub keeps it); the drain timeout's flag still wins.
        var source: (@Sendable () throws -> HubConfiguration)?
        if let path = configFile {
            let (drainTimeout, createTraceContext) = (self.drainTimeout, self.createTraceContext)
            let clusterServers = try self.clusterServers()
            source = { @Sendable () throws -> HubConfiguration in
                var fresh = try HubConfiguration.load(path: path)
                if let drainTimeout { fresh.drainTimeoutSeconds = drainTimeout }
                if createTraceContext { fresh.tracing.createContext = true }
                if let clusterServers { fresh.cluster = Self.cluster(clusterServers, over: fresh.cluster) }
                return fresh
            }
        }
        let service = HubService(server: server, configurationSource: source)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
    }

    /// The configuration file (if any) with the flags applied over it.
    func configuration() throws -> HubConfiguration {
        var configuration = try configFile.map { try HubConfiguration.load(path: $0) } ?? HubConfiguration()
        if let webSocket { configuration.ws = try Self.address(webSocket, flag: "--ws") }
        if let tcp { configuration.tcp = try Self.address(tcp, flag: "--tcp") }
        if let nats { configuration.nats = try Self.address(nats, flag: "--nats") }
        if let http { configuration.http = http == "off" ? nil : try Self.address(http, flag: "--http") }
        if let data { configuration.data = data }
        if let drainTimeout { configuration.drainTimeoutSeconds = drainTimeout }
        if createTraceContext { configuration.tracing.createContext = true }
        if webSocketCompression { configuration.compression.websocket = true }
        if sessionCompression { configuration.compression.session = true }
        if let servers = try clusterServers() { configuration.cluster = Self.cluster(servers, over: configuration.cluster) }
        if let tlsCertificate {
            guard let tlsKey else { throw ValidationError("--tls-cert needs --tls-key") }
            var tls = configuration.tls ?? HubConfiguration.TLSSettings(cert: tlsCertificate, key: tlsKey)
            (tls.cert, tls.key) = (tlsCertificate, tlsKey)
            configuration.tls = tls
        } else if tlsKey != nil {
            throw ValidationError("--tls-key needs --tls-cert")
        }
        if tlsCA != nil || tlsVerify || tlsRequired {
            guard var tls = configuration.tls else { throw ValidationError("--tls-ca, --tls-verify and --tls-required need --tls-cert") }
            if let tlsCA { tls.ca = tlsCA }
            if tlsVerify { tls.verify = true }
            if tlsRequired { tls.required = true }
            configuration.tls = tls
        }
        return configuration
    }

    /// The servers `--cluster` lists, if given.
    func clusterServers() throws -> [String]? {
        guard let cluster else { return nil }
        let servers = cluster.split(separator: ",").map { String($0.filter { !$0.isWhitespace }) }.filter { !$0.isEmpty }
        guard !servers.isEmpty else { throw ValidationError("--cluster expects nats://HOST:PORT[,...]") }
        return servers
    }

    /// The file's cluster settings (if any) with `--cluster`'s servers.
    static func cluster(_ servers: [String], over settings: HubConfiguration.ClusterSettings?) -> HubConfiguration.ClusterSettings {
        var settings = settings ?? HubConfiguration.ClusterSettings(servers: servers)
        settings.servers = servers
        return settings
    }

    static func address(_ text: String, flag: String) throws -> HostAndPort {
        guard let address = HostAndPort(text) else { throw ValidationError("\(flag) expects HOST:PORT, got '\(text)'") }
        return address
    }
}

struct Passwd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the salted hash of a password for a user entry of the configuration file, or make a key and its digest.")

    @Flag(help: "Make a random key (the key scheme, NATS auth_token): prints the key, then the digest for the configuration.")
    var key = false

    @Argument(help: "The password; read from standard input when omitted.")
    var password: String?

    func run() async throws {
        if key {
            let made = KeyDigest.makeKey()
            print(made.key)
            print(made.digest)
            return
        }
        guard let password = password ?? readLine(strippingNewline: true), !password.isEmpty else {
            throw ValidationError("no password given")
        }
        print(try PasswordHash.make(password: password))
    }
}
