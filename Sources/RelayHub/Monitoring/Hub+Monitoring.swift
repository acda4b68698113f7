import Foundation
import NIOCore
import RelayCore

// What the monitoring endpoints say about the hub (docs/OPERATIONS.md), read under its lock.
// Field names follow nats-server's where it has the same thing (`in_msgs`, `slow_consumers`,
// `num_connections`...), so an operator's tools and habits carry over.

extension Hub {
    /// The version `/varz` reports.
    public static let version = "0.12.0"

    private static func number(_ value: Int) -> JSONValue { .number(JSONNumber(value)) }

    private static func seconds(since instant: ContinuousClock.Instant) -> JSONValue {
        let elapsed = ContinuousClock.now - instant
        return .number(JSONNumber(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18))
    }

    /// `/varz`: the hub, its configuration in force (without secrets) and its totals.
    func varz(listeners: JSONObject) -> JSONObject {
        let statistics = self.statistics
        let traffic = self.traffic.snapshot
        let (subscriptions, services, queues, opened) = state.withLock { state in
            (
                state.core.subjectInterest.reduce(0) { $0 + $1.subscriptions }, state.core.serviceSummaries.count,
                state.core.queueSummaries.count, state.sessionsOpened
            )
        }
        var varz: JSONObject = [
            "server_id": .string(serverID), "server_name": "relay", "version": .string(Self.version),
            "domain": .string(configuration.domain), "uptime_seconds": Self.seconds(since: startedAt),
            "listeners": .object(listeners), "config": .object(configurationSummary),
            "connections": Self.number(statistics.sessionsOpen), "sessions_established": Self.number(statistics.sessionsEstablished),
            "total_connections": Self.number(opened), "connections_refused": Self.number(statistics.connectionsRefused),
            "subscriptions": Self.number(subscriptions), "services": Self.number(services), "queues": Self.number(queues),
            "in_msgs": Self.number(traffic.messagesIn), "out_msgs": Self.number(traffic.messagesOut),
            "in_bytes": Self.number(traffic.bytesIn), "out_bytes": Self.number(traffic.bytesOut),
            "published": Self.number(statistics.core.published),
            "publications_delivered": Self.number(statistics.core.publicationsDelivered),
            "publications_unmatched": Self.number(statistics.core.publicationsUnmatched),
            "envelopes_routed": Self.number(statistics.envelopesRouted),
            "envelopes_undeliverable": Self.number(statistics.envelopesUndeliverable),
            "requests": Self.number(statistics.core.requests), "requests_timed_out": Self.number(statistics.core.requestsTimedOut),
            "slow_consumers": Self.number(statistics.slowConsumers), "dropped_deliveries": Self.number(statistics.droppedDeliveries),
            "permission_violations": Self.number(statistics.core.permissionViolations),
            "authentication_failures": Self.number(statistics.authenticationFailures),
            "connections_refused_per_address": Self.number(statistics.connectionsRefusedPerAddress),
            "connections_refused_after_failures": Self.number(statistics.connectionsRefusedAfterFailures),
            "handshake_timeouts": Self.number(statistics.handshakeTimeouts),
            "publisher_stalls": Self.number(statistics.publisherStalls),
            "subscriptions_refused_by_limits": Self.number(statistics.core.subscriptionsRefusedByLimits),
        ]
        if let cluster = clusterStatus {
            varz["cluster"] = [
                "hub_id": .string(cluster.hubID), "connected": .bool(cluster.connected),
                "server_id": cluster.server.map { .string($0) } ?? .null,
                "servers": .array(configuration.cluster?.servers.map { .string($0) } ?? []),
                "reconnects": Self.number(cluster.reconnects), "subscriptions": Self.number(cluster.subscriptions),
                "published": Self.number(cluster.published), "received": Self.number(cluster.received),
                "discarded": Self.number(cluster.discarded), "dropped": Self.number(cluster.dropped),
                "attests_callers": .bool(cluster.attestsCallers), "callers_refused": Self.number(cluster.callersRefused),
            ]
        }
        return varz
    }

    /// The configuration in force, without a secret in it: no password hash, key digest, JWT
    /// secret or key file's contents (the TLS file paths are not secrets).
    var configurationSummary: JSONObject {
        let limits = configuration.limits
        var summary: JSONObject = [
            "guest": .bool(configuration.guest), "users": Self.number(configuration.users.count),
            "roles": .array(configuration.roles.keys.sorted().map { .string($0) }),
            "admins": .array(configuration.admins.map { .string($0) }), "data": .string(configuration.data),
            "tracing": ["createContext": .bool(configuration.tracing.createContext)],
            "httpRequiresAdmin": .bool(configuration.httpRequiresAdmin),
            "limits": [
                "maxEnvelopeBytes": Self.number(limits.maxEnvelopeBytes), "maxSessions": Self.number(limits.maxSessions),
                "establishTimeoutSeconds": .number(JSONNumber(limits.establishTimeoutSeconds)),
                "maxPendingBytes": Self.number(limits.maxPendingBytes),
                "maxSubscriptionsPerSession": Self.number(limits.maxSubscriptionsPerSession),
                "maxRequestsPerSession": Self.number(limits.maxRequestsPerSession),
                "maxHeldPerSubscription": Self.number(limits.maxHeldPerSubscription),
                "maxConnectionsPerAddress": Self.number(limits.maxConnectionsPerAddress),
                "maxAuthFailuresPerAddress": Self.number(limits.maxAuthFailuresPerAddress),
                "maxSubscriptionsPerIdentity": Self.number(limits.maxSubscriptionsPerIdentity),
                "maxPendingBytesPerIdentity": Self.number(limits.maxPendingBytesPerIdentity),
            ],
        ]
        if let tls = configuration.tls {
            summary["tls"] = [
                "cert": .string(tls.cert), "ca": tls.ca.map { .string($0) } ?? .null, "verify": .bool(tls.verify),
                "required": .bool(tls.required),
            ]
        }
        if let jwt = configuration.jwt {
            summary["jwt"] = [
                "issuer": jwt.issuer.map { .string($0) } ?? .null, "audience": jwt.audience.map { .string($0) } ?? .null,
                "keys": Self.number(jwt.keys.count),
            ]
        }
        return summary
    }

    /// One open session as `/connz` lists it.
    struct ConnectionInfo {
        var id: SessionID
        var json: JSONObject
        var subscriptions: Int
        var pendingBytes: Int
        var traffic: Traffic
    }

    /// `/connz`: open sessions, sorted by `sort` (`cid`, `subs`, `pending`, `msgs_to`,
    /// `msgs_from`, `bytes_to`, `bytes_from`; as nats-server), `limit` from `offset`.
    func connz(limit: Int, offset: Int, sort: String) -> JSONObject {
        var connections = state.withLock { state in
            state.sessions.map { id, session in
                let traffic = session.outlet.traffic.snapshot
                let pending = session.outlet.writer.pendingBytes
                let subscriptions = state.core.subscriptionCount(of: id)
                var json: JSONObject = [
                    "cid": Self.number(Int(id)), "kind": .string(session.transport), "tls": .bool(session.secured),
                    "ip": session.address.map { .string($0) } ?? .null, "port": session.port.map(Self.number) ?? .null,
                    "uptime_seconds": Self.seconds(since: session.openedAt), "subscriptions": Self.number(subscriptions),
                    "pending_bytes": Self.number(pending), "in_msgs": Self.number(traffic.messagesIn),
                    "out_msgs": Self.number(traffic.messagesOut), "in_bytes": Self.number(traffic.bytesIn),
                    "out_bytes": Self.number(traffic.bytesOut),
                ]
                if let node = session.node {
                    json["node"] = .string(node.description)
                    json["identity"] = .string(node.identity.description)
                }
                return ConnectionInfo(id: id, json: json, subscriptions: subscriptions, pendingBytes: pending, traffic: traffic)
            }
        }
        // `msgs_to` are the messages sent to the client, `msgs_from` those it sent, as nats-server says.
        let key: (ConnectionInfo) -> Int =
            switch sort {
            case "subs": { $0.subscriptions }
            case "pending": { $0.pendingBytes }
            case "msgs_to": { $0.traffic.messagesOut }
            case "msgs_from": { $0.traffic.messagesIn }
            case "bytes_to": { $0.traffic.bytesOut }
            case "bytes_from": { $0.traffic.bytesIn }
            default: { Int($0.id) }
            }
        let ascending = sort == "cid" || !["subs", "pending", "msgs_to", "msgs_from", "bytes_to", "bytes_from"].contains(sort)
        connections.sort { ascending ? key($0) < key($1) : (key($0), $1.id) > (key($1), $0.id) }
        let page = connections.dropFirst(max(offset, 0)).prefix(max(limit, 0))
        return [
            "num_connections": Self.number(page.count), "total": Self.number(connections.count), "offset": Self.number(offset),
            "limit": Self.number(limit), "sort": .string(ascending ? "cid" : sort),
            "connections": .array(page.map { .object($0.json) }),
        ]
    }

    /// `/subsz`: interest per subject filter and queue group.
    func subsz() -> JSONObject {
        let interest = state.withLock { $0.core.subjectInterest }
        return [
            "num_subscriptions": Self.number(interest.reduce(0) { $0 + $1.subscriptions }), "num_filters": Self.number(interest.count),
            "subscriptions": .array(
                interest.map { entry in
                    var object: JSONObject = ["subject": .string(entry.filter), "subscriptions": Self.number(entry.subscriptions)]
                    if let queue = entry.queue { object["queue"] = .string(queue) }
                    return .object(object)
                }),
        ]
    }

    /// `/queuez`: every durable queue with its counts.
    func queuez() -> JSONObject {
        let queues = state.withLock { $0.core.queueSummaries }
        return ["num_queues": Self.number(queues.count), "queues": .array(queues.map { .object($0) })]
    }

    /// `/servicez`: every service, its instances and its requests outstanding.
    func servicez() -> JSONObject {
        let (services, inFlight, latencies) = state.withLock { ($0.core.serviceSummaries, $0.core.requestsInFlight, $0.latencies) }
        return [
            "num_services": Self.number(services.count), "requests_in_flight": Self.number(inFlight),
            "services": .array(
                services.map { service in
                    // Each method's latency over its latest calls (up to 1,024), from sending to the answer.
                    var service = service
                    let name = service["name"]?.stringValue?.lowercased() ?? ""
                    service["latency"] = .object(
                        JSONObject((latencies[name] ?? [:]).sorted { $0.key < $1.key }.map { ($0.key, .object($0.value.summary)) }))
                    return .object(service)
                }),
        ]
    }

    /// Why the hub is not healthy (draining, or its storage failing), or nil.
    var unhealthyReason: String? {
        let (accepting, storageFailure) = state.withLock { ($0.acceptingSessions, $0.storageFailure) }
        if !accepting { return "draining: the hub is shutting down" }
        if let storageFailure { return storageFailure }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: configuration.data, isDirectory: &isDirectory), isDirectory.boolValue,
            FileManager.default.isWritableFile(atPath: configuration.data)
        else { return "the data directory '\(configuration.data)' is not writable" }
        return nil
    }
}
