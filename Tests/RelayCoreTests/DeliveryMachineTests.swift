import Testing

@testable import RelayCore

typealias Machine = DeliveryMachine<String>

extension [Machine.Action] {
    var deliveries: [(consumer: UInt64, delivery: UInt64, message: UInt64, count: Int)] {
        compactMap {
            if case .deliver(let consumer, let delivery, let message, let count, _) = $0 { return (consumer, delivery, message, count) }
            return nil
        }
    }

    var deadLetters: [(UInt64, String)] {
        compactMap { if case .deadLetter(let message, _, let reason, _) = $0 { return (message, reason) } else { return nil } }
    }
}

@Suite struct DeliveryMachineTests {
    @Test func stopAndWaitDeliversTheNextOnlyAfterTheAck() {
        var machine = Machine(configuration: .init(creditWindow: 1))
        _ = machine.consumerAttached(1)
        let first = machine.enqueue(1, payload: "a")
        #expect(first.deliveries.map(\.message) == [1])
        #expect(first.contains(.startTimer(.ackWait(1), milliseconds: 30_000)))
        #expect(machine.enqueue(2, payload: "b").deliveries.isEmpty)
        let afterAck = machine.ack(1)
        #expect(afterAck.contains(.acknowledged(1)) && afterAck.contains(.cancelTimer(.ackWait(1))))
        #expect(afterAck.deliveries.map(\.message) == [2])
    }

    @Test func aWindowAllowsPrefetchAndNilIsFastPush() {
        var prefetch = Machine(configuration: .init(creditWindow: 3))
        _ = prefetch.consumerAttached(1)
        var delivered = 0
        for n in 1...10 { delivered += prefetch.enqueue(UInt64(n), payload: "m").deliveries.count }
        #expect(delivered == 3)
        var fast = Machine(configuration: .init(creditWindow: nil))
        _ = fast.consumerAttached(1)
        delivered = 0
        for n in 1...10 { delivered += fast.enqueue(UInt64(n), payload: "m").deliveries.count }
        #expect(delivered == 10)
    }

    @Test func consumersCompete() {
        var machine = Machine(configuration: .init(creditWindow: 1))
        _ = machine.consumerAttached(1)
        _ = machine.consumerAttached(2)
        let first = machine.enqueue(1, payload: "a").deliveries
        let second = machine.enqueue(2, payload: "b").deliveries
        #expect(Set(first.map(\.consumer) + second.map(\.consumer)) == [1, 2])
    }

    @Test func noAnswerWithinTheAckWaitMeansAnotherDelivery() {
        var machine = Machine(configuration: .init(creditWindow: 1, ackWaitMilliseconds: 100))
        _ = machine.consumerAttached(1)
        _ = machine.enqueue(1, payload: "a")
        let again = machine.timerFired(.ackWait(1)).deliveries
        #expect(again.count == 1 && again[0].delivery == 2 && again[0].count == 2)
        // The first delivery's late ack is ignored and counted; the message is still owed.
        #expect(machine.ack(1).isEmpty)
        #expect(machine.statistics.staleAnswers == 1)
        #expect(machine.unacknowledgedCount == 1)
        #expect(machine.ack(2).contains(.acknowledged(1)))
    }

    @Test func aDepartingConsumersMessagesGoToAnotherAtOnce() {
        var machine = Machine(configuration: .init(creditWindow: 2))
        _ = machine.consumerAttached(1)
        _ = machine.enqueue(1, payload: "a")
        _ = machine.enqueue(2, payload: "b")
        _ = machine.consumerAttached(2)
        let moved = machine.consumerDetached(1).deliveries
        #expect(moved.map(\.message) == [1, 2] && moved.allSatisfy { $0.consumer == 2 && $0.count == 2 })
    }

    @Test func nakWithDelayWaitsThenDeliversAgain() {
        var machine = Machine(configuration: .init(creditWindow: 1))
        _ = machine.consumerAttached(1)
        _ = machine.enqueue(1, payload: "a")
        _ = machine.enqueue(2, payload: "b")
        let nak = machine.nak(1, delayMilliseconds: 500)
        #expect(nak.contains(.startTimer(.nakDelay(1), milliseconds: 500)))
        #expect(nak.deliveries.map(\.message) == [2], "the next message goes while the first waits")
        _ = machine.ack(nak.deliveries[0].delivery)
        let again = machine.timerFired(.nakDelay(1)).deliveries
        #expect(again.map(\.message) == [1] && again[0].count == 2)
        let immediate = machine.nak(again[0].delivery)
        #expect(immediate.deliveries.map(\.message) == [1])
    }

    @Test func inProgressRestartsTheDeadline() {
        var machine = Machine(configuration: .init(ackWaitMilliseconds: 1000))
        _ = machine.consumerAttached(1)
        _ = machine.enqueue(1, payload: "a")
        #expect(machine.inProgress(1) == [.startTimer(.ackWait(1), milliseconds: 1000)])
    }

    @Test func termAndMaximumDeliveriesGoToTheDeadLetters() {
        var machine = Machine(configuration: .init(creditWindow: 1, maximumDeliveries: 2))
        _ = machine.consumerAttached(1)
        _ = machine.enqueue(1, payload: "poison")
        _ = machine.timerFired(.ackWait(1))
        let expired = machine.timerFired(.ackWait(2))
        #expect(expired.deadLetters.map(\.0) == [1])
        _ = machine.enqueue(2, payload: "bad")
        let termed = machine.term(3, reason: "cannot parse")
        #expect(termed.deadLetters.map(\.1) == ["cannot parse"])
        #expect(machine.unacknowledgedCount == 0)
    }

    @Test func getSendsTheCurrentDeliveryAgainUnchanged() {
        var machine = Machine(configuration: .init(creditWindow: 1))
        _ = machine.consumerAttached(1)
        let first = machine.enqueue(1, payload: "a").deliveries[0]
        let again = machine.get(1).deliveries
        #expect(again.count == 1 && again[0].delivery == first.delivery && again[0].count == first.count)
        #expect(machine.get(2).isEmpty)
    }

    @Test func recoveredMessagesKeepTheirDeliveryCounts() {
        var machine = Machine(configuration: .init(maximumDeliveries: 3))
        _ = machine.consumerAttached(1)
        #expect(machine.enqueue(1, payload: "a", previousDeliveries: 2).deliveries.first?.count == 3)
    }

    /// Random sequences of events, checked against the invariants: nothing acknowledged is
    /// delivered again; nothing unacknowledged is forgotten; no consumer holds more than its credit.
    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8])
    func invariantsHoldUnderRandomEvents(seed: UInt64) {
        var random = SplitMix64(seed: seed)
        let window = [1, 2, 5, nil].randomElement(using: &random)!
        var machine = Machine(
            configuration: .init(
                creditWindow: window, ackWaitMilliseconds: 10, maximumDeliveries: [nil, 3, 5].randomElement(using: &random)!))
        var acknowledged = Set<UInt64>()
        var deadLettered = Set<UInt64>()
        var enqueued = Set<UInt64>()
        var live: [UInt64: UInt64] = [:]  // delivery → consumer, as the consumers see them
        var timers = Set<Machine.Timer>()
        var consumers = Set<UInt64>()
        var nextMessage: UInt64 = 1
        var nextConsumer: UInt64 = 1

        func apply(_ actions: [Machine.Action]) {
            for action in actions {
                switch action {
                case .deliver(let consumer, let delivery, let message, _, _):
                    #expect(!acknowledged.contains(message), "acknowledged message \(message) delivered again")
                    #expect(!deadLettered.contains(message))
                    #expect(consumers.contains(consumer))
                    live[delivery] = consumer
                case .acknowledged(let message): acknowledged.insert(message)
                case .deadLetter(let message, _, _, _): deadLettered.insert(message)
                case .startTimer(let timer, _): timers.insert(timer)
                case .cancelTimer(let timer): timers.remove(timer)
                }
            }
            if let window {
                for consumer in consumers { #expect(machine.outstanding(of: consumer).count <= window, "credit exceeded") }
            }
        }

        for _ in 0..<3_000 {
            switch Int.random(in: 0..<10, using: &random) {
            case 0, 1:
                enqueued.insert(nextMessage)
                apply(machine.enqueue(nextMessage, payload: "m\(nextMessage)"))
                nextMessage += 1
            case 2 where consumers.count < 4:
                consumers.insert(nextConsumer)
                apply(machine.consumerAttached(nextConsumer))
                nextConsumer += 1
            case 3 where !consumers.isEmpty:
                let leaving = consumers.randomElement(using: &random)!
                consumers.remove(leaving)
                live = live.filter { $0.value != leaving }
                apply(machine.consumerDetached(leaving))
            case 4, 5, 6:
                // Answers, sometimes for deliveries that are no longer current.
                guard let delivery = live.keys.randomElement(using: &random) else { continue }
                if Int.random(in: 0..<4, using: &random) > 0 { live[delivery] = nil }
                switch Int.random(in: 0..<5, using: &random) {
                case 0, 1: apply(machine.ack(delivery))
                case 2: apply(machine.nak(delivery, delayMilliseconds: Bool.random(using: &random) ? 5 : nil))
                case 3: apply(machine.inProgress(delivery))
                default: apply(machine.term(delivery, reason: "no"))
                }
            default:
                guard let timer = timers.randomElement(using: &random) else { continue }
                timers.remove(timer)
                apply(machine.timerFired(timer))
            }
        }
        // Nothing forgotten: every message is acknowledged, dead-lettered, or still owed.
        #expect(acknowledged.isDisjoint(with: deadLettered))
        #expect(acknowledged.count + deadLettered.count + machine.unacknowledgedCount == enqueued.count)
        // Drain: the other consumers leave, and one patient consumer acknowledges everything still owed.
        var inbox: [UInt64] = []
        func step(_ actions: [Machine.Action]) {
            apply(actions)
            inbox += actions.deliveries.filter { $0.consumer == 999 }.map(\.delivery)
        }
        consumers.insert(999)
        step(machine.consumerAttached(999))
        for other in consumers where other != 999 {
            consumers.remove(other)
            step(machine.consumerDetached(other))
        }
        var rounds = 0
        while machine.unacknowledgedCount > 0 && rounds < 100_000 {
            rounds += 1
            if let delivery = inbox.popLast() {
                step(machine.ack(delivery))
            } else {
                let due = timers
                timers.removeAll()
                for timer in due { step(machine.timerFired(timer)) }
            }
        }
        #expect(machine.unacknowledgedCount == 0)
        #expect(acknowledged.count + deadLettered.count == enqueued.count)
    }
}
