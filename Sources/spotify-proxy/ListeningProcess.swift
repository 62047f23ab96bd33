import Foundation

/// The process on this machine listening on a TCP port, found as `ss -ltnp` finds it: the
/// socket's inode in `/proc/net/tcp` and `tcp6`, then the process holding that inode among its
/// descriptors. Only this user's processes can be read, which is all `reload` may signal anyway.
enum ListeningProcess {
    /// The `spotify-proxy serve` process listening on `port`: only `serve` takes SIGHUP as a
    /// reload (the other commands would end).
    static func serving(port: Int) -> pid_t? {
        guard let pid = Self.pid(port: port),
            let cmdline = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
            cmdline.split(separator: 0).dropFirst().first.map({ String(decoding: $0, as: UTF8.self) }) == "serve"
        else { return nil }
        return pid
    }

    static func pid(port: Int) -> pid_t? {
        let inodes = Self.listeningInodes(port: port)
        guard !inodes.isEmpty, let processes = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        for name in processes {
            guard let pid = pid_t(name), let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(name)/fd") else { continue }
            for descriptor in descriptors {
                guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(name)/fd/\(descriptor)"),
                    target.hasPrefix("socket:["), inodes.contains(String(target.dropFirst(8).dropLast()))
                else { continue }
                return pid
            }
        }
        return nil
    }

    /// The inodes of the sockets listening on `port` (any address), from `/proc/net/tcp{,6}`:
    /// `sl local_address rem_address st ... inode`, the port in hex after the colon, `0A` = LISTEN.
    static func listeningInodes(port: Int, tables: [String] = ["/proc/net/tcp", "/proc/net/tcp6"]) -> Set<String> {
        var inodes = Set<String>()
        for table in tables {
            guard let text = Self.read(table) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                guard fields.count > 9, fields[3] == "0A", let colon = fields[1].lastIndex(of: ":"),
                    Int(fields[1][fields[1].index(after: colon)...], radix: 16) == port
                else { continue }
                inodes.insert(String(fields[9]))
            }
        }
        return inodes
    }

    /// A `/proc` file read to its end. Foundation's `String(contentsOfFile:)` trusts the size
    /// procfs reports and stops after the first 4 KiB: 27 of 1,104 lines of `/proc/net/tcp` on a
    /// machine with many sockets, and the listener was not among them.
    static func read(_ path: String) -> String? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        do {
            return String(decoding: try handle.readToEnd() ?? Data(), as: UTF8.self)
        } catch {
            return nil
        }
    }
}
