//! [`Tenant`]: one namespace with its own subscription index, retained
//! trie and sessions. Nothing in here refers to another tenant, so routing
//! cannot cross tenants whatever an ACL says.
//!
//! Locks (all std, nothing awaits under them), always taken in this order
//! when nested: `sessions` → a session's state; the index and the retained
//! trie are never held together with `sessions`' callers' session locks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use mqtt::{SubscriptionOptions, TopicFilter};
use tokio::time::Instant;

use crate::TenantId;
use crate::hygiene::{TopicLimits, TopicRefusal, TopicRules};
use crate::index::{Subscriber, SubscriptionIndex};
use crate::interconnect::Interconnect;
use crate::message::Delivery;
use crate::metrics;
use crate::retained::{Change, Lookup, QuotaRefusal, RetainedQuota, RetainedTrie};
use crate::session::{ConnControl, QueueLimits, Session, SubscriptionEntry, TenantQueue};

mod durable;

pub(crate) use durable::{Restored, deadline};

/// Counts describing a tenant, for tests and admin views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantStats {
    /// Sessions (connected or kept for an offline client).
    pub sessions: usize,
    /// Subscriptions in the index.
    pub subscriptions: usize,
    /// Retained topics.
    pub retained: usize,
    /// Messages queued in its sessions (in flight not included).
    pub queued_messages: usize,
    /// About the wire size of those messages.
    pub queued_bytes: usize,
    /// Messages dropped because its queues together were full.
    pub queue_dropped: u64,
    /// Messages dropped for its slow consumers (`backpressure`).
    pub slow_consumer_dropped: u64,
}

/// Result of attaching a connection to a session.
pub(crate) struct Attached {
    pub(crate) session: Arc<Session>,
    /// Session Present (MQTT-3.2.2-2, MQTT-3.2.2-3).
    pub(crate) present: bool,
    /// The connection that served the session before, to be closed.
    pub(crate) previous: Option<Arc<ConnControl>>,
    /// A persistent session a Clean Start discarded, deleted from the
    /// store: the CONNACK waits for it.
    pub(crate) discarded: Option<crate::store::Durability>,
}

/// Why a connection may not have the session of its client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotOwner {
    /// The session belongs to another principal (`owner`), and the client
    /// id is not the connecting principal's own name.
    Foreign { owner: Arc<str> },
}

/// What detaching left behind.
pub(crate) enum Detached {
    /// Another connection took the session over and continues it.
    NotCurrent,
    /// The session ended with the connection (expiry 0).
    Ended,
    /// The session stays until its expiry; `generation` identifies this
    /// offline period for the expiry and will-delay timers.
    Kept { generation: u64 },
}

#[derive(Debug)]
pub(crate) struct Tenant {
    pub(crate) id: TenantId,
    index: RwLock<SubscriptionIndex>,
    retained: RwLock<RetainedTrie>,
    sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    /// The index's size, readable without its lock: every tenant publish
    /// checks the platform namespace's for zero before mounting anything.
    subscribed: AtomicUsize,
    /// Topic hygiene; `rules_on` lets a tenant without rules skip the lock.
    rules: RwLock<TopicRules>,
    rules_on: AtomicBool,
    /// The broker's topic shape limits (the rules' `max_depth` replaces
    /// the depth).
    limits: TopicLimits,
    /// Where persistent sessions are written through, if anywhere.
    store: std::sync::OnceLock<durable::StoreHandle>,
    /// What its sessions hold queued together.
    queue: Arc<TenantQueue>,
    /// The cluster's interconnect, told of interest changes, if any.
    interconnect: std::sync::OnceLock<Watcher>,
}

/// The interconnect a tenant tells its interest changes (a newtype: the
/// trait object has no `Debug`).
pub(crate) struct Watcher(Arc<dyn Interconnect>);

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interconnect")
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// Takes `session` out of `sessions` if it is still the one under its
/// client id (a Clean Start may have put a new one there since).
fn remove_if_current(sessions: &mut HashMap<Arc<str>, Arc<Session>>, session: &Arc<Session>) {
    if sessions
        .get(session.client_id())
        .is_some_and(|s| Arc::ptr_eq(s, session))
    {
        sessions.remove(session.client_id());
    }
}

impl Tenant {
    #[cfg(test)]
    pub(crate) fn new(id: TenantId) -> Self {
        Self::with_limits(id, TopicLimits::default())
    }

    pub(crate) fn with_limits(id: TenantId, limits: TopicLimits) -> Self {
        Self {
            index: RwLock::default(),
            retained: RwLock::default(),
            sessions: Mutex::default(),
            subscribed: AtomicUsize::new(0),
            rules: RwLock::default(),
            rules_on: AtomicBool::new(false),
            limits,
            store: std::sync::OnceLock::new(),
            queue: Arc::new(TenantQueue::new(&id)),
            interconnect: std::sync::OnceLock::new(),
            id,
        }
    }

    /// Makes the tenant tell `interconnect` when its set of distinct
    /// filters changes (set once, before any subscription).
    ///
    /// A clustered tenant's shared subscriptions get messages through the
    /// interconnect only, local ones too, so that one member cluster-wide
    /// gets each ([`Tenant::clustered`]).
    pub(crate) fn set_interconnect(&self, interconnect: Arc<dyn Interconnect>) {
        let _ = self.interconnect.set(Watcher(interconnect));
    }

    /// Whether the tenant is one node's part of a cluster.
    pub(crate) fn clustered(&self) -> bool {
        self.interconnect.get().is_some()
    }

    /// Removes `client`'s subscription to `filter` from `index` (held
    /// write-locked by the caller, so interest changes are told in order);
    /// returns whether it existed.
    fn remove_from(
        &self,
        index: &mut SubscriptionIndex,
        filter: &TopicFilter,
        client: &str,
    ) -> bool {
        if !index.remove(filter, client) {
            return false;
        }
        self.count_subscriptions(false);
        if let Some(Watcher(ic)) = self.interconnect.get()
            && !index.is_live(filter)
        {
            // Nothing waits for a withdrawal.
            drop(ic.interest(&self.id, filter, false));
        }
        true
    }

    /// The subscriptions to exactly `filter`, one member for a shared one
    /// (another node's message came for it).
    pub(crate) fn matches_at(&self, filter: &TopicFilter, out: &mut Vec<crate::index::Matched>) {
        read(&self.index).matches_at(filter, out);
    }

    /// Replaces the tenant's topic hygiene rules.
    pub(crate) fn set_rules(&self, rules: TopicRules) {
        *write(&self.rules) = rules;
        self.rules_on.store(!rules.is_off(), Ordering::Release);
    }

    /// The rules in force, `None` when all are off (one atomic load).
    pub(crate) fn rules(&self) -> Option<TopicRules> {
        if !self.rules_on.load(Ordering::Acquire) {
            return None;
        }
        Some(*read(&self.rules))
    }

    /// Checks a topic name against the limits and the tenant's rules.
    pub(crate) fn check_topic(&self, topic: &mqtt::TopicName) -> Result<(), TopicRefusal> {
        self.check_shape(topic.as_str(), self.rules())
    }

    /// Checks a topic name or inner filter: the limits always, the rules
    /// when on.
    fn check_shape(&self, topic: &str, rules: Option<TopicRules>) -> Result<(), TopicRefusal> {
        let depth = rules
            .and_then(|r| r.max_depth)
            .unwrap_or(self.limits.max_depth);
        self.limits.check(topic, depth)?;
        rules.map_or(Ok(()), |r| r.check(topic))
    }

    /// [`Tenant::subscribe`] held to the tenant's rules: the filter's
    /// shape, and the catch-all cap (decided under the index lock, so
    /// concurrent subscribes cannot overshoot it). Also what the SUBACK
    /// waits for in a cluster: the other nodes' traffic reaching a filter
    /// new on this node.
    pub(crate) fn subscribe_checked(
        &self,
        session: &Arc<Session>,
        filter: &TopicFilter,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> Result<(bool, Option<crate::store::Durability>), TopicRefusal> {
        let rules = self.rules();
        let inner = filter.shared().map_or_else(|| filter.clone(), |s| s.filter);
        self.check_shape(inner.as_str(), rules)?;
        self.insert(
            session,
            filter,
            options,
            id,
            rules.and_then(|r| r.max_catch_all_subscriptions),
        )
    }

    /// Whether any subscription is in the index (one atomic load).
    pub(crate) fn has_subscriptions(&self) -> bool {
        self.subscribed.load(Ordering::Acquire) > 0
    }

    fn count_subscriptions(&self, added: bool) {
        if added {
            self.subscribed.fetch_add(1, Ordering::AcqRel);
            metrics::subscriptions(1.0);
        } else {
            // Only called for a subscription that was in the index.
            self.subscribed.fetch_sub(1, Ordering::AcqRel);
            metrics::subscriptions(-1.0);
        }
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn stats(&self) -> TenantStats {
        TenantStats {
            sessions: self.sessions().len(),
            subscriptions: read(&self.index).len(),
            retained: read(&self.retained).len(),
            queued_messages: self.queue.held().0,
            queued_bytes: self.queue.held().1,
            queue_dropped: self.queue.dropped.load(Ordering::Relaxed),
            slow_consumer_dropped: self.queue.slow_dropped.load(Ordering::Relaxed),
        }
    }

    /// The connection currently serving `client_id`, if any.
    pub(crate) fn connection(&self, client_id: &str) -> Option<Arc<ConnControl>> {
        let session = self.sessions().get(client_id).cloned()?;
        session.lock().conn.clone()
    }

    /// The session of `client_id`, if this node holds it.
    pub(crate) fn session(&self, client_id: &str) -> Option<Arc<Session>> {
        self.sessions().get(client_id).cloned()
    }

    /// Every live connection.
    pub(crate) fn connections(&self) -> Vec<Arc<ConnControl>> {
        let sessions: Vec<Arc<Session>> = self.sessions().values().cloned().collect();
        sessions
            .iter()
            .filter_map(|s| s.lock().conn.clone())
            .collect()
    }

    /// The live connections `principal` authenticated.
    pub(crate) fn connections_of(&self, principal: &str) -> Vec<Arc<ConnControl>> {
        let sessions: Vec<Arc<Session>> = self.sessions().values().cloned().collect();
        sessions
            .iter()
            .filter_map(|s| s.lock().conn.clone())
            .filter(|c| c.principal.get().is_some_and(|p| **p == *principal))
            .collect()
    }

    pub(crate) fn session_drops(&self, client_id: &str) -> Option<crate::session::DropCounters> {
        let session = self.sessions().get(client_id).cloned()?;
        let dropped = session.lock().dropped();
        Some(dropped)
    }

    /// Finds or creates the session for `client_id` and makes `ctl` its
    /// connection (3.1.2.4 Clean Start, MQTT-3.1.4-3 takeover), for
    /// principal `owner`.
    ///
    /// A session belongs to the principal that created it (issue 13, item
    /// 4): another principal neither resumes it nor takes its connection
    /// over ([`NotOwner`]; the owner is left alone), except the principal
    /// whose own name the client id is (a device's client id is its device
    /// id): a foreign session under its name is discarded and it starts
    /// afresh (Session Present 0).
    pub(crate) fn attach(
        &self,
        client_id: &Arc<str>,
        owner: &Arc<str>,
        clean_start: bool,
        ctl: Arc<ConnControl>,
        limits: QueueLimits,
    ) -> Result<Attached, NotOwner> {
        let mut sessions = self.sessions();
        let mut previous = None;
        let mut discarded = None;
        if let Some(existing) = sessions.get(client_id).cloned() {
            let foreign = existing.owner() != owner;
            if foreign && **owner != **client_id {
                return Err(NotOwner::Foreign {
                    owner: existing.owner().clone(),
                });
            }
            if !clean_start && !foreign {
                let mut st = existing.lock();
                let previous = st.conn.replace(ctl);
                st.generation += 1;
                drop(st);
                // The offline period's timer lets go of its will now.
                existing.changed();
                return Ok(Attached {
                    session: existing,
                    present: true,
                    previous,
                    discarded: None,
                });
            }
            // MQTT-3.1.2-4: Clean Start discards the existing session; so
            // does the id's own principal finding someone else's there.
            previous = existing.lock().conn.take();
            sessions.remove(client_id);
            drop(sessions);
            discarded = self.end(&existing);
            sessions = self.sessions();
        }
        let session = Arc::new(Session::new(
            client_id.clone(),
            owner.clone(),
            limits,
            self.queue.clone(),
        ));
        session.lock().conn = Some(ctl);
        sessions.insert(client_id.clone(), session.clone());
        metrics::sessions(1.0);
        Ok(Attached {
            session,
            present: false,
            previous,
            discarded,
        })
    }

    /// A new session of `client` (its own owner) on a test connection,
    /// queueing at most `messages` while it is not read.
    #[cfg(test)]
    pub(crate) fn attach_for_test(&self, client: &str, messages: usize) -> Arc<Session> {
        let client: Arc<str> = Arc::from(client);
        self.attach(
            &client,
            &client,
            true,
            ConnControl::new(1),
            QueueLimits::messages(messages),
        )
        .unwrap()
        .session
    }

    /// The connection `conn_id` lets go of `session`.
    pub(crate) fn detach(&self, session: &Arc<Session>, conn_id: u64, expiry: u32) -> Detached {
        let mut sessions = self.sessions();
        let mut st = session.lock();
        if st.conn.as_ref().is_none_or(|c| c.id != conn_id) {
            // A Clean Start takeover discarded the session before this
            // connection let go: for its will, the session has ended.
            return match st.ended {
                true => Detached::Ended,
                false => Detached::NotCurrent,
            };
        }
        st.conn = None;
        let generation = st.generation;
        drop(st);
        // Nothing drains the queue now: publishers stop waiting for it.
        session.stop_holding_back();
        if expiry > 0 {
            return Detached::Kept { generation };
        }
        remove_if_current(&mut sessions, session);
        drop(sessions);
        // Write-behind: nobody waits for a session ending at disconnect.
        drop(self.end(session));
        Detached::Ended
    }

    /// Ends `session` if it is still offline in the same `generation`
    /// (the Session Expiry Interval ran out, 3.1.2.11.2). Returns whether
    /// it ended.
    pub(crate) fn expire(&self, session: &Arc<Session>, generation: u64) -> bool {
        let mut sessions = self.sessions();
        {
            let st = session.lock();
            if st.conn.is_some() || st.generation != generation || st.ended {
                return false;
            }
        }
        remove_if_current(&mut sessions, session);
        drop(sessions);
        drop(self.end(session));
        true
    }

    /// Takes `session` out of this node without ending it in the store:
    /// another node of the cluster took it over and loads it from there.
    /// Its subscriptions leave the index and its timers (expiry, delayed
    /// will) find it moved on.
    pub(crate) fn forget(&self, session: &Arc<Session>) {
        remove_if_current(&mut self.sessions(), session);
        let subs = {
            let mut st = session.lock();
            if st.ended {
                return;
            }
            st.ended = true;
            st.generation += 1;
            st.conn = None;
            st.pending.clear();
            st.inflight.clear();
            std::mem::take(&mut st.subscriptions)
        };
        session.changed();
        metrics::sessions(-1.0);
        session.stop_holding_back();
        let mut index = write(&self.index);
        for filter in subs.keys() {
            self.remove_from(&mut index, filter, session.client_id());
        }
    }

    /// Discards a session that is no longer in `sessions`: its
    /// subscriptions leave the index and its queue is dropped; a
    /// persistent one is deleted from the store (what comes back says
    /// when that is durable).
    fn end(&self, session: &Arc<Session>) -> Option<crate::store::Durability> {
        let (subs, orphans, durable) = {
            let mut st = session.lock();
            if st.ended {
                return None;
            }
            st.ended = true;
            session.changed();
            let orphans = st.take_shared(None);
            st.pending.clear();
            st.inflight.clear();
            // A clean session's stored will row goes with it too.
            (
                std::mem::take(&mut st.subscriptions),
                orphans,
                st.durable || st.will_stored,
            )
        };
        metrics::sessions(-1.0);
        session.stop_holding_back();
        {
            let mut index = write(&self.index);
            for filter in subs.keys() {
                self.remove_from(&mut index, filter, session.client_id());
            }
        }
        let gone = match (durable, self.session_store()) {
            (true, Some(store)) => store.end(&self.id, session.client_id()),
            _ => None,
        };
        self.redistribute(orphans);
        gone
    }

    /// Gives deliveries a leaving shared-subscription member had not
    /// completed to the group's other members (4.8.2).
    fn redistribute(&self, orphans: Vec<Delivery>) {
        for d in orphans {
            let Some(filter) = d.shared else {
                continue;
            };
            let Some(sub) = read(&self.index).pick_shared(&filter) else {
                continue;
            };
            let message = d.message.clone();
            // Write-behind: the publisher was acknowledged long ago.
            drop(self.queue(
                &message,
                vec![(
                    sub.session.clone(),
                    Delivery {
                        qos: d.message.qos.min(sub.options.qos),
                        retain: d.retain,
                        subscription_ids: sub.id.into_iter().collect(),
                        shared: Some(filter),
                        message: d.message,
                        seq: None,
                    },
                )],
                None,
            ));
        }
    }

    /// Adds or replaces a subscription; returns whether it existed.
    pub(crate) fn subscribe(
        &self,
        session: &Arc<Session>,
        filter: &TopicFilter,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> bool {
        // Without a cap, inserting cannot be refused.
        self.insert(session, filter, options, id, None)
            .map(|(existed, _)| existed)
            .unwrap_or_default()
    }

    fn insert(
        &self,
        session: &Arc<Session>,
        filter: &TopicFilter,
        options: SubscriptionOptions,
        id: Option<u32>,
        catch_all_cap: Option<u32>,
    ) -> Result<(bool, Option<crate::store::Durability>), TopicRefusal> {
        let mut index = write(&self.index);
        if let Some(max) = catch_all_cap
            && crate::hygiene::is_catch_all(filter)
            && !index.contains(filter, session.client_id())
            && index.catch_all() >= usize::try_from(max).unwrap_or(usize::MAX)
        {
            return Err(TopicRefusal::CatchAllLimit { max });
        }
        // Told under the index lock, so the interconnect sees the changes
        // in the order they happened.
        let mut routed = None;
        if let Some(Watcher(ic)) = self.interconnect.get()
            && !index.is_live(filter)
        {
            routed = ic.interest(&self.id, filter, true);
        }
        let existed = index.insert(
            filter,
            session.client_id(),
            Subscriber {
                session: session.clone(),
                options,
                id,
            },
        );
        drop(index);
        session
            .lock()
            .subscriptions
            .insert(filter.clone(), SubscriptionEntry { options, id });
        if !existed {
            self.count_subscriptions(true);
        }
        Ok((existed, routed))
    }

    /// Removes a subscription; returns whether it existed.
    pub(crate) fn unsubscribe(&self, session: &Arc<Session>, filter: &TopicFilter) -> bool {
        let orphans = {
            let mut st = session.lock();
            st.subscriptions.remove(filter);
            if filter.shared().is_some() {
                st.take_shared(Some(filter))
            } else {
                Vec::new()
            }
        };
        let existed = self.remove_from(&mut write(&self.index), filter, session.client_id());
        self.forget_taken(session, &orphans);
        self.redistribute(orphans);
        existed
    }

    /// Removes the subscriptions of `session` that `allowed` refuses (a
    /// policy changed), and the queued messages only they matched; returns
    /// the filters removed.
    pub(crate) fn revoke_subscriptions(
        &self,
        session: &Arc<Session>,
        allowed: impl Fn(&TopicFilter) -> bool,
    ) -> Vec<TopicFilter> {
        let filters: Vec<TopicFilter> = session.lock().subscriptions.keys().cloned().collect();
        let revoked: Vec<TopicFilter> = filters.into_iter().filter(|f| !allowed(f)).collect();
        if revoked.is_empty() {
            return revoked;
        }
        let store = self.session_store().filter(|_| session.lock().durable);
        for filter in &revoked {
            self.unsubscribe(session, filter);
            metrics::subscription_revoked();
            // A persistent session must not get them back after a restart;
            // written behind, as the broker's own decision needs no ack.
            if let Some(store) = store {
                drop(store.subscription(&self.id, session.client_id(), filter, None));
            }
        }
        let mut dropped = Vec::new();
        {
            let mut st = session.lock();
            let kept: Vec<TopicFilter> = st.subscriptions.keys().cloned().collect();
            st.pending.retain(|d| {
                let keep = match &d.shared {
                    Some(group) => kept.contains(group),
                    None => kept.iter().any(|f| f.matches(&d.message.topic)),
                };
                if !keep && d.seq.is_some() {
                    dropped.push(d.clone());
                }
                keep
            });
        }
        self.forget_taken(session, &dropped);
        revoked
    }

    /// Every session (connected or not).
    pub(crate) fn all_sessions(&self) -> Vec<Arc<Session>> {
        self.sessions().values().cloned().collect()
    }

    /// Collects the subscriptions matching `topic`.
    pub(crate) fn matches(&self, topic: &mqtt::TopicName, out: &mut Vec<crate::index::Matched>) {
        read(&self.index).matches(topic, out);
    }

    /// Sets or deletes a retained message.
    pub(crate) fn set_retained(
        &self,
        topic: &mqtt::TopicName,
        message: Option<Arc<crate::message::Message>>,
    ) -> Change {
        let change = write(&self.retained).set(topic, message);
        match change {
            Change::Added => metrics::retained(1.0),
            Change::Removed => metrics::retained(-1.0),
            Change::Replaced | Change::Unchanged => {}
        }
        change
    }

    /// Puts back a retained message loaded from the store, counted for
    /// `owner` and the tenant but never refused: it was accepted once, and
    /// limits lowered since only stop new ones.
    pub(crate) fn load_retained(
        &self,
        topic: &mqtt::TopicName,
        message: Arc<crate::message::Message>,
        owner: Option<Arc<str>>,
    ) {
        let change = write(&self.retained).set_checked(topic, Some(message), owner, None);
        if let Ok(Change::Added) = change {
            metrics::retained(1.0);
        }
    }

    /// Sets a retained message held to `quota` for `owner` and the tenant.
    pub(crate) fn set_retained_checked(
        &self,
        topic: &mqtt::TopicName,
        message: Arc<crate::message::Message>,
        owner: Option<Arc<str>>,
        quota: &RetainedQuota,
    ) -> Result<Change, QuotaRefusal> {
        let change = write(&self.retained).set_checked(topic, Some(message), owner, Some(quota));
        if let Err(e) = &change {
            metrics::retained_quota_refused(&self.id, e.scope());
        }
        if let Ok(Change::Added) = change {
            metrics::retained(1.0);
        }
        change
    }

    /// Drops retained messages found expired by a lookup; returns the
    /// topics actually removed.
    pub(crate) fn prune_retained(
        &self,
        topics: &[mqtt::TopicName],
        now: Instant,
    ) -> Vec<mqtt::TopicName> {
        let mut trie = write(&self.retained);
        let removed: Vec<_> = topics
            .iter()
            .filter(|t| trie.remove_expired(t, now))
            .cloned()
            .collect();
        drop(trie);
        for _ in &removed {
            metrics::retained(-1.0);
        }
        removed
    }

    /// Retained messages for a new subscription.
    pub(crate) fn retained_for(&self, filter: &TopicFilter, now: Instant, cap: usize) -> Lookup {
        read(&self.retained).lookup(filter, now, cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mqtt::QoS;

    fn tenant() -> Tenant {
        Tenant::new(TenantId::parse("acme").unwrap())
    }

    fn limits() -> crate::session::QueueLimits {
        crate::session::QueueLimits::messages(10)
    }

    /// `session` subscribes to `filter` at QoS 1.
    fn subscribe(t: &Tenant, session: &Arc<Session>, filter: &str) {
        t.subscribe(
            session,
            &TopicFilter::parse(filter).unwrap(),
            SubscriptionOptions::new(QoS::AtLeastOnce),
            None,
        );
    }

    /// Connection `conn` of principal p1 takes up its session c1.
    fn attach_c1(t: &Tenant, conn: u64, clean_start: bool) -> Attached {
        t.attach(
            &Arc::from("c1"),
            &Arc::from("p1"),
            clean_start,
            ConnControl::new(conn),
            limits(),
        )
        .unwrap()
    }

    #[test]
    fn persistent_session_survives_and_clean_start_discards() {
        let t = tenant();
        let a = attach_c1(&t, 1, false);
        assert!(!a.present);
        subscribe(&t, &a.session, "a/#");
        assert!(matches!(t.detach(&a.session, 1, 60), Detached::Kept { .. }));
        let b = attach_c1(&t, 2, false);
        assert!(b.present);
        assert!(Arc::ptr_eq(&a.session, &b.session));
        assert_eq!(t.stats().subscriptions, 1);
        // The old connection's late detach changes nothing.
        assert!(matches!(t.detach(&a.session, 1, 0), Detached::NotCurrent));
        let c = attach_c1(&t, 3, true);
        assert!(!c.present);
        assert_eq!(c.previous.map(|p| p.id), Some(2));
        assert_eq!(t.stats().subscriptions, 0);
        // The connection taken over by a Clean Start lost its session: its
        // will (even a delayed one) is due now.
        assert!(matches!(t.detach(&b.session, 2, 60), Detached::Ended));
        assert!(b.session.lock().ended);
        assert!(matches!(t.detach(&c.session, 3, 0), Detached::Ended));
        assert_eq!(t.stats().sessions, 0);
    }

    #[test]
    fn a_session_is_resumed_only_by_its_owner_or_the_id_s_own_principal() {
        let t = tenant();
        let id: Arc<str> = Arc::from("sensor-2");
        let backend: Arc<str> = Arc::from("service:b");
        let other: Arc<str> = Arc::from("service:c");
        let a = t
            .attach(&id, &backend, false, ConnControl::new(1), limits())
            .unwrap();
        subscribe(&t, &a.session, "#");
        // Another credential neither resumes nor takes over, with or
        // without Clean Start; the owner stays connected.
        for clean in [false, true] {
            let refused = t.attach(&id, &other, clean, ConnControl::new(2), limits());
            assert!(matches!(refused, Err(NotOwner::Foreign { ref owner }) if *owner == backend));
            assert!(a.session.is_online());
        }
        // The device whose id it is discards the foreign session.
        let d = t
            .attach(&id, &id, false, ConnControl::new(3), limits())
            .unwrap();
        assert!(!d.present);
        assert_eq!(d.previous.map(|p| p.id), Some(1));
        assert!(a.session.lock().ended);
        assert_eq!(t.stats().subscriptions, 0);
        assert_eq!(d.session.owner(), &id);
        // And the backend cannot get it back.
        assert!(
            t.attach(&id, &backend, false, ConnControl::new(4), limits())
                .is_err()
        );
    }

    #[test]
    fn expiry_only_ends_the_same_offline_period() {
        let t = tenant();
        let a = attach_c1(&t, 1, false);
        let Detached::Kept { generation } = t.detach(&a.session, 1, 60) else {
            panic!("kept")
        };
        let _b = attach_c1(&t, 2, false);
        assert!(!t.expire(&a.session, generation));
        let Detached::Kept { generation } = t.detach(&a.session, 2, 60) else {
            panic!("kept")
        };
        assert!(t.expire(&a.session, generation));
        assert_eq!(t.stats().sessions, 0);
    }
}
