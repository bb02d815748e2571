//! [`Store::write_sessions`]: one transaction applying a batch of changes
//! to persistent sessions (the `state` crate's group commit), and
//! [`Store::purge_sessions`] for deadlines.
//!
//! Phases run in a fixed order, each one multi-row statement per chunk:
//! deletions (a clean start deletes, then creates), session rows,
//! disconnects, cleared wills, subscriptions, message bodies, queue rows,
//! queue transitions, incoming QoS 2 ids, and last the bodies no queue row
//! references any more. The caller coalesces per session (a row inserted
//! and completed in one batch never reaches us); within a phase the last
//! write of a key wins. Rows for sessions (or tenants) that do not exist
//! are skipped, never an error that would fail the rest of the batch: one
//! session ended while its writes were buffered must not refuse every
//! other publisher's acknowledgement.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::types::Json;

use crate::codec::{Ts, now};
use crate::session_batch::last_per;
use crate::{
    Backend, Error, QueueState, SessionKey, SessionPurge, SessionRecord, SessionWriteCount,
    SessionWrites, Store, SubscriptionWrite,
};

/// Rows per multi-row statement: at most 19 parameters each stays below
/// the bind limits (SQLite 32,766, Postgres 65,535).
const CHUNK: usize = 1_000;

/// SHA-256 of a filter: the subscriptions' key (see the migration).
fn filter_key(filter: &str) -> [u8; 32] {
    Sha256::digest(filter.as_bytes()).into()
}

fn seq(n: u64) -> i64 {
    // `check` made sure it fits.
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `WITH v (tenant_id, client_id) AS (VALUES …)` for `keys`.
macro_rules! with_keys {
    ($keys:expr) => {{
        let mut q = sqlx::QueryBuilder::new("WITH v (tenant_id, client_id) AS (");
        q.push_values($keys, |mut row, k| {
            row.push_bind(k.tenant_id.as_str())
                .push_bind(k.client_id.as_str());
        });
        q.push(") ");
        q
    }};
}

/// `WITH v (tenant_id, client_id, COLUMNS) AS (VALUES …) ` for `items`:
/// each one's session key (`key`), then what `bind` pushes for `COLUMNS`.
macro_rules! with_keyed {
    ($items:expr, $columns:literal, |$row:ident, $item:ident| $key:expr, $bind:expr) => {{
        let mut q = sqlx::QueryBuilder::new(concat!(
            "WITH v (tenant_id, client_id, ",
            $columns,
            ") AS ("
        ));
        q.push_values($items, |mut $row, $item| {
            let key: &SessionKey = $key;
            $row.push_bind(key.tenant_id.as_str())
                .push_bind(key.client_id.as_str());
            $bind;
        });
        q.push(") ");
        q
    }};
}

/// Runs the queue-row DELETE in `$q`; the bodies the deleted rows
/// referenced go into `$candidates` for collection. Evaluates to how many
/// rows went.
macro_rules! delete_queue_rows {
    ($tx:expr, $q:expr, $candidates:expr) => {{
        $q.push(" RETURNING message_id");
        let gone: Vec<Vec<u8>> = $q.build_query_scalar().fetch_all(&mut *$tx).await?;
        let rows = u64::try_from(gone.len()).unwrap_or(u64::MAX);
        $candidates.extend(gone);
        rows
    }};
}

/// Deletes the `$candidates` bodies that no queue row references.
macro_rules! collect_bodies {
    ($tx:expr, $candidates:expr) => {{
        let candidates: Vec<Vec<u8>> = $candidates.into_iter().collect();
        let mut collected = 0;
        for chunk in candidates.chunks(CHUNK) {
            let mut q = sqlx::QueryBuilder::new("DELETE FROM mqtt_session_messages WHERE id IN (");
            q.push_values(chunk, |mut row, id| {
                row.push_bind(id.as_slice());
            });
            q.push(
                ") AND NOT EXISTS (SELECT 1 FROM mqtt_session_queue q \
                 WHERE q.message_id = mqtt_session_messages.id)",
            );
            collected += q.build().execute(&mut *$tx).await?.rows_affected();
        }
        collected
    }};
}

impl Store {
    /// Applies `writes` in one transaction, phase by phase: deletions,
    /// session rows, disconnects, cleared wills, subscriptions, bodies,
    /// queue rows, queue transitions, incoming QoS 2 ids, then the bodies
    /// no queue row references any more. Within a phase the last write of
    /// a key wins; writes for sessions or tenants that do not exist are
    /// skipped. A batch that fails [`SessionWrites::check`] is refused
    /// whole, before any SQL.
    #[tracing::instrument(skip_all, fields(
        sessions = writes.upserted.len(),
        enqueued = writes.enqueued.len(),
        transitions = writes.transitions.len(),
    ))]
    pub async fn write_sessions(&self, writes: &SessionWrites) -> Result<SessionWriteCount, Error> {
        writes.check()?;
        let at = now();
        let deleted = last_per(&writes.deleted, |k| k);
        let upserted = last_per(&writes.upserted, SessionRecord::key);
        let disconnected = last_per(&writes.disconnected, |d| &d.key);
        let mut cleared: Vec<&SessionKey> = disconnected
            .iter()
            .filter(|d| d.will_due_at.is_none())
            .map(|d| &d.key)
            .collect();
        cleared.extend(&writes.wills_cleared);
        let subscriptions = last_per(&writes.subscriptions, SubscriptionWrite::key);
        let (sets, removes): (Vec<_>, Vec<_>) = subscriptions
            .into_iter()
            .partition(|s| matches!(s, SubscriptionWrite::Set(..)));
        let messages = last_per(&writes.messages, |m| m.id);
        let enqueued = last_per(&writes.enqueued, |(k, e)| (k, e.seq));
        let transitions = last_per(&writes.transitions, |t| (&t.key, t.seq));
        let (moves, done): (Vec<_>, Vec<_>) = transitions.into_iter().partition(|t| t.to.is_some());
        let completed = last_per(&writes.completed, |c| (&c.key, c.routed_id));
        let incoming = last_per(&writes.incoming, |i| (&i.key, i.packet_id));
        let (awaiting, released): (Vec<_>, Vec<_>) = incoming.into_iter().partition(|i| i.awaiting);

        let mut count = SessionWriteCount::default();
        // Bodies no new row references are collected at the end; so are
        // all new ones if some rows were skipped (their session is gone),
        // which the database alone can tell.
        let referenced: HashSet<_> = enqueued.iter().map(|(_, e)| e.message_id).collect();
        let mut candidates: HashSet<Vec<u8>> = messages
            .iter()
            .filter(|m| !referenced.contains(&m.id))
            .map(|m| m.id.0.to_vec())
            .collect();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for chunk in deleted.chunks(CHUNK) {
                let mut q = with_keys!(chunk.iter().copied());
                q.push(
                    "DELETE FROM mqtt_session_queue WHERE session_id IN (SELECT s.id FROM \
                     mqtt_sessions s JOIN v ON s.tenant_id = v.tenant_id \
                     AND s.client_id = v.client_id)",
                );
                delete_queue_rows!(tx, q, candidates);
                let mut q = with_keys!(chunk.iter().copied());
                q.push(
                    "DELETE FROM mqtt_sessions WHERE id IN (SELECT s.id FROM mqtt_sessions s \
                     JOIN v ON s.tenant_id = v.tenant_id AND s.client_id = v.client_id)",
                );
                count.sessions_deleted += q.build().execute(&mut *tx).await?.rows_affected();
            }
            for chunk in upserted.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "WITH v (tenant_id, client_id, owner, protocol, expiry_interval, expires_at, \
                     connected, node_id, connected_at, disconnected_at, will_topic, will_payload, \
                     will_qos, will_retain, will_properties, will_delay, will_due_at, created_at, \
                     updated_at) AS (",
                );
                q.push_values(chunk, |mut row, r| {
                    let will = r.will.as_ref();
                    row.push_bind(r.tenant_id.as_str())
                        .push_bind(r.client_id.as_str())
                        .push_bind(r.owner.as_str())
                        .push_bind(r.protocol.as_str())
                        .push_bind(i64::from(r.expiry_interval))
                        .push_bind(r.expires_at.map(Ts))
                        .push_bind(r.connected)
                        .push_bind(r.node_id.as_deref())
                        .push_bind(Ts(r.connected_at))
                        .push_bind(r.disconnected_at.map(Ts))
                        .push_bind(will.map(|w| w.topic.as_str()))
                        .push_bind(will.map(|w| w.payload.as_slice()))
                        .push_bind(will.map(|w| i16::from(w.qos)))
                        .push_bind(will.map(|w| w.retain))
                        .push_bind(will.map(|w| Json(&w.properties)))
                        .push_bind(will.map(|w| i64::from(w.delay)))
                        .push_bind(will.and_then(|w| w.due_at).map(Ts))
                        .push_bind(Ts(at))
                        .push_bind(Ts(at));
                });
                // `WHERE true`: SQLite needs it to parse ON CONFLICT after a
                // SELECT. The join skips sessions of tenants that are gone.
                q.push(
                    ") INSERT INTO mqtt_sessions (tenant_id, client_id, owner, protocol, \
                     expiry_interval, expires_at, connected, node_id, connected_at, \
                     disconnected_at, will_topic, will_payload, will_qos, will_retain, \
                     will_properties, will_delay, will_due_at, created_at, updated_at) \
                     SELECT v.tenant_id, v.client_id, v.owner, v.protocol, v.expiry_interval, \
                     v.expires_at, v.connected, v.node_id, v.connected_at, v.disconnected_at, \
                     v.will_topic, v.will_payload, v.will_qos, v.will_retain, v.will_properties, \
                     v.will_delay, v.will_due_at, v.created_at, v.updated_at \
                     FROM v JOIN tenants t ON t.id = v.tenant_id WHERE true \
                     ON CONFLICT (tenant_id, client_id) DO UPDATE SET owner = excluded.owner, \
                     protocol = excluded.protocol, expiry_interval = excluded.expiry_interval, \
                     expires_at = excluded.expires_at, connected = excluded.connected, \
                     node_id = excluded.node_id, connected_at = excluded.connected_at, \
                     disconnected_at = excluded.disconnected_at, \
                     will_topic = excluded.will_topic, will_payload = excluded.will_payload, \
                     will_qos = excluded.will_qos, will_retain = excluded.will_retain, \
                     will_properties = excluded.will_properties, \
                     will_delay = excluded.will_delay, will_due_at = excluded.will_due_at, \
                     generation = mqtt_sessions.generation + 1, updated_at = excluded.updated_at",
                );
                count.sessions_upserted += q.build().execute(&mut *tx).await?.rows_affected();
            }
            for chunk in disconnected.chunks(CHUNK) {
                let mut q = with_keyed!(chunk, "at, expires_at, will_due_at", |row, d| &d.key,
                    row.push_bind(Ts(d.at))
                        .push_bind(d.expires_at.map(Ts))
                        .push_bind(d.will_due_at.map(Ts)));
                q.push(
                    "UPDATE mqtt_sessions SET connected = FALSE, disconnected_at = v.at, \
                     updated_at = v.at, expires_at = v.expires_at, will_due_at = CASE WHEN \
                     mqtt_sessions.will_topic IS NULL THEN NULL ELSE v.will_due_at END FROM v \
                     WHERE mqtt_sessions.tenant_id = v.tenant_id \
                     AND mqtt_sessions.client_id = v.client_id",
                );
                count.sessions_updated += q.build().execute(&mut *tx).await?.rows_affected();
            }
            for chunk in cleared.chunks(CHUNK) {
                let mut q = with_keys!(chunk.iter().copied());
                q.push(
                    "UPDATE mqtt_sessions SET will_topic = NULL, will_payload = NULL, \
                     will_qos = NULL, will_retain = NULL, will_properties = NULL, \
                     will_delay = NULL, will_due_at = NULL, updated_at = ",
                )
                .push_bind(Ts(at))
                .push(
                    " FROM v WHERE mqtt_sessions.tenant_id = v.tenant_id \
                     AND mqtt_sessions.client_id = v.client_id \
                     AND mqtt_sessions.will_topic IS NOT NULL",
                );
                count.sessions_updated += q.build().execute(&mut *tx).await?.rows_affected();
            }
            for chunk in removes.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "WITH v (tenant_id, client_id, filter_key) AS (",
                );
                q.push_values(chunk, |mut row, s| {
                    let (k, filter) = s.key();
                    row.push_bind(k.tenant_id.as_str())
                        .push_bind(k.client_id.as_str())
                        .push_bind(filter_key(filter).to_vec());
                });
                q.push(
                    ") DELETE FROM mqtt_session_subscriptions WHERE (session_id, filter_key) IN \
                     (SELECT s.id, v.filter_key FROM v JOIN mqtt_sessions s \
                     ON s.tenant_id = v.tenant_id AND s.client_id = v.client_id)",
                );
                count.subscriptions += q.build().execute(&mut *tx).await?.rows_affected();
            }
            for chunk in sets.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "WITH v (tenant_id, client_id, filter_key, filter, qos, no_local, \
                     retain_as_published, retain_handling, subscription_id) AS (",
                );
                q.push_values(chunk, |mut row, s| {
                    if let SubscriptionWrite::Set(k, s) = s {
                        row.push_bind(k.tenant_id.as_str())
                            .push_bind(k.client_id.as_str())
                            .push_bind(filter_key(&s.filter).to_vec())
                            .push_bind(s.filter.as_str())
                            .push_bind(i16::from(s.qos))
                            .push_bind(s.no_local)
                            .push_bind(s.retain_as_published)
                            .push_bind(i16::from(s.retain_handling))
                            .push_bind(s.subscription_id.map(i64::from));
                    }
                });
                q.push(
                    ") INSERT INTO mqtt_session_subscriptions (session_id, filter_key, filter, \
                     qos, no_local, retain_as_published, retain_handling, subscription_id) \
                     SELECT s.id, v.filter_key, v.filter, v.qos, v.no_local, \
                     v.retain_as_published, v.retain_handling, v.subscription_id FROM v \
                     JOIN mqtt_sessions s ON s.tenant_id = v.tenant_id \
                     AND s.client_id = v.client_id WHERE true \
                     ON CONFLICT (session_id, filter_key) DO UPDATE SET filter = excluded.filter, \
                     qos = excluded.qos, no_local = excluded.no_local, \
                     retain_as_published = excluded.retain_as_published, \
                     retain_handling = excluded.retain_handling, \
                     subscription_id = excluded.subscription_id",
                );
                count.subscriptions += q.build().execute(&mut *tx).await?.rows_affected();
            }
            for chunk in messages.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "WITH v (id, tenant_id, topic, payload, qos, properties, expires_at, \
                     created_at, routed_id) AS (",
                );
                q.push_values(chunk, |mut row, m| {
                    row.push_bind(m.id.0.as_slice())
                        .push_bind(m.tenant_id.as_str())
                        .push_bind(m.topic.as_str())
                        .push_bind(m.payload.as_slice())
                        .push_bind(i16::from(m.qos))
                        .push_bind(Json(&m.properties))
                        .push_bind(m.expires_at.map(Ts))
                        .push_bind(Ts(m.created_at))
                        .push_bind(m.routed_id.as_ref().map(|id| id.as_slice()));
                });
                q.push(
                    ") INSERT INTO mqtt_session_messages (id, tenant_id, topic, payload, qos, \
                     properties, expires_at, created_at, routed_id) SELECT v.id, v.tenant_id, \
                     v.topic, v.payload, v.qos, v.properties, v.expires_at, v.created_at, \
                     v.routed_id FROM v \
                     JOIN tenants t ON t.id = v.tenant_id WHERE true \
                     ON CONFLICT (id) DO NOTHING",
                );
                count.messages += q.build().execute(&mut *tx).await?.rows_affected();
            }
            for chunk in enqueued.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "WITH v (tenant_id, client_id, seq, message_id, qos, retain, \
                     subscription_ids, shared_filter, state, packet_id) AS (",
                );
                q.push_values(chunk, |mut row, (k, e)| {
                    row.push_bind(k.tenant_id.as_str())
                        .push_bind(k.client_id.as_str())
                        .push_bind(seq(e.seq))
                        .push_bind(e.message_id.0.as_slice())
                        .push_bind(i16::from(e.qos))
                        .push_bind(e.retain)
                        .push_bind(
                            (!e.subscription_ids.is_empty()).then_some(Json(&e.subscription_ids)),
                        )
                        .push_bind(e.shared_filter.as_deref())
                        .push_bind(e.state.as_str())
                        .push_bind(e.state.packet_id());
                });
                q.push(
                    ") INSERT INTO mqtt_session_queue (session_id, seq, message_id, qos, retain, \
                     subscription_ids, shared_filter, state, packet_id) SELECT s.id, v.seq, \
                     v.message_id, v.qos, v.retain, v.subscription_ids, v.shared_filter, \
                     v.state, v.packet_id FROM v JOIN mqtt_sessions s \
                     ON s.tenant_id = v.tenant_id AND s.client_id = v.client_id \
                     JOIN mqtt_session_messages m ON m.id = v.message_id WHERE true \
                     ON CONFLICT (session_id, seq) DO NOTHING",
                );
                count.enqueued += q.build().execute(&mut *tx).await?.rows_affected();
            }
            for chunk in done.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new("WITH v (tenant_id, client_id, seq) AS (");
                q.push_values(chunk, |mut row, t| {
                    row.push_bind(t.key.tenant_id.as_str())
                        .push_bind(t.key.client_id.as_str())
                        .push_bind(seq(t.seq));
                });
                q.push(
                    ") DELETE FROM mqtt_session_queue WHERE (session_id, seq) IN \
                     (SELECT s.id, v.seq FROM v JOIN mqtt_sessions s \
                     ON s.tenant_id = v.tenant_id AND s.client_id = v.client_id)",
                );
                count.transitions += delete_queue_rows!(tx, q, candidates);
            }
            for chunk in completed.chunks(CHUNK) {
                let mut q = with_keyed!(chunk, "routed_id, created_at", |row, c| &c.key,
                    row.push_bind(c.routed_id.as_slice()).push_bind(Ts(at)));
                q.push(
                    "INSERT INTO mqtt_session_completed (session_id, routed_id, created_at) \
                     SELECT s.id, v.routed_id, v.created_at FROM v JOIN mqtt_sessions s \
                     ON s.tenant_id = v.tenant_id AND s.client_id = v.client_id WHERE true \
                     ON CONFLICT (session_id, routed_id) DO NOTHING",
                );
                count.transitions += q.build().execute(&mut *tx).await?.rows_affected();
            }
            for chunk in moves.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "WITH v (tenant_id, client_id, seq, state, packet_id) AS (",
                );
                q.push_values(chunk, |mut row, t| {
                    let to = t.to.unwrap_or(QueueState::Queued);
                    row.push_bind(t.key.tenant_id.as_str())
                        .push_bind(t.key.client_id.as_str())
                        .push_bind(seq(t.seq))
                        .push_bind(to.as_str())
                        .push_bind(to.packet_id());
                });
                // The state/packet id pair is checked as a whole: a QoS 1
                // row is never released (a broker bug must not fail the
                // batch on the CHECK constraint).
                q.push(
                    ") UPDATE mqtt_session_queue SET state = v.state, packet_id = v.packet_id \
                     FROM v JOIN mqtt_sessions s ON s.tenant_id = v.tenant_id \
                     AND s.client_id = v.client_id WHERE mqtt_session_queue.session_id = s.id \
                     AND mqtt_session_queue.seq = v.seq \
                     AND (v.state <> 'released' OR mqtt_session_queue.qos = 2)",
                );
                count.transitions += q.build().execute(&mut *tx).await?.rows_affected();
            }
            for chunk in released.chunks(CHUNK) {
                let mut q = with_keyed!(chunk, "packet_id", |row, i| &i.key, row.push_bind(i32::from(i.packet_id)));
                q.push(
                    "DELETE FROM mqtt_session_incoming WHERE (session_id, packet_id) IN \
                     (SELECT s.id, v.packet_id FROM v JOIN mqtt_sessions s \
                     ON s.tenant_id = v.tenant_id AND s.client_id = v.client_id)",
                );
                count.incoming += q.build().execute(&mut *tx).await?.rows_affected();
            }
            for chunk in awaiting.chunks(CHUNK) {
                let mut q = with_keyed!(chunk, "packet_id", |row, i| &i.key, row.push_bind(i32::from(i.packet_id)));
                q.push(
                    "INSERT INTO mqtt_session_incoming (session_id, packet_id) \
                     SELECT s.id, v.packet_id FROM v JOIN mqtt_sessions s \
                     ON s.tenant_id = v.tenant_id AND s.client_id = v.client_id WHERE true \
                     ON CONFLICT (session_id, packet_id) DO NOTHING",
                );
                count.incoming += q.build().execute(&mut *tx).await?.rows_affected();
            }
            if count.enqueued < u64::try_from(enqueued.len()).unwrap_or(u64::MAX) {
                candidates.extend(messages.iter().map(|m| m.id.0.to_vec()));
            }
            count.collected = collect_bodies!(tx, candidates);
            tx.commit().await?;
        });
        Ok(count)
    }

    /// Deletes, in one transaction, at most `limit` sessions offline past
    /// their deadline by `before` (not those whose will is still to go
    /// out: the broker publishes it first), the queued (unsent)
    /// deliveries whose message expired by `before`, and the bodies left
    /// unreferenced. Pass a `before` somewhat behind now, so that a client
    /// reconnecting right at its deadline races nothing.
    pub async fn purge_sessions(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<SessionPurge, Error> {
        const EXPIRED: &str = "SELECT id FROM mqtt_sessions WHERE expires_at <= $1 \
             AND NOT connected AND will_topic IS NULL ORDER BY expires_at LIMIT $2";
        let lock = match self.backend() {
            // Against a concurrent reconnect; SQLite has one writer anyway.
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let mut purge = SessionPurge::default();
        let mut candidates: HashSet<Vec<u8>> = HashSet::new();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("{EXPIRED}{lock}")))
                .bind(Ts(before))
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
            for chunk in ids.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(
                    "DELETE FROM mqtt_session_queue WHERE session_id IN (",
                );
                q.push_values(chunk, |mut row, id| {
                    row.push_bind(*id);
                });
                q.push(")");
                delete_queue_rows!(tx, q, candidates);
                let mut q = sqlx::QueryBuilder::new("DELETE FROM mqtt_sessions WHERE id IN (");
                q.push_values(chunk, |mut row, id| {
                    row.push_bind(*id);
                });
                q.push(")");
                purge.sessions += q.build().execute(&mut *tx).await?.rows_affected();
            }
            // 3.3.2.3.3: not delivered once expired; in flight, it goes on.
            let mut q = sqlx::QueryBuilder::new(
                "DELETE FROM mqtt_session_queue WHERE state = 'queued' AND message_id IN \
                 (SELECT id FROM mqtt_session_messages WHERE expires_at <= ",
            );
            q.push_bind(Ts(before)).push(")");
            purge.expired_messages = delete_queue_rows!(tx, q, candidates);
            let stale = before - chrono::Duration::from_std(crate::sessions::COMPLETED_KEPT)
                .unwrap_or_else(|_| chrono::Duration::zero());
            purge.completed = sqlx::query("DELETE FROM mqtt_session_completed WHERE created_at <= $1")
                .bind(Ts(stale))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            purge.collected = collect_bodies!(tx, candidates);
            tx.commit().await?;
        });
        Ok(purge)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_keys_are_sha256() {
        let k = filter_key("devices/+/state");
        assert_eq!(k.len(), 32);
        assert_ne!(k, filter_key("devices/+/state/"));
        assert_eq!(k, filter_key("devices/+/state"));
    }
}
