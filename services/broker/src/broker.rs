//! [`Broker`]: the shared state every listener and connection holds (an
//! `Arc`), and [`BrokerBuilder`] to plug in the platform's traits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Bytes;
use mqtt::{Properties, QoS, ReasonCode, TopicName};
use tokio::time::Instant;

use crate::auth::{AllowAll, AllowAnonymous, Authenticator, Authorizer};
use crate::events::{EventSink, NoEvents};
use crate::handoff::SessionHandoff;
use crate::hygiene::TopicRules;
use crate::interconnect::Interconnect;
use crate::message::Message;
use crate::platform::TenantDirectory;
use crate::router;
use crate::session::DropCounters;
use crate::session_store::SessionStore;
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
    /// Where persistent sessions are written through, if anywhere.
    session_store: Option<Arc<dyn SessionStore>>,
    /// Tenants by id, created on first use. Read-locked per CONNECT (and
    /// per platform client publish); tenant messages never touch it.
    tenants: RwLock<HashMap<TenantId, Arc<Tenant>>>,
    /// Tenants being loaded, one gate each: the connects that miss a tenant
    /// at once wait for one load of its retained messages and sessions,
    /// and share its failure (the gate holds it) rather than each trying
    /// again in turn behind a store that is down.
    loading: Mutex<HashMap<TenantId, Arc<tokio::sync::Mutex<Option<String>>>>>,
    /// The platform namespace ([`TenantId::platform`]), never in `tenants`.
    platform: Arc<Tenant>,
    directory: Option<Arc<dyn TenantDirectory>>,
    /// Topic rules by tenant (only tenants with some rule on), including
    /// tenants not in memory yet: a tenant loaded later starts with them.
    topic_rules: RwLock<HashMap<TenantId, TopicRules>>,
    next_conn_id: AtomicU64,
    /// Whether new connections are taken ([`Broker::set_accepting`]).
    accepting: AtomicBool,
    /// The other nodes of a cluster, if this node is in one.
    interconnect: Option<Arc<dyn Interconnect>>,
    /// Every connection's keep-alive deadline.
    keep_alive: Arc<crate::keep_alive::KeepAliveWheel>,
    /// How client ids are taken over from other nodes, in a cluster.
    handoff: Option<Arc<dyn SessionHandoff>>,
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
    session_store: Option<Arc<dyn SessionStore>>,
    directory: Option<Arc<dyn TenantDirectory>>,
    interconnect: Option<Arc<dyn Interconnect>>,
    handoff: Option<Arc<dyn SessionHandoff>>,
}

impl BrokerBuilder {
    /// Makes client ids unique across a cluster: a CONNECT takes the
    /// session over from the node that holds it through `handoff`
    /// (default: none, a single node). Needs a session store.
    pub fn session_handoff(mut self, handoff: Arc<dyn SessionHandoff>) -> Self {
        self.handoff = Some(handoff);
        self
    }

    /// Makes this node one of a cluster's: interest, published messages
    /// and retained changes go to `interconnect` (default: none, a single
    /// node).
    pub fn interconnect(mut self, interconnect: Arc<dyn Interconnect>) -> Self {
        self.interconnect = Some(interconnect);
        self
    }

    /// Keeps persistent sessions in `store` (default: in this process's
    /// memory only, lost at exit).
    pub fn session_store(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.session_store = Some(store);
        self
    }

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

    /// Sets where platform clients learn which tenants exist (default:
    /// the tenants used since start).
    pub fn tenant_directory(mut self, directory: Arc<dyn TenantDirectory>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// The broker.
    pub fn build(self) -> Broker {
        let limits = self.config.topic_limits;
        let platform = Tenant::with_limits(TenantId::platform(), limits);
        if let Some(ic) = &self.interconnect {
            platform.set_interconnect(ic.clone());
        }
        Broker {
            inner: Arc::new(Inner {
                config: self.config,
                authenticator: self.authenticator,
                authorizer: self.authorizer,
                events: self.events,
                retained_store: self.retained_store,
                session_store: self.session_store,
                tenants: RwLock::default(),
                loading: Mutex::default(),
                platform: Arc::new(platform),
                directory: self.directory,
                topic_rules: RwLock::default(),
                next_conn_id: AtomicU64::new(1),
                accepting: AtomicBool::new(true),
                interconnect: self.interconnect,
                keep_alive: crate::keep_alive::KeepAliveWheel::new(),
                handoff: self.handoff,
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
            session_store: None,
            directory: None,
            interconnect: None,
            handoff: None,
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

    pub(crate) fn interconnect(&self) -> Option<&dyn Interconnect> {
        self.inner.interconnect.as_deref()
    }

    /// Whether a CONNECT is taken now; while not, each is refused with
    /// 0x88 Server unavailable (3.1.1: return code 3), before it is
    /// authenticated.
    pub fn accepting(&self) -> bool {
        self.inner.accepting.load(Ordering::Relaxed)
    }

    /// Takes new connections again (`true`, the default) or refuses them
    /// (`false`): for a node that must not serve for a while, such as a
    /// cluster member cut off from the others. Live connections are left
    /// alone ([`Broker::disconnect_all`] ends them).
    pub fn set_accepting(&self, accepting: bool) {
        self.inner.accepting.store(accepting, Ordering::Relaxed);
    }

    /// Closes every live connection with DISCONNECT `reason` (v5) and
    /// waits, at most `within`, until each has ended: their sessions are
    /// then detached, and a persistent session's last state is handed to
    /// the session store. Returns how many were closed and how many were
    /// still open at the bound.
    pub async fn disconnect_all(
        &self,
        reason: ReasonCode,
        within: std::time::Duration,
    ) -> (usize, usize) {
        let conns = self.all_connections();
        for conn in &conns {
            conn.kick(reason);
        }
        let deadline = Instant::now() + within;
        loop {
            // A kicked connection's session drops it when its task ends.
            let live: std::collections::HashSet<u64> =
                self.all_connections().iter().map(|c| c.id).collect();
            let open = conns.iter().filter(|c| live.contains(&c.id)).count();
            if open == 0 || Instant::now() >= deadline {
                return (conns.len(), open);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Wakes every live connection, so that each looks at the shutdown
    /// token it was given: a waiting connection does not wait on the token
    /// itself (issue 16). One attached after this looked at its session was
    /// attached after the token was cancelled, and sees it before waiting.
    pub(crate) fn wake_connections(&self) {
        for conn in self.all_connections() {
            conn.wake();
        }
    }

    fn all_connections(&self) -> Vec<Arc<crate::session::ConnControl>> {
        let tenants: Vec<Arc<Tenant>> = self
            .inner
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        std::iter::once(&self.inner.platform)
            .chain(&tenants)
            .flat_map(|t| t.connections())
            .collect()
    }

    pub(crate) fn keep_alive(&self) -> &Arc<crate::keep_alive::KeepAliveWheel> {
        &self.inner.keep_alive
    }

    pub(crate) fn next_conn_id(&self) -> u64 {
        self.inner.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The tenant `id` if it is in memory (the platform namespace for
    /// [`TenantId::platform`]).
    pub(crate) fn existing(&self, id: &TenantId) -> Option<Arc<Tenant>> {
        if id.is_platform() {
            return Some(self.inner.platform.clone());
        }
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
        // One load per tenant at a time. After a start, a storm's first
        // connects all miss the tenant together, and each read its whole
        // retained set and sessions: 100 connects read 5,000 retained rows
        // 100 times, 15 s of database time ahead of every CONNACK (issue 16).
        let gate = Arc::clone(
            self.inner
                .loading
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(id.clone())
                .or_default(),
        );
        let loaded = {
            let mut failed = gate.lock().await;
            match (self.existing(id), failed.as_ref()) {
                (Some(t), _) => Ok(t),
                (None, Some(error)) => Err(Error::Store(error.clone())),
                (None, None) => {
                    let loaded = self.load(id).await;
                    if let Err(Error::Store(error)) = &loaded {
                        *failed = Some(error.clone());
                    }
                    loaded
                }
            }
        };
        let mut loading = self
            .inner
            .loading
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if loading.get(id).is_some_and(|g| Arc::ptr_eq(g, &gate)) {
            loading.remove(id);
        }
        loaded
    }

    /// Reads tenant `id` from the stores into memory (see [`Broker::tenant`]).
    async fn load(&self, id: &TenantId) -> Result<Arc<Tenant>, Error> {
        let stored = self
            .inner
            .retained_store
            .load(id)
            .await
            .map_err(|e| Error::Store(e.0))?;
        let mut sessions = match &self.inner.session_store {
            Some(store) => store.load(id).await.map_err(|e| Error::Store(e.0))?,
            None => Vec::new(),
        };
        if let Some(handoff) = &self.inner.handoff {
            // Another node's sessions stay there until a CONNECT takes
            // them over: one node holds a session in memory, or two would
            // queue its messages.
            sessions.retain(|s| s.node.as_deref().is_none_or(|n| n == handoff.node()));
        }
        let fresh = Arc::new(Tenant::with_limits(
            id.clone(),
            self.inner.config.topic_limits,
        ));
        if let Some(store) = &self.inner.session_store {
            fresh.set_session_store(store.clone());
        }
        if let Some(ic) = &self.inner.interconnect {
            fresh.set_interconnect(ic.clone());
        }
        if let Some(rules) = self.topic_rules_of(id) {
            fresh.set_rules(rules);
        }
        let (now, wall) = (Instant::now(), std::time::SystemTime::now());
        // 3.3.2.3.3: one that expired while we were down is never delivered.
        for r in stored {
            let topic = r.topic.clone();
            let owner = r.owner.clone();
            // Stored before the limits (or under a tenant's higher one):
            // left in the database, where an empty retained PUBLISH or the
            // tenant's deletion still clears it, but never in memory.
            if let Err(e) = fresh.check_topic(&topic) {
                tracing::warn!(tenant = %id, reason = %e, "stored retained message skipped on load");
                crate::metrics::retained_skipped(e.label());
                continue;
            }
            if let Some(m) = Message::from_stored(r, now, wall) {
                // Counted for its publisher again, so that a restart does
                // not hand every device a fresh retained quota.
                fresh.load_retained(&topic, Arc::new(m), owner);
            }
        }
        let restored = fresh.restore(
            sessions,
            crate::session::QueueLimits::of(&self.inner.config),
            false,
        );
        let (tenant, first) = {
            let mut tenants = self
                .inner
                .tenants
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            // Another connection may have created it meanwhile: keep the first.
            let first = !tenants.contains_key(id);
            let tenant = tenants.entry(id.clone()).or_insert(fresh).clone();
            // Under the tenants lock: a concurrent `set_topic_rules` either
            // updated the map before (read here) or finds the tenant after.
            if let Some(rules) = self.topic_rules_of(id) {
                tenant.set_rules(rules);
            }
            (tenant, first)
        };
        if first {
            // Wills that fell due and sessions that expired while the
            // broker was down go now; the others get their timers.
            self.readmit_will_owners(id, &restored).await;
            crate::conn::arm_restored(self, &tenant, restored);
        }
        Ok(tenant)
    }

    /// Ends the session of `client_id` in `tenant` with its queue (an
    /// operator's deletion): its connection, if any, is closed with
    /// DISCONNECT 0x98 Administrative action. Returns whether it was in
    /// memory, and what makes the deletion durable.
    pub fn end_session(
        &self,
        tenant: &TenantId,
        client_id: &str,
    ) -> (bool, Option<crate::store::Durability>) {
        match self.existing(tenant) {
            Some(t) => t.end_session(client_id),
            None => (false, None),
        }
    }

    /// Brings tenant `id` into memory if the tenant directory knows it:
    /// its stored sessions are restored, wills that fell due go out and
    /// sessions past their expiry end (the session store's sweep calls it
    /// for tenants nobody has used since start). Returns whether it is in
    /// memory.
    pub async fn load_tenant(&self, id: &TenantId) -> bool {
        !id.is_platform() && self.load_if_exists(id).await.is_some()
    }

    /// Ends every session `owner` (a device id or credential name) left in
    /// `tenant`, connected or not, with their queues: the device or
    /// credential was deleted. Returns how many ended.
    pub fn end_sessions_of(&self, tenant: &TenantId, owner: &str) -> usize {
        self.existing(tenant)
            .map_or(0, |t| t.end_sessions_of(owner))
    }

    fn topic_rules_of(&self, id: &TenantId) -> Option<TopicRules> {
        self.inner
            .topic_rules
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .copied()
    }

    /// Sets `tenant`'s topic hygiene rules (all off is the default); live
    /// sessions are held to them from their next packet. Existing
    /// subscriptions stay, but count towards the catch-all cap.
    pub fn set_topic_rules(&self, tenant: &TenantId, rules: TopicRules) {
        {
            let mut all = self
                .inner
                .topic_rules
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if rules.is_off() {
                all.remove(tenant);
            } else {
                all.insert(tenant.clone(), rules);
            }
        }
        if let Some(t) = self.existing(tenant).filter(|t| !t.id.is_platform()) {
            t.set_rules(rules);
        }
    }

    /// The platform namespace.
    pub(crate) fn platform(&self) -> &Tenant {
        &self.inner.platform
    }

    /// The client ids of the sessions this node holds (connected or
    /// not), per namespace in memory, the platform namespace included: for
    /// a cluster node that catches up on what it missed.
    pub fn held_sessions(&self) -> Vec<(TenantId, Vec<String>)> {
        let mut all = self.loaded_tenants();
        all.push(self.inner.platform.clone());
        all.iter()
            .map(|t| {
                let ids = t
                    .all_sessions()
                    .iter()
                    .map(|s| s.client_id().to_string())
                    .collect();
                (t.id.clone(), ids)
            })
            .collect()
    }

    /// Every tenant in memory (not the platform namespace).
    pub(crate) fn loaded_tenants(&self) -> Vec<Arc<Tenant>> {
        self.inner
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Brings tenant `id` into memory if the directory knows it (without a
    /// directory: only if it already is). Returns it, if it exists.
    pub(crate) async fn load_if_exists(&self, id: &TenantId) -> Option<Arc<Tenant>> {
        if let Some(t) = self.existing(id) {
            return Some(t);
        }
        let directory = self.inner.directory.as_ref()?;
        match directory.exists(id).await {
            Ok(true) => self
                .tenant(id)
                .await
                .inspect_err(
                    |e| tracing::warn!(tenant = %id, error = %e, "tenant could not be loaded"),
                )
                .ok(),
            Ok(false) => None,
            Err(e) => {
                tracing::warn!(tenant = %id, error = %e, "tenant directory unavailable");
                None
            }
        }
    }

    /// Brings every tenant the directory lists into memory.
    pub(crate) async fn load_all_tenants(&self) {
        let Some(directory) = &self.inner.directory else {
            return;
        };
        let ids = match directory.list().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "tenant directory unavailable");
                return;
            }
        };
        for id in ids.iter().filter(|id| !id.is_platform()) {
            if let Err(e) = self.tenant(id).await {
                tracing::warn!(tenant = %id, error = %e, "tenant could not be loaded");
            }
        }
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

    /// Lets go of the session of `client_id` in `tenant` for another node
    /// of the cluster that took the client id over (issue 15): its
    /// connection, if any, is closed with DISCONNECT 0x8E Session taken
    /// over (as a local takeover: no will, the session goes on), what this
    /// node holds of it is written to the session store, and it is
    /// forgotten here without ending in the store. Returns whether this
    /// node held it.
    pub async fn release_session(&self, tenant: &TenantId, client_id: &str) -> Result<bool, Error> {
        let Some(session) = self
            .existing(tenant)
            .and_then(|t| t.session(client_id).map(|s| (t, s)))
        else {
            return Ok(false);
        };
        let (t, session) = session;
        // The connection stops being the session's before it closes, as in
        // `Tenant::attach`: it then neither keeps it offline nor arms its
        // will.
        let previous = {
            let mut st = session.lock();
            st.generation += 1;
            st.conn.take()
        };
        session.changed();
        if let Some(conn) = previous {
            conn.kick(ReasonCode::SessionTakenOver);
            let timeout = self.inner.config.takeover_timeout;
            if tokio::time::timeout(timeout, conn.finished.fired())
                .await
                .is_err()
            {
                tracing::warn!(tenant = %tenant, client_id, "connection did not let go of the session in time");
            }
        }
        t.forget(&session);
        if let Some(store) = &self.inner.session_store {
            store.flush().await.map_err(|e| Error::Store(e.0))?;
        }
        tracing::info!(tenant = %tenant, client_id, "session released to another node");
        Ok(true)
    }

    /// In a cluster, before a CONNECT of `client_id` attaches in `tenant`:
    /// the node the store names as the session's lets go of it, and it is
    /// loaded here from the store. Nothing happens on a single node or
    /// for a session this node serves.
    pub(crate) async fn claim_session(
        &self,
        tenant: &Arc<Tenant>,
        client_id: &str,
    ) -> Result<(), Error> {
        let (Some(handoff), Some(store)) = (&self.inner.handoff, &self.inner.session_store) else {
            return Ok(());
        };
        let load = || async {
            store
                .load_session(&tenant.id, client_id)
                .await
                .map_err(|e| Error::Store(e.0))
        };
        let Some(before) = load().await? else {
            return Ok(());
        };
        let limits = crate::session::QueueLimits::of(&self.inner.config);
        let node = match before.node.clone() {
            Some(node) if node != handoff.node() => node,
            // The store names this node but it is not held here: taken
            // from a dead node a moment ago, not yet restored
            // (`adopt_sessions`).
            Some(_) if tenant.session(client_id).is_none() => {
                tenant.adopt(client_id, Some(before), limits, None);
                return Ok(());
            }
            _ => return Ok(()),
        };
        // What is routed for the session while the other node lets go of
        // it is caught here from now on, other nodes' messages once NATS
        // confirms this node's interest (bounded): nothing falls between
        // the two nodes (`Tenant::stand_in`).
        let (stand_in, confirmed) = tenant.stand_in(
            client_id,
            &before.record.owner,
            &before.subscriptions,
            limits,
        );
        drop(before);
        for interest in confirmed {
            let _ = interest.await;
        }
        let released = match handoff.release(&node, &tenant.id, client_id).await {
            Ok(()) => true,
            // A dead node cannot answer: its session is taken as stored.
            Err(e) => {
                tracing::warn!(tenant = %tenant.id, client_id, node, error = %e, "session not released by its node; taken over as stored");
                false
            }
        };
        let stored = match load().await {
            Ok(stored) => stored,
            Err(e) => {
                tenant.forget(&stand_in);
                return Err(e);
            }
        };
        let held = stored.is_some();
        tenant.adopt(client_id, stored, limits, Some(stand_in));
        if !released && held {
            // What the silent node missed came before what the stand-in
            // caught; it is queued after it (see ARCHITECTURE.md, order
            // across a failover). A failed recovery does not refuse the
            // client: it gets what the store and the stand-in hold.
            match handoff.recover(self, &node, &tenant.id, client_id).await {
                Ok(recovered) => {
                    tracing::info!(tenant = %tenant.id, client_id, node, recovered, "session recovered from the cluster's journal")
                }
                Err(e) => {
                    tracing::error!(tenant = %tenant.id, client_id, node, error = %e, "what the silent node missed for this session could not be recovered")
                }
            }
        }
        Ok(())
    }

    /// Takes in the persistent sessions of `client_ids` in `tenant` that
    /// the store now names this node for, taken from a node that died
    /// (issue 15, `fleetmq::node_death`): each is restored offline with
    /// its subscriptions (this node's interest now routes its messages
    /// here, and they are queued for it) and its queue. Once that interest
    /// is in force, wills due go out and the other deadlines are armed, as
    /// after a restart (a tenant not in memory yet is loaded with them and
    /// arms them as it loads, a moment before NATS confirms the interest).
    /// A session held here already (its client came back
    /// here meanwhile), or that the store names another node for (it came
    /// back there), is left alone. Returns how many were taken in; when it
    /// returns, their interest is in force (unless the interconnect did
    /// not confirm it in time), so what other nodes publish next is queued.
    pub async fn adopt_sessions(
        &self,
        tenant: &TenantId,
        client_ids: &[String],
    ) -> Result<usize, Error> {
        let (Some(handoff), Some(store)) = (&self.inner.handoff, &self.inner.session_store) else {
            return Ok(0);
        };
        // A tenant loaded now brings them along: the store names this node.
        let Some(t) = self.load_if_exists(tenant).await else {
            return Ok(0);
        };
        let mut stored = Vec::new();
        for client_id in client_ids {
            if t.session(client_id).is_some() {
                continue;
            }
            match store
                .load_session(tenant, client_id)
                .await
                .map_err(|e| Error::Store(e.0))?
            {
                Some(s) if s.node.as_deref() == Some(handoff.node()) => stored.push(s),
                _ => {}
            }
        }
        let restored = t.restore(
            stored,
            crate::session::QueueLimits::of(&self.inner.config),
            true,
        );
        let taken = restored.len();
        if let Some(settled) = self.inner.interconnect.as_ref().and_then(|ic| ic.settled()) {
            // Bounded by the interconnect; unconfirmed, the wills go anyway.
            let _ = settled.await;
        }
        self.readmit_will_owners(tenant, &restored).await;
        crate::conn::arm_restored(self, &t, restored);
        Ok(taken)
    }

    /// Makes the owners of restored sessions' wills known to the
    /// authorizer again ([`Authenticator::readmit`]): they never connected
    /// to this run of this node, and a will is authorized as its owner.
    async fn readmit_will_owners(&self, tenant: &TenantId, restored: &[crate::tenant::Restored]) {
        let mut owners: Vec<&str> = restored
            .iter()
            .filter_map(|r| r.will.as_ref().map(|(_, owner)| owner.as_str()))
            .collect();
        owners.sort_unstable();
        owners.dedup();
        for owner in owners {
            self.inner.authenticator.readmit(tenant, owner).await;
        }
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

    /// Re-checks every live subscription in `tenant` against the
    /// authorizer, after its policies changed (issue 13, item 6): filters
    /// no longer allowed are removed, with the queued messages only they
    /// matched. An MQTT 5 client that lost one is told by DISCONNECT 0x87
    /// Not authorized, whose Reason String names the filters; its session
    /// stays, so it resumes with what it may still have (and a SUBSCRIBE
    /// to a removed filter is answered 0x87). A 3.1.1 client cannot be
    /// told and keeps its connection. Sessions offline now are checked
    /// when they resume, by the identity that resumes them. Returns how
    /// many subscriptions were removed.
    pub fn recheck_subscriptions(&self, tenant: &TenantId) -> usize {
        let Some(t) = self.existing(tenant) else {
            return 0;
        };
        let mut removed = 0;
        for session in t.all_sessions() {
            let Some(conn) = session.lock().conn.clone() else {
                continue;
            };
            let identity = crate::auth::Identity {
                tenant: tenant.clone(),
                principal: session.owner().to_string(),
                limits: None,
            };
            let revoked =
                t.revoke_subscriptions(&session, |f| self.authorizer().can_subscribe(&identity, f));
            if revoked.is_empty() {
                continue;
            }
            removed += revoked.len();
            let list = revoked
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            tracing::info!(
                tenant = %tenant,
                client_id = %session.client_id(),
                principal = %identity.principal,
                revoked = %list,
                "subscriptions no longer allowed by policy removed"
            );
            if conn.version.get() == Some(&mqtt::ProtocolVersion::V5) {
                // A Reason String is bounded by the client's packet size:
                // keep it short.
                let mut why = format!("subscriptions no longer allowed by policy: {list}");
                if why.len() > 256 {
                    let mut end = 256;
                    while !why.is_char_boundary(end) {
                        end -= 1;
                    }
                    why.truncate(end);
                }
                conn.kick_saying(ReasonCode::NotAuthorized, Some(why));
            }
        }
        removed
    }

    /// Closes every connection `principal` authenticated in `tenant` (the
    /// platform namespace for [`TenantId::platform`]) with DISCONNECT 0x98
    /// Administrative action — for a credential deleted by the platform.
    /// Returns how many were closed.
    pub fn disconnect_principal(&self, tenant: &TenantId, principal: &str) -> usize {
        let Some(t) = self.existing(tenant) else {
            return 0;
        };
        let conns = t.connections_of(principal);
        for conn in &conns {
            conn.kick(ReasonCode::AdministrativeAction);
        }
        conns.len()
    }

    /// Forgets tenant `id` (deleted by the platform): every connection of
    /// it is closed with DISCONNECT 0x98 Administrative action, and its
    /// sessions, subscriptions, retained messages in memory and topic rules
    /// go. A client of it that connects again is asked about by the
    /// authenticator as for any new tenant. Returns how many connections
    /// were closed.
    pub fn remove_tenant(&self, id: &TenantId) -> usize {
        if id.is_platform() {
            return 0;
        }
        self.inner
            .topic_rules
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        let removed = self
            .inner
            .tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        let Some(tenant) = removed else {
            return 0;
        };
        let conns = tenant.connections();
        for conn in &conns {
            conn.kick(ReasonCode::AdministrativeAction);
        }
        // Its sessions, offline persistent ones too, leave the index: a
        // clustered node withdraws the tenant's interest rather than keep
        // receiving its traffic for nobody. The store deletes them with
        // the tenant.
        for session in tenant.all_sessions() {
            tenant.forget(&session);
        }
        conns.len()
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
        if tenant.is_platform() {
            // The platform namespace has no topics of its own.
            return Err(Error::InvalidTenantId(tenant.to_string()));
        }
        let t = match self.existing(tenant) {
            Some(t) => t,
            // With a directory, a tenant not in memory is asked about first,
            // so a publish after a deletion (a last presence status) does not
            // bring the deleted tenant back.
            None if self.inner.directory.is_some() => self
                .load_if_exists(tenant)
                .await
                .ok_or_else(|| Error::UnknownTenant(tenant.to_string()))?,
            None => self.tenant(tenant).await?,
        };
        let message = Message::new(
            topic,
            payload,
            qos,
            retain,
            properties,
            None,
            Instant::now(),
        );
        let (delivered, durability) =
            router::publish_durable(self, &t, SERVER_CLIENT_ID, None, message, None)
                .map_err(|e| Error::RetainedQuota(e.to_string()))?;
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
