//! [`StoreTenants`]: the broker's [`TenantDirectory`] on the store, so a
//! platform client reaches tenants no device has used since start; and
//! [`load_topic_rules`], every tenant's topic hygiene rules into the broker.

use async_trait::async_trait;
use broker::{Broker, StoreError, TenantDirectory, TenantId};
use store::Store;

/// Gives the broker every tenant's topic rules (at start; changes come
/// through [`crate::Revocations::topic_rules_changed`]). Returns how many
/// tenants have rules.
pub async fn load_topic_rules(store: &Store, broker: &Broker) -> Result<usize, store::Error> {
    let all = store.all_topic_rules().await?;
    for (tenant, rules) in &all {
        match TenantId::parse(tenant) {
            Ok(id) => broker.set_topic_rules(&id, *rules),
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "topic rules of an invalid tenant id skipped")
            }
        }
    }
    Ok(all.len())
}

/// Which tenants exist, read from the store.
#[derive(Debug, Clone)]
pub struct StoreTenants {
    store: Store,
}

impl StoreTenants {
    /// A directory over `store`.
    pub fn new(store: Store) -> StoreTenants {
        StoreTenants { store }
    }
}

#[async_trait]
impl TenantDirectory for StoreTenants {
    async fn exists(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        self.store
            .tenant_exists(tenant.as_str())
            .await
            .map_err(|e| StoreError(e.to_string()))
    }

    async fn list(&self) -> Result<Vec<TenantId>, StoreError> {
        let ids = self
            .store
            .all_tenant_ids()
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        // The store's CHECK holds tenant ids to the broker's rule; one that
        // does not parse (written around it) is skipped, not fatal.
        Ok(ids
            .iter()
            .filter_map(|id| TenantId::parse(id).ok())
            .collect())
    }
}
