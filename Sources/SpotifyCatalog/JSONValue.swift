import Foundation

/// A JSON document as a value: what the extractor walks and what sinks store as `raw`.
public enum JSONValue: Sendable, Hashable, Codable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let bool = try? container.decode(Bool.self) {
            self = .bool(bool)
        } else if let number = try? container.decode(Double.self) {
            self = .number(number)
        } else if let string = try? container.decode(String.self) {
            self = .string(string)
        } else if let array = try? container.decode([JSONValue].self) {
            self = .array(array)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value):
            if value.rounded() == value, abs(value) < 1e15 { try container.encode(Int64(value)) } else { try container.encode(value) }
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// Compact JSON with sorted keys (stable, comparable output). Hand-written because it is on
    /// the tee's write path for every entity: several times faster than `JSONEncoder`.
    public func serialized() -> String {
        String(decoding: self.serializedBytes(sortedKeys: true), as: UTF8.self)
    }

    /// Compact JSON as UTF-8; members in the dictionary's own order unless `sortedKeys` (for
    /// machine-read output, such as the tee's spool, where sorting is only cost).
    public func serializedBytes(sortedKeys: Bool) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(1024)
        self.write(into: &out, sortedKeys: sortedKeys)
        return out
    }

    private func write(into out: inout [UInt8], sortedKeys: Bool) {
        switch self {
        case .null: out.append(contentsOf: "null".utf8)
        case .bool(let value): out.append(contentsOf: (value ? "true" : "false").utf8)
        case .number(let value):
            if value.rounded() == value, abs(value) < 1e15 {
                out.append(contentsOf: String(Int64(value)).utf8)
            } else if value.isFinite {
                out.append(contentsOf: "\(value)".utf8)
            } else {
                out.append(contentsOf: "null".utf8)
            }
        case .string(let value): Self.writeString(value, into: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (index, item) in items.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                item.write(into: &out, sortedKeys: sortedKeys)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let object):
            out.append(UInt8(ascii: "{"))
            if sortedKeys {
                for (index, key) in object.keys.sorted().enumerated() {
                    if index > 0 { out.append(UInt8(ascii: ",")) }
                    Self.writeString(key, into: &out)
                    out.append(UInt8(ascii: ":"))
                    object[key]!.write(into: &out, sortedKeys: true)
                }
            } else {
                var first = true
                for (key, value) in object {
                    if !first { out.append(UInt8(ascii: ",")) }
                    first = false
                    Self.writeString(key, into: &out)
                    out.append(UInt8(ascii: ":"))
                    value.write(into: &out, sortedKeys: false)
                }
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    private static func writeString(_ value: String, into out: inout [UInt8]) {
        var value = value
        value.withUTF8 { bytes in
            out.append(UInt8(ascii: "\""))
            // Runs that need no escape (nearly all of every string) are copied whole.
            var start = 0
            for index in 0..<bytes.count {
                let byte = bytes[index]
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
                out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<index]))
                start = index + 1
                out.append(UInt8(ascii: "\\"))
                switch byte {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"): out.append(byte)
                case UInt8(ascii: "\n"): out.append(UInt8(ascii: "n"))
                case UInt8(ascii: "\r"): out.append(UInt8(ascii: "r"))
                case UInt8(ascii: "\t"): out.append(UInt8(ascii: "t"))
                default:
                    out.append(contentsOf: "u00".utf8)
                    out.append(Self.hexDigits[Int(byte >> 4)])
                    out.append(Self.hexDigits[Int(byte & 0xf)])
                }
            }
            out.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<bytes.count]))
            out.append(UInt8(ascii: "\""))
        }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    public subscript(key: String) -> JSONValue? {
        if case .object(let object) = self { return object[key] }
        return nil
    }

    public var string: String? {
        if case .string(let value) = self { return value }
        return nil
    }

    public var int: Int? {
        if case .number(let value) = self, value.rounded() == value, abs(value) < 1e15 { return Int(value) }
        return nil
    }

    public var bool: Bool? {
        if case .bool(let value) = self { return value }
        return nil
    }

    public var array: [JSONValue]? {
        if case .array(let value) = self { return value }
        return nil
    }

    public var object: [String: JSONValue]? {
        if case .object(let value) = self { return value }
        return nil
    }

    /// `other` laid over `self`, the merge rule of every sink: objects merge member by member,
    /// recursively (a member missing from `other` keeps its value); anything else is replaced
    /// by `other`. JSON merge-patch (RFC 7396, SQLite's `json_patch`) for null-free values.
    public func merging(_ other: JSONValue) -> JSONValue {
        guard case .object(var merged) = self, case .object(let patch) = other else { return other }
        merged.merge(patch) { old, new in old.merging(new) }
        return .object(merged)
    }

    /// The same value with every `null` member removed, at any depth: a null carries nothing
    /// worth keeping, and must never overwrite a stored value.
    public func strippingNulls() -> JSONValue {
        switch self {
        case .object(let object):
            var out: [String: JSONValue] = [:]
            out.reserveCapacity(object.count)
            for (key, value) in object where value != .null { out[key] = value.strippingNulls() }
            return .object(out)
        case .array(let array):
            return .array(array.map { $0.strippingNulls() })
        default:
            return self
        }
    }
}
