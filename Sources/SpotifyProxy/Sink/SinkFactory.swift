import Foundation
import Logging

/// Sinks are built here, from the `[sink]` values: Config holds values only.
extension SinkSettings {
    /// Fails when the sink cannot be opened as configured (a PostgreSQL sink without a valid URL).
    public func validate() throws(ConfigurationError) {
        guard self.kind != .none else { return }
        // What `serve` would create: the spool directory (any sink), the database or file.
        try FileAccess.checkCreatable(directory: self.spoolDirectory, key: "sink.spool_dir")
        try self.validateDatabase()
    }

    /// What opening the database or file needs (`migrate` and `library` open it, no spool).
    public func validateDatabase() throws(ConfigurationError) {
        if self.kind == .sqlite || self.kind == .jsonl {
            try FileAccess.checkCreatable(file: self.resolvedPath, key: "sink.path")
        }
        if self.kind == .sqlite, let handle = FileHandle(forReadingAtPath: self.resolvedPath) {
            // An existing file must be SQLite's: it begins with its 16-byte header (or is empty).
            let header = (try? handle.read(upToCount: 16)) ?? Data()
            try? handle.close()
            guard header.isEmpty || header == Data("SQLite format 3\0".utf8) else {
                throw ConfigurationError("sink.path = \"\(self.resolvedPath)\" is not an SQLite database: name a new file, or one this proxy made")
            }
        }
        guard self.kind == .postgres else { return }
        guard let url = self.url else {
            throw ConfigurationError(
                "sink.kind = \"postgres\" needs a database: set sink.url or DATABASE_URL (postgres://USER:PASSWORD@HOST:PORT/DATABASE)")
        }
        _ = try PostgresSink.configuration(from: url)
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
