//! Per-tenant certificate revocation lists, signed by the tenant CA.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};

use crate::der::{pem_block, to_offset};
use crate::{Error, TenantCa};

/// Why a certificate was revoked (RFC 5280 §5.3.1), as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RevocationReason {
    /// `unspecified`
    #[default]
    Unspecified,
    /// `key_compromise`
    KeyCompromise,
    /// `ca_compromise`
    CaCompromise,
    /// `affiliation_changed`
    AffiliationChanged,
    /// `superseded`
    Superseded,
    /// `cessation_of_operation`
    CessationOfOperation,
    /// `privilege_withdrawn`
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// Every reason, for listing in errors and API docs.
    pub const ALL: [RevocationReason; 7] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::PrivilegeWithdrawn,
    ];

    /// The snake_case name stored and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "key_compromise",
            RevocationReason::CaCompromise => "ca_compromise",
            RevocationReason::AffiliationChanged => "affiliation_changed",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessation_of_operation",
            RevocationReason::PrivilegeWithdrawn => "privilege_withdrawn",
        }
    }

    fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
            RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            RevocationReason::CaCompromise => rcgen::RevocationReason::CaCompromise,
            RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
            RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            RevocationReason::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
        }
    }
}

impl FromStr for RevocationReason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RevocationReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = RevocationReason::ALL.iter().map(|r| r.as_str()).collect();
                format!(
                    "unknown revocation reason {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// One revoked certificate, as the store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedCert {
    /// Serial, hex as [`crate::serial_hex`] writes it.
    pub serial: String,
    /// When it was revoked.
    pub revoked_at: DateTime<Utc>,
    /// Why.
    pub reason: RevocationReason,
}

/// A signed CRL in both encodings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    /// DER (`application/pkix-crl`).
    pub der: Vec<u8>,
    /// PEM (`X509 CRL`).
    pub pem: String,
}

impl TenantCa {
    /// Sign a CRL listing `revoked`, numbered `crl_number` (the caller keeps
    /// it increasing, e.g. a counter or the issue time in seconds), valid
    /// from `this_update` until `next_update`.
    pub fn crl(
        &self,
        revoked: &[RevokedCert],
        crl_number: u64,
        this_update: DateTime<Utc>,
        next_update: DateTime<Utc>,
    ) -> Result<Crl, Error> {
        if next_update <= this_update {
            return Err(Error::InvalidValidity {
                reason: "next_update must be after this_update",
            });
        }
        let revoked_certs = revoked
            .iter()
            .map(|entry| {
                let serial = hex::decode(&entry.serial).map_err(|_| Error::Parse {
                    what: "certificate serial",
                    reason: format!("{:?} is not hex", entry.serial),
                })?;
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial),
                    revocation_time: to_offset(entry.revoked_at)?,
                    reason_code: Some(entry.reason.to_rcgen()),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let params = CertificateRevocationListParams {
            this_update: to_offset(this_update)?,
            next_update: to_offset(next_update)?,
            crl_number: SerialNumber::from_slice(&crl_number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::PreSpecified(self.subject_key_id().to_vec()),
        };
        let crl = params.signed_by(self.issuer())?;
        let der = crl.der().to_vec();
        Ok(Crl {
            pem: pem_block("X509 CRL", &der),
            der,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceKey;
    use crate::test_support::Fixture;
    use chrono::Duration;
    use x509_parser::prelude::*;
    use x509_parser::revocation_list::CertificateRevocationList;

    #[test]
    fn crl_lists_serials_and_is_signed_by_the_tenant_ca() {
        let f = Fixture::new();
        let a = f.issue("acme", "d1", DeviceKey::Generate);
        let b = f.issue("acme", "d2", DeviceKey::Generate);
        let now = Utc::now();
        let revoked = vec![
            RevokedCert {
                serial: a.serial.clone(),
                revoked_at: now,
                reason: RevocationReason::KeyCompromise,
            },
            RevokedCert {
                serial: b.serial.clone(),
                revoked_at: now,
                reason: RevocationReason::Superseded,
            },
        ];
        let crl = f
            .tenant("acme")
            .crl(&revoked, 7, now, now + Duration::days(1))
            .unwrap();
        assert!(crl.pem.starts_with("-----BEGIN X509 CRL-----\n"));
        let (_, parsed) = CertificateRevocationList::from_der(&crl.der).unwrap();
        let (_, ca) = X509Certificate::from_der(f.tenant("acme").cert_der()).unwrap();
        parsed.verify_signature(ca.public_key()).unwrap();
        assert_eq!(parsed.issuer(), ca.subject());
        assert_eq!(parsed.crl_number().map(|n| n.to_string()), Some("7".into()));
        let serials: Vec<_> = parsed
            .iter_revoked_certificates()
            .map(|r| crate::der::serial_hex(r.raw_serial()))
            .collect();
        assert_eq!(serials, [a.serial, b.serial]);
        assert!(parsed.next_update().is_some());
        assert!(f.tenant("acme").crl(&revoked, 8, now, now).is_err());
        let bad = [RevokedCert {
            serial: "xyz".into(),
            revoked_at: now,
            reason: RevocationReason::Unspecified,
        }];
        assert!(
            f.tenant("acme")
                .crl(&bad, 9, now, now + Duration::days(1))
                .is_err()
        );
    }

    #[test]
    fn reasons_parse_by_name() {
        for reason in RevocationReason::ALL {
            assert_eq!(reason.as_str().parse::<RevocationReason>(), Ok(reason));
        }
        let err = "stolen".parse::<RevocationReason>().unwrap_err();
        assert!(err.contains("key_compromise"), "{err}");
    }
}
