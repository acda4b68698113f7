import NIOCore
import NIOSSL

/// How a client checks the server's TLS certificate and, if asked, shows its own: for `wss://`,
/// LIME over TCP with `encryption: tls`, and NATS over TLS.
///
/// With no options at all a client still upgrades when the server requires TLS, trusting the
/// system's certificate authorities, as nats.go and nats-py do.
public struct TLSClientOptions: Sendable {
    /// A PEM file of the certificate authorities to trust; nil: the system's roots.
    public var caFile: String?
    /// A client certificate chain (PEM) and its key, for the hub's `transport` scheme or `verify`.
    public var certificateFile: String?
    public var keyFile: String?
    /// The name the server's certificate must carry; nil: the host of the URL.
    public var serverName: String?

    public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil, serverName: String? = nil) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.serverName = serverName
    }

    /// The TLS handler for a connection to `host`.
    func makeHandler(host: String) throws -> NIOSSLClientHandler {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let caFile { configuration.trustRoots = .file(caFile) }
        if let certificateFile, let keyFile {
            configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) }
            configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
        }
        let name = serverName ?? host
        // An IP address cannot be sent as SNI: the certificate is then checked against the
        // address the connection reached.
        let isAddress = (try? SocketAddress(ipAddress: name, port: 0)) != nil
        return try NIOSSLClientHandler(context: try NIOSSLContext(configuration: configuration), serverHostname: isAddress ? nil : name)
    }
}
