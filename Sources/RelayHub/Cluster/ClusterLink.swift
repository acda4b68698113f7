import Logging
import RelayClient
import RelayCore
import Synchronization

/// A clustered hub's connections to the nats-server cluster (docs/CLUSTER.md); it carries out
/// the core's cluster operations and hands what arrives to the hub.
///
/// Two connections, so that nothing loops and queue groups still work across hubs:
/// - `publisher` (CONNECT `echo: false`) publishes the hub's publications and holds its plain
///   subscriptions: the hub, which delivered its own publications itself, never gets them back;
/// - `queueMember` holds the queue subscriptions and publishes nothing: a local publication comes
///   back to it when the cluster picks this hub's member of a group, so each group gets one
///   delivery across every hub.
final class ClusterLink: Sendable {
    let hubID: String
    let publisher: NATSClient
    let queueMember: NATSClient
    /// Cluster subscription id (the core's) → the client holding it and that client's sid.
    private let subscriptions = Mutex<[String: (queue: Bool, sid: String)]>([:])
    /// Publications the cluster connection could not take (reconnect buffer full), counted.
    let dropped = Atomic<Int>(0)
    /// Signs and checks who calls across hubs, when the hubs share a secret.
    private let signer: Mutex<ClusterCallerSigner?>
    /// Whether the calls across hubs say who calls (the hubs share a secret): `signer` is set.
    let attestsCallers: Bool

    private init(hubID: String, publisher: NATSClient, queueMember: NATSClient, signer: ClusterCallerSigner?) {
        self.hubID = hubID
        self.publisher = publisher
        self.queueMember = queueMember
        self.signer = Mutex(signer)
        self.attestsCallers = signer != nil
    }

    /// Calls from other hubs whose caller headers were refused (a bad, stale or replayed
    /// signature, or none where a secret is shared).
    var callersRefused: Int { signer.withLock { $0?.refused ?? 0 } }

    /// The headers of a message from the cluster as the hub takes them: caller headers only when
    /// their signature checks.
    func checkedHeaders(_ message: NATSMessage) -> NATSHeaders? {
        guard message.headers != nil else { return nil }
        // Without a secret there is nothing to check, and no lock to take per message.
        guard attestsCallers else { return ClusterCallerSigner.withoutReserved(message.headers) }
        return signer.withLock { signer in
            signer!.checked(
                subject: message.subject, replyTo: message.replyTo, payload: message.payload, headers: message.headers, now: Hub.now())
        }
    }

    /// Connects both connections to the cluster (each tries every server once before it fails).
    static func connect(_ settings: HubConfiguration.ClusterSettings, hubID: String) async throws -> ClusterLink {
        func options(_ role: String, echo: Bool) -> NATSClient.Options {
            var options = NATSClient.Options(servers: settings.servers)
            options.name = "\(settings.name) \(hubID) \(role)"
            options.user = settings.user
            options.password = settings.password
            options.token = settings.token
            if settings.tlsCA != nil || settings.tlsCert != nil {
                options.tls = TLSClientOptions(caFile: settings.tlsCA, certificateFile: settings.tlsCert, keyFile: settings.tlsKey)
            }
            options.echo = echo
            options.reconnect = ReconnectPolicy(maximumAttempts: -1, bufferBytes: settings.reconnectBufferBytes)
            options.pingInterval = .milliseconds(Int64(settings.pingIntervalSeconds * 1000))
            return options
        }
        let publisher = try await NATSClient.connect(options: options("publisher", echo: false))
        do {
            let queueMember = try await NATSClient.connect(options: options("queues", echo: true))
            let signer = settings.secret.map {
                ClusterCallerSigner(secret: $0, windowMilliseconds: Int64(settings.callerSignatureWindowSeconds * 1000))
            }
            return ClusterLink(hubID: hubID, publisher: publisher, queueMember: queueMember, signer: signer)
        } catch {
            await publisher.close()
            throw error
        }
    }

    /// Carries out the core's operations. Called under the hub's lock, so that they reach the
    /// cluster in the order the core made them (the clients only queue the bytes).
    func carryOut(_ operations: [ClusterMembership.Operation], hub: Hub) {
        for operation in operations {
            switch operation {
            case .publish(let message):
                let form = message.clusterForm
                publish(form.subject, form.payload, replyTo: form.replyTo, headers: ClusterCallerSigner.withoutReserved(form.headers))
            case .publishCall(let message, let caller, let admin):
                let form = message.clusterForm
                let headers = signer.withLock { signer in
                    signer.map {
                        $0.sign(
                            subject: form.subject, replyTo: form.replyTo, payload: form.payload, headers: form.headers, caller: caller,
                            admin: admin, now: Hub.now())
                    } ?? ClusterCallerSigner.withoutReserved(form.headers)
                }
                publish(form.subject, form.payload, replyTo: form.replyTo, headers: headers)
            case .interest(.subscribe(let id, let filter, let queue)):
                let client = queue == nil ? publisher : queueMember
                let sid = try? client.subscribe(filter, queue: queue) { [weak hub, weak self] message in
                    guard let self else { return }
                    var message = message
                    message.headers = self.checkedHeaders(message)
                    hub?.clusterMessageReceived(message, subscription: id)
                }
                if let sid { subscriptions.withLock { $0[id] = (queue != nil, sid) } }
            case .interest(.unsubscribe(let id)):
                guard let held = subscriptions.withLock({ $0.removeValue(forKey: id) }) else { continue }
                try? (held.queue ? queueMember : publisher).unsubscribe(sid: held.sid)
            }
        }
    }

    private func publish(_ subject: String, _ payload: [UInt8], replyTo: String?, headers: NATSHeaders?) {
        do {
            try publisher.publish(subject, payload, replyTo: replyTo, headers: headers)
        } catch {
            dropped.add(1, ordering: .relaxed)
        }
    }

    /// How many servers the cluster has, as the first one's INFO announced them (`connect_urls`).
    var clusterSize: Int {
        guard case .array(let urls)? = publisher.serverInfo["connect_urls"] else { return 1 }
        return max(urls.count, 1)
    }

    /// Whether both connections are up now.
    var isConnected: Bool { publisher.isConnected && queueMember.isConnected }

    /// The server the publisher connection is on, as its INFO says.
    var server: String? {
        guard case .string(let id)? = publisher.serverInfo["server_id"] else { return nil }
        return id
    }

    func close() async {
        await publisher.close()
        await queueMember.close()
    }
}

extension Hub {
    /// Joins the cluster over `link`: the core holds every local subscription there from now on.
    func joinCluster(_ link: ClusterLink) {
        let settings = configuration.cluster
        let jetStream =
            settings?.jetStream == false
            ? nil
            : JetStreamSettings(
                replicas: settings?.replicas ?? min(3, link.clusterSize),
                statusIntervalMilliseconds: max(100, settings?.queueStatusIntervalMilliseconds ?? 5_000))
        state.withLock { state in
            state.cluster = link
            state.core.joinCluster(
                hubID: link.hubID, discoveryWindowMilliseconds: settings?.discoveryWindowMilliseconds ?? 250, jetStream: jetStream,
                attestsCallers: link.attestsCallers)
            carryOutClusterOperations(in: &state)
        }
        logger.info("joined the cluster", metadata: ["hub": "\(link.hubID)", "server": "\(link.server ?? "?")"])
    }

    /// Hands what the core asked of the cluster to the link, under the lock (see `carryOut`).
    func carryOutClusterOperations(in state: inout State) {
        guard let link = state.cluster else { return }
        let operations = state.core.takeClusterOperations()
        if !operations.isEmpty { link.carryOut(operations, hub: self) }
    }

    /// A message from the cluster, on the core's cluster subscription `subscription`.
    func clusterMessageReceived(_ message: NATSMessage, subscription: String) {
        let published = PublishedMessage(
            clusterSubject: message.subject, replyTo: message.replyTo, headers: message.headers, payload: message.payload)
        perform { $0.clusterMessageReceived(published, sid: subscription, now: Self.now()) }
    }

    /// Leaves the cluster (at shutdown): both connections close.
    func leaveCluster() async {
        let link = state.withLock { $0.cluster.take() }
        await link?.close()
    }
}

/// What a clustered hub shows of its cluster (`/varz` `cluster`).
public struct ClusterStatus: Sendable, Equatable {
    /// The hub's id among the hubs.
    public var hubID: String
    /// Whether both cluster connections are up.
    public var connected: Bool
    /// The id of the server the publishing connection is on.
    public var server: String?
    /// Reconnections of the publishing connection since the hub joined.
    public var reconnects: Int
    /// Distinct subscriptions held on the cluster.
    public var subscriptions: Int
    /// Publications sent to the cluster, messages received from it, and those received that
    /// went nowhere (their subscription had ended, or a 503 for a request answered here).
    public var published: Int
    public var received: Int
    public var discarded: Int
    /// Publications the cluster connection could not hold while reconnecting (dropped, counted).
    public var dropped: Int
    /// Whether calls across hubs say who calls (a shared secret), and the calls from other hubs
    /// whose caller was not taken (a bad, stale or replayed signature).
    public var attestsCallers: Bool
    public var callersRefused: Int
}

extension Hub {
    /// The cluster as the hub sees it; nil when the hub is on its own.
    public var clusterStatus: ClusterStatus? {
        state.withLock { state in
            guard let link = state.cluster, let membership = state.core.cluster else { return nil }
            return ClusterStatus(
                hubID: link.hubID, connected: link.isConnected, server: link.server, reconnects: link.publisher.reconnectCount,
                subscriptions: membership.subscriptionCount, published: membership.messagesPublished,
                received: membership.messagesReceived, discarded: membership.messagesDiscarded,
                dropped: link.dropped.load(ordering: .relaxed), attestsCallers: link.attestsCallers, callersRefused: link.callersRefused)
        }
    }
}
