import Foundation
import NIOCore
import NIOSSL
import RelayTransport
import Synchronization
import X509

/// The hub's TLS context, made from the configured files and made again on `reload()` (SIGHUP):
/// connections opened afterwards use the new certificate, open ones keep theirs.
final class TLSContextStore: Sendable {
    let settings: HubConfiguration.TLSSettings
    private let context: Mutex<NIOSSLContext>

    init(settings: HubConfiguration.TLSSettings) throws {
        self.settings = settings
        context = Mutex(try Self.makeContext(settings))
    }

    /// Reads the certificate, key and CA files again.
    func reload() throws {
        let fresh = try Self.makeContext(settings)
        context.withLock { $0 = fresh }
    }

    var current: NIOSSLContext { context.withLock { $0 } }

    /// The handlers that run TLS as the server of a new connection: NIO's TLS handler, and the
    /// handshake's deadline (`timedOut` is told when it passes).
    func serverHandlers(timedOut: @escaping @Sendable () -> Void) -> [any ChannelHandler] {
        [
            NIOSSLServerHandler(context: current),
            HandshakeDeadline(timeout: .nanoseconds(Int64(settings.handshakeTimeoutSeconds * 1_000_000_000)), timedOut: timedOut),
        ]
    }

    private static func makeContext(_ settings: HubConfiguration.TLSSettings) throws -> NIOSSLContext {
        do {
            let chain = try NIOSSLCertificate.fromPEMFile(settings.cert).map { NIOSSLCertificateSource.certificate($0) }
            guard !chain.isEmpty else { throw HubError.invalidConfiguration("tls: no certificate in '\(settings.cert)'") }
            let key = try NIOSSLPrivateKey(file: settings.key, format: .pem)
            var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
            configuration.minimumTLSVersion = .tlsv12
            if let ca = settings.ca {
                configuration.trustRoots = .file(ca)
                // With `verify` every client needs a certificate; without, one that shows one is checked.
                configuration.certificateVerification = settings.verify ? .noHostnameVerification : .optionalVerification
            } else if settings.verify {
                throw HubError.invalidConfiguration("tls: 'verify' needs a 'ca' to check client certificates against")
            }
            return try NIOSSLContext(configuration: configuration)
        } catch let error as HubError {
            throw error
        } catch {
            throw HubError.invalidConfiguration("tls: \(error)")
        }
    }
}

/// The names a verified client certificate gives: its subject's common name, then its subject
/// alternative names (e-mail addresses, DNS names, URIs), as the `transport` scheme reads them.
enum CertificateNames {
    static func of(_ certificate: NIOSSLCertificate) -> [String] {
        guard let der = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: der) else { return [] }
        var names: [String] = []
        for rdn in parsed.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.commonName {
                names.append(String(describing: attribute.value))
            }
        }
        if let alternatives = try? parsed.extensions.subjectAlternativeNames {
            for name in alternatives {
                switch name {
                case .rfc822Name(let text), .dnsName(let text), .uniformResourceIdentifier(let text): names.append(text)
                default: break
                }
            }
        }
        return names
    }

    /// What the TLS handler of a channel knows of its peer, once the handshake is done.
    static func transportFacts(of channel: any Channel) -> TransportFacts {
        guard let handler = try? channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self) else {
            return TransportFacts()
        }
        return TransportFacts(secured: true, certificateNames: handler.peerCertificate.map(of) ?? [])
    }
}
