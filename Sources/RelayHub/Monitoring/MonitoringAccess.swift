import Crypto
import Foundation
import NIOHTTP1
import RelayCore
import Synchronization

/// Who may read the monitoring endpoints. `/healthz` and `/readyz` are open to every caller (load
/// balancers and orchestrators probe them); with `httpRequiresAdmin` the others need an
/// administrator's credentials, checked as NATS CONNECT's are (one code path for every scheme):
/// `Authorization: Basic` with a user's identity (or name) and password, or `Authorization: Bearer`
/// with a user's key or a JWT. An administrator is an identity in `admins` or one whose
/// permissions allow administration. With TLS `required`, a plaintext request is refused.
final class MonitoringAccess: Sendable {
    /// What a request needs before it is answered.
    enum Step: Sendable, Equatable {
        case allowed
        case refused(MonitoringResponse)
        /// Credentials to check (off the event loop: a password hash is slow on purpose).
        case verify(authorization: String)
    }

    /// Credentials recently found to be an administrator's, by the digest of their header, so a
    /// polling status page does not hash the password on every request. Cleared on reload.
    let accepted = Mutex<[SHA256Digest: ContinuousClock.Instant]>([:])
    static let acceptedFor: Duration = .seconds(60)
    static let acceptedAtMost = 256

    static let openPaths: Set<String> = ["/healthz", "/readyz"]

    /// The first decision on a request, from what it carries.
    func step(path: String, authorization: String?, secured: Bool, configuration: HubConfiguration) -> Step {
        if configuration.tls?.required == true, !secured {
            return .refused(.text("TLS required: use https://", status: .forbidden))
        }
        guard configuration.httpRequiresAdmin, !Self.openPaths.contains(path) else { return .allowed }
        guard let authorization, !authorization.isEmpty else { return .refused(Self.challenge("credentials required")) }
        let digest = SHA256.hash(data: Array(authorization.utf8))
        let now = ContinuousClock.now
        if accepted.withLock({ $0[digest].map { now - $0 < Self.acceptedFor } ?? false }) { return .allowed }
        return .verify(authorization: authorization)
    }

    /// Checks an `Authorization` header: nil when it is an administrator's, else the refusal.
    func verify(_ authorization: String, hub: Hub, secured: Bool) async -> MonitoringResponse? {
        guard let options = Self.connectOptions(authorization) else { return Self.challenge("unsupported credentials") }
        let verdict = await hub.authenticator.verifyNATS(options, transport: TransportFacts(secured: secured))
        guard case .admitted(let admission) = verdict else { return Self.challenge("credentials refused") }
        let admins = Set(hub.configuration.admins.compactMap(Identity.init))
        guard admins.contains(admission.identity) || admission.permissions?.admin ?? true else {
            return .text("\(admission.identity) is not an administrator", status: .forbidden)
        }
        let digest = SHA256.hash(data: Array(authorization.utf8))
        let now = ContinuousClock.now
        accepted.withLock { accepted in
            if accepted.count >= Self.acceptedAtMost { accepted = accepted.filter { now - $0.value < Self.acceptedFor } }
            if accepted.count >= Self.acceptedAtMost { accepted.removeAll() }
            accepted[digest] = now
        }
        return nil
    }

    /// `Basic base64(user:password)` or `Bearer token`, as NATS CONNECT credentials.
    static func connectOptions(_ authorization: String) -> NATSConnectOptions? {
        let parts = authorization.split(separator: " ", maxSplits: 1).map(String.init)
        guard parts.count == 2 else { return nil }
        var options = NATSConnectOptions()
        switch parts[0].lowercased() {
        case "basic":
            guard let decoded = Data(base64Encoded: parts[1].trimmingCharacters(in: .whitespaces)),
                let text = String(data: decoded, encoding: .utf8), let colon = text.firstIndex(of: ":")
            else { return nil }
            options.user = String(text[..<colon])
            options.password = String(text[text.index(after: colon)...])
        case "bearer":
            options.token = parts[1].trimmingCharacters(in: .whitespaces)
        default:
            return nil
        }
        return options
    }

    /// 401 with the challenge a browser answers with its login prompt.
    static func challenge(_ why: String) -> MonitoringResponse {
        var response = MonitoringResponse.text("\(why): the monitoring endpoints are for administrators", status: .unauthorized)
        response.headers = ["WWW-Authenticate": "Basic realm=\"relay\", charset=\"UTF-8\""]
        return response
    }
}
