//! What the certificate and CA routes need from the rest of the platform:
//! [`Pki`] (the root CA, the key-encryption key, the run-time trust set and
//! the validity settings), set on [`crate::AppState`] by the binary
//! (without it the PKI routes answer 503), and [`PkiChanges`], which keeps
//! the trust set in step with CA changes made on any node.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use ::events::change::{Change, ChangeListener, Origin};
use chrono::{Duration, Utc};
use pki::{Kek, RootCa, TenantCa, TrustRegistry};
use store::{NewTenantCa, Store, TenantCaKind, TenantCaStatus};
use tokio::sync::Mutex;

use crate::ApiError;

/// How long a tenant CA made by the platform is valid (capped by the root).
const TENANT_CA_VALIDITY_DAYS: i64 = 5 * 365;

/// The platform PKI as the API uses it. Tenant CAs are unsealed once and
/// kept in memory.
pub struct Pki {
    root: Arc<RootCa>,
    kek: Arc<Kek>,
    trust: TrustRegistry,
    trust_domain: String,
    /// Validity of a device certificate when the request names none.
    pub default_validity: Duration,
    /// The longest validity a request may ask for.
    pub max_validity: Duration,
    /// Unsealed tenant CAs; the lock also makes lazy creation happen once.
    tenant_cas: Mutex<HashMap<String, Arc<TenantCa>>>,
}

impl fmt::Debug for Pki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pki")
            .field("trust_domain", &self.trust_domain)
            .field("default_validity", &self.default_validity)
            .field("max_validity", &self.max_validity)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// The key-encryption key, which seals the token signing keys too.
    pub(crate) fn kek(&self) -> Arc<Kek> {
        self.kek.clone()
    }

    /// `trust` must be the registry the broker's verifier reads, so CAs made
    /// here are trusted at once. Device certificates default to one year,
    /// at most two (change the public fields to configure).
    pub fn new(
        root: Arc<RootCa>,
        kek: Arc<Kek>,
        trust: TrustRegistry,
        trust_domain: impl Into<String>,
    ) -> Pki {
        Pki {
            root,
            kek,
            trust,
            trust_domain: trust_domain.into(),
            default_validity: Duration::days(365),
            max_validity: Duration::days(2 * 365),
            tenant_cas: Mutex::new(HashMap::new()),
        }
    }

    /// The platform root certificate, PEM.
    pub fn root_pem(&self) -> &str {
        self.root.cert_pem()
    }

    /// The SPIFFE trust domain of device certificates.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The run-time trust set.
    pub fn trust(&self) -> &TrustRegistry {
        &self.trust
    }

    /// The tenant's platform-issued CA: from memory, else unsealed from the
    /// store, else made now (tenants created before the PKI existed), stored
    /// sealed and added to the trust set.
    /// The second value says whether it was made now.
    async fn tenant_ca(
        &self,
        store: &Store,
        tenant: &str,
    ) -> Result<(Arc<TenantCa>, bool), ApiError> {
        let mut cached = self.tenant_cas.lock().await;
        if let Some(ca) = cached.get(tenant) {
            return Ok((Arc::clone(ca), false));
        }
        let stored = store
            .list_tenant_cas(Some(tenant))
            .await?
            .into_iter()
            .rev()
            .find(|ca| ca.kind == TenantCaKind::Issued && ca.status == TenantCaStatus::Active);
        let (ca, created) = match stored {
            Some(row) => {
                let sealed = row.sealed_key.as_deref().ok_or_else(|| {
                    ApiError::internal(format!("tenant {tenant} CA is stored without its key"))
                })?;
                let ca = TenantCa::from_sealed(
                    tenant,
                    &row.cert_pem,
                    sealed,
                    self.root.cert_pem(),
                    &self.kek,
                )
                .map_err(ApiError::internal)?;
                self.trust.add_tenant_ca(&ca).map_err(ApiError::internal)?;
                (ca, false)
            }
            None => (self.create_tenant_ca(store, tenant).await?, true),
        };
        let ca = Arc::new(ca);
        cached.insert(tenant.to_owned(), Arc::clone(&ca));
        Ok((ca, created))
    }

    async fn create_tenant_ca(&self, store: &Store, tenant: &str) -> Result<TenantCa, ApiError> {
        // Check the tenant first: a missing tenant is a 404, not a CA error.
        store.get_tenant(tenant).await?;
        let ca = self
            .root
            .issue_tenant_ca(tenant, Utc::now(), Duration::days(TENANT_CA_VALIDITY_DAYS))
            .map_err(ApiError::internal)?;
        let new = NewTenantCa {
            subject_key_id: hex::encode(ca.subject_key_id()),
            tenant_id: tenant.to_owned(),
            kind: TenantCaKind::Issued,
            cert_pem: ca.cert_pem().to_owned(),
            sealed_key: Some(ca.seal_key(&self.kek).map_err(ApiError::internal)?),
            subject: format!("fleetmq tenant {tenant} CA"),
            fingerprint: pki::fingerprint_sha256(ca.cert_der()),
            not_after: ca.not_after(),
        };
        store.create_tenant_ca(&new).await?;
        self.trust.add_tenant_ca(&ca).map_err(ApiError::internal)?;
        tracing::info!(tenant = %tenant, ca = %new.subject_key_id, "tenant CA created");
        Ok(ca)
    }

    /// Forget a tenant's CAs (the tenant was deleted).
    async fn forget_tenant(&self, tenant: &str) {
        self.tenant_cas.lock().await.remove(tenant);
        self.trust.remove_tenant(tenant);
    }
}

/// The PKI's share of the change feed: the trust set and the unsealed
/// tenant CAs follow CA and tenant changes made on any node. Subscribed
/// by the binary before the listeners that end sessions, so a session
/// ended for a removed CA cannot come back with it.
pub struct PkiChanges {
    pki: Arc<Pki>,
    store: Store,
}

impl PkiChanges {
    pub fn new(pki: Arc<Pki>, store: Store) -> PkiChanges {
        PkiChanges { pki, store }
    }

    /// Trusts every active CA of `tenant` the trust set lacks (a CA made
    /// or registered on another node).
    async fn trust_tenant_cas(&self, tenant: &str) -> Result<usize, store::Error> {
        let cas = self.store.list_tenant_cas(Some(tenant)).await?;
        Ok(trust_stored_cas(&self.pki.trust, &cas))
    }
}

/// Trusts the active CAs among `cas` (rows of the store) that `trust` does
/// not hold yet: at start, and when another node made or registered one.
/// Returns how many were added; a row that cannot be trusted is logged.
pub fn trust_stored_cas(trust: &TrustRegistry, cas: &[store::TenantCa]) -> usize {
    let mut added = 0;
    for ca in cas.iter().filter(|ca| ca.status == TenantCaStatus::Active) {
        let known = hex::decode(&ca.subject_key_id).is_ok_and(|raw| trust.get(&raw).is_some());
        if known {
            continue;
        }
        let kind = match ca.kind {
            TenantCaKind::Issued => pki::CaKind::Issued,
            TenantCaKind::Registered => pki::CaKind::Registered,
        };
        let der = match pki::pem_to_der_chain(&ca.cert_pem) {
            Ok(mut chain) if !chain.is_empty() => chain.swap_remove(0),
            _ => {
                tracing::warn!(tenant = %ca.tenant_id, "a tenant CA certificate in the database is not PEM; not trusted");
                continue;
            }
        };
        match trust.add_ca(&ca.tenant_id, kind, der) {
            Ok(_) => added += 1,
            Err(e) => {
                tracing::warn!(tenant = %ca.tenant_id, error = %e, "a tenant CA in the database is not trusted")
            }
        }
    }
    added
}

#[async_trait::async_trait]
impl ChangeListener for PkiChanges {
    async fn apply(&self, change: &Change, _: &Origin) {
        match change {
            Change::TenantCaAdded { tenant } => match self.trust_tenant_cas(tenant).await {
                Ok(added) => tracing::info!(tenant, added, "tenant CAs trusted"),
                Err(e) => {
                    tracing::error!(tenant, error = %e, "a tenant CA could not be trusted; its devices are refused until the next start")
                }
            },
            Change::TenantCaRemoved { tenant, key_id } => {
                if let Ok(raw) = hex::decode(key_id) {
                    self.pki.trust.remove_ca(&raw);
                }
                tracing::info!(tenant, ca = %key_id, "tenant CA no longer trusted");
            }
            Change::TenantDeleted { tenant } => self.pki.forget_tenant(tenant).await,
            Change::Missed => {
                // CAs made elsewhere meanwhile are read again on the next
                // use; a missed removal is caught by the store check at
                // connect (the certificate's CA row is gone).
                self.pki.tenant_cas.lock().await.clear();
            }
            _ => {}
        }
    }
}

impl crate::AppState {
    /// The tenant's platform-issued CA (see `Pki::tenant_ca`); one made
    /// now is announced on the change feed, so every node trusts it.
    pub(crate) async fn tenant_ca(&self, tenant: &str) -> Result<Arc<TenantCa>, ApiError> {
        let (ca, created) = self.pki()?.tenant_ca(&self.store, tenant).await?;
        if created {
            self.changed(Change::TenantCaAdded {
                tenant: tenant.to_owned(),
            })
            .await;
        }
        Ok(ca)
    }

    /// The PKI, or 503 when the binary did not set one.
    pub(crate) fn pki(&self) -> Result<&Pki, ApiError> {
        self.pki
            .as_deref()
            .ok_or_else(|| ApiError::unavailable("the PKI is not configured on this server"))
    }
}
