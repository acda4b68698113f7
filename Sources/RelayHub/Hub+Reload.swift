import Foundation
import Logging
import RelayCore

// Reading the configuration again (SIGHUP) without dropping sessions: users, roles, permissions,
// JWT keys, guest access, limits, administrators, trace context creation, the monitoring
// listener's credential rule and new durable queues take effect; what binds sockets or files
// (listeners, the data directory, the domain, TLS settings, the cluster) needs a restart.

extension Hub {
    /// An authenticator for `configuration`, refused when nobody could connect with it.
    static func checkedAuthenticator(_ configuration: HubConfiguration) throws -> Authenticator {
        let authenticator = try Authenticator(configuration: configuration)
        guard !authenticator.schemes.isEmpty else {
            throw HubError.invalidConfiguration("guest access is off and no users are configured: nobody could connect")
        }
        return authenticator
    }

    /// The core's configuration from the hub's.
    static func coreConfiguration(_ configuration: HubConfiguration) throws -> HubCore.Configuration {
        var admins = Set<Identity>()
        for text in configuration.admins {
            guard let identity = Identity(text) else { throw HubError.invalidConfiguration("admin '\(text)' is not name@domain") }
            admins.insert(identity)
        }
        let limits = configuration.limits
        return HubCore.Configuration(
            hubNode: configuration.hubNode, maximumReceiptRoutes: limits.maxReceiptRoutes,
            maximumSubscriptionsPerSession: limits.maxSubscriptionsPerSession, maximumRequestsPerSession: limits.maxRequestsPerSession,
            defaultDeadlineMilliseconds: Int(limits.defaultRequestTimeoutSeconds * 1000), admins: admins,
            defaultDeliveryLimit: DeliveryLimit(maximumHeld: limits.maxHeldPerSubscription, policy: .dropNewest),
            maximumSubscriptionsPerIdentity: limits.maxSubscriptionsPerIdentity,
            traceIdentifiers: configuration.tracing.createContext ? TraceIdentifierGenerator(seed: .random(in: .min ... .max)) : nil,
            maximumRequestsFromCluster: limits.maxRequestsFromCluster)
    }

    /// Takes a configuration read again. Throws, changing nothing, when it is invalid; returns
    /// what it changes that needs a restart (and was left as it was).
    @discardableResult
    public func reload(_ fresh: HubConfiguration) throws -> [String] {
        let current = configuration
        var taken = fresh
        var restart: [String] = []
        func keep<T: Equatable>(_ name: String, _ path: WritableKeyPath<HubConfiguration, T>) {
            if taken[keyPath: path] != current[keyPath: path] {
                restart.append(name)
                taken[keyPath: path] = current[keyPath: path]
            }
        }
        keep("ws", \.ws)
        keep("tcp", \.tcp)
        keep("nats", \.nats)
        keep("http", \.http)
        keep("data", \.data)
        keep("domain", \.domain)
        keep("tls", \.tls)
        keep("cluster", \.cluster)
        let authenticator = try Self.checkedAuthenticator(taken)
        let core = try Self.coreConfiguration(taken)
        let limits = taken.limits
        var creations: [HubCore.Output] = []
        var ended: [(SessionOutlet, [String])] = []
        try state.withLock { state throws in
            state.core.reconfigure(core)
            state.limiter.maximumConnections = limits.maxConnectionsPerAddress
            state.limiter.maximumFailures = limits.maxAuthFailuresPerAddress
            state.limiter.windowSeconds = limits.authFailureWindowSeconds
            state.limiter.appliesToLoopback = limits.addressLimitsOnLoopback
            // Users' and guests' permissions are the configuration's: they change now. A token's
            // come from its claims and stay.
            for (id, session) in state.sessions {
                guard let node = session.node, let source = session.admission else { continue }
                let permissions: Permissions?
                switch source {
                case .user: permissions = authenticator.userPermissions(node.identity)
                case .guest: permissions = authenticator.guestsPermissions
                case .token: continue
                }
                let removed = state.core.permissionsChanged(id, to: permissions)
                if !removed.isEmpty { ended.append((session.outlet, removed)) }
            }
            for settings in taken.queues where state.core.queueSummaries.allSatisfy({ $0["name"]?.stringValue != settings.name }) {
                do {
                    creations += try state.core.createQueue(settings.configuration)
                } catch {
                    throw HubError.invalidConfiguration("queue '\(settings.name)': \(error)")
                }
            }
        }
        settings.withLock { $0 = (taken, authenticator) }
        monitoringAccess.accepted.withLock { $0.removeAll() }
        perform(creations)
        for (_, tokens) in ended {
            logger.info("subscriptions ended: no longer permitted", metadata: ["subscriptions": "\(tokens.joined(separator: ", "))"])
        }
        logger.info(
            "configuration reloaded",
            metadata: ["users": "\(taken.users.count)", "needs a restart": "\(restart.isEmpty ? "-" : restart.joined(separator: ", "))"])
        return restart
    }
}
