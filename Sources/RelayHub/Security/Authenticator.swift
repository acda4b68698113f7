import Foundation
import NIOPosix
import RelayCore

/// Who a connection is once its credentials are checked, and what it may do (nil: everything).
struct Admission: Sendable, Equatable {
    var identity: Identity
    var permissions: Permissions?
    /// Where the permissions come from, so a reload knows whose change.
    var source: Source = .user

    enum Source: Sendable, Equatable {
        /// A configured user (password, key, certificate).
        case user
        /// A guest, or a NATS connection without credentials.
        case guest
        /// A JWT: its claims.
        case token
    }
}

/// What the transport knows of a connection that credentials may rest on.
struct TransportFacts: Sendable, Equatable {
    /// Whether the connection runs over TLS.
    var secured = false
    /// The names of the client certificate the TLS handshake verified (subject CN, then SANs).
    var certificateNames: [String] = []
}

/// Decides whether presented credentials let a session in, as which identity, with which
/// permissions: LIME's `guest`, `plain`, `key`, `external` (JWT) and `transport` (TLS client
/// certificate) schemes, and NATS CONNECT's user/pass and `auth_token` (a key or a JWT).
///
/// Checks that cost time (the password hash is slow on purpose, JWTs are checked by an actor)
/// run off the event loops; nothing here ever logs a secret.
struct Authenticator: Sendable {
    let domain: String
    let allowsGuests: Bool
    private let accounts: [Identity: Account]
    private let identitiesByKey: [KeyDigest: Identity]
    private let guestPermissions: Permissions?
    private let roles: [String: HubConfiguration.PermissionSettings]
    private let jwt: JWTVerifier?
    private let jwtPermissions: Permissions?
    /// Whether TLS client certificates are checked against a CA, so `transport` can be offered.
    let checksClientCertificates: Bool

    private struct Account: Sendable {
        var password: PasswordHash?
        var key: KeyDigest?
        var permissions: Permissions?
    }

    init(configuration: HubConfiguration) throws {
        domain = configuration.domain
        allowsGuests = configuration.guest
        // Checked now, so that a role with a filter that cannot be read stops the hub from starting.
        for settings in configuration.roles.values { _ = try settings.permissions() }
        let roles = configuration.roles
        self.roles = roles
        var accounts: [Identity: Account] = [:]
        var identitiesByKey: [KeyDigest: Identity] = [:]
        for user in configuration.users {
            guard let identity = Identity(user.identity), identity.name != nil else {
                throw HubError.invalidConfiguration("user identity '\(user.identity)' is not name@domain")
            }
            var account = Account()
            if let text = user.password {
                guard let hash = PasswordHash(text) else {
                    throw HubError.invalidConfiguration(
                        "the password of '\(user.identity)' is not a hash made by 'relay passwd' (pbkdf2-sha256$ROUNDS$SALT$HASH)")
                }
                account.password = hash
            }
            if let text = user.key {
                guard let digest = KeyDigest(text) else {
                    throw HubError.invalidConfiguration(
                        "the key of '\(user.identity)' is not a digest made by 'relay passwd --key' (sha256$HEX)")
                }
                guard identitiesByKey[digest] == nil else {
                    throw HubError.invalidConfiguration("the key of '\(user.identity)' is another user's key too")
                }
                account.key = digest
                identitiesByKey[digest] = identity
            }
            account.permissions = try Self.permissions(user.permissions, roles: user.roles ?? [], from: roles) {
                HubError.invalidConfiguration("user '\(user.identity)' has an unknown role '\($0)'")
            }
            accounts[identity] = account
        }
        self.accounts = accounts
        self.identitiesByKey = identitiesByKey
        guestPermissions = try configuration.guestPermissions?.permissions()
        jwt = try configuration.jwt.map(JWTVerifier.init(settings:))
        jwtPermissions = try configuration.jwt?.permissions?.permissions()
        checksClientCertificates = configuration.tls?.ca != nil
    }

    /// A user's own permissions combined with its roles'; nil when it has neither.
    private static func permissions(
        _ own: HubConfiguration.PermissionSettings?, roles names: [String], from roles: [String: HubConfiguration.PermissionSettings],
        unknown: (String) -> HubError
    ) throws -> Permissions? {
        var grants = own.map { [$0] } ?? []
        for name in names {
            guard let role = roles[name] else { throw unknown(name) }
            grants.append(role)
        }
        return grants.isEmpty ? nil : try HubConfiguration.PermissionSettings.combining(grants).permissions()
    }

    /// The schemes offered to clients, in order of preference (`transport` is added per
    /// connection, when it presented a verified certificate).
    var schemes: [String] {
        var schemes: [String] = []
        if accounts.values.contains(where: { $0.password != nil }) { schemes.append("plain") }
        if !identitiesByKey.isEmpty { schemes.append("key") }
        if jwt != nil { schemes.append("external") }
        if allowsGuests { schemes.append("guest") }
        return schemes
    }

    /// Whether a client must present credentials (guest access is off).
    var requiresCredentials: Bool { !allowsGuests }

    private static let refused = Reason(code: ReasonCode.sessionAuthenticationFailed, description: "Invalid credentials")

    // MARK: - LIME

    /// The verdict on LIME credentials that need no slow check (`guest`, `transport`), or nil.
    func immediateVerdict(_ credentials: CredentialsPresented, fallbackName: String, transport: TransportFacts) -> Result<
        Admission, Reason
    >? {
        switch credentials.scheme {
        case "guest":
            guard allowsGuests else { return .failure(Self.refused) }
            let identity = credentials.identity ?? Identity(name: "guest-\(fallbackName)", domain: domain)
            // A guest cannot take the identity of a configured user.
            if accounts[identity] != nil {
                return .failure(
                    Reason(
                        code: ReasonCode.sessionAuthenticationFailed,
                        description: "Identity '\(identity)' requires credentials"))
            }
            return .success(Admission(identity: identity, permissions: guestPermissions, source: .guest))
        case "transport":
            guard let identity = certificateIdentity(transport, asking: credentials.identity) else { return .failure(Self.refused) }
            return .success(admission(identity))
        default:
            return nil
        }
    }

    /// Checks a LIME session's credentials. `fallbackName` names a guest that asks for no identity.
    func verify(_ credentials: CredentialsPresented, fallbackName: String, transport: TransportFacts) async -> Result<Admission, Reason> {
        if let verdict = immediateVerdict(credentials, fallbackName: fallbackName, transport: transport) { return verdict }
        switch credentials.scheme {
        case "plain":
            guard let identity = credentials.identity, let hash = accounts[identity]?.password,
                let encoded = credentials.authentication["password"]?.stringValue,
                let password = Data(base64Encoded: encoded), await Self.matches(hash, Array(password))
            else { return .failure(Self.refused) }
            return .success(admission(identity))
        case "key":
            guard let encoded = credentials.authentication["key"]?.stringValue, let key = Data(base64Encoded: encoded),
                let identity = identitiesByKey[KeyDigest(key: Array(key))], credentials.identity.map({ $0 == identity }) ?? true
            else { return .failure(Self.refused) }
            return .success(admission(identity))
        case "external":
            guard let encoded = credentials.authentication["token"]?.stringValue else { return .failure(Self.refused) }
            // The specification sends the token base64-encoded; a token sent as it is is read too.
            let token =
                Data(base64Encoded: encoded).map { String(decoding: $0, as: UTF8.self) }.flatMap {
                    JWTVerifier.looksLikeJWT($0) ? $0 : nil
                } ?? encoded
            return await verifyToken(token, asking: credentials.identity)
        default:
            return .failure(Self.refused)
        }
    }

    /// A configured user's admission.
    private func admission(_ identity: Identity) -> Admission {
        Admission(identity: identity, permissions: accounts[identity]?.permissions)
    }

    /// What a configured user may do now (nil: everything, or no such user any more).
    func userPermissions(_ identity: Identity) -> Permissions? {
        accounts[identity]?.permissions
    }

    /// What guests may do.
    var guestsPermissions: Permissions? { guestPermissions }

    /// The identity a verified client certificate names, if it is a configured user's (and the one
    /// the client asked for, if it asked): the subject's CN or a SAN is the identity, or its name
    /// in the hub's domain.
    private func certificateIdentity(_ transport: TransportFacts, asking requested: Identity?) -> Identity? {
        for name in transport.certificateNames {
            let identity = Identity(name).flatMap { $0.name == nil ? nil : $0 } ?? Identity(name: name, domain: domain)
            guard accounts[identity] != nil else { continue }
            if let requested, requested != identity { continue }
            return identity
        }
        return nil
    }

    private func verifyToken(_ token: String, asking requested: Identity?) async -> Result<Admission, Reason> {
        guard let jwt else { return .failure(Self.refused) }
        switch await jwt.verify(token) {
        case .failure(let reason):
            return .failure(reason)
        case .success(let claims):
            let identity =
                Identity(claims.identity).flatMap { $0.name == nil ? nil : $0 } ?? Identity(name: claims.identity, domain: domain)
            if let requested, requested != identity {
                return .failure(
                    Reason(code: ReasonCode.sessionAuthenticationFailed, description: "The token is not for identity '\(requested)'"))
            }
            do {
                let granted = try Self.permissions(claims.permissions, roles: claims.roles, from: roles) {
                    HubError.invalidConfiguration("unknown role '\($0)'")
                }
                return .success(Admission(identity: identity, permissions: granted ?? jwtPermissions, source: .token))
            } catch {
                return .failure(Reason(code: ReasonCode.sessionAuthenticationFailed, description: "Invalid token: \(error)"))
            }
        }
    }

    /// Compares a password with its hash on NIO's thread pool: the hash takes tens of
    /// milliseconds on purpose, which must not stall an event loop's other connections.
    private static func matches(_ hash: PasswordHash, _ password: [UInt8]) async -> Bool {
        (try? await NIOThreadPool.singleton.runIfActive { hash.matches(password: password) }) ?? false
    }

    // MARK: - NATS

    /// What NATS CONNECT options come to.
    enum NATSVerdict: Equatable {
        /// A configured user, a key's or a token's identity.
        case admitted(Admission)
        /// No credentials, and guest access is on: the connection's anonymous node, with the
        /// guests' permissions.
        case anonymous(Permissions?)
        case refused(Reason)
    }

    /// Checks NATS CONNECT credentials: `user`/`pass` (an identity, or a name in the hub's
    /// domain), `auth_token` (a user's key, or a JWT), or none (guests, or a TLS client
    /// certificate naming a configured user, as nats-server's `verify_and_map`).
    func verifyNATS(_ options: NATSConnectOptions, transport: TransportFacts) async -> NATSVerdict {
        if let verdict = immediateNATSVerdict(options, transport: transport) { return verdict }
        if let user = options.user {
            let identity = Identity(user).flatMap { $0.name == nil ? nil : $0 } ?? Identity(name: user, domain: domain)
            guard let password = options.password, let hash = accounts[identity]?.password, await Self.matches(hash, Array(password.utf8))
            else { return .refused(Self.refused) }
            return .admitted(admission(identity))
        }
        if let token = options.token {
            if jwt != nil, JWTVerifier.looksLikeJWT(token) {
                switch await verifyToken(token, asking: nil) {
                case .success(let admission): return .admitted(admission)
                case .failure(let reason): return .refused(reason)
                }
            }
            guard let identity = identitiesByKey[KeyDigest(key: Array(token.utf8))] else { return .refused(Self.refused) }
            return .admitted(admission(identity))
        }
        return .refused(Self.refused)
    }

    /// The verdict on a CONNECT without credentials (a guest, or a client certificate), which
    /// needs no slow check; nil when it carries credentials.
    func immediateNATSVerdict(_ options: NATSConnectOptions, transport: TransportFacts) -> NATSVerdict? {
        guard options.user == nil, options.token == nil else { return nil }
        if let identity = certificateIdentity(transport, asking: nil) { return .admitted(admission(identity)) }
        return allowsGuests ? .anonymous(guestPermissions) : .refused(Self.refused)
    }
}

/// Errors that stop the hub from starting.
public enum HubError: Error, CustomStringConvertible {
    case invalidConfiguration(String)
    /// A listener's address cannot be bound (taken, not this machine's, not allowed).
    case cannotListen(String)
    /// The data directory cannot be opened or written.
    case unusableDataDirectory(String)
    /// None of the cluster's servers answered (`--cluster`).
    case cannotJoinCluster(String)

    public var description: String {
        switch self {
        case .invalidConfiguration(let text): "Invalid configuration: \(text)"
        case .cannotListen(let text), .unusableDataDirectory(let text), .cannotJoinCluster(let text): text
        }
    }
}
