//! [`AccessCache`]: what a connect and every publish check need from the
//! store, kept in memory and invalidated on change, so the common case
//! costs no database round trip.
//!
//! Loads race with invalidations: a load that started before an
//! invalidation must not put its (possibly stale) result back. Every
//! invalidation bumps a generation; a load inserts only if the generation
//! it read before querying is still current.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Utc};
use store::{CertificateFloors, CertificateStatus, PublishLimitSettings, Store};

use crate::AccessError;
use crate::policy::{CompiledPolicy, PolicyTemplate, Variables};

/// A device's connect-relevant state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceEntry {
    pub enabled: bool,
    pub floors: CertificateFloors,
    /// Its publish limits (override, else tenant default); `None`: the
    /// broker's default.
    pub limits: Option<PublishLimitSettings>,
}

/// A recorded certificate's connect-relevant state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertEntry {
    pub device: String,
    pub status: CertificateStatus,
    pub issued_at: DateTime<Utc>,
}

/// Who a principal is, for the authorizer.
#[derive(Debug, Clone)]
pub(crate) enum PrincipalRules {
    /// A device: the tenant's policies apply.
    Device,
    /// A service credential: its own filters.
    Service(Arc<PolicyTemplate>),
}

type Key = (String, String);

#[derive(Default)]
struct State {
    devices: HashMap<Key, DeviceEntry>,
    certificates: HashMap<Key, CertEntry>,
    /// Each tenant's policies merged, or the default device policy.
    tenant_policies: HashMap<String, Arc<PolicyTemplate>>,
    /// Tenants whose policies are being loaded in the background.
    loading: HashSet<String>,
    principals: HashMap<Key, PrincipalRules>,
    compiled: HashMap<Key, Arc<CompiledPolicy>>,
    /// The serial each device's certificate session was authenticated with.
    cert_sessions: HashMap<Key, String>,
}

struct Inner {
    store: Store,
    generation: AtomicU64,
    state: RwLock<State>,
}

/// Shared, cheap-to-clone cache of device, certificate and policy state.
/// The authenticator fills it, the authorizer reads it, and the REST API
/// (through [`crate::Revocations`] or directly) invalidates it on change.
#[derive(Clone)]
pub struct AccessCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AccessCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.read();
        f.debug_struct("AccessCache")
            .field("devices", &state.devices.len())
            .field("certificates", &state.certificates.len())
            .field("tenant_policies", &state.tenant_policies.len())
            .finish_non_exhaustive()
    }
}

fn key(a: &str, b: &str) -> Key {
    (a.to_owned(), b.to_owned())
}

impl AccessCache {
    /// An empty cache reading from `store`.
    pub fn new(store: Store) -> AccessCache {
        AccessCache {
            inner: Arc::new(Inner {
                store,
                generation: AtomicU64::new(0),
                state: RwLock::default(),
            }),
        }
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        // No code panics while holding the lock and every write leaves the
        // maps consistent: a poisoned lock is still safe to use.
        self.inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.inner
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Lock for writing and bump the generation (before the change is
    /// visible, so a concurrent load cannot slip its result in after).
    fn invalidating(&self) -> RwLockWriteGuard<'_, State> {
        let state = self.write();
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        state
    }

    /// Forget what is known about a device (enabled, floors, the rules
    /// compiled for it). Call after it is disabled, enabled, deleted, or
    /// its revocation floor changes.
    pub fn invalidate_device(&self, tenant: &str, device: &str) {
        let k = key(tenant, device);
        let mut state = self.invalidating();
        state.devices.remove(&k);
        state.compiled.remove(&k);
        state
            .certificates
            .retain(|(t, _), c| !(t == tenant && c.device == device));
    }

    /// Forget the connect state of every device of the tenant (their
    /// publish limits among it), keeping certificates and policies. Call
    /// after the tenant's default publish limits change.
    pub fn invalidate_tenant_devices(&self, tenant: &str) {
        self.invalidating().devices.retain(|(t, _), _| t != tenant);
    }

    /// Devices of `tenant` that have authenticated through this cache (the
    /// ones that may have a live session).
    pub(crate) fn device_principals(&self, tenant: &str) -> Vec<String> {
        self.read()
            .principals
            .iter()
            .filter(|((t, _), rules)| t == tenant && matches!(rules, PrincipalRules::Device))
            .map(|((_, d), _)| d.clone())
            .collect()
    }

    /// Forget one certificate's status. Call after it is revoked.
    pub fn invalidate_certificate(&self, tenant: &str, serial: &str) {
        self.invalidating()
            .certificates
            .remove(&key(tenant, serial));
    }

    /// Forget everything about a tenant: devices, certificates, floors,
    /// policies and compiled rules. Policies are reloaded on the next check.
    pub fn invalidate_tenant(&self, tenant: &str) {
        let mut state = self.invalidating();
        state.devices.retain(|(t, _), _| t != tenant);
        state.certificates.retain(|(t, _), _| t != tenant);
        state.tenant_policies.remove(tenant);
        state.compiled.retain(|(t, _), _| t != tenant);
    }

    /// Forget every device, certificate and policy (changes may have been
    /// missed); what live sessions logged in with is kept, so later
    /// revocations still find them. Returns the tenants whose policies
    /// were cached.
    pub fn invalidate_all(&self) -> Vec<String> {
        let mut state = self.invalidating();
        state.devices.clear();
        state.certificates.clear();
        state.compiled.clear();
        state.tenant_policies.drain().map(|(t, _)| t).collect()
    }

    /// Load the tenant's policies from the store now and swap them in (the
    /// old ones serve checks until then). Call after a policy is created,
    /// replaced or deleted.
    pub async fn reload_policies(&self, tenant: &str) -> Result<(), AccessError> {
        let template = self.load_policies(tenant).await?;
        let mut state = self.invalidating();
        state.tenant_policies.insert(tenant.to_owned(), template);
        state.compiled.retain(|(t, _), _| t != tenant);
        Ok(())
    }

    async fn load_policies(&self, tenant: &str) -> Result<Arc<PolicyTemplate>, AccessError> {
        let stored = self.store().list_acl_policies(tenant).await?;
        let mut templates = Vec::with_capacity(stored.len());
        for policy in &stored {
            match PolicyTemplate::parse(&policy.name, &policy.document) {
                Ok(t) => templates.push(t),
                // The API validates before storing; a bad document found
                // here (written by hand, or by an older version) is skipped
                // and said, not fatal: its allows are lost, which only denies.
                Err(e) => {
                    tracing::warn!(tenant, policy = %policy.name, error = %e, "ACL policy skipped")
                }
            }
        }
        let template = if stored.is_empty() {
            PolicyTemplate::default_device()
        } else {
            PolicyTemplate::merge(templates)
        };
        Ok(Arc::new(template))
    }

    /// Make sure the tenant's policies are in memory (at connect, where
    /// awaiting is fine).
    pub(crate) async fn ensure_policies(&self, tenant: &str) -> Result<(), AccessError> {
        if self.read().tenant_policies.contains_key(tenant) {
            return Ok(());
        }
        let generation = self.generation();
        let template = self.load_policies(tenant).await?;
        let mut state = self.write();
        if self.generation() == generation {
            state
                .tenant_policies
                .entry(tenant.to_owned())
                .or_insert(template);
        }
        Ok(())
    }

    /// Record how a principal is authorized (at connect).
    pub(crate) fn set_principal(&self, tenant: &str, principal: &str, rules: PrincipalRules) {
        let k = key(tenant, principal);
        let mut state = self.write();
        state.compiled.remove(&k);
        state.principals.insert(k, rules);
    }

    /// The compiled rules for a principal, compiling them on first use.
    /// `None` when the principal did not authenticate through this cache,
    /// or its tenant's policies were invalidated and are reloading in the
    /// background: the caller denies.
    pub(crate) fn compiled(&self, tenant: &str, principal: &str) -> Option<Arc<CompiledPolicy>> {
        let k = key(tenant, principal);
        let template = {
            let state = self.read();
            if let Some(c) = state.compiled.get(&k) {
                return Some(Arc::clone(c));
            }
            match state.principals.get(&k) {
                Some(PrincipalRules::Service(t)) => Some(Arc::clone(t)),
                Some(PrincipalRules::Device) => state.tenant_policies.get(tenant).cloned(),
                // Not authenticated through this cache: nothing to go on.
                None => return None,
            }
        };
        let Some(template) = template else {
            self.reload_in_background(tenant);
            return None;
        };
        let service = matches!(
            self.read().principals.get(&k),
            Some(PrincipalRules::Service(_))
        );
        let username = crate::password::device_username(principal, tenant);
        let vars = if service {
            Variables {
                tenant,
                device: None,
                client_id: None,
                username: None,
            }
        } else {
            // A device's client id is its id (the authenticator insists),
            // and its username is `{device}@{tenant}`.
            Variables {
                tenant,
                device: Some(principal),
                client_id: Some(principal),
                username: Some(&username),
            }
        };
        let compiled = Arc::new(template.compile(&vars));
        self.write().compiled.insert(k, Arc::clone(&compiled));
        Some(compiled)
    }

    fn reload_in_background(&self, tenant: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if !self.write().loading.insert(tenant.to_owned()) {
            return;
        }
        let cache = self.clone();
        let tenant = tenant.to_owned();
        runtime.spawn(async move {
            if let Err(e) = cache.ensure_policies(&tenant).await {
                tracing::warn!(tenant = %tenant, error = %e, "could not reload ACL policies");
            }
            cache.write().loading.remove(&tenant);
        });
    }

    /// The device's state, from memory or the store. `None` if there is no
    /// such device.
    pub(crate) async fn device(
        &self,
        tenant: &str,
        device: &str,
    ) -> Result<Option<DeviceEntry>, AccessError> {
        let load = async {
            let found = match self.store().get_device(tenant, device).await {
                Ok(d) => d,
                Err(store::Error::NotFound { .. } | store::Error::InvalidId { .. }) => {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            };
            let floors = self.store().cert_floors(tenant, device).await?;
            let limits = self
                .store()
                .effective_publish_limits(tenant, device)
                .await?;
            Ok(Some(DeviceEntry {
                enabled: found.enabled,
                floors,
                limits,
            }))
        };
        let k = key(tenant, device);
        self.read_through(|s| &s.devices, |s| &mut s.devices, k, load)
            .await
    }

    /// The recorded certificate with this serial, from memory or the
    /// store. `None` if the tenant never recorded it.
    pub(crate) async fn certificate(
        &self,
        tenant: &str,
        serial: &str,
    ) -> Result<Option<CertEntry>, AccessError> {
        let load = async {
            let found = match self.store().get_device_certificate(tenant, serial).await {
                Ok(c) => c,
                Err(store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            Ok(Some(CertEntry {
                device: found.device_id,
                status: found.status,
                issued_at: found.created_at,
            }))
        };
        let k = key(tenant, serial);
        self.read_through(|s| &s.certificates, |s| &mut s.certificates, k, load)
            .await
    }

    /// The entry for `k` in one of the maps (`map` reads it, `map_mut`
    /// inserts into it), from memory, or else what `load` reads from the
    /// store (`None`: there is no such thing, and nothing is kept). A load
    /// that an invalidation overtook is returned but not kept (see the
    /// module docs).
    async fn read_through<V: Clone>(
        &self,
        map: fn(&State) -> &HashMap<Key, V>,
        map_mut: fn(&mut State) -> &mut HashMap<Key, V>,
        k: Key,
        load: impl Future<Output = Result<Option<V>, AccessError>>,
    ) -> Result<Option<V>, AccessError> {
        if let Some(entry) = map(&self.read()).get(&k) {
            return Ok(Some(entry.clone()));
        }
        let generation = self.generation();
        let Some(entry) = load.await? else {
            return Ok(None);
        };
        let mut state = self.write();
        if self.generation() == generation {
            map_mut(&mut state).insert(k, entry.clone());
        }
        Ok(Some(entry))
    }

    pub(crate) fn record_cert_session(&self, tenant: &str, device: &str, serial: &str) {
        self.write()
            .cert_sessions
            .insert(key(tenant, device), serial.to_owned());
    }

    pub(crate) fn forget_cert_session(&self, tenant: &str, device: &str) {
        self.write().cert_sessions.remove(&key(tenant, device));
    }

    /// The serial of the device's last certificate login.
    pub(crate) fn cert_session(&self, tenant: &str, device: &str) -> Option<String> {
        self.read().cert_sessions.get(&key(tenant, device)).cloned()
    }

    /// Devices of `tenant` that logged in with a certificate.
    pub(crate) fn cert_session_devices(&self, tenant: &str) -> Vec<String> {
        self.read()
            .cert_sessions
            .keys()
            .filter(|(t, _)| t == tenant)
            .map(|(_, d)| d.clone())
            .collect()
    }
}
