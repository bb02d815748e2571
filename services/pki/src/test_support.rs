//! Shared fixtures for this crate's unit tests: a root, two tenant CAs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::{Duration, Utc};

use crate::{DeviceCertParams, DeviceKey, IssuedDeviceCert, RootCa, TenantCa};

pub(crate) struct Fixture {
    pub root: RootCa,
    pub acme: TenantCa,
    pub beta: TenantCa,
}

impl Fixture {
    pub fn new() -> Fixture {
        let root = RootCa::generate(Utc::now(), Duration::days(3650)).unwrap();
        let acme = root
            .issue_tenant_ca("acme", Utc::now(), Duration::days(365))
            .unwrap();
        let beta = root
            .issue_tenant_ca("beta", Utc::now(), Duration::days(365))
            .unwrap();
        Fixture { root, acme, beta }
    }

    pub fn tenant(&self, tenant: &str) -> &TenantCa {
        match tenant {
            "acme" => &self.acme,
            "beta" => &self.beta,
            other => panic!("no fixture tenant {other}"),
        }
    }

    pub fn params<'a>(&self, device: &'a str) -> DeviceCertParams<'a> {
        DeviceCertParams {
            trust_domain: "fleetmq.local",
            device,
            validity: Duration::days(30),
            max_validity: Duration::days(365),
            now: Utc::now(),
        }
    }

    pub fn issue(&self, tenant: &str, device: &str, key: DeviceKey<'_>) -> IssuedDeviceCert {
        self.tenant(tenant)
            .issue_device_cert(&self.params(device), key)
            .unwrap()
    }
}

/// Parameters for a device-looking leaf, to be bent by a test before signing.
pub fn leaf_params(cn: &str, san_uri: Option<&str>) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, cn);
    params.distinguished_name = dn;
    if let Some(uri) = san_uri {
        params.subject_alt_names = vec![rcgen::SanType::URI(uri.try_into().unwrap())];
    }
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    params
}

impl Fixture {
    /// Sign `params` with a tenant CA's key: certificates our issuance
    /// would never make (wrong SAN, missing names), to prove they are refused.
    pub fn craft(
        &self,
        tenant: &str,
        params: &rcgen::CertificateParams,
    ) -> (rustls_pki_types::CertificateDer<'static>, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params
            .signed_by(&key, self.tenant(tenant).issuer())
            .unwrap();
        (cert.der().clone(), key)
    }

    pub fn registry(&self) -> crate::TrustRegistry {
        let registry =
            crate::TrustRegistry::new(self.root.cert_der().clone(), "fleetmq.local").unwrap();
        registry.add_tenant_ca(&self.acme).unwrap();
        registry.add_tenant_ca(&self.beta).unwrap();
        registry
    }
}

/// A CA of the tenant's own (not ours), with its key.
pub fn own_ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair, rcgen::CertificateParams) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    (cert, key, params)
}
