//! Bring-your-own CA: a tenant that already runs a PKI registers its CA.
//!
//! Proof of possession: the server hands out a random [`RegistrationCode`];
//! the tenant signs a verification certificate whose CN is that code with
//! its CA's key; [`verify_ca_registration`] checks it. Only the holder of the
//! CA key can do that, so nobody registers someone else's CA. Codes are
//! single use and short-lived: keeping and expiring them is the caller's.

use std::fmt;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use chrono::{DateTime, Utc};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certificate::X509Certificate;

use crate::ByoCaError;
use crate::der::{
    common_name, der_to_pem, fingerprint_sha256, from_unix, is_ca, parse_cert, subject_key_id,
};

/// A random registration code (128 bits, hex).
#[derive(Clone, PartialEq, Eq)]
pub struct RegistrationCode(String);

impl RegistrationCode {
    /// A fresh code.
    pub fn generate() -> Result<RegistrationCode, crate::Error> {
        let mut bytes = [0u8; 16];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| crate::Error::Crypto { what: "random" })?;
        Ok(RegistrationCode(hex::encode(bytes)))
    }

    /// A code handed out earlier (read back from storage).
    pub fn from_stored(code: impl Into<String>) -> RegistrationCode {
        RegistrationCode(code.into())
    }

    /// The code, for the tenant to put in the verification certificate's CN.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RegistrationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RegistrationCode(<redacted>)")
    }
}

/// A CA whose registration checked out; add it to the trust set as
/// [`crate::CaKind::Registered`] and store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredCa {
    /// Subject, as text.
    pub subject: String,
    /// Subject key identifier.
    pub subject_key_id: Vec<u8>,
    /// SHA-256 of the DER, hex.
    pub fingerprint_sha256: String,
    /// End of validity.
    pub not_after: DateTime<Utc>,
    /// The certificate, PEM (normalized).
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
}

fn parse_pem(pem: &str, what: &'static str) -> Result<CertificateDer<'static>, ByoCaError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| ByoCaError::Malformed {
        what,
        reason: e.to_string(),
    })
}

fn parsed<'a>(
    der: &'a CertificateDer<'_>,
    what: &'static str,
) -> Result<X509Certificate<'a>, ByoCaError> {
    parse_cert(der).map_err(|reason| ByoCaError::Malformed { what, reason })
}

fn valid_at(cert: &X509Certificate<'_>, now: DateTime<Utc>) -> bool {
    let t = now.timestamp();
    cert.validity().not_before.timestamp() <= t && t <= cert.validity().not_after.timestamp()
}

/// Check a bring-your-own CA registration: `ca_pem` is a CA certificate
/// (CA:TRUE, keyCertSign if key usage is present, a subject key identifier,
/// valid at `now`), and `verification_pem` is valid at `now`, has CN =
/// `code`, and is signed by the CA's key.
pub fn verify_ca_registration(
    ca_pem: &str,
    verification_pem: &str,
    code: &RegistrationCode,
    now: DateTime<Utc>,
) -> Result<RegisteredCa, ByoCaError> {
    const CA: &str = "CA certificate";
    const PROOF: &str = "verification certificate";
    let ca_der = parse_pem(ca_pem, CA)?;
    let ca = parsed(&ca_der, CA)?;
    if !is_ca(&ca) {
        return Err(ByoCaError::NotACa {
            reason: "basicConstraints CA:TRUE is missing",
        });
    }
    if let Ok(Some(usage)) = ca.key_usage()
        && !usage.value.key_cert_sign()
    {
        return Err(ByoCaError::NotACa {
            reason: "key usage does not allow keyCertSign",
        });
    }
    let subject_key_id = subject_key_id(&ca).ok_or(ByoCaError::MissingSubjectKeyId)?;
    if !valid_at(&ca, now) {
        return Err(ByoCaError::NotValidNow { what: CA });
    }
    let proof_der = parse_pem(verification_pem, PROOF)?;
    let proof = parsed(&proof_der, PROOF)?;
    if !valid_at(&proof, now) {
        return Err(ByoCaError::NotValidNow { what: PROOF });
    }
    if common_name(&proof).as_deref() != Some(code.as_str()) {
        return Err(ByoCaError::CodeMismatch);
    }
    proof
        .verify_signature(Some(ca.public_key()))
        .map_err(|_| ByoCaError::NotSignedByCa)?;
    Ok(RegisteredCa {
        subject: ca.subject().to_string(),
        subject_key_id,
        fingerprint_sha256: fingerprint_sha256(&ca_der),
        not_after: from_unix(ca.validity().not_after.timestamp()),
        cert_pem: der_to_pem(&ca_der),
        cert_der: ca_der.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{leaf_params, own_ca};

    fn proof(cn: &str, issuer: &rcgen::Issuer<'_, rcgen::KeyPair>) -> String {
        leaf_params(cn, None)
            .signed_by(&rcgen::KeyPair::generate().unwrap(), issuer)
            .unwrap()
            .pem()
    }

    #[test]
    fn accepts_proof_signed_by_the_ca_over_the_code() {
        let (ca, key, params) = own_ca("Acme Device CA");
        let issuer = rcgen::Issuer::new(params, key);
        let code = RegistrationCode::generate().unwrap();
        assert_eq!(code.as_str().len(), 32);
        assert!(!format!("{code:?}").contains(code.as_str()));
        let registered =
            verify_ca_registration(&ca.pem(), &proof(code.as_str(), &issuer), &code, Utc::now())
                .unwrap();
        assert_eq!(registered.subject, "CN=Acme Device CA");
        assert_eq!(registered.cert_der, *ca.der());
        assert_eq!(registered.fingerprint_sha256, fingerprint_sha256(ca.der()));
        assert!(!registered.subject_key_id.is_empty());
    }

    #[test]
    fn refuses_wrong_code_wrong_signer_and_non_ca() {
        let (ca, key, params) = own_ca("Acme Device CA");
        let issuer = rcgen::Issuer::new(params, key);
        let code = RegistrationCode::generate().unwrap();
        let now = Utc::now();
        assert_eq!(
            verify_ca_registration(&ca.pem(), &proof("not-the-code", &issuer), &code, now),
            Err(ByoCaError::CodeMismatch)
        );
        // Someone who has the CA certificate but not its key.
        let (_, other_key, other_params) = own_ca("Acme Device CA");
        let impostor = rcgen::Issuer::new(other_params, other_key);
        assert_eq!(
            verify_ca_registration(&ca.pem(), &proof(code.as_str(), &impostor), &code, now),
            Err(ByoCaError::NotSignedByCa)
        );
        let leaf = proof("leaf", &issuer);
        assert!(matches!(
            verify_ca_registration(&leaf, &proof(code.as_str(), &issuer), &code, now),
            Err(ByoCaError::NotACa { .. })
        ));
        assert!(matches!(
            verify_ca_registration("junk", &leaf, &code, now),
            Err(ByoCaError::Malformed { .. })
        ));
        let later = now + chrono::Duration::days(2);
        assert_eq!(
            verify_ca_registration(&ca.pem(), &proof(code.as_str(), &issuer), &code, later),
            Err(ByoCaError::NotValidNow {
                what: "verification certificate"
            })
        );
    }
}
