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
}
