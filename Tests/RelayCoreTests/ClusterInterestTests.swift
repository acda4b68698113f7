import RelayCore
import Testing

@Suite struct ClusterInterestTests {
    @Test func theFirstLocalSubscriptionSubscribesAndTheLastUnsubscribes() {
        var interest = ClusterInterest()
        let orders = ClusterInterest.Key(filter: "orders.*")
        #expect(interest.localSubscriptionAdded(orders) == .subscribe(sid: "c1", filter: "orders.*", queue: nil))
        #expect(interest.localSubscriptionAdded(orders) == nil, "a second local subscriber needs nothing more")
        #expect(interest.localSubscriptionRemoved(orders) == nil)
        #expect(interest.key(forClusterSubscription: "c1") == orders)
        #expect(interest.localSubscriptionRemoved(orders) == .unsubscribe(sid: "c1"))
        #expect(interest.key(forClusterSubscription: "c1") == nil, "a late message for it is dropped")
        #expect(interest.localSubscriptionRemoved(orders) == nil, "one removal too many changes nothing")
        #expect(interest.count == 0)
    }

    @Test func overlappingFiltersAndQueueGroupsAreHeldApart() {
        var interest = ClusterInterest()
        let star = ClusterInterest.Key(filter: "orders.*")
        let rest = ClusterInterest.Key(filter: "orders.>")
        let workers = ClusterInterest.Key(filter: "orders.*", queue: "workers")
        #expect(interest.localSubscriptionAdded(star) == .subscribe(sid: "c1", filter: "orders.*", queue: nil))
        #expect(interest.localSubscriptionAdded(rest) == .subscribe(sid: "c2", filter: "orders.>", queue: nil))
        #expect(interest.localSubscriptionAdded(workers) == .subscribe(sid: "c3", filter: "orders.*", queue: "workers"))
        // A message nats-server sends on each matching subscription goes to that one's local subscribers only.
        #expect(interest.key(forClusterSubscription: "c2") == rest)
        #expect(interest.key(forClusterSubscription: "c3") == workers)
        #expect(
            interest.subscriptions == [
                .subscribe(sid: "c1", filter: "orders.*", queue: nil), .subscribe(sid: "c2", filter: "orders.>", queue: nil),
                .subscribe(sid: "c3", filter: "orders.*", queue: "workers"),
            ])
        _ = interest.localSubscriptionRemoved(star)
        #expect(interest.localSubscriptionAdded(star) == .subscribe(sid: "c4", filter: "orders.*", queue: nil), "a fresh sid")
    }
}
