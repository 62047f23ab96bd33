import NIOCore
import NIOHTTP1

/// The worker loops' llhttp parser (``RequestParser``) as a NIO decoder, for the HTTPS listener:
/// both listeners take and refuse requests alike, with the same reasons in their 400s (NIO's own
/// decoder names fewer faults: "paused" for an HTTP/2 preface). Its answers are framed by
/// ``ResponseEncoderHandler``, the worker loops' encoder.
///
/// Parsing goes on past each complete request: NIO's pipelining handler, after this decoder,
/// holds the next request until the answer to this one has ended. A fault is thrown as the
/// `HTTPParserError` that handler orders after the answers before it; its reason in words is
/// left in ``reason`` for the handler that answers it.
struct RequestDecoder: ByteToMessageDecoder {
    typealias InboundOut = HTTPServerRequestPart

    /// Why parsing stopped, in words, once it has (one fault per connection: nothing is parsed
    /// after it). Shared with the connection's handler on the same event loop.
    final class Reason {
        fileprivate(set) var text: String?
    }

    let reason: Reason
    private let parser: RequestParser

    init(reason: Reason, maxBodyBytes: Int) {
        self.reason = reason
        self.parser = RequestParser(maxBodyBytes: maxBodyBytes)
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard buffer.readableBytes > 0 else { return .needMoreData }
        let stop = buffer.withUnsafeReadableBytes { self.parser.parse($0) }
        let parts = self.parser.parts
        self.parser.parts.removeAll(keepingCapacity: true)
        for part in parts { context.fireChannelRead(Self.wrapInboundOut(part)) }
        switch stop {
        case .needMore:
            buffer.moveReaderIndex(to: buffer.writerIndex)
            // A head begun in the read that ended the request before: its time starts now (the
            // head deadline saw that read while the request before was still coming).
            if self.parser.inHead { context.fireUserInboundEventTriggered(HeadDeadline.HeadBegun()) }
            return .needMoreData
        case .requestComplete(let consumed):
            buffer.moveReaderIndex(forwardBy: consumed)
            self.parser.resume()
            return .continue
        case .failed(let error):
            buffer.moveReaderIndex(to: buffer.writerIndex)
            // A TLS handshake's bytes after TLS's: not the plain listener's mistake it names.
            self.reason.text = self.parser.failureReason == RequestParser.tlsHandshake ? nil : self.parser.failureReason
            throw error
        }
    }

    /// The client's end: a request cut short is NIO's `invalidEOFState` (the client left; nobody
    /// to answer), as from NIO's decoder.
    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        while try self.decode(context: context, buffer: &buffer) == .continue {}
        if seenEOF, self.parser.inRequest { throw HTTPParserError.invalidEOFState }
        return .needMoreData
    }
}
