//! Publish rate limits from the store to the broker: the conversion, and
//! [`LiveLimits`], which makes a change count for live sessions at once.

use broker::{Broker, PublishLimits, Rate, TenantId};
use store::PublishLimitSettings;

use crate::{AccessCache, AccessError};

/// The broker's form of stored settings (a missing burst is one second's
/// worth of the rate).
pub fn broker_limits(s: &PublishLimitSettings) -> PublishLimits {
    PublishLimits {
        messages: s
            .messages_per_second
            .map(|r| Rate::new(r, s.messages_burst)),
        bytes: s.bytes_per_second.map(|r| Rate::new(r, s.bytes_burst)),
    }
}

/// Applies changed publish limits: the cache forgets the old ones (so the
/// next connect reads the new ones) and live device sessions get the new
/// limits from their next PUBLISH.
#[derive(Debug, Clone)]
pub struct LiveLimits {
    cache: AccessCache,
    broker: Broker,
}

impl LiveLimits {
    /// Acts on `cache` and `broker`.
    pub fn new(cache: AccessCache, broker: Broker) -> LiveLimits {
        LiveLimits { cache, broker }
    }

    /// The device's override was set or removed. Returns whether a live
    /// session took the new limits.
    pub async fn device_changed(&self, tenant: &str, device: &str) -> Result<bool, AccessError> {
        self.cache.invalidate_device(tenant, device);
        self.apply(tenant, device).await
    }

    /// The tenant's default was set or removed: every device of the
    /// tenant that authenticated is re-resolved (its override, if any,
    /// still wins). Returns how many live sessions took new limits.
    pub async fn tenant_changed(&self, tenant: &str) -> Result<usize, AccessError> {
        self.cache.invalidate_tenant_devices(tenant);
        let mut applied = 0;
        for device in self.cache.device_principals(tenant) {
            if self.apply(tenant, &device).await? {
                applied += 1;
            }
        }
        Ok(applied)
    }

    async fn apply(&self, tenant: &str, device: &str) -> Result<bool, AccessError> {
        // Ids come from our store; a malformed one has no live session.
        let Ok(tenant_id) = TenantId::parse(tenant) else {
            return Ok(false);
        };
        let Some(entry) = self.cache.device(tenant, device).await? else {
            return Ok(false);
        };
        let limits = entry.limits.as_ref().map(broker_limits);
        // A device's client id is its id (the authenticator insists).
        let applied = self.broker.set_publish_limits(&tenant_id, device, limits);
        if applied {
            tracing::info!(
                tenant,
                device,
                client_id = device,
                ?limits,
                "publish limits changed for a live session"
            );
        }
        Ok(applied)
    }
}
