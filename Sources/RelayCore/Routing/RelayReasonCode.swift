/// Reason codes Relay adds to LIME's for what LIME has no code for (LIME's application range starts at 101).
public enum RelayReasonCode {
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
