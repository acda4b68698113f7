import Foundation
import JWTKit
import RelayCore

/// Checks the JWTs of the LIME `external` scheme and of NATS `auth_token`, with jwt-kit: the
/// signature by one of the configured keys, `exp` (required), `nbf`, and the configured `iss` and
/// `aud`. The identity comes from a claim (`sub` by default), permissions from the `relay` claim.
struct JWTVerifier: Sendable {
    /// jwt-kit's key collection is an actor that keys are added to asynchronously: the keys are
    /// read (and their errors reported) when the hub starts, and added once, before the first check.
    private let keys: Task<JWTKeyCollection, Never>
    private let settings: HubConfiguration.JWTSettings

    /// What a valid token says.
    struct Verified: Sendable {
        var identity: String
        var permissions: HubConfiguration.PermissionSettings?
        var roles: [String]
    }

    private enum Key: Sendable {
        case hmac(HMACKey, DigestAlgorithm)
        case rsa(JWTKit.Insecure.RSA.PublicKey, DigestAlgorithm)
        case es256(ES256PublicKey)
    }

    init(settings: HubConfiguration.JWTSettings) throws {
        self.settings = settings
        guard !settings.keys.isEmpty else { throw HubError.invalidConfiguration("jwt: no keys") }
        var parsed: [(Key, JWKIdentifier?)] = []
        for key in settings.keys {
            let algorithm = key.algorithm.uppercased()
            let digest: DigestAlgorithm = algorithm.hasSuffix("384") ? .sha384 : algorithm.hasSuffix("512") ? .sha512 : .sha256
            do {
                switch algorithm {
                case "HS256", "HS384", "HS512":
                    guard let secret = key.secret, !secret.isEmpty else {
                        throw HubError.invalidConfiguration("jwt: key \(key.kid ?? algorithm) needs a 'secret'")
                    }
                    // As long as the hash at least (RFC 7518 §3.2); jwt-kit would trap on a shorter one.
                    let minimum = algorithm == "HS256" ? 32 : algorithm == "HS384" ? 48 : 64
                    guard secret.utf8.count >= minimum else {
                        throw HubError.invalidConfiguration(
                            "jwt: the secret of key \(key.kid ?? algorithm) must be at least \(minimum) bytes for \(algorithm)")
                    }
                    parsed.append((.hmac(HMACKey(from: secret), digest), key.kid.map(JWKIdentifier.init(string:))))
                case "RS256", "RS384", "RS512":
                    parsed.append(
                        (.rsa(try JWTKit.Insecure.RSA.PublicKey(pem: try Self.pem(key)), digest), key.kid.map(JWKIdentifier.init(string:))))
                case "ES256":
                    parsed.append((.es256(try ES256PublicKey(pem: try Self.pem(key))), key.kid.map(JWKIdentifier.init(string:))))
                default:
                    throw HubError.invalidConfiguration("jwt: algorithm '\(key.algorithm)' is not HS256/384/512, RS256/384/512 or ES256")
                }
            } catch let error as HubError {
                throw error
            } catch {
                throw HubError.invalidConfiguration("jwt: key \(key.kid ?? algorithm): \(error)")
            }
        }
        let keys = parsed
        self.keys = Task {
            let collection = JWTKeyCollection()
            for (key, kid) in keys {
                switch key {
                case .hmac(let secret, let digest): await collection.add(hmac: secret, digestAlgorithm: digest, kid: kid)
                case .rsa(let publicKey, let digest): await collection.add(rsa: publicKey, digestAlgorithm: digest, kid: kid)
                case .es256(let publicKey): await collection.add(ecdsa: publicKey, kid: kid)
                }
            }
            return collection
        }
    }

    /// A public key given as PEM text or as the path of a PEM file.
    private static func pem(_ key: HubConfiguration.JWTSettings.KeySettings) throws -> String {
        guard let text = key.publicKey else {
            throw HubError.invalidConfiguration("jwt: key \(key.kid ?? key.algorithm) needs a 'publicKey'")
        }
        if text.contains("-----BEGIN") { return text }
        return try String(contentsOfFile: text, encoding: .utf8)
    }

    /// Whether `token` looks like a JWT at all (three base64url parts), so NATS tokens that are
    /// keys are not sent through JWT parsing.
    static func looksLikeJWT(_ token: String) -> Bool {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 3 && parts.allSatisfy { !$0.isEmpty }
            && token.utf8.allSatisfy {
                $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_") || (48...57).contains($0)
                    || (65...90).contains($0) || (97...122).contains($0)
            }
    }

    /// The token's claims once checked, or why it is refused (never the token itself).
    func verify(_ token: String) async -> Result<Verified, Reason> {
        func refused(_ why: String) -> Result<Verified, Reason> {
            .failure(Reason(code: ReasonCode.sessionAuthenticationFailed, description: "Invalid token: \(why)"))
        }
        let claims: RelayClaims
        do {
            // A token without `kid` is tried against every key (each checks its own algorithm).
            claims = try await keys.value.verify(token, as: RelayClaims.self, iteratingKeys: true)
        } catch let error as JWTError {
            return refused(error.reason ?? "\(error.errorType)")
        } catch {
            return refused("\(error)")
        }
        if let issuer = settings.issuer, claims.strings["iss"] != issuer { return refused("issuer") }
        if let audience = settings.audience, !claims.audiences.contains(audience) { return refused("audience") }
        guard let identity = claims.strings[settings.identityClaim], !identity.isEmpty else {
            return refused("no '\(settings.identityClaim)' claim")
        }
        return .success(Verified(identity: identity, permissions: claims.relay?.permissions, roles: claims.relay?.roles ?? []))
    }
}

/// The claims Relay reads: string claims by name (the identity claim is configurable), `aud` as
/// one string or several, `exp` (required) and `nbf`, and `relay` with permissions and roles.
struct RelayClaims: JWTPayload {
    struct RelayClaim: Codable, Sendable {
        var permissions: HubConfiguration.PermissionSettings?
        var roles: [String]?
    }

    var strings: [String: String]
    var audiences: [String]
    var expiration: ExpirationClaim
    var notBefore: NotBeforeClaim?
    var relay: RelayClaim?

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        var strings: [String: String] = [:]
        for key in container.allKeys {
            if let text = try? container.decode(String.self, forKey: key) { strings[key.stringValue] = text }
        }
        self.strings = strings
        if let one = try? container.decode(String.self, forKey: Key(stringValue: "aud")) {
            audiences = [one]
        } else {
            audiences = (try? container.decode([String].self, forKey: Key(stringValue: "aud"))) ?? []
        }
        expiration = try container.decode(ExpirationClaim.self, forKey: Key(stringValue: "exp"))
        notBefore = try container.decodeIfPresent(NotBeforeClaim.self, forKey: Key(stringValue: "nbf"))
        relay = try container.decodeIfPresent(RelayClaim.self, forKey: Key(stringValue: "relay"))
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Key.self)
        for (name, value) in strings { try container.encode(value, forKey: Key(stringValue: name)) }
        try container.encode(expiration, forKey: Key(stringValue: "exp"))
        try container.encodeIfPresent(notBefore, forKey: Key(stringValue: "nbf"))
        try container.encodeIfPresent(relay, forKey: Key(stringValue: "relay"))
    }

    func verify(using algorithm: some JWTAlgorithm) async throws {
        try expiration.verifyNotExpired()
        try notBefore?.verifyNotBefore()
    }
}
