/// A LIME identity, `name@domain`; the name may be absent (a domain alone names a server).
///
/// Equality ignores case, as the LIME specification compares node parts case-insensitively;
/// the original spelling is kept for display and for the wire.
public struct Identity: Sendable, Hashable, CustomStringConvertible {
    public let name: String?
    public let domain: String

    public init(name: String?, domain: String) {
        self.name = name
        self.domain = domain
    }

    /// Parses `name@domain` or `domain`.
    public init?(_ text: String) {
        guard let node = Node(text), node.instance == nil else { return nil }
        self = node.identity
    }

    public var description: String {
        if let name { return "\(name)@\(domain)" }
        return domain
    }

    public static func == (lhs: Identity, rhs: Identity) -> Bool {
        lhs.name?.lowercased() == rhs.name?.lowercased() && lhs.domain.lowercased() == rhs.domain.lowercased()
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(name?.lowercased())
        hasher.combine(domain.lowercased())
    }
}

/// A LIME node, `name@domain/instance`: an identity and, optionally, one of its connected instances.
public struct Node: Sendable, Hashable, CustomStringConvertible {
    public let identity: Identity
    public let instance: String?

    public init(identity: Identity, instance: String?) {
        self.identity = identity
        self.instance = instance
    }

    public init(name: String?, domain: String, instance: String? = nil) {
        self.identity = Identity(name: name, domain: domain)
        self.instance = instance
    }

    /// Parses a node as the LIME specification's grammar allows:
    /// `^(?:([^"&'/:<>@]{1,1023})@)?([^/@]{1,1023})(?:/(.{1,1023}))?$`.
    public init?(_ text: String) {
        // Every envelope names one or two nodes: ASCII ones are read byte by byte.
        if let node = Self.parseASCII(text) {
            self = node
            return
        }
        var rest = Substring(text)
        var instance: String?
        if let slash = rest.firstIndex(of: "/") {
            let instancePart = rest[rest.index(after: slash)...]
            guard (1...1023).contains(instancePart.count) else { return nil }
            instance = String(instancePart)
            rest = rest[..<slash]
        }
        var name: String?
        if let at = rest.firstIndex(of: "@") {
            let namePart = rest[..<at]
            guard (1...1023).contains(namePart.count),
                !namePart.contains(where: { "\"&'/:<>@".contains($0) })
            else { return nil }
            name = String(namePart)
            rest = rest[rest.index(after: at)...]
        }
        guard (1...1023).contains(rest.count), !rest.contains("@"), !rest.contains("/") else { return nil }
        self.identity = Identity(name: name, domain: String(rest))
        self.instance = instance
    }

    /// The ASCII case, without Character processing: nil when `text` is not ASCII or not a valid
    /// node (the general parser then decides, and gives the same answer for ASCII text).
    private static func parseASCII(_ text: String) -> Node? {
        let bytes = text.utf8
        guard bytes.allSatisfy({ $0 < 0x80 }) else { return nil }
        var end = bytes.endIndex
        var instance: String?
        if let slash = bytes.firstIndex(of: UInt8(ascii: "/")) {
            let part = bytes[bytes.index(after: slash)...]
            guard (1...1023).contains(part.count) else { return nil }
            instance = String(Substring(part))
            end = slash
        }
        var start = bytes.startIndex
        var name: String?
        if let at = bytes[..<end].firstIndex(of: UInt8(ascii: "@")) {
            let part = bytes[..<at]
            let forbidden: [UInt8] = Array("\"&'/:<>@".utf8)
            guard (1...1023).contains(part.count), !part.contains(where: { forbidden.contains($0) }) else { return nil }
            name = String(Substring(part))
            start = bytes.index(after: at)
        }
        let domain = bytes[start..<end]
        guard (1...1023).contains(domain.count), !domain.contains(UInt8(ascii: "@")) else { return nil }
        return Node(identity: Identity(name: name, domain: String(Substring(domain))), instance: instance)
    }

    public var name: String? { identity.name }
    public var domain: String { identity.domain }

    /// The same node without its instance.
    public var withoutInstance: Node { Node(identity: identity, instance: nil) }

    public var description: String {
        if let instance { return "\(identity)/\(instance)" }
        return identity.description
    }

    public static func == (lhs: Node, rhs: Node) -> Bool {
        lhs.identity == rhs.identity && lhs.instance?.lowercased() == rhs.instance?.lowercased()
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(identity)
        hasher.combine(instance?.lowercased())
    }
}
