import Crypto
import Foundation
import X509

/// Certificates made for a test, never committed: a CA, a server certificate for `localhost`
/// that it signed, and client certificates, written as PEM files into a fresh directory.
struct TestCertificates {
    let directory: String
    let caFile: String
    private(set) var serverCertificateFile = ""
    private(set) var serverKeyFile = ""
    private let caKey: P256.Signing.PrivateKey
    private let caName: DistinguishedName

    init(name: String = "Relay Test CA") throws {
        directory = NSTemporaryDirectory() + "relay-tls-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        caKey = P256.Signing.PrivateKey()
        caName = try DistinguishedName { CommonName(name) }
        let now = Date()
        let ca = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: Certificate.PublicKey(caKey.publicKey),
            notValidBefore: now - 3600, notValidAfter: now + 86400, issuer: caName, subject: caName,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: Certificate.PrivateKey(caKey))
        caFile = directory + "/ca.pem"
        try ca.serializeAsPEM().pemString.write(toFile: caFile, atomically: true, encoding: .utf8)
        let server = try issue(commonName: "localhost", names: [.dnsName("localhost")], usage: .serverAuth, file: "server")
        (serverCertificateFile, serverKeyFile) = server
    }

    /// A client certificate for `commonName` (and the e-mail SAN `email`, if given), signed by the CA.
    func client(_ commonName: String, email: String? = nil) throws -> (certificate: String, key: String) {
        try issue(
            commonName: commonName, names: email.map { [.rfc822Name($0)] } ?? [], usage: .clientAuth,
            file: "client-" + commonName.replacingOccurrences(of: "@", with: "_"))
    }

    private func issue(commonName: String, names: [GeneralName], usage: ExtendedKeyUsage.Usage, file: String) throws -> (String, String) {
        let key = P256.Signing.PrivateKey()
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: Certificate.PublicKey(key.publicKey),
            notValidBefore: now - 3600, notValidAfter: now + 86400, issuer: caName,
            subject: try DistinguishedName { CommonName(commonName) }, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([usage])
                if !names.isEmpty { SubjectAlternativeNames(names) }
            },
            issuerPrivateKey: Certificate.PrivateKey(caKey))
        let certificateFile = "\(directory)/\(file).pem"
        let keyFile = "\(directory)/\(file).key"
        try certificate.serializeAsPEM().pemString.write(toFile: certificateFile, atomically: true, encoding: .utf8)
        try key.pemRepresentation.write(toFile: keyFile, atomically: true, encoding: .utf8)
        return (certificateFile, keyFile)
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }
}
