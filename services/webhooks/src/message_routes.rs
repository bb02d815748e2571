//! [`MessageRoutes`]: which tenants' MQTT messages any webhook wants, kept
//! in memory so the broker's hot path can ask without touching the
//! database. A message no enabled endpoint wants (by event type and topic
//! filter) costs one map lookup and is never written anywhere.
//!
//! The cache is loaded at start, reloaded for one tenant whenever its
//! endpoints change through the API on any node (it listens on the change
//! feed: `events::change`), and reloaded whole now and then
//! ([`MessageRoutes::spawn_refresh`]) to pick up what changed otherwise
//! (the worker disabling an endpoint).
//! A stale entry only costs work: the fan-out reads the endpoints again
//! and routes exactly.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use events::EventType;
use events::change::{Change, ChangeListener, Origin};
use mqtt::TopicFilter;
use store::{Store, WebhookEndpoint};
use tokio_util::sync::CancellationToken;

use crate::Error;

/// What one tenant's endpoints want of its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wanted {
    /// An endpoint without a topic filter takes every message.
    All,
    /// The union of the endpoints' topic filters, parsed once here rather
    /// than on every message.
    Filters(Vec<TopicFilter>),
}

/// The cache. Cheap to clone (one shared map).
#[derive(Clone)]
pub struct MessageRoutes {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Tenants with at least one enabled endpoint that takes messages.
    tenants: RwLock<HashMap<String, Wanted>>,
    /// Reloads run one at a time, so a later one always reads later state
    /// and an older answer never overwrites a newer one.
    reloading: tokio::sync::Mutex<()>,
}

impl MessageRoutes {
    /// Read every enabled endpoint that takes message events.
    pub async fn load(store: Store) -> Result<MessageRoutes, Error> {
        let routes = MessageRoutes {
            inner: Arc::new(Inner {
                store,
                tenants: RwLock::new(HashMap::new()),
                reloading: tokio::sync::Mutex::new(()),
            }),
        };
        routes.reload(None).await?;
        Ok(routes)
    }

    /// Does any enabled endpoint of `tenant` want a message on `topic`?
    /// Never waits on anything but the map's lock.
    pub fn wants(&self, tenant: &str, topic: &str) -> bool {
        let tenants = match self.inner.tenants.read() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        match tenants.get(tenant) {
            None => false,
            Some(Wanted::All) => true,
            Some(Wanted::Filters(filters)) => filters.iter().any(|f| f.matches_str(topic)),
        }
    }

    /// `tenant`'s endpoints changed: read them again, in the background.
    pub fn invalidate(&self, tenant: &str) {
        let routes = self.clone();
        let tenant = tenant.to_owned();
        tokio::spawn(async move {
            if let Err(e) = routes.reload(Some(&tenant)).await {
                tracing::warn!(tenant, error = %e, "reloading webhook message routes failed; the periodic refresh retries");
            }
        });
    }

    /// Read the endpoints of `tenant` (or of every tenant) again now.
    pub async fn reload(&self, tenant: Option<&str>) -> Result<(), Error> {
        let _one_at_a_time = self.inner.reloading.lock().await;
        let endpoints = self
            .inner
            .store
            .list_enabled_webhook_endpoints(tenant)
            .await?;
        let fresh = wanted_by_tenant(&endpoints);
        let mut tenants = match self.inner.tenants.write() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        match tenant {
            None => *tenants = fresh,
            Some(tenant) => {
                tenants.remove(tenant);
                tenants.extend(fresh);
            }
        }
        Ok(())
    }

    /// Reload everything every `every` until `cancel`.
    pub fn spawn_refresh(
        &self,
        every: Duration,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let routes = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(every) => {}
                }
                if let Err(e) = routes.reload(None).await {
                    tracing::warn!(error = %e, "refreshing webhook message routes failed");
                }
            }
        })
    }
}

#[async_trait::async_trait]
impl ChangeListener for MessageRoutes {
    /// Reloads before the change's REST answer, so messages published
    /// after it reach a new endpoint.
    async fn apply(&self, change: &Change, _: &Origin) {
        let tenant = match change {
            Change::WebhooksChanged { tenant } | Change::TenantDeleted { tenant } => Some(tenant),
            Change::Missed => None,
            _ => return,
        };
        if let Err(e) = self.reload(tenant.map(String::as_str)).await {
            tracing::warn!(tenant, error = %e, "reloading webhook message routes failed; retried in the background");
            match tenant {
                Some(tenant) => self.invalidate(tenant),
                None => tracing::warn!("the periodic refresh reads every tenant's routes again"),
            }
        }
    }
}

fn wanted_by_tenant(endpoints: &[WebhookEndpoint]) -> HashMap<String, Wanted> {
    let mut tenants: HashMap<String, Wanted> = HashMap::new();
    for endpoint in endpoints {
        if !endpoint.enabled
            || !events::matches_any(&endpoint.event_types, EventType::MessagePublished.as_str())
        {
            continue;
        }
        let entry = tenants
            .entry(endpoint.tenant_id.clone())
            .or_insert_with(|| Wanted::Filters(Vec::new()));
        match (&endpoint.topic_filter, &mut *entry) {
            (None, _) => *entry = Wanted::All,
            (Some(filter), Wanted::Filters(filters)) => match TopicFilter::parse(filter.as_str()) {
                Ok(filter) => {
                    if !filters.contains(&filter) {
                        filters.push(filter);
                    }
                }
                // Checked when stored; one that no longer parses takes
                // nothing (as the fan-out's own routing decides).
                Err(e) => {
                    tracing::warn!(tenant = %endpoint.tenant_id, webhook = %endpoint.id,
                        error = %e, "stored webhook topic filter does not parse");
                }
            },
            (Some(_), Wanted::All) => {}
        }
    }
    tenants
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn endpoint(
        tenant: &str,
        types: &[&str],
        filter: Option<&str>,
        enabled: bool,
    ) -> WebhookEndpoint {
        WebhookEndpoint {
            id: format!("wh_{tenant}_{}", filter.unwrap_or("all")),
            tenant_id: tenant.to_owned(),
            url: "https://example.com/hook".to_owned(),
            event_types: types.iter().map(|t| (*t).to_owned()).collect(),
            topic_filter: filter.map(str::to_owned),
            enabled,
            secret: "whsec_c2VjcmV0".to_owned(),
            previous_secret: None,
            previous_secret_expires_at: None,
            consecutive_failures: 0,
            disabled_reason: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn only_enabled_message_endpoints_count_and_no_filter_takes_all() {
        let wanted = wanted_by_tenant(&[
            endpoint("a", &["device.*"], None, true),
            endpoint("a", &["message.*"], Some("devices/+/temp"), true),
            endpoint("a", &["message.published"], Some("devices/+/temp"), true),
            endpoint("b", &["*"], Some("x/#"), true),
            endpoint("b", &["message.published"], None, true),
            endpoint("c", &["message.published"], None, false),
        ]);
        assert_eq!(
            wanted.get("a"),
            Some(&Wanted::Filters(vec![
                TopicFilter::parse("devices/+/temp").unwrap()
            ]))
        );
        assert_eq!(wanted.get("b"), Some(&Wanted::All));
        assert_eq!(wanted.get("c"), None);
    }
}
