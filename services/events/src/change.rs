//! The change feed: every REST change that must reach live MQTT sessions
//! ([`Change`]), published once by the API after the change is committed
//! and applied by whoever holds live state ([`ChangeListener`]s: the access
//! cache, the broker's sessions, publish limits, topic rules, presence
//! status topics, webhook message routes, the trust set).
//!
//! It lives here, in the crate every producer and consumer already depends
//! on and that depends on none of them, so the API (producer) does not
//! know the broker, and the binary, the access layer and the cluster (which
//! carries the feed between nodes) meet on one type. On a single node the
//! feed is in-process: [`ChangeFeed::publish`] applies a change with every
//! listener before it returns, so a REST answer means "in force on this
//! node". In a cluster a listener relays the change to the other nodes
//! (`cluster::feed`), which hand it to their own feed with
//! [`ChangeFeed::deliver`] and an [`Origin`] naming the node it came from;
//! every listener applies a change the same way whatever its origin.
//!
//! A change names what changed, never the new state: appliers read the
//! state from the database (which is shared by every node), so a change
//! that arrives late or twice does no harm.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};

/// One change that live sessions must see. Ids are as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// A device certificate was revoked: refused from now on, and the
    /// device's session ends if it logged in with it.
    CertificateRevoked {
        tenant: String,
        device: String,
        serial: String,
    },
    /// The device's not-before floor was raised: certificates issued before
    /// it are refused, and its live session ends.
    DeviceFloorRaised { tenant: String, device: String },
    /// The tenant's not-before floor was raised: every session of it that
    /// logged in with a certificate ends.
    TenantFloorRaised { tenant: String },
    /// The device was disabled: its session ends.
    DeviceDisabled { tenant: String, device: String },
    /// The device was deleted: its session ends, and every persistent
    /// session it created goes with its queue.
    DeviceDeleted { tenant: String, device: String },
    /// The device's password was replaced or deleted: its session ends.
    DevicePasswordChanged { tenant: String, device: String },
    /// A tenant service credential was deleted: its sessions end.
    ServiceCredentialDeleted { tenant: String, name: String },
    /// A platform service credential was deleted: its sessions end.
    PlatformCredentialDeleted { name: String },
    /// The tenant was deleted: every session of it ends and the node
    /// forgets it.
    TenantDeleted { tenant: String },
    /// A CA was added to the tenant's trust (made by the platform or
    /// registered): every node trusts it from now on.
    TenantCaAdded { tenant: String },
    /// A registered CA of the tenant was removed: no longer trusted, and
    /// the tenant's certificate sessions end.
    TenantCaRemoved { tenant: String, key_id: String },
    /// The tenant's ACL policies changed: live subscriptions they no longer
    /// allow are removed.
    PoliciesChanged { tenant: String },
    /// Publish limits changed: the device's override (`Some`) or the
    /// tenant's default (`None`).
    PublishLimitsChanged {
        tenant: String,
        device: Option<String>,
    },
    /// The tenant's topic hygiene rules were replaced.
    TopicRulesChanged { tenant: String },
    /// Whether the platform publishes presence on `devices/{d}/status`.
    PresenceSettingsChanged {
        tenant: String,
        publish_status: bool,
    },
    /// The tenant's webhook endpoints changed (or the tenant went): the
    /// message routes are read again.
    WebhooksChanged { tenant: String },
    /// An operator ended the persistent session `client_id`: its
    /// connection, wherever it is, closes (0x98).
    SessionDeleted { tenant: String, client_id: String },
    /// This node may have missed changes (its link to the other nodes was
    /// down): everything cached is dropped and read again. Never sent
    /// between nodes.
    Missed,
}

impl Change {
    /// The tenant it concerns, if one.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Change::CertificateRevoked { tenant, .. }
            | Change::DeviceFloorRaised { tenant, .. }
            | Change::TenantFloorRaised { tenant }
            | Change::DeviceDisabled { tenant, .. }
            | Change::DeviceDeleted { tenant, .. }
            | Change::DevicePasswordChanged { tenant, .. }
            | Change::ServiceCredentialDeleted { tenant, .. }
            | Change::TenantDeleted { tenant }
            | Change::TenantCaAdded { tenant }
            | Change::TenantCaRemoved { tenant, .. }
            | Change::PoliciesChanged { tenant }
            | Change::PublishLimitsChanged { tenant, .. }
            | Change::TopicRulesChanged { tenant }
            | Change::PresenceSettingsChanged { tenant, .. }
            | Change::WebhooksChanged { tenant }
            | Change::SessionDeleted { tenant, .. } => Some(tenant),
            Change::PlatformCredentialDeleted { .. } | Change::Missed => None,
        }
    }

    /// Its wire name (the serialized `kind`), for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::CertificateRevoked { .. } => "certificate_revoked",
            Change::DeviceFloorRaised { .. } => "device_floor_raised",
            Change::TenantFloorRaised { .. } => "tenant_floor_raised",
            Change::DeviceDisabled { .. } => "device_disabled",
            Change::DeviceDeleted { .. } => "device_deleted",
            Change::DevicePasswordChanged { .. } => "device_password_changed",
            Change::ServiceCredentialDeleted { .. } => "service_credential_deleted",
            Change::PlatformCredentialDeleted { .. } => "platform_credential_deleted",
            Change::TenantDeleted { .. } => "tenant_deleted",
            Change::TenantCaAdded { .. } => "tenant_ca_added",
            Change::TenantCaRemoved { .. } => "tenant_ca_removed",
            Change::PoliciesChanged { .. } => "policies_changed",
            Change::PublishLimitsChanged { .. } => "publish_limits_changed",
            Change::TopicRulesChanged { .. } => "topic_rules_changed",
            Change::PresenceSettingsChanged { .. } => "presence_settings_changed",
            Change::WebhooksChanged { .. } => "webhooks_changed",
            Change::SessionDeleted { .. } => "session_deleted",
            Change::Missed => "missed",
        }
    }
}

/// Where a change was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// On this node (its REST API, or its own link noticing a gap).
    Here,
    /// On the named node of the cluster.
    Node(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Here => f.write_str("this node"),
            Origin::Node(name) => f.write_str(name),
        }
    }
}

/// Applies changes to what it holds. Called in publication order; a
/// failure is the listener's to log (the change is stored either way, and
/// what it affects reads the database on its next miss).
#[async_trait::async_trait]
pub trait ChangeListener: Send + Sync + 'static {
    async fn apply(&self, change: &Change, origin: &Origin);
}

/// The one change feed of a node. Cheap to clone; every clone is the same
/// feed. With no listener (a bare API in tests) a change is only logged.
#[derive(Clone, Default)]
pub struct ChangeFeed {
    // std RwLock: held to copy the list, never across an await.
    listeners: Arc<RwLock<Vec<Arc<dyn ChangeListener>>>>,
}

impl fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("listeners", &self.snapshot().len())
            .finish()
    }
}

impl ChangeFeed {
    pub fn new() -> ChangeFeed {
        ChangeFeed::default()
    }

    /// `listener` gets every change published or delivered from now on,
    /// after the listeners subscribed before it.
    pub fn subscribe(&self, listener: Arc<dyn ChangeListener>) {
        self.listeners
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(listener);
    }

    /// A change made on this node, after its transaction committed: every
    /// listener has applied it (and a relay has sent it on) when this
    /// returns.
    pub async fn publish(&self, change: Change) {
        self.deliver(&change, &Origin::Here).await;
    }

    /// A change from `origin`, applied by every listener in turn.
    pub async fn deliver(&self, change: &Change, origin: &Origin) {
        tracing::info!(
            change = change.kind(),
            tenant = change.tenant(),
            %origin,
            "change applied"
        );
        for listener in self.snapshot() {
            listener.apply(change, origin).await;
        }
    }

    fn snapshot(&self) -> Vec<Arc<dyn ChangeListener>> {
        self.listeners
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Mutex;

    type Seen = Arc<Mutex<Vec<(&'static str, Change, Origin)>>>;

    /// Records what it was given, tagged with its name.
    struct Record(&'static str, Seen);

    #[async_trait::async_trait]
    impl ChangeListener for Record {
        async fn apply(&self, change: &Change, origin: &Origin) {
            // An await between calls: order must hold across it.
            tokio::task::yield_now().await;
            self.1
                .lock()
                .unwrap()
                .push((self.0, change.clone(), origin.clone()));
        }
    }

    #[tokio::test]
    async fn every_listener_applies_each_change_in_order_before_publish_returns() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let feed = ChangeFeed::new();
        feed.subscribe(Arc::new(Record("a", seen.clone())));
        let clone = feed.clone();
        clone.subscribe(Arc::new(Record("b", seen.clone())));
        let revoked = Change::CertificateRevoked {
            tenant: "acme".into(),
            device: "d1".into(),
            serial: "0a".into(),
        };
        feed.publish(revoked.clone()).await;
        let remote = Origin::Node("edge-2".into());
        let policies = Change::PoliciesChanged {
            tenant: "acme".into(),
        };
        clone.deliver(&policies, &remote).await;
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                ("a", revoked.clone(), Origin::Here),
                ("b", revoked, Origin::Here),
                ("a", policies.clone(), remote.clone()),
                ("b", policies, remote),
            ]
        );
    }

    #[tokio::test]
    async fn a_feed_without_listeners_takes_changes() {
        ChangeFeed::new().publish(Change::Missed).await;
    }

    #[test]
    fn changes_round_trip_as_json_with_their_kind() {
        let all = [
            Change::CertificateRevoked {
                tenant: "acme".into(),
                device: "d1".into(),
                serial: "0a".into(),
            },
            Change::PublishLimitsChanged {
                tenant: "acme".into(),
                device: None,
            },
            Change::PresenceSettingsChanged {
                tenant: "acme".into(),
                publish_status: false,
            },
            Change::PlatformCredentialDeleted { name: "ops".into() },
            Change::Missed,
        ];
        for change in all {
            let json = serde_json::to_value(&change).unwrap();
            assert_eq!(json["kind"], change.kind(), "{json}");
            assert_eq!(json.get("tenant").and_then(|t| t.as_str()), change.tenant());
            assert_eq!(serde_json::from_value::<Change>(json).unwrap(), change);
        }
    }
}
