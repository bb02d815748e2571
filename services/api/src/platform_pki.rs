//! What the certificate and CA routes need from the rest of the platform:
//! [`Pki`] (the root CA, the key-encryption key, the run-time trust set and
//! the validity settings) and [`SessionControl`] (how the binary ends live
//! MQTT sessions after a change). Both are set on [`crate::AppState`] by
//! the binary; without them the PKI routes answer 503.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

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
    pub(crate) async fn tenant_ca(
        &self,
        store: &Store,
        tenant: &str,
    ) -> Result<Arc<TenantCa>, ApiError> {
        let mut cached = self.tenant_cas.lock().await;
        if let Some(ca) = cached.get(tenant) {
            return Ok(Arc::clone(ca));
        }
        let stored = store
            .list_tenant_cas(Some(tenant))
            .await?
            .into_iter()
            .rev()
            .find(|ca| ca.kind == TenantCaKind::Issued && ca.status == TenantCaStatus::Active);
        let ca = match stored {
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
                ca
            }
            None => self.create_tenant_ca(store, tenant).await?,
        };
        let ca = Arc::new(ca);
        cached.insert(tenant.to_owned(), Arc::clone(&ca));
        Ok(ca)
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
    pub(crate) async fn forget_tenant(&self, tenant: &str) {
        self.tenant_cas.lock().await.remove(tenant);
        self.trust.remove_tenant(tenant);
    }
}

/// How the API tells the broker side that live sessions may have to end.
/// The binary implements it (onto `access::Revocations` and
/// `access::AccessCache::reload_policies`); calls happen after the change
/// is stored.
#[async_trait::async_trait]
pub trait SessionControl: Send + Sync + 'static {
    /// Certificate `serial` of `device` in `tenant` was revoked.
    fn certificate_revoked(&self, tenant: &str, device: &str, serial: &str);
    /// The device was disabled, deleted, got a new revocation floor or its
    /// password changed: its sessions must re-check who they are.
    fn device_changed(&self, tenant: &str, device: &str);
    /// Something affecting every device of the tenant changed (a tenant
    /// floor, a CA removed).
    fn tenant_changed(&self, tenant: &str);
    /// The tenant was deleted: every session of it ends and the broker
    /// forgets it. Default: as [`SessionControl::tenant_changed`].
    fn tenant_deleted(&self, tenant: &str) {
        self.tenant_changed(tenant);
    }
    /// The tenant's service credential `name` was deleted: its sessions
    /// end. Default: nothing (no broker to tell).
    fn service_credential_deleted(&self, tenant: &str, name: &str) {
        let _ = (tenant, name);
    }
    /// The tenant's ACL policies changed; reload them for live sessions.
    async fn policies_changed(&self, tenant: &str);
    /// Publish limits changed: the device's override (`Some(device)`) or
    /// the tenant's default (`None`). Forget the cached ones and give live
    /// sessions the new ones. Default: nothing (no broker to tell).
    async fn publish_limits_changed(&self, tenant: &str, device: Option<&str>) {
        let _ = (tenant, device);
    }
    /// Platform service credential `name` was deleted: its sessions end.
    fn platform_credential_deleted(&self, name: &str) {
        let _ = name;
    }
    /// An operator ends the persistent session of `client_id` (its
    /// connection, if any, is closed). Returns whether the broker held it.
    /// Default: `false` (no broker to tell).
    fn end_session(&self, tenant: &str, client_id: &str) -> bool {
        let _ = (tenant, client_id);
        false
    }
    /// Device or credential `owner` was deleted: every session it created
    /// ends with its queue, connected or not. Default: nothing.
    fn owner_deleted(&self, tenant: &str, owner: &str) {
        let _ = (tenant, owner);
    }
    /// The tenant's topic hygiene rules were replaced: the broker applies
    /// `rules` from now on.
    fn topic_rules_changed(&self, tenant: &str, rules: &store::TopicRules) {
        let _ = (tenant, rules);
    }
}

impl crate::AppState {
    /// The PKI, or 503 when the binary did not set one.
    pub(crate) fn pki(&self) -> Result<&Pki, ApiError> {
        self.pki
            .as_deref()
            .ok_or_else(|| ApiError::unavailable("the PKI is not configured on this server"))
    }

    /// Tell the session control (if the binary set one) what changed.
    pub(crate) fn tell_sessions(&self, tell: impl FnOnce(&dyn SessionControl)) {
        if let Some(sessions) = self.sessions.as_deref() {
            tell(sessions);
        }
    }

    /// The session control, if the binary set one.
    pub(crate) fn sessions(&self) -> Option<&dyn SessionControl> {
        self.sessions.as_deref()
    }
}
