//! CSR and certificate parsing on hostile input, through the pki crate's
//! public entry points: the CSR a device sends to be certified, the client
//! certificate a TLS peer presents, a CA a tenant uploads, and a
//! bring-your-own-CA registration.
//!
//! The first byte picks the entry point; the rest is the input. DER inputs
//! are also wrapped in PEM here, so that mutations reach the DER parsers
//! instead of dying in base64.
//!
//! Properties beyond "never panics": an identity proved by a chain is
//! always the one trusted CA's tenant, and a certificate issued for a CSR
//! that was accepted identifies as the device it was issued to.

#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use chrono::{Duration, Utc};
use libfuzzer_sys::fuzz_target;
use pki::{
    CaKind, DeviceCertParams, DeviceKey, RegistrationCode, RootCa, TenantCa, TrustRegistry,
    pem_to_der_chain, serial_of, verify_ca_registration,
};
use rustls_pki_types::CertificateDer;

const TENANT: &str = "acme";
const DOMAIN: &str = "fleetmq.local";

struct Fixture {
    ca: TenantCa,
    registry: TrustRegistry,
}

/// One root and one tenant CA per process: key generation is far slower
/// than anything under test.
static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let now = Utc::now();
    let root = RootCa::generate(now, Duration::days(3650)).expect("root CA");
    let ca = root
        .issue_tenant_ca(TENANT, now, Duration::days(365))
        .expect("tenant CA");
    let registry = TrustRegistry::new(root.cert_der().clone(), DOMAIN).expect("registry");
    registry.add_tenant_ca(&ca).expect("trust the tenant CA");
    Fixture { ca, registry }
});

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match mode % 5 {
        0 => csr(&text),
        1 => csr(&pem("CERTIFICATE REQUEST", rest)),
        2 => certificate(&[CertificateDer::from(rest)]),
        3 => certificate_pem(&text),
        _ => certificate_pem(&pem("CERTIFICATE", rest)),
    }
});

fn csr(pem: &str) {
    let f = &*FIXTURE;
    let params = DeviceCertParams {
        trust_domain: DOMAIN,
        device: "d1",
        validity: Duration::days(1),
        max_validity: Duration::days(30),
        now: Utc::now(),
    };
    let Ok(issued) = f.ca.issue_device_cert(&params, DeviceKey::Csr(pem)) else {
        return;
    };
    assert!(
        issued.private_key_pem.is_none(),
        "a CSR's key stays with the device"
    );
    let chain = pem_to_der_chain(&issued.certificate_pem).expect("our own PEM parses");
    let id = f
        .registry
        .identify(&chain, Utc::now())
        .expect("a certificate we issued identifies");
    assert_eq!((id.tenant.as_str(), id.device.as_str()), (TENANT, "d1"));
    assert_eq!(id.serial, issued.serial);
}

fn certificate(chain: &[CertificateDer<'_>]) {
    let f = &*FIXTURE;
    if let Ok(id) = f.registry.identify(chain, Utc::now()) {
        assert_eq!(id.tenant, TENANT, "identity from a CA of another tenant");
        assert!(!id.device.is_empty());
    }
    let Some(leaf) = chain.first() else {
        return;
    };
    let _ = serial_of(leaf);
    // An upload as another tenant's own CA: a separate registry, so that
    // what one input registers cannot change what the next one sees.
    let scratch = TrustRegistry::new(f.ca.cert_der().clone(), DOMAIN).expect("registry");
    if let Ok(ca) = scratch.add_ca("beta", CaKind::Registered, leaf.clone().into_owned()) {
        assert_eq!(ca.tenant, "beta");
        assert!(scratch.remove_ca(&ca.subject_key_id));
    }
}

fn certificate_pem(text: &str) {
    if let Ok(chain) = pem_to_der_chain(text) {
        assert!(!chain.is_empty());
        certificate(&chain);
    }
    let code = RegistrationCode::from_stored("fuzz-code");
    let _ = verify_ca_registration(text, text, &code, Utc::now());
}
