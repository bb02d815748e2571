//! Retained messages (issue 6): the durable copy of the broker's retained
//! messages, written in batches by the `state` crate's write-behind buffer
//! and read back per tenant when the broker first uses it.
//!
//! The store keeps payloads and properties as given: what an MQTT property
//! means is the broker's business.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use crate::codec::Ts;
use crate::store::tenant_query;
use crate::{Error, Store};

/// Rows per multi-row statement: 8 parameters each stays far below the
/// bind limits (SQLite 32,766, Postgres 65,535).
const CHUNK: usize = 1_000;

/// One retained message.
#[derive(Debug, Clone, PartialEq)]
pub struct RetainedMessage {
    pub tenant_id: String,
    pub topic: String,
    /// Never empty (an empty retained payload is a delete).
    pub payload: Vec<u8>,
    /// 0, 1 or 2.
    pub qos: u8,
    /// A JSON object of pass-through properties.
    pub properties: Value,
    /// Absolute expiry; `None`: never.
    pub expires_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    /// The principal (device id or service credential) whose retained
    /// quota the message counts against; `None`: unknown (written before
    /// owners were recorded, or published by the platform), counted for
    /// the tenant only. A replacement takes the new publisher's owner.
    pub owner: Option<String>,
}

/// One change in a [`Store::write_retained`] batch.
#[derive(Debug, Clone, PartialEq)]
pub enum RetainedWrite {
    /// Insert or replace the topic's message.
    Set(RetainedMessage),
    /// Remove the topic's message, if any.
    Delete { tenant_id: String, topic: String },
}

impl RetainedWrite {
    fn key(&self) -> (&str, &str) {
        match self {
            RetainedWrite::Set(m) => (&m.tenant_id, &m.topic),
            RetainedWrite::Delete { tenant_id, topic } => (tenant_id, topic),
        }
    }
}

/// What a [`Store::write_retained`] batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetainedWriteCount {
    /// Rows inserted or replaced.
    pub upserted: u64,
    /// Rows deleted.
    pub deleted: u64,
    /// Writes not applied: superseded by a later write of the same topic in
    /// the batch, or for a tenant that does not exist (any more).
    pub skipped: u64,
}

#[derive(sqlx::FromRow)]
struct RetainedRow {
    tenant_id: String,
    topic: String,
    payload: Vec<u8>,
    qos: i16,
    properties: Json<Value>,
    expires_at: Option<Ts>,
    updated_at: Ts,
    owner: Option<String>,
}

impl TryFrom<RetainedRow> for RetainedMessage {
    type Error = Error;

    fn try_from(r: RetainedRow) -> Result<Self, Error> {
        let qos = u8::try_from(r.qos)
            .ok()
            .filter(|q| *q <= 2)
            .ok_or(Error::InvalidDocument {
                kind: "retained message",
                reason: "qos is not 0, 1 or 2",
            })?;
        Ok(RetainedMessage {
            tenant_id: r.tenant_id,
            topic: r.topic,
            payload: r.payload,
            qos,
            properties: r.properties.0,
            expires_at: r.expires_at.map(|t| t.0),
            updated_at: r.updated_at.0,
            owner: r.owner,
        })
    }
}

macro_rules! retained_columns {
    () => {
        "tenant_id, topic, payload, qos, properties, expires_at, updated_at, owner"
    };
}

/// The last write of each topic, in the order given.
fn last_per_topic(writes: &[RetainedWrite]) -> Vec<&RetainedWrite> {
    let mut seen = HashSet::with_capacity(writes.len());
    let mut kept: Vec<&RetainedWrite> = writes
        .iter()
        .rev()
        .filter(|w| seen.insert(w.key()))
        .collect();
    kept.reverse();
    kept
}

impl Store {
    /// Apply a batch of retained changes in one transaction: multi-row
    /// upserts and deletes, chunked. Of several writes to one topic only
    /// the last counts. Writes for tenants that do not exist are skipped
    /// (a tenant deleted while its writes were buffered), never an error
    /// that would fail the rest of the batch.
    #[tracing::instrument(skip_all, fields(count = writes.len()))]
    pub async fn write_retained(
        &self,
        writes: &[RetainedWrite],
    ) -> Result<RetainedWriteCount, Error> {
        let kept = last_per_topic(writes);
        let mut sets = Vec::new();
        let mut deletes = Vec::new();
        for w in kept {
            match w {
                RetainedWrite::Set(m) => {
                    if m.payload.is_empty()
                        || m.qos > 2
                        || !m.properties.is_object()
                        || m.owner.as_deref() == Some("")
                    {
                        return Err(Error::InvalidDocument {
                            kind: "retained message",
                            reason: "payload must not be empty, qos 0-2, properties an object, owner not empty",
                        });
                    }
                    sets.push(m);
                }
                RetainedWrite::Delete { tenant_id, topic } => deletes.push((tenant_id, topic)),
            }
        }
        let mut count = RetainedWriteCount::default();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in sets.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(concat!(
                    "WITH v (",
                    retained_columns!(),
                    ") AS ("
                ));
                q.push_values(chunk, |mut row, m| {
                    row.push_bind(m.tenant_id.as_str())
                        .push_bind(m.topic.as_str())
                        .push_bind(m.payload.as_slice())
                        .push_bind(i16::from(m.qos))
                        .push_bind(Json(&m.properties))
                        .push_bind(m.expires_at.map(Ts))
                        .push_bind(Ts(m.updated_at))
                        .push_bind(m.owner.as_deref());
                });
                // `WHERE true`: SQLite needs it to parse ON CONFLICT after a
                // SELECT. The join drops rows of tenants that do not exist.
                q.push(concat!(
                    ") INSERT INTO retained_messages (",
                    retained_columns!(),
                    ") SELECT v.tenant_id, v.topic, v.payload, v.qos, v.properties, ",
                    "v.expires_at, v.updated_at, v.owner FROM v JOIN tenants t ON t.id = v.tenant_id ",
                    "WHERE true ON CONFLICT (tenant_id, topic) DO UPDATE SET ",
                    "payload = excluded.payload, qos = excluded.qos, ",
                    "properties = excluded.properties, expires_at = excluded.expires_at, ",
                    "updated_at = excluded.updated_at, owner = excluded.owner"
                ));
                count.upserted += q.build().execute(&mut *tx).await?.rows_affected();
            }
            for chunk in deletes.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "DELETE FROM retained_messages WHERE (tenant_id, topic) IN (",
                );
                q.push_values(chunk, |mut row, (tenant_id, topic)| {
                    row.push_bind(tenant_id.as_str()).push_bind(topic.as_str());
                });
                q.push(")");
                count.deleted += q.build().execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
        });
        let attempted = u64::try_from(writes.len()).unwrap_or(u64::MAX);
        count.skipped = attempted.saturating_sub(count.upserted + count.deleted);
        Ok(count)
    }

    /// A tenant's retained messages that have not expired by `now`, in
    /// topic order.
    pub async fn load_retained(
        &self,
        tenant_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<RetainedMessage>, Error> {
        self.retained_where(tenant_id, None, now, None).await
    }

    /// Unexpired retained messages of a tenant whose topic starts with
    /// `prefix` (say `devices/d1/`), in topic order, at most `limit`.
    pub async fn list_retained(
        &self,
        tenant_id: &str,
        prefix: &str,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<RetainedMessage>, Error> {
        self.retained_where(tenant_id, Some(prefix), now, Some(limit))
            .await
    }

    async fn retained_where(
        &self,
        tenant_id: &str,
        prefix: Option<&str>,
        now: DateTime<Utc>,
        limit: Option<u32>,
    ) -> Result<Vec<RetainedMessage>, Error> {
        let rows = on_pool!(self, pool => {
            let mut q = tenant_query(
                concat!(
                    "SELECT ",
                    retained_columns!(),
                    " FROM retained_messages WHERE tenant_id = "
                ),
                tenant_id,
            );
            q.push(" AND (expires_at IS NULL OR expires_at > ")
                .push_bind(Ts(now))
                .push(")");
            if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
                // A range on the key (byte order on both backends), so the
                // primary key serves it; no LIKE escaping to get wrong.
                q.push(" AND topic >= ").push_bind(prefix);
                if let Some(end) = prefix_end(prefix) {
                    q.push(" AND topic < ").push_bind(end);
                }
            }
            q.push(" ORDER BY topic");
            if let Some(limit) = limit {
                q.push(" LIMIT ").push_bind(i64::from(limit));
            }
            q.build_query_as::<RetainedRow>().fetch_all(pool).await?
        });
        rows.into_iter().map(RetainedMessage::try_from).collect()
    }

    /// Delete retained messages that expired by `now`; returns how many.
    pub async fn purge_expired_retained(&self, now: DateTime<Utc>) -> Result<u64, Error> {
        const SQL: &str = "DELETE FROM retained_messages WHERE expires_at <= $1";
        Ok(sql!(self, execute => SQL, Ts(now))?)
    }
}

/// The smallest string greater than every string starting with `prefix`
/// (byte order): the prefix with its last character incremented. `None`
/// when no such bound exists (the last character is the largest there is).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // Skip the surrogate gap; char::MAX has no successor.
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end("devices/d1/").as_deref(), Some("devices/d10"));
        assert_eq!(prefix_end("a").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        for p in ["devices/d1/", "x", "é/"] {
            let end = prefix_end(p).unwrap();
            assert!(format!("{p}zzz").as_str() < end.as_str());
            assert!(p < end.as_str());
        }
    }

    #[test]
    fn only_the_last_write_of_a_topic_counts() {
        let at = Utc::now();
        let set = |topic: &str, p: u8| {
            RetainedWrite::Set(RetainedMessage {
                tenant_id: "acme".into(),
                topic: topic.into(),
                payload: vec![p],
                qos: 0,
                properties: Value::Object(Default::default()),
                expires_at: None,
                updated_at: at,
                owner: None,
            })
        };
        let del = RetainedWrite::Delete {
            tenant_id: "acme".into(),
            topic: "a".into(),
        };
        let writes = [set("a", 1), set("b", 1), del.clone(), set("b", 2)];
        let kept = last_per_topic(&writes);
        assert_eq!(kept, [&del, &set("b", 2)]);
    }
}
