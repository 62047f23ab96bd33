/// `X-Request-Id`: a client's own id is kept when it is sane (1–128 visible ASCII characters
/// from a safe set, so it cannot split a log line or a header), else one is made: 128 random
/// bits in hex.
enum RequestID {
    static let header = "X-Request-Id"

    static func choose(_ offered: String?) -> String {
        if let offered, Self.isSane(offered) { return offered }
        var generator = SystemRandomNumberGenerator()
        let high = generator.next() as UInt64
        let low = generator.next() as UInt64
        return Self.hex(high) + Self.hex(low)
    }

    static func isSane(_ id: String) -> Bool {
        let utf8 = id.utf8
        guard (1...128).contains(utf8.count) else { return false }
        return utf8.allSatisfy { byte in
            (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
                || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || "-_.:/+=@".utf8.contains(byte)
        }
    }

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
