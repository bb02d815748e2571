//! The run-time trust set and identity from a presented chain.
//!
//! [`TrustRegistry`] is a cheap-to-clone handle on one shared set: the
//! platform root and every tenant CA (issued by the root, or registered by
//! the tenant). The API adds and removes CAs while the broker runs; the
//! broker's [`crate::DeviceCertVerifier`] and authenticator read the same set,
//! so a change counts from the next handshake, with no restart.
//!
//! The issuing CA is found by the leaf's authority key identifier (most
//! firmware sends only its leaf), falling back to the issuer name. Whatever
//! intermediates the client sends are ignored: the chain is always built
//! from our own copy of the CA, so the tenant that vouches is never in doubt.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};

use chrono::{DateTime, Utc};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage, anchor_from_trusted_cert};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::der::{
    authority_key_id, common_name, fingerprint_sha256, from_unix, is_ca, parse_cert, serial_hex,
    subject_key_id,
};
use crate::names::{
    parse_spiffe_uri, validate_device_id, validate_tenant_id, validate_trust_domain,
};
use crate::{Error, IdentityError, TenantCa};

/// How a tenant CA came to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CaKind {
    /// Made by the platform and signed by its root.
    Issued,
    /// The tenant's own CA, registered with proof of possession.
    Registered,
}

impl CaKind {
    /// `issued` or `registered`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            CaKind::Issued => "issued",
            CaKind::Registered => "registered",
        }
    }
}

impl FromStr for CaKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "issued" => Ok(CaKind::Issued),
            "registered" => Ok(CaKind::Registered),
            other => Err(format!("unknown CA kind {other:?}")),
        }
    }
}

/// A CA in the trust set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedCa {
    /// The tenant it vouches for.
    pub tenant: String,
    /// Issued by the platform or registered.
    pub kind: CaKind,
    /// Its subject key identifier.
    pub subject_key_id: Vec<u8>,
    /// Its subject, as text.
    pub subject: String,
    /// SHA-256 of its DER, hex.
    pub fingerprint_sha256: String,
    /// The certificate.
    pub cert_der: CertificateDer<'static>,
    subject_der: Vec<u8>,
    /// For an `Issued` CA, the seconds (Unix) within which both it and the
    /// root are valid: a leaf is verified with the CA as its anchor (its
    /// signature by the root was verified once, when it was added), and
    /// webpki checks no anchor's validity, so we check this instead.
    chain_validity: Option<(i64, i64)>,
}

/// Who a verified client certificate says it is. The caller still checks
/// what this crate cannot know: the device exists and is enabled, `serial`
/// is not revoked, and `not_before` is not below a revocation floor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// Tenant of the issuing CA (and of the SAN, which must agree).
    pub tenant: String,
    /// Device id (SAN and CN agree).
    pub device: String,
    /// Leaf serial, hex ([`crate::serial_hex`]).
    pub serial: String,
    /// SHA-256 of the leaf DER, hex.
    pub fingerprint_sha256: String,
    /// Leaf notBefore.
    pub not_before: DateTime<Utc>,
    /// Leaf notAfter.
    pub not_after: DateTime<Utc>,
    /// Subject key identifier (hex) of the CA that issued the leaf.
    pub issuer_ca: String,
    /// Whether that CA was issued by the platform or registered.
    pub issuer_kind: CaKind,
}

struct TrustSet {
    trust_domain: String,
    root: CertificateDer<'static>,
    root_key_id: Vec<u8>,
    by_key_id: HashMap<Vec<u8>, Arc<TrustedCa>>,
}

/// The shared, swappable set of trusted CAs. Clones share one set.
#[derive(Clone)]
pub struct TrustRegistry {
    set: Arc<RwLock<TrustSet>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for TrustRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustRegistry")
            .field("cas", &self.len())
            .finish_non_exhaustive()
    }
}

impl TrustRegistry {
    /// A registry trusting `root` (the platform root certificate) and no
    /// tenant CA yet. SPIFFE SANs must name `trust_domain`.
    pub fn new(root: CertificateDer<'static>, trust_domain: &str) -> Result<TrustRegistry, Error> {
        validate_trust_domain(trust_domain)?;
        let cert = parse_cert(&root).map_err(|reason| Error::Parse {
            what: "root CA certificate",
            reason,
        })?;
        if !is_ca(&cert) {
            return Err(Error::NotACa {
                what: "root CA certificate",
            });
        }
        let root_key_id = subject_key_id(&cert).ok_or(Error::MissingSubjectKeyId)?;
        Ok(TrustRegistry {
            set: Arc::new(RwLock::new(TrustSet {
                trust_domain: trust_domain.to_owned(),
                root,
                root_key_id,
                by_key_id: HashMap::new(),
            })),
            algorithms: rustls::crypto::aws_lc_rs::default_provider()
                .signature_verification_algorithms,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, TrustSet> {
        // Nothing panics while holding the lock, and the set is consistent
        // after every statement: a poisoned lock is still safe to use.
        self.set.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, TrustSet> {
        self.set.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Trust a platform-issued tenant CA.
    pub fn add_tenant_ca(&self, ca: &TenantCa) -> Result<Arc<TrustedCa>, Error> {
        self.add_ca(ca.tenant(), CaKind::Issued, ca.cert_der().clone())
    }

    /// Trust `cert_der` as `tenant`'s CA. An `Issued` CA must be signed by
    /// the root; a `Registered` one is trusted as its own anchor (check its
    /// proof of possession first, [`crate::verify_ca_registration`]).
    /// Re-adding a CA for the same tenant replaces it; a CA held by another
    /// tenant (or the root itself) is refused.
    pub fn add_ca(
        &self,
        tenant: &str,
        kind: CaKind,
        cert_der: CertificateDer<'static>,
    ) -> Result<Arc<TrustedCa>, Error> {
        validate_tenant_id(tenant)?;
        let what = "tenant CA certificate";
        let cert = parse_cert(&cert_der).map_err(|reason| Error::Parse { what, reason })?;
        if !is_ca(&cert) {
            return Err(Error::NotACa { what });
        }
        let key_id = subject_key_id(&cert).ok_or(Error::MissingSubjectKeyId)?;
        let mut chain_validity = None;
        if kind == CaKind::Issued {
            let root = self.read().root.clone();
            let root_cert = parse_cert(&root).map_err(|reason| Error::Parse {
                what: "root CA certificate",
                reason,
            })?;
            if cert.verify_signature(Some(root_cert.public_key())).is_err() {
                return Err(Error::NotSignedByRoot {
                    tenant: tenant.to_owned(),
                });
            }
            let (ca, root) = (cert.validity(), root_cert.validity());
            chain_validity = Some((
                ca.not_before.timestamp().max(root.not_before.timestamp()),
                ca.not_after.timestamp().min(root.not_after.timestamp()),
            ));
        }
        let trusted = Arc::new(TrustedCa {
            tenant: tenant.to_owned(),
            kind,
            subject: cert.subject().to_string(),
            fingerprint_sha256: fingerprint_sha256(&cert_der),
            subject_key_id: key_id.clone(),
            subject_der: cert.subject().as_raw().to_vec(),
            cert_der: cert_der.clone(),
            chain_validity,
        });
        let mut set = self.write();
        if set.root_key_id == key_id {
            return Err(Error::CaTaken {
                tenant: "(the platform root)".into(),
            });
        }
        if let Some(existing) = set.by_key_id.get(&key_id)
            && existing.tenant != tenant
        {
            return Err(Error::CaTaken {
                tenant: existing.tenant.clone(),
            });
        }
        set.by_key_id.insert(key_id, Arc::clone(&trusted));
        drop(set);
        tracing::info!(tenant, kind = kind.as_str(), "CA trusted");
        Ok(trusted)
    }

    /// Stop trusting the CA with this subject key identifier. True if it was there.
    pub fn remove_ca(&self, subject_key_id: &[u8]) -> bool {
        self.write().by_key_id.remove(subject_key_id).is_some()
    }

    /// Stop trusting every CA of `tenant`; returns how many there were.
    pub fn remove_tenant(&self, tenant: &str) -> usize {
        let mut set = self.write();
        let before = set.by_key_id.len();
        set.by_key_id.retain(|_, ca| ca.tenant != tenant);
        before - set.by_key_id.len()
    }

    /// How many tenant CAs are trusted.
    pub fn len(&self) -> usize {
        self.read().by_key_id.len()
    }

    /// True when no tenant CA is trusted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The CA with this subject key identifier, if trusted.
    pub fn get(&self, subject_key_id: &[u8]) -> Option<Arc<TrustedCa>> {
        self.read().by_key_id.get(subject_key_id).cloned()
    }

    /// Verify `chain` (leaf first; anything after the leaf is ignored) at
    /// `now` and return the identity it proves. See [`DeviceIdentity`] for
    /// what remains the caller's to check.
    pub fn identify(
        &self,
        chain: &[CertificateDer<'_>],
        now: DateTime<Utc>,
    ) -> Result<DeviceIdentity, IdentityError> {
        let leaf_der = chain.first().ok_or(IdentityError::NoCertificate)?;
        let leaf = parse_cert(leaf_der).map_err(|reason| IdentityError::Malformed { reason })?;
        if is_ca(&leaf) {
            return Err(IdentityError::CaAsClient);
        }
        let (ca, trust_domain) = {
            let set = self.read();
            let ca = find_issuer(&set, &leaf).ok_or(IdentityError::UnknownIssuer)?;
            (ca, set.trust_domain.clone())
        };
        self.verify_path(leaf_der, &leaf, &ca, now)?;
        let (tenant, device) = names_in(&leaf, &ca, &trust_domain)?;
        Ok(DeviceIdentity {
            tenant,
            device,
            serial: serial_hex(leaf.raw_serial()),
            fingerprint_sha256: fingerprint_sha256(leaf_der),
            not_before: from_unix(leaf.validity().not_before.timestamp()),
            not_after: from_unix(leaf.validity().not_after.timestamp()),
            issuer_ca: hex::encode(&ca.subject_key_id),
            issuer_kind: ca.kind,
        })
    }

    /// The leaf's signature, validity period and EKU, by webpki (the code
    /// rustls itself verifies with), with its CA as the anchor. An issued
    /// CA is not verified against the root again: that was done once when
    /// it was added, and a P-384 signature check per connection was most
    /// of a TLS connect's CPU, twice over (the handshake's verifier and the
    /// authenticator both identify the leaf; issue 16). What that check
    /// also covered, the CA's and the root's validity, is checked here.
    fn verify_path(
        &self,
        leaf_der: &CertificateDer<'_>,
        leaf: &X509Certificate<'_>,
        ca: &TrustedCa,
        now: DateTime<Utc>,
    ) -> Result<(), IdentityError> {
        if let Some((from, until)) = ca.chain_validity {
            if now.timestamp() > until {
                return Err(IdentityError::Expired {
                    not_after: from_unix(leaf.validity().not_after.timestamp()),
                });
            }
            if now.timestamp() < from {
                return Err(IdentityError::NotYetValid {
                    not_before: from_unix(leaf.validity().not_before.timestamp()),
                });
            }
        }
        let refused = |e: webpki::Error| IdentityError::Refused {
            reason: format!("{e:?}"),
        };
        let end_entity =
            EndEntityCert::try_from(leaf_der).map_err(|e| IdentityError::Malformed {
                reason: format!("{e:?}"),
            })?;
        let anchors = [anchor_from_trusted_cert(&ca.cert_der).map_err(refused)?];
        let seconds = u64::try_from(now.timestamp()).unwrap_or(0);
        let result = end_entity.verify_for_usage(
            self.algorithms.all,
            &anchors,
            &[],
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(seconds)),
            KeyUsage::client_auth(),
            None,
            None,
        );
        match result {
            Ok(_) => Ok(()),
            Err(webpki::Error::CertExpired { .. }) => Err(IdentityError::Expired {
                not_after: from_unix(leaf.validity().not_after.timestamp()),
            }),
            Err(webpki::Error::CertNotValidYet { .. }) => Err(IdentityError::NotYetValid {
                not_before: from_unix(leaf.validity().not_before.timestamp()),
            }),
            Err(webpki::Error::CaUsedAsEndEntity) => Err(IdentityError::CaAsClient),
            Err(webpki::Error::UnknownIssuer) => Err(IdentityError::UnknownIssuer),
            Err(
                webpki::Error::InvalidSignatureForPublicKey
                | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
                | webpki::Error::UnsupportedSignatureAlgorithmContext(_),
            ) => Err(IdentityError::BadSignature),
            Err(e) => Err(refused(e)),
        }
    }
}

/// Most CAs sharing one subject name whose keys are tried on a leaf
/// without an Authority Key Identifier (a signature check each).
const MAX_NAME_CANDIDATES: usize = 16;

/// The CA that issued `leaf`. By its Authority Key Identifier when it has
/// one (a CA's key id is unique in the set). Without one (some older CAs
/// omit it), by issuer name, which any tenant may give its own CA: so
/// only among the CAs of the tenant the leaf's SPIFFE SAN names, if it
/// names one, and only a CA whose key verifies the leaf's signature. A
/// second tenant registering a CA with the same subject thus neither
/// hides nor replaces the first tenant's CA.
fn find_issuer(set: &TrustSet, leaf: &X509Certificate<'_>) -> Option<Arc<TrustedCa>> {
    if let Some(key_id) = authority_key_id(leaf) {
        return set.by_key_id.get(&key_id).cloned();
    }
    let issuer = leaf.issuer().as_raw();
    let named_tenant = spiffe_tenant(leaf);
    let mut candidates: Vec<&Arc<TrustedCa>> = set
        .by_key_id
        .values()
        .filter(|ca| ca.subject_der == issuer)
        .filter(|ca| named_tenant.as_deref().is_none_or(|t| ca.tenant == t))
        .collect();
    // The same order whatever the map's: the cap cuts the same CAs.
    candidates.sort_by(|a, b| a.subject_key_id.cmp(&b.subject_key_id));
    candidates
        .into_iter()
        .take(MAX_NAME_CANDIDATES)
        .find(|ca| {
            parse_cert(&ca.cert_der)
                .is_ok_and(|cert| leaf.verify_signature(Some(cert.public_key())).is_ok())
        })
        .cloned()
}

/// The tenant named by the leaf's single SPIFFE SAN, if it has one that
/// parses (the names are checked in full later, in [`names_in`]).
fn spiffe_tenant(leaf: &X509Certificate<'_>) -> Option<String> {
    let san = leaf.subject_alternative_name().ok()??;
    let mut uris = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe:") => Some(*uri),
            _ => None,
        });
    match (uris.next(), uris.next()) {
        (Some(uri), None) => parse_spiffe_uri(uri)
            .ok()
            .map(|(_, tenant, _)| tenant.to_owned()),
        _ => None,
    }
}

/// Tenant and device from the leaf's names. Platform-issued certificates
/// must carry our SPIFFE SAN; a registered CA's may omit it, and then the
/// CN is the device id.
fn names_in(
    leaf: &X509Certificate<'_>,
    ca: &TrustedCa,
    trust_domain: &str,
) -> Result<(String, String), IdentityError> {
    let cn = common_name(leaf).unwrap_or_default();
    let mut spiffe = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && uri.starts_with("spiffe:")
            {
                spiffe.push(*uri);
            }
        }
    }
    let uri = match spiffe.as_slice() {
        [] if ca.kind == CaKind::Registered => {
            validate_device_id(&cn).map_err(|_| IdentityError::DeviceMismatch {
                cn: cn.clone(),
                san_device: String::new(),
            })?;
            return Ok((ca.tenant.clone(), cn));
        }
        [] => return Err(IdentityError::MissingSpiffeSan),
        [uri] => *uri,
        [first, ..] => {
            return Err(IdentityError::BadSpiffeSan {
                uri: (*first).to_owned(),
                reason: "more than one spiffe:// URI",
            });
        }
    };
    let bad = |reason| IdentityError::BadSpiffeSan {
        uri: uri.to_owned(),
        reason,
    };
    let (domain, tenant, device) = parse_spiffe_uri(uri).map_err(bad)?;
    if domain != trust_domain {
        return Err(bad("another trust domain"));
    }
    if tenant != ca.tenant {
        return Err(IdentityError::TenantMismatch {
            san_tenant: tenant.to_owned(),
            ca_tenant: ca.tenant.clone(),
        });
    }
    if cn != device {
        return Err(IdentityError::DeviceMismatch {
            cn,
            san_device: device.to_owned(),
        });
    }
    Ok((tenant.to_owned(), device.to_owned()))
}

#[cfg(test)]
#[path = "trust_tests.rs"]
mod tests;
