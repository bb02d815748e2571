//! Queued messages of persistent sessions (issue 14): message bodies,
//! stored once however many sessions they are queued for, and each
//! session's queue rows (in order; queued, sent or released), read back in
//! bounded pages. Written by [`Store::write_sessions`].

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use crate::codec::Ts;
use crate::sessions::{MAX_SUBSCRIPTION_ID, MAX_TOPIC_BYTES, check_bytes, invalid, to_u8};
use crate::{Error, Store};

/// A message body's id: a UUIDv7, made by the writer (time-ordered, so
/// inserts append to the index; no round trip to hand ids out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionMessageId(pub [u8; 16]);

impl SessionMessageId {
    /// A new, unique id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().into_bytes())
    }

    fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        <[u8; 16]>::try_from(bytes)
            .map(Self)
            .map_err(|_| invalid("message id is not 16 bytes"))
    }
}

impl Default for SessionMessageId {
    fn default() -> Self {
        Self::new()
    }
}

/// One message body, referenced by the queue rows of every session it was
/// queued for.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionMessage {
    pub id: SessionMessageId,
    pub tenant_id: String,
    pub topic: String,
    pub payload: Vec<u8>,
    /// As published: 1 or 2.
    pub qos: u8,
    /// A JSON object of pass-through properties.
    pub properties: Value,
    /// Absolute expiry; `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// The id it was routed with between cluster nodes (opaque here), so
    /// that a session holding it does not take it twice; `None` on a
    /// single node.
    pub routed_id: Option<[u8; 16]>,
}

impl SessionMessage {
    pub(crate) fn check(&self) -> Result<(), Error> {
        check_bytes(&self.topic, MAX_TOPIC_BYTES, "topic")?;
        if !(1..=2).contains(&self.qos) || !self.properties.is_object() {
            return Err(invalid("message qos 1-2, properties an object"));
        }
        Ok(())
    }
}

/// Where a queued delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueState {
    /// Not sent yet.
    Queued,
    /// PUBLISH sent with this packet id; PUBACK / PUBREC awaited. Sent
    /// again with DUP after a reconnect.
    Sent { packet_id: u16 },
    /// QoS 2: PUBREC received, PUBREL sent; PUBCOMP awaited.
    Released { packet_id: u16 },
}

impl QueueState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            QueueState::Queued => "queued",
            QueueState::Sent { .. } => "sent",
            QueueState::Released { .. } => "released",
        }
    }

    pub(crate) fn packet_id(self) -> Option<i32> {
        match self {
            QueueState::Queued => None,
            QueueState::Sent { packet_id } | QueueState::Released { packet_id } => {
                Some(i32::from(packet_id))
            }
        }
    }

    pub(crate) fn check(self, qos: Option<u8>) -> Result<(), Error> {
        match self {
            QueueState::Sent { packet_id: 0 } | QueueState::Released { packet_id: 0 } => {
                Err(invalid("packet id 0"))
            }
            QueueState::Released { .. } if qos == Some(1) => Err(invalid("only QoS 2 is released")),
            _ => Ok(()),
        }
    }

    fn parse(state: &str, packet_id: Option<i32>) -> Result<Self, Error> {
        let id = || {
            packet_id
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0)
                .ok_or_else(|| invalid("packet id"))
        };
        match state {
            "queued" => Ok(QueueState::Queued),
            "sent" => Ok(QueueState::Sent { packet_id: id()? }),
            "released" => Ok(QueueState::Released { packet_id: id()? }),
            _ => Err(invalid("queue state")),
        }
    }
}

/// One delivery in a session's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// The session's order (the broker's sequence number).
    pub seq: u64,
    pub message_id: SessionMessageId,
    /// After the downgrade to the subscription's QoS: 1 or 2.
    pub qos: u8,
    /// RETAIN on the outgoing PUBLISH.
    pub retain: bool,
    /// Matching Subscription Identifiers.
    pub subscription_ids: Vec<u32>,
    /// The `$share/` filter it came through.
    pub shared_filter: Option<String>,
    pub state: QueueState,
}

impl QueueEntry {
    pub(crate) fn check(&self) -> Result<(), Error> {
        if !(1..=2).contains(&self.qos) || i64::try_from(self.seq).is_err() {
            return Err(invalid("delivery qos 1-2, seq below 2^63"));
        }
        if self
            .subscription_ids
            .iter()
            .any(|id| *id == 0 || *id > MAX_SUBSCRIPTION_ID)
        {
            return Err(invalid("subscription identifier out of range"));
        }
        if let Some(f) = &self.shared_filter {
            check_bytes(f, MAX_TOPIC_BYTES, "filter")?;
        }
        self.state.check(Some(self.qos))
    }
}

/// One page of a session's queue and the bodies it references (each once).
#[derive(Debug, Clone, PartialEq)]
pub struct QueuePage {
    /// In queue order.
    pub entries: Vec<QueueEntry>,
    pub messages: Vec<SessionMessage>,
    /// The `after` of the next page; `None` on the last one.
    pub next: Option<u64>,
}

#[derive(sqlx::FromRow)]
struct QueueRow {
    seq: i64,
    message_id: Vec<u8>,
    qos: i16,
    retain: bool,
    subscription_ids: Option<Json<Vec<u32>>>,
    shared_filter: Option<String>,
    state: String,
    packet_id: Option<i32>,
}

#[derive(sqlx::FromRow)]
struct MessageRow {
    id: Vec<u8>,
    tenant_id: String,
    topic: String,
    payload: Vec<u8>,
    qos: i16,
    properties: Json<Value>,
    expires_at: Option<Ts>,
    created_at: Ts,
    routed_id: Option<Vec<u8>>,
}

impl TryFrom<MessageRow> for SessionMessage {
    type Error = Error;

    fn try_from(r: MessageRow) -> Result<Self, Error> {
        Ok(SessionMessage {
            id: SessionMessageId::from_slice(&r.id)?,
            tenant_id: r.tenant_id,
            topic: r.topic,
            payload: r.payload,
            qos: to_u8(r.qos, "message qos out of range")?,
            properties: r.properties.0,
            expires_at: r.expires_at.map(|t| t.0),
            created_at: r.created_at.0,
            routed_id: r
                .routed_id
                .map(|id| <[u8; 16]>::try_from(id.as_slice()))
                .transpose()
                .map_err(|_| invalid("routed id is not 16 bytes"))?,
        })
    }
}

impl Store {
    /// A session's queue rows after seq `after`, at most `limit` (clamped
    /// to 1..=10,000), in queue order, with the bodies they reference.
    /// One session at a time: the primary key's range scan, whatever the
    /// planner's statistics say (a tenant-wide page had Postgres sort the
    /// tenant's whole queue for each page while its tables were fresh).
    pub async fn session_queue(
        &self,
        tenant_id: &str,
        client_id: &str,
        after: Option<u64>,
        limit: u32,
    ) -> Result<QueuePage, Error> {
        const SQL: &str = "SELECT q.seq, q.message_id, q.qos, q.retain, q.subscription_ids, \
             q.shared_filter, q.state, q.packet_id FROM mqtt_session_queue q \
             WHERE q.session_id = (SELECT id FROM mqtt_sessions \
             WHERE tenant_id = $1 AND client_id = $2) AND q.seq > $3 ORDER BY q.seq LIMIT $4";
        let limit = i64::from(limit.clamp(1, 10_000));
        // -1: every seq (they are at least 0).
        let after_seq = after
            .map_or(Ok(-1), i64::try_from)
            .map_err(|_| invalid("seq"))?;
        let rows = sql!(self, fetch_all as QueueRow => SQL, tenant_id, client_id, after_seq,
            limit)?;
        let full = i64::try_from(rows.len()).is_ok_and(|n| n == limit);
        let mut wanted = HashSet::new();
        let mut entries = Vec::with_capacity(rows.len());
        for r in rows {
            let message_id = SessionMessageId::from_slice(&r.message_id)?;
            wanted.insert(message_id);
            entries.push(QueueEntry {
                seq: u64::try_from(r.seq).map_err(|_| invalid("seq"))?,
                message_id,
                qos: to_u8(r.qos, "delivery qos out of range")?,
                retain: r.retain,
                subscription_ids: r.subscription_ids.map(|j| j.0).unwrap_or_default(),
                shared_filter: r.shared_filter,
                state: QueueState::parse(&r.state, r.packet_id)?,
            });
        }
        let next = entries.last().filter(|_| full).map(|e| e.seq);
        let messages = self.session_messages(&wanted).await?;
        Ok(QueuePage {
            entries,
            messages,
            next,
        })
    }

    async fn session_messages(
        &self,
        ids: &HashSet<SessionMessageId>,
    ) -> Result<Vec<SessionMessage>, Error> {
        let ids: Vec<_> = ids.iter().collect();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(1_000) {
            let rows = on_pool!(self, pool => {
                let mut q = sqlx::QueryBuilder::new(
                    "SELECT id, tenant_id, topic, payload, qos, properties, expires_at, \
                     created_at, routed_id FROM mqtt_session_messages WHERE id IN (",
                );
                let mut list = q.separated(", ");
                for id in chunk {
                    list.push_bind(id.0.as_slice());
                }
                q.push(")");
                q.build_query_as::<MessageRow>().fetch_all(pool).await?
            });
            for row in rows {
                out.push(SessionMessage::try_from(row)?);
            }
        }
        Ok(out)
    }

    /// How many message bodies a tenant's session queues hold (each once,
    /// however many sessions reference it).
    pub async fn count_session_messages(&self, tenant_id: &str) -> Result<u64, Error> {
        const SQL: &str = "SELECT COUNT(*) FROM mqtt_session_messages WHERE tenant_id = $1";
        let n: i64 = sql!(self, fetch_one scalar => SQL, tenant_id)?;
        Ok(u64::try_from(n).unwrap_or_default())
    }
}
