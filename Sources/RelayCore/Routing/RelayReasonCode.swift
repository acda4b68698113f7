/// Reason codes Relay adds to LIME's for what LIME has no code for (LIME's application range starts at 101).
public enum RelayReasonCode {
    // Within LIME's authorization range: 31 (`ReasonCode.authorizationError`) is a refused
    // administration, 32 (`authorizationUnauthorizedSender`) a message or command to a node the
    // sender may not reach; these say which other permission refused.
    /// The session's permissions do not allow publishing to the subject.
    public static let publishNotPermitted = 33
    /// The session's permissions do not allow subscribing to the filter (or consuming the queue).
    public static let subscribeNotPermitted = 34
    /// The session's permissions do not allow serving the service or calling the method.
    public static let serviceNotPermitted = 35

    /// An instance asks the hub to deliver the request once more (nuropb's call-again).
    public static let callAgain = 110
    /// The request's deadline passed before a response came.
    public static let timedOut = 120
    /// The caller cancelled the request.
    public static let cancelled = 121
    /// The instance handling the request disconnected.
    public static let instanceLost = 122
    /// An instance asked to call again a request that had already been called again.
    public static let callAgainRefused = 123
    /// A registration conflicts with one already made.
    public static let registrationConflict = 124
    /// A per-session limit (subscriptions, requests in flight) was reached.
    public static let limitReached = 125
    /// A consumer's `failed` notification with this code asks for a redelivery (nak); any other
    /// code terminates the message (to the dead letters).
    public static let nak = 130
}

extension Reason {
    private static let replacementPrefix = "Another session was established as node"

    /// Why the hub ends a session when a new one of the same node is established.
    public static func sessionReplaced(by node: Node) -> Reason {
        Reason(code: ReasonCode.sessionError, description: "\(replacementPrefix) '\(node)'")
    }

    /// Whether the session ended because another took its node: a client that reconnected then
    /// would take it back, and the two would go on replacing each other.
    public var isSessionReplacement: Bool {
        code == ReasonCode.sessionError && description.hasPrefix(Self.replacementPrefix)
    }
}
