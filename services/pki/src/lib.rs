//! fleetmq PKI: the platform root CA, one intermediate CA per tenant, device
//! and server certificates, CRLs, and the identity a client chain proves.
//! Knows nothing about MQTT, HTTP or SQL: callers store what it hands back
//! (PEM, sealed keys, serials) and feed it back in.
//!
//! Module map:
//! - `names.rs` — tenant and device id rules, the SPIFFE URI SAN
//!   ([`spiffe_uri`], [`parse_spiffe_uri`]).
//! - `seal.rs` — [`Kek`], the key-encryption key, and the sealed-key format
//!   CA private keys are stored in ([`KeyPurpose`]).
//! - `ca.rs` — [`RootCa`] (generate, import PEM, seal/unseal) and
//!   [`TenantCa`] (signed by the root, pathlen 0).
//! - `issue.rs` — device certificates from a server-made key or a CSR
//!   ([`IssuedDeviceCert`]) and the broker's server certificate.
//! - `csr.rs` — CSR parsing: signature check and the accepted key types.
//! - `crl.rs` — per-tenant CRLs ([`Crl`], [`RevokedCert`]).
//! - `trust.rs` — [`TrustRegistry`]: the run-time set of trusted CAs and
//!   [`TrustRegistry::identify`] (chain → [`DeviceIdentity`]).
//! - `verifier.rs` — [`DeviceCertVerifier`], the rustls client-certificate
//!   verifier reading the same registry.
//! - `byoca.rs` — bring-your-own CA: proof of possession over a
//!   [`RegistrationCode`].
//! - `der.rs` — small helpers on certificates (serial, fingerprint, PEM).
//! - `error.rs` — [`Error`], [`CsrError`], [`IdentityError`], [`ByoCaError`].
//!
//! What this crate does **not** check, by design: revocation, device
//! existence and enabled state, and revocation floors. [`DeviceIdentity`]
//! carries the serial, tenant and device so the caller (the broker's
//! authenticator, with its cache of the store) decides those.

#![warn(missing_docs)]

mod byoca;
mod ca;
mod crl;
mod csr;
mod der;
mod error;
mod issue;
mod names;
mod seal;
mod trust;
mod verifier;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tls_tests;

pub use byoca::{RegisteredCa, RegistrationCode, verify_ca_registration};
pub use ca::{RootCa, TenantCa};
pub use crl::{Crl, RevocationReason, RevokedCert};
pub use csr::AcceptedKey;
pub use der::{fingerprint_sha256, pem_to_der_chain, serial_hex, serial_of};
pub use error::{ByoCaError, CsrError, Error, IdentityError};
pub use issue::{
    DEVICE_CLOCK_SKEW, DeviceCertParams, DeviceKey, IssuedDeviceCert, SecretPem, ServerCert,
};
pub use names::{
    DEFAULT_TRUST_DOMAIN, parse_spiffe_uri, spiffe_uri, validate_device_id, validate_tenant_id,
    validate_trust_domain,
};
pub use seal::{KEK_LEN, Kek, KeyPurpose};
pub use trust::{CaKind, DeviceIdentity, TrustRegistry, TrustedCa};
pub use verifier::DeviceCertVerifier;
