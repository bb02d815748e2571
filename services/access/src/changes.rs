//! [`LiveSessions`]: the change feed's listener for what the broker holds:
//! the access cache, live sessions (DISCONNECT 0x98, narrowed
//! subscriptions), publish limits and topic rules. A change from another
//! node is applied exactly as one made here: the device may be connected
//! to any node.

use broker::{Broker, TenantId};
use events::change::{Change, ChangeListener, Origin};
use store::Store;

use crate::{AccessCache, LiveLimits, Revocations};

/// Applies changes to this node's broker and access cache.
#[derive(Debug, Clone)]
pub struct LiveSessions {
    cache: AccessCache,
    revocations: Revocations,
    limits: LiveLimits,
    broker: Broker,
    store: Store,
}

impl LiveSessions {
    /// Acts on `cache` and `broker`; topic rules are read from `store`.
    pub fn new(cache: AccessCache, broker: Broker, store: Store) -> LiveSessions {
        LiveSessions {
            revocations: Revocations::new(cache.clone(), broker.clone()),
            limits: LiveLimits::new(cache.clone(), broker.clone()),
            cache,
            broker,
            store,
        }
    }

    async fn policies_changed(&self, tenant: &str) {
        if let Err(e) = self.cache.reload_policies(tenant).await {
            tracing::warn!(tenant, error = %e, "reloading ACL policies failed; sessions re-read them on their next check");
            return;
        }
        self.revocations.policies_changed(tenant);
    }

    async fn publish_limits_changed(&self, tenant: &str, device: Option<&str>) {
        let applied = match device {
            Some(device) => self
                .limits
                .device_changed(tenant, device)
                .await
                .map(usize::from),
            None => self.limits.tenant_changed(tenant).await,
        };
        if let Err(e) = applied {
            tracing::warn!(tenant, device, error = %e, "publish limits not applied to live sessions; they apply at the next connect");
        }
    }

    async fn topic_rules_changed(&self, tenant: &str) {
        match self.store.topic_rules(tenant).await {
            Ok(rules) => self.revocations.topic_rules_changed(tenant, &rules),
            Err(e) => {
                tracing::error!(tenant, error = %e, "the tenant's new topic rules could not be read; the old ones stay in force until the next start")
            }
        }
    }

    /// The owner's persistent sessions end with their queues, connected
    /// or not (written through to the store).
    fn owner_deleted(&self, tenant: &str, owner: &str) {
        if let Ok(t) = TenantId::parse(tenant) {
            self.broker.end_sessions_of(&t, owner);
        }
    }

    /// Changes may have been missed: nothing cached is trusted any more,
    /// topic rules are read again and live subscriptions re-checked
    /// against the policies as stored now. A revocation missed meanwhile
    /// does not end a session that is still connected; its next connect
    /// is refused.
    async fn missed(&self) {
        let tenants = self.cache.invalidate_all();
        if let Err(e) = crate::load_topic_rules(&self.store, &self.broker).await {
            tracing::error!(error = %e, "topic rules could not be read again after missed changes");
        }
        for tenant in &tenants {
            self.policies_changed(tenant).await;
        }
        tracing::warn!(
            tenants = tenants.len(),
            "changes may have been missed: access cache flushed, topic rules and policies read again"
        );
    }
}

#[async_trait::async_trait]
impl ChangeListener for LiveSessions {
    async fn apply(&self, change: &Change, _: &Origin) {
        match change {
            Change::CertificateRevoked {
                tenant,
                device,
                serial,
            } => {
                self.revocations.certificate_revoked(tenant, device, serial);
            }
            Change::DeviceFloorRaised { tenant, device }
            | Change::DeviceDisabled { tenant, device }
            | Change::DevicePasswordChanged { tenant, device } => {
                self.revocations.device_changed(tenant, device);
            }
            Change::DeviceDeleted { tenant, device } => {
                self.revocations.device_changed(tenant, device);
                self.owner_deleted(tenant, device);
            }
            Change::TenantFloorRaised { tenant } | Change::TenantCaRemoved { tenant, .. } => {
                self.revocations.tenant_changed(tenant);
            }
            Change::ServiceCredentialDeleted { tenant, name } => {
                self.revocations.service_credential_deleted(tenant, name);
                self.owner_deleted(tenant, &crate::service_principal(name));
            }
            Change::PlatformCredentialDeleted { name } => {
                self.revocations.platform_credential_deleted(name);
            }
            Change::TenantDeleted { tenant } => {
                self.revocations.tenant_deleted(tenant);
            }
            Change::PoliciesChanged { tenant } => self.policies_changed(tenant).await,
            Change::PublishLimitsChanged { tenant, device } => {
                self.publish_limits_changed(tenant, device.as_deref()).await;
            }
            Change::TopicRulesChanged { tenant } => self.topic_rules_changed(tenant).await,
            Change::SessionDeleted { tenant, client_id } => {
                if let Ok(t) = TenantId::parse(tenant) {
                    self.broker.end_session(&t, client_id);
                }
            }
            Change::Missed => self.missed().await,
            Change::TenantCaAdded { .. }
            | Change::PresenceSettingsChanged { .. }
            | Change::WebhooksChanged { .. } => {}
        }
    }
}
