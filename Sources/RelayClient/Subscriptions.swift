import Foundation
import NIOCore
import RelayCore
import Synchronization

/// A message published on a subject, as a subscriber receives it.
public struct Publication: Sendable, Hashable {
    /// The subject it was published on.
    public var subject: String
    /// The publisher's node.
    public var publisher: Node?
    public var type: MediaType
    /// The content as it arrived: its value is built only when asked for (`content`, `text`).
    public var body: JSONContent
    /// The publisher's metadata (Relay's own `#` keys removed).
    public var metadata: [String: String]

    /// A JSON value for JSON media types, a string otherwise.
    public var content: JSONValue {
        get { body.value }
        set { body = JSONContent(newValue) }
    }

    /// The publication a delivery carries; the delivery is consumed so that its metadata is
    /// changed in place, not copied.
    init(_ message: consuming LIMEMessage) {
        var metadata = message.header.metadata.take() ?? [:]
        subject = metadata.removeValue(forKey: "#subject") ?? ""
        metadata["#subscription"] = nil
        publisher = message.header.from
        type = message.type
        body = message.body
        self.metadata = metadata
    }

    /// The publication a delivery read in place carries (`LIMEDeliveryScanner`): one without the
    /// publisher's metadata, which is what `init(_:)` makes of the same delivery decoded.
    init(_ delivery: LIMEDeliveryInPlace, envelope: UnsafeRawBufferPointer) {
        subject = delivery.subject
        publisher = delivery.publisher
        type = delivery.type
        body = JSONContent(validatedText: Array(envelope[delivery.content]))
        metadata = [:]
    }

    /// The content as text: the string itself, or the JSON text of a JSON value.
    public var text: String {
        body.stringValue ?? JSONWriter.string(body.value)
    }
}

/// What a subscription does when its buffer is full because the application reads too slowly.
public enum SlowConsumerPolicy: Sendable {
    /// Keep what is buffered, drop the newest publication.
    case dropNewest
    /// Drop the oldest buffered publication to make room for the newest.
    case dropOldest
}

/// A subscription's bounded buffer: what arrives waits here until the application reads it; when
/// it is full the `SlowConsumerPolicy` drops one, and every drop is counted. Shared by the LIME and
/// NATS clients.
///
/// The connection's handler adds what one read brings with `enqueue` and wakes the reader once at
/// the end of the read (`wake`), rather than once per message: a reader that keeps up then takes
/// a batch per wake-up instead of paying a task switch per message.
final class BoundedInbox<Element: Sendable>: InboxWaking, Sendable {
    private struct State: Sendable {
        var buffer = CircularBuffer<Element>()
        var reader: UnsafeContinuation<Element?, Never>?
        var wakeDue = false
        var finished = false
        /// Dropping since the last element that fitted: a slow consumer, reported once.
        var behind = false
    }

    private let state = Mutex(State())
    private let bufferSize: Int
    private let policy: SlowConsumerPolicy
    let dropped = Atomic<Int>(0)
    /// Called when the inbox starts dropping (again): the `slowConsumer` event.
    private let fellBehind: (@Sendable () -> Void)?

    init(bufferSize: Int, policy: SlowConsumerPolicy, fellBehind: (@Sendable () -> Void)? = nil) {
        self.bufferSize = max(bufferSize, 1)
        self.policy = policy
        self.fellBehind = fellBehind
    }

    /// Adds an element without waking the reader; true when the reader waits and `wake()` must be
    /// called (once, whatever the number of elements added meanwhile).
    func enqueue(_ element: Element) -> Bool {
        let (wakeNeeded, drop, report) = state.withLock { state -> (Bool, Bool, Bool) in
            guard !state.finished else { return (false, false, false) }
            var drop = false
            var report = false
            if state.buffer.count >= bufferSize {
                drop = true
                report = !state.behind
                state.behind = true
                guard policy == .dropOldest else { return (false, true, report) }
                state.buffer.removeFirst()
            } else {
                state.behind = false
            }
            state.buffer.append(element)
            guard state.reader != nil, !state.wakeDue else { return (false, drop, report) }
            state.wakeDue = true
            return (true, drop, report)
        }
        if drop { dropped.add(1, ordering: .relaxed) }
        if report { fellBehind?() }
        return wakeNeeded
    }

    /// Hands the waiting reader the first element.
    func wake() {
        let (reader, element) = state.withLock { state -> (UnsafeContinuation<Element?, Never>?, Element?) in
            state.wakeDue = false
            guard let reader = state.reader, let element = state.buffer.popFirst() else { return (nil, nil) }
            state.reader = nil
            return (reader, element)
        }
        reader?.resume(returning: element)
    }

    /// Adds an element and wakes the reader at once.
    func deliver(_ element: Element) {
        if enqueue(element) { wake() }
    }

    /// Drops that happened elsewhere (at the hub) and were reported.
    func countDropped(_ count: Int) {
        dropped.add(count, ordering: .relaxed)
        fellBehind?()
    }

    /// Ends the sequence once what is buffered has been read.
    func finish() {
        let (reader, element) = state.withLock { state -> (UnsafeContinuation<Element?, Never>?, Element?) in
            state.finished = true
            defer { state.reader = nil }
            return (state.reader, state.reader == nil ? nil : state.buffer.popFirst())
        }
        reader?.resume(returning: element)
    }

    /// The next element; nil once finished and empty, or when the reading task is cancelled (which
    /// ends the sequence, as an `AsyncStream`'s does).
    func next() async -> Element? {
        let immediate: Element?? = state.withLock { state in
            if let element = state.buffer.popFirst() { return .some(element) }
            return state.finished ? .some(nil) : nil
        }
        if let immediate { return immediate }
        return await withTaskCancellationHandler {
            await withUnsafeContinuation { (continuation: UnsafeContinuation<Element?, Never>) in
                let ready: Element?? = state.withLock { state in
                    if let element = state.buffer.popFirst() { return .some(element) }
                    if state.finished { return .some(nil) }
                    precondition(state.reader == nil, "a subscription is read by one task at a time")
                    state.reader = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            finish()
        }
    }
}

/// What a connection's handler wakes at the end of a read.
protocol InboxWaking: AnyObject, Sendable {
    func wake()
}

/// The subscriptions a connection's handler delivered to during a read: their readers are woken
/// together when it ends. Used on the connection's event loop only.
struct ReadersToWake {
    private var inboxes: [any InboxWaking] = []

    mutating func add(_ inbox: (any InboxWaking)?) {
        if let inbox { inboxes.append(inbox) }
    }

    mutating func wakeAll() {
        guard !inboxes.isEmpty else { return }
        for inbox in inboxes { inbox.wake() }
        inboxes.removeAll(keepingCapacity: true)
    }
}

/// Where the LIME client puts the publications of one subscription.
typealias SubscriptionInbox = BoundedInbox<Publication>

extension BoundedInbox where Element == Publication {
    /// Adds a delivery; true when the reader must be woken (see `enqueue`).
    func enqueue(_ message: consuming LIMEMessage) -> Bool {
        // The hub reports what its overflow policy dropped while this subscriber lagged.
        if let count = message.header.metadata?["#dropped"].flatMap({ Int($0) }) {
            countDropped(count)
            return false
        }
        return enqueue(Publication(message))
    }
}

/// A subscription to a subject filter: an `AsyncSequence` of publications.
///
/// It holds at most `bufferSize` publications the application has not read; beyond that its
/// `SlowConsumerPolicy` drops one, and `droppedCount` counts every drop. Leaving the `for` loop (or
/// calling `unsubscribe()`) ends the subscription at the hub.
public final class SubjectSubscription: AsyncSequence, Sendable {
    public typealias Element = Publication

    /// The filter subscribed to, for example `orders.*`.
    public let filter: String
    /// The queue group, if any.
    public let queue: String?
    private let inbox: SubscriptionInbox
    private let client: LIMEClient
    private let token: String
    /// The resource to unsubscribe from (a topic filter, or a durable queue).
    private let unsubscribeURI: String
    private let ended = Atomic<Bool>(false)

    init(filter: String, queue: String?, token: String, inbox: SubscriptionInbox, client: LIMEClient, unsubscribeURI: String? = nil) {
        self.filter = filter
        self.queue = queue
        self.token = token
        self.inbox = inbox
        self.client = client
        self.unsubscribeURI =
            unsubscribeURI ?? "/topics/\(Self.uriPart(filter))\(queue.map { "?queue=\(Self.uriPart($0))" } ?? "")"
    }

    /// Publications dropped because the application read too slowly, here or (by the subscription's
    /// overflow policy) at the hub.
    public var droppedCount: Int { inbox.dropped.load(ordering: .relaxed) }

    /// Ends the subscription at the hub; the sequence then ends.
    public func unsubscribe() async throws {
        guard !ended.exchange(true, ordering: .relaxed) else { return }
        client.core.removeSubscription(token)
        client.core.removeRestoration(token)
        inbox.finish()
        let response = try await client.request(
            LIMECommand(method: .unsubscribe, uri: unsubscribeURI))
        if response.status == .failure, let reason = response.reason { throw RelayError(reason) }
    }

    fileprivate func iteratorEnded() {
        guard !ended.load(ordering: .relaxed) else { return }
        Task { try? await self.unsubscribe() }
    }

    public func makeAsyncIterator() -> Iterator {
        Iterator(subscription: self, inbox: inbox)
    }

    public struct Iterator: AsyncIteratorProtocol {
        private let guardian: IteratorGuardian
        private let inbox: SubscriptionInbox

        fileprivate init(subscription: SubjectSubscription, inbox: SubscriptionInbox) {
            self.guardian = IteratorGuardian(subscription)
            self.inbox = inbox
        }

        public mutating func next() async -> Publication? {
            await inbox.next()
        }
    }

    static func uriPart(_ text: String) -> String {
        // Subjects are usually plain: letters, digits and dots need no encoding.
        let plain = text.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "*"), UInt8(ascii: "~"):
                true
            default: false
            }
        }
        if plain { return text }
        return text.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "?&=%"))) ?? text
    }
}

/// Unsubscribes when the loop that iterated a subscription is left (its iterator is gone).
private final class IteratorGuardian: Sendable {
    let subscription: SubjectSubscription
    init(_ subscription: SubjectSubscription) { self.subscription = subscription }
    deinit { subscription.iteratorEnded() }
}

/// A failure response from the hub or a service, with its LIME reason.
public struct RelayError: Error, CustomStringConvertible, Equatable {
    public let reason: Reason
    public init(_ reason: Reason) { self.reason = reason }
    public var code: Int { reason.code }
    public var description: String { "\(reason.description) (code \(reason.code))" }
}

extension LIMEClient {
    /// Publishes `content` on `subject`, fire-and-forget (LIME `observe /topics/SUBJECT`).
    /// `targets` limits who receives it to those nodes (nuropb's event target).
    public func publish(
        _ subject: String, _ content: JSONValue, type: MediaType? = nil, metadata: [String: String] = [:], targets: [Node]? = nil
    ) async throws {
        try await send(publication(.observe, subject, content, type, metadata, targets, id: nil))
    }

    /// Publishes and waits until the hub has routed it (LIME `set /topics/SUBJECT`); returns how many
    /// subscribers it was delivered to.
    @discardableResult
    public func publishConfirmed(
        _ subject: String, _ content: JSONValue, type: MediaType? = nil, metadata: [String: String] = [:], targets: [Node]? = nil,
        timeout: Duration? = nil
    ) async throws -> Int {
        let response = try await request(
            publication(.set, subject, content, type, metadata, targets, id: UUID().uuidString.lowercased()), timeout: timeout)
        guard response.status == .success else { throw RelayError(response.reason ?? Reason(code: 1, description: "publish failed")) }
        return response.resource?["delivered"]?.intValue ?? 0
    }

    private func publication(
        _ method: CommandMethod, _ subject: String, _ content: JSONValue, _ type: MediaType?, _ metadata: [String: String],
        _ targets: [Node]?,
        id: String?
    ) -> LIMECommand {
        var metadata = metadata
        if let targets { metadata["#targets"] = targets.map(\.description).joined(separator: ",") }
        return LIMECommand(
            header: EnvelopeHeader(id: id, metadata: metadata.isEmpty ? nil : metadata), method: method,
            uri: "/topics/\(SubjectSubscription.uriPart(subject))",
            type: type ?? (content.stringValue != nil ? .textPlain : .applicationJSON),
            resource: content)
    }

    /// Sends a request on a subject and returns the first reply (LIME `get /topics/SUBJECT`): the way
    /// to call a NATS responder. Fails with 42 at once when nobody listens on the subject.
    public func requestOnSubject(
        _ subject: String, _ content: JSONValue, type: MediaType? = nil, timeout: Duration? = nil
    ) async throws -> JSONValue {
        let deadline = timeout ?? options.requestTimeout
        var command = publication(.get, subject, content, type, [:], nil, id: UUID().uuidString.lowercased())
        command.header.metadata = ["#deadline": String(deadline.milliseconds)]
        let response = try await request(command, timeout: deadline + .seconds(2))
        guard response.status == .success else { throw RelayError(response.reason ?? Reason(code: 1, description: "request failed")) }
        return response.resource ?? .null
    }

    /// Subscribes to a subject filter (`orders.*`, `orders.>`), optionally in a queue group (each
    /// publication to one member of the group). `echo` also delivers this client's own publications.
    ///
    /// `heldAtHub` and `overflow` bound what the hub holds for this subscription while this client's
    /// connection cannot take more (defaults: the hub's, 10,000 and drop the newest); drops there
    /// are reported and counted in `droppedCount` too.
    public func subscribe(
        _ filter: String, queue: String? = nil, echo: Bool = false, bufferSize: Int = 1000, policy: SlowConsumerPolicy = .dropNewest,
        heldAtHub: Int? = nil, overflow: OverflowPolicy? = nil
    ) async throws -> SubjectSubscription {
        let token = queue.map { "\(filter)?queue=\($0)" } ?? filter
        let inbox = SubscriptionInbox(bufferSize: bufferSize, policy: policy, fellBehind: slowConsumerReporter(filter))
        core.addSubscription(token, inbox)
        var query: [String] = []
        if let queue { query.append("queue=\(SubjectSubscription.uriPart(queue))") }
        if echo { query.append("echo=true") }
        if let heldAtHub { query.append("pending=\(heldAtHub)") }
        if let overflow { query.append("overflow=\(overflow.rawValue)") }
        let uri = "/topics/\(SubjectSubscription.uriPart(filter))" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
        let response: LIMECommand
        do {
            response = try await request(LIMECommand(method: .subscribe, uri: uri))
        } catch {
            core.removeSubscription(token)
            throw error
        }
        guard response.status == .success else {
            core.removeSubscription(token)
            throw RelayError(response.reason ?? Reason(code: 1, description: "subscribe failed"))
        }
        core.addRestoration(.init(key: token, command: LIMECommand(method: .subscribe, uri: uri), awaitsResponse: true))
        return SubjectSubscription(filter: filter, queue: queue, token: token, inbox: inbox, client: self)
    }

    /// Posts `slowConsumer` when a subscription's buffer starts dropping.
    func slowConsumerReporter(_ subject: String) -> @Sendable () -> Void {
        { [connectionEvents] in connectionEvents.post(.slowConsumer(subject: subject)) }
    }
}
