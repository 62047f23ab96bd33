import Foundation

/// A port on 127.0.0.1 that was free a moment ago, for servers that cannot bind port 0
/// themselves (nginx, PostgreSQL, a proxy in a child process).
public enum LoopbackPort {
    public struct NoFreePort: Error {}

    /// A free port *below* the kernel's ephemeral range: the kernel never hands those out for a
    /// port-0 bind or an outgoing connection, so the thousands of client sockets the other suites
    /// open cannot take it between this check and the server's bind (a PostgreSQL that lost its
    /// port that way failed a CI run). Falls back to a kernel-chosen port.
    public static func free() throws -> Int {
        let low = Self.ephemeralRangeStart
        if low > 11_000 {
            for _ in 0..<50 {
                if let reserved = try? Reserved(port: Int.random(in: 10_000..<low)) { return reserved.port }
            }
        }
        return try Reserved().port
    }

    static var ephemeralRangeStart: Int {
        let text = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)) ?? ""
        return text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first.flatMap { Int($0) } ?? 32768
    }

    /// A port bound (so nothing else takes it meanwhile) but not listening: connecting to it is
    /// refused. Released when this is.
    public final class Reserved {
        private let descriptor: Int32
        public let port: Int

        /// `port` 0: one the kernel chooses.
        public init(port: Int = 0) throws {
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            self.descriptor = descriptor
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let bound = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) == 0 && getsockname(descriptor, $0, &length) == 0 }
            }
            guard bound else {
                close(descriptor)
                throw NoFreePort()
            }
            self.port = Int(UInt16(bigEndian: address.sin_port))
        }

        deinit { close(self.descriptor) }
    }
}
