//! [`RetainedStore`]: durable retained messages (the platform implements it
//! on its database, write-behind), and an in-memory store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
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
    /// The message's pass-through properties; Message Expiry Interval is
    /// the one set at publish time.
    pub properties: Properties,
}

/// Why the store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retained store: {0}")]
pub struct StoreError(pub String);

/// Persists retained messages per tenant.
#[async_trait]
pub trait RetainedStore: Send + Sync + 'static {
    /// Every retained message of `tenant`, read when the tenant is first
    /// used after start.
    async fn load(&self, tenant: &TenantId) -> Result<Vec<StoredRetained>, StoreError>;

    /// Records a set/replace (`Some`) or delete (`None`). Called on the hot
    /// path under no lock: must not block (write-behind).
    fn save(&self, tenant: &TenantId, topic: &TopicName, message: Option<&StoredRetained>);
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
        Ok(tenants
            .get(tenant)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }

    fn save(&self, tenant: &TenantId, topic: &TopicName, message: Option<&StoredRetained>) {
        let Ok(mut tenants) = self.tenants.lock() else {
            return;
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
    }
}
