//! [`Interconnect`]: how the broker meets the other nodes of a cluster
//! (issue 15) without knowing what carries the traffic (the platform's
//! NATS router in `cluster::routing`).
//!
//! - interest: the node tells when a namespace's set of distinct local
//!   filters changes (the first subscription of a filter, shared ones by
//!   their inner filter, comes or the last one goes), so that only nodes
//!   with a matching subscription receive a message;
//! - outbound: every message published on this node (after the ACL, the
//!   limits and the retained update) is handed over once, and so is every
//!   retained change;
//! - inbound: [`Broker::deliver_remote`] delivers another node's message
//!   to the local subscriptions of one filter with every MQTT semantic
//!   (QoS downgrade, retain as published, No Local by the origin's client
//!   id, subscription identifiers, expiry) and is never handed back out;
//!   [`Broker::apply_remote_retained`] updates this node's retained cache
//!   only (the origin node stored it durably).
//!
//! Without an interconnect (a single node) none of this costs anything but
//! one `Option` check per publish and per subscription change.

use std::sync::Arc;

use bytes::Bytes;
use mqtt::{Properties, QoS, TopicFilter, TopicName};
use tokio::time::Instant;

use crate::TenantId;
use crate::broker::Broker;
use crate::message::Message;
use crate::store::Durability;

/// Where the broker hands cluster traffic over. Every method is called on
/// the publish or subscribe path, some under a tenant's index lock: it must
/// not block (queue the work).
pub trait Interconnect: Send + Sync + 'static {
    /// Namespace `tenant` ([`TenantId::platform`] for the platform
    /// namespace, whose filters' first level is a tenant id) now has
    /// (`present`) or no longer has a local non-shared subscription to
    /// `filter`, or for `$share/{group}/{f}` a member of that group. Calls
    /// for one namespace come in the order the changes happened.
    ///
    /// A shared group's messages, those published on this node included,
    /// reach its members here only through [`Broker::deliver_remote`], so
    /// that the interconnect can give each to one member cluster-wide.
    ///
    /// For a new interest, what may come back is what the SUBACK waits
    /// for: once it resolves, other nodes' messages reach the filter.
    fn interest(
        &self,
        tenant: &TenantId,
        filter: &TopicFilter,
        present: bool,
    ) -> Option<Durability>;

    /// What resolves once every interest told before this call is in
    /// force, so that other nodes' next messages reach it (sessions taken
    /// over from a dead node, before what was missed is replayed). `None`:
    /// nothing to wait for.
    fn settled(&self) -> Option<Durability> {
        None
    }

    /// The id of the next message published on this node (set on it
    /// before it is routed, so local copies carry it too); `None`: this
    /// interconnect does not number messages.
    fn next_id(&self) -> Option<MessageId> {
        None
    }

    /// A message published on this node in `tenant`. For a QoS 1/2 one,
    /// what may come back is what the publisher's PUBACK / PUBREC waits
    /// for besides this node's own stores: the message made durable where
    /// the other nodes can find it again (the cluster's journal). It must
    /// resolve, with an error if need be, within a bound. QoS 0 messages
    /// never wait.
    fn forward(&self, tenant: &TenantId, message: &Outbound<'_>) -> Option<Durability>;

    /// This node set (`Some`, a retained message) or deleted (`None`) the
    /// retained message of `topic` in `tenant`.
    fn retained_changed(
        &self,
        tenant: &TenantId,
        topic: &TopicName,
        retained: Option<&Outbound<'_>>,
    );
}

/// A routed message's id, unique across a cluster: the run of the node
/// that published it (`origin`, random per process) and that run's count
/// of published messages (`seq`, increasing in publish order). A session
/// that holds a message with an id does not take a second copy of it
/// (a takeover's overlap, a replay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    /// The origin node's run.
    pub origin: u64,
    /// Its order on that run.
    pub seq: u64,
}

impl MessageId {
    /// Its 16 bytes (origin then seq, big-endian), as the wire envelope
    /// and the session store keep it.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.origin.to_be_bytes());
        out[8..].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    /// From [`MessageId::to_bytes`]; `None` unless exactly 16 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<MessageId> {
        let bytes: &[u8; 16] = bytes.try_into().ok()?;
        let (origin, seq) = bytes.split_at(8);
        Some(MessageId {
            origin: u64::from_be_bytes(origin.try_into().ok()?),
            seq: u64::from_be_bytes(seq.try_into().ok()?),
        })
    }
}

/// The routed QoS 2 messages a persistent session completed (its client
/// sent PUBREC), as the session store held them when the session was
/// loaded here (a restart, a dead node's sessions adopted, a takeover): a
/// replay of the cluster's journal into the session skips them, so that a
/// message completed before its node died is not delivered again as a
/// new one (exactly once). Not grown by what completes here later: the
/// store keeps those for the next load, and memory stays flat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
// Boxed: 8 bytes in every session while empty (nearly always), not 48.
#[allow(clippy::box_collection)]
pub struct Completed(Option<Box<std::collections::HashSet<MessageId>>>);

impl Completed {
    /// Whether the session completed `id`.
    pub fn contains(&self, id: MessageId) -> bool {
        self.0.as_ref().is_some_and(|ids| ids.contains(&id))
    }

    /// Adds `id`.
    pub fn insert(&mut self, id: MessageId) {
        self.0.get_or_insert_default().insert(id);
    }

    /// The ids, in no order.
    pub fn iter(&self) -> impl Iterator<Item = MessageId> + '_ {
        self.0.iter().flat_map(|ids| ids.iter().copied())
    }
}

impl FromIterator<MessageId> for Completed {
    fn from_iter<I: IntoIterator<Item = MessageId>>(ids: I) -> Completed {
        let ids: std::collections::HashSet<MessageId> = ids.into_iter().collect();
        Completed((!ids.is_empty()).then(|| Box::new(ids)))
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}-{}", self.origin, self.seq)
    }
}

/// A message as it leaves this node: what another node needs to deliver
/// it with the same semantics.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    /// Its id across the cluster, if the interconnect numbered it.
    pub id: Option<MessageId>,
    /// The topic in its tenant.
    pub topic: &'a TopicName,
    /// The application message.
    pub payload: &'a Bytes,
    /// As published (each subscription downgrades it).
    pub qos: QoS,
    /// The RETAIN flag as published (for Retain As Published).
    pub retain: bool,
    /// Pass-through properties (payload format, content type, response
    /// topic, correlation data, user properties); no expiry, alias or
    /// subscription identifiers.
    pub properties: &'a Properties,
    /// Seconds of Message Expiry Interval left, if it has one.
    pub expiry: Option<u32>,
    /// The publishing client's id, for No Local.
    pub origin: Option<&'a str>,
    /// Whether `origin` is a platform namespace client.
    pub platform_origin: bool,
    /// The identity a retained message counts against (its quota).
    pub owner: Option<&'a str>,
}

/// Another node's message, as [`Broker::deliver_remote`] and
/// [`Broker::apply_remote_retained`] take it.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// Its id across the cluster, if its node numbered it.
    pub id: Option<MessageId>,
    /// The topic in its tenant.
    pub topic: TopicName,
    /// The application message.
    pub payload: Bytes,
    /// As published.
    pub qos: QoS,
    /// The RETAIN flag as published.
    pub retain: bool,
    /// Pass-through properties; `message_expiry_interval` is the time left.
    pub properties: Properties,
    /// The publishing client's id, for No Local.
    pub origin: Option<String>,
    /// Whether `origin` is a platform namespace client.
    pub platform_origin: bool,
    /// The identity a retained message counts against.
    pub owner: Option<String>,
}

impl Message {
    /// This message as it leaves the node.
    pub(crate) fn outbound<'a>(&'a self, owner: Option<&'a str>, now: Instant) -> Outbound<'a> {
        Outbound {
            id: self.id,
            topic: &self.topic,
            payload: &self.payload,
            qos: self.qos,
            retain: self.retain,
            properties: self.properties(),
            expiry: self.remaining_expiry(now),
            origin: self.origin.as_deref(),
            platform_origin: self.platform_origin,
            owner,
        }
    }

    fn inbound(m: Inbound, topic: TopicName, now: Instant) -> Message {
        let mut message = Message::new(
            topic,
            m.payload,
            m.qos,
            m.retain,
            m.properties,
            m.origin.map(Arc::from),
            now,
        );
        message.platform_origin = m.platform_origin;
        message.id = m.id;
        message
    }
}

/// What a remote delivery's caller waits for before the next message
/// ([`Broker::deliver_remote_held`]): every full subscriber it reached has
/// drained below its low-water mark, gone, or been handled as a slow
/// consumer.
pub struct HeldBack(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>);

impl std::future::Future for HeldBack {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for HeldBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeldBack")
    }
}

impl Broker {
    /// Delivers another node's message in `tenant` to this node's
    /// subscriptions to `filter` in `namespace` (the tenant itself, or
    /// [`TenantId::platform`] with `filter` over mounted topics): the
    /// filter whose interest brought it here, so a message matching several
    /// of this node's filters reaches each subscription once. For a
    /// `$share/` filter, one member of the group gets it (also for a
    /// message published on this node). It is not
    /// forwarded again, stored or announced as an event (its node did
    /// that). Returns how many sessions it was queued for.
    pub fn deliver_remote(
        &self,
        namespace: &TenantId,
        filter: &TopicFilter,
        tenant: &TenantId,
        message: Inbound,
    ) -> usize {
        self.deliver_remote_held(namespace, filter, tenant, message)
            .0
    }

    /// [`Broker::deliver_remote`], and what the caller waits for before
    /// it takes the next message of this filter from the interconnect:
    /// `Some` when a subscriber it reached is full (its queue past its
    /// high-water mark). As a local publisher stops reading its socket
    /// (`backpressure`), the interconnect then stops taking that
    /// filter's messages, so a burst from another node waits in the
    /// interconnect's buffers instead of overflowing the subscriber's
    /// queue; the wait is bounded by the slow-consumer timeout, as for a
    /// local publisher, and holds up only this tenant's filter.
    pub fn deliver_remote_held(
        &self,
        namespace: &TenantId,
        filter: &TopicFilter,
        tenant: &TenantId,
        message: Inbound,
    ) -> (usize, Option<HeldBack>) {
        let Some((ns, topic)) = self.arriving(namespace, tenant, &message.topic) else {
            return (0, None);
        };
        // MQTT-4.7.2-1 ($ topics and leading wildcards) is not NATS's rule;
        // and a subject is only trusted as far as the topic matches.
        let inner = filter.shared().map(|s| s.filter);
        if !inner.as_ref().unwrap_or(filter).matches(&topic) {
            return (0, None);
        }
        // Not counted as received here (its node did): the router counts
        // what crosses nodes.
        let message = Arc::new(Message::inbound(message, topic, Instant::now()));
        let mut matched = Vec::new();
        ns.matches_at(filter, &mut matched);
        // Written behind for persistent sessions: the publisher on the
        // other node was acknowledged by its own node's rule.
        let mut full = Vec::new();
        let delivered = crate::router::route_matched(&ns, &message, matched, Some(&mut full)).0;
        if full.is_empty() {
            return (delivered, None);
        }
        let config = self.config();
        let drained = crate::backpressure::until_drained(
            full,
            config.slow_consumer_timeout,
            config.slow_consumer_policy,
        );
        (delivered, Some(HeldBack(Box::pin(drained))))
    }

    /// Delivers a message read back from the cluster's journal (a replay,
    /// `cluster::journal`) in `tenant` to those of the sessions
    /// `client_ids` of `namespace` this node holds that do not hold it
    /// already (same [`MessageId`]): one copy per session through all its
    /// matching subscriptions, as for a local publish, and to the first
    /// of them in each shared group that matches. Written behind to the
    /// session store (the journal holds it), and neither forwarded nor
    /// announced again. Returns how many sessions it was queued for.
    pub fn deliver_replayed(
        &self,
        namespace: &TenantId,
        client_ids: &[String],
        tenant: &TenantId,
        message: Inbound,
    ) -> usize {
        let Some((ns, topic)) = self.arriving(namespace, tenant, &message.topic) else {
            return 0;
        };
        let message = Arc::new(Message::inbound(message, topic, Instant::now()));
        let mut matched = Vec::new();
        let mut groups: Vec<TopicFilter> = Vec::new();
        for client_id in client_ids {
            let Some(session) = ns.session(client_id) else {
                continue;
            };
            let st = session.lock();
            if message.id.is_some_and(|id| st.holds(id)) {
                continue;
            }
            for (filter, entry) in &st.subscriptions {
                let shared = filter.shared();
                if !shared
                    .as_ref()
                    .map_or(filter, |s| &s.filter)
                    .matches(&message.topic)
                    || (shared.is_some() && groups.contains(filter))
                {
                    continue;
                }
                if shared.is_some() {
                    groups.push(filter.clone());
                }
                matched.push(crate::index::Matched {
                    subscriber: crate::index::Subscriber {
                        session: session.clone(),
                        options: entry.options,
                        id: entry.id,
                    },
                    shared: shared.map(|_| filter.clone()),
                });
            }
        }
        crate::router::route_matched(&ns, &message, matched, None).0
    }

    /// Namespace `namespace`, if in memory, and `tenant`'s `topic` as it
    /// sees it: the tenant's own, or mounted under the tenant id in the
    /// platform namespace; `None` for another tenant's, or one the
    /// platform does not mount.
    fn arriving(
        &self,
        namespace: &TenantId,
        tenant: &TenantId,
        topic: &TopicName,
    ) -> Option<(Arc<crate::tenant::Tenant>, TopicName)> {
        let ns = self.existing(namespace)?;
        let topic = if namespace.is_platform() {
            crate::platform::mount(tenant, topic)?
        } else {
            (namespace == tenant).then(|| topic.clone())?
        };
        Some((ns, topic))
    }

    /// Applies another node's retained change of `topic` in `tenant` to
    /// this node's retained cache, if the tenant is in memory here (one
    /// loaded later reads the store, where the origin node wrote it).
    /// Neither stored, routed nor announced again.
    pub fn apply_remote_retained(
        &self,
        tenant: &TenantId,
        topic: &TopicName,
        retained: Option<Inbound>,
    ) {
        let Some(t) = self.existing(tenant).filter(|t| !t.id.is_platform()) else {
            return;
        };
        match retained {
            Some(m) => {
                let owner = m.owner.as_deref().map(Arc::from);
                let message = Message::inbound(m, topic.clone(), Instant::now());
                t.load_retained(topic, Arc::new(message), owner);
            }
            None => {
                t.set_retained(topic, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{ConnControl, QueueLimits, Session};
    use crate::tenant::Tenant;
    use mqtt::SubscriptionOptions;
    use mqtt::testing::filter;
    use std::sync::Mutex;

    /// A forwarded message's topic, origin and expiry left.
    type Forwarded = (String, Option<String>, Option<u32>);

    /// What the broker told: interest changes and forwarded messages.
    #[derive(Default)]
    struct Told {
        interest: Mutex<Vec<(String, bool)>>,
        forwarded: Mutex<Vec<Forwarded>>,
        retained: Mutex<Vec<(String, bool)>>,
    }

    impl Interconnect for Told {
        fn interest(
            &self,
            _: &TenantId,
            filter: &TopicFilter,
            present: bool,
        ) -> Option<Durability> {
            let entry = (filter.as_str().to_owned(), present);
            self.interest.lock().unwrap().push(entry);
            None
        }
        fn forward(&self, _: &TenantId, m: &Outbound<'_>) -> Option<Durability> {
            let entry = (
                m.topic.as_str().to_owned(),
                m.origin.map(str::to_owned),
                m.expiry,
            );
            self.forwarded.lock().unwrap().push(entry);
            None
        }
        fn retained_changed(&self, _: &TenantId, topic: &TopicName, r: Option<&Outbound<'_>>) {
            let entry = (topic.as_str().to_owned(), r.is_some());
            self.retained.lock().unwrap().push(entry);
        }
    }

    /// A broker whose interconnect records what it is told, and tenant
    /// `acme`'s id.
    fn clustered() -> (Arc<Told>, TenantId, Broker) {
        let told = Arc::new(Told::default());
        let id = TenantId::parse("acme").unwrap();
        let b = Broker::builder(Arc::new(crate::AllowAnonymous { tenant: id.clone() }))
            .interconnect(told.clone())
            .build();
        (told, id, b)
    }

    fn session(t: &Tenant, id: &str) -> Arc<Session> {
        t.attach(
            &Arc::from(id),
            &Arc::from(id),
            true,
            ConnControl::new(1),
            QueueLimits::messages(10),
        )
        .unwrap()
        .session
    }

    /// A retained message from client `origin` on another node.
    fn remote(topic: &str, qos: QoS, properties: Properties, origin: &str) -> Inbound {
        Inbound {
            id: None,
            topic: TopicName::parse(topic).unwrap(),
            payload: Bytes::from_static(b"p"),
            qos,
            retain: true,
            properties,
            origin: Some(origin.to_owned()),
            platform_origin: false,
            owner: None,
        }
    }

    #[tokio::test]
    async fn interest_is_told_for_the_first_and_last_subscription_of_a_filter() {
        let (told, id, b) = clustered();
        let t = b.tenant(&id).await.unwrap();
        let (s1, s2) = (session(&t, "c1"), session(&t, "c2"));
        let q0 = SubscriptionOptions::new(QoS::AtMostOnce);
        t.subscribe(&s1, &filter("a/+"), q0, None);
        t.subscribe(&s2, &filter("a/+"), q0, None);
        t.subscribe(&s2, &filter("$share/g/a/+"), q0, None);
        t.subscribe(&s1, &filter("$share/g/b"), q0, None);
        t.unsubscribe(&s1, &filter("a/+"));
        t.unsubscribe(&s2, &filter("a/+"));
        // A local publish reaches the shared group only through the
        // interconnect (which picks one member cluster-wide), and counts.
        let m = remote("a/x", QoS::AtMostOnce, Properties::default(), "p");
        let local = Arc::new(Message::inbound(m.clone(), m.topic.clone(), Instant::now()));
        assert_eq!(crate::router::route(&t, &local), 1);
        assert!(s2.lock().pending.is_empty());
        assert_eq!(b.deliver_remote(&id, &filter("$share/g/a/+"), &id, m), 1);
        assert_eq!(s2.lock().pending.len(), 1);
        let (s2_gone, _) = t.end_session("c2");
        assert!(s2_gone);
        t.end_session("c1");
        let told: Vec<(String, bool)> = told.interest.lock().unwrap().clone();
        let want = [
            ("a/+", true),
            ("$share/g/a/+", true),
            ("$share/g/b", true),
            ("a/+", false),
            ("$share/g/a/+", false),
            ("$share/g/b", false),
        ];
        let want: Vec<(String, bool)> = want.iter().map(|(f, p)| (f.to_string(), *p)).collect();
        assert_eq!(told, want);
    }

    #[tokio::test]
    async fn a_removed_tenant_withdraws_the_interest_of_its_sessions() {
        let (told, id, b) = clustered();
        let t = b.tenant(&id).await.unwrap();
        let q1 = SubscriptionOptions::new(QoS::AtLeastOnce);
        let online = session(&t, "online");
        t.subscribe(&online, &filter("a/#"), q1, None);
        // A persistent session with no connection keeps its interest.
        let offline = session(&t, "offline");
        t.subscribe(&offline, &filter("b/+"), q1, None);
        t.detach(&offline, 1, 3600);
        b.remove_tenant(&id);
        let mut told: Vec<(String, bool)> = told.interest.lock().unwrap().clone();
        told.sort();
        let want: Vec<(String, bool)> =
            [("a/#", false), ("a/#", true), ("b/+", false), ("b/+", true)]
                .iter()
                .map(|(f, p)| (f.to_string(), *p))
                .collect();
        assert_eq!(told, want);
    }

    // Paused: the expiry left is read in whole seconds.
    #[tokio::test(start_paused = true)]
    async fn published_messages_and_retained_changes_are_forwarded_once() {
        let (told, id, b) = clustered();
        let props = Properties {
            message_expiry_interval: Some(60),
            ..Properties::default()
        };
        let topic = TopicName::parse("a/b").unwrap();
        b.publish(
            &id,
            topic.clone(),
            Bytes::from_static(b"x"),
            QoS::AtLeastOnce,
            true,
            props,
        )
        .await
        .unwrap();
        b.publish(
            &id,
            topic,
            Bytes::new(),
            QoS::AtMostOnce,
            true,
            Properties::default(),
        )
        .await
        .unwrap();
        let forwarded = told.forwarded.lock().unwrap().clone();
        assert_eq!(forwarded.len(), 2);
        assert_eq!(forwarded[0].0, "a/b");
        assert_eq!(forwarded[0].2, Some(60));
        assert_eq!(
            *told.retained.lock().unwrap(),
            [("a/b".to_owned(), true), ("a/b".to_owned(), false)]
        );
        // What comes from another node is neither forwarded nor stored again.
        let t = b.tenant(&id).await.unwrap();
        let s = session(&t, "c");
        t.subscribe(
            &s,
            &filter("a/#"),
            SubscriptionOptions::new(QoS::AtLeastOnce),
            None,
        );
        let inbound = remote("a/c", QoS::AtLeastOnce, Properties::default(), "elsewhere");
        assert_eq!(
            b.deliver_remote(&id, &filter("a/#"), &id, inbound.clone()),
            1
        );
        b.apply_remote_retained(&id, &inbound.topic, Some(inbound.clone()));
        assert_eq!(told.forwarded.lock().unwrap().len(), 2);
        assert_eq!(told.retained.lock().unwrap().len(), 2);
        assert_eq!(t.stats().retained, 1);
        b.apply_remote_retained(&id, &inbound.topic, None);
        assert_eq!(t.stats().retained, 0);
    }

    /// A QoS 1 message numbered `seq` by node run `origin`.
    fn numbered(topic: &str, origin: u64, seq: u64) -> Arc<Message> {
        let mut m = remote(topic, QoS::AtLeastOnce, Properties::default(), "p");
        m.retain = false;
        m.id = Some(MessageId { origin, seq });
        Arc::new(Message::inbound(m.clone(), m.topic, Instant::now()))
    }

    fn ids_of(s: &Session) -> Vec<(Option<u64>, u64)> {
        let mut st = s.lock();
        st.pending
            .iter_mut()
            .map(|d| (d.seq, d.message.id.map_or(0, |id| id.seq)))
            .collect()
    }

    /// A session moving here from another node (issue 15): what its
    /// stand-in catches meanwhile follows the stored queue, less what the
    /// stored queue already has; numbered after it and stored too.
    #[tokio::test]
    async fn a_stand_in_keeps_what_came_meanwhile_after_the_stored_queue_once() {
        use crate::session_store::{MemorySessionStore, SessionStore, StoredSubscription, testing};
        let id = TenantId::parse("acme").unwrap();
        let store = Arc::new(MemorySessionStore::new());
        let t = Tenant::new(id.clone());
        t.set_session_store(store.clone());
        // As the other node left it: messages 1 and 2 of run 7 queued.
        drop(store.connect(&id, &testing::record("mover"), true));
        let sub = StoredSubscription {
            filter: filter("a/#"),
            options: SubscriptionOptions::new(QoS::AtLeastOnce),
            id: None,
        };
        drop(store.subscription(&id, "mover", &sub.filter, Some(&sub)));
        for seq in [1, 2] {
            let body = Arc::new(
                numbered("a/x", 7, seq)
                    .to_session_store(Instant::now(), std::time::SystemTime::now()),
            );
            let to = testing::queued_for("mover", seq - 1, QoS::AtLeastOnce);
            drop(store.enqueue(&id, &body, &[to]));
        }
        let before = store.load_session(&id, "mover").await.unwrap().unwrap();
        let limits = QueueLimits::messages(10);
        let (stand_in, _) = t.stand_in("mover", "mover", &before.subscriptions, limits);
        assert!(
            t.session("mover").is_none(),
            "a stand-in is not the session yet"
        );
        // Routed while the other node lets go: 2 (which it stored too), 3,
        // and one of this node's own.
        for m in [
            numbered("a/x", 7, 2),
            numbered("a/y", 7, 3),
            numbered("a/z", 9, 0),
        ] {
            assert_eq!(crate::router::route(&t, &m), 1);
        }
        let after = store.load_session(&id, "mover").await.unwrap();
        t.adopt("mover", after, limits, Some(stand_in.clone()));
        let session = t.session("mover").unwrap();
        assert!(Arc::ptr_eq(&session, &stand_in));
        assert_eq!(
            ids_of(&session),
            [(Some(0), 1), (Some(1), 2), (Some(2), 3), (Some(3), 0)]
        );
        assert_eq!(session.lock().next_seq, 4);
        // The caught ones are in the store, after the stored ones.
        let stored = store.load_session(&id, "mover").await.unwrap().unwrap();
        let seqs: Vec<(u64, Option<MessageId>)> =
            stored.queue.iter().map(|d| (d.seq, d.message.id)).collect();
        let run = |origin, seq| Some(MessageId { origin, seq });
        assert_eq!(
            seqs,
            [
                (0, run(7, 1)),
                (1, run(7, 2)),
                (2, run(7, 3)),
                (3, run(9, 0))
            ]
        );
        // Its subscription routes to it as the session now.
        assert_eq!(crate::router::route(&t, &numbered("a/w", 7, 4)), 1);
        assert_eq!(ids_of(&session).len(), 5);
    }

    #[tokio::test]
    async fn a_replayed_message_reaches_the_named_sessions_that_lack_it() {
        let id = TenantId::parse("acme").unwrap();
        let b = Broker::allow_anonymous(id.clone(), crate::Config::default());
        let t = b.tenant(&id).await.unwrap();
        let (named, other) = (session(&t, "named"), session(&t, "other"));
        let q1 = SubscriptionOptions::new(QoS::AtLeastOnce);
        t.subscribe(&named, &filter("a/+"), q1, Some(3));
        t.subscribe(&named, &filter("a/#"), q1, None);
        t.subscribe(&other, &filter("a/#"), q1, None);
        let message = |seq| {
            let mut m = remote("a/b", QoS::AtLeastOnce, Properties::default(), "p");
            m.id = Some(MessageId { origin: 1, seq });
            m
        };
        let names = ["named".to_owned(), "gone".to_owned()];
        // One copy for the session (both filters match), none for "other".
        assert_eq!(b.deliver_replayed(&id, &names, &id, message(5)), 1);
        assert_eq!(b.deliver_replayed(&id, &names, &id, message(5)), 0);
        assert_eq!(b.deliver_replayed(&id, &names, &id, message(6)), 1);
        assert_eq!(named.lock().pending.len(), 2);
        assert_eq!(named.lock().pending.front().unwrap().subscription_ids, [3]);
        assert!(other.lock().pending.is_empty());
        // Another tenant's message does not enter this one.
        let elsewhere = TenantId::parse("other").unwrap();
        assert_eq!(b.deliver_replayed(&id, &names, &elsewhere, message(7)), 0);
    }

    #[tokio::test]
    async fn a_remote_tenant_message_reaches_platform_subscribers_mounted() {
        let id = TenantId::parse("acme").unwrap();
        let b = Broker::allow_anonymous(id.clone(), crate::Config::default());
        let platform = b.existing(&TenantId::platform()).unwrap();
        let s = session(&platform, "backend");
        let all = filter("+/devices/#");
        platform.subscribe(&s, &all, SubscriptionOptions::new(QoS::AtLeastOnce), None);
        let m = remote(
            "devices/d1/up",
            QoS::AtLeastOnce,
            Properties::default(),
            "d1",
        );
        assert_eq!(
            b.deliver_remote(&TenantId::platform(), &all, &id, m.clone()),
            1
        );
        let topic = s.lock().pending.front().unwrap().message.topic.clone();
        assert_eq!(topic.as_str(), "acme/devices/d1/up");
        // A tenant's $ topics are not mounted.
        let system = remote("$SYS/x", QoS::AtLeastOnce, Properties::default(), "d1");
        let every = filter("#");
        platform.subscribe(&s, &every, SubscriptionOptions::new(QoS::AtLeastOnce), None);
        assert_eq!(
            b.deliver_remote(&TenantId::platform(), &every, &id, system),
            0
        );
    }

    #[tokio::test]
    async fn a_full_subscriber_holds_back_the_next_remote_message_until_it_drains() {
        use futures::FutureExt;
        let (_, id, b) = clustered();
        let t = b.tenant(&id).await.unwrap();
        // Bounded at 10 messages: held back from 9 (high-water), let go
        // below 5 (low-water).
        let sink = session(&t, "sink");
        let q0 = SubscriptionOptions::new(QoS::AtMostOnce);
        t.subscribe(&sink, &filter("a/+"), q0, None);
        let m = || remote("a/x", QoS::AtMostOnce, Properties::default(), "p");
        for _ in 0..8 {
            let (n, held) = b.deliver_remote_held(&id, &filter("a/+"), &id, m());
            assert_eq!((n, held.is_some()), (1, false));
        }
        let (n, held) = b.deliver_remote_held(&id, &filter("a/+"), &id, m());
        assert_eq!(n, 1, "the message that fills it is queued, not dropped");
        let mut held = held.expect("a full subscriber holds the filter back");
        assert!((&mut held).now_or_never().is_none(), "still full");
        {
            let mut st = sink.lock();
            for _ in 0..5 {
                st.pending.pop_front();
            }
            assert!(st.relieve());
        }
        sink.changed();
        tokio::time::timeout(std::time::Duration::from_secs(5), held)
            .await
            .expect("drained below the low-water mark: the filter goes on");
        assert_eq!(
            sink.lock().dropped(),
            crate::session::DropCounters::default()
        );
    }

    // Paused: the expiry left is read in whole seconds.
    #[tokio::test(start_paused = true)]
    async fn remote_messages_keep_every_subscription_semantic() {
        let id = TenantId::parse("acme").unwrap();
        let b = Broker::allow_anonymous(id.clone(), crate::Config::default());
        let t = b.tenant(&id).await.unwrap();
        let (me, other) = (session(&t, "me"), session(&t, "other"));
        let mut no_local = SubscriptionOptions::new(QoS::AtMostOnce);
        no_local.no_local = true;
        no_local.retain_as_published = true;
        t.subscribe(&me, &filter("a/+"), no_local, Some(7));
        t.subscribe(&other, &filter("a/+"), no_local, Some(9));
        t.subscribe(
            &other,
            &filter("#"),
            SubscriptionOptions::new(QoS::AtLeastOnce),
            None,
        );
        let properties = Properties {
            message_expiry_interval: Some(30),
            content_type: Some("text/plain".to_owned()),
            ..Properties::default()
        };
        let message = |topic: &str| remote(topic, QoS::ExactlyOnce, properties.clone(), "me");
        // Only the subscriptions to the filter it came for: No Local skips
        // "me", "other" gets QoS 0 (downgraded), RETAIN kept, id 9.
        assert_eq!(
            b.deliver_remote(&id, &filter("a/+"), &id, message("a/b")),
            1
        );
        {
            let st = other.lock();
            let d = st.pending.front().unwrap();
            assert_eq!((d.qos, d.retain), (QoS::AtMostOnce, true));
            assert_eq!(d.subscription_ids, [9]);
            let p = d.to_publish(Instant::now());
            assert_eq!(p.properties.message_expiry_interval, Some(30));
            assert_eq!(p.properties.content_type.as_deref(), Some("text/plain"));
        }
        assert!(me.lock().pending.is_empty());
        // A $ topic does not match a leading wildcard, whatever NATS says;
        // another tenant's message does not enter this one.
        assert_eq!(
            b.deliver_remote(&id, &filter("#"), &id, message("$SYS/x")),
            0
        );
        let other_tenant = TenantId::parse("other").unwrap();
        assert_eq!(
            b.deliver_remote(&id, &filter("#"), &other_tenant, message("a/b")),
            0
        );
        assert_eq!(b.deliver_remote(&id, &filter("#"), &id, message("x")), 1);
    }
}
