import Foundation
import RelayClient
import RelayCore
import RelayHub
import RelayTransport
import Testing

@Suite(.timeLimit(.minutes(1))) struct ReloadTests {
    static let hash = try! PasswordHash.make(password: "pw", rounds: 1000).description

    /// A configuration read again takes effect for new sign-ins and for the permissions of open
    /// sessions, without dropping them; what needs a restart is said and left.
    @Test func aReloadAddsUsersAndChangesPermissionsWithoutDroppingSessions() async throws {
        var initial = HubConfiguration()
        try await withHub({ configuration in
            configuration.limits.authFailureDelaySeconds = 0
            configuration.users = [.init(identity: "alice@relay.local", password: Self.hash)]
            initial = configuration
        }) { hub in
            let alice = try await hub.connect(.tcp, as: "alice@relay.local", authentication: .plain(password: "pw"))
            let subscribed = try await alice.request(LIMECommand(method: .subscribe, uri: "/topics/billing.*"))
            #expect(subscribed.status == .success)
            await #expect(throws: LIMEClientError.self) {
                _ = try await hub.connect(.ws, as: "bob@relay.local", authentication: .plain(password: "pw"))
            }

            var fresh = initial
            fresh.users.append(.init(identity: "bob@relay.local", password: Self.hash))
            fresh.users[0].permissions = .init(subscribe: .init(allow: ["news.>"]))
            fresh.limits.maxSubscriptionsPerSession = 5
            fresh.ws = HostAndPort(host: "127.0.0.1", port: 1)
            let restart = try hub.server.hub.reload(fresh)
            #expect(restart == ["ws"])
            #expect(hub.server.hub.configuration.ws?.port == 0, "the listener's setting stays until a restart")

            let bob = try await hub.connect(.ws, as: "bob@relay.local", authentication: .plain(password: "pw"))
            #expect(try await bob.ping().status == .success)
            // Alice's session goes on, held to her new permissions: her old subscription ended.
            #expect(try await alice.ping().status == .success)
            let refused = try await alice.request(LIMECommand(method: .subscribe, uri: "/topics/billing.>"))
            #expect(refused.reason?.code == RelayReasonCode.subscribeNotPermitted)
            let subsz = try await httpJSON(hub, "/subsz")
            #expect(subsz["num_subscriptions"] == 0, "the subscription her permissions no longer allow was ended")

            // A configuration that cannot be used changes nothing.
            var broken = fresh
            broken.users.append(.init(identity: "carol@relay.local", password: "not a hash"))
            #expect(throws: HubError.self) { try hub.server.hub.reload(broken) }
            #expect(hub.server.hub.configuration.users.count == 2)
        }
    }
}
