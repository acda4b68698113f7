/// A durable queue: which subjects it keeps, for how long, and how its messages are delivered.
public struct QueueConfiguration: Sendable, Equatable {
    public var name: String
    /// Subject filters whose publications the queue keeps (wildcards allowed).
    public var subjects: [String]
    /// Retention: the oldest messages are dropped (and counted) beyond these.
    public var maximumMessages: Int?
    public var maximumBytes: Int?
    public var maximumAgeSeconds: Double?
    /// How long a delivery may go unanswered before it is delivered again.
    public var ackWaitMilliseconds: Int
    /// Deliveries before a message goes to the dead letters.
    public var maximumDeliveries: Int?
    /// Where dead letters are published (with the reason); nil drops them (counted).
    public var deadLetterSubject: String?
    /// A message older than this is expired: to the dead letters, or dropped.
    public var timeToLiveSeconds: Double?

    public init(
        name: String, subjects: [String], maximumMessages: Int? = nil, maximumBytes: Int? = nil, maximumAgeSeconds: Double? = nil,
        ackWaitMilliseconds: Int = 30_000, maximumDeliveries: Int? = nil, deadLetterSubject: String? = nil,
        timeToLiveSeconds: Double? = nil
    ) {
        self.name = name
        self.subjects = subjects
        self.maximumMessages = maximumMessages
        self.maximumBytes = maximumBytes
        self.maximumAgeSeconds = maximumAgeSeconds
        self.ackWaitMilliseconds = ackWaitMilliseconds
        self.maximumDeliveries = maximumDeliveries
        self.deadLetterSubject = deadLetterSubject
        self.timeToLiveSeconds = timeToLiveSeconds
    }

    /// Why this configuration cannot be used, or nil.
    public var validationError: String? {
        if name.isEmpty || name.contains(where: { !($0.isLetter || $0.isNumber || "-_".contains($0)) }) {
            return "Queue name '\(name)' must be letters, digits, '-' or '_'"
        }
        if subjects.isEmpty { return "Queue '\(name)' needs at least one subject" }
        for subject in subjects { if let error = Subject.filterError(subject) { return error } }
        if let subject = deadLetterSubject, let error = Subject.publishError(subject) { return error }
        if ackWaitMilliseconds <= 0 { return "The ack wait must be positive" }
        if let maximum = maximumDeliveries, maximum <= 0 { return "The maximum deliveries must be positive" }
        return nil
    }

    /// The JSON form (stored, and shown by `relay queue info`).
    public var json: JSONObject {
        var object: JSONObject = [
            "name": .string(name), "subjects": .array(subjects.map { .string($0) }),
            "ackWaitMilliseconds": .number(JSONNumber(ackWaitMilliseconds)),
        ]
        if let maximumMessages { object["maxMessages"] = .number(JSONNumber(maximumMessages)) }
        if let maximumBytes { object["maxBytes"] = .number(JSONNumber(maximumBytes)) }
        if let maximumAgeSeconds { object["maxAgeSeconds"] = .number(JSONNumber(maximumAgeSeconds)) }
        if let maximumDeliveries { object["maxDeliveries"] = .number(JSONNumber(maximumDeliveries)) }
        if let deadLetterSubject { object["deadLetterSubject"] = .string(deadLetterSubject) }
        if let timeToLiveSeconds { object["ttlSeconds"] = .number(JSONNumber(timeToLiveSeconds)) }
        return object
    }

    public init(json: JSONObject) throws(Reason) {
        guard let name = json["name"]?.stringValue else {
            throw Reason(code: ReasonCode.commandInvalidArgument, description: "A queue needs a 'name'")
        }
        let subjects = json["subjects"]?.arrayValue?.compactMap(\.stringValue) ?? []
        self.init(
            name: name, subjects: subjects, maximumMessages: json["maxMessages"]?.intValue, maximumBytes: json["maxBytes"]?.intValue,
            maximumAgeSeconds: json["maxAgeSeconds"]?.doubleValue, ackWaitMilliseconds: json["ackWaitMilliseconds"]?.intValue ?? 30_000,
            maximumDeliveries: json["maxDeliveries"]?.intValue, deadLetterSubject: json["deadLetterSubject"]?.stringValue,
            timeToLiveSeconds: json["ttlSeconds"]?.doubleValue)
        if let error = validationError { throw Reason(code: ReasonCode.commandInvalidArgument, description: error) }
    }
}
