import Foundation

/// Established TCP connections on this machine, from `/proc/net/tcp` (IPv4): how tests prove
/// that nothing leaks a connection, without counting other tests' file descriptors.
public enum TCPConnections {
    /// Which end of a connection the port is on.
    public enum End: Sendable {
        /// Sockets of the process listening on the port (accepted connections).
        case local
        /// Sockets connected to the port (clients of that listener).
        case remote
        case either
    }

    /// Connections with `port` at the given end, in state ESTABLISHED, counted once per socket
    /// (a loopback connection between two of our own sockets counts twice with `.either`).
    public static func established(port: Int, at end: End = .either) -> Int {
        let suffix = String(format: ":%04X", port)
        return Self.sockets(port: port).filter { socket in
            guard socket.state == "01" else { return false }
            switch end {
            case .local: return socket.local.hasSuffix(suffix)
            case .remote: return socket.remote.hasSuffix(suffix)
            case .either: return true
            }
        }.count
    }

    /// Every socket whose local or remote port is `port`: addresses as hex `ADDR:PORT`, the
    /// state as the kernel's hex code (01 ESTABLISHED, 06 TIME_WAIT, 08 CLOSE_WAIT …).
    public static func sockets(port: Int) -> [(local: String, remote: String, state: String)] {
        // Read to the end: `String(contentsOfFile:)` trusts the size procfs reports and stops
        // after the first 4 KiB (27 sockets), so sockets further down the table went unseen and
        // leak checks passed or failed by where the kernel listed them.
        guard let handle = FileHandle(forReadingAtPath: "/proc/net/tcp") else { return [] }
        defer { try? handle.close() }
        guard let data = try? handle.readToEnd() else { return [] }
        let table = String(decoding: data, as: UTF8.self)
        let hex = String(format: "%04X", port)
        return table.split(separator: "\n").dropFirst().compactMap { line in
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 3, fields[1].hasSuffix(":\(hex)") || fields[2].hasSuffix(":\(hex)") else { return nil }
            return (String(fields[1]), String(fields[2]), String(fields[3]))
        }
    }
}
