use chrono::Duration;

use super::*;
use crate::DeviceKey;
use crate::test_support::{Fixture, leaf_params, own_ca};

fn chain_of(issued: &crate::IssuedDeviceCert) -> Vec<CertificateDer<'static>> {
    let mut chain = vec![issued.certificate_der.clone()];
    chain.extend(crate::pem_to_der_chain(&issued.chain_pem).unwrap());
    chain
}

/// A CA of `tenant`'s own, named `name`, registered in `registry`: what
/// signs its devices' certificates.
fn register_own_ca(
    registry: &TrustRegistry,
    tenant: &str,
    name: &str,
) -> rcgen::Issuer<'static, rcgen::KeyPair> {
    let (cert, key, params) = own_ca(name);
    registry
        .add_ca(tenant, CaKind::Registered, cert.der().clone())
        .unwrap();
    rcgen::Issuer::new(params, key)
}

/// The certificate `params` describe, with a key of its own, signed by
/// `issuer`.
fn signed(
    params: rcgen::CertificateParams,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> CertificateDer<'static> {
    params
        .signed_by(&rcgen::KeyPair::generate().unwrap(), issuer)
        .unwrap()
        .der()
        .clone()
}

#[test]
fn identifies_a_device_from_its_leaf_or_full_chain() {
    let f = Fixture::new();
    let registry = f.registry();
    let issued = f.issue("acme", "sensor-1", DeviceKey::Generate);
    let leaf_only = registry
        .identify(std::slice::from_ref(&issued.certificate_der), Utc::now())
        .unwrap();
    assert_eq!(
        leaf_only,
        DeviceIdentity {
            tenant: "acme".into(),
            device: "sensor-1".into(),
            serial: issued.serial.clone(),
            fingerprint_sha256: issued.fingerprint_sha256.clone(),
            not_before: issued.not_before,
            not_after: issued.not_after,
            issuer_ca: hex::encode(f.acme.subject_key_id()),
            issuer_kind: CaKind::Issued,
        }
    );
    assert_eq!(
        registry.identify(&chain_of(&issued), Utc::now()).unwrap(),
        leaf_only
    );
    assert_eq!(
        registry.identify(&[], Utc::now()),
        Err(IdentityError::NoCertificate)
    );
}

#[test]
fn refuses_outside_the_validity_period() {
    let f = Fixture::new();
    let registry = f.registry();
    let issued = f.issue("acme", "d", DeviceKey::Generate);
    let chain = [issued.certificate_der.clone()];
    assert!(matches!(
        registry.identify(&chain, issued.not_after + Duration::seconds(1)),
        Err(IdentityError::Expired { not_after }) if not_after == issued.not_after
    ));
    assert!(matches!(
        registry.identify(&chain, issued.not_before - Duration::seconds(1)),
        Err(IdentityError::NotYetValid { .. })
    ));
}

/// A leaf is verified with its issued CA as the anchor (the CA's signature
/// by the root was checked when it was added): the CA's own validity still
/// bounds the leaf's, as it did when webpki walked the chain to the root.
#[test]
fn an_issued_cas_validity_bounds_its_leaves() {
    let f = Fixture::new();
    let start = Utc::now() + Duration::days(10);
    let short = f
        .root
        .issue_tenant_ca("acme", start, Duration::days(1))
        .unwrap();
    let registry = TrustRegistry::new(f.root.cert_der().clone(), "fleetmq.local").unwrap();
    registry.add_tenant_ca(&short).unwrap();
    // A leaf our issuance would cap at the CA's end: valid for a year.
    let mut params = leaf_params("d", Some("spiffe://fleetmq.local/tenant/acme/device/d"));
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(365);
    let leaf = params
        .signed_by(&rcgen::KeyPair::generate().unwrap(), short.issuer())
        .unwrap()
        .der()
        .clone();
    let chain = [leaf];
    assert!(
        registry
            .identify(&chain, start + Duration::hours(12))
            .is_ok()
    );
    assert!(matches!(
        registry.identify(&chain, start + Duration::days(2)),
        Err(IdentityError::Expired { .. })
    ));
    assert!(matches!(
        registry.identify(&chain, Utc::now()),
        Err(IdentityError::NotYetValid { .. })
    ));
}

#[test]
fn refuses_names_that_do_not_add_up() {
    let f = Fixture::new();
    let registry = f.registry();
    let identify = |params: &rcgen::CertificateParams| {
        let (der, _) = f.craft("acme", params);
        registry.identify(&[der], Utc::now())
    };
    // Signed by acme's CA, claiming a beta device.
    assert_eq!(
        identify(&leaf_params(
            "d",
            Some("spiffe://fleetmq.local/tenant/beta/device/d")
        )),
        Err(IdentityError::TenantMismatch {
            san_tenant: "beta".into(),
            ca_tenant: "acme".into()
        })
    );
    assert_eq!(
        identify(&leaf_params(
            "other",
            Some("spiffe://fleetmq.local/tenant/acme/device/d")
        )),
        Err(IdentityError::DeviceMismatch {
            cn: "other".into(),
            san_device: "d".into()
        })
    );
    assert_eq!(
        identify(&leaf_params("d", None)),
        Err(IdentityError::MissingSpiffeSan)
    );
    for uri in [
        "spiffe://elsewhere.example/tenant/acme/device/d",
        "spiffe://fleetmq.local/tenant/acme/device/d/x",
        "spiffe://fleetmq.local/tenant/acme/device/a+b",
    ] {
        assert!(
            matches!(
                identify(&leaf_params("d", Some(uri))),
                Err(IdentityError::BadSpiffeSan { .. })
            ),
            "{uri}"
        );
    }
    let mut two = leaf_params("d", Some("spiffe://fleetmq.local/tenant/acme/device/d"));
    two.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://fleetmq.local/tenant/acme/device/e"
            .try_into()
            .unwrap(),
    ));
    assert!(matches!(
        identify(&two),
        Err(IdentityError::BadSpiffeSan { .. })
    ));
}

#[test]
fn refuses_ca_certificates_strangers_and_forgeries() {
    let f = Fixture::new();
    let registry = f.registry();
    let now = Utc::now();
    assert_eq!(
        registry.identify(&[f.acme.cert_der().clone()], now),
        Err(IdentityError::CaAsClient)
    );
    assert_eq!(
        registry.identify(&[f.root.cert_der().clone()], now),
        Err(IdentityError::CaAsClient)
    );
    // Another platform's root and tenant CA, same tenant name.
    let stranger = Fixture::new();
    let foreign = stranger.issue("acme", "d", DeviceKey::Generate);
    assert_eq!(
        registry.identify(&chain_of(&foreign), now),
        Err(IdentityError::UnknownIssuer)
    );
    // A CA that copies acme's name and key id but not its key.
    let mut fake_ca = rcgen::CertificateParams::default();
    fake_ca.distinguished_name = rcgen::DistinguishedName::new();
    fake_ca
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fleetmq tenant acme CA");
    fake_ca
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "acme");
    fake_ca.key_identifier_method =
        rcgen::KeyIdMethod::PreSpecified(f.acme.subject_key_id().to_vec());
    let fake = rcgen::Issuer::new(fake_ca, rcgen::KeyPair::generate().unwrap());
    let params = leaf_params("d", Some("spiffe://fleetmq.local/tenant/acme/device/d"));
    let forged = params
        .signed_by(&rcgen::KeyPair::generate().unwrap(), &fake)
        .unwrap();
    assert_eq!(
        registry.identify(&[forged.der().clone()], now),
        Err(IdentityError::BadSignature)
    );
}

#[test]
fn trust_set_changes_apply_at_once() {
    let f = Fixture::new();
    let registry = f.registry();
    let reader = registry.clone();
    let issued = f.issue("acme", "d", DeviceKey::Generate);
    let chain = [issued.certificate_der.clone()];
    assert!(reader.identify(&chain, Utc::now()).is_ok());
    assert_eq!(registry.remove_tenant("acme"), 1);
    assert_eq!(
        reader.identify(&chain, Utc::now()),
        Err(IdentityError::UnknownIssuer)
    );
    registry.add_tenant_ca(&f.acme).unwrap();
    assert!(reader.identify(&chain, Utc::now()).is_ok());
    assert!(registry.remove_ca(f.acme.subject_key_id()));
    assert!(!registry.remove_ca(f.acme.subject_key_id()));
    assert_eq!(registry.len(), 1);

    // A CA is one tenant's; the root is no tenant's; issued CAs need our root.
    assert!(matches!(
        registry.add_ca("other", CaKind::Issued, f.beta.cert_der().clone()),
        Err(Error::CaTaken { tenant }) if tenant == "beta"
    ));
    assert!(matches!(
        registry.add_ca("other", CaKind::Registered, f.root.cert_der().clone()),
        Err(Error::CaTaken { .. })
    ));
    let stranger = Fixture::new();
    assert!(matches!(
        registry.add_tenant_ca(&stranger.acme),
        Err(Error::NotSignedByRoot { .. })
    ));
    assert!(matches!(
        registry.add_ca("acme", CaKind::Registered, issued.certificate_der.clone()),
        Err(Error::NotACa { .. })
    ));
}

#[test]
fn registered_ca_vouches_for_its_tenant_only() {
    let f = Fixture::new();
    let registry = f.registry();
    let issuer = register_own_ca(&registry, "beta", "Beta Devices Root");
    let sign = |params| signed(params, &issuer);
    // Their own naming: the CN is the device.
    let id = registry
        .identify(&[sign(leaf_params("meter-7", None))], Utc::now())
        .unwrap();
    assert_eq!(
        (id.tenant.as_str(), id.device.as_str()),
        ("beta", "meter-7")
    );
    assert_eq!(id.issuer_kind, CaKind::Registered);
    // But a SPIFFE name for another tenant is still refused.
    let wrong = sign(leaf_params(
        "d",
        Some("spiffe://fleetmq.local/tenant/acme/device/d"),
    ));
    assert!(matches!(
        registry.identify(&[wrong], Utc::now()),
        Err(IdentityError::TenantMismatch { .. })
    ));
    assert!(matches!(
        registry.identify(&[sign(leaf_params("bad/id", None))], Utc::now()),
        Err(IdentityError::DeviceMismatch { .. })
    ));
}

#[test]
fn another_tenants_ca_with_the_same_subject_locks_no_one_out() {
    let f = Fixture::new();
    let registry = f.registry();
    // The second tenant registers first, and after: neither order matters.
    let b_issuer = register_own_ca(&registry, "bravo", "Common Name Devices Root");
    let a_issuer = register_own_ca(&registry, "alpha", "Common Name Devices Root");
    // Leaves without an Authority Key Identifier: found by issuer name.
    let sign = |issuer: &rcgen::Issuer<'_, rcgen::KeyPair>, cn: &str, san: Option<&str>| {
        let mut params = leaf_params(cn, san);
        params.use_authority_key_identifier_extension = false;
        signed(params, issuer)
    };
    for (issuer, tenant) in [(&a_issuer, "alpha"), (&b_issuer, "bravo")] {
        let id = registry
            .identify(&[sign(issuer, "meter-1", None)], Utc::now())
            .unwrap();
        assert_eq!(
            (id.tenant.as_str(), id.device.as_str()),
            (tenant, "meter-1")
        );
    }
    // A leaf naming alpha is looked up among alpha's CAs only: bravo's key
    // cannot make it alpha's.
    let named = "spiffe://fleetmq.local/tenant/alpha/device/m";
    let id = registry
        .identify(&[sign(&a_issuer, "m", Some(named))], Utc::now())
        .unwrap();
    assert_eq!(id.tenant, "alpha");
    assert!(matches!(
        registry.identify(&[sign(&b_issuer, "m", Some(named))], Utc::now()),
        Err(IdentityError::UnknownIssuer)
    ));
    // Removing bravo's CA changes nothing for alpha.
    assert_eq!(registry.remove_tenant("bravo"), 1);
    let id = registry
        .identify(&[sign(&a_issuer, "meter-1", None)], Utc::now())
        .unwrap();
    assert_eq!(id.tenant, "alpha");
}
