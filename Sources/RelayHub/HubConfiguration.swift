import Foundation
import RelayCore
import RelayTransport

/// Everything `relay serve` can be told, with the defaults it runs on when told nothing.
///
/// Read from a JSON file (`relay serve --config FILE`); every key is optional. Example:
/// ```json
/// { "domain": "relay.local", "ws": "127.0.0.1:8080", "tcp": "127.0.0.1:55321",
///   "guest": true,
///   "users": [ { "identity": "alice@relay.local", "password": "pbkdf2-sha256$100000$...$...",
///                "permissions": { "publish": ["orders.>"], "subscribe": ["orders.>"] } } ],
///   "tls": { "cert": "hub.pem", "key": "hub.key" },
///   "limits": { "maxEnvelopeBytes": 1048576, "maxSessions": 65536 } }
/// ```
public struct HubConfiguration: Sendable, Codable {
    /// The hub's LIME domain; the hub's node is `postmaster@DOMAIN/hub`.
    public var domain: String = "relay.local"
    /// Where LIME over WebSocket is served; nil turns the listener off.
    public var ws: HostAndPort? = HostAndPort(host: "127.0.0.1", port: 8080)
    /// Where LIME over TCP is served; nil turns the listener off.
    public var tcp: HostAndPort? = HostAndPort(host: "127.0.0.1", port: 55321)
    /// Where the NATS client protocol is served; nil turns the listener off.
    public var nats: HostAndPort? = HostAndPort(host: "127.0.0.1", port: 4222)
    /// Where the HTTP monitoring endpoints are served (docs/OPERATIONS.md); nil turns them off.
    public var http: HostAndPort? = HostAndPort(host: "127.0.0.1", port: 8222)
    /// NATS keepalive settings.
    public var natsOptions: NATSOptions = NATSOptions()

    public struct NATSOptions: Sendable, Codable {
        /// Seconds between the hub's PINGs to an idle NATS client (nats-server: 2 minutes).
        public var pingIntervalSeconds: Double = 120
        /// Unanswered PINGs before the connection is stale and closed (nats-server: 2).
        public var maxPingsOutstanding: Int = 2

        public init() {}
    }

    /// Whether the `guest` scheme is offered (any identity, no password).
    public var guest: Bool = true
    /// Users, with salted password hashes and key digests (`relay passwd` makes them), roles and
    /// permissions.
    public var users: [User] = []
    /// Identities allowed to call `admin` methods of services.
    public var admins: [String] = []
    /// Named sets of permissions users take by naming them.
    public var roles: [String: PermissionSettings] = [:]
    /// What guests (and NATS connections without credentials) may do; nil: everything.
    public var guestPermissions: PermissionSettings?
    /// TLS on every listener; nil: plaintext only.
    public var tls: TLSSettings?
    /// JWTs accepted by the `external` scheme and as NATS `auth_token`; nil: none.
    public var jwt: JWTSettings?
    /// Seconds a drain (SIGTERM) waits for the requests in flight before ending the sessions.
    public var drainTimeoutSeconds: Double = 30
    /// Whether the monitoring endpoints other than `/healthz` and `/readyz` need an
    /// administrator's credentials (HTTP Basic with a user's password, or Bearer with a user's key
    /// or a JWT; docs/OPERATIONS.md).
    public var httpRequiresAdmin = false
    /// W3C trace context (`traceparent`, `tracestate`), which the hub always carries.
    public var tracing = TracingSettings()

    /// What the hub does with trace context beyond carrying it.
    public struct TracingSettings: Sendable, Codable, Equatable {
        /// Start a trace for each message, request and queued message that arrives without a
        /// valid `traceparent`. Off by default: it gives every NATS delivery headers (`HMSG`),
        /// which costs bytes and the hub's fast path for plain messages.
        public var createContext: Bool = false

        public init(createContext: Bool = false) { self.createContext = createContext }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            createContext = try container.decodeIfPresent(Bool.self, forKey: .createContext) ?? false
        }
    }
    /// Compression on the wire.
    public var compression = CompressionSettings()
    /// The nats-server cluster the hub joins; nil: one hub on its own.
    public var cluster: ClusterSettings?

    /// What the hub compresses (docs/OPERATIONS.md).
    public struct CompressionSettings: Sendable, Codable, Equatable {
        /// Accept WebSocket's permessage-deflate (RFC 7692) from clients that offer it. Off by
        /// default, as in nats-server: it costs CPU on both sides, and pays on slow links.
        public var websocket: Bool = false
        /// Messages smaller than this many bytes go uncompressed.
        public var threshold: Int = 256
        /// Offer LIME's session compression (`gzip`) to sessions over plaintext TCP. It makes the
        /// session negotiate, which lime-python's TCP transport does not follow.
        public var session: Bool = false

        public init(websocket: Bool = false, threshold: Int = 256, session: Bool = false) {
            self.websocket = websocket
            self.threshold = threshold
            self.session = session
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            websocket = try container.decodeIfPresent(Bool.self, forKey: .websocket) ?? false
            session = try container.decodeIfPresent(Bool.self, forKey: .session) ?? false
            threshold = try container.decodeIfPresent(Int.self, forKey: .threshold) ?? 256
        }
    }
    /// Where durable queues are kept (a SQLite file inside); `relay serve --data DIR`.
    public var data: String = ".relay-data"
    /// Durable queues created at start (more can be created at run time).
    public var queues: [QueueSettings] = []

    /// A durable queue as the configuration file describes it.
    public struct QueueSettings: Sendable, Codable {
        public var name: String
        public var subjects: [String]
        public var maxMessages: Int?
        public var maxBytes: Int?
        public var maxAgeSeconds: Double?
        public var ackWaitMilliseconds: Int?
        public var maxDeliveries: Int?
        public var deadLetterSubject: String?
        public var ttlSeconds: Double?

        var configuration: QueueConfiguration {
            QueueConfiguration(
                name: name, subjects: subjects, maximumMessages: maxMessages, maximumBytes: maxBytes, maximumAgeSeconds: maxAgeSeconds,
                ackWaitMilliseconds: ackWaitMilliseconds ?? 30_000, maximumDeliveries: maxDeliveries, deadLetterSubject: deadLetterSubject,
                timeToLiveSeconds: ttlSeconds)
        }
    }
    public var limits: Limits = Limits()

    public struct User: Sendable, Codable {
        public var identity: String
        /// A `PasswordHash` string (`plain` scheme, NATS user/pass); never the password itself.
        public var password: String?
        /// A `KeyDigest` string (`key` scheme, NATS `auth_token`); never the key itself.
        public var key: String?
        /// Roles whose permissions the user has as well as its own.
        public var roles: [String]?
        /// What the user may do; nil with no roles: everything.
        public var permissions: PermissionSettings?

        public init(
            identity: String, password: String? = nil, key: String? = nil, roles: [String]? = nil, permissions: PermissionSettings? = nil
        ) {
            self.identity = identity
            self.password = password
            self.key = key
            self.roles = roles
            self.permissions = permissions
        }
    }

    public struct Limits: Sendable, Codable {
        /// The largest envelope accepted, in bytes (default 1 MiB).
        public var maxEnvelopeBytes: Int = LIMEStreamFramer.defaultMaximumEnvelopeSize
        /// The most sessions held at once; more connections are refused with `failed`.
        public var maxSessions: Int = 65_536
        /// Seconds a connection has to reach `established`.
        public var establishTimeoutSeconds: Double = 10
        /// Bytes that may wait to be written to one session before it is ended as a slow consumer.
        public var maxPendingBytes: Int = 64 << 20
        /// Delivered message ids remembered so that receipts find their way back.
        public var maxReceiptRoutes: Int = 10_000
        /// The deepest JSON nesting accepted in an envelope.
        public var maxJSONDepth: Int = 64
        /// Subject subscriptions one session may hold.
        public var maxSubscriptionsPerSession: Int = 10_000
        /// Service requests one session may have in flight.
        public var maxRequestsPerSession: Int = 10_000
        /// Service requests from the cluster (other hubs' callers, NATS clients of the cluster)
        /// that may be in flight here together.
        public var maxRequestsFromCluster: Int = 100_000
        /// The deadline of a service request that sets none.
        public var defaultRequestTimeoutSeconds: Double = 30
        /// Deliveries held for one subscription while its subscriber's connection cannot take more;
        /// beyond it the subscription's overflow policy applies (LIME default: drop the newest).
        /// NATS subscriptions are bounded by `maxPendingBytes` alone, as with nats-server's
        /// `max_pending`: past it the connection is a slow consumer.
        public var maxHeldPerSubscription: Int = 10_000
        /// Connections open at once from one IP address; more are refused.
        public var maxConnectionsPerAddress: Int = 1_000
        /// Failed authentications from one address within `authFailureWindowSeconds` after which
        /// its new connections are refused until the window has passed.
        public var maxAuthFailuresPerAddress: Int = 20
        public var authFailureWindowSeconds: Double = 60
        /// Whether the two per-address limits apply to loopback clients too (off: local tools and
        /// benchmarks are not limited).
        public var addressLimitsOnLoopback: Bool = false
        /// Seconds a refused authentication waits before its answer (slows password guessing).
        public var authFailureDelaySeconds: Double = 1
        /// Subscriptions all sessions of one identity may hold together.
        public var maxSubscriptionsPerIdentity: Int = 100_000
        /// Bytes that may wait to be written to all sessions of one identity together; beyond it
        /// the session being written to is a slow consumer.
        public var maxPendingBytesPerIdentity: Int = 256 << 20
        /// How long a publisher's connection stops reading, at most, for a subscriber with more
        /// than half of `maxPendingBytes` waiting to be written (0: never); a subscriber that does
        /// not catch up within it is left to the slow-consumer cap.
        public var maxPublisherStallMilliseconds: Int = 1_000

        public init() {}
    }

    public init() {}

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = HubConfiguration()
        domain = try container.decodeIfPresent(String.self, forKey: .domain) ?? defaults.domain
        ws = container.contains(.ws) ? try container.decodeIfPresent(HostAndPort.self, forKey: .ws) : defaults.ws
        tcp = container.contains(.tcp) ? try container.decodeIfPresent(HostAndPort.self, forKey: .tcp) : defaults.tcp
        nats = container.contains(.nats) ? try container.decodeIfPresent(HostAndPort.self, forKey: .nats) : defaults.nats
        http = container.contains(.http) ? try container.decodeIfPresent(HostAndPort.self, forKey: .http) : defaults.http
        natsOptions = try container.decodeIfPresent(NATSOptions.self, forKey: .natsOptions) ?? NATSOptions()
        guest = try container.decodeIfPresent(Bool.self, forKey: .guest) ?? defaults.guest
        users = try container.decodeIfPresent([User].self, forKey: .users) ?? []
        admins = try container.decodeIfPresent([String].self, forKey: .admins) ?? []
        roles = try container.decodeIfPresent([String: PermissionSettings].self, forKey: .roles) ?? [:]
        guestPermissions = try container.decodeIfPresent(PermissionSettings.self, forKey: .guestPermissions)
        tls = try container.decodeIfPresent(TLSSettings.self, forKey: .tls)
        jwt = try container.decodeIfPresent(JWTSettings.self, forKey: .jwt)
        data = try container.decodeIfPresent(String.self, forKey: .data) ?? defaults.data
        drainTimeoutSeconds = try container.decodeIfPresent(Double.self, forKey: .drainTimeoutSeconds) ?? defaults.drainTimeoutSeconds
        tracing = try container.decodeIfPresent(TracingSettings.self, forKey: .tracing) ?? defaults.tracing
        compression = try container.decodeIfPresent(CompressionSettings.self, forKey: .compression) ?? defaults.compression
        cluster = try container.decodeIfPresent(ClusterSettings.self, forKey: .cluster)
        httpRequiresAdmin = try container.decodeIfPresent(Bool.self, forKey: .httpRequiresAdmin) ?? defaults.httpRequiresAdmin
        queues = try container.decodeIfPresent([QueueSettings].self, forKey: .queues) ?? []
        limits = try container.decodeIfPresent(Limits.self, forKey: .limits) ?? Limits()
    }

    /// Reads a configuration file.
    public static func load(path: String) throws -> HubConfiguration {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return try JSONDecoder().decode(HubConfiguration.self, from: data)
    }

    /// The hub's own node.
    public var hubNode: Node { Node(name: "postmaster", domain: domain, instance: "hub") }
}

extension HubConfiguration.NATSOptions {
    public init(from decoder: any Decoder) throws {
        self.init()
        let container = try decoder.container(keyedBy: CodingKeys.self)
        pingIntervalSeconds = try container.decodeIfPresent(Double.self, forKey: .pingIntervalSeconds) ?? pingIntervalSeconds
        maxPingsOutstanding = try container.decodeIfPresent(Int.self, forKey: .maxPingsOutstanding) ?? maxPingsOutstanding
    }
}

extension HubConfiguration.Limits {
    public init(from decoder: any Decoder) throws {
        self.init()
        let container = try decoder.container(keyedBy: CodingKeys.self)
        maxEnvelopeBytes = try container.decodeIfPresent(Int.self, forKey: .maxEnvelopeBytes) ?? maxEnvelopeBytes
        maxSessions = try container.decodeIfPresent(Int.self, forKey: .maxSessions) ?? maxSessions
        establishTimeoutSeconds = try container.decodeIfPresent(Double.self, forKey: .establishTimeoutSeconds) ?? establishTimeoutSeconds
        maxPendingBytes = try container.decodeIfPresent(Int.self, forKey: .maxPendingBytes) ?? maxPendingBytes
        maxReceiptRoutes = try container.decodeIfPresent(Int.self, forKey: .maxReceiptRoutes) ?? maxReceiptRoutes
        maxJSONDepth = try container.decodeIfPresent(Int.self, forKey: .maxJSONDepth) ?? maxJSONDepth
        maxSubscriptionsPerSession =
            try container.decodeIfPresent(Int.self, forKey: .maxSubscriptionsPerSession) ?? maxSubscriptionsPerSession
        maxRequestsPerSession = try container.decodeIfPresent(Int.self, forKey: .maxRequestsPerSession) ?? maxRequestsPerSession
        maxRequestsFromCluster = try container.decodeIfPresent(Int.self, forKey: .maxRequestsFromCluster) ?? maxRequestsFromCluster
        maxHeldPerSubscription = try container.decodeIfPresent(Int.self, forKey: .maxHeldPerSubscription) ?? maxHeldPerSubscription
        maxConnectionsPerAddress = try container.decodeIfPresent(Int.self, forKey: .maxConnectionsPerAddress) ?? maxConnectionsPerAddress
        maxAuthFailuresPerAddress = try container.decodeIfPresent(Int.self, forKey: .maxAuthFailuresPerAddress) ?? maxAuthFailuresPerAddress
        authFailureWindowSeconds = try container.decodeIfPresent(Double.self, forKey: .authFailureWindowSeconds) ?? authFailureWindowSeconds
        addressLimitsOnLoopback = try container.decodeIfPresent(Bool.self, forKey: .addressLimitsOnLoopback) ?? addressLimitsOnLoopback
        authFailureDelaySeconds = try container.decodeIfPresent(Double.self, forKey: .authFailureDelaySeconds) ?? authFailureDelaySeconds
        maxSubscriptionsPerIdentity =
            try container.decodeIfPresent(Int.self, forKey: .maxSubscriptionsPerIdentity) ?? maxSubscriptionsPerIdentity
        maxPendingBytesPerIdentity =
            try container.decodeIfPresent(Int.self, forKey: .maxPendingBytesPerIdentity) ?? maxPendingBytesPerIdentity
        defaultRequestTimeoutSeconds =
            try container.decodeIfPresent(Double.self, forKey: .defaultRequestTimeoutSeconds) ?? defaultRequestTimeoutSeconds
        maxPublisherStallMilliseconds =
            try container.decodeIfPresent(Int.self, forKey: .maxPublisherStallMilliseconds) ?? maxPublisherStallMilliseconds
    }
}
