//! [`Broker`]: the shared state every listener and connection holds (an
//! `Arc`), and [`BrokerBuilder`] to plug in the platform's traits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use mqtt::{Properties, QoS, ReasonCode, TopicName};
use tokio::time::Instant;

use crate::auth::{AllowAll, AllowAnonymous, Authenticator, Authorizer};
use crate::events::{EventSink, NoEvents};
use crate::message::Message;
use crate::router;
use crate::session::DropCounters;
use crate::store::{MemoryRetainedStore, RetainedStore};
use crate::tenant::{Tenant, TenantStats};
use crate::{Config, Error, PublishLimits, TenantId};

/// The client id events name for messages the platform publishes through
/// [`Broker::publish`] (`$` cannot start a device id).
pub const SERVER_CLIENT_ID: &str = "$server";

struct Inner {
    config: Config,
    authenticator: Arc<dyn Authenticator>,
    authorizer: Arc<dyn Authorizer>,
    events: Arc<dyn EventSink>,
    retained_store: Arc<dyn RetainedStore>,
    /// Tenants by id, created on first use. Read-locked per CONNECT only;
    /// messages never touch it.
    tenants: RwLock<HashMap<TenantId, Arc<Tenant>>>,
    next_conn_id: AtomicU64,
}

/// The broker: tenants, sessions and the traits it calls out through.
/// Cheap to clone; every clone is the same broker.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Broker`]; only the authenticator is required.
pub struct BrokerBuilder {
    config: Config,
    authenticator: Arc<dyn Authenticator>,
    authorizer: Arc<dyn Authorizer>,
    events: Arc<dyn EventSink>,
    retained_store: Arc<dyn RetainedStore>,
}

impl BrokerBuilder {
    /// Replaces the default [`Config`].
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Sets the authorizer (default: [`AllowAll`]).
    pub fn authorizer(mut self, authorizer: Arc<dyn Authorizer>) -> Self {
        self.authorizer = authorizer;
        self
    }

    /// Sets the event sink (default: [`NoEvents`]).
    pub fn events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = events;
        self
    }

    /// Sets the retained store (default: [`MemoryRetainedStore`]).
    pub fn retained_store(mut self, store: Arc<dyn RetainedStore>) -> Self {
        self.retained_store = store;
        self
    }

    /// The broker.
    pub fn build(self) -> Broker {
        Broker {
            inner: Arc::new(Inner {
                config: self.config,
                authenticator: self.authenticator,
                authorizer: self.authorizer,
                events: self.events,
                retained_store: self.retained_store,
                tenants: RwLock::default(),
                next_conn_id: AtomicU64::new(1),
            }),
        }
    }
}

impl Broker {
    /// Starts building a broker that authenticates through `authenticator`.
    pub fn builder(authenticator: Arc<dyn Authenticator>) -> BrokerBuilder {
        BrokerBuilder {
            config: Config::default(),
            authenticator,
            authorizer: Arc::new(AllowAll),
            events: Arc::new(NoEvents),
            retained_store: Arc::new(MemoryRetainedStore::new()),
        }
    }

    /// `--allow-anonymous TENANT`: every client lands in `tenant` with full
    /// access to its topics; in-memory retained store, no events.
    pub fn allow_anonymous(tenant: TenantId, config: Config) -> Broker {
        Broker::builder(Arc::new(AllowAnonymous { tenant }))
            .config(config)
            .build()
    }

    /// The limits in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn authenticator(&self) -> &dyn Authenticator {
        &*self.inner.authenticator
    }

    pub(crate) fn authorizer(&self) -> &dyn Authorizer {
        &*self.inner.authorizer
    }

    pub(crate) fn events(&self) -> &dyn EventSink {
        &*self.inner.events
    }

    pub(crate) fn retained_store(&self) -> &dyn RetainedStore {
        &*self.inner.retained_store
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.inner.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    fn existing(&self, id: &TenantId) -> Option<Arc<Tenant>> {
        self.inner
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// The tenant `id`, created (and its retained messages loaded from the
    /// store) on first use.
    pub(crate) async fn tenant(&self, id: &TenantId) -> Result<Arc<Tenant>, Error> {
        if let Some(t) = self.existing(id) {
            return Ok(t);
        }
        let stored = self
            .inner
            .retained_store
            .load(id)
            .await
            .map_err(|e| Error::Store(e.0))?;
        let fresh = Arc::new(Tenant::new(id.clone()));
        let (now, wall) = (Instant::now(), std::time::SystemTime::now());
        // 3.3.2.3.3: one that expired while we were down is never delivered.
        for r in stored {
            let topic = r.topic.clone();
            if let Some(m) = Message::from_stored(r, now, wall) {
                fresh.set_retained(&topic, Some(Arc::new(m)));
            }
        }
        let mut tenants = self
            .inner
            .tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Another connection may have created it meanwhile: keep the first.
        Ok(tenants.entry(id.clone()).or_insert(fresh).clone())
    }

    /// Closes the connection of `client_id` in `tenant` with DISCONNECT
    /// 0x98 Administrative action (v5) — for a device disabled or revoked
    /// by the platform. Its will is published as for any server close.
    /// Returns whether a connection was found.
    pub fn disconnect_client(&self, tenant: &TenantId, client_id: &str) -> bool {
        let Some(conn) = self.existing(tenant).and_then(|t| t.connection(client_id)) else {
            return false;
        };
        conn.kick(ReasonCode::AdministrativeAction);
        true
    }

    /// Gives the live connection of `client_id` in `tenant` new publish
    /// limits (`None`: the broker's default), in force from its next
    /// PUBLISH with full buckets. Returns whether a connection was found.
    pub fn set_publish_limits(
        &self,
        tenant: &TenantId,
        client_id: &str,
        limits: Option<PublishLimits>,
    ) -> bool {
        let Some(conn) = self.existing(tenant).and_then(|t| t.connection(client_id)) else {
            return false;
        };
        conn.set_limits(limits.unwrap_or(self.inner.config.publish_limits));
        true
    }

    /// Publishes an application message into `tenant` from the platform
    /// (e.g. a device's desired state as a retained command). Returns how
    /// many sessions it was queued for. Tenant isolation holds: it reaches
    /// only that tenant's subscribers. A retained QoS 1/2 message is
    /// durable in the retained store when this returns.
    pub async fn publish(
        &self,
        tenant: &TenantId,
        topic: TopicName,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        properties: Properties,
    ) -> Result<usize, Error> {
        let t = self.tenant(tenant).await?;
        let message = Message::new(
            topic,
            payload,
            qos,
            retain,
            properties,
            None,
            Instant::now(),
        );
        let (delivered, durability) = router::publish_durable(self, &t, SERVER_CLIENT_ID, message);
        // As for a client's QoS 1/2 publish: return once it is durable.
        if let Some(durable) = durability {
            durable.await.map_err(|e| Error::Store(e.0))?;
        }
        Ok(delivered)
    }

    /// What the session of `client_id` in `tenant` has dropped so far, if
    /// the session exists.
    pub fn session_drops(&self, tenant: &TenantId, client_id: &str) -> Option<DropCounters> {
        self.existing(tenant)?.session_drops(client_id)
    }

    /// Counts for tenant `id`, if it has been used since start.
    pub fn tenant_stats(&self, id: &TenantId) -> Option<TenantStats> {
        self.existing(id).map(|t| t.stats())
    }
}
