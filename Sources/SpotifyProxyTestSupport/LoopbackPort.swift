import Foundation

/// A port on 127.0.0.1 that was free a moment ago, for servers that cannot bind port 0
/// themselves (nginx, PostgreSQL, a proxy in a child process).
public enum LoopbackPort {
    public struct NoFreePort: Error {}

    public static func free() throws -> Int {
        try Reserved().port
    }

    /// A port bound (so nothing else takes it meanwhile) but not listening: connecting to it is
    /// refused. Released when this is.
    public final class Reserved {
        private let descriptor: Int32
        public let port: Int

        public init() throws {
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            self.descriptor = descriptor
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
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
