#if canImport(Glibc)
import Glibc
#endif
import NIOCore

/// The HTTPS listener's first bytes, when they are plain HTTP: a request line starts with a
/// method's capital letter, a TLS handshake record with 0x16. Answered with a plain 400 that
/// says to use `https://` and closed, as nginx answers "The plain HTTP request was sent to HTTPS
/// port", instead of the TLS alert a plain client shows as an empty or garbled reply. Anything
/// else passes to the TLS handler, and this handler leaves the pipeline.
final class PlainHTTPOnTLSHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let answer = SpotifyError(
        status: 400,
        message: "plain HTTP came to an HTTPS listener: use an https:// URL for this proxy (its links in answers are https:// too)")

    private var answered = false
    /// For the answer's metric and log line, as every other answer has.
    private let shared: ProxyContext

    init(context: ProxyContext) {
        self.shared = context
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !self.answered else { return }
        let buffer = self.unwrapInboundIn(data)
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return }
        guard first >= UInt8(ascii: "A"), first <= UInt8(ascii: "Z") else {
            context.fireChannelRead(data)
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
            return
        }
        self.answered = true
        let requestID = RequestID.choose(nil)
        let body = Self.answer.body
        // The head every refusal has (its cache policy included), then the id and the close.
        var head = "HTTP/1.1 400 Bad Request\r\n"
        for (name, value) in Self.answer.responseHeaders { head += "\(name): \(value)\r\n" }
        head += "Date: \(HTTPDate.format(time(nil)))\r\n\(RequestID.header): \(requestID)\r\nConnection: close\r\n\r\n"
        var bytes = ByteBuffer(string: head)
        bytes.writeImmutableBuffer(body)
        context.writeAndFlush(self.wrapOutboundOut(bytes)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        // Counted and logged as the other refusals before routing are: under a placeholder request line.
        var instruments = ProxyMetrics.Memo()
        self.shared.metrics.recordRequest(method: "-", route: RouteLabel.of("-"), status: 400, key: nil, nanoseconds: 0, memo: &instruments)
        guard self.shared.logger.logLevel <= .info else { return }
        var line = RequestLogLine(
            method: "-", path: "-", status: 400, bytes: body.readableBytes, milliseconds: 0,
            client: ProxyConnection.logLabel(context.channel.remoteAddress), requestID: requestID)
        line.error = "plain HTTP on the HTTPS listener"
        self.shared.writeRequestLine(line)
    }
}
