import Crypto
import Foundation
import CryptoExtras

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
