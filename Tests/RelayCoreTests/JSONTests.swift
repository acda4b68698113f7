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
}
