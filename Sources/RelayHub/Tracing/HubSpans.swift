import RelayCore
import Tracing

/// The hub's spans, for the tracer of the process it runs in (swift-distributed-tracing: what
/// swift-otel, for one, bootstraps): `publish SUBJECT` and `route` where messages enter,
/// `deliver SUBJECT` for each delivery, `request SERVICE.METHOD` from a request's dispatch to its
/// answer or timeout, and `queue store` from a durable publication's hand-over to its commit.
///
/// Trace context travels in LIME metadata and NATS headers under the tracer's own keys (W3C
/// `traceparent` and `tracestate` for OpenTelemetry's propagator). A message that comes without
/// one gets its entry span's, so its deliveries, replies and redeliveries continue the trace. The
/// hub makes none of this when the tracer is the no-op one (`HubSpans(tracer:)` is nil).
struct HubSpans: Sendable {
    let tracer: any Tracer

    init?(tracer: any Tracer) {
        guard !(tracer is NoOpTracer) else { return nil }
        self.tracer = tracer
    }

    /// The trace context `metadata` carries, as the tracer reads it.
    func context(of metadata: [String: String]?) -> ServiceContext {
        var context = ServiceContext.topLevel
        if let metadata, !metadata.isEmpty { tracer.extract(metadata, into: &context, using: MetadataCarrier()) }
        return context
    }

    /// Starts the span of a message entering the hub and, when the message carries no trace
    /// context, writes the span's into its metadata.
    func entered(
        _ operation: String, kind: SpanKind, subject: String?, dialect: String, metadata: inout [String: String]
    ) -> any Span {
        let parent = context(of: metadata)
        let span = tracer.startSpan(operation, context: parent, ofKind: kind)
        span.attributes["messaging.system"] = "relay"
        span.attributes["relay.dialect"] = dialect
        if let subject { span.attributes["messaging.destination.name"] = subject }
        var carried: [String: String] = [:]
        tracer.inject(parent, into: &carried, using: MetadataCarrier())
        if carried.isEmpty { tracer.inject(span.context, into: &metadata, using: MetadataCarrier()) }
        return span
    }

    /// The span of a LIME envelope entering the hub (`publish SUBJECT` for a publication, `route`
    /// otherwise), nil for a response (its request's span covers it) or a session envelope.
    func entered(_ envelope: inout Envelope) -> (any Span)? {
        let operation: String
        let kind: SpanKind
        var subject: String?
        switch envelope {
        case .session: return nil
        case .command(let command) where command.isResponse: return nil
        case .command(let command):
            if command.method == .observe || command.method == .set, let uri = command.uri, uri.hasPrefix("/topics/") {
                subject = HubCore.plainTopic(uri)
            }
            (operation, kind) = subject.map { ("publish \($0)", .producer) } ?? ("route", .server)
        case .message, .notification: (operation, kind) = ("route", .server)
        }
        let carried = envelope.header.metadata
        var metadata = carried ?? [:]
        let span = entered(operation, kind: kind, subject: subject, dialect: "lime", metadata: &metadata)
        if case .command(let command) = envelope, let uri = command.uri { span.attributes["lime.uri"] = uri }
        if carried != metadata { envelope.header.metadata = metadata }
        return span
    }

    /// A delivery to a subscriber: a span that starts and ends as it is handed to the session.
    func delivered(_ message: PublishedMessage, session: SessionID) {
        let span = tracer.startSpan("deliver \(message.subject)", context: context(of: message.metadata), ofKind: .consumer)
        span.attributes["messaging.system"] = "relay"
        span.attributes["messaging.destination.name"] = message.subject
        span.attributes["relay.session"] = Int(session)
        span.end()
    }

    /// A request sent to a service's instance; ended by `requestEnded`.
    func requestStarted(service: String, method: String, metadata: [String: String]?) -> any Span {
        let span = tracer.startSpan("request \(service).\(method)", context: context(of: metadata), ofKind: .internal)
        span.attributes["rpc.service"] = service
        span.attributes["rpc.method"] = method
        return span
    }

    /// Durable publications handed to the store; ended once they are on disk.
    func storeStarted(_ copies: [QueueCopy]) -> (any Span)? {
        guard let first = copies.first else { return nil }
        let span = tracer.startSpan("queue store", context: context(of: first.queued.message.metadata), ofKind: .internal)
        span.attributes["relay.queues"] = Array(Set(copies.map(\.queue))).sorted().joined(separator: ",")
        span.attributes["relay.messages"] = copies.count
        return span
    }
}

/// Reads and writes trace context in a message's metadata (LIME metadata, NATS headers), whose
/// keys a peer may have written in any case.
struct MetadataCarrier: Extractor, Injector {
    func extract(key: String, from carrier: [String: String]) -> String? {
        if let value = carrier[key] { return value }
        return carrier.first { $0.key.lowercased() == key.lowercased() }?.value
    }

    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) {
        carrier[key] = value
    }
}
