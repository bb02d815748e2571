//! The CA hierarchy: one platform root, one intermediate per tenant.
//!
//! Both hold their certificate and an rcgen [`Issuer`] built from it, so
//! what they sign names them exactly as their certificate does and carries
//! their subject key identifier as its authority key identifier.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PublicKeyData, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use crate::der::{
    der_to_pem, from_unix, is_ca, parse_cert, pem_to_der, random_serial, subject_key_id, to_offset,
};
use crate::names::validate_tenant_id;
use crate::{Error, Kek, KeyPurpose};

/// How far a CA's notBefore is set back, for clocks running behind.
const CA_CLOCK_SKEW: Duration = Duration::hours(1);

/// A CA certificate and its private key, parsed once.
struct CaMaterial {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    subject_key_id: Vec<u8>,
    not_after: DateTime<Utc>,
    issuer: Issuer<'static, KeyPair>,
}

impl CaMaterial {
    fn new(
        cert_der: CertificateDer<'static>,
        key: KeyPair,
        what: &'static str,
    ) -> Result<Self, Error> {
        let parse_error = |reason| Error::Parse { what, reason };
        let cert = parse_cert(&cert_der).map_err(parse_error)?;
        if !is_ca(&cert) {
            return Err(Error::NotACa { what });
        }
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(Error::KeyMismatch { what });
        }
        let subject_key_id = subject_key_id(&cert).ok_or(Error::MissingSubjectKeyId)?;
        let not_after = from_unix(cert.validity().not_after.timestamp());
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(CaMaterial {
            cert_pem: der_to_pem(&cert_der),
            cert_der,
            subject_key_id,
            not_after,
            issuer,
        })
    }

    fn unseal(
        cert_pem: &str,
        sealed: &[u8],
        kek: &Kek,
        purpose: &KeyPurpose,
        what: &'static str,
    ) -> Result<Self, Error> {
        let cert_der = pem_to_der(cert_pem, what)?;
        let pkcs8 = kek.open(sealed, purpose)?;
        let key = key_from_pkcs8(&pkcs8)?;
        CaMaterial::new(cert_der, key, what)
    }

    fn seal(&self, kek: &Kek, purpose: &KeyPurpose) -> Result<Vec<u8>, Error> {
        let pkcs8 = Zeroizing::new(self.issuer.key().serialize_der());
        kek.seal(&pkcs8, purpose)
    }
}

fn key_from_pkcs8(pkcs8: &[u8]) -> Result<KeyPair, Error> {
    KeyPair::try_from(&PrivatePkcs8KeyDer::from(pkcs8)).map_err(|e| Error::Parse {
        what: "private key",
        reason: e.to_string(),
    })
}

fn ca_params(
    common_name: String,
    organization: &str,
    path_len: u8,
    now: DateTime<Utc>,
    not_after: DateTime<Utc>,
) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, organization);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = to_offset(now - CA_CLOCK_SKEW)?;
    params.not_after = to_offset(not_after)?;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    Ok(params)
}

fn check_validity(validity: Duration) -> Result<(), Error> {
    if validity <= Duration::zero() {
        return Err(Error::InvalidValidity {
            reason: "must be positive",
        });
    }
    Ok(())
}

/// Accessors both CA types share over their `ca: CaMaterial` field.
macro_rules! ca_accessors {
    ($what:literal) => {
        #[doc = concat!("The ", $what, " certificate, PEM.")]
        pub fn cert_pem(&self) -> &str {
            &self.ca.cert_pem
        }

        #[doc = concat!("The ", $what, " certificate, DER.")]
        pub fn cert_der(&self) -> &CertificateDer<'static> {
            &self.ca.cert_der
        }

        #[doc = concat!("The ", $what, "'s subject key identifier (what the AKI of certificates it signs holds).")]
        pub fn subject_key_id(&self) -> &[u8] {
            &self.ca.subject_key_id
        }

        #[doc = concat!("When the ", $what, " expires; nothing it signs outlives it.")]
        pub fn not_after(&self) -> DateTime<Utc> {
            self.ca.not_after
        }

        pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
            &self.ca.issuer
        }
    };
}

/// The platform root CA (ECDSA P-384). `Debug` shows no key material.
pub struct RootCa {
    ca: CaMaterial,
}

impl fmt::Debug for RootCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa")
            .field("subject_key_id", &hex::encode(&self.ca.subject_key_id))
            .field("not_after", &self.ca.not_after)
            .finish_non_exhaustive()
    }
}

impl RootCa {
    /// A new self-signed root valid from `now` (less an hour of clock skew)
    /// for `validity` (20 years is a sensible default).
    pub fn generate(now: DateTime<Utc>, validity: Duration) -> Result<RootCa, Error> {
        check_validity(validity)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384)?;
        // pathlen 1: root → tenant CA → device, nothing deeper.
        let params = ca_params("fleetmq root CA".into(), "fleetmq", 1, now, now + validity)?;
        let cert = params.self_signed(&key)?;
        let ca = CaMaterial::new(cert.der().clone(), key, "root CA certificate")?;
        Ok(RootCa { ca })
    }

    /// An existing root from PEM files: its certificate and its PKCS#8 (or
    /// SEC1/PKCS#1) private key, which must match.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<RootCa, Error> {
        let cert_der = pem_to_der(cert_pem, "root CA certificate")?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::Parse {
            what: "root CA private key",
            reason: e.to_string(),
        })?;
        Ok(RootCa {
            ca: CaMaterial::new(cert_der, key, "root CA certificate")?,
        })
    }

    /// A root from its stored certificate and its key sealed by [`RootCa::seal_key`].
    pub fn from_sealed(cert_pem: &str, sealed_key: &[u8], kek: &Kek) -> Result<RootCa, Error> {
        let ca = CaMaterial::unseal(
            cert_pem,
            sealed_key,
            kek,
            &KeyPurpose::RootCa,
            "root CA certificate",
        )?;
        Ok(RootCa { ca })
    }

    /// The private key sealed under `kek`, for storage.
    pub fn seal_key(&self, kek: &Kek) -> Result<Vec<u8>, Error> {
        self.ca.seal(kek, &KeyPurpose::RootCa)
    }

    ca_accessors!("root");

    /// A new intermediate CA for `tenant` (ECDSA P-256, pathlen 0, O =
    /// tenant id), valid for `validity` but never past the root.
    pub fn issue_tenant_ca(
        &self,
        tenant: &str,
        now: DateTime<Utc>,
        validity: Duration,
    ) -> Result<TenantCa, Error> {
        validate_tenant_id(tenant)?;
        check_validity(validity)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let not_after = (now + validity).min(self.ca.not_after);
        let mut params = ca_params(
            format!("fleetmq tenant {tenant} CA"),
            tenant,
            0,
            now,
            not_after,
        )?;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.ca.issuer)?;
        let ca = CaMaterial::new(cert.der().clone(), key, "tenant CA certificate")?;
        Ok(TenantCa {
            tenant: tenant.to_owned(),
            ca,
            root_pem: self.ca.cert_pem.clone(),
        })
    }
}

/// A tenant's intermediate CA, with the root's certificate for chains.
/// `Debug` shows no key material.
pub struct TenantCa {
    tenant: String,
    ca: CaMaterial,
    root_pem: String,
}

impl fmt::Debug for TenantCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantCa")
            .field("tenant", &self.tenant)
            .field("subject_key_id", &hex::encode(&self.ca.subject_key_id))
            .field("not_after", &self.ca.not_after)
            .finish_non_exhaustive()
    }
}

impl TenantCa {
    /// A tenant CA from its stored certificate, its sealed key and the root
    /// certificate it chains to. The key must have been sealed for this
    /// tenant ([`TenantCa::seal_key`]).
    pub fn from_sealed(
        tenant: &str,
        cert_pem: &str,
        sealed_key: &[u8],
        root_pem: &str,
        kek: &Kek,
    ) -> Result<TenantCa, Error> {
        validate_tenant_id(tenant)?;
        let purpose = KeyPurpose::TenantCa(tenant.to_owned());
        let ca = CaMaterial::unseal(cert_pem, sealed_key, kek, &purpose, "tenant CA certificate")?;
        let root_der = pem_to_der(root_pem, "root CA certificate")?;
        Ok(TenantCa {
            tenant: tenant.to_owned(),
            ca,
            root_pem: der_to_pem(&root_der),
        })
    }

    /// The private key sealed under `kek` for this tenant, for storage.
    pub fn seal_key(&self, kek: &Kek) -> Result<Vec<u8>, Error> {
        self.ca
            .seal(kek, &KeyPurpose::TenantCa(self.tenant.clone()))
    }

    /// The tenant id (the CA's O).
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    ca_accessors!("tenant CA");

    /// The chain a device presents after its leaf: this CA, then the root (PEM).
    pub fn chain_pem(&self) -> String {
        format!("{}{}", self.ca.cert_pem, self.root_pem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    pub(crate) fn now() -> DateTime<Utc> {
        Utc::now()
    }

    #[test]
    fn root_and_tenant_ca_have_the_right_shape() {
        let root = RootCa::generate(now(), Duration::days(365 * 20)).unwrap();
        let tenant = root
            .issue_tenant_ca("acme", now(), Duration::days(3650))
            .unwrap();
        let (_, cert) = X509Certificate::from_der(tenant.cert_der()).unwrap();
        let bc = cert.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let org = cert.subject().iter_organization().next().unwrap();
        assert_eq!(org.as_str().unwrap(), "acme");
        assert!(cert.key_usage().unwrap().unwrap().value.key_cert_sign());
        let (_, root_cert) = X509Certificate::from_der(root.cert_der()).unwrap();
        cert.verify_signature(Some(root_cert.public_key())).unwrap();
        assert_eq!(cert.issuer(), root_cert.subject());
        assert_eq!(
            crate::der::authority_key_id(&cert).unwrap(),
            root.subject_key_id()
        );
        assert!(tenant.not_after() <= root.not_after());
        assert_eq!(tenant.chain_pem().matches("BEGIN CERTIFICATE").count(), 2);
        assert!(
            root.issue_tenant_ca("Bad Tenant", now(), Duration::days(1))
                .is_err()
        );
    }

    #[test]
    fn keys_survive_sealing_and_debug_hides_them() {
        let kek = Kek::generate().unwrap();
        let root = RootCa::generate(now(), Duration::days(365)).unwrap();
        let sealed = root.seal_key(&kek).unwrap();
        let again = RootCa::from_sealed(root.cert_pem(), &sealed, &kek).unwrap();
        assert_eq!(again.subject_key_id(), root.subject_key_id());

        let tenant = root
            .issue_tenant_ca("acme", now(), Duration::days(30))
            .unwrap();
        let sealed_tenant = tenant.seal_key(&kek).unwrap();
        let loaded = TenantCa::from_sealed(
            "acme",
            tenant.cert_pem(),
            &sealed_tenant,
            root.cert_pem(),
            &kek,
        )
        .unwrap();
        assert_eq!(loaded.chain_pem(), tenant.chain_pem());
        // Sealed for acme: it does not open as another tenant's key.
        assert!(matches!(
            TenantCa::from_sealed(
                "other",
                tenant.cert_pem(),
                &sealed_tenant,
                root.cert_pem(),
                &kek
            ),
            Err(Error::Unseal { .. })
        ));
        // The root's sealed key does not pass for the tenant CA's.
        assert!(
            TenantCa::from_sealed("acme", tenant.cert_pem(), &sealed, root.cert_pem(), &kek)
                .is_err()
        );
        let debug = format!("{root:?} {tenant:?}");
        assert!(
            !debug.contains("PRIVATE") && !debug.contains("issuer"),
            "{debug}"
        );
    }

    #[test]
    fn import_checks_ca_flag_and_key_match() {
        let root = RootCa::generate(now(), Duration::days(365)).unwrap();
        let key_pem = root.issuer().key().serialize_pem();
        let imported = RootCa::from_pem(root.cert_pem(), &key_pem).unwrap();
        assert_eq!(imported.subject_key_id(), root.subject_key_id());
        let other = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(matches!(
            RootCa::from_pem(root.cert_pem(), &other.serialize_pem()),
            Err(Error::KeyMismatch { .. })
        ));
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["x.test".to_owned()])
            .unwrap()
            .self_signed(&leaf_key)
            .unwrap();
        assert!(matches!(
            RootCa::from_pem(&leaf.pem(), &leaf_key.serialize_pem()),
            Err(Error::NotACa { .. })
        ));
        assert!(RootCa::from_pem("garbage", &key_pem).is_err());
    }
}
