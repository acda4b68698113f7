extension HubConfiguration {
    /// How a hub joins a nats-server cluster (`"cluster"` in the configuration file,
    /// `relay serve --cluster URLS`); docs/CLUSTER.md.
    public struct ClusterSettings: Sendable, Codable, Equatable {
        /// The cluster's servers (`nats://host:port`, `tls://host:port`); the others are learnt
        /// from their INFO (`connect_urls`).
        public var servers: [String]
        /// The name the hub's connections give the cluster (its id is appended), as shown by
        /// nats-server's `/connz`.
        public var name: String = "relay"
        /// Credentials for the cluster, when it asks for them.
        public var user: String?
        public var password: String?
        public var token: String?
        /// TLS to the cluster's servers: the CA to trust, and a client certificate if they ask.
        public var tlsCA: String?
        public var tlsCert: String?
        public var tlsKey: String?
        /// Publications held for the cluster while reconnecting, in bytes; beyond it they are
        /// dropped and counted (`/varz` `cluster.dropped`).
        public var reconnectBufferBytes: Int = 8 << 20
        /// Seconds between pings to the cluster's server; two unanswered end the connection.
        public var pingIntervalSeconds: Double = 5
        /// How long `get /services` waits for the other hubs' services, in milliseconds.
        public var discoveryWindowMilliseconds: Int = 250
        /// Durable queues are JetStream streams (the cluster must run JetStream); false keeps
        /// each hub's own queues in its SQLite store.
        public var jetStream: Bool = true
        /// Copies of each queue's stream; nil: 3, or fewer when the cluster has fewer servers.
        public var replicas: Int?
        /// How often, in milliseconds, the hub asks JetStream what each queue's stream holds
        /// (`get /queues/Q` `messages`, `relay_queue_messages`).
        public var queueStatusIntervalMilliseconds: Int = 5_000
        /// A secret the hubs share: calls of services on another hub then say who calls, signed
        /// with it, so that private and admin methods can be called across hubs. Without it,
        /// those calls are refused there.
        public var secret: String?
        /// How far, in seconds, a signed call's time may be off the receiving hub's clock.
        public var callerSignatureWindowSeconds: Double = 30

        public init(servers: [String]) {
            self.servers = servers
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            servers = try container.decode([String].self, forKey: .servers)
            name = try container.decodeIfPresent(String.self, forKey: .name) ?? "relay"
            user = try container.decodeIfPresent(String.self, forKey: .user)
            password = try container.decodeIfPresent(String.self, forKey: .password)
            token = try container.decodeIfPresent(String.self, forKey: .token)
            tlsCA = try container.decodeIfPresent(String.self, forKey: .tlsCA)
            tlsCert = try container.decodeIfPresent(String.self, forKey: .tlsCert)
            tlsKey = try container.decodeIfPresent(String.self, forKey: .tlsKey)
            reconnectBufferBytes = try container.decodeIfPresent(Int.self, forKey: .reconnectBufferBytes) ?? 8 << 20
            pingIntervalSeconds = try container.decodeIfPresent(Double.self, forKey: .pingIntervalSeconds) ?? 5
            discoveryWindowMilliseconds = try container.decodeIfPresent(Int.self, forKey: .discoveryWindowMilliseconds) ?? 250
            jetStream = try container.decodeIfPresent(Bool.self, forKey: .jetStream) ?? true
            replicas = try container.decodeIfPresent(Int.self, forKey: .replicas)
            queueStatusIntervalMilliseconds = try container.decodeIfPresent(Int.self, forKey: .queueStatusIntervalMilliseconds) ?? 5_000
            secret = try container.decodeIfPresent(String.self, forKey: .secret)
            callerSignatureWindowSeconds = try container.decodeIfPresent(Double.self, forKey: .callerSignatureWindowSeconds) ?? 30
        }
    }
}
