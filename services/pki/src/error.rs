//! The crate's errors. Variants carry ids and reasons, never key material.

/// Failures creating, importing, sealing or using CAs and certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tenant id outside `[a-z0-9-]{3,63}`.
    #[error("invalid tenant id {id:?}: expected 3-63 of a-z, 0-9 and '-'")]
    InvalidTenantId {
        /// The id as given.
        id: String,
    },
    /// A device id outside `[A-Za-z0-9._-]{1,128}`.
    #[error("invalid device id {id:?}: expected 1-128 of A-Z, a-z, 0-9, '.', '_' and '-'")]
    InvalidDeviceId {
        /// The id as given.
        id: String,
    },
    /// A SPIFFE trust domain that is not a lower-case DNS-style name.
    #[error("invalid trust domain {domain:?}: expected lower-case letters, digits, '.', '-'")]
    InvalidTrustDomain {
        /// The domain as given.
        domain: String,
    },
    /// A server certificate name that is neither an IP address nor a DNS name.
    #[error("invalid server name {name:?}")]
    InvalidServerName {
        /// The name as given.
        name: String,
    },
    /// A validity that is zero or negative.
    #[error("invalid validity: {reason}")]
    InvalidValidity {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// PEM or DER input that could not be read as `what`.
    #[error("could not parse {what}: {reason}")]
    Parse {
        /// What was expected ("CA certificate", "private key", …).
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// An imported CA certificate that may not sign certificates.
    #[error("{what} is not a CA certificate (basicConstraints CA:TRUE is required)")]
    NotACa {
        /// Which certificate.
        what: &'static str,
    },
    /// A private key that does not belong to the certificate it came with.
    #[error("the private key does not match the {what} certificate")]
    KeyMismatch {
        /// Which certificate.
        what: &'static str,
    },
    /// A tenant CA certificate that the platform root did not sign.
    #[error("the CA certificate for tenant {tenant} is not signed by the platform root")]
    NotSignedByRoot {
        /// The tenant it was meant for.
        tenant: String,
    },
    /// A CA certificate without a subject key identifier: devices' leaves
    /// find their issuer by it.
    #[error("the CA certificate has no subject key identifier")]
    MissingSubjectKeyId,
    /// The CA (by subject key identifier) is already trusted for another tenant.
    #[error("this CA is already trusted for tenant {tenant}")]
    CaTaken {
        /// The tenant that has it.
        tenant: String,
    },
    /// The key-encryption key is not 32 bytes of hex (or the file is unusable).
    #[error("invalid key-encryption key: {reason}")]
    InvalidKek {
        /// Why, without the key.
        reason: String,
    },
    /// A sealed key from an unknown format version.
    #[error("sealed key has unknown format version {version}")]
    UnknownSealVersion {
        /// The version byte found.
        version: u8,
    },
    /// A sealed key that is truncated, tampered with, sealed under another
    /// KEK or for another purpose (the AAD binds it to its owner).
    #[error("could not unseal the {purpose} key: wrong key-encryption key, wrong owner or corrupt")]
    Unseal {
        /// The key's purpose, e.g. `tenant-ca/acme`.
        purpose: String,
    },
    /// A CSR that was refused.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// The system random generator or a cipher failed.
    #[error("cryptographic operation failed: {what}")]
    Crypto {
        /// Which operation.
        what: &'static str,
    },
    /// rcgen refused to build a certificate or CRL.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// Reading or writing the KEK file.
    #[error("key-encryption key file {path}: {source}")]
    KekFile {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Why a CSR was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// Not a PEM `CERTIFICATE REQUEST` holding a PKCS#10 request.
    #[error("the CSR is not a PEM PKCS#10 certificate request: {reason}")]
    Malformed {
        /// Why.
        reason: String,
    },
    /// The request is not signed by the key it carries.
    #[error("the CSR's signature does not verify with its own public key")]
    BadSignature,
    /// A key type (or curve) we do not issue for.
    #[error(
        "unsupported key in the CSR: {algorithm}; use ECDSA P-256/P-384, Ed25519 or RSA >= 2048 bits"
    )]
    UnsupportedKey {
        /// The key algorithm or curve found.
        algorithm: String,
    },
    /// An RSA key below 2048 bits.
    #[error("RSA key of {bits} bits is too small; at least 2048 bits are required")]
    RsaKeyTooSmall {
        /// The key's modulus size.
        bits: usize,
    },
}

/// Why a presented client chain proves no device identity. The broker maps
/// these once to CONNACK codes and log lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// No certificate was presented.
    #[error("no client certificate")]
    NoCertificate,
    /// The leaf is not a parseable X.509 certificate.
    #[error("malformed client certificate: {reason}")]
    Malformed {
        /// Why.
        reason: String,
    },
    /// No trusted CA matches the leaf's authority key identifier or issuer.
    #[error("client certificate issued by an unknown CA")]
    UnknownIssuer,
    /// A signature in the chain does not verify.
    #[error("client certificate chain has a bad signature")]
    BadSignature,
    /// The leaf (or its CA) expired.
    #[error("client certificate expired at {not_after}")]
    Expired {
        /// The leaf's notAfter.
        not_after: chrono::DateTime<chrono::Utc>,
    },
    /// The leaf (or its CA) is not valid yet.
    #[error("client certificate not valid before {not_before}")]
    NotYetValid {
        /// The leaf's notBefore.
        not_before: chrono::DateTime<chrono::Utc>,
    },
    /// A CA certificate (basicConstraints CA:TRUE) presented as a client.
    #[error("a CA certificate cannot be used as a client certificate")]
    CaAsClient,
    /// The leaf has no `spiffe://` URI SAN.
    #[error("client certificate has no spiffe:// URI SAN")]
    MissingSpiffeSan,
    /// The `spiffe://` SAN is not `spiffe://{domain}/tenant/{t}/device/{d}`
    /// in our trust domain, or there are several.
    #[error("client certificate has an ill-formed SPIFFE SAN {uri:?}: {reason}")]
    BadSpiffeSan {
        /// The URI found.
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The SAN's tenant is not the tenant whose CA issued the certificate.
    #[error("certificate names tenant {san_tenant} but was issued by the CA of tenant {ca_tenant}")]
    TenantMismatch {
        /// Tenant in the SAN.
        san_tenant: String,
        /// Tenant of the issuing CA.
        ca_tenant: String,
    },
    /// The subject CN is not the SAN's device id.
    #[error("certificate CN {cn:?} is not the SAN's device {san_device}")]
    DeviceMismatch {
        /// The subject CN (empty if none).
        cn: String,
        /// The device in the SAN.
        san_device: String,
    },
    /// Any other reason the chain was refused (key usage, encoding, …).
    #[error("client certificate refused: {reason}")]
    Refused {
        /// The verifier's reason.
        reason: String,
    },
}

/// Why a bring-your-own CA registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ByoCaError {
    /// One of the PEM inputs does not hold a certificate.
    #[error("could not parse the {what}: {reason}")]
    Malformed {
        /// "CA certificate" or "verification certificate".
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The CA certificate lacks CA:TRUE or keyCertSign.
    #[error("the certificate is not a CA: {reason}")]
    NotACa {
        /// What is missing.
        reason: &'static str,
    },
    /// The CA has no subject key identifier (devices' leaves find it by one).
    #[error("the CA certificate has no subject key identifier extension")]
    MissingSubjectKeyId,
    /// The CA or verification certificate is outside its validity period.
    #[error("the {what} is not valid now")]
    NotValidNow {
        /// Which certificate.
        what: &'static str,
    },
    /// The verification certificate's CN is not the registration code.
    #[error("the verification certificate's CN is not the registration code")]
    CodeMismatch,
    /// The verification certificate was not signed by the CA's key.
    #[error("the verification certificate is not signed by the CA's key")]
    NotSignedByCa,
}
