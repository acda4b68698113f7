import Foundation
import RelayCore

/// Decides whether presented credentials let a session in, and as which identity.
struct Authenticator: Sendable {
    let domain: String
    let allowsGuests: Bool
    private let users: [Identity: PasswordHash]

    init(configuration: HubConfiguration) throws {
        domain = configuration.domain
        allowsGuests = configuration.guest
        var users: [Identity: PasswordHash] = [:]
        for user in configuration.users {
            guard let identity = Identity(user.identity), identity.name != nil else {
                throw HubError.invalidConfiguration("user identity '\(user.identity)' is not name@domain")
            }
            guard let hash = PasswordHash(user.password) else {
                throw HubError.invalidConfiguration(
                    "the password of '\(user.identity)' is not a hash made by 'relay passwd' (pbkdf2-sha256$ROUNDS$SALT$HASH)")
            }
            users[identity] = hash
        }
        self.users = users
    }

    /// The schemes offered to clients, in order of preference.
    var schemes: [String] {
        var schemes: [String] = []
        if !users.isEmpty { schemes.append("plain") }
        if allowsGuests { schemes.append("guest") }
        return schemes
    }

    /// Whether a client must present credentials (guest access is off).
    var requiresCredentials: Bool { !allowsGuests }

    /// What NATS CONNECT options come to.
    enum NATSVerdict: Equatable {
        /// Valid credentials of this configured user.
        case user(Identity)
        /// No credentials, and guest access is on.
        case guest
        case refused
    }

    /// Checks NATS CONNECT credentials (once: the password hash is slow on purpose). `user` is an
    /// identity (`alice@relay.local`) or a name in the hub's domain (`alice`).
    func verifyNATS(_ options: NATSConnectOptions) -> NATSVerdict {
        if let user = options.user, let password = options.password {
            let identity = Identity(user).flatMap { $0.name == nil ? nil : $0 } ?? Identity(name: user, domain: domain)
            if let hash = users[identity], hash.matches(password: Array(password.utf8)) { return .user(identity) }
        }
        return allowsGuests && options.user == nil && options.token == nil ? .guest : .refused
    }

    func verify(_ credentials: CredentialsPresented, fallbackName: String) -> Result<Identity, Reason> {
        let refused = Reason(code: ReasonCode.sessionAuthenticationFailed, description: "Invalid credentials")
        switch credentials.scheme {
        case "guest":
            guard allowsGuests else { return .failure(refused) }
            let identity = credentials.identity ?? Identity(name: "guest-\(fallbackName)", domain: domain)
            // A guest cannot take the identity of a configured user.
            if users[identity] != nil {
                return .failure(
                    Reason(
                        code: ReasonCode.sessionAuthenticationFailed,
                        description: "Identity '\(identity)' requires the plain scheme"))
            }
            return .success(identity)
        case "plain":
            guard let identity = credentials.identity, let hash = users[identity],
                let encoded = credentials.authentication["password"]?.stringValue,
                let password = Data(base64Encoded: encoded), hash.matches(password: Array(password))
            else { return .failure(refused) }
            return .success(identity)
        default:
            return .failure(refused)
        }
    }
}

/// Errors that stop the hub from starting.
public enum HubError: Error, CustomStringConvertible {
    case invalidConfiguration(String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let text): "Invalid configuration: \(text)"
        }
    }
}
