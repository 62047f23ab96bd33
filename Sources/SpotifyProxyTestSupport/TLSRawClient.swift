import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS

/// Bytes written as they are to an HTTPS listener, and every byte it answers until it closes
/// the connection: for tests of how answers are framed over TLS. In-process, not `openssl
/// s_client`: Foundation's `Process.run()` crashes now and then on Linux (an over-read listing
/// `/proc/self/fd`, swift-corelibs-foundation #5472), more often the more tests spawn.
public enum TLSRawClient {
    /// Trusting `certificate`, the listener's own (a PEM file), as the root; offering TLS up to
    /// `maximumVersion` (nil: 1.3) and from 1.0.
    static func context(trusting certificate: String, maximumVersion: TLSVersion? = nil) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv1
        configuration.maximumTLSVersion = maximumVersion
        configuration.trustRoots = .file(certificate)
        configuration.certificateVerification = .noHostnameVerification
        return try NIOSSLContext(configuration: configuration)
    }

    /// `certificate`: the listener's own (a PEM file), trusted as the root.
    public static func exchange(port: Int, certificate: String, sending request: String) async throws -> [UInt8] {
        let context = try Self.context(trusting: certificate)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(string: request))
            var received: [UInt8] = []
            do {
                for try await chunk in inbound { received += chunk.readableBytesView }
            } catch NIOSSLError.uncleanShutdown {
                // Closed without TLS's close_notify: what came is all there is.
            }
            return received
        }
    }

    /// A connection that completes its TLS handshake, then reads nothing more: it never answers
    /// the listener's `close_notify`, as an idle client at the proxy's shutdown does not. The
    /// caller closes it. Throws when the handshake fails (offering TLS up to `maximumVersion`).
    public static func silentConnection(port: Int, certificate: String, maximumVersion: TLSVersion? = nil) async throws -> any Channel {
        let context = try Self.context(trusting: certificate, maximumVersion: maximumVersion)
        let handshake = MultiThreadedEventLoopGroup.singleton.next().makePromise(of: Void.self)
        let channel = try await ClientBootstrap(group: handshake.futureResult.eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                    try channel.pipeline.syncOperations.addHandler(HandshakeWatcher(done: handshake))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        try await handshake.futureResult.get()
        try await channel.setOption(.autoRead, value: false).get()
        return channel
    }

    /// Completes `done` once the TLS handshake has.
    private final class HandshakeWatcher: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let done: EventLoopPromise<Void>
        init(done: EventLoopPromise<Void>) { self.done = done }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case .handshakeCompleted = event as? TLSUserEvent { self.done.succeed(()) }
            context.fireUserInboundEventTriggered(event)
        }

        func channelInactive(context: ChannelHandlerContext) {
            self.done.fail(ChannelError.ioOnClosedChannel)
            context.fireChannelInactive()
        }
    }
}
