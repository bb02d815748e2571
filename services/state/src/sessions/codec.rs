//! Between the broker's session types (`broker::session_store`) and the
//! store's rows: MQTT values as text, numbers and JSON, wall-clock times
//! as UTC timestamps. Rows that do not turn back into MQTT values are
//! reported (by the caller, who skips them) rather than trusted.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use broker::session_store::{
    DeliveryState, SessionRecord, StoredDelivery, StoredMessage, StoredSession, StoredSubscription,
    StoredWill,
};
use broker::{MessageId, TenantId};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use mqtt::{
    PacketId, ProtocolVersion, QoS, RetainHandling, SubscriptionOptions, TopicFilter, TopicName,
};
use serde_json::{Value, json};
use store::{
    CompletedWrite, IncomingWrite, QueueEntry, QueueState, QueueTransition, SessionDisconnect,
    SessionKey, SessionMessage, SessionMessageId, SessionSubscription, SessionWill, SessionWrites,
    SubscriptionWrite,
};

use super::batch::{Batch, PendingBody, PendingEntry, Row, Upsert};
use crate::codec::{properties_from_json, properties_to_json};

/// Why a stored value is not an MQTT one.
pub(crate) type Bad = &'static str;

fn utc(t: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

fn protocol_text(p: ProtocolVersion) -> &'static str {
    match p {
        ProtocolVersion::V311 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

fn retain_handling(r: RetainHandling) -> u8 {
    match r {
        RetainHandling::SendOnSubscribe => 0,
        RetainHandling::SendIfNew => 1,
        RetainHandling::DoNotSend => 2,
    }
}

/// A will's properties: the pass-through ones, plus its Message Expiry
/// Interval, which starts only when the will is published.
fn will_properties(w: &StoredWill) -> Value {
    let mut v = properties_to_json(&w.properties);
    if let (Some(expiry), Some(o)) = (w.properties.message_expiry_interval, v.as_object_mut()) {
        o.insert("message_expiry_interval".into(), json!(expiry));
    }
    v
}

/// The session row an upsert writes.
pub(crate) fn record_row(tenant: &TenantId, u: &Upsert, node: &str) -> store::SessionRecord {
    let r = &u.record;
    let d = u.disconnected.as_ref();
    store::SessionRecord {
        tenant_id: tenant.as_str().to_owned(),
        client_id: r.client_id.to_string(),
        owner: r.owner.clone(),
        protocol: protocol_text(r.protocol).to_owned(),
        expiry_interval: r.expiry_interval,
        expires_at: d.and_then(|d| d.expires_at).map(utc),
        connected: d.is_none(),
        node_id: Some(node.to_owned()),
        connected_at: utc(u.connected_at),
        disconnected_at: d.map(|d| utc(d.at)),
        will: r.will.as_ref().map(|w| SessionWill {
            topic: w.topic.as_str().to_owned(),
            payload: w.payload.to_vec(),
            qos: w.qos.to_u8(),
            retain: w.retain,
            properties: will_properties(w),
            delay: w.delay,
            due_at: d.and_then(|d| d.will_due_at).map(utc),
        }),
    }
}

pub(crate) fn subscription_row(s: &StoredSubscription) -> SessionSubscription {
    SessionSubscription {
        filter: s.filter.as_str().to_owned(),
        qos: s.options.qos.to_u8(),
        no_local: s.options.no_local,
        retain_as_published: s.options.retain_as_published,
        retain_handling: retain_handling(s.options.retain_handling),
        subscription_id: s.id,
    }
}

pub(crate) fn message_row(tenant: &TenantId, b: &PendingBody) -> SessionMessage {
    let m = &b.message;
    SessionMessage {
        id: b.id,
        tenant_id: tenant.as_str().to_owned(),
        topic: m.topic.as_str().to_owned(),
        payload: m.payload.to_vec(),
        qos: m.qos.to_u8(),
        properties: properties_to_json(&m.properties),
        expires_at: m.expires_at.map(utc),
        created_at: utc(b.at),
        routed_id: m.id.map(MessageId::to_bytes),
    }
}

pub(crate) fn state_row(s: DeliveryState) -> QueueState {
    match s {
        DeliveryState::Queued => QueueState::Queued,
        DeliveryState::Sent(p) => QueueState::Sent { packet_id: p.get() },
        DeliveryState::Released(p) => QueueState::Released { packet_id: p.get() },
    }
}

pub(crate) fn entry_row(seq: u64, e: &PendingEntry) -> QueueEntry {
    QueueEntry {
        seq,
        message_id: e.body.id,
        qos: e.qos.to_u8(),
        retain: e.retain,
        subscription_ids: e.subscription_ids.clone(),
        shared_filter: e.shared.as_ref().map(|f| f.as_str().to_owned()),
        state: state_row(e.state),
    }
}

fn topic(s: String) -> Result<TopicName, Bad> {
    TopicName::parse(s).map_err(|_| "topic is not a topic name")
}

fn filter(s: String) -> Result<TopicFilter, Bad> {
    TopicFilter::parse(s).map_err(|_| "filter is not a topic filter")
}

fn qos(q: u8) -> Result<QoS, Bad> {
    QoS::from_u8(q).map_err(|_| "qos is not 0, 1 or 2")
}

fn packet_id(p: u16) -> Result<PacketId, Bad> {
    PacketId::new(p).ok_or("packet id 0")
}

pub(crate) fn message_from_row(m: SessionMessage) -> Result<StoredMessage, Bad> {
    Ok(StoredMessage {
        topic: topic(m.topic)?,
        payload: Bytes::from(m.payload),
        qos: qos(m.qos)?,
        properties: properties_from_json(&m.properties).ok_or("properties do not parse")?,
        expires_at: m.expires_at.map(SystemTime::from),
        id: m
            .routed_id
            .as_ref()
            .and_then(|id| MessageId::from_bytes(id)),
    })
}

pub(crate) fn delivery_from_row(
    e: QueueEntry,
    message: Arc<StoredMessage>,
) -> Result<StoredDelivery, Bad> {
    Ok(StoredDelivery {
        seq: e.seq,
        message,
        qos: qos(e.qos)?,
        retain: e.retain,
        subscription_ids: e.subscription_ids,
        shared: e.shared_filter.map(filter).transpose()?,
        state: match e.state {
            QueueState::Queued => DeliveryState::Queued,
            QueueState::Sent { packet_id: p } => DeliveryState::Sent(packet_id(p)?),
            QueueState::Released { packet_id: p } => DeliveryState::Released(packet_id(p)?),
        },
    })
}

fn will_from_row(w: SessionWill) -> Result<StoredWill, Bad> {
    let mut properties = properties_from_json(&w.properties).ok_or("will properties")?;
    if let Some(expiry) = w.properties.get("message_expiry_interval") {
        let expiry = expiry.as_u64().and_then(|e| u32::try_from(e).ok());
        properties.message_expiry_interval = Some(expiry.ok_or("will message expiry")?);
    }
    Ok(StoredWill {
        topic: topic(w.topic)?,
        payload: Bytes::from(w.payload),
        qos: qos(w.qos)?,
        retain: w.retain,
        properties,
        delay: w.delay,
    })
}

fn subscription_from_row(s: SessionSubscription) -> Result<StoredSubscription, Bad> {
    let mut options = SubscriptionOptions::new(qos(s.qos)?);
    options.no_local = s.no_local;
    options.retain_as_published = s.retain_as_published;
    options.retain_handling = match s.retain_handling {
        0 => RetainHandling::SendOnSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err("retain handling is not 0, 1 or 2"),
    };
    Ok(StoredSubscription {
        filter: filter(s.filter)?,
        options,
        id: s.subscription_id,
    })
}

/// The session a row holds, with its queue (loaded separately).
pub(crate) fn session_from_row(
    s: store::StoredSession,
    queue: Vec<StoredDelivery>,
) -> Result<StoredSession, Bad> {
    let r = s.record;
    let will_due_at = r.will.as_ref().and_then(|w| w.due_at).map(SystemTime::from);
    Ok(StoredSession {
        record: SessionRecord {
            client_id: Arc::from(r.client_id),
            owner: r.owner,
            protocol: match r.protocol.as_str() {
                "3.1.1" => ProtocolVersion::V311,
                "5.0" => ProtocolVersion::V5,
                _ => return Err("protocol is not 3.1.1 or 5.0"),
            },
            expiry_interval: r.expiry_interval,
            will: r.will.map(will_from_row).transpose()?,
        },
        connected: r.connected,
        node: r.node_id,
        expires_at: r.expires_at.map(SystemTime::from),
        will_due_at,
        subscriptions: s
            .subscriptions
            .into_iter()
            .map(subscription_from_row)
            .collect::<Result<_, _>>()?,
        queue,
        incoming_qos2: s
            .incoming_qos2
            .into_iter()
            .map(packet_id)
            .collect::<Result<_, _>>()?,
        completed: s
            .completed
            .iter()
            .filter_map(|id| MessageId::from_bytes(id))
            .collect(),
    })
}

/// The store's batch for `batch`: each session's coalesced changes, and
/// each body its queue rows reference, once.
pub(crate) fn writes(batch: &Batch, node: &str) -> SessionWrites {
    let mut w = SessionWrites::default();
    let mut bodies: HashMap<SessionMessageId, (&TenantId, &PendingBody)> = HashMap::new();
    for ((tenant, client), c) in &batch.sessions {
        let key = SessionKey::new(tenant.as_str(), &**client);
        if c.reset {
            w.deleted.push(key.clone());
        }
        match &c.row {
            Row::Deleted => continue,
            Row::Upsert(u) => w.upserted.push(record_row(tenant, u, node)),
            Row::Unchanged => {
                if let Some(d) = &c.disconnected {
                    w.disconnected.push(SessionDisconnect {
                        key: key.clone(),
                        at: d.at.into(),
                        expires_at: d.expires_at.map(Into::into),
                        will_due_at: d.will_due_at.map(Into::into),
                    });
                }
                if c.will_cleared {
                    w.wills_cleared.push(key.clone());
                }
            }
        }
        for (filter, sub) in &c.subscriptions {
            w.subscriptions.push(match sub {
                Some(s) => SubscriptionWrite::Set(key.clone(), subscription_row(s)),
                None => SubscriptionWrite::Remove(key.clone(), filter.as_str().to_owned()),
            });
        }
        for (seq, e) in &c.inserts {
            bodies.entry(e.body.id).or_insert((tenant, &e.body));
            w.enqueued.push((key.clone(), entry_row(*seq, e)));
        }
        for (seq, to) in &c.transitions {
            w.transitions.push(QueueTransition {
                key: key.clone(),
                seq: *seq,
                to: to.map(state_row),
            });
        }
        for (packet_id, awaiting) in &c.incoming {
            w.incoming.push(IncomingWrite {
                key: key.clone(),
                packet_id: packet_id.get(),
                awaiting: *awaiting,
            });
        }
        for id in &c.completed {
            w.completed.push(CompletedWrite {
                key: key.clone(),
                routed_id: id.to_bytes(),
            });
        }
    }
    w.messages = bodies
        .values()
        .map(|(tenant, body)| message_row(tenant, body))
        .collect();
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use broker::session_store::Disconnected;
    use mqtt::Properties;
    use mqtt::properties::PayloadFormat;
    use std::time::Duration;

    /// Whole microseconds: what both backends keep.
    fn micros(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_micros(secs * 1_000_000 + 123_456)
    }

    #[test]
    fn a_session_survives_the_round_trip() {
        let will = StoredWill {
            topic: TopicName::parse("devices/d1/status").unwrap(),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: Properties {
                payload_format_indicator: Some(PayloadFormat::Utf8),
                message_expiry_interval: Some(600),
                user_properties: mqtt::UserProperties::from_pairs([("k", "v")]).unwrap(),
                ..Properties::default()
            },
            delay: 30,
        };
        let record = SessionRecord {
            client_id: Arc::from("d1"),
            owner: "d1".into(),
            protocol: ProtocolVersion::V311,
            expiry_interval: 3600,
            will: Some(will),
        };
        let d = Disconnected {
            at: micros(1_800_000_000),
            expires_at: Some(micros(1_800_003_600)),
            will_due_at: Some(micros(1_800_000_030)),
        };
        let upsert = Upsert {
            record: record.clone(),
            connected_at: micros(1_799_999_000),
            disconnected: Some(d),
        };
        let tenant = TenantId::parse("acme").unwrap();
        let row = record_row(&tenant, &upsert, "node-1");
        assert!(!row.connected);
        let mut sub = SubscriptionOptions::new(QoS::AtLeastOnce);
        sub.retain_handling = RetainHandling::SendIfNew;
        sub.no_local = true;
        let sub = StoredSubscription {
            filter: TopicFilter::parse("$share/g/a/+").unwrap(),
            options: sub,
            id: Some(42),
        };
        let stored = store::StoredSession {
            record: row,
            generation: 1,
            subscriptions: vec![subscription_row(&sub)],
            incoming_qos2: vec![7],
            completed: vec![],
            queued: 0,
        };
        let back = session_from_row(stored, vec![]).unwrap();
        assert_eq!(back.record, record);
        assert_eq!(back.expires_at, d.expires_at);
        assert_eq!(back.will_due_at, d.will_due_at);
        assert_eq!(back.subscriptions, [sub]);
        assert_eq!(back.incoming_qos2, [PacketId::new(7).unwrap()]);
        assert_eq!(back.node.as_deref(), Some("node-1"));
    }

    #[test]
    fn bad_rows_are_errors_not_panics() {
        let m = SessionMessage {
            id: store::SessionMessageId::new(),
            tenant_id: "acme".into(),
            topic: "a/+".into(),
            payload: vec![],
            qos: 1,
            properties: json!({}),
            expires_at: None,
            created_at: Utc::now(),
            routed_id: None,
        };
        assert!(message_from_row(m.clone()).is_err());
        let entry = QueueEntry {
            seq: 1,
            message_id: m.id,
            qos: 3,
            retain: false,
            subscription_ids: vec![],
            shared_filter: None,
            state: QueueState::Queued,
        };
        let message = Arc::new(StoredMessage {
            topic: TopicName::parse("a").unwrap(),
            payload: Bytes::new(),
            qos: QoS::AtLeastOnce,
            properties: Properties::default(),
            expires_at: None,
            id: None,
        });
        assert!(delivery_from_row(entry, message).is_err());
    }
}
