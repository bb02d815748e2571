//! Presence of many devices at once, for device lists.

use std::collections::HashSet;

use crate::store::tenant_query;
use crate::{Error, Store};

impl Store {
    /// Which of `device_ids` (of `tenant_id`) are online now. One query
    /// for a whole page of devices.
    pub async fn online_devices(
        &self,
        tenant_id: &str,
        device_ids: &[String],
    ) -> Result<HashSet<String>, Error> {
        if device_ids.is_empty() {
            return Ok(HashSet::new());
        }
        let ids = on_pool!(self, pool => {
            let mut q = tenant_query(
                "SELECT device_id FROM device_presence WHERE status = 'online' AND tenant_id = ",
                tenant_id,
            );
            q.push(" AND device_id IN (");
            let mut list = q.separated(", ");
            for id in device_ids {
                list.push_bind(id);
            }
            q.push(")");
            q.build_query_scalar::<String>().fetch_all(pool).await?
        });
        Ok(ids.into_iter().collect())
    }
}
