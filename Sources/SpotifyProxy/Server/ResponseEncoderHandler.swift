import NIOCore
import NIOHTTP1

/// The worker loops' ``ResponseEncoder`` as a NIO handler, for the HTTPS listener: both
/// listeners frame answers alike. NIO's `HTTPResponseEncoder` does not, unpaired with its own
/// decoder: it would end a `HEAD`'s chunked answer with a chunk terminator after the head, and,
/// paired, it drops the body of every answer to a CONNECT, the 405 that says why included
/// (RFC 9110 §9.3.6 rules out a body in a 2xx answer only). Sits after the request decoder, so it
/// sees each request's head go by and knows which answer is a `HEAD`'s.
final class ResponseEncoderHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = ByteBuffer

    private var encoder = ResponseEncoder()
    private var queue = OutputQueue()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = self.unwrapInboundIn(data) { self.encoder.requestArrived(head.method) }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        do {
            _ = try self.encoder.encode(self.unwrapOutboundIn(data), into: &self.queue)
        } catch {
            // A head that would split the answer (NIO's header validator, before this, refuses it first).
            promise?.fail(error)
            context.close(promise: nil)
            return
        }
        let buffers = self.queue.takeAll()
        // The promise with the last bytes (an empty write when a part has none, a HEAD's body):
        // writes complete in order.
        for buffer in buffers.dropLast() { context.write(self.wrapOutboundOut(buffer), promise: nil) }
        context.write(self.wrapOutboundOut(buffers.last ?? ByteBuffer()), promise: promise)
    }
}
