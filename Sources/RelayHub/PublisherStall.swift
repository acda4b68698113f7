import NIOCore

/// Flow control from a lagging subscriber back to its publishers, as nats-server stalls a
/// producer: when a publication leaves a session with more than half its slow-consumer cap
/// waiting to be written, the publisher's connection stops reading until that session has
/// caught up, for at most `maximum`. A subscriber that does not catch up within it is left to the
/// cap (it is not reading: it becomes a slow consumer) and publishers go on at full speed, so one
/// stuck reader does not slow everyone for long. Without this a burst of large messages to a
/// subscriber on a busy machine passed the cap and ended it, where nats-server delivered them all.
///
/// Used on the publisher's event loop, by its connection handler.
final class PublisherStall {
    /// One session a publisher waits for.
    struct Wait: Sendable {
        let outlet: SessionOutlet
        let drained: EventLoopFuture<Void>
    }

    private let maximum: TimeAmount
    private var stalled = false

    init(maximumMilliseconds: Int) {
        maximum = .milliseconds(Int64(maximumMilliseconds))
    }

    /// Stops reading on `channel` until every session of `waits` has caught up, or `maximum`
    /// has passed (those that did not are then let be). Called on the channel's event loop.
    func wait(for waits: [Wait], channel: any Channel, hub: Hub) {
        guard !waits.isEmpty, !stalled, maximum > .zero else { return }
        let loop = channel.eventLoop.assumeIsolated()
        stalled = true
        hub.publisherStalls.add(1, ordering: .relaxed)
        channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in }
        var caughtUp = Array(repeating: false, count: waits.count)
        var left = waits.count
        var timeout: Scheduled<Void>?
        func resume() {
            guard stalled else { return }
            stalled = false
            timeout?.cancel()
            channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
        }
        for (index, wait) in waits.enumerated() {
            wait.drained.hop(to: channel.eventLoop).assumeIsolated().whenComplete { _ in
                caughtUp[index] = true
                left -= 1
                if left == 0 { resume() }
            }
        }
        timeout = loop.scheduleTask(in: maximum) {
            for (index, wait) in waits.enumerated() where !caughtUp[index] { wait.outlet.stallTimedOutNow() }
            resume()
        }
    }
}
