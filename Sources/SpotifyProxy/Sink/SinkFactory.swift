import Foundation
import Logging

/// Sinks are built here, from the `[sink]` values: Config holds values only.
extension SinkSettings {
    /// Fails when the sink cannot be opened as configured (a PostgreSQL sink without a valid URL).
    public func validate() throws(ConfigurationError) {
        guard self.kind != .none else { return }
        // What `serve` would create: the spool directory (any sink), the database or file.
        try Self.checkCreatable(directory: self.spoolDirectory, key: "sink.spool_dir")
        if self.kind == .sqlite || self.kind == .jsonl {
            try Self.checkCreatable(file: self.resolvedPath, key: "sink.path")
        }
        guard self.kind == .postgres else { return }
        guard let url = self.url else {
            throw ConfigurationError(
                "sink.kind = \"postgres\" needs a database: set sink.url or DATABASE_URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)")
        }
        _ = try PostgresSink.configuration(from: url)
    }

    /// `directory` exists and is writable, or its nearest existing ancestor is a writable
    /// directory it can be created in. Nothing is created here: `check-config` only looks.
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

    /// The configured sink, or nil for `none`; errors name the key to fix.
    public func makeSink(logger: Logger) throws -> (any EntitySink)? {
        switch self.kind {
        case .none:
            return nil
        case .postgres:
            try self.validate()
            return try PostgresSink(url: self.url ?? "", connectTimeout: self.connectTimeout, logger: logger)
        case .sqlite:
            return try SQLiteSink(path: self.resolvedPath)
        case .jsonl:
            return try JSONLinesSink(path: self.resolvedPath)
        }
    }
}
