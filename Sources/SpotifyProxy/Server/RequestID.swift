import Synchronization

/// `X-Request-Id`: a client's own id is kept when it is sane (1–128 visible ASCII characters
/// from a safe set, so it cannot split a log line or a header), else one is made: 64 random bits
/// drawn once per process, then a 64-bit counter, in 32 hex digits — unique per request without
/// a system call per request.
enum RequestID {
    static let header = "X-Request-Id"

    private static let prefix: UInt64 = {
        var generator = SystemRandomNumberGenerator()
        return generator.next()
    }()
    private static let counter = Atomic<UInt64>(0)

    static func choose(_ offered: String?) -> String {
        if let offered, Self.isSane(offered) { return offered }
        let sequence = Self.counter.wrappingAdd(1, ordering: .relaxed).newValue
        return Self.hex(Self.prefix, sequence)
    }

    static func isSane(_ id: String) -> Bool {
        let utf8 = id.utf8
        guard (1...128).contains(utf8.count) else { return false }
        return utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || "-_.:/+=@".utf8.contains(byte)
        }
    }

    private static func hex(_ high: UInt64, _ low: UInt64) -> String {
        let digits: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: 32) { buffer in
            digits.withUTF8Buffer { digits in
                for index in 0..<16 {
                    buffer[index] = digits[Int((high >> (60 - 4 * UInt64(index))) & 0xf)]
                    buffer[16 + index] = digits[Int((low >> (60 - 4 * UInt64(index))) & 0xf)]
                }
            }
            return 32
        }
    }
}
