import Crypto
import CryptoExtras
import Foundation

/// A salted password hash as stored in the configuration: `pbkdf2-sha256$ROUNDS$SALT$HASH`
/// (salt and hash in base64). Passwords themselves are never stored or logged.
public struct PasswordHash: Sendable, Hashable, CustomStringConvertible {
    public static let defaultRounds = 100_000
    public let rounds: Int
    public let salt: [UInt8]
    public let hash: [UInt8]

    /// Hashes a password with a fresh random salt.
    public static func make(password: String, rounds: Int = defaultRounds) throws -> PasswordHash {
        var generator = SystemRandomNumberGenerator()
        let salt = (0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return PasswordHash(rounds: rounds, salt: salt, hash: try derive(Array(password.utf8), salt: salt, rounds: rounds))
    }

    init(rounds: Int, salt: [UInt8], hash: [UInt8]) {
        self.rounds = rounds
        self.salt = salt
        self.hash = hash
    }

    /// Parses the stored form.
    public init?(_ text: String) {
        let parts = text.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "pbkdf2-sha256", let rounds = Int(parts[1]), rounds > 0,
            let salt = Data(base64Encoded: String(parts[2])), let hash = Data(base64Encoded: String(parts[3])), !hash.isEmpty
        else { return nil }
        self.init(rounds: rounds, salt: Array(salt), hash: Array(hash))
    }

    /// Whether `password` is the one this hash was made from (compared in constant time).
    public func matches(password: [UInt8]) -> Bool {
        guard let derived = try? Self.derive(password, salt: salt, rounds: rounds), derived.count == hash.count else { return false }
        var difference: UInt8 = 0
        for (left, right) in zip(derived, hash) { difference |= left ^ right }
        return difference == 0
    }

    private static func derive(_ password: [UInt8], salt: [UInt8], rounds: Int) throws -> [UInt8] {
        let key = try KDF.Insecure.PBKDF2.deriveKey(
            from: password, salt: salt, using: .sha256, outputByteCount: 32, unsafeUncheckedRounds: rounds)
        return key.withUnsafeBytes { Array($0) }
    }

    public var description: String {
        "pbkdf2-sha256$\(rounds)$\(Data(salt).base64EncodedString())$\(Data(hash).base64EncodedString())"
    }
}

/// The stored form of a key or token (the `key` scheme, NATS `auth_token`): `sha256$HEX`.
///
/// Keys are long random strings (`relay passwd --key` makes them), so an unsalted digest keeps
/// them safe at rest and lets the hub find the user a token belongs to without trying every hash.
public struct KeyDigest: Sendable, Hashable, CustomStringConvertible {
    public let digest: [UInt8]

    /// The digest of a key's text.
    public init(key: [UInt8]) {
        digest = Array(SHA256.hash(data: key))
    }

    /// Parses the stored form.
    public init?(_ text: String) {
        let parts = text.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0] == "sha256", parts[1].utf8.count == 64 else { return nil }
        var bytes: [UInt8] = []
        var index = parts[1].startIndex
        while index < parts[1].endIndex {
            let next = parts[1].index(index, offsetBy: 2)
            guard let byte = UInt8(parts[1][index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        digest = bytes
    }

    /// A new random key (32 bytes, base64url without padding) and its digest.
    ///
    /// The key never begins with `-`: a command line would read `--key -x…` as an option
    /// (one key in 64 did), so such a draw is made again.
    public static func makeKey() -> (key: String, digest: KeyDigest) {
        var generator = SystemRandomNumberGenerator()
        while true {
            let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
            let key = Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
            if !key.hasPrefix("-") { return (key, KeyDigest(key: Array(key.utf8))) }
        }
    }

    public var description: String {
        "sha256$" + digest.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }
}
