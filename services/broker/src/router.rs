//! Publishing one message inside a tenant: retained update, fan-out to the
//! matching sessions, events. The payload is shared (`Arc<Message>` holding
//! `Bytes`) by every delivery; the index is read-locked only while matching.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use mqtt::{QoS, TopicFilter};
use tokio::time::Instant;
use tracing::warn;

use crate::broker::Broker;
use crate::events::Event;
use crate::index::Matched;
use crate::message::{Delivery, Message};
use crate::metrics;
use crate::platform;
use crate::retained::{Change, Lookup, QuotaRefusal, RetainedQuota, Usage};
use crate::session::Session;
use crate::store::{Durability, StoredRetained};
use crate::tenant::Tenant;

/// Publishes `message` from `client_id` in `tenant`; returns how many
/// sessions it was queued for. A retained change is persisted without
/// waiting for it.
pub(crate) fn publish(
    broker: &Broker,
    tenant: &Tenant,
    client_id: &str,
    message: Message,
) -> usize {
    // Wills come here: their topic was never held to the limits at
    // CONNECT, so it is here (dropped and counted, as a refused PUBLISH).
    if let Err(e) = tenant.check_topic(&message.topic) {
        warn!(tenant = %tenant.id, topic = %crate::hygiene::Shown(message.topic.as_str()), reason = %e, "message dropped by the topic limits or rules");
        metrics::topic_refused("will", e.label());
        return 0;
    }
    // Over the tenant's retained quota: counted (metric) and not routed.
    publish_durable(broker, tenant, client_id, None, message, None).map_or(0, |(n, _)| n)
}

/// Like [`publish`], and for a retained QoS 1/2 message also what to wait
/// on before acknowledging it (the store's [`Durability`]). A retained
/// message counts against `owner`'s (the publishing identity's) and the
/// tenant's retained quota; over it, nothing is stored or routed.
///
/// Sessions the message left at their high-water mark go to `full`, if
/// given, for the publisher to wait on (`backpressure`).
pub(crate) fn publish_durable(
    broker: &Broker,
    tenant: &Tenant,
    client_id: &str,
    owner: Option<&str>,
    message: Message,
    full: Option<&mut Vec<Arc<Session>>>,
) -> Result<(usize, Option<Durability>), QuotaRefusal> {
    let mut message = message;
    // Numbered before it is routed: local copies carry the id too.
    message.id = broker.interconnect().and_then(|ic| ic.next_id());
    let message = Arc::new(message);
    metrics::message_in(message.qos);
    let durability = if message.retain {
        update_retained(broker, tenant, owner, &message)?
    } else {
        None
    };
    let events = broker.events();
    if events.wants_published() {
        events.emit(Event::Published {
            tenant: tenant.id.clone(),
            client_id: client_id.to_owned(),
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            qos: message.qos,
            retain: message.retain,
        });
    }
    // 'The durability rule' (services/state/sessions.md): the publisher's
    // acknowledgement also waits for the persistent sessions' queues.
    let (routed, queued) = route_durable(tenant, &message, full);
    let delivered = routed + platform::fan_out(broker, tenant, &message);
    // Once, after the retained update and the local fan-out; what arrives
    // from other nodes never comes through here.
    // In a cluster a QoS 1/2 message is also durable in the cluster's
    // journal before it is acknowledged, for the sessions on other nodes.
    let journaled = broker
        .interconnect()
        .and_then(|ic| ic.forward(&tenant.id, &message.outbound(owner, Instant::now())));
    Ok((
        delivered,
        crate::session_store::all_durable([durability, queued, journaled]),
    ))
}

/// The tenant's retained messages matching a non-shared `filter`, at most
/// `cap`. Expired ones found on the way are deleted for good (3.3.2.3.3).
pub(crate) fn retained_for(
    broker: &Broker,
    tenant: &Tenant,
    filter: &TopicFilter,
    now: Instant,
    cap: usize,
) -> Lookup {
    let mut found = tenant.retained_for(filter, now, cap);
    if !found.expired.is_empty() {
        for topic in tenant.prune_retained(&std::mem::take(&mut found.expired), now) {
            broker
                .retained_store()
                .save(&tenant.id, &topic, None, false);
            broker.events().emit(Event::RetainedChanged {
                tenant: tenant.id.clone(),
                topic,
                payload: None,
            });
        }
    }
    if found.truncated {
        metrics::retained_cap_hit();
        warn!(tenant = %tenant.id, topic = %crate::hygiene::Shown(filter.as_str()), cap, "retained messages capped for this subscribe");
    }
    found
}

/// Deletes `topic`'s retained message, in memory and in the store; what
/// to wait on for a QoS 1/2 delete. Also for topics over the limits, so a
/// message stored before them can still be cleared.
pub(crate) fn clear_retained(
    broker: &Broker,
    tenant: &Tenant,
    topic: &mqtt::TopicName,
    durable: bool,
) -> Option<Durability> {
    // Whether or not memory had it: a message skipped on load is only in
    // the store.
    if tenant.set_retained(topic, None) == Change::Removed {
        broker.events().emit(Event::RetainedChanged {
            tenant: tenant.id.clone(),
            topic: topic.clone(),
            payload: None,
        });
    }
    if let Some(ic) = broker.interconnect() {
        ic.retained_changed(&tenant.id, topic, None);
    }
    broker
        .retained_store()
        .save(&tenant.id, topic, None, durable)
}

/// MQTT-3.3.1-5/6/7: a retained PUBLISH replaces the topic's retained
/// message; an empty payload deletes it (and is not itself retained).
fn update_retained(
    broker: &Broker,
    tenant: &Tenant,
    owner: Option<&str>,
    message: &Arc<Message>,
) -> Result<Option<Durability>, QuotaRefusal> {
    let topic = &message.topic;
    let durable = message.qos != QoS::AtMostOnce;
    if message.payload.is_empty() {
        return Ok(clear_retained(broker, tenant, topic, durable));
    }
    let config = broker.config();
    let limit = |l: crate::RetainedLimit| Usage {
        count: l.messages,
        bytes: l.bytes,
    };
    let quota = RetainedQuota {
        per_owner: limit(config.retained_per_client),
        per_tenant: limit(config.retained_per_tenant),
    };
    let owner_name = owner;
    let owner: Option<Arc<str>> = owner.map(Arc::from);
    tenant.set_retained_checked(topic, message.clone(), owner.clone(), &quota)?;
    let (now, wall) = (Instant::now(), SystemTime::now());
    let durability = broker.retained_store().save(
        &tenant.id,
        topic,
        Some(&StoredRetained {
            topic: topic.clone(),
            payload: message.payload.clone(),
            qos: message.qos,
            properties: message.properties().clone(),
            expires_at: message.expires_at_wall(now, wall),
            // Recorded so that the quota still counts it after a restart.
            owner,
        }),
        durable,
    );
    if let Some(ic) = broker.interconnect() {
        ic.retained_changed(&tenant.id, topic, Some(&message.outbound(owner_name, now)));
    }
    broker.events().emit(Event::RetainedChanged {
        tenant: tenant.id.clone(),
        topic: topic.clone(),
        payload: Some(message.payload.clone()),
    });
    Ok(durability)
}

/// Matches merged by a scan rather than a map, per message.
const FEW_MATCHES: usize = 8;

/// One pending copy per session for the non-shared matches.
struct Merged {
    session: Arc<Session>,
    qos: QoS,
    retain: bool,
    ids: Vec<u32>,
}

/// Queues `message` for every matching subscription.
///
/// Overlapping non-shared subscriptions of one session yield one copy at
/// the highest granted QoS with every matching Subscription Identifier
/// (MQTT-3.3.5-1, MQTT-3.3.4-3). Each matching shared group yields one copy
/// to one member.
pub(crate) fn route(tenant: &Tenant, message: &Arc<Message>) -> usize {
    route_durable(tenant, message, None).0
}

/// [`route`], and what the publisher's acknowledgement waits for: the
/// message queued durably for every persistent session it reached.
/// Sessions it left at their high-water mark go to `full`, if given.
pub(crate) fn route_durable(
    tenant: &Tenant,
    message: &Arc<Message>,
    full: Option<&mut Vec<Arc<Session>>>,
) -> (usize, Option<Durability>) {
    let mut matched: Vec<Matched> = Vec::new();
    tenant.matches(&message.topic, &mut matched);
    // In a cluster one member of a group cluster-wide gets each message:
    // the interconnect picks it (a member here included), not this node.
    let mut elsewhere = 0;
    if tenant.clustered() {
        matched.retain(|m| {
            m.shared.is_none() || {
                elsewhere += 1;
                false
            }
        });
    }
    let (count, durability) = route_matched(tenant, message, matched, full);
    (count + elsewhere, durability)
}

/// [`route_durable`] over subscriptions already `matched`.
pub(crate) fn route_matched(
    tenant: &Tenant,
    message: &Arc<Message>,
    matched: Vec<Matched>,
    full: Option<&mut Vec<Arc<Session>>>,
) -> (usize, Option<Durability>) {
    let mut targets: Vec<(Arc<Session>, Delivery)> = Vec::with_capacity(matched.len());
    // One copy per session: a few matches are merged by a scan (the
    // common telemetry case is one or two), many through a map by client
    // id; a map for each message was a few percent of a fan-in's CPU.
    let mut merged: Vec<Merged> = Vec::new();
    let mut index: Option<HashMap<Arc<str>, usize>> =
        (matched.len() > FEW_MATCHES).then(HashMap::new);
    let mut count = 0;
    for m in matched {
        let sub = m.subscriber;
        let qos = message.qos.min(sub.options.qos); // MQTT-3.8.4-8
        // MQTT-3.3.1-12, MQTT-3.3.1-13
        let retain = sub.options.retain_as_published && message.retain;
        if let Some(filter) = m.shared {
            targets.push((
                sub.session.clone(),
                Delivery {
                    message: message.clone(),
                    qos,
                    retain,
                    subscription_ids: sub.id.into_iter().collect(),
                    shared: Some(filter),
                    seq: None,
                },
            ));
            count += 1;
            continue;
        }
        // MQTT-3.8.3-3: No Local, for a publisher of this namespace.
        if sub.options.no_local
            && message.platform_origin == tenant.id.is_platform()
            && message.origin.as_ref() == Some(sub.session.client_id())
        {
            continue;
        }
        let found = match &index {
            Some(index) => index.get(sub.session.client_id()).copied(),
            None => merged
                .iter()
                .position(|m| Arc::ptr_eq(&m.session, &sub.session)),
        };
        let at = found.unwrap_or_else(|| {
            if let Some(index) = &mut index {
                index.insert(sub.session.client_id().clone(), merged.len());
            }
            merged.push(Merged {
                session: sub.session.clone(),
                qos,
                retain,
                ids: Vec::new(),
            });
            merged.len() - 1
        });
        let Some(entry) = merged.get_mut(at) else {
            continue;
        };
        entry.qos = entry.qos.max(qos);
        entry.retain |= retain;
        entry.ids.extend(sub.id);
    }
    for m in merged {
        targets.push((
            m.session,
            Delivery {
                message: message.clone(),
                qos: m.qos,
                retain: m.retain,
                subscription_ids: m.ids,
                shared: None,
                seq: None,
            },
        ));
        count += 1;
    }
    (count, tenant.queue(message, targets, full))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TenantId;
    use bytes::Bytes;
    use mqtt::{Properties, SubscriptionOptions, TopicFilter, TopicName};

    fn message(topic: &str, qos: QoS, origin: &str) -> Arc<Message> {
        Arc::new(Message::new(
            TopicName::parse(topic).unwrap(),
            Bytes::from_static(b"p"),
            qos,
            false,
            Properties::default(),
            Some(Arc::from(origin)),
            Instant::now(),
        ))
    }

    #[test]
    fn overlapping_subscriptions_give_one_copy_at_max_qos_with_all_ids() {
        let t = Tenant::new(TenantId::parse("acme").unwrap());
        let s = t.attach_for_test("c", 10);
        let opts = |q| SubscriptionOptions::new(q);
        t.subscribe(
            &s,
            &TopicFilter::parse("a/+").unwrap(),
            opts(QoS::AtMostOnce),
            Some(1),
        );
        t.subscribe(
            &s,
            &TopicFilter::parse("a/#").unwrap(),
            opts(QoS::AtLeastOnce),
            Some(2),
        );
        assert_eq!(route(&t, &message("a/b", QoS::ExactlyOnce, "p")), 1);
        let st = s.lock();
        let d = st.pending.front().unwrap();
        assert_eq!(d.qos, QoS::AtLeastOnce);
        let mut ids = d.subscription_ids.clone();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2]);
    }

    /// Past `FEW_MATCHES` the merge goes through a map: still one copy
    /// per session, with every identifier, at the highest QoS.
    #[test]
    fn many_matches_still_merge_per_session() {
        let t = Tenant::new(TenantId::parse("acme").unwrap());
        let (one, other) = (t.attach_for_test("one", 10), t.attach_for_test("other", 10));
        let filters = [
            "a/b/c", "a/b/+", "a/+/c", "+/b/c", "a/#", "a/b/#", "#", "+/+/+", "+/#", "a/+/+",
        ];
        for (i, f) in (1u32..).zip(filters) {
            let qos = if i == 4 {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            let filter = TopicFilter::parse(f).unwrap();
            t.subscribe(&one, &filter, SubscriptionOptions::new(qos), Some(i));
            t.subscribe(
                &other,
                &filter,
                SubscriptionOptions::new(QoS::AtMostOnce),
                None,
            );
        }
        assert_eq!(route(&t, &message("a/b/c", QoS::ExactlyOnce, "p")), 2);
        let st = one.lock();
        assert_eq!(st.pending.len(), 1);
        let d = st.pending.front().unwrap();
        assert_eq!(d.qos, QoS::AtLeastOnce);
        let mut ids = d.subscription_ids.clone();
        ids.sort_unstable();
        assert_eq!(ids, (1..=10).collect::<Vec<u32>>());
        assert_eq!(other.lock().pending.len(), 1);
    }

    #[test]
    fn no_local_skips_the_publisher() {
        let t = Tenant::new(TenantId::parse("acme").unwrap());
        let s = t.attach_for_test("c", 10);
        let mut o = SubscriptionOptions::new(QoS::AtMostOnce);
        o.no_local = true;
        t.subscribe(&s, &TopicFilter::parse("a").unwrap(), o, None);
        assert_eq!(route(&t, &message("a", QoS::AtMostOnce, "c")), 0);
        assert_eq!(route(&t, &message("a", QoS::AtMostOnce, "other")), 1);
    }

    #[test]
    fn a_will_over_the_topic_limits_is_neither_routed_nor_retained() {
        let id = TenantId::parse("acme").unwrap();
        let b = Broker::allow_anonymous(id.clone(), crate::Config::default());
        let t = Tenant::new(id);
        let s = t.attach_for_test("c", 10);
        let all = TopicFilter::parse("#").unwrap();
        t.subscribe(&s, &all, SubscriptionOptions::new(QoS::AtMostOnce), None);
        let will = |topic: String| {
            Message::new(
                TopicName::parse(topic).unwrap(),
                Bytes::from_static(b"w"),
                QoS::AtMostOnce,
                true,
                Properties::default(),
                Some(Arc::from("w")),
                Instant::now(),
            )
        };
        let deep = format!("a{}", "/".repeat(200));
        assert_eq!(publish(&b, &t, "w", will(deep)), 0);
        assert_eq!(t.stats().retained, 0);
        assert_eq!(publish(&b, &t, "w", will("a/b".to_owned())), 1);
        assert_eq!(t.stats().retained, 1);
    }

    /// Two brokers on one retained store stand for a restart: what a
    /// principal stored before still counts against its quota after.
    #[tokio::test]
    async fn reloaded_retained_messages_count_for_their_publisher() {
        use crate::store::RetainedStore;
        let id = TenantId::parse("acme").unwrap();
        let store = Arc::new(crate::store::MemoryRetainedStore::new());
        let config = crate::Config {
            retained_per_client: crate::RetainedLimit {
                messages: 2,
                bytes: 1 << 20,
            },
            ..crate::Config::default()
        };
        let start = || {
            Broker::builder(Arc::new(crate::auth::AllowAnonymous { tenant: id.clone() }))
                .config(config.clone())
                .retained_store(store.clone())
                .build()
        };
        let retained = |topic: &str, payload: &'static [u8]| {
            Message::new(
                TopicName::parse(topic).unwrap(),
                Bytes::from_static(payload),
                QoS::AtLeastOnce,
                true,
                Properties::default(),
                Some(Arc::from("c")),
                Instant::now(),
            )
        };
        let put = |b: &Broker, t: &Tenant, who: &str, topic: &str, payload: &'static [u8]| {
            publish_durable(b, t, "c", Some(who), retained(topic, payload), None).map(|_| ())
        };
        let b = start();
        let t = b.tenant(&id).await.unwrap();
        put(&b, &t, "d1", "devices/d1/a", b"1").unwrap();
        put(&b, &t, "d1", "devices/d1/b", b"1").unwrap();
        assert!(put(&b, &t, "d1", "devices/d1/c", b"1").is_err());
        drop((t, b));

        let b = start();
        let t = b.tenant(&id).await.unwrap();
        assert_eq!(t.stats().retained, 2);
        // Still full after the restart; replacing its own still fits.
        assert!(put(&b, &t, "d1", "devices/d1/c", b"1").is_err());
        put(&b, &t, "d1", "devices/d1/a", b"2").unwrap();
        // Another principal takes `b` over: it is theirs now, in the store
        // too, and d1 has room for one more, across a restart as well.
        put(&b, &t, "d2", "devices/d1/b", b"2").unwrap();
        drop((t, b));
        let b = start();
        let t = b.tenant(&id).await.unwrap();
        put(&b, &t, "d1", "devices/d1/c", b"1").unwrap();
        assert!(put(&b, &t, "d1", "devices/d1/d", b"1").is_err());
        // An empty retained publish deletes, and gives the place back.
        put(&b, &t, "d1", "devices/d1/c", b"").unwrap();
        put(&b, &t, "d1", "devices/d1/d", b"1").unwrap();
        let owners: Vec<(String, Option<String>)> = store
            .load(&id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.topic.as_str().to_owned(), r.owner.map(|o| o.to_string())))
            .collect();
        let some = |o: &str| Some(o.to_owned());
        assert_eq!(
            owners,
            [
                ("devices/d1/a".to_owned(), some("d1")),
                ("devices/d1/b".to_owned(), some("d2")),
                ("devices/d1/d".to_owned(), some("d1")),
            ]
        );
    }
}
