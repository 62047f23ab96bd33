import Foundation

/// Established TCP connections on this machine, from `/proc/net/tcp` (IPv4): how tests prove
/// that nothing leaks a connection, without counting other tests' file descriptors.
public enum TCPConnections {
    /// Connections whose local or remote port is `port`, in state ESTABLISHED, counted once
    /// per socket (a loopback connection between two of our own sockets counts twice).
    public static func established(port: Int) -> Int {
        Self.sockets(port: port).filter { $0.state == "01" }.count
    }

    /// Every socket whose local or remote port is `port`: addresses as hex `ADDR:PORT`, the
    /// state as the kernel's hex code (01 ESTABLISHED, 06 TIME_WAIT, 08 CLOSE_WAIT …).
    public static func sockets(port: Int) -> [(local: String, remote: String, state: String)] {
        guard let table = try? String(contentsOfFile: "/proc/net/tcp", encoding: .utf8) else { return [] }
        let hex = String(format: "%04X", port)
        return table.split(separator: "\n").dropFirst().compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 3, fields[1].hasSuffix(":\(hex)") || fields[2].hasSuffix(":\(hex)") else { return nil }
            return (String(fields[1]), String(fields[2]), String(fields[3]))
        }
    }
}
