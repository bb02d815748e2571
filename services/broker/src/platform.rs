//! The platform namespace: where clients with platform service credentials
//! live ([`TenantId::platform`]). Every tenant's topics are mounted in it
//! under the tenant id, so `acme/devices/d1/status` is tenant `acme`'s
//! `devices/d1/status`:
//!
//! - a tenant publish is routed in its tenant as always, then — only when
//!   the platform namespace has any subscription, one atomic load — once
//!   more in the platform namespace under the mounted topic ([`fan_out`]);
//! - a platform client's publish to `{tenant}/{topic}` is routed inside
//!   that tenant as `{topic}` ([`target`]); a first level that is no
//!   tenant is refused;
//! - a platform subscription gets the retained messages of every tenant
//!   its first level matches, mounted ([`retained_for`]).
//!
//! Tenants never see the platform namespace: nothing here is reachable
//! from a tenant's own index. A tenant's `$` topics are not mounted, as a
//! wildcard never reaches them inside the tenant either (MQTT-4.7.2-1).

use std::sync::Arc;

use async_trait::async_trait;
use mqtt::{TopicFilter, TopicName};
use tokio::time::Instant;

use crate::TenantId;
use crate::broker::Broker;
use crate::message::Message;
use crate::retained::Lookup;
use crate::router;
use crate::store::StoreError;
use crate::tenant::Tenant;

/// Which tenants exist, for the platform namespace: a platform client may
/// publish into (and sees the retained messages of) tenants that no client
/// has used since the broker started. Without one, the tenants in use are
/// all there is.
#[async_trait]
pub trait TenantDirectory: Send + Sync + 'static {
    /// Whether `tenant` exists.
    async fn exists(&self, tenant: &TenantId) -> Result<bool, StoreError>;
    /// Every tenant.
    async fn list(&self) -> Result<Vec<TenantId>, StoreError>;
}

/// Why a platform client's topic names no tenant's topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MountError {
    /// `{first}` alone: a tenant's topic has at least one level.
    #[error("topic has no level below the tenant id {0:?}")]
    NoTopic(String),
    /// The first level is not a tenant id, or no such tenant exists.
    #[error("no tenant {0:?}: the first topic level must be an existing tenant id")]
    NoTenant(String),
}

/// `{tenant}/{topic}`, or `None` for a tenant's `$` topic (never mounted)
/// or one too long to mount.
pub(crate) fn mount(tenant: &TenantId, topic: &TopicName) -> Option<TopicName> {
    if topic.is_system() {
        return None;
    }
    TopicName::parse(format!("{tenant}/{topic}")).ok()
}

/// Splits a platform topic into the tenant id and the tenant's topic.
pub(crate) fn unmount(topic: &TopicName) -> Result<(TenantId, TopicName), MountError> {
    let (first, rest) = topic
        .as_str()
        .split_once('/')
        .ok_or_else(|| MountError::NoTopic(topic.as_str().to_owned()))?;
    let tenant = TenantId::parse(first).map_err(|_| MountError::NoTenant(first.to_owned()))?;
    // A sub-string of a valid name after a `/` is valid unless empty.
    let inner = TopicName::parse(rest).map_err(|_| MountError::NoTopic(first.to_owned()))?;
    Ok((tenant, inner))
}

/// The tenant a platform client's publish goes to, and its topic there.
/// Only tenants in memory count: [`load_for_publish`] brings an existing
/// one in first.
pub(crate) fn target(
    broker: &Broker,
    topic: &TopicName,
) -> Result<(Arc<Tenant>, TopicName), MountError> {
    let (id, inner) = unmount(topic)?;
    let tenant = broker
        .existing(&id)
        .filter(|t| !t.id.is_platform())
        .ok_or_else(|| MountError::NoTenant(id.as_str().to_owned()))?;
    Ok((tenant, inner))
}

/// Routes a tenant's message in the platform namespace under its mounted
/// topic; returns how many sessions it was queued for. Costs one atomic
/// load when no platform client subscribes.
pub(crate) fn fan_out(broker: &Broker, tenant: &Tenant, message: &Arc<Message>) -> usize {
    let platform = broker.platform();
    if !platform.has_subscriptions() || tenant.id.is_platform() {
        return 0;
    }
    let Some(topic) = mount(&tenant.id, &message.topic) else {
        return 0;
    };
    router::route(platform, &Arc::new(message.with_topic(topic)))
}

/// The tenants a platform filter's first level can match.
enum Tenants {
    All,
    One(TenantId),
    Nothing,
}

/// The first level's tenants and the rest of the filter as the tenants'
/// own filter (`#` alone matches everything in every tenant).
fn split_filter(filter: &TopicFilter) -> (Tenants, Option<TopicFilter>) {
    let inner = filter.shared().map_or_else(|| filter.clone(), |s| s.filter);
    let s = inner.as_str();
    if s == "#" {
        return (Tenants::All, TopicFilter::parse("#").ok());
    }
    let Some((first, rest)) = s.split_once('/') else {
        // One level: a tenant id alone is no tenant topic.
        return (Tenants::Nothing, None);
    };
    let tenants = match first {
        "+" => Tenants::All,
        id => TenantId::parse(id).map_or(Tenants::Nothing, Tenants::One),
    };
    (tenants, TopicFilter::parse(rest).ok())
}

/// Makes sure the tenants a platform SUBSCRIBE or PUBLISH names are in
/// memory (their retained messages loaded), asking the directory about
/// those no client has used yet. Failures are logged: the packet is then
/// handled with the tenants that are loaded.
pub(crate) async fn load_for_filter(broker: &Broker, filter: &TopicFilter) {
    match split_filter(filter).0 {
        Tenants::All => broker.load_all_tenants().await,
        Tenants::One(id) => {
            broker.load_if_exists(&id).await;
        }
        Tenants::Nothing => {}
    }
}

/// As [`load_for_filter`], for the tenant a publish names.
pub(crate) async fn load_for_publish(broker: &Broker, topic: &TopicName) {
    if let Ok((id, _)) = unmount(topic) {
        broker.load_if_exists(&id).await;
    }
}

/// The retained messages for a platform subscription: every matching
/// tenant's, mounted, at most `cap` in all.
pub(crate) fn retained_for(
    broker: &Broker,
    filter: &TopicFilter,
    now: Instant,
    cap: usize,
) -> Lookup {
    let mut out = Lookup::default();
    let (tenants, Some(rest)) = split_filter(filter) else {
        return out;
    };
    let tenants = match tenants {
        Tenants::All => broker.loaded_tenants(),
        Tenants::One(id) => broker.existing(&id).into_iter().collect(),
        Tenants::Nothing => Vec::new(),
    };
    for tenant in tenants.iter().filter(|t| !t.id.is_platform()) {
        let left = cap.saturating_sub(out.messages.len());
        let found = router::retained_for(broker, tenant, &rest, now, left);
        out.truncated |= found.truncated;
        out.messages.extend(found.messages.iter().filter_map(|m| {
            let topic = mount(&tenant.id, &m.topic)?;
            Some(Arc::new(m.with_topic(topic)))
        }));
        if out.truncated {
            break;
        }
    }
    out
}

#[cfg(test)]
#[path = "platform_tests.rs"]
mod tests;
