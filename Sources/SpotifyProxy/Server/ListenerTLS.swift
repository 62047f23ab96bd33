import NIOSSL
import Synchronization

/// HTTPS on the listener: `[server] tls_cert` (a PEM certificate chain) and `tls_key` (its PEM
/// private key), HTTP/1.1 announced by ALPN. The context is replaced on reload; connections
/// accepted afterwards get the new certificate, open ones keep theirs.
public final class ListenerTLS: Sendable {
    private let current: Mutex<NIOSSLContext>

    public init(certificate: String, key: String) throws(ConfigurationError) {
        self.current = Mutex(try Self.context(certificate: certificate, key: key))
    }

    var context: NIOSSLContext { self.current.withLock { $0 } }

    /// The context new connections get from now on.
    func install(_ context: NIOSSLContext) {
        self.current.withLock { $0 = context }
    }

    static func context(certificate: String, key: String) throws(ConfigurationError) -> NIOSSLContext {
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
            guard !chain.isEmpty else { throw ConfigurationError("no certificate in the file") }
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
            configuration.applicationProtocols = ["http/1.1"]
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw ConfigurationError(
                "server.tls_cert = \(certificate), server.tls_key = \(key): cannot serve HTTPS with them (\(error)); give a PEM certificate chain and its own PEM private key (a key that is not the certificate's is refused this way too)")
        }
    }
}

extension ProxyConfiguration {
    /// The listener's TLS, when `[server] tls_cert` and `tls_key` are set (the files are read now).
    public func listenerTLS() throws(ConfigurationError) -> ListenerTLS? {
        guard let certificate = self.tlsCertificate, let key = self.tlsKey else { return nil }
        return try ListenerTLS(certificate: certificate, key: key)
    }
}
