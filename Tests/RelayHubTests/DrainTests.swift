import Foundation
import Logging
import NIOCore
import RelayClient
import RelayCore
import RelayHub
import RelayTransport
import Testing

@Suite(.timeLimit(.minutes(1))) struct DrainTests {
    /// SIGTERM's drain: no new connections, /healthz 503, NATS clients told (INFO ldm), a request
    /// in flight answered before the sessions are finished.
    @Test func aDrainLetsRequestsInFlightFinish() async throws {
        var configuration = HubConfiguration()
        (configuration.ws, configuration.tcp, configuration.nats, configuration.http) = (
            HostAndPort(host: "127.0.0.1", port: 0), HostAndPort(host: "127.0.0.1", port: 0), HostAndPort(host: "127.0.0.1", port: 0),
            HostAndPort(host: "127.0.0.1", port: 0)
        )
        configuration.data = temporaryDataDirectory()
        defer { try? FileManager.default.removeItem(atPath: configuration.data) }
        var logger = Logger(label: "relay.test")
        logger.logLevel = .warning
        let server = try HubServer(configuration: configuration, logger: logger)
        try await server.start()
        let hub = TestHub(server: server)

        let instance = try await hub.connect(.tcp, as: "slow@relay.local/1")
        _ = try await instance.request(LIMECommand(method: .set, uri: "/services/slow", resource: ["methods": [["name": "work"]]]))
        let caller = try await hub.connect(.ws, as: "caller@relay.local/1")
        let nats = try await RawNATSConnection.connect(port: hub.natsPort)
        var lines = nats.lines.makeAsyncIterator()
        _ = await lines.next()
        try await nats.send("CONNECT {}\r\nPING\r\n")
        #expect(await lines.next() == "PONG")

        let answer = Task { try await caller.request(LIMECommand(method: .get, uri: "/services/slow/work"), timeout: .seconds(20)) }
        let request = try await firstElement(instance.commands)
        let drain = Task { await server.shutdown(drainTimeout: .seconds(20)) }

        // Told to go elsewhere, as nats-server's lame-duck mode says it.
        let info = await lines.next() ?? ""
        #expect(info.hasPrefix("INFO ") && info.contains(#""ldm":true"#), "\(info)")
        let health = try await httpGet(hub, "/healthz")
        #expect(health.status == 503 && health.body.contains("draining"))
        await #expect(throws: (any Error).self) { _ = try await hub.connect(.tcp, as: "late@relay.local") }

        // The request in flight is answered, then the sessions are finished.
        var response = request.success(type: "application/json", resource: ["done": true])
        response.header.from = instance.localNode
        try await instance.send(response)
        #expect(try await answer.value.status == .success)
        await drain.value
        #expect(await caller.waitUntilEnded() == nil, "the caller's session was finished cleanly")
    }
}
