import RelayCore
import Testing

@testable import RelayHub

/// The signature that lets a hub take a caller's node from another hub.
@Suite struct ClusterCallerSignerTests {
    let caller = Node("vault@relay.local/2")!
    let payload = Array(#"{"key":"k1"}"#.utf8)

    private func signed(_ signer: ClusterCallerSigner, now: Int64 = 1_000_000, payload: [UInt8]? = nil) -> NATSHeaders {
        var client = NATSHeaders()
        client.append("Trace", "t-1")
        client.append("relay-caller", "someone@else")  // a client's own, dropped
        return signer.sign(
            subject: "vault.peek", replyTo: "_INBOX.relay.H1.7", payload: payload ?? self.payload, headers: client, caller: caller,
            admin: true, now: now)
    }

    @Test func aGoodSignatureIsTakenOnceWithinItsWindow() {
        var signer = ClusterCallerSigner(secret: "s3cret", windowMilliseconds: 30_000)
        let headers = signed(signer)
        #expect(headers.values("Relay-Caller") == ["vault@relay.local/2"], "the client's own caller header was dropped")
        let kept = signer.checked(subject: "vault.peek", replyTo: "_INBOX.relay.H1.7", payload: payload, headers: headers, now: 1_010_000)
        #expect(kept?["Relay-Caller"] == "vault@relay.local/2" && kept?["Relay-Caller-Admin"] == "1" && kept?["Trace"] == "t-1")
        #expect(kept?["Relay-Signature"] == nil && kept?["Relay-Time"] == nil)
        let replayed = signer.checked(
            subject: "vault.peek", replyTo: "_INBOX.relay.H1.7", payload: payload, headers: headers, now: 1_010_000)
        #expect(replayed?["Relay-Caller"] == nil && replayed?["Trace"] == "t-1", "a replay is refused")
        #expect(signer.refused == 1)
    }

    @Test func anythingChangedStaleOrSignedWithAnotherSecretIsRefused() {
        var signer = ClusterCallerSigner(secret: "s3cret", windowMilliseconds: 30_000)
        let headers = signed(signer)
        func check(_ subject: String = "vault.peek", payload: [UInt8]? = nil, headers: NATSHeaders, now: Int64 = 1_000_000) -> String? {
            signer.checked(subject: subject, replyTo: "_INBOX.relay.H1.7", payload: payload ?? self.payload, headers: headers, now: now)?[
                "Relay-Caller"]
        }
        #expect(check("vault.wipe", headers: headers) == nil, "another subject")
        #expect(check(payload: Array("{}".utf8), headers: headers) == nil, "another payload")
        var forged = headers
        forged.fields = forged.fields.map { $0.name == "Relay-Caller" ? ("Relay-Caller", "root@relay.local") : $0 }
        #expect(check(headers: forged) == nil, "another caller")
        #expect(check(headers: headers, now: 1_031_000) == nil, "too late")
        let other = ClusterCallerSigner(secret: "guess", windowMilliseconds: 30_000)
        #expect(check(headers: signed(other)) == nil, "another secret")
        #expect(signer.refused == 5)
        #expect(check(headers: headers, now: 1_020_000) == "vault@relay.local/2", "the original still checks")
    }
}
