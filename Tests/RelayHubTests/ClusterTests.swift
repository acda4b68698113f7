import Foundation
import RelayClient
import RelayCore
import RelayHub
import Synchronization
import Testing

/// Runs `body` with `count` hubs, each joined to its own server of `cluster` (hub i to node i),
/// the way `relay serve --cluster` joins them.
func withClusteredHubs<T>(
    _ count: Int, on cluster: NATSCluster, allServers: Bool = false, configure: (inout HubConfiguration) -> Void = { _ in },
    _ body: ([TestHub]) async throws -> T
) async throws -> T {
    func nest(_ index: Int, _ hubs: [TestHub]) async throws -> T {
        guard index < count else { return try await body(hubs) }
        return try await withHub({ configuration in
            let own = cluster.urls[index % cluster.urls.count]
            configuration.cluster = .init(servers: allServers ? [own] + cluster.urls.filter { $0 != own } : [own])
            configuration.cluster?.pingIntervalSeconds = 1
            configure(&configuration)
        }) { hub in
            try await nest(index + 1, hubs + [hub])
        }
    }
    return try await nest(0, [])
}

/// Publishes probes until `arrived` says the subscribers they were for have them: interest made
/// on one hub takes a moment to reach the others' servers through the cluster's routes.
func untilInterestCrosses(_ publishProbe: () async throws -> Void, _ arrived: () -> Bool) async throws {
    try await eventually(within: 20) {
        try? await publishProbe()
        try? await Task.sleep(for: .milliseconds(50))
        return arrived()
    }
}

@Suite(.serialized, .timeLimit(.minutes(2))) struct ClusterTests {
    struct Pair: Codable, Sendable {
        var a: Int
        var b: Int
    }

    @Test func publicationsCrossHubsOnceToEachSubscriberInBothDialects() async throws {
        let cluster = try await NATSCluster.start()
        try await withClusteredHubs(3, on: cluster) { hubs in
            let (a, b, c) = (hubs[0], hubs[1], hubs[2])
            let seen = Collected()
            // LIME on A (where the publisher is) and on B; NATS on C with overlapping filters.
            let local = try await a.connect(.ws, as: "local@relay.local/1")
            let onB = try await b.connect(.tcp, as: "far@relay.local/1")
            let nats = try await NATSClient.connect(to: "nats://127.0.0.1:\(c.natsPort)")
            let streams: [(String, any AsyncSequence<String, Never> & Sendable)] = [
                ("a", try await local.subscribe("orders.*").map { $0.content.stringValue ?? "?" }),
                ("b", try await onB.subscribe("orders.*").map { $0.content.stringValue ?? "?" }),
                ("c*", try nats.subscribe("orders.*").map(\.text)),
                ("c>", try nats.subscribe("orders.>").map(\.text)),
            ]
            try await nats.flush()
            for (name, stream) in streams {
                Task { for await text in stream { seen.append("\(name):\(text)") } }
            }
            let publisher = try await a.connect(.tcp, as: "publisher@relay.local/1")
            try await untilInterestCrosses({ try await publisher.publish("orders.probe", "probe") }) {
                ["b", "c*", "c>"].allSatisfy { seen.items.contains("\($0):probe") }
            }
            let before = seen.items.count
            for number in 1...20 { try await publisher.publish("orders.n\(number)", .string("m\(number)")) }
            try await publisher.publish("orders.end", "end")
            try await eventually { ["a", "b", "c*", "c>"].allSatisfy { seen.items.contains("\($0):end") } }
            let counted = seen.items.dropFirst(before).filter { !$0.hasSuffix(":probe") }
            for name in ["a", "b", "c*", "c>"] {
                let got = counted.filter { $0.hasPrefix("\(name):") }
                #expect(got == (1...20).map { "\(name):m\($0)" } + ["\(name):end"], "each subscriber once, in order: \(name)")
            }
            // The subjects are the cluster's own: a plain NATS client of the cluster sees them.
            let direct = try await NATSClient.connect(to: cluster.urls[1])
            let directly = try direct.subscribe("orders.>")
            try await direct.flush()
            try await untilInterestCrosses({ try await publisher.publish("orders.direct", "hello") }) {
                directly.droppedCount == 0 && seen.items.contains("b:hello")
            }
            let message = try await firstElement(directly) { $0.subject == "orders.direct" }
            #expect(message.text == "hello" && message.headers?["Relay-From"] == "publisher@relay.local/1")
            await direct.close()
            await nats.close()
        }
        cluster.stop()
    }

    @Test func aQueueGroupSpreadOverHubsGetsEveryMessageExactlyOnce() async throws {
        let cluster = try await NATSCluster.start()
        try await withClusteredHubs(3, on: cluster) { hubs in
            let seen = Collected()
            let first = try await hubs[0].connect(.ws, as: "worker@relay.local/a")
            let second = try await hubs[1].connect(.tcp, as: "worker@relay.local/b")
            let third = try await NATSClient.connect(to: "nats://127.0.0.1:\(hubs[2].natsPort)")
            let members: [(String, any AsyncSequence<String, Never> & Sendable)] = [
                ("a", try await first.subscribe("jobs.*", queue: "workers").map { $0.content.stringValue ?? "?" }),
                ("b", try await second.subscribe("jobs.*", queue: "workers").map { $0.content.stringValue ?? "?" }),
                ("c", try third.subscribe("jobs.*", queue: "workers").map(\.text)),
            ]
            try await third.flush()
            for (name, stream) in members { Task { for await text in stream { seen.append("\(name):\(text)") } } }
            // The publisher is a NATS client on hub A, where member a is too.
            let publisher = try await NATSClient.connect(to: "nats://127.0.0.1:\(hubs[0].natsPort)")
            var probe = 0
            try await untilInterestCrosses({
                probe += 1
                try publisher.publish("jobs.probe", "probe")
            }) { ["a", "b", "c"].allSatisfy { seen.items.contains("\($0):probe") } }
            let before = seen.items.count
            for number in 1...90 { try publisher.publish("jobs.n", "j\(number)") }
            try await publisher.flush()
            try await eventually { seen.items.dropFirst(before).filter { !$0.hasSuffix(":probe") }.count >= 90 }
            let jobs = seen.items.dropFirst(before).filter { !$0.hasSuffix(":probe") }
            let texts = jobs.map { $0.split(separator: ":")[1] }
            #expect(jobs.count == 90 && Set(texts).count == 90, "each job exactly once across the three hubs")
            let hubsUsed = Set(jobs.map { $0.split(separator: ":")[0] })
            #expect(hubsUsed.count >= 2, "spread over the hubs: \(hubsUsed)")
            await publisher.close()
            await third.close()
        }
        cluster.stop()
    }

    @Test func requestsCrossHubsBothWays() async throws {
        let cluster = try await NATSCluster.start()
        try await withClusteredHubs(3, on: cluster) { hubs in
            // A LIME service on hub A, called by a NATS client on hub C.
            let provider = try await hubs[0].connect(.ws, as: "calc@relay.local/1")
            var calc = ServiceDefinition("calc")
            calc.method("add") { (pair: Pair, _) in pair.a + pair.b }
            calc.method("slow") { (_: JSONValue?, _) in
                try await Task.sleep(for: .seconds(5))
                return "late"
            }
            _ = try await provider.serve(calc)
            let caller = try await NATSClient.connect(to: "nats://127.0.0.1:\(hubs[2].natsPort)")
            var answer: NATSMessage?
            try await eventually(within: 20) {
                answer = try? await caller.request("calc.add", Array(#"{"a":1,"b":5}"#.utf8), timeout: .seconds(2))
                return answer != nil
            }
            #expect(answer?.text == "6", "\(String(describing: answer))")
            // The same service called from LIME on hub B: the call crosses, its checks and deadline too.
            let limeCaller = try await hubs[1].connect(.ws, as: "caller@relay.local/1")
            // Discovery on hub B shows hub A's service, and a second instance on hub C counts.
            let second = try await hubs[2].connect(.tcp, as: "calc@relay.local/2")
            _ = try await second.serve(calc)
            try await eventually(within: 20) {
                let listed = try? await limeCaller.services()
                return listed?.first { $0["name"] == "calc" }?["instances"] == 2
            }
            #expect(try await limeCaller.call("calc", "add", ["a": 2, "b": 3]) == 5)
            do {
                _ = try await limeCaller.call("calc", "add", ["a": "two"])
                Issue.record("bad parameters were accepted")
            } catch let error as RelayError {
                #expect(error.code == ReasonCode.commandInvalidArgument, "\(error)")
            }
            // The caller's deadline, not the method's five seconds: a timeout, not "late".
            do {
                let late = try await limeCaller.call("calc", "slow", timeout: .milliseconds(300))
                Issue.record("the deadline did not cross: \(late)")
            } catch let error as RelayError {
                #expect(error.code == RelayReasonCode.timedOut, "\(error)")
            }
            // A NATS responder on hub C, asked by a LIME client on hub B (the hub's own inbox).
            let responder = try await NATSClient.connect(to: "nats://127.0.0.1:\(hubs[2].natsPort)")
            let questions = try responder.subscribe("time.now")
            try await responder.flush()
            Task {
                for await question in questions {
                    if let reply = question.replyTo { try? responder.publish(reply, "noon") }
                }
            }
            let asker = try await hubs[1].connect(.tcp, as: "asker@relay.local/1")
            var reply: JSONValue?
            try await eventually(within: 20) {
                reply = try? await asker.requestOnSubject("time.now", .null, timeout: .seconds(2))
                return reply != nil
            }
            #expect(reply == "noon")
            // Nobody anywhere: NATS clients get no responders, as from nats-server, not a timeout.
            await #expect(throws: NATSClientError.noResponders) {
                _ = try await caller.request("nobody.home", [], timeout: .seconds(10))
            }
            do {
                _ = try await limeCaller.call("nowhere", "go")
                Issue.record("a service nowhere answered")
            } catch let error as RelayError {
                #expect(error.code == ReasonCode.routingDestinationNotFound, "\(error)")
            }
            // A responder on the caller's own hub answers, and the cluster's 503 does not overtake it.
            let near = try await NATSClient.connect(to: "nats://127.0.0.1:\(hubs[2].natsPort)")
            let nearQuestions = try near.subscribe("near.by")
            try await near.flush()
            Task {
                for await question in nearQuestions {
                    try? await Task.sleep(for: .milliseconds(100))
                    if let reply = question.replyTo { try? near.publish(reply, "here") }
                }
            }
            #expect(try await caller.request("near.by", [], timeout: .seconds(5)).text == "here")
            for client in [caller, responder, near] { await client.close() }
        }
        cluster.stop()
    }

    /// A call of a service on another hub, cancelled by its caller: the instance there is told
    /// and its handler stops.
    /// An instance asking to call again sends the call to the cluster's choice of instance, on
    /// any hub: the one on hub A always asks, the one on hub B answers. Each call is answered
    /// once: by B, or refused (123) when the cluster chose A again.
    @Test func aCallAgainGoesToAnInstanceOnAnyHub() async throws {
        let cluster = try await NATSCluster.start()
        try await withClusteredHubs(2, on: cluster) { hubs in
            let asked = Collected()
            var moody = ServiceDefinition("moody")
            moody.method("work") { (_: JSONValue?, _) -> JSONValue in
                asked.append("a")
                throw ServiceError.callAgain()
            }
            var steady = ServiceDefinition("moody")
            steady.method("work") { (_: JSONValue?, _) in "done by b" }
            let a = try await hubs[0].connect(.tcp, as: "moody@relay.local/a")
            _ = try await a.serve(moody)
            let b = try await hubs[1].connect(.tcp, as: "moody@relay.local/b")
            _ = try await b.serve(steady)
            let caller = try await hubs[0].connect(.ws, as: "caller@relay.local/1")
            // Until hub A's cluster connection holds hub B's instance (its queue subscription).
            try await eventually(within: 20) { (try? await caller.services())?.first { $0["name"] == "moody" }?["instances"] == 2 }
            var byB = 0
            var refused = 0
            for _ in 1...16 {
                do {
                    #expect(try await caller.call("moody", "work", timeout: .seconds(10)) == "done by b")
                    byB += 1
                } catch let error as RelayError where error.code == RelayReasonCode.callAgainRefused {
                    refused += 1
                }
            }
            #expect(byB + refused == 16)
            #expect(byB > 0, "a call-again reached the instance on the other hub (all 16 stayed on A: 1 in 65,536)")
            #expect(asked.items.count == 16 + refused, "A's instance was asked each call once, and again when chosen again")
            // A NATS client's request: made again on the cluster with the client's reply subject.
            let natsCaller = try await NATSClient.connect(to: "nats://127.0.0.1:\(hubs[0].natsPort)")
            var answers: [String] = []
            for _ in 1...16 {
                let answer = try await natsCaller.request("moody.work", [], timeout: .seconds(10))
                answers.append(answer.headers?["Nats-Service-Error-Code"] ?? answer.text)
            }
            #expect(answers.allSatisfy { $0 == #""done by b""# || $0 == "123" }, "\(answers)")
            #expect(answers.contains(#""done by b""#))
            await natsCaller.close()
        }
        cluster.stop()
    }

    /// Private and admin methods across hubs: with a shared secret, the caller's hub signs who
    /// calls and the serving hub takes it; a forged caller from a plain NATS client is refused.
    @Test(arguments: [true, false]) func privateAndAdminMethodsAcrossHubsNeedTheSharedSecret(sharing: Bool) async throws {
        let cluster = try await NATSCluster.start()
        try await withClusteredHubs(
            2, on: cluster,
            configure: {
                $0.admins = ["root@relay.local"]
                if sharing { $0.cluster?.secret = "the hubs' secret" }
            }
        ) { hubs in
            var vault = ServiceDefinition("vault")
            vault.method("peek", scope: .private) { (_: JSONValue?, _) in "peeked" }
            vault.method("wipe", scope: .admin) { (_: JSONValue?, _) in "wiped" }
            vault.method("hello") { (_: JSONValue?, _) in "hi" }
            let instance = try await hubs[0].connect(.tcp, as: "vault@relay.local/1")
            _ = try await instance.serve(vault)
            let sibling = try await hubs[1].connect(.ws, as: "vault@relay.local/2")
            let root = try await hubs[1].connect(.ws, as: "root@relay.local/1")
            let eve = try await hubs[1].connect(.ws, as: "eve@relay.local/1")
            try await eventually(within: 20) { (try? await eve.call("vault", "hello", timeout: .seconds(2))) == "hi" }
            func outcome(_ client: LIMEClient, _ method: String) async -> String {
                do { return try await client.call("vault", method, timeout: .seconds(5)).stringValue ?? "?" } catch let error as RelayError
                {
                    return "refused \(error.code)"
                } catch { return "\(error)" }
            }
            let refused = "refused \(ReasonCode.commandNotAllowed)"
            #expect(await outcome(sibling, "peek") == (sharing ? "peeked" : refused), "the service's own identity")
            #expect(await outcome(root, "wipe") == (sharing ? "wiped" : refused), "an administrator")
            #expect(await outcome(eve, "peek") == refused)
            #expect(await outcome(eve, "wipe") == refused)
            // A plain NATS client of the cluster writing the caller headers itself.
            let forger = try await NATSClient.connect(to: cluster.urls[1])
            var headers = NATSHeaders()
            headers.append("Relay-Caller", "vault@relay.local/9")
            headers.append("Relay-Caller-Admin", "1")
            headers.append("Relay-Time", String(Int64(Date().timeIntervalSince1970 * 1000)))
            headers.append("Relay-Signature", "bm90IGEgc2lnbmF0dXJl")
            let answer = try await forger.request("vault.peek", [], headers: headers, timeout: .seconds(5))
            #expect(answer.headers?["Nats-Service-Error-Code"] == String(ReasonCode.commandNotAllowed), "\(answer.text)")
            #expect(hubs[0].server.hub.clusterStatus?.callersRefused == (sharing ? 1 : 0))
            await forger.close()
        }
        cluster.stop()
    }

    @Test func cancellingACallCancelsItOnTheServingHub() async throws {
        let cluster = try await NATSCluster.start()
        try await withClusteredHubs(2, on: cluster) { hubs in
            let provider = try await hubs[0].connect(.ws, as: "calc@relay.local/1")
            let stopped = Collected()
            var calc = ServiceDefinition("calc")
            calc.method("slow") { (_: JSONValue?, _) in
                do {
                    try await Task.sleep(for: .seconds(30))
                } catch {
                    stopped.append("cancelled")
                    throw error
                }
                return "late"
            }
            _ = try await provider.serve(calc)
            let caller = try await hubs[1].connect(.tcp, as: "caller@relay.local/1")
            // Until the service's interest has crossed, a call finds nobody (42).
            try await eventually(within: 20) {
                do {
                    _ = try await caller.call("calc", "nothing")
                    return true
                } catch let error as RelayError {
                    return error.code != ReasonCode.routingDestinationNotFound
                } catch {
                    return false
                }
            }
            let call = Task { try await caller.call("calc", "slow", timeout: .seconds(20)) }
            try await eventually { hubs[0].server.hub.requestsInFlight == 1 }
            call.cancel()
            await #expect(throws: CancellationError.self) { _ = try await call.value }
            try await eventually { stopped.items == ["cancelled"] }
            #expect(hubs[0].server.hub.requestsInFlight == 0)
        }
        cluster.stop()
    }

    /// Standing requests (Nulstar's period and event subscriptions) of a service on another hub:
    /// answered every period, or every N events its instance reports there; the period is the
    /// serving hub's method's to allow.
    @Test func standingRequestsOfAServiceOnAnotherHub() async throws {
        let cluster = try await NATSCluster.start()
        try await withClusteredHubs(2, on: cluster) { hubs in
            let provider = try await hubs[0].connect(.ws, as: "inventory@relay.local/1")
            var inventory = ServiceDefinition("inventory")
            inventory.method("stock", minimumPeriod: 0.1, minimumEvents: 2) { (query: StockQuery, _) in
                StockLevel(sku: query.sku, count: 3)
            }
            let registration = try await provider.serve(inventory)
            let caller = try await hubs[1].connect(.tcp, as: "shop@relay.local/1")
            try await eventually(within: 20) { (try? await caller.call("inventory", "stock", ["sku": "X"])) != nil }
            let periodic = try await caller.watch("inventory", "stock", ["sku": "P"], period: 0.1)
            var received = 0
            for await result in periodic {
                #expect(try result.get()["sku"] == "P")
                received += 1
                if received == 3 { break }
            }
            let refused = try await caller.watch("inventory", "stock", ["sku": "P"], period: 0.01)
            for await result in refused {
                if case .failure(let error) = result {
                    #expect(error.code == ReasonCode.commandNotAllowed, "\(error)")
                } else {
                    Issue.record("a period below the method's minimum was accepted")
                }
                break
            }
            let onEvents = try await caller.watch("inventory", "stock", ["sku": "E"], events: 2)
            var iterator = onEvents.makeAsyncIterator()
            #expect(try await iterator.next()?.get()["sku"] == "E")  // answered at once
            for _ in 0..<2 { try await registration.reportEvent("stock") }
            #expect(try await iterator.next()?.get()["sku"] == "E")  // and after two events there
        }
        cluster.stop()
    }

    @Test func nodesAreReachedOnWhicheverHubTheyAreConnectedTo() async throws {
        let cluster = try await NATSCluster.start()
        try await withClusteredHubs(3, on: cluster) { hubs in
            let alice = try await hubs[0].connect(.ws, as: "alice@relay.local/a")
            let bob = try await hubs[1].connect(.tcp, as: "bob@relay.local/b")
            let phone = try await hubs[2].connect(.ws, as: "carol@relay.local/phone")
            let desk = try await hubs[1].connect(.tcp, as: "carol@relay.local/desk")
            // Bob's node subjects take a moment to reach hub A's server.
            var delivered: LIMEMessage?
            try await eventually(within: 20) {
                try? await alice.send(LIMEMessage(id: "hello", to: Node("bob@relay.local/b"), text: "hi bob"))
                delivered = try? await firstElement(bob.messages, within: 0.5)
                return delivered != nil
            }
            #expect(delivered?.content == "hi bob" && delivered?.header.from == Node("alice@relay.local/a"))
            // Bob answers; it comes back across the hubs, from bob.
            try await bob.send(LIMEMessage(to: Node("alice@relay.local/a"), text: "hi alice"))
            let answer = try await firstElement(alice.messages)
            #expect(answer.content == "hi alice" && answer.header.from == Node("bob@relay.local/b"))
            // An identity reaches its instances on every hub; a case-insensitive name too.
            try await eventually(within: 20) {
                try? await alice.send(LIMEMessage(to: Node("Carol@Relay.Local"), text: "to all of you"))
                return (try? await firstElement(phone.messages, within: 0.5)) != nil
            }
            try await alice.send(LIMEMessage(to: Node("carol@relay.local"), text: "again"))
            #expect(try await firstElement(desk.messages) { $0.content == "again" }.content == "again")
            #expect(try await firstElement(phone.messages) { $0.content == "again" }.content == "again")
            // Nobody anywhere: the failure (42) comes back, as on one hub.
            try await alice.send(LIMEMessage(id: "lost-1", to: Node("nobody@relay.local"), text: "anyone?"))
            let failed = try await firstElement(alice.notifications) { $0.header.id == "lost-1" }
            #expect(failed.event == .failed && failed.reason?.code == ReasonCode.routingDestinationNotFound)
            // A command to a node elsewhere is answered from there: no one answers for a
            // missing one but the hub.
            let response = try await alice.request(
                LIMECommand(header: EnvelopeHeader(to: Node("inventory@relay.local")), method: .get, uri: "/stock"))
            #expect(response.status == .failure && response.reason?.code == ReasonCode.routingDestinationNotFound)
        }
        cluster.stop()
    }

    /// A LIME subscriber on hub B and a publisher on hub A; once a probe crosses, `fault` is
    /// done, and the publisher publishes until one publication made after it arrives.
    static func ticksGoOnAcross(_ hubs: [TestHub], after fault: () -> Void) async throws {
        let seen = Collected()
        let subscriber = try await hubs[1].connect(.ws, as: "sub@relay.local/1")
        let stream = try await subscriber.subscribe("ticks")
        Task { for await message in stream { seen.append(message.content.stringValue ?? "?") } }
        let publisher = try await hubs[0].connect(.tcp, as: "pub@relay.local/1")
        try await untilInterestCrosses({ try await publisher.publish("ticks", "probe") }) { seen.items.contains("probe") }
        fault()
        var number = 0
        try await eventually(within: 30) {
            number += 1
            try? await publisher.publish("ticks", .string("after\(number)"))
            try? await Task.sleep(for: .milliseconds(50))
            return seen.items.contains { $0.hasPrefix("after") }
        }
    }

    @Test func aKilledNATSServerIsFailedOverAndTheFlowGoesOn() async throws {
        let cluster = try await NATSCluster.start()
        // Each hub knows only its own server: the others come from INFO's connect_urls.
        try await withClusteredHubs(2, on: cluster) { hubs in
            // Hub A's cluster connections move to another server; publications are held meanwhile.
            try await Self.ticksGoOnAcross(hubs) { cluster.nodes[0].stop() }
            try await eventually { hubs[0].server.hub.clusterStatus?.connected == true }
            #expect(hubs[0].server.hub.clusterStatus?.reconnects == 1)
            let varz = try await httpJSON(hubs[0], "/varz")
            #expect(varz["cluster"]?["connected"] == true && varz["cluster"]?["reconnects"] == 1)
            #expect((varz["cluster"]?["published"]?.intValue ?? 0) >= 2)
            let metrics = try await httpGet(hubs[0], "/metrics").body
            #expect(metrics.contains("relay_cluster_connected 1") && metrics.contains("relay_cluster_reconnects_total 1"))
            #expect(hubs[1].server.hub.statistics.sessionsOpen == 1, "the session on hub B never noticed")
        }
        cluster.stop()
    }

    /// A server that stops answering (a network pause) is left after the cluster connection's
    /// unanswered pings (the test's interval is 1 s; two unanswered end the connection).
    @Test func aPausedNATSServerIsLeftAfterThePingTimeout() async throws {
        let cluster = try await NATSCluster.start()
        try await withClusteredHubs(2, on: cluster) { hubs in
            defer { cluster.nodes[0].resume() }
            try await Self.ticksGoOnAcross(hubs) { cluster.nodes[0].pause() }
            // The pings (1 s apart, two unanswered) ended the connection; the hub is on another server.
            try await eventually { hubs[0].server.hub.clusterStatus?.connected == true }
            #expect(hubs[0].server.hub.clusterStatus?.reconnects == 1)
        }
        cluster.stop()
    }

    /// `relay serve --cluster` processes: one killed with SIGKILL, its LIME and NATS clients
    /// (given both hubs) reconnect to the other and their subscriptions go on.
    @Test func aKilledHubsClientsReconnectToAnotherHubAndCarryOn() async throws {
        let cluster = try await NATSCluster.start()
        let a = try await RelayHubProcess(arguments: ["--cluster", cluster.urls[0]])
        let b = try await RelayHubProcess(arguments: ["--cluster", cluster.urls[1] + "," + cluster.urls[2]])
        let policy = ReconnectPolicy(maximumAttempts: -1, shuffleServers: false)
        var options = LIMEClient.Options(identity: Identity("watcher@relay.local")!, instance: "1")
        options.reconnect = policy
        let lime = try await LIMEClient.connect(to: [a.tcp, b.tcp], options: options)
        var natsOptions = NATSClient.Options(servers: [a.nats, b.nats])
        natsOptions.reconnect = policy
        let nats = try await NATSClient.connect(options: natsOptions)
        let seen = Collected()
        let limeAlerts = try await lime.subscribe("alerts.>")
        let natsAlerts = try nats.subscribe("alerts.>")
        try await nats.flush()
        Task { for await message in limeAlerts { seen.append("lime:\(message.content.stringValue ?? "?")") } }
        Task { for await message in natsAlerts { seen.append("nats:\(message.text)") } }
        // The publisher is a plain NATS client of the cluster.
        let publisher = try await NATSClient.connect(to: cluster.urls[2])
        try await untilInterestCrosses({
            try publisher.publish("alerts.probe", "before")
            try await publisher.flush()
        }) { seen.items.contains("lime:before") && seen.items.contains("nats:before") }
        a.stop(.kill)
        var number = 0
        try await eventually(within: 30) {
            number += 1
            try? publisher.publish("alerts.n", "after\(number)")
            try? await publisher.flush()
            try? await Task.sleep(for: .milliseconds(50))
            return seen.items.contains { $0.hasPrefix("lime:after") } && seen.items.contains { $0.hasPrefix("nats:after") }
        }
        #expect(lime.isConnected && nats.reconnectCount == 1)
        await lime.close()
        await nats.close()
        await publisher.close()
        b.stop(.terminate)
        cluster.stop()
    }
}
