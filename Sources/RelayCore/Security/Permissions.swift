/// What one session may do, checked by the routing core for every dialect.
///
/// Each operation has a rule of allow and deny filters, as nats-server's permissions: with no
/// allow list everything is allowed, with one only what it matches; a deny always wins. A session
/// without `Permissions` (nothing configured for it) may do everything it could before Relay had
/// permissions, except calling `admin` methods.
public struct Permissions: Sendable, Hashable {
    /// Subjects the session may publish to.
    public var publish: SubjectRule
    /// Subjects (and queue groups) the session may subscribe to.
    public var subscribe: SubjectRule
    /// Services the session may register as an instance of (names, `*` globs).
    public var serve: NameRule
    /// Methods the session may call, as `service/method` (`inventory/*`, `*`).
    public var call: NameRule
    /// Nodes the session may send messages and commands to (`bob@relay.local`, `*@relay.local`).
    public var send: NameRule
    /// Whether the session administers the hub: durable queues, `admin` methods.
    public var admin: Bool

    public init(
        publish: SubjectRule = .all, subscribe: SubjectRule = .all, serve: NameRule = .all, call: NameRule = .all,
        send: NameRule = .all, admin: Bool = false
    ) {
        self.publish = publish
        self.subscribe = subscribe
        self.serve = serve
        self.call = call
        self.send = send
        self.admin = admin
    }

    /// Everything allowed, administration included.
    public static let everything = Permissions(admin: true)

    // MARK: - Checks

    /// Whether the session may publish to `subject` (a subject without wildcards).
    public func allowsPublish(to subject: String) -> Bool {
        publish.allows(subject: subject)
    }

    /// Whether the session may subscribe to `filter`, in `queue` if given.
    public func allowsSubscribe(to filter: String, queue: String?) -> Bool {
        subscribe.allows(filter: filter, queue: queue)
    }

    /// Whether a subscription to `filter` must have each delivery's subject checked against the
    /// deny list: it is allowed, but a denied subject lies within it (`orders.>` with
    /// `orders.secret` denied), as nats-server checks on delivery.
    public func subscriptionNeedsDeliveryCheck(_ filter: String, queue: String?) -> Bool {
        subscribe.deny.contains { $0.overlaps(filter: filter, queue: queue) }
    }

    /// Whether a delivery on `subject` may reach a subscription that needs the check.
    public func allowsDelivery(of subject: String, queue: String?) -> Bool {
        !subscribe.deny.contains { $0.matches(subject: subject, queue: queue) }
    }

    public func allowsServing(_ service: String) -> Bool {
        serve.allows(service)
    }

    public func allowsCalling(_ service: String, method: String) -> Bool {
        call.allows("\(service)/\(method)")
    }

    /// Whether the session may send to `node`; patterns name identities, or nodes when they
    /// hold a `/`.
    public func allowsSending(to node: Node) -> Bool {
        send.allows(node.identity.description) || (node.instance != nil && send.allows(node.description))
    }
}

/// Allow and deny filters over subjects, each optionally limited to a queue group
/// (`"orders.* workers"`, as nats-server writes it).
public struct SubjectRule: Sendable, Hashable {
    /// Nil: everything not denied is allowed.
    public var allow: [SubjectPattern]?
    public var deny: [SubjectPattern]

    public init(allow: [SubjectPattern]? = nil, deny: [SubjectPattern] = []) {
        self.allow = allow
        self.deny = deny
    }

    public static let all = SubjectRule()

    /// Parses `"subject"` or `"subject queue"` entries; nil with the first invalid one.
    public init(allow: [String]?, deny: [String]) throws(PermissionError) {
        self.allow = try allow.map { entries throws(PermissionError) in try entries.map(SubjectPattern.init(parsing:)) }
        self.deny = try deny.map(SubjectPattern.init(parsing:))
    }

    /// Whether a publication on `subject` is allowed.
    func allows(subject: String) -> Bool {
        if let allow, !allow.contains(where: { $0.matches(subject: subject, queue: nil) }) { return false }
        return !deny.contains { $0.matches(subject: subject, queue: nil) }
    }

    /// Whether a subscription to `filter` (in `queue`) is allowed: some allowed pattern covers
    /// every subject the filter matches, and no denied one covers the filter.
    func allows(filter: String, queue: String?) -> Bool {
        if let allow, !allow.contains(where: { $0.covers(filter: filter, queue: queue) }) { return false }
        return !deny.contains { $0.covers(filter: filter, queue: queue) }
    }

}

/// A subject filter in a permission, optionally for one queue group (which may use `*` globs).
public struct SubjectPattern: Sendable, Hashable, CustomStringConvertible {
    public var filter: String
    public var queue: String?

    public init(filter: String, queue: String? = nil) {
        self.filter = filter
        self.queue = queue
    }

    init(parsing text: String) throws(PermissionError) {
        let parts = text.split(separator: " ", omittingEmptySubsequences: true)
        guard parts.count == 1 || parts.count == 2, let first = parts.first else {
            throw PermissionError(description: "'\(text)' is not 'subject' or 'subject queue'")
        }
        if let error = Subject.filterError(String(first)) { throw PermissionError(description: error) }
        self.filter = String(first)
        self.queue = parts.count == 2 ? String(parts[1]) : nil
    }

    public var description: String { queue.map { "\(filter) \($0)" } ?? filter }

    /// Whether the pattern applies to a subscription in `queue`: a pattern without a queue applies
    /// to every subscription, one with a queue to that group's only.
    private func applies(toQueue queue: String?) -> Bool {
        guard let pattern = self.queue else { return true }
        guard let queue else { return false }
        return Glob.matches(pattern, queue)
    }

    /// Whether the pattern matches a subject (of a publication or a delivery).
    func matches(subject: String, queue: String?) -> Bool {
        applies(toQueue: queue) && Subject.matches(filter: filter, subject: subject)
    }

    /// Whether every subject `filter` matches, this pattern matches too.
    func covers(filter other: String, queue: String?) -> Bool {
        applies(toQueue: queue) && SubjectPattern.isSubset(other, of: filter)
    }

    /// Whether some subject matches both `filter` and this pattern.
    func overlaps(filter other: String, queue: String?) -> Bool {
        applies(toQueue: queue) && SubjectPattern.overlap(other, filter)
    }

    /// Whether every subject `inner` matches is matched by `outer`.
    static func isSubset(_ inner: String, of outer: String) -> Bool {
        let inner = inner.split(separator: ".", omittingEmptySubsequences: false)
        let outer = outer.split(separator: ".", omittingEmptySubsequences: false)
        for (position, token) in outer.enumerated() {
            if token == ">" { return inner.count > position }
            guard position < inner.count else { return false }
            let candidate = inner[position]
            if candidate == ">" { return false }
            if token == "*" { continue }
            if candidate != token { return false }
        }
        return inner.count == outer.count
    }

    /// Whether some subject matches both filters.
    static func overlap(_ first: String, _ second: String) -> Bool {
        let first = first.split(separator: ".", omittingEmptySubsequences: false)
        let second = second.split(separator: ".", omittingEmptySubsequences: false)
        var position = 0
        while position < first.count && position < second.count {
            let (a, b) = (first[position], second[position])
            if a == ">" || b == ">" { return true }
            if a != "*" && b != "*" && a != b { return false }
            position += 1
        }
        return first.count == second.count
    }
}

/// Allow and deny patterns over names (services, `service/method`, nodes), with `*` matching any
/// run of characters, compared without case.
public struct NameRule: Sendable, Hashable {
    /// Nil: everything not denied is allowed.
    public var allow: [String]?
    public var deny: [String]

    public init(allow: [String]? = nil, deny: [String] = []) {
        self.allow = allow
        self.deny = deny
    }

    public static let all = NameRule()

    public func allows(_ name: String) -> Bool {
        if let allow, !allow.contains(where: { Glob.matches($0, name) }) { return false }
        return !deny.contains { Glob.matches($0, name) }
    }

}

/// A permission that cannot be read.
public struct PermissionError: Error, Sendable, Hashable, CustomStringConvertible {
    public var description: String

    public init(description: String) {
        self.description = description
    }
}

/// `*` matches any run of characters (none included); everything else itself, without case.
enum Glob {
    static func matches(_ pattern: String, _ text: String) -> Bool {
        let pattern = Array(pattern.lowercased().utf8)
        let text = Array(text.lowercased().utf8)
        // The usual greedy walk with one backtrack point: linear in practice, no recursion.
        var (p, t) = (0, 0)
        var star: Int?
        var resume = 0
        while t < text.count {
            if p < pattern.count && pattern[p] == UInt8(ascii: "*") {
                star = p
                resume = t
                p += 1
            } else if p < pattern.count && pattern[p] == text[t] {
                p += 1
                t += 1
            } else if let star {
                p = star + 1
                resume += 1
                t = resume
            } else {
                return false
            }
        }
        while p < pattern.count && pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }
}
