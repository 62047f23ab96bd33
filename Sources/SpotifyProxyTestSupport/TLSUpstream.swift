import Foundation

/// nginx serving HTTP/2 over TLS with a certificate from a throwaway CA, so tests can check what
/// the real upstream needs: ALPN to h2, certificate verification, a configurable CA bundle.
/// nginx (Debian `nginx-light`) and `openssl` must be installed; `scripts/test` installs them.
public final class TLSUpstream: Sendable {
    public let port: Int
    public let directory: URL
    public var caBundle: String { self.directory.appendingPathComponent("ca.pem").path }
    public var baseURL: String { "https://localhost:\(self.port)" }
    private let process: Process

    public struct MissingTool: Error, CustomStringConvertible {
        public var tool: String
        public var description: String { "\(self.tool) is not installed: run scripts/test, which installs it (apt-get install nginx-light openssl)" }
    }

    /// `body` is what every `/v1/` path answers with (`application/json`); `{BASE}` in it
    /// becomes the upstream's own base URL, as Spotify's links name itself. Key generation and
    /// the wait for nginx run off the cooperative pool (``Blocking``).
    public static func start(body: String) async throws -> TLSUpstream {
        try await Blocking.run { try Self.startBlocking(body: body) }
    }

    private static func startBlocking(body: String) throws -> TLSUpstream {
        for tool in ["nginx", "openssl"] where Self.which(tool) == nil { throw MissingTool(tool: tool) }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("spotify-proxy-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        let path = directory.path
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\n".write(toFile: "\(path)/san.ext", atomically: true, encoding: .utf8)
        try Self.run("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(path)/ca.key", "-out", "\(path)/ca.pem", "-days", "2", "-subj", "/CN=spotify-proxy test CA"])
        try Self.run("openssl", ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(path)/server.key", "-out", "\(path)/server.csr", "-subj", "/CN=localhost"])
        try Self.run("openssl", ["x509", "-req", "-in", "\(path)/server.csr", "-CA", "\(path)/ca.pem", "-CAkey", "\(path)/ca.key", "-CAcreateserial", "-out", "\(path)/server.pem", "-days", "2", "-extfile", "\(path)/san.ext"])
        let port = try LoopbackPort.free()
        let escaped = body.replacingOccurrences(of: "{BASE}", with: "https://localhost:\(port)")
            .replacingOccurrences(of: "'", with: "\\'")
        let config = """
            daemon off;
            worker_processes 1;
            pid \(path)/nginx.pid;
            error_log \(path)/error.log;
            events { worker_connections 256; }
            http {
                log_format proto '$server_protocol $request_method $request_uri $http_authorization $connection $ssl_session_reused';
                access_log \(path)/access.log proto;
                client_body_temp_path \(path)/body;
                proxy_temp_path \(path)/proxy;
                server {
                    listen 127.0.0.1:\(port) ssl http2;
                    ssl_certificate \(path)/server.pem;
                    ssl_certificate_key \(path)/server.key;
                    # As Spotify's servers do: TLS 1.3, and sessions a client can resume.
                    ssl_protocols TLSv1.2 TLSv1.3;
                    ssl_session_cache shared:spotify_proxy_test:1m;
                    location /v1/ { default_type application/json; return 200 '\(escaped)'; }
                }
            }
            """
        try config.write(toFile: "\(path)/nginx.conf", atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.which("nginx")!)
        process.arguments = ["-c", "\(path)/nginx.conf", "-p", path, "-e", "\(path)/error.log"]
        try process.runTiedToTestProcess()
        let upstream = TLSUpstream(port: port, directory: directory, process: process)
        try upstream.waitUntilListening()
        return upstream
    }

    private init(port: Int, directory: URL, process: Process) {
        self.port = port
        self.directory = directory
        self.process = process
    }

    /// Lines nginx logged: `PROTOCOL METHOD URI AUTHORIZATION CONNECTION REUSED`, the last two
    /// nginx's serial number of the connection and `r` when its TLS session was resumed (else `.`).
    public var accessLog: [String] {
        ((try? String(contentsOfFile: self.directory.appendingPathComponent("access.log").path, encoding: .utf8)) ?? "")
            .split(separator: "\n").map(String.init)
    }

    public func stop() {
        self.process.terminate()
        self.process.waitUntilExit()
        try? FileManager.default.removeItem(at: self.directory)
    }

    private func waitUntilListening() throws {
        // nginx binds before it serves; connect attempts are the event that says it is up.
        for _ in 0..<500 {
            if Self.canConnect(port: self.port) { return }
            guard self.process.isRunning else { break }
            usleep(10_000)
        }
        let log = (try? String(contentsOfFile: self.directory.appendingPathComponent("error.log").path, encoding: .utf8)) ?? ""
        self.stop()
        throw MissingTool(tool: "a working nginx (\(log))")
    }

    private static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    public static func which(_ tool: String) -> String? {
        for directory in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
            let path = "\(directory)/\(tool)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    private static func run(_ tool: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.which(tool)!)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw MissingTool(tool: "\(tool) \(arguments.first ?? "") (exit \(process.terminationStatus))") }
    }
}
