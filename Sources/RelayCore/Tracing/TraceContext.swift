/// W3C trace context (https://www.w3.org/TR/trace-context/) as a message carries it: the
/// `traceparent` and `tracestate` keys of LIME metadata or NATS headers.
///
/// The hub keeps both as they arrive on every hop (publications, requests, queued messages and
/// their redeliveries), gives a response the context of its request when it carries none of its
/// own, and, when asked to (`HubCore.Configuration.traceIdentifiers`), starts a trace for a
/// message that comes without a valid one.
public enum TraceContext {
    public static let parentKey = "traceparent"
    public static let stateKey = "tracestate"

    /// The trace context in `metadata`: its `traceparent` and `tracestate`, if any (keys compared
    /// without case, as HTTP headers are, since NATS clients may capitalise them).
    public static func carried(in metadata: [String: String]?) -> [String: String] {
        guard let metadata, !metadata.isEmpty else { return [:] }
        var context: [String: String] = [:]
        if let parent = metadata[parentKey] {
            context[parentKey] = parent
            if let state = metadata[stateKey] { context[stateKey] = state }
            return context
        }
        for (key, value) in metadata where key.utf8.count == parentKey.utf8.count || key.utf8.count == stateKey.utf8.count {
            let lowered = key.lowercased()
            if lowered == parentKey || lowered == stateKey { context[lowered] = value }
        }
        return context[parentKey] == nil ? [:] : context
    }

    /// `metadata` with the trace context of `origin` added when it carries none of its own: what a
    /// response gets from its request.
    public static func inherited(_ metadata: [String: String]?, from origin: [String: String]) -> [String: String]? {
        guard !origin.isEmpty, carried(in: metadata).isEmpty else { return metadata }
        return (metadata ?? [:]).merging(origin) { own, _ in own }
    }

    /// Whether `value` is a `traceparent` a version-00 reader accepts: `VV-TRACEID-PARENTID-FLAGS`
    /// in lowercase hex, neither id all zeros, version not `ff` (a later version may add fields
    /// after a dash).
    public static func isValidParent(_ value: String) -> Bool {
        let bytes = Array(value.utf8)
        guard bytes.count >= 55, bytes[2] == dash, bytes[35] == dash, bytes[52] == dash else { return false }
        guard bytes.count == 55 || (bytes[55] == dash && !(bytes[0] == zero && bytes[1] == zero)) else { return false }
        let fields = [0..<2, 3..<35, 36..<52, 53..<55]
        for field in fields where !bytes[field].allSatisfy(isLowercaseHex) { return false }
        if bytes[0] == UInt8(ascii: "f") && bytes[1] == UInt8(ascii: "f") { return false }
        if bytes[3..<35].allSatisfy({ $0 == zero }) || bytes[36..<52].allSatisfy({ $0 == zero }) { return false }
        return true
    }

    /// The trace id (32 hex digits) of a valid `traceparent`.
    public static func traceID(of parent: String) -> Substring? {
        guard isValidParent(parent) else { return nil }
        return parent.dropFirst(3).prefix(32)
    }

    private static let dash = UInt8(ascii: "-")
    private static let zero = UInt8(ascii: "0")
    private static func isLowercaseHex(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
    }
}

/// Makes the ids of new traces: a xoshiro256** generator the hub seeds from the system's random
/// source (the core reads no clock and no device; tests give a fixed seed).
/// Any seeded use may draw from it too (`RandomNumberGenerator`): tests that need the same
/// random sequence every run do.
public struct TraceIdentifierGenerator: RandomNumberGenerator, Sendable {
    private var state: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        // SplitMix64 spreads one seed over the four words, as xoshiro's authors advise.
        var mix = seed
        func next() -> UInt64 {
            mix &+= 0x9E37_79B9_7F4A_7C15
            var z = mix
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        state = (next(), next(), next(), next())
    }

    public mutating func next() -> UInt64 {
        let result = ((state.1 &* 5) << 7 | (state.1 &* 5) >> 57) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = state.3 << 45 | state.3 >> 19
        return result
    }

    /// A new sampled `traceparent`: version 00, a random trace id and parent id, flags 01.
    public mutating func traceParent() -> String {
        var high = next()
        let low = next()
        var span = next()
        // Neither id may be all zeros.
        if high == 0 && low == 0 { high = 1 }
        if span == 0 { span = 1 }
        return "00-" + Self.hex(high) + Self.hex(low) + "-" + Self.hex(span) + "-01"
    }

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.utf8.count) + digits
    }
}
