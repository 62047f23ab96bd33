#if canImport(Glibc)
import Glibc
#endif

/// A `Date` header's value, RFC 9110 §5.6.7's IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`),
/// formatted once per second by whoever holds it (an encoder per connection): RFC 9110 §6.6.1
/// asks an origin with a clock for one in every answer, and a proxy that forwards an answer
/// without one to add it.
struct HTTPDate {
    private var second: time_t = -1
    private(set) var value = ""

    /// The value for the current second.
    mutating func now() -> String {
        let now = time(nil)
        if now != self.second {
            self.second = now
            self.value = Self.format(now)
        }
        return self.value
    }

    static let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `seconds` since the epoch as an IMF-fixdate.
    static func format(_ seconds: time_t) -> String {
        var time = seconds
        var fields = tm()
        gmtime_r(&time, &fields)
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(Self.days[Int(fields.tm_wday)]), \(two(fields.tm_mday)) \(Self.months[Int(fields.tm_mon)]) \(fields.tm_year + 1900) "
            + "\(two(fields.tm_hour)):\(two(fields.tm_min)):\(two(fields.tm_sec)) GMT"
    }

    /// `Date: <value>\r\n`, counted: the room a head needs for it.
    static let headerLineSize = "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n".utf8.count
}
