/// How publications cross the cluster: as NATS messages that other NATS clients of the cluster
/// read as they are, with the publisher's node in one header so that LIME subscribers on other
/// hubs see who sent it (docs/CLUSTER.md).
extension PublishedMessage {
    /// The header that carries the publisher's node between hubs.
    public static let publisherHeader = "Relay-From"
    /// Headers that carry the hub's `#` metadata between hubs: `Relay-Meta-queue` for `#queue`.
    public static let metadataHeaderPrefix = "Relay-Meta-"

    /// Whether a header is in the hubs' namespace (`Relay-…`, any case). Checked on every
    /// publication crossing the cluster, so without making a string.
    public static func isRelayHeader(_ name: String) -> Bool {
        var bytes = name.utf8.makeIterator()
        for expected in "relay-".utf8 {
            guard let byte = bytes.next(), byte | 0x20 == expected else { return false }
        }
        return true
    }

    /// The publication as a NATS message for the cluster: Content-Type, metadata and status as
    /// headers, the payload as NATS clients get it from a hub.
    public var clusterForm: (subject: String, replyTo: String?, headers: NATSHeaders?, payload: [UInt8]) {
        guard case .message(let subject, _, let replyTo, var headers, let payload) = natsOperation(sid: "", headersEnabled: true) else {
            preconditionFailure("natsOperation renders a message")
        }
        // `Relay-From` and `Relay-Meta-` are the hubs' to write: a client's own (a NATS header, a
        // LIME metadata key) would pass for another publisher or the hub's metadata elsewhere.
        headers?.fields.removeAll { field in
            guard Self.isRelayHeader(field.name) else { return false }
            let name = field.name.lowercased()
            return name == "relay-from" || name.hasPrefix("relay-meta-")
        }
        if let publisher {
            headers = headers ?? NATSHeaders()
            headers!.append(Self.publisherHeader, publisher.description)
        }
        // The hub's own metadata (`#queue`, `#deadReason`... of a dead letter) crosses too.
        for key in metadata.keys.sorted() where key.hasPrefix("#") {
            headers = headers ?? NATSHeaders()
            headers!.append(Self.metadataHeaderPrefix + key.dropFirst(), metadata[key]!)
        }
        return (subject, replyTo, headers, payload)
    }

    /// A message from the cluster as the core's publication: the publisher from `Relay-From`,
    /// Content-Type as the type, other headers as metadata, the status as it is.
    public init(clusterSubject subject: String, replyTo: String?, headers: NATSHeaders?, payload: [UInt8]) {
        guard let headers else {
            self.init(subject: subject, replyTo: replyTo, body: .bytes(payload))
            return
        }
        var (type, metadata) = headers.typeAndMetadata
        let publisher = metadata.removeValue(forKey: Self.publisherHeader).flatMap(Node.init)
        for key in metadata.keys where key.hasPrefix(Self.metadataHeaderPrefix) {
            metadata["#" + key.dropFirst(Self.metadataHeaderPrefix.count)] = metadata.removeValue(forKey: key)
        }
        self.init(
            subject: subject, replyTo: replyTo, publisher: publisher, type: type, body: .bytes(payload), metadata: metadata,
            status: headers.status)
    }
}
