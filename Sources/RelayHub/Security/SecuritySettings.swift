import Foundation
import RelayCore

// The security parts of the configuration file: TLS, JWTs, permissions. docs/SECURITY.md
// describes each key with examples.

extension HubConfiguration {
    /// TLS on every listener: `wss://` on the WebSocket port, `encryption: tls` negotiated in LIME
    /// sessions over TCP, and NATS's TLS upgrade after INFO.
    public struct TLSSettings: Sendable, Codable, Equatable {
        /// The certificate chain (PEM file), leaf first.
        public var cert: String
        /// The private key (PEM file).
        public var key: String
        /// Certificate authorities (PEM file) client certificates are checked against.
        public var ca: String?
        /// Whether every client must present a certificate the CA signed (with `ca`; without
        /// `verify`, a client may present one, and it is checked if it does).
        public var verify: Bool = false
        /// Whether plaintext clients are refused (`failed`, or NATS's `Secure Connection - TLS Required`).
        public var required: Bool = false
        /// Seconds a client has to finish the TLS handshake.
        public var handshakeTimeoutSeconds: Double = 5

        public init(cert: String, key: String, ca: String? = nil, verify: Bool = false, required: Bool = false) {
            self.cert = cert
            self.key = key
            self.ca = ca
            self.verify = verify
            self.required = required
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            cert = try container.decode(String.self, forKey: .cert)
            key = try container.decode(String.self, forKey: .key)
            ca = try container.decodeIfPresent(String.self, forKey: .ca)
            verify = try container.decodeIfPresent(Bool.self, forKey: .verify) ?? false
            required = try container.decodeIfPresent(Bool.self, forKey: .required) ?? false
            handshakeTimeoutSeconds = try container.decodeIfPresent(Double.self, forKey: .handshakeTimeoutSeconds) ?? 5
        }
    }

    /// Allow and deny lists of one operation: `["a.>", "b"]` (allow only these) or
    /// `{"allow": [...], "deny": [...]}`, as nats-server writes them.
    public struct RuleSettings: Sendable, Codable, Equatable {
        public var allow: [String]?
        public var deny: [String]

        public init(allow: [String]? = nil, deny: [String] = []) {
            self.allow = allow
            self.deny = deny
        }

        enum CodingKeys: String, CodingKey { case allow, deny }

        public init(from decoder: any Decoder) throws {
            if let list = try? decoder.singleValueContainer().decode([String].self) {
                self.init(allow: list)
                return
            }
            let container = try decoder.container(keyedBy: CodingKeys.self)
            self.init(
                allow: try container.decodeIfPresent([String].self, forKey: .allow),
                deny: try container.decodeIfPresent([String].self, forKey: .deny) ?? [])
        }

        var subjectRule: SubjectRule {
            get throws { try SubjectRule(allow: allow, deny: deny) }
        }

        var nameRule: NameRule { NameRule(allow: allow, deny: deny) }

        /// Call patterns name `service/method`; a service alone stands for all its methods.
        var callRule: NameRule {
            func method(_ pattern: String) -> String { pattern.contains("/") ? pattern : pattern + "/*" }
            return NameRule(allow: allow?.map(method), deny: deny.map(method))
        }
    }

    /// What an identity (or a role, or a JWT's claims) may do. An operation left out is allowed
    /// entirely; `admin` is off unless set.
    public struct PermissionSettings: Sendable, Codable, Equatable {
        public var publish: RuleSettings?
        public var subscribe: RuleSettings?
        public var serve: RuleSettings?
        public var call: RuleSettings?
        public var send: RuleSettings?
        public var admin: Bool?

        public init(
            publish: RuleSettings? = nil, subscribe: RuleSettings? = nil, serve: RuleSettings? = nil, call: RuleSettings? = nil,
            send: RuleSettings? = nil, admin: Bool? = nil
        ) {
            self.publish = publish
            self.subscribe = subscribe
            self.serve = serve
            self.call = call
            self.send = send
            self.admin = admin
        }

        /// Several grants together (a user's own and its roles'): for each operation, what any
        /// grant that speaks of it allows, less what any denies; an operation no grant speaks of
        /// stays entirely allowed, and one grant's silence widens nothing.
        public static func combining(_ grants: [PermissionSettings]) -> PermissionSettings {
            func combine(_ rules: [RuleSettings]) -> RuleSettings? {
                guard !rules.isEmpty else { return nil }
                // A rule with only a deny list allows the rest: so does the combination.
                let allow: [String]? = rules.contains { $0.allow == nil } ? nil : rules.flatMap { $0.allow ?? [] }
                return RuleSettings(allow: allow, deny: rules.flatMap(\.deny))
            }
            return PermissionSettings(
                publish: combine(grants.compactMap(\.publish)), subscribe: combine(grants.compactMap(\.subscribe)),
                serve: combine(grants.compactMap(\.serve)), call: combine(grants.compactMap(\.call)),
                send: combine(grants.compactMap(\.send)), admin: grants.contains { $0.admin == true } ? true : nil)
        }

        /// The rules the core checks; throws on a subject filter that cannot be read.
        public func permissions() throws -> Permissions {
            do {
                return Permissions(
                    publish: try publish?.subjectRule ?? .all, subscribe: try subscribe?.subjectRule ?? .all,
                    serve: serve?.nameRule ?? .all, call: call?.callRule ?? .all, send: send?.nameRule ?? .all, admin: admin ?? false)
            } catch let error as PermissionError {
                throw HubError.invalidConfiguration("permissions: \(error.description)")
            }
        }
    }

    /// JWTs accepted by the LIME `external` scheme and as NATS `auth_token`.
    public struct JWTSettings: Sendable, Codable, Equatable {
        /// The `iss` a token must carry, if set.
        public var issuer: String?
        /// An `aud` a token must carry, if set.
        public var audience: String?
        /// The keys tokens may be signed with.
        public var keys: [KeySettings]
        /// The claim naming the identity (`name@domain`, or a name in the hub's domain).
        public var identityClaim: String = "sub"
        /// What a token that carries no `relay` claim may do; nil: everything.
        public var permissions: PermissionSettings?

        public struct KeySettings: Sendable, Codable, Equatable {
            /// The key id a token's header names (`kid`), if the key has one.
            public var kid: String?
            /// HS256, HS384, HS512, RS256, RS384, RS512 or ES256.
            public var algorithm: String
            /// The shared secret of an HS key, as text.
            public var secret: String?
            /// The public key of an RS or ES key: PEM text, or the path of a PEM file.
            public var publicKey: String?

            public init(kid: String? = nil, algorithm: String, secret: String? = nil, publicKey: String? = nil) {
                self.kid = kid
                self.algorithm = algorithm
                self.secret = secret
                self.publicKey = publicKey
            }
        }

        public init(issuer: String? = nil, audience: String? = nil, keys: [KeySettings], permissions: PermissionSettings? = nil) {
            self.issuer = issuer
            self.audience = audience
            self.keys = keys
            self.permissions = permissions
        }

        public init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            issuer = try container.decodeIfPresent(String.self, forKey: .issuer)
            audience = try container.decodeIfPresent(String.self, forKey: .audience)
            keys = try container.decode([KeySettings].self, forKey: .keys)
            identityClaim = try container.decodeIfPresent(String.self, forKey: .identityClaim) ?? "sub"
            permissions = try container.decodeIfPresent(PermissionSettings.self, forKey: .permissions)
        }
    }
}
