//! Small helpers on certificates shared by the other modules.

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use chrono::{DateTime, Utc};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

use crate::Error;

/// A certificate serial as lower-case hex without leading zero bytes (the
/// DER sign byte is not part of the number), `"00"` for zero.
pub fn serial_hex(raw_serial: &[u8]) -> String {
    let first = raw_serial
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(raw_serial.len());
    match raw_serial.get(first..) {
        Some(digits) if !digits.is_empty() => hex::encode(digits),
        _ => "00".to_owned(),
    }
}

/// SHA-256 of a certificate's DER, lower-case hex.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    hex::encode(digest(&SHA256, der))
}

/// The serial (as [`serial_hex`]) of a DER certificate, `None` when it
/// does not parse.
pub fn serial_of(der: &[u8]) -> Option<String> {
    parse_cert(der)
        .ok()
        .map(|c| serial_hex(c.tbs_certificate.raw_serial()))
}

/// Every `CERTIFICATE` block in `pem`, in order. Errors if there is none.
pub fn pem_to_der_chain(pem: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Parse {
            what: "certificate PEM",
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(Error::Parse {
            what: "certificate PEM",
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(chain)
}

/// The first certificate in `pem`.
pub(crate) fn pem_to_der(pem: &str, what: &'static str) -> Result<CertificateDer<'static>, Error> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| Error::Parse {
        what,
        reason: e.to_string(),
    })
}

/// PEM text for one DER certificate.
pub(crate) fn der_to_pem(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

pub(crate) fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// 16 random bytes: a 128-bit serial (rcgen encodes it as a positive INTEGER).
pub(crate) fn random_serial() -> Result<[u8; 16], Error> {
    let mut serial = [0u8; 16];
    SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| Error::Crypto { what: "random" })?;
    Ok(serial)
}

pub(crate) fn to_offset(t: DateTime<Utc>) -> Result<OffsetDateTime, Error> {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(|_| Error::InvalidValidity {
        reason: "date out of range",
    })
}

pub(crate) fn from_unix(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Parse one DER certificate, with no trailing bytes.
pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing data after the certificate".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The subject key identifier, if the certificate has one.
pub(crate) fn subject_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
            _ => None,
        })
}

/// The authority key identifier's key id, if present.
pub(crate) fn authority_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|id| id.0.to_vec())
            }
            _ => None,
        })
}

/// True when basicConstraints says CA:TRUE.
pub(crate) fn is_ca(cert: &X509Certificate<'_>) -> bool {
    matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca)
}

/// The first subject CN as text, if any.
pub(crate) fn common_name(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_hex_drops_the_sign_byte() {
        assert_eq!(serial_hex(&[0x00, 0x80, 0x01]), "8001");
        assert_eq!(serial_hex(&[0x7f]), "7f");
        assert_eq!(serial_hex(&[0, 0]), "00");
        assert_eq!(serial_hex(&[]), "00");
    }

    #[test]
    fn pem_chain_needs_a_certificate() {
        assert!(pem_to_der_chain("nothing here").is_err());
        let pem = der_to_pem(&[1, 2, 3]);
        assert_eq!(pem_to_der_chain(&pem).unwrap()[0].as_ref(), &[1, 2, 3]);
    }
}
