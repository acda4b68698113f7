/// How a failed service call is told over NATS: an empty reply with the NATS micro headers
/// `Nats-Service-Error` (the description) and `Nats-Service-Error-Code` (the reason code).
public enum NATSServiceError {
    public static let descriptionHeader = "Nats-Service-Error"
    public static let codeHeader = "Nats-Service-Error-Code"

    /// Adds the headers that tell `reason`.
    public static func describe(_ reason: Reason, in headers: inout NATSHeaders) {
        headers.append(descriptionHeader, reason.description)
        headers.append(codeHeader, String(reason.code))
    }
}
