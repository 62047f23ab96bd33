import Foundation

extension JSONValue {
    public struct ParseError: Error, CustomStringConvertible {
        public var offset: Int
        public var reason: String
        public var description: String { "invalid JSON at byte \(self.offset): \(self.reason)" }
    }

    /// Parses RFC 8259 JSON. Hand-written because it runs on every teed body: `JSONDecoder`
    /// into a recursive enum managed about 10 MB/s here (it has no way to peek at a value's
    /// type, so each value costs failed decode attempts).
    public static func parse(_ data: Data) throws -> JSONValue {
        try data.withUnsafeBytes { try Self.parse(bytes: $0) }
    }

    /// Parses the bytes in place (a `ByteBuffer`'s readable bytes need no copy into `Data`).
    public static func parse(bytes: UnsafeRawBufferPointer) throws -> JSONValue {
        var parser = Parser(bytes: bytes.bindMemory(to: UInt8.self))
        parser.skipWhitespace()
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        guard parser.index == parser.bytes.count else { throw parser.error("trailing characters") }
        return value
    }

    private struct Parser {
        let bytes: UnsafeBufferPointer<UInt8>
        var index = 0
        static let maximumDepth = 512

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        func error(_ reason: String) -> ParseError { ParseError(offset: self.index, reason: reason) }

        mutating func skipWhitespace() {
            while self.index < self.bytes.count {
                switch self.bytes[self.index] {
                case 0x20, 0x09, 0x0A, 0x0D: self.index += 1
                default: return
                }
            }
        }

        mutating func value(depth: Int) throws -> JSONValue {
            guard depth < Self.maximumDepth else { throw self.error("nested too deeply") }
            guard self.index < self.bytes.count else { throw self.error("unexpected end") }
            switch self.bytes[self.index] {
            case UInt8(ascii: "{"): return try self.object(depth: depth)
            case UInt8(ascii: "["): return try self.array(depth: depth)
            case UInt8(ascii: "\""): return .string(try self.string())
            case UInt8(ascii: "t"): try self.literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try self.literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try self.literal("null"); return .null
            default: return .number(try self.number())
            }
        }

        mutating func literal(_ word: StaticString) throws {
            let count = word.utf8CodeUnitCount
            guard self.index + count <= self.bytes.count,
                memcmp(self.bytes.baseAddress! + self.index, word.utf8Start, count) == 0
            else { throw self.error("unexpected character") }
            self.index += count
        }

        mutating func object(depth: Int) throws -> JSONValue {
            self.index += 1
            var members: [String: JSONValue] = [:]
            self.skipWhitespace()
            if self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "}") {
                self.index += 1
                return .object(members)
            }
            while true {
                self.skipWhitespace()
                guard self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "\"") else { throw self.error("expected a member name") }
                let key = try self.string()
                self.skipWhitespace()
                guard self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: ":") else { throw self.error("expected ':'") }
                self.index += 1
                self.skipWhitespace()
                members[key] = try self.value(depth: depth + 1)
                self.skipWhitespace()
                guard self.index < self.bytes.count else { throw self.error("unexpected end") }
                if self.bytes[self.index] == UInt8(ascii: ",") {
                    self.index += 1
                } else if self.bytes[self.index] == UInt8(ascii: "}") {
                    self.index += 1
                    return .object(members)
                } else {
                    throw self.error("expected ',' or '}'")
                }
            }
        }

        mutating func array(depth: Int) throws -> JSONValue {
            self.index += 1
            var items: [JSONValue] = []
            self.skipWhitespace()
            if self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "]") {
                self.index += 1
                return .array(items)
            }
            while true {
                self.skipWhitespace()
                items.append(try self.value(depth: depth + 1))
                self.skipWhitespace()
                guard self.index < self.bytes.count else { throw self.error("unexpected end") }
                if self.bytes[self.index] == UInt8(ascii: ",") {
                    self.index += 1
                } else if self.bytes[self.index] == UInt8(ascii: "]") {
                    self.index += 1
                    return .array(items)
                } else {
                    throw self.error("expected ',' or ']'")
                }
            }
        }

        mutating func string() throws -> String {
            self.index += 1
            let start = self.index
            // Fast path: no escapes.
            while self.index < self.bytes.count {
                let byte = self.bytes[self.index]
                if byte == UInt8(ascii: "\"") {
                    let text = String(decoding: UnsafeBufferPointer(rebasing: self.bytes[start..<self.index]), as: UTF8.self)
                    self.index += 1
                    return text
                }
                if byte == UInt8(ascii: "\\") { break }
                guard byte >= 0x20 else { throw self.error("control character in string") }
                self.index += 1
            }
            var out = Array(self.bytes[start..<self.index])
            while self.index < self.bytes.count {
                let byte = self.bytes[self.index]
                self.index += 1
                switch byte {
                case UInt8(ascii: "\""):
                    return String(decoding: out, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    guard self.index < self.bytes.count else { throw self.error("unexpected end") }
                    let escape = self.bytes[self.index]
                    self.index += 1
                    switch escape {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escape)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try self.hex4()
                        if (0xD800..<0xDC00).contains(scalar), self.index + 1 < self.bytes.count,
                            self.bytes[self.index] == UInt8(ascii: "\\"), self.bytes[self.index + 1] == UInt8(ascii: "u")
                        {
                            self.index += 2
                            let low = try self.hex4()
                            scalar = (0xDC00..<0xE000).contains(low) ? 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00) : 0xFFFD
                        }
                        out.append(contentsOf: String(Character(Unicode.Scalar(scalar) ?? "\u{FFFD}")).utf8)
                    default:
                        throw self.error("invalid escape")
                    }
                default:
                    guard byte >= 0x20 else { throw self.error("control character in string") }
                    out.append(byte)
                }
            }
            throw self.error("unterminated string")
        }

        mutating func hex4() throws -> UInt32 {
            guard self.index + 4 <= self.bytes.count else { throw self.error("short \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = self.bytes[self.index]
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: throw self.error("bad hex digit")
                }
                value = value << 4 | UInt32(digit)
                self.index += 1
            }
            return value
        }

        mutating func number() throws -> Double {
            let start = self.index
            if self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "-") { self.index += 1 }
            var digits = 0
            var integer: Int64 = 0
            var simple = true
            while self.index < self.bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self.bytes[self.index]) {
                if digits < 18 { integer = integer * 10 + Int64(self.bytes[self.index] - UInt8(ascii: "0")) } else { simple = false }
                digits += 1
                self.index += 1
            }
            guard digits > 0 else { throw self.error("unexpected character") }
            if self.index < self.bytes.count, [UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E")].contains(self.bytes[self.index]) {
                simple = false
                if self.bytes[self.index] == UInt8(ascii: ".") {
                    self.index += 1
                    let fraction = self.index
                    while self.index < self.bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self.bytes[self.index]) { self.index += 1 }
                    guard self.index > fraction else { throw self.error("digits expected after '.'") }
                }
                if self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "e") || self.bytes[self.index] == UInt8(ascii: "E") {
                    self.index += 1
                    if self.index < self.bytes.count, self.bytes[self.index] == UInt8(ascii: "+") || self.bytes[self.index] == UInt8(ascii: "-") { self.index += 1 }
                    let exponent = self.index
                    while self.index < self.bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(self.bytes[self.index]) { self.index += 1 }
                    guard self.index > exponent else { throw self.error("digits expected in exponent") }
                }
            }
            if simple { return Double(self.bytes[start] == UInt8(ascii: "-") ? -integer : integer) }
            let text = String(decoding: UnsafeBufferPointer(rebasing: self.bytes[start..<self.index]), as: UTF8.self)
            guard let value = Double(text) else { throw self.error("bad number") }
            return value
        }
    }
}
