import Foundation
import RelayClient
import RelayCore
import RelayHub
import Testing

/// Permissions configured for an identity, enforced on its LIME and NATS sessions alike, with
/// the exact errors, and nothing refused reaching anyone else.
@Suite(.timeLimit(.minutes(1))) struct PermissionEnforcementTests {
    static let hash = try! PasswordHash.make(password: "pw", rounds: 1000).description

    /// `worker` may publish and subscribe under `jobs.` (queue `workers` only for `jobs.*`), serve
    /// `pricing`, call `inventory/stock`, send to `boss`; `ops` is its role and adds `audit.>`.
    static func configure(_ configuration: inout HubConfiguration) {
        configuration.limits.authFailureDelaySeconds = 0
        configuration.roles = ["ops": .init(publish: .init(allow: ["audit.>"]))]
        configuration.users = [
            .init(
                identity: "worker@relay.local", password: hash, roles: ["ops"],
                permissions: .init(
                    publish: .init(allow: ["jobs.>", "_INBOX.>", "inventory.>"], deny: ["jobs.secret"]),
                    subscribe: .init(allow: ["jobs.done", "jobs.* workers", "_INBOX.>"]), serve: .init(allow: ["pricing"]),
                    call: .init(allow: ["inventory/stock"]), send: .init(allow: ["boss@relay.local"]))),
            .init(identity: "boss@relay.local", password: hash),
        ]
    }

    struct Row: Sendable, CustomTestStringConvertible {
        var testDescription: String
        var method: CommandMethod
        var uri: String
        var resource: JSONValue?
        var code: Int?
    }

    static let limeRows: [Row] = [
        Row(testDescription: "publish allowed", method: .set, uri: "/topics/jobs.new", resource: "x", code: nil),
        Row(testDescription: "publish allowed by the role", method: .set, uri: "/topics/audit.login", resource: "x", code: nil),
        Row(testDescription: "publish denied", method: .set, uri: "/topics/jobs.secret", resource: "x", code: 33),
        Row(testDescription: "publish outside the allowed", method: .set, uri: "/topics/billing.x", resource: "x", code: 33),
        Row(testDescription: "subscribe allowed", method: .subscribe, uri: "/topics/jobs.done", code: nil),
        Row(testDescription: "subscribe refused", method: .subscribe, uri: "/topics/billing.>", code: 34),
        Row(testDescription: "queue subscribe allowed", method: .subscribe, uri: "/topics/jobs.new?queue=workers", code: nil),
        Row(testDescription: "queue subscribe, other group", method: .subscribe, uri: "/topics/jobs.new?queue=thieves", code: 34),
        Row(
            testDescription: "serve allowed", method: .set, uri: "/services/pricing", resource: ["methods": [["name": "quote"]]], code: nil),
        Row(testDescription: "serve refused", method: .set, uri: "/services/payroll", resource: ["methods": [["name": "pay"]]], code: 35),
        Row(testDescription: "call refused", method: .get, uri: "/services/inventory/audit", code: 35),
        Row(testDescription: "queue creation refused", method: .set, uri: "/queues/q", resource: ["subjects": ["q.>"]], code: 31),
    ]

    @Test(arguments: limeRows)
    func limeOperationsAreAllowedOrRefused(_ row: Row) async throws {
        try await withHub(Self.configure) { hub in
            let boss = try await hub.connect(.tcp, as: "boss@relay.local", authentication: .plain(password: "pw"))
            let everything = try await boss.subscribe(">")
            let worker = try await hub.connect(.ws, as: "worker@relay.local", authentication: .plain(password: "pw"))
            let answer = try await worker.request(LIMECommand(method: row.method, uri: row.uri, resource: row.resource))
            if let code = row.code {
                #expect(answer.status == .failure)
                #expect(answer.reason?.code == code)
                #expect(answer.reason?.description.hasPrefix("Permissions Violation") == true)
            } else {
                #expect(answer.status == .success, "\(answer.reason?.description ?? "")")
            }
            // Whatever was refused reached nobody: the boss's first publication is a marker.
            try await worker.request(LIMECommand(method: .set, uri: "/topics/jobs.marker", resource: "marker"))
            let first = try await firstElement(everything)
            #expect(
                first.subject
                    == (row.code == nil && row.uri.hasPrefix("/topics/") && row.method == .set
                        ? String(row.uri.dropFirst(8)) : "jobs.marker"))
        }
    }

    @Test func limeMessagesReachOnlyAllowedNodesAndRefusalsAreReported() async throws {
        try await withHub(Self.configure) { hub in
            let boss = try await hub.connect(.tcp, as: "boss@relay.local", authentication: .plain(password: "pw"))
            let bystander = try await hub.connect(.tcp, as: "bystander@relay.local")
            let worker = try await hub.connect(.ws, as: "worker@relay.local", authentication: .plain(password: "pw"))
            try await worker.send(LIMEMessage(id: "m1", to: Node("bystander@relay.local"), text: "psst"))
            let failed = try await firstElement(worker.notifications)
            #expect(failed.event == .failed && failed.header.id == "m1" && failed.reason?.code == 32)
            // A fire-and-forget publication the worker may not make comes back as a notice.
            try await worker.send(LIMECommand(method: .observe, uri: "/topics/billing.x", resource: "x"))
            let notice = try await firstElement(worker.messages)
            #expect(notice.type.rawValue == "application/vnd.relay.refused+json")
            #expect(notice.content["operation"] == "publish" && notice.content["target"] == "billing.x")
            try await worker.send(LIMEMessage(to: Node("boss@relay.local"), text: "done"))
            #expect(try await firstElement(boss.messages).content == "done")
            try await bystander.send(LIMEMessage(to: Node("bystander@relay.local"), text: "self"))
            #expect(try await firstElement(bystander.messages).content == "self")
            #expect(hub.server.hub.statistics.core.permissionViolations == 2)
        }
    }

    /// NATS, word for word as nats-server: the refusal is an `-ERR`, and the connection carries on.
    @Test func natsOperationsAreRefusedWithNATSServersErrorsAndTheConnectionCarriesOn() async throws {
        try await withHub(Self.configure) { hub in
            var options = NATSClient.Options(servers: ["nats://127.0.0.1:\(hub.natsPort)"])
            options.user = "boss"
            options.password = "pw"
            let boss = try await NATSClient.connect(options: options)
            let everything = try boss.subscribe(">")
            try await boss.flush()
            let nats = try await RawNATSConnection.connect(port: hub.natsPort)
            _ = try await firstElement(nats.lines)
            var lines = nats.lines.makeAsyncIterator()
            try await nats.send(
                "CONNECT {\"user\":\"worker\",\"pass\":\"pw\",\"verbose\":false,\"echo\":false,\"headers\":true}\r\nPING\r\n")
            #expect(await lines.next() == "PONG")
            let cases: [(String, String)] = [
                ("PUB jobs.secret 1\r\nx\r\n", "-ERR 'Permissions Violation for Publish to \"jobs.secret\"'"),
                ("PUB billing.x 1\r\nx\r\n", "-ERR 'Permissions Violation for Publish to \"billing.x\"'"),
                ("SUB billing.> 1\r\n", "-ERR 'Permissions Violation for Subscription to \"billing.>\"'"),
                ("SUB jobs.new thieves 2\r\n", "-ERR 'Permissions Violation for Subscription to \"jobs.new\" using queue \"thieves\"'"),
                ("SUB $RELAY.QUEUE.q 3\r\n", "-ERR 'Permissions Violation for Subscription to \"$RELAY.QUEUE.q\"'"),
            ]
            for (operation, error) in cases {
                try await nats.send(operation + "PING\r\n")
                #expect(await lines.next() == error)
                #expect(await lines.next() == "PONG", "the connection did not carry on after \(operation)")
            }
            // A call the permissions deny is answered on the reply subject, as a service error.
            let inventory: JSONValue = ["methods": [["name": "stock"], ["name": "audit"]]]
            let boss2 = try await hub.connect(.tcp, as: "boss@relay.local/2", authentication: .plain(password: "pw"))
            #expect(try await boss2.request(LIMECommand(method: .set, uri: "/services/inventory", resource: inventory)).status == .success)
            try await nats.send("SUB _INBOX.w 9\r\nPUB inventory.audit _INBOX.w 2\r\n{}\r\n")
            var answer: String?
            while let line = await lines.next() {
                if line.contains("Permissions Violation for Calling") {
                    answer = line
                    break
                }
            }
            #expect(answer?.contains("inventory/audit") == true)
            try await nats.send("UNSUB 9\r\nPING\r\n")
            while let line = await lines.next(), line != "PONG" {}
            // Allowed operations work: a queue subscription in its group, and a publication.
            try await nats.send("SUB jobs.new workers 4\r\nPUB jobs.new 2\r\nok\r\nPING\r\n")
            #expect(await lines.next() == "PONG")
            // (The hub's answer to the refused call went to the caller's inbox, which the boss sees too.)
            let first = try await firstElement(everything) { !$0.subject.hasPrefix("_INBOX.") }
            #expect(first.subject == "jobs.new" && first.text == "ok", "a refused publication reached the boss first")
            await boss.close()
        }
    }

    /// Relay's NATS client hands the server's non-fatal errors to the application.
    @Test func theNATSClientReportsPermissionViolations() async throws {
        try await withHub(Self.configure) { hub in
            var options = NATSClient.Options(servers: ["nats://127.0.0.1:\(hub.natsPort)"])
            options.user = "worker"
            options.password = "pw"
            let worker = try await NATSClient.connect(options: options)
            try worker.publish("billing.x", "no")
            try await worker.flush()
            #expect(try await firstElement(worker.errors) == "Permissions Violation for Publish to \"billing.x\"")
            await worker.close()
        }
    }

    /// A role's silence about an operation widens nothing; what any grant allows is allowed
    /// unless one denies it.
    @Test func grantsCombinePerOperation() throws {
        typealias Settings = HubConfiguration.PermissionSettings
        let reader = Settings(subscribe: .init(allow: ["orders.>"]))
        let writer = Settings(publish: .init(allow: ["orders.>"], deny: ["orders.secret"]), subscribe: .init(allow: ["jobs.>"]))
        let both = try Settings.combining([reader, writer]).permissions()
        #expect(both.allowsSubscribe(to: "orders.x", queue: nil) && both.allowsSubscribe(to: "jobs.x", queue: nil))
        #expect(!both.allowsSubscribe(to: "billing.x", queue: nil))
        #expect(both.allowsPublish(to: "orders.x") && !both.allowsPublish(to: "orders.secret") && !both.allowsPublish(to: "billing.x"))
        // Nobody speaks of serving: everything; a deny-only rule allows the rest.
        #expect(both.allowsServing("anything"))
        let denyOnly = try Settings.combining([writer, Settings(publish: .init(deny: ["orders.x"]))]).permissions()
        #expect(denyOnly.allowsPublish(to: "billing.x") && !denyOnly.allowsPublish(to: "orders.x"))
        let administrator = try Settings.combining([reader, Settings(admin: true)]).permissions()
        #expect(!both.admin && administrator.admin)
    }

    @Test func aSessionWithoutPermissionsMayDoEverythingAsBefore() async throws {
        try await withHub(Self.configure) { hub in
            let boss = try await hub.connect(.ws, as: "boss@relay.local", authentication: .plain(password: "pw"))
            for row in Self.limeRows {
                let answer = try await boss.request(LIMECommand(method: row.method, uri: row.uri, resource: row.resource))
                #expect(
                    answer.reason.map { !(31...35).contains($0.code) } ?? true,
                    "\(row.testDescription): \(answer.reason?.description ?? "")")
            }
        }
    }
}
