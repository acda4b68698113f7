/// A JSON value that may still be the bytes it arrived in.
///
/// The LIME scanner keeps a message's `content` and a command's `resource` as their validated
/// JSON text: the hub forwards them to subscribers as they came, and builds the value only when
/// something asks for it (a service handler, a NATS subscriber of a string). Equality and hashing
/// are those of the value, whichever form each side is in.
public struct JSONContent: Sendable, Hashable {
    private enum Storage: Sendable {
        case value(JSONValue)
        /// One JSON value's text, already validated, without surrounding whitespace.
        case text([UInt8])
    }

    private let storage: Storage

    public init(_ value: JSONValue) { storage = .value(value) }

    /// Wraps text the scanner has validated as exactly one JSON value.
    package init(validatedText: [UInt8]) { storage = .text(validatedText) }

    /// The value, parsed from the text if that is what is held.
    public var value: JSONValue {
        switch storage {
        case .value(let value): return value
        case .text(let bytes):
            // Validated when it was scanned; depth too, so this cannot fail.
            return (try? JSONParser.parse(bytes, maximumDepth: .max)) ?? .null
        }
    }

    /// Whether the value is a JSON string, without parsing it.
    public var isString: Bool {
        switch storage {
        case .value(let value): return value.stringValue != nil
        case .text(let bytes): return bytes.first == UInt8(ascii: "\"")
        }
    }

    /// Whether the value is `null`, without parsing it.
    public var isNull: Bool {
        switch storage {
        case .value(let value): return value == .null
        case .text(let bytes): return bytes.first == UInt8(ascii: "n")
        }
    }

    /// The string, when the value is a JSON string.
    public var stringValue: String? { isString ? value.stringValue : nil }

    /// The JSON text: as it arrived, or compact.
    public var jsonBytes: [UInt8] {
        switch storage {
        case .value(let value): return JSONWriter.bytes(value)
        case .text(let bytes): return bytes
        }
    }

    /// Appends the JSON text to `output`.
    func write(into output: inout [UInt8]) {
        switch storage {
        case .value(let value): JSONWriter.write(value, into: &output)
        case .text(let bytes): output.append(contentsOf: bytes)
        }
    }

    public static func == (lhs: JSONContent, rhs: JSONContent) -> Bool {
        if case .text(let left) = lhs.storage, case .text(let right) = rhs.storage, left == right { return true }
        return lhs.value == rhs.value
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(value) }
}
