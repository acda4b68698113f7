import Foundation
import RelayClient
import RelayCore
import RelayHub
import Testing

/// Fetches a monitoring endpoint over a real socket; returns the status and the body.
func httpGet(_ hub: TestHub, _ path: String, headers: [String] = []) async throws -> (status: Int, body: String) {
    let response = try await httpResponse(hub, path, headers: headers)
    return (response.status, response.body)
}

/// The status, head lines and body of a monitoring endpoint's answer.
func httpResponse(_ hub: TestHub, _ path: String, headers: [String] = []) async throws -> (status: Int, head: [String], body: String) {
    let connection = try await RawNATSConnection.connect(port: hub.server.boundAddresses.http!.port!)
    let extra = headers.map { $0 + "\r\n" }.joined()
    try await connection.send("GET \(path) HTTP/1.1\r\nHost: relay\r\n\(extra)Connection: close\r\n\r\n")
    var lines: [String] = []
    for await line in connection.lines { lines.append(line) }
    guard let statusLine = lines.first, let status = Int(statusLine.split(separator: " ")[1]),
        let blank = lines.firstIndex(of: "")
    else { throw TestFailure("not an HTTP response: \(lines)") }
    return (status, Array(lines[..<blank]), lines[(blank + 1)...].joined(separator: "\n"))
}

func httpJSON(_ hub: TestHub, _ path: String) async throws -> JSONValue {
    let (status, body) = try await httpGet(hub, path)
    guard status == 200 else { throw TestFailure("\(path): \(status) \(body)") }
    return try JSONParser.parse(body)
}

@Suite(.timeLimit(.minutes(1))) struct MonitoringTests {
    /// Traffic over both dialects, then every endpoint tells what happened.
    @Test func theEndpointsTellWhatTheTrafficDid() async throws {
        try await withHub { hub in
            let alice = try await hub.connect(.ws, as: "alice@relay.local/desk")
            let orders = try await alice.subscribe("orders.*", queue: "workers")
            _ = try await alice.request(LIMECommand(method: .set, uri: "/services/inventory", resource: ["methods": [["name": "stock"]]]))
            _ = try await alice.request(LIMECommand(method: .set, uri: "/queues/audit", resource: ["subjects": ["audit.>"]]))
            let nats = try await NATSClient.connect(to: "nats://127.0.0.1:\(hub.natsPort)")
            for n in 1...10 { try nats.publish("orders.new", "order \(n)") }
            try nats.publish("audit.login", "kept")
            try await nats.flush()
            var iterator = orders.makeAsyncIterator()
            for _ in 1...10 { _ = try await iterator.next() }

            let varz = try await httpJSON(hub, "/varz")
            #expect(varz["server_name"] == "relay" && varz["connections"] == 2)
            #expect((varz["in_msgs"]?.intValue ?? 0) >= 11 && (varz["out_msgs"]?.intValue ?? 0) >= 10)
            #expect(varz["subscriptions"] == 1)
            #expect(varz["listeners"]?["nats"]?.stringValue?.hasPrefix("nats://127.0.0.1:") == true)
            #expect(varz["config"]?["users"] == 0 && varz["config"]?["limits"]?["maxSessions"] == 65_536)

            let connz = try await httpJSON(hub, "/connz")
            #expect(connz["total"] == 2)
            let connections = connz["connections"]?.arrayValue ?? []
            let publisher = connections.first { $0["kind"] == "nats" }
            #expect(publisher?["in_msgs"] == 11, "the NATS session sent 11 PUBs")
            let subscriber = connections.first { $0["kind"] == "lime-ws" }
            #expect(subscriber?["node"] == "alice@relay.local/desk" && subscriber?["subscriptions"] == 1)
            #expect((subscriber?["out_msgs"]?.intValue ?? 0) >= 10)
            // Paging and sorting as nats-server's: the second of two, and the busiest sender first.
            let second = try await httpJSON(hub, "/connz?limit=1&offset=1")
            #expect(second["num_connections"] == 1 && second["connections"]?[0]?["cid"] == connections[1]["cid"])
            let busiest = try await httpJSON(hub, "/connz?sort=msgs_from&limit=1")
            #expect(busiest["connections"]?[0]?["kind"] == "nats")

            let subsz = try await httpJSON(hub, "/subsz")
            #expect(subsz["subscriptions"]?[0]?["subject"] == "orders.*" && subsz["subscriptions"]?[0]?["queue"] == "workers")
            let queuez = try await httpJSON(hub, "/queuez")
            #expect(queuez["queues"]?[0]?["name"] == "audit")
            #expect(queuez["queues"]?[0]?["messages"] == 1)
            let servicez = try await httpJSON(hub, "/servicez")
            #expect(servicez["services"]?[0]?["name"] == "inventory" && servicez["services"]?[0]?["instances"] == 1)

            #expect(try await httpGet(hub, "/healthz").status == 200)
            #expect(try await httpGet(hub, "/readyz").status == 200)
            #expect(try await httpGet(hub, "/nowhere").status == 404)
            await nats.close()
        }
    }

    struct Query: Codable, Sendable { var sku: String }
    struct Level: Codable, Sendable { var count: Int }

    /// `/metrics` in Prometheus's text format: counters equal to the traffic, request latencies
    /// per service and method, queue gauges; `/servicez` with each method's percentiles.
    @Test func metricsCountWhatHappened() async throws {
        try await withHub { hub in
            let instance = try await hub.connect(.tcp, as: "inventory@relay.local/1")
            var inventory = ServiceDefinition("inventory", description: "Stock levels")
            inventory.method("stock") { (query: Query, _) in Level(count: query.sku.count) }
            let registration = try await instance.serve(inventory)
            let caller = try await hub.connect(.ws, as: "caller@relay.local/1")
            for _ in 1...5 { _ = try await caller.call("inventory", "stock", Query(sku: "ABC"), as: Level.self, timeout: .seconds(5)) }
            _ = try await caller.request(LIMECommand(method: .set, uri: "/queues/audit", resource: ["subjects": ["audit.>"]]))
            for n in 1...3 { _ = try await caller.request(LIMECommand(method: .set, uri: "/topics/audit.\(n)", resource: "x")) }

            let (status, text) = try await httpGet(hub, "/metrics")
            #expect(status == 200)
            func value(_ series: String) -> Double? {
                text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last!) }
            }
            #expect(value(#"relay_request_duration_seconds_count{service="inventory",method="stock"}"#) == 5)
            #expect(value("relay_requests_total") == 5)
            #expect(value("relay_connections") == 2)
            #expect(value(#"relay_queue_messages{queue="audit"}"#) == 3)
            #expect(value(#"relay_service_instances{service="inventory"}"#) == 1)
            #expect(value("relay_queue_confirmation_duration_seconds_count").map { $0 >= 1 } == true)
            #expect(text.contains("# TYPE relay_messages_received_total counter"))
            // Counters only go up: a second scrape gives at least the first's values.
            let (_, again) = try await httpGet(hub, "/metrics")
            #expect(again.contains(#"relay_request_duration_seconds_count{service="inventory",method="stock"} 5"#))

            let servicez = try await httpJSON(hub, "/servicez")
            let latency = servicez["services"]?[0]?["latency"]?["stock"]
            #expect(latency?["calls"] == 5)
            #expect((latency?["p99_ms"]?.doubleValue ?? -1) >= (latency?["p50_ms"]?.doubleValue ?? 0))
            try await registration.stop()
        }
    }

    /// No secret of the configuration is shown: no hash, no key digest, no JWT secret.
    @Test func theConfigurationShownHasNoSecrets() async throws {
        let hash = try PasswordHash.make(password: "pw", rounds: 1000).description
        let key = KeyDigest.makeKey()
        try await withHub({ configuration in
            configuration.users = [.init(identity: "alice@relay.local", password: hash, key: key.digest.description)]
            configuration.jwt = .init(keys: [.init(algorithm: "HS256", secret: "very-secret-jwt-key-of-thirty-two-bytes")])
        }) { hub in
            let (status, body) = try await httpGet(hub, "/varz")
            #expect(status == 200)
            for secret in [hash, key.digest.description, "very-secret-jwt-key", "pbkdf2"] { #expect(!body.contains(secret)) }
            #expect(body.contains("\"users\":1"))
        }
    }

    /// With `httpRequiresAdmin`, only an administrator's credentials open the endpoints (Basic
    /// with a password, Bearer with a key); the health checks stay open.
    @Test func theEndpointsCanBeForAdministratorsOnly() async throws {
        let hash = try PasswordHash.make(password: "s3cret", rounds: 1000).description
        let key = KeyDigest.makeKey()
        try await withHub({ configuration in
            configuration.httpRequiresAdmin = true
            configuration.users = [
                .init(identity: "alice@relay.local", password: hash, key: key.digest.description),
                .init(
                    identity: "bob@relay.local", password: hash,
                    permissions: HubConfiguration.PermissionSettings(publish: .init(allow: ["x"]))),
            ]
            configuration.admins = ["alice@relay.local"]
        }) { hub in
            func basic(_ user: String, _ password: String) -> String {
                "Authorization: Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
            }
            #expect(try await httpGet(hub, "/healthz").status == 200)
            #expect(try await httpGet(hub, "/readyz").status == 200)
            let challenged = try await httpResponse(hub, "/varz")
            #expect(challenged.status == 401)
            #expect(challenged.head.contains { $0.lowercased().hasPrefix("www-authenticate: basic realm=\"relay\"") })
            #expect(try await httpGet(hub, "/metrics", headers: [basic("alice", "wrong")]).status == 401)
            #expect(try await httpGet(hub, "/connz", headers: [basic("bob", "s3cret")]).status == 403, "bob is no administrator")
            let (status, body) = try await httpGet(hub, "/varz", headers: [basic("alice", "s3cret")])
            #expect(status == 200 && body.contains("\"httpRequiresAdmin\":true"))
            #expect(try await httpGet(hub, "/varz", headers: [basic("alice@relay.local", "s3cret")]).status == 200, "accepted again")
            #expect(try await httpGet(hub, "/", headers: ["Authorization: Bearer \(key.key)"]).status == 200)
            #expect(try await httpGet(hub, "/", headers: ["Authorization: Bearer nope"]).status == 401)
            #expect(hub.server.hub.statistics.authenticationFailures == 2)
        }
    }

    /// An address that guessed wrong too often is turned away before its credentials are checked,
    /// as its sessions are.
    @Test func guessingCredentialsIsLimitedPerAddress() async throws {
        let hash = try PasswordHash.make(password: "s3cret", rounds: 1000).description
        try await withHub({ configuration in
            configuration.httpRequiresAdmin = true
            configuration.users = [.init(identity: "alice@relay.local", password: hash)]
            configuration.limits.addressLimitsOnLoopback = true
            configuration.limits.maxAuthFailuresPerAddress = 2
            configuration.limits.authFailureDelaySeconds = 0
        }) { (hub: TestHub) async throws in
            let wrong = "Authorization: Basic " + Data("alice:guess".utf8).base64EncodedString()
            let right = "Authorization: Basic " + Data("alice:s3cret".utf8).base64EncodedString()
            #expect(try await httpGet(hub, "/varz", headers: [wrong]).status == 401)
            #expect(try await httpGet(hub, "/varz", headers: [wrong]).status == 401)
            #expect(try await httpGet(hub, "/varz", headers: [right]).status == 429, "locked out for the window, right or wrong")
            #expect(try await httpGet(hub, "/healthz").status == 200)
        }
    }

    /// With TLS required, the monitoring listener refuses plaintext requests (health checks too).
    @Test func plaintextIsRefusedWhenTLSIsRequired() async throws {
        try await withTLSHub(required: true) { hub, _ in
            let (status, body) = try await httpGet(hub, "/healthz")
            #expect(status == 403 && body.contains("TLS required"))
        }
    }
}
