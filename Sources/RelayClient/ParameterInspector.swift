import RelayCore

/// Reads the parameters of a `Decodable` type by decoding it from a decoder that records what is
/// asked of it: each key, its JSON type, and whether it is optional (`decodeIfPresent`).
///
/// This describes flat parameter structs (strings, numbers, booleans, nested objects and arrays).
/// A type it cannot walk (a custom decoder, an enum of strings) is described as taking any
/// parameters, which the hub then does not check.
enum ParameterInspector {
    static func describe<T: Decodable>(_ type: T.Type) -> [ParameterDescription]? {
        let recorder = Recorder()
        do {
            _ = try T(from: InspectingDecoder(recorder: recorder, depth: 0))
        } catch {
            return nil
        }
        return recorder.parameters
    }

    final class Recorder {
        var parameters: [ParameterDescription] = []
        func record(_ key: CodingKey, _ type: ParameterType, required: Bool) {
            guard !parameters.contains(where: { $0.name == key.stringValue }) else { return }
            parameters.append(ParameterDescription(name: key.stringValue, type: type, required: required))
        }
    }

    struct Unsupported: Error {}

    struct InspectingDecoder: Decoder {
        let recorder: Recorder?
        let depth: Int
        var codingPath: [any CodingKey] = []
        var userInfo: [CodingUserInfoKey: Any] = [:]

        func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
            KeyedDecodingContainer(Keyed<Key>(recorder: depth == 0 ? recorder : nil, depth: depth))
        }

        func unkeyedContainer() throws -> any UnkeyedDecodingContainer { Unkeyed() }
        func singleValueContainer() throws -> any SingleValueDecodingContainer { throw Unsupported() }
    }

    struct Keyed<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let recorder: Recorder?
        let depth: Int
        var codingPath: [any CodingKey] = []
        var allKeys: [Key] { [] }

        func contains(_ key: Key) -> Bool { true }
        func decodeNil(forKey key: Key) throws -> Bool { false }

        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
            try value(type, key: key, required: true)
        }

        func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
            try value(type, key: key, required: false)
        }

        // The synthesized `init(from:)` calls these overloads for optional primitives.
        func decodeIfPresent(_ type: String.Type, forKey key: Key) throws -> String? { try value(type, key: key, required: false) }
        func decodeIfPresent(_ type: Bool.Type, forKey key: Key) throws -> Bool? { try value(type, key: key, required: false) }
        func decodeIfPresent(_ type: Int.Type, forKey key: Key) throws -> Int? { try value(type, key: key, required: false) }
        func decodeIfPresent(_ type: Int64.Type, forKey key: Key) throws -> Int64? { try value(type, key: key, required: false) }
        func decodeIfPresent(_ type: Int32.Type, forKey key: Key) throws -> Int32? { try value(type, key: key, required: false) }
        func decodeIfPresent(_ type: UInt.Type, forKey key: Key) throws -> UInt? { try value(type, key: key, required: false) }
        func decodeIfPresent(_ type: Double.Type, forKey key: Key) throws -> Double? { try value(type, key: key, required: false) }
        func decodeIfPresent(_ type: Float.Type, forKey key: Key) throws -> Float? { try value(type, key: key, required: false) }

        private func value<T: Decodable>(_ type: T.Type, key: Key, required: Bool) throws -> T {
            let (jsonType, sample): (ParameterType, Any?) =
                switch type {
                case is String.Type: (.string, "")
                case is Bool.Type: (.boolean, false)
                case is Int.Type: (.integer, 0)
                case is Int64.Type: (.integer, Int64(0))
                case is Int32.Type: (.integer, Int32(0))
                case is UInt.Type: (.integer, UInt(0))
                case is Double.Type: (.number, 0.0)
                case is Float.Type: (.number, Float(0))
                default: (.any, nil)
                }
            if let sample = sample as? T {
                recorder?.record(key, jsonType, required: required)
                return sample
            }
            guard depth < 8 else { throw Unsupported() }
            let nested = try T(from: InspectingDecoder(recorder: nil, depth: depth + 1))
            recorder?.record(key, nested is any Collection ? .array : .object, required: required)
            return nested
        }

        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<
            NestedKey
        > {
            recorder?.record(key, .object, required: true)
            return KeyedDecodingContainer(Keyed<NestedKey>(recorder: nil, depth: depth + 1))
        }

        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
            recorder?.record(key, .array, required: true)
            return Unkeyed()
        }

        func superDecoder() throws -> any Decoder { InspectingDecoder(recorder: nil, depth: depth + 1) }
        func superDecoder(forKey key: Key) throws -> any Decoder { InspectingDecoder(recorder: nil, depth: depth + 1) }
    }

    /// An empty array, whatever its element type.
    struct Unkeyed: UnkeyedDecodingContainer {
        var codingPath: [any CodingKey] = []
        var count: Int? { 0 }
        var isAtEnd: Bool { true }
        var currentIndex: Int { 0 }
        mutating func decodeNil() throws -> Bool { throw Unsupported() }
        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { throw Unsupported() }
        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
            throw Unsupported()
        }
        mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer { throw Unsupported() }
        mutating func superDecoder() throws -> any Decoder { throw Unsupported() }
    }
}
