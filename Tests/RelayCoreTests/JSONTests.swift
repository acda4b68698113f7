import Testing

@testable import RelayCore

@Suite struct JSONTests {
    @Test func parsesEveryKindOfValue() throws {
        let value = try JSONParser.parse(#" { "a": [1, -2.5e3, true, false, null], "b": {"c": "d"}, "e": "" } "#)
        #expect(value["a"] == [1, .number(JSONNumber(validatedLiteral: "-2.5e3")), true, false, nil])
        #expect(value["b"]?["c"] == "d")
        #expect(value["e"] == "")
    }

    @Test func keepsNumberLiteralsAndMemberOrder() throws {
        let text = #"{"z":12345678901234567890,"a":1.50,"m":-0}"#
        let value = try JSONParser.parse(text)
        #expect(JSONWriter.string(value) == text)
        #expect(value.objectValue?.keys == ["z", "a", "m"])
    }

    @Test func decodesEscapesAndSurrogatePairs() throws {
        let value = try JSONParser.parse(#""quote \" backslash \\ slash \/ \b\f\n\r\t \u00e9 \ud83d\ude00""#)
        #expect(value == .string("quote \" backslash \\ slash / \u{08}\u{0C}\n\r\t é 😀"))
    }

    @Test func writerEscapesWhatItMust() throws {
        let text = "a\"b\\c\nd\u{01}é"
        let written = JSONWriter.string(.string(text))
        #expect(written == #""a\"b\\c\nd\u0001é""#)
        #expect(try JSONParser.parse(written) == .string(text))
    }

    @Test(arguments: [
        "", "{", "}", "[1,]", "{\"a\":}", "{\"a\" 1}", "01", "1.", "-", "tru", "nul", "\"abc", "\"\\x\"", "\"\\ud800\"",
        "{\"a\":1}x", "[1 2]", "\"tab\there\"", "{'a':1}",
    ])
    func rejectsMalformedInput(_ text: String) {
        #expect(throws: JSONParseError.self) { try JSONParser.parse(text) }
    }

    @Test func rejectsInvalidUTF8() {
        #expect(throws: JSONParseError.self) { try JSONParser.parse([0x22, 0xFF, 0xFE, 0x22]) }
    }

    @Test func boundsNestingDepth() throws {
        let deep = String(repeating: "[", count: 65) + String(repeating: "]", count: 65)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(deep, maximumDepth: 64) }
        let fine = String(repeating: "[", count: 64) + String(repeating: "]", count: 64)
        _ = try JSONParser.parse(fine, maximumDepth: 64)
        // Far deeper than any stack could recurse: refused, not a crash.
        let hostile = String(repeating: "{\"a\":", count: 100_000)
        #expect(throws: JSONParseError.self) { try JSONParser.parse(hostile) }
    }

    @Test func objectEqualityIgnoresOrder() throws {
        #expect(try JSONParser.parse(#"{"a":1,"b":2}"#) == JSONParser.parse(#"{"b":2,"a":1}"#))
        #expect(try JSONParser.parse(#"{"a":1,"b":2}"#) != JSONParser.parse(#"{"a":1,"b":3}"#))
    }

    /// Strings are read eight bytes a step where nothing in them needs a look: every byte that
    /// does (quotes, escapes, control characters, bytes at either side of each threshold, UTF-8
    /// sequences, invalid UTF-8) is still seen, at every position around the word boundaries, and
    /// parsing and skipping agree on the value's end and on the error.
    @Test func stringsReadAWordAtATimeStillSeeEveryByte() throws {
        let inserts: [[UInt8]] = [
            [0x1F], [0x20], [0x21], [0x01], [0x22, 0x22], [0x23], [0x5B], [0x5C, 0x6E], [0x5C, 0x5C], [0x5D], [0x7F],
            Array("é".utf8), Array("😀".utf8), [0xFF], [0xC3], [0x5C, 0x78],
        ]
        for length in 0..<20 {
            for position in 0...length {
                for insert in inserts {
                    var text: [UInt8] = [0x22] + [UInt8](repeating: UInt8(ascii: "a"), count: position) + insert
                    text += [UInt8](repeating: UInt8(ascii: "b"), count: length - position) + [0x22]
                    // What a byte-by-byte reading gives: the insert decides, the rest is plain.
                    let plain = String(repeating: "a", count: position) + "%@" + String(repeating: "b", count: length - position)
                    let expected: JSONValue?
                    switch insert {
                    case [0x1F], [0x01], [0xFF], [0xC3], [0x5C, 0x78]: expected = nil
                    case [0x22, 0x22]: expected = nil  // a string, then another right after it
                    case [0x5C, 0x6E]: expected = (.string(plain.replacingOccurrences("%@", "\n")))
                    case [0x5C, 0x5C]: expected = (.string(plain.replacingOccurrences("%@", "\\")))
                    default: expected = (.string(plain.replacingOccurrences("%@", String(decoding: insert, as: UTF8.self))))
                    }
                    let parsed = Result { () throws(JSONParseError) in try JSONParser.parse(text) }
                    let skipped = text.withUnsafeBufferPointer { bytes in
                        var parser = JSONParser(bytes: bytes, maximumDepth: 4)
                        return Result { () throws(JSONParseError) in
                            try parser.skipValue(depth: 0)
                            parser.skipWhitespace()
                            if parser.index != bytes.count { throw parser.error("unexpected data after the JSON value") }
                        }
                    }
                    switch (expected, parsed, skipped) {
                    case (let value?, .success(let got), .success):
                        #expect(got == value, "\(text)")
                    case (nil, .failure(let parseError), .failure(let skipError)):
                        #expect(parseError == skipError, "\(text)")
                    default:
                        Issue.record("\(text): expected \(expected), parsed \(parsed), skipped \(skipped)")
                    }
                }
            }
        }
    }
}

extension String {
    fileprivate func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
