import Testing

@testable import RelayCore

@Suite struct PermissionRuleTests {
    /// `isSubset` and `overlap` agree with their definitions over every subject of a small
    /// alphabet: a filter is within another when each subject it matches the other matches too;
    /// two overlap when some subject matches both.
    @Test func subsetAndOverlapAgreeWithTheirDefinitions() {
        let tokens = ["a", "b", "*", ">"]
        var filters: [String] = []
        func build(_ prefix: [String]) {
            if !prefix.isEmpty, Subject.filterError(prefix.joined(separator: ".")) == nil { filters.append(prefix.joined(separator: ".")) }
            guard prefix.count < 3, prefix.last != ">" else { return }
            for token in tokens { build(prefix + [token]) }
        }
        build([])
        // Subjects of one to four tokens over a, b and c (c is matched only by wildcards).
        var subjects: [String] = []
        func subjectsOf(_ prefix: [String]) {
            if !prefix.isEmpty { subjects.append(prefix.joined(separator: ".")) }
            guard prefix.count < 4 else { return }
            for token in ["a", "b", "c"] { subjectsOf(prefix + [token]) }
        }
        subjectsOf([])
        var checked = 0
        for inner in filters {
            let innerMatches = Set(subjects.filter { Subject.matches(filter: inner, subject: $0) })
            for outer in filters {
                let outerMatches = Set(subjects.filter { Subject.matches(filter: outer, subject: $0) })
                #expect(SubjectPattern.isSubset(inner, of: outer) == innerMatches.isSubset(of: outerMatches), "\(inner) within \(outer)")
                #expect(SubjectPattern.overlap(inner, outer) == !innerMatches.isDisjoint(with: outerMatches), "\(inner) and \(outer)")
                checked += 1
            }
        }
        #expect(checked > 1000)
    }

    @Test(
        arguments: [
            ("*", "anything", true), ("inventory", "Inventory", true), ("inventory", "inventory2", false),
            ("inv*", "inventory", true), ("*/stock", "inventory/stock", true), ("*/stock", "inventory/reserve", false),
            ("a*b*c", "aXXbYYc", true), ("a*b*c", "aXXbYY", false), ("*@relay.local", "bob@relay.local", true),
            ("*@relay.local", "bob@other.org", false), ("", "", true), ("", "x", false), ("**", "", true),
        ] as [(String, String, Bool)])
    func globsMatchAsDocumented(_ pattern: String, _ text: String, _ expected: Bool) {
        #expect(Glob.matches(pattern, text) == expected)
    }

    @Test func rulesAllowWhatTheyListUnlessDenied() throws {
        let rule = try SubjectRule(allow: ["orders.>", "jobs.* workers"], deny: ["orders.secret", "orders.*.audit"])
        #expect(rule.allows(subject: "orders.created"))
        #expect(!rule.allows(subject: "orders.secret"))
        #expect(!rule.allows(subject: "orders.eu.audit"))
        #expect(!rule.allows(subject: "billing.created"))
        // A queue group pattern allows subscriptions in that group only.
        #expect(rule.allows(filter: "jobs.new", queue: "workers"))
        #expect(!rule.allows(filter: "jobs.new", queue: nil))
        #expect(!rule.allows(filter: "jobs.new", queue: "others"))
        // A filter wider than what is allowed is refused; one that is denied as a whole too.
        #expect(!rule.allows(filter: ">", queue: nil))
        #expect(rule.allows(filter: "orders.*", queue: nil))
        #expect(!rule.allows(filter: "orders.secret", queue: nil))
        #expect(throws: PermissionError.self) { try SubjectRule(allow: ["a..b"], deny: []) }
        #expect(throws: PermissionError.self) { try SubjectRule(allow: nil, deny: ["a b c"]) }
    }
}

/// Every operation a permission governs, allowed and refused, with the exact reason, and a refused
/// operation never reaching another session.
@Suite struct HubCorePermissionTests {
    /// Session 1 is restricted (`alice`), session 2 (`bob`) may do everything, session 3
    /// (`carol`) serves `inventory`.
    func harness(_ permissions: Permissions) -> CoreHarness {
        var harness = CoreHarness()
        _ = harness.core.register(1, node: Node("alice@relay.local/a")!, permissions: permissions)
        harness.connect(2, "bob@relay.local/b")
        harness.connect(3, "carol@relay.local/c")
        harness.command(3, .set, "/services/inventory", resource: CoreHarness.inventory)
        return harness
    }

    static let restricted = Permissions(
        publish: try! SubjectRule(allow: ["orders.>", "_INBOX.>"], deny: ["orders.secret"]),
        subscribe: try! SubjectRule(allow: ["orders.>", "jobs.* workers", "$RELAY.QUEUE.work"], deny: ["orders.secret"]),
        serve: NameRule(allow: ["pricing"]), call: NameRule(allow: ["inventory/stock"]),
        send: NameRule(allow: ["bob@relay.local"]))

    /// One row per operation: what session 1 sends, and the failure code expected (nil: allowed).
    struct Row: Sendable, CustomStringConvertible {
        var description: String
        var method: CommandMethod
        var uri: String
        var resource: JSONValue?
        var code: Int?
    }

    static let rows: [Row] = [
        Row(description: "publish allowed", method: .set, uri: "/topics/orders.created", resource: "x", code: nil),
        Row(description: "publish denied", method: .set, uri: "/topics/orders.secret", resource: "x", code: 33),
        Row(description: "publish not allowed", method: .set, uri: "/topics/billing.created", resource: "x", code: 33),
        Row(description: "subscribe allowed", method: .subscribe, uri: "/topics/orders.*", code: nil),
        Row(description: "subscribe wider than allowed", method: .subscribe, uri: "/topics/>", code: 34),
        Row(description: "subscribe denied", method: .subscribe, uri: "/topics/orders.secret", code: 34),
        Row(description: "queue subscribe allowed", method: .subscribe, uri: "/topics/jobs.new?queue=workers", code: nil),
        Row(description: "queue subscribe in another group", method: .subscribe, uri: "/topics/jobs.new?queue=others", code: 34),
        Row(description: "plain subscribe to a queue-only filter", method: .subscribe, uri: "/topics/jobs.new", code: 34),
        Row(description: "serve allowed", method: .set, uri: "/services/pricing", resource: ["methods": [["name": "quote"]]], code: nil),
        Row(description: "serve not allowed", method: .set, uri: "/services/billing", resource: ["methods": [["name": "pay"]]], code: 35),
        Row(description: "call allowed", method: .get, uri: "/services/inventory/stock", resource: ["sku": "AB"], code: nil),
        Row(
            description: "call not allowed", method: .set, uri: "/services/inventory/reserve", resource: ["sku": "AB", "count": 1], code: 35
        ),
        Row(description: "request on a subject not allowed", method: .get, uri: "/topics/billing.quote", code: 33),
        Row(description: "queue creation is administration", method: .set, uri: "/queues/q", resource: ["subjects": ["q.>"]], code: 31),
        Row(description: "consume not allowed", method: .subscribe, uri: "/queues/other", code: 34),
    ]

    @Test(arguments: rows)
    func eachOperationIsAllowedOrRefusedWithItsCode(_ row: Row) {
        var harness = harness(Self.restricted)
        // Bob listens everywhere: a refused publication must not reach him.
        harness.command(2, .subscribe, "/topics/>")
        harness.command(2, .set, "/queues/other", resource: ["subjects": ["other.>"]])
        let outputs = harness.command(1, row.method, row.uri, resource: row.resource, id: "op")
        let answer = outputs.commands(to: 1).first { $0.header.id == "op" }
        if let code = row.code {
            #expect(answer?.status == .failure)
            #expect(answer?.reason?.code == code)
            #expect(answer?.reason?.description.contains("Permissions Violation") == true)
            #expect(outputs.sent(to: 2).isEmpty && outputs.sent(to: 3).isEmpty, "a refused operation reached another session")
            #expect(harness.core.statistics.permissionViolations == 1)
        } else {
            // A call is forwarded to the instance and answered later; everything else at once.
            if row.uri.hasPrefix("/services/inventory/") {
                #expect(outputs.commands(to: 3).count == 1)
            } else {
                #expect(answer?.status == .success, "\(answer?.reason?.description ?? "no answer")")
            }
        }
    }

    @Test func theSameOperationsAreAllowedToASessionWithoutPermissions() {
        for row in Self.rows where row.code != nil {
            var harness = harness(Self.restricted)
            harness.command(2, .set, "/queues/other", resource: ["subjects": ["other.>"]])
            let outputs = harness.command(2, row.method, row.uri, resource: row.resource, id: "op")
            let answer = outputs.commands(to: 2).first { $0.header.id == "op" }
            #expect(answer?.reason.map { $0.code < 31 || $0.code > 35 } ?? true, "\(row): \(answer?.reason?.description ?? "")")
        }
    }

    @Test func aFireAndForgetPublicationIsRefusedWithANoticeAndReachesNobody() {
        var harness = harness(Self.restricted)
        harness.command(2, .subscribe, "/topics/>")
        let command = LIMECommand(
            header: EnvelopeHeader(from: Node("alice@relay.local/a")), method: .observe, uri: "/topics/orders.secret", resource: "x")
        let outputs = harness.core.envelopeReceived(.command(command), from: 1)
        #expect(
            outputs == [
                .refused(
                    1,
                    Refusal(
                        operation: .publish, target: "orders.secret",
                        reason: Reason(code: 33, description: "Permissions Violation for Publish to \"orders.secret\"")))
            ])
        // NATS publishers take the same path.
        var nats: [HubCore.Output] = []
        harness.core.clientPublished(PublishedMessage(subject: "billing.x", body: .bytes([1])), from: 1, into: &nats)
        #expect(nats.count == 1 && nats.recipients.isEmpty)
        if case .refused(1, let refusal) = nats.first { #expect(refusal.target == "billing.x") } else { Issue.record("\(nats)") }
    }

    @Test func messagesAndCommandsReachOnlyNodesTheSenderMaySendTo() {
        var harness = harness(Self.restricted)
        let toBob = LIMEMessage(
            header: EnvelopeHeader(id: "m1", from: Node("alice@relay.local/a"), to: Node("bob@relay.local")), type: .textPlain,
            content: "hi")
        #expect(harness.core.envelopeReceived(.message(toBob), from: 1).messages(to: 2).count == 1)
        let toCarol = LIMEMessage(
            header: EnvelopeHeader(id: "m2", from: Node("alice@relay.local/a"), to: Node("carol@relay.local")), type: .textPlain,
            content: "hi")
        let refused = harness.core.envelopeReceived(.message(toCarol), from: 1)
        #expect(refused.sent(to: 3).isEmpty)
        guard case .notification(let failed)? = refused.sent(to: 1).first else {
            Issue.record("no failed notification: \(refused)")
            return
        }
        #expect(failed.event == .failed && failed.header.id == "m2" && failed.reason?.code == 32)
        let command = LIMECommand(
            header: EnvelopeHeader(id: "c1", from: Node("alice@relay.local/a"), to: Node("carol@relay.local/c")), method: .get,
            uri: "/status")
        let answer = harness.core.envelopeReceived(.command(command), from: 1)
        #expect(answer.sent(to: 3).isEmpty && answer.commands(to: 1).first?.reason?.code == 32)
        // Without an id, the sender is told with a notice.
        let quiet = LIMEMessage(
            header: EnvelopeHeader(from: Node("alice@relay.local/a"), to: Node("carol@relay.local")), type: .textPlain, content: "hi")
        #expect(
            harness.core.envelopeReceived(.message(quiet), from: 1) == [
                .refused(
                    1,
                    Refusal(
                        operation: .send, target: "carol@relay.local",
                        reason: Reason(code: 32, description: "Permissions Violation for Sending to \"carol@relay.local\"")))
            ])
        // Answers always go back: carol's response to a request alice was allowed to make.
        let fromCarol = LIMEMessage(
            header: EnvelopeHeader(id: "m3", from: Node("carol@relay.local/c"), to: Node("alice@relay.local/a")), type: .textPlain,
            content: "yo")
        #expect(harness.core.envelopeReceived(.message(fromCarol), from: 3).messages(to: 1).count == 1)
        let receipt = LIMENotification(
            header: EnvelopeHeader(id: "m3", from: Node("alice@relay.local/a"), to: Node("carol@relay.local/c")), event: .received)
        #expect(harness.core.envelopeReceived(.notification(receipt), from: 1).sent(to: 3).count == 1)
    }

    /// A subscription wider than a denied subject gets everything but that subject, as with
    /// nats-server; the forwarding short way declines it so the check is never skipped.
    @Test func deliveriesOfDeniedSubjectsAreWithheldFromWiderSubscriptions() {
        var harness = harness(Self.restricted)
        harness.command(1, .subscribe, "/topics/orders.>")
        for subject in ["orders.created", "orders.secret"] {
            var recipients: [HubCore.Recipient] = []
            #expect(!harness.core.forward(subject: subject, hasReplyTo: false, from: 2, accepts: { _ in true }, into: &recipients))
            #expect(recipients.isEmpty)
            let outputs = harness.command(2, .observe, "/topics/\(subject)", resource: "x")
            #expect(outputs.recipients == (subject == "orders.secret" ? [] : [1]), "\(subject)")
        }
    }

    @Test func adminMethodsNeedTheAdminPermissionOrAConfiguredAdministrator() {
        var harness = harness(Permissions(admin: true))
        #expect(harness.command(1, .get, "/services/inventory/audit").commands(to: 3).count == 1)
        #expect(harness.command(2, .get, "/services/inventory/audit").commands(to: 2).first?.reason?.code == ReasonCode.commandNotAllowed)
        harness.connect(4, "root@relay.local/r")
        #expect(harness.command(4, .get, "/services/inventory/audit").commands(to: 3).count == 1)
    }
}

@Suite struct IdentityLimitTests {
    /// The sessions of one identity share a bound on subscriptions; another identity has its own.
    @Test func subscriptionsAreBoundedPerIdentityAcrossSessions() throws {
        var core = HubCore(configuration: .init(hubNode: Node("postmaster@relay.local/hub")!, maximumSubscriptionsPerIdentity: 3))
        _ = core.register(1, node: Node("alice@relay.local/phone")!)
        _ = core.register(2, node: Node("alice@relay.local/desk")!)
        _ = core.register(3, node: Node("bob@relay.local/desk")!)
        try core.subscribe(1, token: "a", filter: "a", queue: nil, echo: false)
        try core.subscribe(2, token: "b", filter: "b", queue: nil, echo: false)
        try core.subscribe(2, token: "c", filter: "c", queue: nil, echo: false)
        #expect(throws: Reason.self) { try core.subscribe(1, token: "d", filter: "d", queue: nil, echo: false) }
        #expect(core.statistics.subscriptionsRefusedByLimits == 1)
        try core.subscribe(3, token: "d", filter: "d", queue: nil, echo: false)
        // Room again once a session of the identity goes.
        _ = core.sessionClosed(2)
        try core.subscribe(1, token: "d", filter: "d", queue: nil, echo: false)
    }
}
