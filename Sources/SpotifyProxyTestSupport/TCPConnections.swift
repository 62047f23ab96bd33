import Foundation

/// Established TCP connections on this machine, from `/proc/net/tcp` (IPv4): how tests prove
/// that nothing leaks a connection, without counting other tests' file descriptors.
public enum TCPConnections {
    /// Connections whose local or remote port is `port`, in state ESTABLISHED, counted once
    /// per socket (a loopback connection between two of our own sockets counts twice).
    public static func established(port: Int) -> Int {
        guard let table = try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8) else { return 0 }
        let hex = String(format: "%04X", port)
        var count = 0
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 3, fields[3] == "01" else { continue }
            if fields[1].hasSuffix(":\(hex)") || fields[2].hasSuffix(":\(hex)") { count += 1 }
        }
        return count
    }
}
