import Logging

/// Sinks are built here, from the `[sink]` values: Config holds values only.
extension SinkSettings {
    /// Fails when the sink cannot be opened as configured (a PostgreSQL sink without a valid URL).
    public func validate() throws(ConfigurationError) {
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
