import Logging

/// The line logged for every request, as fields in the order the log handlers sort metadata keys.
/// It is made without a `Logger.Metadata` dictionary: when the logger's handler writes text lines
/// (``writer(for:)``: a ``TextLogHandler``, as `--log-format text` sets up), the line is written
/// straight from the fields, the bytes the logger would have written for ``metadata``; otherwise
/// (JSON lines, tests' handlers) it goes through the logger.
public struct RequestLogLine: Sendable {
    public var method: String
    public var path: String
    public var status: Int
    public var bytes: Int
    public var milliseconds: Int64
    public var client: String
    public var requestID: String
    /// The access key's label (never the key).
    public var key: String?
    public var upstreamMilliseconds: Int64?
    public var replayed = false
    public var error: String?

    public init(method: String, path: String, status: Int, bytes: Int, milliseconds: Int64, client: String, requestID: String) {
        self.method = method
        self.path = path
        self.status = status
        self.bytes = bytes
        self.milliseconds = milliseconds
        self.client = client
        self.requestID = requestID
    }

    /// A field's value: text, a number written in decimal, or a flag (`true`).
    public enum Value: CustomStringConvertible, Sendable {
        case text(String)
        case number(Int64)
        case flag(Bool)

        public var description: String {
            switch self {
            case .text(let text): text
            case .number(let number): String(number)
            case .flag(let flag): flag ? "true" : "false"
            }
        }
    }

    /// Each field's key and value, keys in ascending order (as the handlers sort them).
    public func forEachField(_ body: (String, Value) -> Void) {
        body("bytes", .number(Int64(self.bytes)))
        body("client", .text(self.client))
        if let error = self.error { body("error", .text(error)) }
        if let key = self.key { body("key", .text(key)) }
        body("method", .text(self.method))
        body("ms", .number(self.milliseconds))
        body("path", .text(self.path))
        if self.replayed { body("replayed", .flag(true)) }
        body("request_id", .text(self.requestID))
        body("status", .number(Int64(self.status)))
        if let upstream = self.upstreamMilliseconds { body("upstream_ms", .number(upstream)) }
    }

    /// The fields as a logger's metadata: numbers and flags as such (JSON lines write them bare).
    public var metadata: Logger.Metadata {
        var metadata: Logger.Metadata = [:]
        self.forEachField { key, value in
            switch value {
            case .text(let text): metadata[key] = .string(text)
            case .number(let number): metadata[key] = .stringConvertible(number)
            case .flag(let flag): metadata[key] = .stringConvertible(flag)
            }
        }
        return metadata
    }

    /// The message and source the line is logged with.
    public static let message: Logger.Message = "request"
    public static let source = "SpotifyProxy"

    /// Writes request lines from their fields.
    public typealias Writer = @Sendable (RequestLogLine) -> Void

    /// How `logger`'s own handler writes request lines from their fields, when it can.
    public static func writer(for logger: Logger) -> Writer? {
        (logger.handler as? any RequestLineWriting)?.requestLineWriter
    }
}

/// A log handler that can write a ``RequestLogLine`` from its fields, exactly as it would log the
/// line's metadata.
public protocol RequestLineWriting {
    /// Nil when this handler cannot (a wrapper around one that does not).
    var requestLineWriter: RequestLogLine.Writer? { get }
}

extension TextLogHandler: RequestLineWriting {
    public var requestLineWriter: RequestLogLine.Writer? {
        { [self] line in self.log(request: line) }
    }
}
