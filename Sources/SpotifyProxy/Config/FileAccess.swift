import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What `check-config` asks of a configured path before `serve` opens it.
enum FileAccess {
    /// This process may use `path` for `mode` (`R_OK`, `W_OK`, `X_OK`), judged by its effective
    /// ids as `open` judges them: `access()` uses the real ids, which differ in a set-user-id start.
    static func permits(_ path: String, _ mode: Int32) -> Bool {
        faccessat(AT_FDCWD, path, mode, AT_EACCESS) == 0
    }

    /// `mkdir -p path`: the directories it made, outermost first, and why it stopped, in the
    /// system's words (Foundation's error names no cause), nil once `path` is a directory.
    static func makeDirectories(_ path: String) -> (made: [String], problem: String?) {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            return ([], isDirectory.boolValue ? nil : "\(path) is a file")
        }
        var made: [String] = []
        let parent = (path as NSString).deletingLastPathComponent
        if !parent.isEmpty, parent != path {
            let above = Self.makeDirectories(parent)
            if above.problem != nil { return above }
            made = above.made
        }
        if mkdir(path, 0o755) == 0 { return (made + [path], nil) }
        let failure = errno
        // Made meanwhile by someone else (not ours to remove), or a dangling symbolic link.
        if failure == EEXIST {
            return (made, FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
                ? nil : "\(path) exists and is not a directory (a dangling symbolic link?)")
        }
        return (made, "\(path): \(String(cString: strerror(failure)).lowercased())")
    }

    /// `directory` exists and is writable, or its nearest existing ancestor is a writable
    /// directory it can be created in, and creating it works (what is made to learn that is
    /// removed again: `check-config` leaves nothing behind; as root, `access()` does not know
    /// that procfs takes no directories).
    static func checkCreatable(directory: String, key: String) throws(ConfigurationError) {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw ConfigurationError("\(key) = \"\(directory)\" is a file, not a directory: name a directory") }
            guard FileAccess.permits(directory, W_OK | X_OK) else {
                throw ConfigurationError("\(key) = \"\(directory)\": the directory is not writable by this user; name one it can write, or change its permissions")
            }
            return
        }
        var ancestor = URL(fileURLWithPath: directory).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: ancestor.path, isDirectory: &isDirectory), ancestor.path != "/" {
            ancestor.deleteLastPathComponent()
        }
        guard isDirectory.boolValue, FileAccess.permits(ancestor.path, W_OK | X_OK) else {
            throw ConfigurationError(
                "\(key) = \"\(directory)\" cannot be created: \(ancestor.path) is \(isDirectory.boolValue ? "not writable by this user" : "a file, not a directory"); name a directory this user can create")
        }
        let (made, problem) = Self.makeDirectories(directory)
        for path in made.reversed() { rmdir(path) }
        if let problem { throw Self.cannotCreate(directory, key: key, problem) }
    }

    /// `directory` (named by `key`) could not be made, and `problem` says why.
    static func cannotCreate(_ directory: String, key: String, _ problem: String) -> ConfigurationError {
        ConfigurationError("\(key) = \"\(directory)\" cannot be created (\(problem)): name a directory this user can create")
    }

    /// `path` is a writable file, or can be made in its existing, writable directory (the
    /// sinks make the file, not its directory).
    static func checkCreatable(file path: String, key: String) throws(ConfigurationError) {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard !isDirectory.boolValue else { throw ConfigurationError("\(key) = \"\(path)\" is a directory: name a file") }
            guard FileAccess.permits(path, W_OK) else {
                throw ConfigurationError("\(key) = \"\(path)\" is not writable by this user: name a file it can write, or change its permissions")
            }
            return
        }
        let parent = URL(fileURLWithPath: path).deletingLastPathComponent().path
        guard FileManager.default.fileExists(atPath: parent, isDirectory: &isDirectory), isDirectory.boolValue, FileAccess.permits(parent, W_OK | X_OK) else {
            throw ConfigurationError(
                "\(key) = \"\(path)\": its directory \(parent) does not exist or is not writable by this user; create it, or name a file in a directory that is")
        }
    }

    /// Replaces the file at `path` with `bytes` so that a crash leaves the old file or the new,
    /// never a mix: a temporary file beside it under a fresh name (never an existing file, nor a
    /// symbolic link planted there), written whole and fsynced, renamed over `path`, then the
    /// directory fsynced. A new file gets `mode`; an existing one keeps its owner, and its mode
    /// too unless `forcingMode` (a file a service reads through its group stays readable to it;
    /// a secret of the proxy's own is `mode` again, whatever it was given). Nil, or why it failed.
    static func replaceAtomically(_ path: String, with bytes: [UInt8], mode: mode_t, forcingMode: Bool = false) -> String? {
        let directory = (path as NSString).deletingLastPathComponent
        let name = (path as NSString).lastPathComponent
        let temporary = (directory.isEmpty ? "." : directory) + "/.\(name).\(PKCE.randomString(length: 12)).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { return "cannot write \(temporary): \(String(cString: strerror(errno)))" }
        var failure: String?
        var existing = stat()
        // A regular file's, not a symbolic link's (the link itself is replaced, never followed).
        if lstat(path, &existing) == 0, existing.st_mode & S_IFMT == S_IFREG {
            if fchmod(fd, forcingMode ? mode : existing.st_mode & 0o7777) != 0
                || (existing.st_uid != geteuid() || existing.st_gid != getegid()) && fchown(fd, existing.st_uid, existing.st_gid) != 0
            {
                failure = "cannot give \(temporary) the mode and owner of \(path): \(String(cString: strerror(errno)))"
            }
        }
        var offset = 0
        while failure == nil, offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0, errno == EINTR { continue }
            guard written > 0 else {
                failure = "cannot write \(temporary): \(String(cString: strerror(errno))) (a full disk?)"
                break
            }
            offset += written
        }
        if failure == nil, fsync(fd) != 0 { failure = "cannot write \(temporary): \(String(cString: strerror(errno))) (a full disk?)" }
        close(fd)
        if failure == nil, rename(temporary, path) != 0 { failure = "cannot replace \(path): \(String(cString: strerror(errno)))" }
        if let failure {
            unlink(temporary)
            return failure
        }
        Self.syncDirectory(directory.isEmpty ? "." : directory)
        return nil
    }

    /// fsyncs `path`'s directory entries (a rename or an unlink in it survives a crash).
    static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        fsync(fd)
        close(fd)
    }
}
