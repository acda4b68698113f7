import RelayClient
import RelayCore
import Synchronization
import Testing

struct StockQuery: Codable, Sendable {
    var sku: String
    var warehouse: String?
}

struct StockLevel: Codable, Sendable, Equatable {
    var sku: String
    var count: Int
}

@Suite(.timeLimit(.minutes(1))) struct ServiceTests {
    final class CallLog: Sendable {
        let calls = Mutex<[String]>([])
    }

    private func inventory(instance: String, log: CallLog? = nil) -> ServiceDefinition {
        var definition = ServiceDefinition("inventory", description: "Stock levels")
        definition.method("stock", description: "How many are left", minimumPeriod: 0.1, minimumEvents: 2) { (query: StockQuery, _) in
            log?.calls.withLock { $0.append(instance) }
            return StockLevel(sku: query.sku, count: 3)
        }
        definition.method("slow") { (_: JSONValue?, _) in
            try await Task.sleep(for: .seconds(30))
            return "late"
        }
        definition.method("flaky") { (_: JSONValue?, context) in
            throw ServiceError.callAgain("try elsewhere")
        }
        return definition
    }

    @Test(arguments: [(Transport.ws, Transport.tcp), (.tcp, .ws)])
    func aTypedRequestReachesTheServiceAndReturns(_ serverTransport: Transport, _ callerTransport: Transport) async throws {
        try await withHub { hub in
            let server = try await hub.connect(serverTransport, as: "inventory@relay.local/1")
            let registration = try await server.serve(inventory(instance: "1"))
            let caller = try await hub.connect(callerTransport, as: "shop@relay.local")
            let level = try await caller.call("inventory", "stock", StockQuery(sku: "ABC"), as: StockLevel.self)
            #expect(level == StockLevel(sku: "ABC", count: 3))
            let services = try await caller.services()
            #expect(services.first?["name"] == "inventory" && services.first?["instances"] == 1)
            let stock = services.first?["methods"]?.arrayValue?.first { $0["name"] == "stock" }
            // The description was read from StockQuery.
            #expect(
                stock?["parameters"] == [
                    ["name": "sku", "type": "string", "required": true], ["name": "warehouse", "type": "string", "required": false],
                ])
            try await registration.stop()
            await #expect(throws: RelayError.self) { _ = try await caller.call("inventory", "stock", ["sku": "ABC"]) }
        }
    }

    @Test func badParametersAndUnknownMethodsAreRefused() async throws {
        try await withHub { hub in
            let server = try await hub.connect(.tcp, as: "inventory@relay.local/1")
            _ = try await server.serve(inventory(instance: "1"))
            let caller = try await hub.connect(.ws, as: "shop@relay.local")
            do {
                _ = try await caller.call("inventory", "stock", ["sku": 42])
                Issue.record("wrong type accepted")
            } catch let error as RelayError {
                #expect(error.code == ReasonCode.commandInvalidArgument && error.reason.description.contains("sku"))
            }
            do {
                _ = try await caller.call("inventory", "teleport")
                Issue.record("unknown method accepted")
            } catch let error as RelayError {
                #expect(error.code == ReasonCode.commandMethodNotSupported)
            }
            do {
                _ = try await caller.call("nowhere", "x")
                Issue.record("unknown service accepted")
            } catch let error as RelayError {
                #expect(error.code == ReasonCode.routingDestinationNotFound)
            }
        }
    }

    @Test func instancesShareTheLoad() async throws {
        try await withHub { hub in
            let log = CallLog()
            for instance in ["a", "b"] {
                let server = try await hub.connect(.tcp, as: "inventory@relay.local/\(instance)")
                _ = try await server.serve(inventory(instance: instance, log: log))
            }
            let caller = try await hub.connect(.ws, as: "shop@relay.local")
            for _ in 0..<10 { _ = try await caller.call("inventory", "stock", ["sku": "A"]) }
            let counts = log.calls.withLock { Dictionary($0.map { ($0, 1) }, uniquingKeysWith: +) }
            #expect(counts == ["a": 5, "b": 5])
        }
    }

    @Test func aDeadlineFailsTheCall() async throws {
        try await withHub { hub in
            let server = try await hub.connect(.tcp, as: "inventory@relay.local/1")
            _ = try await server.serve(inventory(instance: "1"))
            let caller = try await hub.connect(.tcp, as: "shop@relay.local")
            do {
                _ = try await caller.call("inventory", "slow", timeout: .milliseconds(300))
                Issue.record("no timeout")
            } catch let error as RelayError {
                #expect(error.code == RelayReasonCode.timedOut)
            }
            #expect(hub.server.hub.statistics.core.requestsTimedOut == 1)
        }
    }

    /// `request`'s own timeout ends a wait the hub would let run on, and answered requests are
    /// unaffected by the timers of those before them.
    @Test func theClientsTimeoutEndsAWaitTheHubWouldNot() async throws {
        try await withHub { hub in
            let server = try await hub.connect(.tcp, as: "inventory@relay.local/1")
            _ = try await server.serve(inventory(instance: "1"))
            let caller = try await hub.connect(.ws, as: "shop@relay.local")
            var slow = LIMECommand(method: .get, uri: "/services/inventory/slow")
            slow.header.metadata = ["#deadline": "60000"]
            await #expect(throws: LIMEClientError.timedOut("get /services/inventory/slow (id s1)")) {
                slow.header.id = "s1"
                _ = try await caller.request(slow, timeout: .milliseconds(200))
            }
            for _ in 0..<50 {
                let answer = try await caller.request(LIMECommand(method: .get, uri: "/ping"), timeout: .milliseconds(5_000))
                #expect(answer.status == .success)
            }
        }
    }

    @Test func cancellingTheTaskCancelsTheRequest() async throws {
        try await withHub { hub in
            let server = try await hub.connect(.tcp, as: "inventory@relay.local/1")
            _ = try await server.serve(inventory(instance: "1"))
            let caller = try await hub.connect(.ws, as: "shop@relay.local")
            let call = Task { try await caller.call("inventory", "slow") }
            // Wait until the hub has the request in flight, then cancel.
            while hub.server.hub.statistics.core.requests == 0 { try await Task.sleep(for: .milliseconds(5)) }
            call.cancel()
            await #expect(throws: CancellationError.self) { _ = try await call.value }
            #expect(try await caller.ping().status == .success)
        }
    }

    @Test func callersLearnAtOnceWhenTheInstanceGoes() async throws {
        try await withHub { hub in
            let server = try await hub.connect(.tcp, as: "inventory@relay.local/1")
            _ = try await server.serve(inventory(instance: "1"))
            let caller = try await hub.connect(.ws, as: "shop@relay.local")
            let call = Task { try await caller.call("inventory", "slow") }
            while hub.server.hub.statistics.core.requests == 0 { try await Task.sleep(for: .milliseconds(5)) }
            await server.close()
            do {
                _ = try await call.value
                Issue.record("no failure")
            } catch let error as RelayError {
                #expect(error.code == RelayReasonCode.instanceLost)
            }
        }
    }

    @Test func callAgainIsDeliveredOnceMoreThenFails() async throws {
        try await withHub { hub in
            let server = try await hub.connect(.tcp, as: "inventory@relay.local/1")
            _ = try await server.serve(inventory(instance: "1"))
            let caller = try await hub.connect(.ws, as: "shop@relay.local")
            do {
                _ = try await caller.call("inventory", "flaky")
                Issue.record("no failure")
            } catch let error as RelayError {
                #expect(error.code == RelayReasonCode.callAgainRefused)
            }
            #expect(hub.server.hub.statistics.core.requests == 1)
        }
    }

    @Test func aCommandIsConfirmedWhenAccepted() async throws {
        try await withHub { hub in
            let server = try await hub.connect(.tcp, as: "inventory@relay.local/1")
            _ = try await server.serve(inventory(instance: "1"))
            let caller = try await hub.connect(.ws, as: "shop@relay.local")
            // `slow` takes 30 s to run, but a command returns as soon as it is accepted.
            try await caller.command("inventory", "slow", timeout: .seconds(5))
        }
    }

    @Test func periodAndEventSubscriptionsStreamUntilLeft() async throws {
        try await withHub { hub in
            let server = try await hub.connect(.tcp, as: "inventory@relay.local/1")
            let registration = try await server.serve(inventory(instance: "1"))
            let caller = try await hub.connect(.ws, as: "shop@relay.local")
            let periodic = try await caller.watch("inventory", "stock", ["sku": "P"], period: 0.1)
            var received = 0
            for await result in periodic {
                #expect(try result.get()["sku"] == "P")
                received += 1
                if received == 3 { break }
            }
            let refused = try await caller.watch("inventory", "stock", ["sku": "P"], period: 0.01)
            for await result in refused {
                #expect(throws: RelayError.self) { try result.get() }
                break
            }
            let onEvents = try await caller.watch("inventory", "stock", ["sku": "E"], events: 2)
            var iterator = onEvents.makeAsyncIterator()
            #expect(try await iterator.next()?.get()["sku"] == "E")  // answered at once
            for _ in 0..<2 { try await registration.reportEvent("stock") }
            #expect(try await iterator.next()?.get()["sku"] == "E")  // and after two events
        }
    }

    @Test func compoundMethodsCallWhatTheyMapTo() async throws {
        try await withHub { hub in
            let server = try await hub.connect(.tcp, as: "inventory@relay.local/1")
            _ = try await server.serve(inventory(instance: "1"))
            let composer = try await hub.connect(.ws, as: "composer@relay.local")
            let definition: JSONValue = [
                "methods": [["service": "inventory", "method": "stock", "aliases": ["item": "sku"], "presets": ["warehouse": "eu"]]]
            ]
            let registered = try await composer.request(LIMECommand(method: .set, uri: "/compound/peek", resource: definition))
            #expect(registered.status == .success)
            let result = try await composer.request(LIMECommand(method: .get, uri: "/compound/peek", resource: ["item": "XYZ"]))
            #expect(result.resource == ["inventory.stock": ["sku": "XYZ", "count": 3]])
            #expect(try await composer.request(LIMECommand(method: .delete, uri: "/compound/peek")).status == .success)
        }
    }
}

@Suite(.timeLimit(.minutes(1))) struct DurableServiceTests {
    final class Seen: Sendable {
        let instances = Mutex<[String]>([])
    }

    private func definition(_ instance: String, seen: Seen, hang: Bool = false, callAgain: Bool = false) -> ServiceDefinition {
        var definition = ServiceDefinition("billing", description: "Durable billing")
        definition.durable = true
        definition.method("charge") { (params: JSONValue?, _) in
            seen.instances.withLock { $0.append(instance) }
            if hang { try await Task.sleep(for: .seconds(60)) }
            if callAgain { throw ServiceError.callAgain() }
            return ["charged": params?["amount"] ?? .null, "by": .string(instance)]
        }
        return definition
    }

    @Test func aRequestSurvivesItsInstanceGoingAway() async throws {
        try await withHub { hub in
            let seen = Seen()
            let doomed = try await hub.connect(.tcp, as: "billing@relay.local/doomed")
            _ = try await doomed.serve(definition("doomed", seen: seen, hang: true))
            let caller = try await hub.connect(.ws, as: "shop@relay.local")
            let call = Task { try await caller.call("billing", "charge", ["amount": 5], verb: .set, timeout: .seconds(20)) }
            try await eventually { seen.instances.withLock { $0 } == ["doomed"] }
            // The survivor joins, then the first instance dies without answering.
            let survivor = try await hub.connect(.tcp, as: "billing@relay.local/survivor")
            _ = try await survivor.serve(definition("survivor", seen: seen))
            await doomed.close()
            let result = try await call.value
            #expect(result == ["charged": 5, "by": "survivor"])
            let info = try await caller.queueInfo("svc_billing")
            #expect(info["redelivered"] == 1 && info["acknowledged"] == 1)
        }
    }

    @Test func callAgainIsDeliveredOnceMoreThenRefused() async throws {
        try await withHub { hub in
            let seen = Seen()
            let instance = try await hub.connect(.tcp, as: "billing@relay.local/1")
            _ = try await instance.serve(definition("1", seen: seen, callAgain: true))
            let caller = try await hub.connect(.ws, as: "shop@relay.local")
            do {
                _ = try await caller.call("billing", "charge", ["amount": 1], timeout: .seconds(10))
                Issue.record("no failure")
            } catch let error as RelayError {
                #expect(error.code == RelayReasonCode.callAgainRefused)
            }
            #expect(seen.instances.withLock { $0 }.count == 2)
            #expect(try await caller.queueInfo("svc_billing")["deadLettered"] == 1)
        }
    }

    /// A NATS client's request is stored as a LIME caller's is, and answered on its reply subject.
    @Test func aNATSCallersRequestIsStoredAndAnswered() async throws {
        try await withHub { hub in
            let seen = Seen()
            let instance = try await hub.connect(.tcp, as: "billing@relay.local/1")
            _ = try await instance.serve(definition("1", seen: seen))
            let caller = try await NATSClient.connect(to: "nats://127.0.0.1:\(hub.natsPort)")
            let answer = try await caller.request("billing.charge", Array(#"{"amount":3}"#.utf8), timeout: .seconds(10))
            let parsed = try JSONParser.parse(Array(answer.payload))
            #expect(parsed["charged"] == 3 && parsed["by"] == "1", "\(answer.text)")
            #expect(try await instance.queueInfo("svc_billing")["acknowledged"] == 1, "it went through the service's queue")
            await caller.close()
        }
    }

    @Test func requestsWaitForAnInstance() async throws {
        try await withHub { hub in
            let seen = Seen()
            let first = try await hub.connect(.tcp, as: "billing@relay.local/1")
            _ = try await first.serve(definition("1", seen: seen))
            await first.close()
            let caller = try await hub.connect(.ws, as: "shop@relay.local")
            let call = Task { try await caller.call("billing", "charge", ["amount": 2], timeout: .seconds(20)) }
            try await eventually { (try? await caller.queueInfo("svc_billing"))?["messages"] == 1 }
            let later = try await hub.connect(.tcp, as: "billing@relay.local/2")
            _ = try await later.serve(definition("2", seen: seen))
            #expect(try await call.value == ["charged": 2, "by": "2"])
        }
    }
}
