//! [`RetainedStore`]: durable retained messages (the platform implements it
//! on its database, write-behind), and an in-memory store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use mqtt::{Properties, QoS, TopicName};

use crate::TenantId;

/// A retained message as persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRetained {
    /// Topic.
    pub topic: TopicName,
    /// Payload (never empty: empty deletes).
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// The message's pass-through properties. Message Expiry Interval is
    /// never set here: the expiry is [`StoredRetained::expires_at`].
    pub properties: Properties,
    /// When the message expires (3.3.2.3.3), on the wall clock; `None`:
    /// never. Absolute, so that reloading a message after a restart does
    /// not start its Message Expiry Interval again.
    pub expires_at: Option<SystemTime>,
    /// The principal (device id or service credential) that published it,
    /// whose retained quota it counts against, after a restart too.
    /// `None`: published by the platform, or stored before owners were
    /// recorded; it then counts towards the tenant's quota only.
    pub owner: Option<Arc<str>>,
}

impl StoredRetained {
    /// Whether the message has expired by `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// Why the store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retained store: {0}")]
pub struct StoreError(pub String);

/// Resolves once a retained change is durable (`Ok`) or could not be made
/// durable (`Err`). Dropping it does not cancel the write; it only stops
/// waiting for it.
pub type Durability = BoxFuture<'static, Result<(), StoreError>>;

/// Persists retained messages per tenant.
#[async_trait]
pub trait RetainedStore: Send + Sync + 'static {
    /// Every unexpired retained message of `tenant`, read when the tenant is
    /// first used after start.
    async fn load(&self, tenant: &TenantId) -> Result<Vec<StoredRetained>, StoreError>;

    /// Records a set/replace (`Some`) or delete (`None`). Called on the hot
    /// path under no lock: must not block (write-behind).
    ///
    /// `durable` is set for a QoS 1 or 2 publish: its PUBACK / PUBREC waits
    /// for the returned [`Durability`], so nothing acknowledged is lost
    /// (QoS 0 passes `false` and never waits). `None` means there is
    /// nothing to wait for (already durable, or not persisted at all).
    fn save(
        &self,
        tenant: &TenantId,
        topic: &TopicName,
        message: Option<&StoredRetained>,
        durable: bool,
    ) -> Option<Durability>;
}

/// Keeps retained messages in process memory: they survive a tenant being
/// reloaded, not a restart.
#[derive(Debug, Default)]
pub struct MemoryRetainedStore {
    // std Mutex: nothing awaits while it is held.
    tenants: Mutex<HashMap<TenantId, BTreeMap<TopicName, StoredRetained>>>,
}

impl MemoryRetainedStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl RetainedStore for MemoryRetainedStore {
    async fn load(&self, tenant: &TenantId) -> Result<Vec<StoredRetained>, StoreError> {
        let tenants = self
            .tenants
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        let now = SystemTime::now();
        Ok(tenants
            .get(tenant)
            .map(|m| m.values().filter(|r| !r.is_expired(now)).cloned().collect())
            .unwrap_or_default())
    }

    fn save(
        &self,
        tenant: &TenantId,
        topic: &TopicName,
        message: Option<&StoredRetained>,
        _durable: bool,
    ) -> Option<Durability> {
        let Ok(mut tenants) = self.tenants.lock() else {
            return None;
        };
        let map = tenants.entry(tenant.clone()).or_default();
        match message {
            Some(m) => {
                map.insert(topic.clone(), m.clone());
            }
            None => {
                map.remove(topic);
            }
        }
        // In memory, it is as durable as it gets the moment it is stored.
        None
    }
}
