import CryptoExtras
import Foundation
import JWTKit
import RelayClient
import RelayCore
import RelayHub
import Testing

/// The claims of the tokens these tests sign.
struct TestClaims: JWTPayload {
    var sub: SubjectClaim
    var iss: IssuerClaim?
    var aud: AudienceClaim?
    var exp: ExpirationClaim
    var relay: Relay?

    struct Relay: Codable, Sendable {
        var permissions: HubConfiguration.PermissionSettings?
        var roles: [String]?
    }

    init(
        sub: String, iss: String? = "https://auth.test", aud: String? = "relay", expiresIn: TimeInterval = 600, relay: Relay? = nil
    ) {
        self.sub = SubjectClaim(value: sub)
        self.iss = iss.map { IssuerClaim(value: $0) }
        self.aud = aud.map { AudienceClaim(value: [$0]) }
        self.exp = ExpirationClaim(value: Date(timeIntervalSinceNow: expiresIn))
        self.relay = relay
    }

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Signs tokens with an HS256 secret, an RS256 and an ES256 key, and says how the hub is told of them.
struct TokenIssuer {
    // Each issuer its own: a stranger signs with another secret.
    let secret = UUID().uuidString + UUID().uuidString
    let rsa: JWTKit.Insecure.RSA.PrivateKey
    let ecdsa = ES256PrivateKey()
    let keys = JWTKeyCollection()

    init() async throws {
        rsa = try JWTKit.Insecure.RSA.PrivateKey(backing: _RSA.Signing.PrivateKey(keySize: .bits2048))
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: "hs")
        await keys.add(rsa: rsa, digestAlgorithm: .sha256, kid: "rs")
        await keys.add(ecdsa: ecdsa, kid: "es")
    }

    var settings: HubConfiguration.JWTSettings {
        HubConfiguration.JWTSettings(
            issuer: "https://auth.test", audience: "relay",
            keys: [
                .init(kid: "hs", algorithm: "HS256", secret: secret),
                .init(kid: "rs", algorithm: "RS256", publicKey: rsa.publicKey.pemRepresentation),
                .init(kid: "es", algorithm: "ES256", publicKey: ecdsa.publicKey.pemRepresentation),
            ])
    }

    func token(_ claims: TestClaims, kid: String = "hs") async throws -> String {
        try await keys.sign(claims, kid: JWKIdentifier(string: kid))
    }
}

@Suite(.timeLimit(.minutes(1))) struct AuthenticationSchemeTests {
    static let passwordHash = try! PasswordHash.make(password: "s3cret", rounds: 1000).description
    static let key = KeyDigest.makeKey()

    private func users(guest: Bool = false) -> (inout HubConfiguration) -> Void {
        { configuration in
            configuration.guest = guest
            configuration.limits.authFailureDelaySeconds = 0
            configuration.users = [
                .init(identity: "alice@relay.local", password: Self.passwordHash),
                .init(identity: "svc@relay.local", key: Self.key.digest.description),
            ]
        }
    }

    private func refusal(_ connect: () async throws -> LIMEClient) async -> Reason? {
        do {
            _ = try await connect()
            return nil
        } catch LIMEClientError.sessionFailed(let reason) {
            return reason
        } catch {
            return Reason(code: -1, description: "\(error)")
        }
    }

    @Test(arguments: Transport.allCases)
    func theKeySchemeTakesTheIdentitysKeyOnly(_ transport: Transport) async throws {
        try await withHub(users()) { hub in
            let svc = try await hub.connect(transport, as: "svc@relay.local", authentication: .key(Self.key.key))
            #expect(svc.localNode.identity == Identity("svc@relay.local"))
            let wrong = await refusal { try await hub.connect(transport, as: "svc@relay.local", authentication: .key("not-the-key")) }
            #expect(wrong?.code == ReasonCode.sessionAuthenticationFailed)
            // A key names its own identity: it does not open another's.
            let other = await refusal { try await hub.connect(transport, as: "alice@relay.local", authentication: .key(Self.key.key)) }
            #expect(other?.code == ReasonCode.sessionAuthenticationFailed)
        }
    }

    @Test func natsTakesUserAndPasswordOrAKeyAsToken() async throws {
        try await withHub(users()) { hub in
            var options = NATSClient.Options(servers: ["nats://127.0.0.1:\(hub.natsPort)"])
            options.reconnect = .never
            options.user = "alice"
            options.password = "s3cret"
            let alice = try await NATSClient.connect(options: options)
            #expect(alice.serverInfo["auth_required"] == true)
            await alice.close()
            options.user = nil
            options.password = nil
            options.token = Self.key.key
            let svc = try await NATSClient.connect(options: options)
            await svc.close()
            for (user, password, token) in [("alice", "wrong", nil), (nil, nil, "not-a-key"), (nil, nil, nil)]
                as [(String?, String?, String?)]
            {
                options.user = user
                options.password = password
                options.token = token
                do {
                    _ = try await NATSClient.connect(options: options)
                    Issue.record("connected with \(user ?? "-")/\(password ?? "-")/\(token ?? "-")")
                } catch let error as NATSClientError {
                    #expect(error.description.contains("Authorization Violation"), "\(error)")
                }
            }
        }
    }

    /// Word for word, as nats-server: `-ERR 'Authorization Violation'`, then the connection closes.
    @Test func aRefusedNATSConnectionIsToldAndClosed() async throws {
        try await withHub(users()) { hub in
            let nats = try await RawNATSConnection.connect(port: hub.natsPort)
            #expect(try await firstElement(nats.lines).contains(#""auth_required":true"#))
            try await nats.send("CONNECT {\"user\":\"alice\",\"pass\":\"wrong\"}\r\nPING\r\n")
            #expect(try await firstElement(nats.lines) == "-ERR 'Authorization Violation'")
            try await nats.channel.closeFuture.get()
        }
    }

    @Test(arguments: ["hs", "rs", "es"])
    func jwtsAreCheckedAndNameTheIdentity(_ kid: String) async throws {
        let issuer = try await TokenIssuer()
        try await withHub({ configuration in
            self.users()(&configuration)
            configuration.jwt = issuer.settings
        }) { hub in
            let token = try await issuer.token(TestClaims(sub: "carol@relay.local"), kid: kid)
            var options = LIMEClient.Options(identity: nil, authentication: .external(token: token))
            let carol = try await LIMEClient.connect(to: hub.tcp, options: options)
            #expect(carol.localNode.identity == Identity("carol@relay.local"))
            // The same token as NATS `auth_token`.
            var nats = NATSClient.Options(servers: ["nats://127.0.0.1:\(hub.natsPort)"])
            nats.token = token
            nats.reconnect = .never
            await (try await NATSClient.connect(options: nats)).close()
            // Asking for another identity than the token's is refused.
            options.identity = Identity("alice@relay.local")
            let other = await refusal { try await LIMEClient.connect(to: hub.ws, options: options) }
            #expect(other?.description.contains("not for identity") == true)
        }
    }

    /// A token whose header names no key is checked against each configured key.
    @Test func aTokenWithoutAKeyIDIsCheckedAgainstEveryKey() async throws {
        let issuer = try await TokenIssuer()
        try await withHub({ configuration in
            self.users()(&configuration)
            configuration.jwt = issuer.settings
        }) { hub in
            let signer = JWTKeyCollection()
            await signer.add(ecdsa: issuer.ecdsa)
            let token = try await signer.sign(TestClaims(sub: "dora@relay.local"))
            let dora = try await LIMEClient.connect(to: hub.tcp, options: .init(identity: nil, authentication: .external(token: token)))
            #expect(dora.localNode.identity == Identity("dora@relay.local"))
        }
    }

    @Test func badTokensAreRefused() async throws {
        let issuer = try await TokenIssuer()
        let stranger = try await TokenIssuer()
        try await withHub({ configuration in
            self.users()(&configuration)
            configuration.jwt = issuer.settings
        }) { hub in
            let cases: [(String, String)] = [
                ("expired", try await issuer.token(TestClaims(sub: "carol", expiresIn: -60))),
                ("wrong issuer", try await issuer.token(TestClaims(sub: "carol", iss: "https://elsewhere"))),
                ("wrong audience", try await issuer.token(TestClaims(sub: "carol", aud: "other"))),
                ("signed by another key", try await stranger.token(TestClaims(sub: "carol"))),
                ("not a token", "eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"),
            ]
            for (what, token) in cases {
                let reason = await refusal {
                    try await LIMEClient.connect(to: hub.tcp, options: .init(identity: nil, authentication: .external(token: token)))
                }
                #expect(reason?.code == ReasonCode.sessionAuthenticationFailed, "\(what): \(reason?.description ?? "accepted")")
                var nats = NATSClient.Options(servers: ["nats://127.0.0.1:\(hub.natsPort)"])
                nats.token = token
                nats.reconnect = .never
                await #expect(throws: NATSClientError.self, "\(what)") { _ = try await NATSClient.connect(options: nats) }
            }
        }
    }

    /// The token's `relay` claim carries the permissions the core enforces.
    @Test func aTokensPermissionsAreEnforced() async throws {
        let issuer = try await TokenIssuer()
        try await withHub({ configuration in
            self.users()(&configuration)
            configuration.jwt = issuer.settings
        }) { hub in
            let claims = TestClaims(
                sub: "reader@relay.local", relay: .init(permissions: .init(publish: .init(allow: ["news.>"]), admin: false)))
            let reader = try await LIMEClient.connect(
                to: hub.ws, options: .init(identity: nil, authentication: .external(token: try await issuer.token(claims))))
            let allowed = try await reader.request(LIMECommand(method: .set, uri: "/topics/news.today", resource: "x"))
            #expect(allowed.status == .success)
            let refused = try await reader.request(LIMECommand(method: .set, uri: "/topics/billing.x", resource: "x"))
            #expect(refused.reason?.code == RelayReasonCode.publishNotPermitted)
        }
    }

    /// `transport`: the TLS client certificate's name is the identity, when it is a configured user's.
    @Test func theTransportSchemeTakesTheClientCertificatesIdentity() async throws {
        try await withTLSHub(clientCA: true, users()) { hub, certificates in
            var options = LIMEClient.Options(identity: nil, authentication: .transport)
            options.tls = certificates.trust
            let alice = try certificates.client("alice", email: "alice@relay.local")
            options.tls?.certificateFile = alice.certificate
            options.tls?.keyFile = alice.key
            let client = try await LIMEClient.connect(to: hub.wss, options: options)
            #expect(client.localNode.identity == Identity("alice@relay.local"))
            // Over TCP, after the negotiated upgrade, the same.
            let overTCP = try await LIMEClient.connect(to: hub.tcp, options: options)
            #expect(overTCP.localNode.identity == Identity("alice@relay.local"))
            // Without a certificate the scheme is not offered.
            options.tls = certificates.trust
            let none = await refusal { try await LIMEClient.connect(to: hub.wss, options: options) }
            #expect(none?.code == ReasonCode.sessionAuthenticationFailed)
            // A certificate that names nobody configured opens nothing.
            let mallory = try certificates.client("mallory@relay.local")
            options.tls?.certificateFile = mallory.certificate
            options.tls?.keyFile = mallory.key
            let stranger = await refusal { try await LIMEClient.connect(to: hub.wss, options: options) }
            #expect(stranger?.code == ReasonCode.sessionAuthenticationFailed)
        }
    }

    /// nats-server's `verify_and_map`: a verified client certificate naming a configured user
    /// admits a NATS connection that gives no credentials.
    @Test func aNATSClientCertificateNamingAUserAdmitsItsConnection() async throws {
        try await withTLSHub(required: true, clientCA: true, users(guest: false)) { hub, certificates in
            var options = NATSClient.Options(servers: ["tls://127.0.0.1:\(hub.natsPort)"])
            options.reconnect = .never
            options.tls = certificates.trust
            await #expect(throws: NATSClientError.self) { _ = try await NATSClient.connect(options: options) }
            let alice = try certificates.client("alice@relay.local")
            options.tls?.certificateFile = alice.certificate
            options.tls?.keyFile = alice.key
            let client = try await NATSClient.connect(options: options)
            await client.close()
            let mallory = try certificates.client("mallory@relay.local")
            options.tls?.certificateFile = mallory.certificate
            options.tls?.keyFile = mallory.key
            await #expect(throws: NATSClientError.self) { _ = try await NATSClient.connect(options: options) }
        }
    }

    /// A secret shorter than the hash is refused when the hub starts, with a clear line.
    @Test func aShortHMACSecretIsAConfigurationError() {
        var configuration = HubConfiguration()
        configuration.jwt = .init(keys: [.init(algorithm: "HS256", secret: "short")])
        #expect(throws: HubError.self) { try HubServer(configuration: configuration) }
    }

    /// A made key can follow `--key` on a command line: it never begins with `-` (one draw in 64
    /// would), and it is still 43 base64url characters whose digest is the one printed.
    @Test func aMadeKeyIsSafeOnACommandLine() {
        let alphabet = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        for _ in 0..<2_000 {
            let made = KeyDigest.makeKey()
            #expect(!made.key.hasPrefix("-"))
            #expect(made.key.count == 43 && made.key.allSatisfy(alphabet.contains))
            #expect(made.digest == KeyDigest(key: Array(made.key.utf8)))
        }
    }

    @Test func guestAccessCanBeSwitchedOff() async throws {
        try await withHub(users(guest: false)) { hub in
            let guest = await refusal { try await hub.connect(.ws, as: "visitor@relay.local") }
            #expect(guest?.code == ReasonCode.sessionAuthenticationFailed)
            let nats = try await RawNATSConnection.connect(port: hub.natsPort)
            _ = try await firstElement(nats.lines)
            try await nats.send("CONNECT {}\r\n")
            #expect(try await firstElement(nats.lines) == "-ERR 'Authorization Violation'")
        }
    }
}

@Suite(.timeLimit(.minutes(1))) struct AddressLimitTests {
    @Test func connectionsPerAddressAreCappedAndCounted() async throws {
        try await withHub({ configuration in
            configuration.limits.maxConnectionsPerAddress = 2
            configuration.limits.addressLimitsOnLoopback = true
        }) { hub in
            let first = try await hub.connect(.tcp, as: "a@relay.local")
            _ = try await hub.connect(.ws, as: "b@relay.local")
            do {
                _ = try await hub.connect(.tcp, as: "c@relay.local")
                Issue.record("a third connection was accepted")
            } catch LIMEClientError.sessionFailed(let reason) {
                #expect(reason.description.contains("Too many connections"))
            }
            let nats = try await RawNATSConnection.connect(port: hub.natsPort)
            #expect(try await firstElement(nats.lines) == "-ERR 'Maximum Connections Exceeded'")
            #expect(hub.server.hub.statistics.connectionsRefusedPerAddress == 2)
            // Once one closes, there is room again.
            try await first.finish()
            try await eventually { hub.server.hub.statistics.sessionsOpen == 1 }
            _ = try await hub.connect(.tcp, as: "c@relay.local")
        }
    }

    @Test func anAddressThatFailsTooOftenIsTurnedAway() async throws {
        let hash = try PasswordHash.make(password: "s3cret", rounds: 1000).description
        try await withHub({ configuration in
            configuration.users = [.init(identity: "alice@relay.local", password: hash)]
            configuration.limits.maxAuthFailuresPerAddress = 2
            configuration.limits.authFailureDelaySeconds = 0
            configuration.limits.addressLimitsOnLoopback = true
        }) { hub in
            for _ in 0..<2 {
                await #expect(throws: LIMEClientError.self) {
                    _ = try await hub.connect(.tcp, as: "alice@relay.local", authentication: .plain(password: "guess"))
                }
            }
            // Even the right password waits for the window to pass.
            do {
                _ = try await hub.connect(.tcp, as: "alice@relay.local", authentication: .plain(password: "s3cret"))
                Issue.record("accepted after too many failures")
            } catch LIMEClientError.sessionFailed(let reason) {
                #expect(reason.description.contains("Too many failed authentications"))
            }
            let statistics = hub.server.hub.statistics
            #expect(statistics.authenticationFailures == 2 && statistics.connectionsRefusedAfterFailures == 1)
        }
    }
}
