import Testing

@testable import RelayCore

@Suite struct NATSClientMachineTests {
    private func machine() -> NATSClientConnectionMachine {
        NATSClientConnectionMachine(configuration: .init(connect: ["headers": true], maximumPingsOutstanding: 2))
    }

    private func connected() -> NATSClientConnectionMachine {
        var machine = machine()
        _ = machine.operationReceived(.info(["server_id": "S"]))
        _ = machine.operationReceived(.pong)
        return machine
    }

    @Test func handshakeIsInfoThenConnectAndPingThenPong() {
        var machine = machine()
        #expect(machine.operationReceived(.info(["server_id": "S"])) == [.send([.connect(["headers": true]), .ping])])
        #expect(machine.state == .awaitingPong)
        #expect(machine.operationReceived(.pong) == [.connected(info: ["server_id": "S"])])
        #expect(machine.state == .connected)
    }

    @Test func anErrorDuringTheHandshakeFailsTheConnection() {
        var machine = machine()
        _ = machine.operationReceived(.info([:]))
        #expect(machine.operationReceived(.error("Authorization Violation")) == [.fail("Authorization Violation")])
        var early = self.machine()
        #expect(
            early.operationReceived(.message(subject: "a", sid: "1", replyTo: nil, headers: nil, payload: [])) == [
                .fail("expected INFO from the server")
            ])
    }

    @Test func answersPingsDeliversMessagesAndKeepsSubjectErrorsNonFatal() {
        var machine = connected()
        #expect(machine.operationReceived(.ping) == [.send([.pong])])
        #expect(
            machine.operationReceived(.message(subject: "a", sid: "1", replyTo: "r", headers: nil, payload: [1])) == [
                .deliver(subject: "a", sid: "1", replyTo: "r", headers: nil, payload: [1])
            ])
        #expect(machine.operationReceived(.error("Invalid Subject")) == [.serverError("Invalid Subject")])
        #expect(machine.operationReceived(.error("Slow Consumer")) == [.fail("Slow Consumer")])
    }

    @Test func keepaliveDetectsAStaleServer() {
        var machine = connected()
        #expect(machine.pingIntervalElapsed() == [.send([.ping])])
        #expect(machine.operationReceived(.pong) == [.pongReceived])
        #expect(machine.pingIntervalElapsed() == [.send([.ping])])
        #expect(machine.pingIntervalElapsed() == [.send([.ping])])
        #expect(machine.pingIntervalElapsed() == [.fail("Stale Connection")])
        #expect(machine.pingIntervalElapsed().isEmpty)
    }
}
