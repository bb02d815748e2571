//! The broker's rustls client-certificate verifier.
//!
//! It reads the shared [`TrustRegistry`], so tenant CAs added or removed at
//! run time count from the next handshake. Client certificates are optional
//! at the TLS layer (password clients connect over TLS too). A certificate
//! that does not chain to a trusted CA with good signatures (unknown
//! issuer, bad signature, malformed) fails the handshake itself: we cannot
//! say who sent it. One that does chain, but names an identity the
//! platform refuses (expired, not yet valid, SAN of another tenant, a CA
//! certificate as the client's, names that disagree), passes the handshake
//! and is refused at CONNECT, so the device gets a CONNACK reason code
//! (0x86 in v5, 0x04 in 3.1.1) and the log a line with its tenant and
//! device: the broker calls `identify` again on `peer_certificates()` for
//! the identity, then checks revocation and device state, which this crate
//! does not know. rustls checks the client's proof of its key
//! (CertificateVerify) either way.
//!
//! Session resumption skips `verify_client_cert`: a resumed session keeps
//! the certificate it was first verified with. The broker's `ServerConfig`
//! must therefore turn resumption off (`session_storage =
//! NoServerSessionStorage`, `send_tls13_tickets = 0`), or at least run
//! `identify` on every connection's `peer_certificates()`, so a CA removed
//! since is refused (`tls_tests.rs` does the former).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, UnixTime};

use crate::der::from_unix;
use crate::{IdentityError, TrustRegistry};

/// A [`ClientCertVerifier`] over a [`TrustRegistry`], on aws-lc-rs.
#[derive(Debug)]
pub struct DeviceCertVerifier {
    registry: TrustRegistry,
    provider: Arc<CryptoProvider>,
    root_hints: Vec<DistinguishedName>,
}

impl DeviceCertVerifier {
    /// A verifier reading `registry`.
    pub fn new(registry: TrustRegistry) -> DeviceCertVerifier {
        DeviceCertVerifier {
            registry,
            provider: Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            // No hints: the tenant CAs are many and change at run time, and
            // devices send their one certificate whatever the hints say. An
            // empty list means "any CA" (RFC 8446 §4.2.4).
            root_hints: Vec::new(),
        }
    }
}

/// The rustls error for a refused identity; the `Other` variants keep
/// our typed reason for the server's log.
fn to_rustls(e: IdentityError) -> rustls::Error {
    let certificate_error = match e {
        IdentityError::Expired { .. } => CertificateError::Expired,
        IdentityError::NotYetValid { .. } => CertificateError::NotValidYet,
        IdentityError::UnknownIssuer => CertificateError::UnknownIssuer,
        IdentityError::BadSignature => CertificateError::BadSignature,
        IdentityError::Malformed { .. } => CertificateError::BadEncoding,
        other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(certificate_error)
}

/// Errors about a chain we verified, left for the broker's authenticator to
/// refuse with a reason code (see the module docs).
fn refused_at_connect(e: &IdentityError) -> bool {
    !matches!(
        e,
        IdentityError::NoCertificate
            | IdentityError::Malformed { .. }
            | IdentityError::UnknownIssuer
            | IdentityError::BadSignature
    )
}

impl ClientCertVerifier for DeviceCertVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.root_hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let seconds = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        match self
            .registry
            .identify(std::slice::from_ref(end_entity), from_unix(seconds))
        {
            Ok(_) => Ok(ClientCertVerified::assertion()),
            Err(e) if refused_at_connect(&e) => {
                tracing::debug!(reason = %e, "client certificate chains to a trusted CA; its identity is refused at CONNECT");
                Ok(ClientCertVerified::assertion())
            }
            Err(e) => {
                tracing::info!(reason = %e, "client certificate refused");
                Err(to_rustls(e))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
