/// At-least-once delivery for one acknowledged subscription or queue consumer group, free of I/O.
///
/// Messages wait in order; each consumer holds at most `creditWindow` unacknowledged deliveries
/// (1 is stop-and-wait, N prefetch, nil fast push); consumers compete (each message to one of
/// them). Every delivery has its own id and the message's delivery count. A consumer answers
/// ack, nak (optionally after a delay), in-progress (a new ack deadline) or term (to the dead
/// letters). Without an answer in `ackWait`, or when the consumer goes away, the message is
/// delivered again; after `maximumDeliveries` it goes to the dead letters. An answer for an older
/// delivery of a message delivered again since is ignored and counted.
///
/// Timers are outputs (`startTimer`/`cancelTimer`) and come back as events, as in `HubCore`.
public struct DeliveryMachine<Payload: Sendable & Equatable>: Sendable {
    public typealias MessageID = UInt64
    public typealias DeliveryID = UInt64
    public typealias ConsumerID = UInt64

    public struct Configuration: Sendable {
        /// Unacknowledged deliveries per consumer; nil is unlimited (fast push).
        public var creditWindow: Int?
        public var ackWaitMilliseconds: Int
        /// Deliveries before a message goes to the dead letters; nil is unlimited.
        public var maximumDeliveries: Int?

        public init(creditWindow: Int? = 1, ackWaitMilliseconds: Int = 30_000, maximumDeliveries: Int? = nil) {
            self.creditWindow = creditWindow
            self.ackWaitMilliseconds = ackWaitMilliseconds
            self.maximumDeliveries = maximumDeliveries
        }
    }

    public enum Timer: Sendable, Hashable {
        case ackWait(DeliveryID)
        case nakDelay(MessageID)
    }

    public enum Action: Sendable, Equatable {
        case deliver(consumer: ConsumerID, delivery: DeliveryID, message: MessageID, count: Int, payload: Payload)
        /// The message is done: the store may forget it.
        case acknowledged(MessageID)
        /// The message goes to the dead letters, with why and how often it was delivered.
        case deadLetter(MessageID, payload: Payload, reason: String, count: Int)
        case startTimer(Timer, milliseconds: Int)
        case cancelTimer(Timer)
    }

    /// What happened, for statistics.
    public struct Statistics: Sendable, Equatable {
        public var delivered = 0
        public var redelivered = 0
        public var acknowledged = 0
        public var deadLettered = 0
        /// Answers for a delivery that was no longer the message's current one.
        public var staleAnswers = 0
    }

    struct Stored: Sendable {
        var payload: Payload
        var count = 0
        /// The current delivery, while one is out.
        var delivery: DeliveryID?
        var consumer: ConsumerID?
        var delayed = false
    }

    public let configuration: Configuration
    public private(set) var statistics = Statistics()
    var messages: [MessageID: Stored] = [:]
    /// Messages waiting for a consumer, in order.
    var ready: [MessageID] = []
    var readyStart = 0
    var deliveries: [DeliveryID: MessageID] = [:]
    /// Consumers in attachment order, with their outstanding deliveries in the order they went out
    /// and their own credit window (nil: the configuration's).
    var consumers: [(id: ConsumerID, outstanding: [DeliveryID], credit: Int?)] = []
    var turn = 0
    var nextDelivery: DeliveryID = 1

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// Messages not yet acknowledged (waiting, out, or delayed).
    public var unacknowledgedCount: Int { messages.count }

    /// The deliveries a consumer holds now.
    public func outstanding(of consumer: ConsumerID) -> [DeliveryID] {
        consumers.first { $0.id == consumer }?.outstanding ?? []
    }

    // MARK: - Events

    /// A message arrived (or was recovered from the store with the deliveries it already had).
    public mutating func enqueue(_ id: MessageID, payload: Payload, previousDeliveries: Int = 0) -> [Action] {
        guard messages[id] == nil else { return [] }
        messages[id] = Stored(payload: payload, count: previousDeliveries)
        ready.append(id)
        return dispatch()
    }

    /// A consumer joined; `credit` overrides the configured window for it.
    public mutating func consumerAttached(_ consumer: ConsumerID, credit: Int? = nil) -> [Action] {
        guard !consumers.contains(where: { $0.id == consumer }) else { return [] }
        consumers.append((consumer, [], credit))
        return dispatch()
    }

    /// Removes a message that is waiting (not out with a consumer): for retention and expiry.
    /// Returns its payload, or nil when it is out or unknown.
    public mutating func removeWaiting(_ id: MessageID) -> Payload? {
        guard let stored = messages[id], stored.delivery == nil else { return nil }
        // Its entry in `ready` stays; dispatch skips messages that are gone.
        messages[id] = nil
        return stored.payload
    }

    /// The message of a delivery that is still current.
    public func messageID(of delivery: DeliveryID) -> MessageID? {
        guard let message = deliveries[delivery], messages[message]?.delivery == delivery else { return nil }
        return message
    }

    /// The ids of the messages still owed, oldest first.
    public var owedMessages: [MessageID] { messages.keys.sorted() }

    /// The payload of a message still owed, and its delivery count.
    public func message(_ id: MessageID) -> (payload: Payload, count: Int)? {
        messages[id].map { ($0.payload, $0.count) }
    }

    /// A consumer went away: what it held is delivered again at once, to the others.
    public mutating func consumerDetached(_ consumer: ConsumerID) -> [Action] {
        guard let index = consumers.firstIndex(where: { $0.id == consumer }) else { return [] }
        let held = consumers.remove(at: index).outstanding
        var actions: [Action] = []
        var returned: [MessageID] = []
        for delivery in held {
            actions.append(.cancelTimer(.ackWait(delivery)))
            guard let message = deliveries.removeValue(forKey: delivery) else { continue }
            messages[message]?.delivery = nil
            messages[message]?.consumer = nil
            returned.append(message)
        }
        // Returned messages go first, in the order they were delivered.
        ready.replaceSubrange(readyStart..<readyStart, with: returned)
        actions += expireOrDispatch(returned)
        return actions
    }

    public mutating func ack(_ delivery: DeliveryID) -> [Action] {
        guard let message = current(delivery) else { return [] }
        finishDelivery(delivery, message: message)
        messages[message] = nil
        statistics.acknowledged += 1
        return [.cancelTimer(.ackWait(delivery)), .acknowledged(message)] + dispatch()
    }

    /// Not now: deliver again after `delayMilliseconds` (at once when nil or 0).
    public mutating func nak(_ delivery: DeliveryID, delayMilliseconds: Int? = nil) -> [Action] {
        guard let message = current(delivery) else { return [] }
        finishDelivery(delivery, message: message)
        var actions: [Action] = [.cancelTimer(.ackWait(delivery))]
        if let delay = delayMilliseconds, delay > 0 {
            messages[message]?.delayed = true
            actions.append(.startTimer(.nakDelay(message), milliseconds: delay))
            return actions + dispatch()
        }
        ready.insert(message, at: readyStart)
        return actions + expireOrDispatch([message])
    }

    /// Still working: the ack deadline starts again.
    public mutating func inProgress(_ delivery: DeliveryID) -> [Action] {
        guard current(delivery) != nil else { return [] }
        return [.startTimer(.ackWait(delivery), milliseconds: configuration.ackWaitMilliseconds)]
    }

    /// Never again: the message goes to the dead letters with the reason.
    public mutating func term(_ delivery: DeliveryID, reason: String) -> [Action] {
        guard let message = current(delivery), let stored = messages[message] else { return [] }
        finishDelivery(delivery, message: message)
        messages[message] = nil
        statistics.deadLettered += 1
        return [.cancelTimer(.ackWait(delivery)), .deadLetter(message, payload: stored.payload, reason: reason, count: stored.count)]
            + dispatch()
    }

    /// The consumer asks for its current unacknowledged delivery again (pyQMsgBus's GET): the same
    /// delivery is sent once more, with the same id and count.
    public func get(_ consumer: ConsumerID) -> [Action] {
        guard let delivery = outstanding(of: consumer).first, let message = deliveries[delivery], let stored = messages[message] else {
            return []
        }
        return [.deliver(consumer: consumer, delivery: delivery, message: message, count: stored.count, payload: stored.payload)]
    }

    public mutating func timerFired(_ timer: Timer) -> [Action] {
        switch timer {
        case .ackWait(let delivery):
            guard let message = current(delivery, counting: false) else { return [] }
            finishDelivery(delivery, message: message)
            ready.insert(message, at: readyStart)
            return expireOrDispatch([message])
        case .nakDelay(let message):
            guard messages[message]?.delayed == true else { return [] }
            messages[message]?.delayed = false
            ready.insert(message, at: readyStart)
            return expireOrDispatch([message])
        }
    }

    // MARK: - Inside

    /// The message of a delivery that is still its message's current one; counts a stale answer.
    private mutating func current(_ delivery: DeliveryID, counting: Bool = true) -> MessageID? {
        guard let message = deliveries[delivery], messages[message]?.delivery == delivery else {
            if counting { statistics.staleAnswers += 1 }
            return nil
        }
        return message
    }

    private mutating func finishDelivery(_ delivery: DeliveryID, message: MessageID) {
        deliveries[delivery] = nil
        if let consumer = messages[message]?.consumer, let index = consumers.firstIndex(where: { $0.id == consumer }) {
            consumers[index].outstanding.removeAll { $0 == delivery }
        }
        messages[message]?.delivery = nil
        messages[message]?.consumer = nil
    }

    /// Messages that have had all their deliveries go to the dead letters; the rest are dispatched.
    private mutating func expireOrDispatch(_ candidates: [MessageID]) -> [Action] {
        var actions: [Action] = []
        if let maximum = configuration.maximumDeliveries {
            for message in candidates {
                guard let stored = messages[message], stored.count >= maximum else { continue }
                // Its entry in `ready` stays; dispatch skips messages that are gone.
                messages[message] = nil
                statistics.deadLettered += 1
                actions.append(
                    .deadLetter(
                        message, payload: stored.payload, reason: "Delivered \(stored.count) times without acknowledgement",
                        count: stored.count))
            }
        }
        return actions + dispatch()
    }

    /// Hands waiting messages to consumers with credit, in turn.
    private mutating func dispatch() -> [Action] {
        var actions: [Action] = []
        while readyStart < ready.count, !consumers.isEmpty {
            guard let index = nextConsumerWithCredit() else { break }
            let message = ready[readyStart]
            readyStart += 1
            guard var stored = messages[message], stored.delivery == nil, !stored.delayed else { continue }
            let delivery = nextDelivery
            nextDelivery += 1
            stored.count += 1
            stored.delivery = delivery
            stored.consumer = consumers[index].id
            messages[message] = stored
            deliveries[delivery] = message
            consumers[index].outstanding.append(delivery)
            statistics.delivered += 1
            if stored.count > 1 { statistics.redelivered += 1 }
            actions.append(
                .deliver(consumer: consumers[index].id, delivery: delivery, message: message, count: stored.count, payload: stored.payload))
            actions.append(.startTimer(.ackWait(delivery), milliseconds: configuration.ackWaitMilliseconds))
        }
        if readyStart > 1024 && readyStart * 2 > ready.count {
            ready.removeFirst(readyStart)
            readyStart = 0
        }
        return actions
    }

    private mutating func nextConsumerWithCredit() -> Int? {
        for offset in 0..<consumers.count {
            let index = (turn + offset) % consumers.count
            if (consumers[index].credit ?? configuration.creditWindow).map({ consumers[index].outstanding.count < $0 }) ?? true {
                turn = (index + 1) % consumers.count
                return index
            }
        }
        return nil
    }
}
