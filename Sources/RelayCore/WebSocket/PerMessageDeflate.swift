/// The negotiation of WebSocket's permessage-deflate extension (RFC 7692): what a client offers in
/// `Sec-WebSocket-Extensions`, what a server accepts and answers, and what both then use.
///
/// Relay's server always answers with `server_no_context_takeover` and
/// `client_no_context_takeover`: each message is compressed on its own. Neither side then keeps a
/// window from one message to the next, so an idle connection holds no compression state, at the
/// price of a somewhat lower ratio on small messages.
public struct PerMessageDeflate: Sendable, Equatable {
    /// The server resets its compressor after each message.
    public var serverNoContextTakeover = false
    /// The client resets its compressor after each message.
    public var clientNoContextTakeover = false
    /// The largest window (base-two logarithm, 8...15) the server compresses with.
    public var serverMaxWindowBits: Int?
    /// The largest window the client compresses with; in an offer, `0` stands for the bare
    /// parameter (the client accepts any value the server picks).
    public var clientMaxWindowBits: Int?

    public init(
        serverNoContextTakeover: Bool = false, clientNoContextTakeover: Bool = false, serverMaxWindowBits: Int? = nil,
        clientMaxWindowBits: Int? = nil
    ) {
        self.serverNoContextTakeover = serverNoContextTakeover
        self.clientNoContextTakeover = clientNoContextTakeover
        self.serverMaxWindowBits = serverMaxWindowBits
        self.clientMaxWindowBits = clientMaxWindowBits
    }

    public static let name = "permessage-deflate"

    /// The offers of permessage-deflate in `Sec-WebSocket-Extensions` values, in the client's order
    /// of preference; an offer with an unknown or malformed parameter is left out (RFC 7692 §5.1).
    public static func offers(in headerValues: [String]) -> [PerMessageDeflate] {
        headerValues.flatMap { $0.split(separator: ",") }.compactMap { extensionText in
            var parts = extensionText.split(separator: ";").map { String($0.trimmingWhitespace()) }
            guard parts.first?.lowercased() == name else { return nil }
            parts.removeFirst()
            return parse(parts, bareClientWindow: true)
        }
    }

    /// What the server answers to `offers`, or nil to go without compression: the first offer it
    /// can take, with both sides resetting after each message. The server compresses with
    /// `windowBits` at most (a smaller window than the client's inflater is always fine).
    public static func accept(_ offers: [PerMessageDeflate]) -> PerMessageDeflate? {
        guard let offer = offers.first else { return nil }
        var accepted = PerMessageDeflate(serverNoContextTakeover: true, clientNoContextTakeover: true)
        // A client that limits the server's window is answered with that limit.
        accepted.serverMaxWindowBits = offer.serverMaxWindowBits
        // A client that allows it is told to use at most the default window; one that did not
        // offer the parameter must not receive it.
        if let bits = offer.clientMaxWindowBits { accepted.clientMaxWindowBits = bits == 0 ? 15 : bits }
        return accepted
    }

    /// The parameters as a `Sec-WebSocket-Extensions` value.
    public var headerValue: String {
        var parts = [Self.name]
        if serverNoContextTakeover { parts.append("server_no_context_takeover") }
        if clientNoContextTakeover { parts.append("client_no_context_takeover") }
        if let bits = serverMaxWindowBits { parts.append("server_max_window_bits=\(bits)") }
        if let bits = clientMaxWindowBits { parts.append(bits == 0 ? "client_max_window_bits" : "client_max_window_bits=\(bits)") }
        return parts.joined(separator: "; ")
    }

    /// What a client offers: permessage-deflate with `client_max_window_bits` (any window the
    /// server picks), as browsers do.
    public static let clientOffer = PerMessageDeflate(clientMaxWindowBits: 0)

    /// The server's answer as a client reads it: nil when it accepted no permessage-deflate;
    /// throws when the answer is one the client may not accept (RFC 7692 §5.1: it must then fail
    /// the connection).
    public static func response(in headerValues: [String]) throws(PerMessageDeflateError) -> PerMessageDeflate? {
        let answers = headerValues.flatMap { $0.split(separator: ",") }.filter {
            $0.split(separator: ";").first?.trimmingWhitespace().lowercased() == name
        }
        guard let answer = answers.first else { return nil }
        guard answers.count == 1 else { throw PerMessageDeflateError("permessage-deflate answered more than once") }
        let parts = answer.split(separator: ";").dropFirst().map { String($0.trimmingWhitespace()) }
        guard let accepted = parse(parts, bareClientWindow: false) else {
            throw PerMessageDeflateError("an invalid permessage-deflate answer: \(answer)")
        }
        return accepted
    }

    /// The parameters in `parts`, or nil when one is unknown, repeated or out of range.
    private static func parse(_ parts: [String], bareClientWindow: Bool) -> PerMessageDeflate? {
        var result = PerMessageDeflate()
        var seen: Set<String> = []
        for part in parts where !part.isEmpty {
            let pair = part.split(separator: "=", maxSplits: 1).map { String($0.trimmingWhitespace()) }
            let key = pair[0].lowercased()
            guard seen.insert(key).inserted else { return nil }
            var value = pair.count == 2 ? pair[1] : nil
            if let quoted = value, quoted.count >= 2, quoted.hasPrefix("\""), quoted.hasSuffix("\"") {
                value = String(quoted.dropFirst().dropLast())
            }
            let bits = value.flatMap { Int($0) }
            switch key {
            case "server_no_context_takeover":
                guard value == nil else { return nil }
                result.serverNoContextTakeover = true
            case "client_no_context_takeover":
                guard value == nil else { return nil }
                result.clientNoContextTakeover = true
            case "server_max_window_bits":
                guard let bits, (8...15).contains(bits) else { return nil }
                result.serverMaxWindowBits = bits
            case "client_max_window_bits":
                if value == nil {
                    guard bareClientWindow else { return nil }
                    result.clientMaxWindowBits = 0
                } else {
                    guard let bits, (8...15).contains(bits) else { return nil }
                    result.clientMaxWindowBits = bits
                }
            default:
                return nil
            }
        }
        return result
    }
}

/// A permessage-deflate answer the client cannot accept.
public struct PerMessageDeflateError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
