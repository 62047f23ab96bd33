import NIOCore
import NIOPosix
import NIOSSL

/// Bytes written as they are to an HTTPS listener, and every byte it answers until it closes
/// the connection: for tests of how answers are framed over TLS. In-process, not `openssl
/// s_client`: Foundation's `Process.run()` crashes now and then on Linux (an over-read listing
/// `/proc/self/fd`, swift-corelibs-foundation #5472), more often the more tests spawn.
public enum TLSRawClient {
    /// `certificate`: the listener's own (a PEM file), trusted as the root.
    public static func exchange(port: Int, certificate: String, sending request: String) async throws -> [UInt8] {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .file(certificate)
        configuration.certificateVerification = .noHostnameVerification
        let context = try NIOSSLContext(configuration: configuration)
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
}
