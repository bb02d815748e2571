//! [`StoreTenants`]: the broker's [`TenantDirectory`] on the store, so a
//! platform client reaches tenants no device has used since start.

use async_trait::async_trait;
use broker::{StoreError, TenantDirectory, TenantId};
use store::Store;

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
