import CoreMetrics
import Foundation
import Prometheus
import RelayCore
import Synchronization

/// The hub's `/metrics` (Prometheus text format, docs/OPERATIONS.md), on swift-prometheus.
///
/// Latencies are recorded as they happen, through swift-metrics' `Timer` made by a
/// `PrometheusMetricsFactory` over the hub's own registry (a process may run several hubs, so no
/// global bootstrap). Everything else is read from the hub's counters when scraped: counters are
/// advanced by what changed since the last scrape, gauges set.
final class HubMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    /// The last value pushed for each counter (by name and labels), to advance by the difference.
    private let pushed = Mutex<[String: Int]>([:])
    private let timers = Mutex<[String: CoreMetrics.Timer]>([:])
    /// Metrics labelled with a queue or service, by name and labels: those not set by a scrape
    /// (the queue or service is gone) are taken out of the registry.
    private let labelled = Mutex<[String: Labelled]>([:])

    private enum Labelled: @unchecked Sendable {
        // swift-prometheus's metric classes are thread-safe (they hold their values in atomics).
        case counter(Prometheus.Counter)
        case gauge(Prometheus.Gauge)
    }

    init() {
        var factory = PrometheusMetricsFactory(registry: registry)
        // Seconds, from 100 µs to 30 s.
        let buckets: [Duration] = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5), .milliseconds(5),
            .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
            .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30),
        ]
        factory.defaultDurationHistogramBuckets = buckets
        self.factory = factory
    }

    /// A service request was answered (or timed out, or was cancelled) after `duration`.
    func requestEnded(service: String, method: String, after duration: Duration) {
        timer("relay_request_duration_seconds", [("service", service), ("method", method)]).recordNanoseconds(duration.nanoseconds)
    }

    /// A durable queue's group of publications was on disk `duration` after it was handed over.
    func queueConfirmed(after duration: Duration) {
        timer("relay_queue_confirmation_duration_seconds", []).recordNanoseconds(duration.nanoseconds)
    }

    private func timer(_ name: String, _ dimensions: [(String, String)]) -> CoreMetrics.Timer {
        let key = name + dimensions.map { "|\($0.0)=\($0.1)" }.joined()
        return timers.withLock { timers in
            if let timer = timers[key] { return timer }
            let timer = CoreMetrics.Timer(label: name, dimensions: dimensions, preferredDisplayUnit: .seconds, factory: factory)
            timers[key] = timer
            return timer
        }
    }

    /// Advances a counter to `total`.
    private func counter(_ name: String, _ help: String, _ total: Int, labels: [(String, String)] = [], touched: inout Set<String>) {
        let key = name + labels.map { "|\($0.0)=\($0.1)" }.joined()
        let delta = pushed.withLock { pushed -> Int in
            let delta = total - pushed[key, default: 0]
            if delta > 0 { pushed[key] = total }
            return delta
        }
        let counter =
            labels.isEmpty ? registry.makeCounter(name: name, help: help) : registry.makeCounter(name: name, labels: labels, help: help)
        if !labels.isEmpty {
            touched.insert(key)
            labelled.withLock { $0[key] = .counter(counter) }
        }
        if delta > 0 { counter.increment(by: Int64(delta)) }
    }

    private func gauge(_ name: String, _ help: String, _ value: Double, labels: [(String, String)] = [], touched: inout Set<String>) {
        let gauge = labels.isEmpty ? registry.makeGauge(name: name, help: help) : registry.makeGauge(name: name, labels: labels, help: help)
        if !labels.isEmpty {
            let key = name + labels.map { "|\($0.0)=\($0.1)" }.joined()
            touched.insert(key)
            labelled.withLock { $0[key] = .gauge(gauge) }
        }
        gauge.set(value)
    }

    /// Takes out of the registry what a scrape did not set: a queue's or service's metrics once it is gone.
    private func forgetUntouched(_ touched: Set<String>) {
        let gone = labelled.withLock { labelled in
            let gone = labelled.filter { !touched.contains($0.key) }
            for key in gone.keys { labelled[key] = nil }
            return gone
        }
        pushed.withLock { pushed in for key in gone.keys { pushed[key] = nil } }
        for metric in gone.values {
            switch metric {
            case .counter(let counter): registry.unregisterCounter(counter)
            case .gauge(let gauge): registry.unregisterGauge(gauge)
            }
        }
    }

    /// The metrics in the Prometheus text format, read from `hub` now.
    func scrape(_ hub: Hub) -> String {
        let statistics = hub.statistics
        let traffic = hub.traffic.snapshot
        let (opened, subscriptions, queues, services, inFlight) = hub.state.withLock { state in
            (
                state.sessionsOpened, state.core.subjectInterest.reduce(0) { $0 + $1.subscriptions }, state.core.queueSummaries,
                state.core.serviceSummaries, state.core.requestsInFlight
            )
        }
        var touched: Set<String> = []
        let uptime = ContinuousClock.now - hub.startedAt
        gauge("relay_uptime_seconds", "Seconds since the hub started", Double(uptime.nanoseconds) / 1e9, touched: &touched)
        gauge("relay_connections", "Connections open", Double(statistics.sessionsOpen), touched: &touched)
        gauge("relay_sessions_established", "Sessions established", Double(statistics.sessionsEstablished), touched: &touched)
        gauge("relay_subscriptions", "Subject subscriptions held", Double(subscriptions), touched: &touched)
        gauge("relay_requests_in_flight", "Service requests waiting for an answer", Double(inFlight), touched: &touched)
        counter("relay_connections_total", "Connections opened", opened, touched: &touched)
        counter("relay_connections_refused_total", "Connections refused by a limit", statistics.connectionsRefused, touched: &touched)
        counter("relay_messages_received_total", "Envelopes and publications received from clients", traffic.messagesIn, touched: &touched)
        counter("relay_messages_sent_total", "Envelopes and messages written to clients", traffic.messagesOut, touched: &touched)
        counter("relay_bytes_received_total", "Bytes received from clients", traffic.bytesIn, touched: &touched)
        counter("relay_bytes_sent_total", "Bytes written to clients", traffic.bytesOut, touched: &touched)
        counter("relay_publications_total", "Publications", statistics.core.published, touched: &touched)
        counter(
            "relay_publications_delivered_total", "Deliveries of publications", statistics.core.publicationsDelivered, touched: &touched)
        counter(
            "relay_publications_unmatched_total", "Publications nobody received", statistics.core.publicationsUnmatched, touched: &touched)
        counter("relay_envelopes_routed_total", "Envelopes routed between nodes", statistics.envelopesRouted, touched: &touched)
        counter(
            "relay_envelopes_undeliverable_total", "Envelopes nobody could receive", statistics.envelopesUndeliverable, touched: &touched)
        counter("relay_requests_total", "Service requests", statistics.core.requests, touched: &touched)
        counter(
            "relay_requests_timed_out_total", "Service requests past their deadline", statistics.core.requestsTimedOut, touched: &touched)
        counter("relay_slow_consumers_total", "Sessions ended as slow consumers", statistics.slowConsumers, touched: &touched)
        counter(
            "relay_publisher_stalls_total", "Times a publisher stopped reading for a subscriber far behind", statistics.publisherStalls,
            touched: &touched)
        counter(
            "relay_dropped_deliveries_total", "Deliveries dropped by overflow policies", statistics.droppedDeliveries, touched: &touched)
        counter(
            "relay_permission_violations_total", "Operations refused by permissions", statistics.core.permissionViolations,
            touched: &touched)
        counter("relay_authentication_failures_total", "Credentials refused", statistics.authenticationFailures, touched: &touched)
        counter(
            "relay_handshake_timeouts_total", "TLS handshakes or WebSocket upgrades not finished in time", statistics.handshakeTimeouts,
            touched: &touched)
        counter(
            "relay_subscriptions_refused_total", "Subscriptions refused by the per-session or per-identity bound",
            statistics.core.subscriptionsRefusedByLimits, touched: &touched)
        if let cluster = hub.clusterStatus {
            gauge("relay_cluster_connected", "1 while both cluster connections are up", cluster.connected ? 1 : 0, touched: &touched)
            gauge("relay_cluster_subscriptions", "Subscriptions held on the cluster", Double(cluster.subscriptions), touched: &touched)
            counter("relay_cluster_reconnects_total", "Reconnections to the cluster", cluster.reconnects, touched: &touched)
            counter("relay_cluster_published_total", "Publications and envelopes sent to the cluster", cluster.published, touched: &touched)
            counter("relay_cluster_received_total", "Messages received from the cluster", cluster.received, touched: &touched)
            counter("relay_cluster_discarded_total", "Cluster messages that went nowhere", cluster.discarded, touched: &touched)
            counter("relay_cluster_dropped_total", "Publications the cluster connection could not hold", cluster.dropped, touched: &touched)
            counter(
                "relay_cluster_callers_refused_total", "Calls from other hubs whose caller signature was bad, stale or replayed",
                cluster.callersRefused, touched: &touched)
        }
        for queue in queues {
            guard let name = queue["name"]?.stringValue else { continue }
            let labels = [("queue", name)]
            gauge(
                "relay_queue_messages", "Messages a durable queue holds", Double(queue["messages"]?.intValue ?? 0), labels: labels,
                touched: &touched)
            gauge(
                "relay_queue_bytes", "Bytes a durable queue holds", Double(queue["bytes"]?.intValue ?? 0), labels: labels, touched: &touched
            )
            gauge(
                "relay_queue_consumers", "Consumers of a durable queue", Double(queue["consumers"]?.intValue ?? 0), labels: labels,
                touched: &touched)
            counter(
                "relay_queue_delivered_total", "Deliveries of a durable queue", queue["delivered"]?.intValue ?? 0, labels: labels,
                touched: &touched)
            counter(
                "relay_queue_redelivered_total", "Redeliveries of a durable queue", queue["redelivered"]?.intValue ?? 0, labels: labels,
                touched: &touched)
            counter(
                "relay_queue_acknowledged_total", "Acknowledged messages of a durable queue", queue["acknowledged"]?.intValue ?? 0,
                labels: labels, touched: &touched)
            counter(
                "relay_queue_dead_lettered_total", "Messages a durable queue sent to its dead letters",
                queue["deadLettered"]?.intValue ?? 0,
                labels: labels, touched: &touched)
        }
        for service in services {
            guard let name = service["name"]?.stringValue else { continue }
            let labels = [("service", name.lowercased())]
            gauge(
                "relay_service_instances", "Instances serving a service", Double(service["instances"]?.intValue ?? 0), labels: labels,
                touched: &touched)
            gauge(
                "relay_service_outstanding_requests", "Requests a service has not answered yet",
                Double(service["outstanding"]?.intValue ?? 0),
                labels: labels, touched: &touched)
        }

        forgetUntouched(touched)
        return registry.emitToString()
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

/// The latest latencies of one method (at most `capacity`), for percentiles in `/servicez`.
struct LatencySample: Sendable {
    static let capacity = 1024
    private var values: [Double] = []
    private var next = 0
    /// Every call since the hub started.
    private(set) var count = 0

    mutating func add(_ duration: Duration) {
        let milliseconds = Double(duration.nanoseconds) / 1e6
        if values.count < Self.capacity { values.append(milliseconds) } else { values[next] = milliseconds }
        next = (next + 1) % Self.capacity
        count += 1
    }

    /// The `fraction` percentile (0.5: the median) of the latest latencies, in milliseconds.
    func percentile(_ fraction: Double, ofSorted sorted: [Double]) -> Double {
        guard !sorted.isEmpty else { return 0 }
        // The nearest rank: the smallest value with at least `fraction` of the values at or below it.
        let rank = Int((Double(sorted.count) * fraction).rounded(.up))
        return sorted[max(0, min(sorted.count, rank) - 1)]
    }

    var summary: JSONObject {
        let sorted = values.sorted()
        func number(_ value: Double) -> JSONValue { .number(JSONNumber((value * 1000).rounded() / 1000)) }
        return [
            "calls": .number(JSONNumber(count)), "p50_ms": number(percentile(0.5, ofSorted: sorted)),
            "p90_ms": number(percentile(0.9, ofSorted: sorted)), "p99_ms": number(percentile(0.99, ofSorted: sorted)),
            "max_ms": number(sorted.last ?? 0),
        ]
    }
}
