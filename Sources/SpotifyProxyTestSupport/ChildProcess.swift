import Foundation

/// Runs a program to completion with `posix_spawn` and `waitpid`. Foundation's `Process`
/// cannot be used for `pg_ctl start`: the server it leaves running inherits a descriptor that
/// `Process` waits on, so `waitUntilExit()` never returns.
public enum ChildProcess {
    public struct Failed: Error, CustomStringConvertible {
        public var description: String
    }

    /// Runs `path` with `arguments`; stdin from /dev/null, stdout and stderr into a temporary
    /// file whose text is in the error when the exit status is not 0. The wait is off the
    /// cooperative pool (``Blocking``): `pg_ctl start -w` can take seconds on a loaded machine.
    public static func run(_ path: String, _ arguments: [String]) async throws {
        try await Blocking.run { try Self.runBlocking(path, arguments) }
    }

    private static func runBlocking(_ path: String, _ arguments: [String]) throws {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("spotify-proxy-child-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: log) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o666)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, path, &actions, nil, argv, environ)
        guard spawned == 0 else { throw Failed(description: "cannot run \(path): \(String(cString: strerror(spawned)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        let exited = (status & 0x7f) == 0
        let code = (status >> 8) & 0xff
        guard exited && code == 0 else {
            let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
            throw Failed(description: "\(path) \(arguments.joined(separator: " ")) failed (status \(status)): \(output)")
        }
    }
}
