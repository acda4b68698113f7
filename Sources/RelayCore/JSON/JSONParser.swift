/// Why a byte sequence is not valid JSON.
public struct JSONParseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What was wrong.
    public let message: String
    /// The byte offset where it was found.
    public let offset: Int

    public var description: String { "\(message) at byte \(offset)" }
}

/// A strict RFC 8259 JSON parser over UTF-8 bytes.
///
/// Written here rather than taken from Foundation so that the hub controls its cost, keeps number
/// literals exact and member order, and bounds nesting depth: a hostile peer cannot exhaust the stack.
public struct JSONParser {
    /// Deepest nesting of arrays and objects accepted.
    public static let defaultMaximumDepth = 64

    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0
    private let maximumDepth: Int

    init(bytes: UnsafeBufferPointer<UInt8>, maximumDepth: Int) {
        self.bytes = bytes
        self.maximumDepth = maximumDepth
    }

    /// Parses one JSON document; only whitespace may follow it.
    public static func parse(
        _ input: some Collection<UInt8>, maximumDepth: Int = defaultMaximumDepth
    ) throws(JSONParseError) -> JSONValue {
        let result: Result<JSONValue, JSONParseError>? = input.withContiguousStorageIfAvailable { buffer in
            Self.parse(buffer: buffer, maximumDepth: maximumDepth)
        }
        if let result { return try result.get() }
        return try Array(input).withUnsafeBufferPointer { Self.parse(buffer: $0, maximumDepth: maximumDepth) }.get()
    }

    /// Parses a JSON document held in a string.
    public static func parse(_ text: String, maximumDepth: Int = defaultMaximumDepth) throws(JSONParseError) -> JSONValue {
        try parse(Array(text.utf8), maximumDepth: maximumDepth)
    }

    private static func parse(buffer: UnsafeBufferPointer<UInt8>, maximumDepth: Int) -> Result<JSONValue, JSONParseError> {
        var parser = JSONParser(bytes: buffer, maximumDepth: maximumDepth)
        do throws(JSONParseError) {
            parser.skipWhitespace()
            let value = try parser.parseValue(depth: 0)
            parser.skipWhitespace()
            guard parser.index == buffer.count else { throw parser.error("unexpected data after the JSON value") }
            return .success(value)
        } catch {
            return .failure(error)
        }
    }

    func error(_ message: String) -> JSONParseError {
        JSONParseError(message: message, offset: index)
    }

    mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    mutating func parseValue(depth: Int) throws(JSONParseError) -> JSONValue {
        guard index < bytes.count else { throw error("unexpected end of input") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .bool(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .bool(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw error("unexpected character")
        }
    }

    private mutating func expectLiteral(_ literal: StaticString) throws(JSONParseError) {
        let count = literal.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw error("unexpected end of input") }
        let start = literal.utf8Start
        for offset in 0..<count where bytes[index + offset] != start[offset] {
            throw error("invalid literal")
        }
        index += count
    }

    private mutating func parseObject(depth: Int) throws(JSONParseError) -> JSONValue {
        var members: [(key: String, value: JSONValue)] = []
        try walkObject(depth: depth) { (parser: inout JSONParser, name: MemberName) throws(JSONParseError) in
            members.append((name.string, try parser.parseValue(depth: depth)))
        }
        return .object(JSONObject(members))
    }

    private mutating func parseArray(depth: Int) throws(JSONParseError) -> JSONValue {
        var elements: [JSONValue] = []
        try walkArray(depth: depth) { (parser: inout JSONParser) throws(JSONParseError) in
            elements.append(try parser.parseValue(depth: depth))
        }
        return .array(elements)
    }

    /// A member's name as `walkObject` read it: the bytes where they lie when the name has no
    /// escapes (the usual case), so that a reader looking for known names makes no string.
    struct MemberName {
        /// The name's UTF-8 bytes (validated), when it has no escapes.
        fileprivate var bytes: UnsafeBufferPointer<UInt8>
        /// The decoded name, when it has escapes.
        fileprivate var unescaped: String?

        /// A name given by its bytes, which must be valid UTF-8 without escapes.
        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        /// The name as a string.
        var string: String { unescaped ?? String(decoding: bytes, as: UTF8.self) }

        /// Whether the name is `name`, compared byte by byte.
        func `is`(_ name: StaticString) -> Bool {
            if let unescaped {
                return unescaped.utf8.elementsEqual(UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
            }
            guard bytes.count == name.utf8CodeUnitCount else { return false }
            for index in 0..<bytes.count where bytes[index] != name.utf8Start[index] { return false }
            return true
        }
    }

    /// At `{`: the grammar of an object and its errors, shared by parsing, skipping and the LIME
    /// scanner. `member` gets each member's name (empty with `readNames: false`, which only checks
    /// it) and the parser at the member's value, which it must read or skip.
    mutating func walkObject(
        depth: Int, readNames: Bool = true, _ member: (inout JSONParser, MemberName) throws(JSONParseError) -> Void
    ) throws(JSONParseError) {
        guard depth <= maximumDepth else { throw error("nesting deeper than \(maximumDepth)") }
        index += 1
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
            index += 1
            return
        }
        while true {
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw error("expected a member name") }
            var name = MemberName(bytes: UnsafeBufferPointer(start: nil, count: 0))
            let start = index + 1
            try skipString()
            if readNames {
                if bytes[start..<index - 1].contains(UInt8(ascii: "\\")) {
                    index = start - 1
                    name.unescaped = try parseString()
                } else {
                    name.bytes = UnsafeBufferPointer(rebasing: bytes[start..<index - 1])
                }
            }
            skipWhitespace()
            guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw error("expected ':'") }
            index += 1
            skipWhitespace()
            try member(&self, name)
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of input") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            if bytes[index] == UInt8(ascii: "}") {
                index += 1
                return
            }
            throw error("expected ',' or '}'")
        }
    }

    /// At `[`: the grammar of an array; `element` reads or skips each element.
    private mutating func walkArray(depth: Int, _ element: (inout JSONParser) throws(JSONParseError) -> Void) throws(JSONParseError) {
        guard depth <= maximumDepth else { throw error("nesting deeper than \(maximumDepth)") }
        index += 1
        skipWhitespace()
        if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
            index += 1
            return
        }
        while true {
            skipWhitespace()
            try element(&self)
            skipWhitespace()
            guard index < bytes.count else { throw error("unexpected end of input") }
            if bytes[index] == UInt8(ascii: ",") {
                index += 1
                continue
            }
            if bytes[index] == UInt8(ascii: "]") {
                index += 1
                return
            }
            throw error("expected ',' or ']'")
        }
    }

    private mutating func parseNumber() throws(JSONParseError) -> JSONNumber {
        let start = index
        if bytes[index] == UInt8(ascii: "-") { index += 1 }
        guard index < bytes.count, isDigit(bytes[index]) else { throw error("invalid number") }
        if bytes[index] == UInt8(ascii: "0") {
            index += 1
        } else {
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            index += 1
            guard index < bytes.count, isDigit(bytes[index]) else { throw error("invalid number") }
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            index += 1
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count, isDigit(bytes[index]) else { throw error("invalid number") }
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
        let literal = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        return JSONNumber(validatedLiteral: literal)
    }

    private func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

    mutating func parseString() throws(JSONParseError) -> String {
        index += 1  // opening quote
        let start = index
        // Fast path: no escapes. ASCII (every byte below 0x80, the usual case) needs no UTF-8 check.
        var highBits: UInt8 = 0
        skipPlainWords(&highBits)
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let slice = UnsafeBufferPointer(rebasing: bytes[start..<index])
                index += 1
                return highBits < 0x80 ? String(decoding: slice, as: UTF8.self) : try string(slice)
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw error("control character in string") }
            highBits |= byte
            index += 1
        }
        var scalars = Array(UnsafeBufferPointer(rebasing: bytes[start..<index]))
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                return try scalars.withUnsafeBufferPointer { buffer throws(JSONParseError) in try string(buffer) }
            case UInt8(ascii: "\\"):
                index += 1
                guard index < bytes.count else { throw error("unexpected end of input") }
                let escaped = bytes[index]
                index += 1
                switch escaped {
                case UInt8(ascii: "\""): scalars.append(0x22)
                case UInt8(ascii: "\\"): scalars.append(0x5C)
                case UInt8(ascii: "/"): scalars.append(0x2F)
                case UInt8(ascii: "b"): scalars.append(0x08)
                case UInt8(ascii: "f"): scalars.append(0x0C)
                case UInt8(ascii: "n"): scalars.append(0x0A)
                case UInt8(ascii: "r"): scalars.append(0x0D)
                case UInt8(ascii: "t"): scalars.append(0x09)
                case UInt8(ascii: "u"):
                    guard let scalar = Unicode.Scalar(try unicodeEscape()) else { throw error("invalid escape") }
                    scalars.append(contentsOf: UTF8.encode(scalar)!)
                default:
                    throw error("invalid escape")
                }
            default:
                if byte < 0x20 { throw error("control character in string") }
                scalars.append(byte)
                index += 1
            }
        }
        throw error("unterminated string")
    }

    /// Valid UTF-8 as a String. Checked here rather than by `String(validating:)`, whose generic
    /// path looked its metadata up on every call (a tenth of a LIME client's time).
    private func string(_ slice: UnsafeBufferPointer<UInt8>) throws(JSONParseError) -> String {
        guard UTF8Validation.isValid(slice) else { throw error("invalid UTF-8 in string") }
        return String(decoding: slice, as: UTF8.self)
    }

    // MARK: - Skipping

    /// Checks one value as `parseValue` would, with the same errors, without building it: how the
    /// LIME scanner passes over content it forwards as it arrived.
    mutating func skipValue(depth: Int) throws(JSONParseError) {
        guard index < bytes.count else { throw error("unexpected end of input") }
        switch bytes[index] {
        case UInt8(ascii: "{"):
            try walkObject(depth: depth + 1, readNames: false) { (parser: inout JSONParser, _: MemberName) throws(JSONParseError) in
                try parser.skipValue(depth: depth + 1)
            }
        case UInt8(ascii: "["):
            try walkArray(depth: depth + 1) { (parser: inout JSONParser) throws(JSONParseError) in try parser.skipValue(depth: depth + 1) }
        case UInt8(ascii: "\""): try skipString()
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): _ = try parseNumber()
        default: _ = try parseValue(depth: depth)
        }
    }

    /// Checks a string as `parseString` would, with the same errors at the same offsets, without
    /// building it.
    mutating func skipString() throws(JSONParseError) {
        index += 1  // opening quote
        var start = index
        var valid = true
        // Every byte below 0x80 since `start`: the piece is ASCII and needs no UTF-8 check.
        var highBits: UInt8 = 0
        skipPlainWords(&highBits)
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                // A backslash never falls inside a valid multi-byte sequence, so checking the
                // pieces between escapes is checking the whole.
                valid = valid && (highBits < 0x80 || UTF8Validation.isValid(UnsafeBufferPointer(rebasing: bytes[start..<index])))
                index += 1
                guard valid else { throw error("invalid UTF-8 in string") }
                return
            case UInt8(ascii: "\\"):
                valid = valid && (highBits < 0x80 || UTF8Validation.isValid(UnsafeBufferPointer(rebasing: bytes[start..<index])))
                index += 1
                guard index < bytes.count else { throw error("unexpected end of input") }
                let escaped = bytes[index]
                index += 1
                switch escaped {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    break
                case UInt8(ascii: "u"):
                    _ = try unicodeEscape()
                default:
                    throw error("invalid escape")
                }
                start = index
                highBits = 0
                skipPlainWords(&highBits)
            default:
                if byte < 0x20 { throw error("control character in string") }
                highBits |= byte
                index += 1
            }
        }
        throw error("unterminated string")
    }

    /// Passes over the whole 8-byte words ahead that hold no quote, backslash or control
    /// character (most of a string), eight bytes a step instead of one, OR-ing their high bits into
    /// `highBits`; the byte-by-byte loop reads from the first word that holds one. Each test is
    /// the exact "has a byte equal to / less than" bit trick, so no byte is misjudged.
    @inline(__always)
    private mutating func skipPlainWords(_ highBits: inout UInt8) {
        guard let base = bytes.baseAddress else { return }
        let ones: UInt64 = 0x0101_0101_0101_0101
        let highs: UInt64 = 0x8080_8080_8080_8080
        var seen: UInt64 = 0
        while index + 8 <= bytes.count {
            let word = UnsafeRawPointer(base + index).loadUnaligned(as: UInt64.self)
            let quote = word ^ (ones &* 0x22)
            let backslash = word ^ (ones &* 0x5C)
            let special = ((quote &- ones) & ~quote) | ((backslash &- ones) & ~backslash) | ((word &- ones &* 0x20) & ~word)
            if special & highs != 0 { break }
            seen |= word
            index += 8
        }
        if seen & highs != 0 { highBits |= 0x80 }
    }

    /// After `\u`: the code point, from a surrogate pair if need be.
    private mutating func unicodeEscape() throws(JSONParseError) -> UInt32 {
        let code = try parseHex4()
        if (0xD800..<0xDC00).contains(code) {
            // A high surrogate must be followed by an escaped low surrogate.
            guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u")
            else { throw error("unpaired surrogate") }
            index += 2
            let low = try parseHex4()
            guard (0xDC00..<0xE000).contains(low) else { throw error("unpaired surrogate") }
            return 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
        }
        if (0xDC00..<0xE000).contains(code) { throw error("unpaired surrogate") }
        return code
    }

    private mutating func parseHex4() throws(JSONParseError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw error("unexpected end of input") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw error("invalid \\u escape")
            }
            value = value << 4 | digit
            index += 1
        }
        return value
    }
}

/// UTF-8 validation without allocating (RFC 3629: no overlongs, no surrogates, at most U+10FFFF).
enum UTF8Validation {
    static func isValid(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var index = 0
        let count = bytes.count
        while index < count {
            let lead = bytes[index]
            if lead < 0x80 {
                index += 1
                continue
            }
            let length: Int
            var lower: UInt8 = 0x80
            var upper: UInt8 = 0xBF
            switch lead {
            case 0xC2...0xDF: length = 2
            case 0xE0: length = 3; lower = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: length = 3
            case 0xED: length = 3; upper = 0x9F
            case 0xF0: length = 4; lower = 0x90
            case 0xF1...0xF3: length = 4
            case 0xF4: length = 4; upper = 0x8F
            default: return false
            }
            guard index + length <= count else { return false }
            let second = bytes[index + 1]
            guard second >= lower, second <= upper else { return false }
            for offset in 2..<max(2, length) where bytes[index + offset] & 0xC0 != 0x80 { return false }
            index += length
        }
        return true
    }
}
