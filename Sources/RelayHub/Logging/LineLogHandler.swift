import Foundation
import Logging

/// A swift-log handler that writes one line per event to standard error, as logfmt or JSON
/// (`relay serve --log-format`): the time, the level, the logger's label, the message, then the
/// event's metadata (a session's `session`, `address`, `identity`...) in name order.
public struct LineLogHandler: LogHandler {
    public enum Format: String, Sendable, CaseIterable {
        /// `time=… level=info logger=relay msg="…" key=value`
        case logfmt
        /// `{"time":"…","level":"info","logger":"relay","msg":"…","key":"value"}`
        case json
    }

    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let format: Format
    private let write: @Sendable (String) -> Void

    /// `write` receives each line, newline included (standard error unless told otherwise).
    public init(label: String, format: Format, write: (@Sendable (String) -> Void)? = nil) {
        self.label = label
        self.format = format
        self.write = write ?? { line in FileHandle.standardError.write(Data(line.utf8)) }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        let fields: [(String, String)] =
            [
                ("time", Self.timestamp()), ("level", event.level.rawValue), ("logger", label), ("msg", event.message.description),
            ] + merged.keys.sorted().map { ($0, Self.text(merged[$0]!)) }
        write(format == .json ? Self.json(fields) : Self.logfmt(fields))
    }

    private static func text(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): text
        case .stringConvertible(let value): value.description
        case .array(let values): "[" + values.map(text).joined(separator: ",") + "]"
        case .dictionary(let values): "{" + values.keys.sorted().map { "\($0)=\(text(values[$0]!))" }.joined(separator: ",") + "}"
        }
    }

    private static func timestamp() -> String {
        Date().formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
    }

    /// logfmt: `key=value`, the value quoted (with `\"` and `\\` escaped) when it holds a space,
    /// a quote, an equals sign or nothing.
    static func logfmt(_ fields: [(String, String)]) -> String {
        fields.map { key, value in
            let needsQuotes = value.isEmpty || value.contains { $0 == " " || $0 == "\"" || $0 == "=" || $0.isNewline }
            guard needsQuotes else { return "\(key)=\(value)" }
            let escaped = value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                .replacingOccurrences(of: "\n", with: "\\n")
            return "\(key)=\"\(escaped)\""
        }.joined(separator: " ") + "\n"
    }

    static func json(_ fields: [(String, String)]) -> String {
        func quoted(_ text: String) -> String {
            var out = "\""
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
                default: out.unicodeScalars.append(scalar)
                }
            }
            return out + "\""
        }
        return "{" + fields.map { "\(quoted($0.0)):\(quoted($0.1))" }.joined(separator: ",") + "}\n"
    }
}
