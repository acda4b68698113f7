import Crypto
import Foundation
import RelayCore

/// Signs and checks who calls a service on another hub (docs/CLUSTER.md, "Callers across hubs").
///
/// Any NATS client of the cluster can write headers, so a hub takes a caller's node from another
/// hub only when the hubs share a secret (`"cluster": {"secret": …}`) and the call carries a valid
/// signature of it: HMAC-SHA256 over the subject, reply subject, caller, admin flag, time and the
/// payload's digest. A signature is good for `window` either side of the hub's clock, and once:
/// a replay within the window is refused.
struct ClusterCallerSigner: Sendable {
    static let callerHeader = "Relay-Caller"
    static let adminHeader = "Relay-Caller-Admin"
    static let timeHeader = "Relay-Time"
    static let signatureHeader = "Relay-Signature"
    /// The headers only the signer writes: whatever else wrote them is dropped.
    static let reserved: Set<String> = [callerHeader, adminHeader, timeHeader, signatureHeader].reduce(into: []) {
        $0.insert($1.lowercased())
    }

    private let key: SymmetricKey
    /// Milliseconds a signature's time may be off the hub's clock.
    let window: Int64
    /// Signatures seen within the window (a replay is refused), by the time they carry.
    private var seen: [String: Int64] = [:]
    private(set) var refused = 0

    init(secret: String, windowMilliseconds: Int64 = 30_000) {
        key = SymmetricKey(data: SHA256.hash(data: Data(secret.utf8)))
        window = windowMilliseconds
    }

    /// The cluster form's headers without the reserved ones (a client's, or another hub's
    /// unchecked).
    static func withoutReserved(_ headers: NATSHeaders?) -> NATSHeaders? {
        func isReserved(_ name: String) -> Bool { PublishedMessage.isRelayHeader(name) && reserved.contains(name.lowercased()) }
        guard var headers, headers.fields.contains(where: { isReserved($0.name) }) else { return headers }
        headers.fields.removeAll { isReserved($0.name) }
        return headers
    }

    /// The headers that say `caller` calls (an administrator or not), signed for this message.
    func sign(
        subject: String, replyTo: String?, payload: [UInt8], headers: NATSHeaders?, caller: Node, admin: Bool, now: Int64
    ) -> NATSHeaders {
        var signed = Self.withoutReserved(headers) ?? NATSHeaders()
        signed.append(Self.callerHeader, caller.description)
        signed.append(Self.adminHeader, admin ? "1" : "0")
        signed.append(Self.timeHeader, String(now))
        signed.append(
            Self.signatureHeader,
            signature(subject: subject, replyTo: replyTo, payload: payload, caller: caller.description, admin: admin, time: now))
        return signed
    }

    /// The headers of a message from the cluster as the hub may take them: the caller headers
    /// kept when their signature is good, fresh and not seen before; dropped (and counted when
    /// they were there) otherwise.
    mutating func checked(subject: String, replyTo: String?, payload: [UInt8], headers: NATSHeaders?, now: Int64) -> NATSHeaders? {
        guard let headers, let caller = headers[Self.callerHeader] else { return Self.withoutReserved(headers) }
        let admin = headers[Self.adminHeader] == "1"
        guard let given = headers[Self.signatureHeader], let time = headers[Self.timeHeader].flatMap({ Int64($0) }),
            abs(now - time) <= window, seen[given] == nil,
            given == signature(subject: subject, replyTo: replyTo, payload: payload, caller: caller, admin: admin, time: time)
        else {
            refused += 1
            return Self.withoutReserved(headers)
        }
        if seen.count > 100_000 { seen = seen.filter { abs(now - $0.value) <= window } }
        seen[given] = time
        var kept = headers
        kept.fields.removeAll {
            $0.name.lowercased() == Self.timeHeader.lowercased() || $0.name.lowercased() == Self.signatureHeader.lowercased()
        }
        return kept
    }

    private func signature(subject: String, replyTo: String?, payload: [UInt8], caller: String, admin: Bool, time: Int64) -> String {
        let digest = SHA256.hash(data: payload).map { String(format: "%02x", $0) }.joined()
        let text = [subject, replyTo ?? "", caller, admin ? "1" : "0", String(time), digest].joined(separator: "\n")
        return Data(HMAC<SHA256>.authenticationCode(for: Data(text.utf8), using: key)).base64EncodedString()
    }
}
