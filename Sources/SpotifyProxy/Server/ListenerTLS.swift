#if canImport(Glibc)
import Glibc
#endif
import Crypto
import Foundation
import NIOCore
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

    static let closeNotifyWait = TimeAmount.milliseconds(500)

    static func context(certificate: String, key: String) throws(ConfigurationError) -> NIOSSLContext {
        for (setting, path) in [("server.tls_cert", certificate), ("server.tls_key", key)] {
            // NIO's errors for a file it cannot open do not say so ("failedToLoadCertificate").
            if let why = ConfigurationError.unreadableFile(path) {
                throw ConfigurationError(
                    "\(setting) = \(path): \(why); \(ConfigurationError.fix(for: why, "give the PEM file's path (relative to the configuration file's directory)"))")
            }
        }
        let chain: [NIOSSLCertificateSource]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
        } catch {
            throw ConfigurationError(
                "server.tls_cert = \(certificate): no usable PEM certificate in the file\(Self.detail(error)); give a PEM certificate chain (-----BEGIN CERTIFICATE-----)")
        }
        guard !chain.isEmpty else {
            throw ConfigurationError("server.tls_cert = \(certificate): no PEM certificate in the file; give a PEM certificate chain (-----BEGIN CERTIFICATE-----)")
        }
        let privateKey: NIOSSLPrivateKey
        do {
            privateKey = try NIOSSLPrivateKey(file: key, format: .pem)
        } catch {
            throw ConfigurationError(
                "server.tls_key = \(key): no usable PEM private key in the file\(Self.detail(error)); give the certificate's own unencrypted PEM key (an encrypted one can be decrypted with: openssl pkey -in KEY -out KEY.plain)")
        }
        do {
            var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(privateKey))
            configuration.applicationProtocols = ["http/1.1"]
            // TLS 1.0 and 1.1 are deprecated (RFC 8996); nginx's default is 1.2 and 1.3 too.
            configuration.minimumTLSVersion = .tlsv12
            // Closing, the proxy's close_notify is sent and the client's waited for this long
            // (NIO's default is 5 s): a client that never answers it, such as an idle one at a
            // shutdown, held the shutdown, and each closed connection's buffers, that long.
            configuration.shutdownTimeout = Self.closeNotifyWait
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw ConfigurationError(
                "server.tls_cert = \(certificate), server.tls_key = \(key): cannot serve HTTPS with them\(Self.detail(error)); the key must be the certificate's own")
        }
    }

    /// What NIOSSL said, in parentheses: BoringSSL's own words, not NIOSSL's case names
    /// (`failedToLoadPrivateKey` says no more than the message around it).
    static func detail(_ error: any Error) -> String {
        error is NIOSSLError ? "" : " (\(error))"
    }
}

extension ProxyConfiguration {
    /// The listener's TLS, when `[server] tls_cert` and `tls_key` are set (the files are read now).
    public func listenerTLS() throws(ConfigurationError) -> ListenerTLS? {
        guard let certificate = self.tlsCertificate, let key = self.tlsKey else { return nil }
        return try ListenerTLS(certificate: certificate, key: key)
    }

    /// The public key of the listener's certificate (its chain's first), as curl pins one
    /// (`sha256//` and the base64 of its SubjectPublicKeyInfo's SHA-256); nil without one, or
    /// when the file cannot be read.
    public func tlsCertificatePin() -> String? {
        guard let leaf = self.tlsLeafCertificate(), let key = try? leaf.extractPublicKey().toSPKIBytes() else { return nil }
        return "sha256//" + Data(SHA256.hash(data: key)).base64EncodedString()
    }

    /// The first certificate of `tls_cert`'s chain; nil without one, or when the file cannot be read.
    private func tlsLeafCertificate() -> NIOSSLCertificate? {
        self.tlsCertificate.flatMap { try? NIOSSLCertificate.fromPEMFile($0).first }
    }

    /// A warning when the listener's certificate (its chain's first) is outside its validity
    /// period at `now`: clients refuse it, and say only that verification failed. Served anyway,
    /// as nginx serves it: a renewed file is taken by a reload.
    public func tlsCertificateWarning(now: time_t = time(nil)) -> String? {
        guard let path = self.tlsCertificate, let leaf = self.tlsLeafCertificate() else { return nil }
        let fix = "clients will refuse it; put a valid one in its place and run spotify-proxy reload"
        if leaf.notValidAfter < now { return "server.tls_cert = \(path) expired on \(HTTPDate.format(leaf.notValidAfter)): \(fix)" }
        if leaf.notValidBefore > now { return "server.tls_cert = \(path) is not valid before \(HTTPDate.format(leaf.notValidBefore)): \(fix)" }
        return nil
    }
}
