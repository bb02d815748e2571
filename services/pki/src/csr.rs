//! Certificate signing requests. Only the public key is taken from a CSR,
//! after its signature is checked: the subject and extensions it asks for
//! are ignored, the certificate's names come from the platform.

use rcgen::{
    PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256, PublicKeyData,
    SignatureAlgorithm,
};
use rustls_pki_types::CertificateSigningRequestDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

use crate::CsrError;

/// The smallest RSA modulus we issue for.
const MIN_RSA_BITS: usize = 2048;

/// A key type the platform issues certificates for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptedKey {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA with a modulus of this many bits (at least 2048).
    Rsa {
        /// Modulus size.
        bits: usize,
    },
}

/// The public key of a verified CSR, ready to be certified.
#[derive(Debug, Clone)]
pub(crate) struct CsrPublicKey {
    pub(crate) kind: AcceptedKey,
    spki_der: Vec<u8>,
    key_bits: Vec<u8>,
    algorithm: &'static SignatureAlgorithm,
}

impl PublicKeyData for CsrPublicKey {
    // The SubjectPublicKeyInfo exactly as the requester encoded it.
    fn subject_public_key_info(&self) -> Vec<u8> {
        self.spki_der.clone()
    }

    fn der_bytes(&self) -> &[u8] {
        &self.key_bits
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

/// Parse a PEM CSR, verify its self-signature and check its key type.
pub(crate) fn parse_csr(pem: &str) -> Result<CsrPublicKey, CsrError> {
    let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).map_err(|e| {
        CsrError::Malformed {
            reason: e.to_string(),
        }
    })?;
    let csr = match X509CertificationRequest::from_der(der.as_ref()) {
        Ok(([], csr)) => csr,
        Ok(_) => {
            return Err(CsrError::Malformed {
                reason: "trailing data after the request".into(),
            });
        }
        Err(e) => {
            return Err(CsrError::Malformed {
                reason: e.to_string(),
            });
        }
    };
    let spki = &csr.certification_request_info.subject_pki;
    let oid = &spki.algorithm.algorithm;
    let (kind, algorithm) = if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 => (AcceptedKey::EcdsaP256, &PKCS_ECDSA_P256_SHA256),
            Some(c) if c == OID_NIST_EC_P384 => (AcceptedKey::EcdsaP384, &PKCS_ECDSA_P384_SHA384),
            Some(c) => {
                return Err(CsrError::UnsupportedKey {
                    algorithm: format!("ECDSA on curve {c}"),
                });
            }
            None => {
                return Err(CsrError::UnsupportedKey {
                    algorithm: "ECDSA without a named curve".into(),
                });
            }
        }
    } else if *oid == OID_SIG_ED25519 {
        (AcceptedKey::Ed25519, &PKCS_ED25519)
    } else if *oid == OID_PKCS1_RSAENCRYPTION {
        let bits = match spki.parsed() {
            Ok(PublicKey::RSA(rsa)) => rsa.key_size(),
            _ => {
                return Err(CsrError::Malformed {
                    reason: "unreadable RSA public key".into(),
                });
            }
        };
        if bits < MIN_RSA_BITS {
            return Err(CsrError::RsaKeyTooSmall { bits });
        }
        (AcceptedKey::Rsa { bits }, &PKCS_RSA_SHA256)
    } else {
        return Err(CsrError::UnsupportedKey {
            algorithm: format!("key algorithm {oid}"),
        });
    };
    // After the key type check, so an unsupported key says so rather than
    // "bad signature" from a verifier that cannot handle it.
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    Ok(CsrPublicKey {
        kind,
        spki_der: spki.raw.to_vec(),
        key_bits: spki.subject_public_key.data.to_vec(),
        algorithm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P521_SHA512, RsaKeySize};

    fn csr_for(key: &KeyPair) -> String {
        let mut params = CertificateParams::new(vec!["ignored.example".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "someone-else");
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn accepts_the_supported_key_types() {
        for (alg, kind) in [
            (&PKCS_ECDSA_P256_SHA256, AcceptedKey::EcdsaP256),
            (&PKCS_ECDSA_P384_SHA384, AcceptedKey::EcdsaP384),
            (&PKCS_ED25519, AcceptedKey::Ed25519),
        ] {
            let key = KeyPair::generate_for(alg).unwrap();
            let parsed = parse_csr(&csr_for(&key)).unwrap();
            assert_eq!(parsed.kind, kind);
            assert_eq!(
                parsed.subject_public_key_info(),
                key.subject_public_key_info()
            );
        }
    }

    #[test]
    fn accepts_rsa_2048() {
        let key = KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).unwrap();
        let parsed = parse_csr(&csr_for(&key)).unwrap();
        assert_eq!(parsed.kind, AcceptedKey::Rsa { bits: 2048 });
    }

    #[test]
    fn refuses_other_curves_and_garbage() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P521_SHA512).unwrap();
        let err = parse_csr(&csr_for(&key)).unwrap_err();
        assert!(matches!(err, CsrError::UnsupportedKey { .. }), "{err}");
        assert!(err.to_string().contains("1.3.132.0.35"), "{err}");
        assert!(matches!(
            parse_csr("not a csr"),
            Err(CsrError::Malformed { .. })
        ));
    }

    #[test]
    fn refuses_a_tampered_signature() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let params = CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        let csr = params.serialize_request(&key).unwrap();
        let mut der = csr.der().to_vec();
        // Flip a bit in the requested DNS name, inside the signed info.
        let at = der.windows(9).position(|w| w == b"a.example").unwrap();
        der[at] ^= 0x01;
        let pem = crate::der::pem_block("CERTIFICATE REQUEST", &der);
        assert_eq!(parse_csr(&pem).unwrap_err(), CsrError::BadSignature);
    }
}
