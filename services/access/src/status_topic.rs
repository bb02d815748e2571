//! The platform's presence topic `devices/{d}/status`: which tenants have
//! the broker publish it ([`StatusTopics`]), and [`StatusTopicGuard`], the
//! authorizer wrapper that keeps devices from forging it.
//!
//! The default device policy lets a device publish `devices/${device}/#`,
//! which covers its status topic. When the platform publishes presence
//! there, a device writing it too could claim to be online while it is
//! gone (or the reverse), so in those tenants a device's publish to exactly
//! its own `devices/{d}/status` is refused whatever its policy says. Other
//! topics under `devices/{d}/` are untouched; tenants that turn platform
//! presence off get the topic back for Last Will use.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use broker::{Authorizer, Identity};
use events::change::{Change, ChangeListener, Origin};
use mqtt::{TopicFilter, TopicName};

/// Which tenants have platform presence on (the default) or off; an
/// in-memory view of the store's presence settings, read on the hot path.
/// It follows the change feed ([`ChangeListener`]); built with
/// [`StatusTopics::load`] it reads the settings again when changes were
/// missed.
#[derive(Debug, Clone, Default)]
pub struct StatusTopics {
    // std RwLock: held only to read or set one entry, never across await.
    by_tenant: Arc<RwLock<HashMap<String, bool>>>,
    store: Option<store::Store>,
}

impl StatusTopics {
    /// Every tenant on.
    pub fn new() -> StatusTopics {
        StatusTopics::default()
    }

    /// The view of the settings stored now.
    pub async fn load(store: &store::Store) -> Result<StatusTopics, store::Error> {
        let topics = StatusTopics {
            store: Some(store.clone()),
            ..StatusTopics::default()
        };
        topics.reload().await?;
        Ok(topics)
    }

    async fn reload(&self) -> Result<(), store::Error> {
        if let Some(store) = &self.store {
            for s in store.list_presence_settings().await? {
                self.set(&s.tenant_id, s.publish_status);
            }
        }
        Ok(())
    }

    /// After the tenant's setting changed (a presence-settings change on
    /// the feed).
    pub fn set(&self, tenant: &str, publish_status: bool) {
        self.by_tenant
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(tenant.to_owned(), publish_status);
    }

    /// Whether the broker publishes `devices/{d}/status` in `tenant`.
    pub fn publishes(&self, tenant: &str) -> bool {
        self.by_tenant
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .copied()
            .unwrap_or(true)
    }
}

#[async_trait::async_trait]
impl ChangeListener for StatusTopics {
    async fn apply(&self, change: &Change, _: &Origin) {
        match change {
            Change::PresenceSettingsChanged {
                tenant,
                publish_status,
            } => self.set(tenant, *publish_status),
            // A tenant made again under the id starts from the default.
            Change::TenantDeleted { tenant } => {
                self.by_tenant
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(tenant);
            }
            Change::Missed => {
                if let Err(e) = self.reload().await {
                    tracing::error!(error = %e, "presence settings could not be read again after missed changes");
                }
            }
            _ => {}
        }
    }
}

/// Refuses a device's publish to its own status topic in tenants where the
/// platform publishes it; everything else is `inner`'s decision.
pub struct StatusTopicGuard {
    inner: Arc<dyn Authorizer>,
    topics: StatusTopics,
}

impl StatusTopicGuard {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Authorizer>, topics: StatusTopics) -> StatusTopicGuard {
        StatusTopicGuard { inner, topics }
    }
}

/// `topic` is `devices/{principal}/status`.
fn is_own_status(principal: &str, topic: &str) -> bool {
    ids::topics::status_of(topic) == Some(principal)
}

impl Authorizer for StatusTopicGuard {
    fn can_publish(&self, identity: &Identity, topic: &TopicName) -> bool {
        let principal = identity.principal.as_str();
        // Devices only: service credentials and anonymous principals have
        // a `:` and are the operator's own backends.
        if !principal.contains(':')
            && is_own_status(principal, topic.as_str())
            && self.topics.publishes(identity.tenant.as_str())
        {
            tracing::debug!(
                tenant = %identity.tenant,
                principal,
                action = "publish",
                target = topic.as_str(),
                allowed = false,
                rule = "platform presence: the status topic is the broker's",
                "ACL decision"
            );
            return false;
        }
        self.inner.can_publish(identity, topic)
    }

    fn can_subscribe(&self, identity: &Identity, filter: &TopicFilter) -> bool {
        self.inner.can_subscribe(identity, filter)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct AllowAll;
    impl Authorizer for AllowAll {
        fn can_publish(&self, _: &Identity, _: &TopicName) -> bool {
            true
        }
        fn can_subscribe(&self, _: &Identity, _: &TopicFilter) -> bool {
            true
        }
    }

    fn who(principal: &str) -> Identity {
        Identity {
            tenant: broker::TenantId::parse("acme").unwrap(),
            principal: principal.into(),
            limits: None,
        }
    }

    #[test]
    fn a_device_cannot_forge_its_status_while_the_platform_publishes_it() {
        let topics = StatusTopics::new();
        let guard = StatusTopicGuard::new(Arc::new(AllowAll), topics.clone());
        let t = |s: &str| TopicName::parse(s).unwrap();
        assert!(!guard.can_publish(&who("d1"), &t("devices/d1/status")));
        assert!(guard.can_publish(&who("d1"), &t("devices/d1/status/x")));
        assert!(guard.can_publish(&who("d1"), &t("devices/d1/state/reported")));
        assert!(guard.can_publish(&who("d1"), &t("devices/d10/status")));
        assert!(guard.can_publish(&who("service:backend"), &t("devices/d1/status")));
        topics.set("acme", false);
        assert!(guard.can_publish(&who("d1"), &t("devices/d1/status")));
        topics.set("acme", true);
        assert!(!guard.can_publish(&who("d1"), &t("devices/d1/status")));
    }
}
