/// Subjects: dot-separated tokens such as `orders.eu.created`.
///
/// A filter may use `*` for exactly one token and `>` (last only) for one or more trailing tokens,
/// as NATS does. Tokens are non-empty and contain no whitespace.
public enum Subject {
    /// The longest subject or filter accepted, in bytes.
    public static let maximumLength = 1024

    /// Why `subject` cannot be published to, or nil when it can.
    public static func publishError(_ subject: String) -> String? {
        if isPlainSubject(subject) { return nil }
        if let error = commonError(subject) { return error }
        for token in subject.split(separator: ".", omittingEmptySubsequences: false) where token == "*" || token == ">" {
            return "Subject '\(subject)' contains the wildcard '\(token)'; wildcards are for subscriptions"
        }
        return nil
    }

    /// Why `filter` cannot be subscribed to, or nil when it can.
    public static func filterError(_ filter: String) -> String? {
        if let error = commonError(filter) { return error }
        let tokens = filter.split(separator: ".", omittingEmptySubsequences: false)
        for (position, token) in tokens.enumerated() {
            if token == ">" && position != tokens.count - 1 {
                return "Filter '\(filter)': '>' must be the last token"
            }
            if token.count > 1 && (token.contains("*") || token.contains(">")) {
                return "Filter '\(filter)': a wildcard must be a whole token ('\(token)')"
            }
        }
        return nil
    }

    /// The common case, checked in one pass over the bytes without allocating: ASCII, no
    /// whitespace, no empty token, no wildcard token. Anything else takes the detailed path.
    private static func isPlainSubject(_ subject: String) -> Bool {
        subject.utf8.withContiguousStorageIfAvailable { bytes -> Bool in
            guard !bytes.isEmpty, bytes.count <= maximumLength else { return false }
            var tokenLength = 0
            var wildcard = false
            for byte in bytes {
                switch byte {
                case UInt8(ascii: "."):
                    if tokenLength == 0 || (tokenLength == 1 && wildcard) { return false }
                    tokenLength = 0
                    continue
                case UInt8(ascii: "*"), UInt8(ascii: ">"):
                    wildcard = tokenLength == 0
                case 0...0x20, 0x7F...:
                    return false
                default:
                    wildcard = false
                }
                tokenLength += 1
            }
            return tokenLength > 0 && !(tokenLength == 1 && wildcard)
        } ?? false
    }

    private static func commonError(_ text: String) -> String? {
        if text.isEmpty { return "The subject is empty" }
        if text.utf8.count > maximumLength { return "The subject is longer than \(maximumLength) bytes" }
        if text.contains(where: { $0.isWhitespace }) { return "Subject '\(text)' contains whitespace" }
        if text.split(separator: ".", omittingEmptySubsequences: false).contains(where: \.isEmpty) {
            return "Subject '\(text)' has an empty token"
        }
        return nil
    }

    /// Whether `filter` matches `subject`, token by token: the plain definition the index is tested against.
    public static func matches(filter: String, subject: String) -> Bool {
        let filterTokens = filter.split(separator: ".", omittingEmptySubsequences: false)
        let subjectTokens = subject.split(separator: ".", omittingEmptySubsequences: false)
        for (position, token) in filterTokens.enumerated() {
            if token == ">" { return subjectTokens.count > position }
            guard position < subjectTokens.count else { return false }
            if token != "*" && token != subjectTokens[position] { return false }
        }
        return filterTokens.count == subjectTokens.count
    }
}
