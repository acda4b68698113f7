// W3C trace context on the hub's hops (see TraceContext): carried as it came, given to responses
// from their requests, and started for messages without one when the configuration asks.
extension HubCore {
    /// Whether a publication needs `traceMessage`: the core creates trace context, remembers
    /// requests' contexts for their replies, or this one may be such a request.
    func tracesPublication(_ message: PublishedMessage) -> Bool {
        traceIdentifiers != nil || !replyTraces.isEmpty || (message.replyTo != nil && !message.metadata.isEmpty)
    }

    /// Gives a publication its trace context: its own, else its request's when it is a reply
    /// (published on a request's reply subject), else a new one when the core creates them; and
    /// remembers it for the replies when the publication is a request.
    mutating func traceMessage(_ message: inout PublishedMessage) {
        var context = TraceContext.carried(in: message.metadata)
        if !replyTraces.isEmpty, let request = replyTraces.forget(message.subject), context.isEmpty {
            message.metadata.merge(request) { own, _ in own }
            context = request
        }
        if startTrace(in: &message.metadata) { context = TraceContext.carried(in: message.metadata) }
        if let replyTo = message.replyTo, !context.isEmpty { replyTraces.remember(context, for: replyTo) }
    }

    /// Starts a trace in `metadata` when the core creates trace context and it has no valid
    /// `traceparent` (an invalid one is replaced and its `tracestate` dropped, as the W3C
    /// recommendation says). Returns whether it did.
    @discardableResult
    mutating func startTrace(in metadata: inout [String: String]) -> Bool {
        guard var generator = traceIdentifiers else { return false }
        if let parent = TraceContext.carried(in: metadata)[TraceContext.parentKey], TraceContext.isValidParent(parent) { return false }
        for key in metadata.keys where key.lowercased() == TraceContext.parentKey || key.lowercased() == TraceContext.stateKey {
            metadata[key] = nil
        }
        metadata[TraceContext.parentKey] = generator.traceParent()
        traceIdentifiers = generator
        return true
    }

    /// A request's command with trace context started in it when the core creates it.
    mutating func tracedRequest(_ command: LIMECommand) -> LIMECommand {
        guard traceIdentifiers != nil else { return command }
        var command = command
        var metadata = command.header.metadata ?? [:]
        if startTrace(in: &metadata) { command.header.metadata = metadata }
        return command
    }

    /// Whether the core must see a publication in full rather than let it be forwarded from its
    /// bytes: it creates trace context, or the subject is a reply subject awaiting a request's.
    func tracingNeedsPublication(of subject: String) -> Bool {
        traceIdentifiers != nil || (!replyTraces.isEmpty && replyTraces[subject] != nil)
    }
}
