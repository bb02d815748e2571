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

    /// A message published on this node in `tenant`.
    fn forward(&self, tenant: &TenantId, message: &Outbound<'_>);

    /// This node set (`Some`, a retained message) or deleted (`None`) the
    /// retained message of `topic` in `tenant`.
    fn retained_changed(
        &self,
        tenant: &TenantId,
        topic: &TopicName,
        retained: Option<&Outbound<'_>>,
    );
}

/// A message as it leaves this node: what another node needs to deliver
/// it with the same semantics.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
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
            topic: &self.topic,
            payload: &self.payload,
            qos: self.qos,
            retain: self.retain,
            properties: &self.properties,
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
        message
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
        let Some(ns) = self.existing(namespace) else {
            return 0;
        };
        let topic = if namespace.is_platform() {
            match crate::platform::mount(tenant, &message.topic) {
                Some(topic) => topic,
                None => return 0,
            }
        } else if namespace == tenant {
            message.topic.clone()
        } else {
            return 0;
        };
        // MQTT-4.7.2-1 ($ topics and leading wildcards) is not NATS's rule;
        // and a subject is only trusted as far as the topic matches.
        let inner = filter.shared().map(|s| s.filter);
        if !inner.as_ref().unwrap_or(filter).matches(&topic) {
            return 0;
        }
        // Not counted as received here (its node did): the router counts
        // what crosses nodes.
        let message = Arc::new(Message::inbound(message, topic, Instant::now()));
        let mut matched = Vec::new();
        ns.matches_at(filter, &mut matched);
        // Written behind for persistent sessions: the publisher on the
        // other node was acknowledged by its own node's rule.
        crate::router::route_matched(&ns, &message, matched, None).0
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
        fn forward(&self, _: &TenantId, m: &Outbound<'_>) {
            let entry = (
                m.topic.as_str().to_owned(),
                m.origin.map(str::to_owned),
                m.expiry,
            );
            self.forwarded.lock().unwrap().push(entry);
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

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::parse(s).unwrap()
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
