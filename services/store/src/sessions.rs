//! Persistent MQTT sessions (issue 14): the session rows, their
//! subscriptions and incoming QoS 2 packet ids, read back per tenant; the
//! operator's paged view; deletion; expiry. Writes go through one batch,
//! [`Store::write_sessions`] (`session_writes.rs`); queued messages are
//! in `session_queue.rs`. Design: `services/state/sessions.md`.
//!
//! The store keeps what the broker gives it (topics, filters and
//! properties as text and JSON): what an MQTT field means is the broker's
//! business. Times are absolute, so downtime counts against every
//! deadline.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;

use crate::codec::Ts;
use crate::page::CursorKind;
use crate::{Error, Page, Paged, SessionWrites, Store};

/// The longest client id (and owner) a stored session may have, in bytes.
/// MQTT allows 65,535; a longer key would not fit a Postgres index entry.
pub const MAX_SESSION_CLIENT_ID_BYTES: usize = 1024;

/// The longest topic or filter stored, in bytes (MQTT 1.5.4).
pub(crate) const MAX_TOPIC_BYTES: usize = 65_535;

/// The largest Subscription Identifier (MQTT 3.8.2.1.2).
pub(crate) const MAX_SUBSCRIPTION_ID: u32 = 268_435_455;

/// Which session: tenant and MQTT client id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    pub tenant_id: String,
    pub client_id: String,
}

impl SessionKey {
    pub fn new(tenant_id: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            client_id: client_id.into(),
        }
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        check_bytes(&self.client_id, MAX_SESSION_CLIENT_ID_BYTES, "client id")
    }
}

/// A session's Last Will, kept from CONNECT until it is published or
/// discarded.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionWill {
    pub topic: String,
    pub payload: Vec<u8>,
    /// 0, 1 or 2.
    pub qos: u8,
    pub retain: bool,
    /// A JSON object of the will's properties.
    pub properties: Value,
    /// Will Delay Interval, seconds.
    pub delay: u32,
    /// When it is due (set at disconnect); `None` while connected.
    pub due_at: Option<DateTime<Utc>>,
}

/// A session row as written at CONNECT (and read back).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub tenant_id: String,
    pub client_id: String,
    /// The principal that created it; only it may resume it.
    pub owner: String,
    /// "3.1.1" or "5.0".
    pub protocol: String,
    /// Session Expiry Interval in force, seconds (`u32::MAX`: never).
    pub expiry_interval: u32,
    /// Absolute deadline while offline; `None` while connected (or never).
    pub expires_at: Option<DateTime<Utc>>,
    pub connected: bool,
    /// The node serving (or that last served) it.
    pub node_id: Option<String>,
    pub connected_at: DateTime<Utc>,
    pub disconnected_at: Option<DateTime<Utc>>,
    pub will: Option<SessionWill>,
}

impl SessionRecord {
    pub fn key(&self) -> SessionKey {
        SessionKey::new(self.tenant_id.clone(), self.client_id.clone())
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        check_bytes(&self.client_id, MAX_SESSION_CLIENT_ID_BYTES, "client id")?;
        check_bytes(&self.owner, MAX_SESSION_CLIENT_ID_BYTES, "owner")?;
        if !matches!(self.protocol.as_str(), "3.1.1" | "5.0") {
            return Err(invalid("protocol is not 3.1.1 or 5.0"));
        }
        if let Some(w) = &self.will {
            check_bytes(&w.topic, MAX_TOPIC_BYTES, "will topic")?;
            if w.qos > 2 || !w.properties.is_object() {
                return Err(invalid("will qos 0-2, properties an object"));
            }
        }
        Ok(())
    }
}

/// One subscription of a session, with all its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSubscription {
    pub filter: String,
    /// Maximum QoS granted: 0, 1 or 2.
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0, 1 or 2 (MQTT 3.8.3.1).
    pub retain_handling: u8,
    /// 1..=268,435,455.
    pub subscription_id: Option<u32>,
}

impl SessionSubscription {
    pub(crate) fn check(&self) -> Result<(), Error> {
        check_bytes(&self.filter, MAX_TOPIC_BYTES, "topic filter")?;
        if self.qos > 2 || self.retain_handling > 2 {
            return Err(invalid("qos and retain handling 0-2"));
        }
        if self
            .subscription_id
            .is_some_and(|id| id == 0 || id > MAX_SUBSCRIPTION_ID)
        {
            return Err(invalid("subscription identifier out of range"));
        }
        Ok(())
    }
}

/// A session as stored, for loading it back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    pub record: SessionRecord,
    /// Bumped by every connect.
    pub generation: i64,
    /// In filter order.
    pub subscriptions: Vec<SessionSubscription>,
    /// Client → server QoS 2 packet ids awaiting PUBREL, ascending.
    pub incoming_qos2: Vec<u16>,
    /// The routed ids of the QoS 2 messages it completed lately, newest
    /// first, at most [`COMPLETED_LOADED`] (a journal replay into it
    /// skips them).
    pub completed: Vec<[u8; 16]>,
    /// Queue rows (queued or in flight); read them with
    /// [`Store::session_queue`].
    pub queued: u64,
}

/// One line of the operator's view of a tenant's sessions.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionSummary {
    pub client_id: String,
    pub owner: String,
    pub protocol: String,
    pub connected: bool,
    pub node_id: Option<String>,
    #[sqlx(try_from = "i64")]
    pub subscriptions: u64,
    /// Messages waiting to be sent.
    #[sqlx(try_from = "i64")]
    pub queued: u64,
    /// Messages sent and not yet acknowledged.
    #[sqlx(try_from = "i64")]
    pub in_flight: u64,
    pub expires_at: Option<DateTime<Utc>>,
    pub connected_at: DateTime<Utc>,
    pub disconnected_at: Option<DateTime<Utc>>,
}

/// What [`Store::purge_sessions`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionPurge {
    /// Sessions past their deadline (with everything they held).
    pub sessions: u64,
    /// Queued (unsent) deliveries whose message expired.
    pub expired_messages: u64,
    /// Message bodies no queue references any more.
    pub collected: u64,
    /// Completed QoS 2 ids older than [`COMPLETED_KEPT`] (no replay reads
    /// that far back).
    pub completed: u64,
}

/// How long a session's completed QoS 2 ids are kept: twice the cluster
/// journal's five minutes.
pub const COMPLETED_KEPT: std::time::Duration = std::time::Duration::from_secs(600);

/// How many of a session's completed QoS 2 ids a load returns at most,
/// the newest: a replay reads back seconds (from a silent node's last
/// lease write, at most about 7 s before it fell silent), not minutes,
/// and a busy QoS 2 subscriber must not make a restart hold every id of
/// the last ten minutes in memory (8,192 ids: about 200 KB a session at
/// most; a subscriber completing more than about 1,000 a second may get
/// a replayed one again).
pub const COMPLETED_LOADED: usize = 8_192;

pub(crate) fn invalid(reason: &'static str) -> Error {
    Error::InvalidDocument {
        kind: "mqtt session",
        reason,
    }
}

pub(crate) fn check_bytes(s: &str, max: usize, what: &'static str) -> Result<(), Error> {
    if s.is_empty() || s.len() > max {
        return Err(Error::InvalidDocument {
            kind: "mqtt session",
            reason: match what {
                "client id" => "client id must be 1 to 1024 bytes",
                "owner" => "owner must be 1 to 1024 bytes",
                "will topic" => "will topic must be 1 to 65535 bytes",
                "topic" => "topic must be 1 to 65535 bytes",
                _ => "topic filter must be 1 to 65535 bytes",
            },
        });
    }
    Ok(())
}

pub(crate) fn to_u8(v: i16, what: &'static str) -> Result<u8, Error> {
    u8::try_from(v).map_err(|_| invalid(what))
}

pub(crate) fn to_u32(v: i64, what: &'static str) -> Result<u32, Error> {
    u32::try_from(v).map_err(|_| invalid(what))
}

macro_rules! session_columns {
    () => {
        "s.tenant_id, s.client_id, s.owner, s.protocol, s.expiry_interval, s.expires_at, \
         s.connected, s.node_id, s.generation, s.connected_at, s.disconnected_at, s.will_topic, \
         s.will_payload, s.will_qos, s.will_retain, s.will_properties, s.will_delay, s.will_due_at"
    };
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    id: i64,
    tenant_id: String,
    client_id: String,
    owner: String,
    protocol: String,
    expiry_interval: i64,
    expires_at: Option<Ts>,
    connected: bool,
    node_id: Option<String>,
    generation: i64,
    connected_at: Ts,
    disconnected_at: Option<Ts>,
    will_topic: Option<String>,
    will_payload: Option<Vec<u8>>,
    will_qos: Option<i16>,
    will_retain: Option<bool>,
    will_properties: Option<Json<Value>>,
    will_delay: Option<i64>,
    will_due_at: Option<Ts>,
    queued: i64,
}

impl SessionRow {
    fn into_record(self) -> Result<(i64, i64, u64, SessionRecord), Error> {
        let will = match (
            self.will_topic,
            self.will_payload,
            self.will_qos,
            self.will_retain,
            self.will_properties,
            self.will_delay,
        ) {
            (Some(topic), Some(payload), Some(qos), Some(retain), Some(props), Some(delay)) => {
                Some(SessionWill {
                    topic,
                    payload,
                    qos: to_u8(qos, "will qos out of range")?,
                    retain,
                    properties: props.0,
                    delay: to_u32(delay, "will delay out of range")?,
                    due_at: self.will_due_at.map(|t| t.0),
                })
            }
            _ => None,
        };
        let record = SessionRecord {
            tenant_id: self.tenant_id,
            client_id: self.client_id,
            owner: self.owner,
            protocol: self.protocol,
            expiry_interval: to_u32(self.expiry_interval, "expiry interval out of range")?,
            expires_at: self.expires_at.map(|t| t.0),
            connected: self.connected,
            node_id: self.node_id,
            connected_at: self.connected_at.0,
            disconnected_at: self.disconnected_at.map(|t| t.0),
            will,
        };
        let queued = u64::try_from(self.queued).unwrap_or_default();
        Ok((self.id, self.generation, queued, record))
    }
}

#[derive(sqlx::FromRow)]
struct SubscriptionRow {
    session_id: i64,
    filter: String,
    qos: i16,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: i16,
    subscription_id: Option<i64>,
}

impl TryFrom<SubscriptionRow> for SessionSubscription {
    type Error = Error;

    fn try_from(r: SubscriptionRow) -> Result<Self, Error> {
        Ok(SessionSubscription {
            filter: r.filter,
            qos: to_u8(r.qos, "subscription qos out of range")?,
            no_local: r.no_local,
            retain_as_published: r.retain_as_published,
            retain_handling: to_u8(r.retain_handling, "retain handling out of range")?,
            subscription_id: r
                .subscription_id
                .map(|id| to_u32(id, "subscription identifier out of range"))
                .transpose()?,
        })
    }
}

impl Store {
    /// Every stored session of a tenant with its subscriptions and incoming
    /// QoS 2 ids, in client id order, whatever its deadlines: the broker
    /// applies them (a will due, a session expired while it was down).
    pub async fn load_sessions(&self, tenant_id: &str) -> Result<Vec<StoredSession>, Error> {
        self.load_sessions_of(tenant_id, None).await
    }

    /// The stored session of `client_id` in a tenant, as
    /// [`Store::load_sessions`] returns it: a session moving between the
    /// nodes of a cluster.
    pub async fn load_session(
        &self,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<Option<StoredSession>, Error> {
        Ok(self
            .load_sessions_of(tenant_id, Some(client_id))
            .await?
            .pop())
    }

    /// A tenant's sessions, or only `client_id`'s.
    async fn load_sessions_of(
        &self,
        tenant_id: &str,
        client_id: Option<&str>,
    ) -> Result<Vec<StoredSession>, Error> {
        const SESSIONS: &str = concat!(
            "SELECT s.id, ",
            session_columns!(),
            ", (SELECT COUNT(*) FROM mqtt_session_queue q WHERE q.session_id = s.id) AS queued \
             FROM mqtt_sessions s WHERE s.tenant_id = $1 \
             AND ($2 IS NULL OR s.client_id = $2) ORDER BY s.client_id"
        );
        const SUBSCRIPTIONS: &str = "SELECT x.session_id, x.filter, x.qos, x.no_local, \
             x.retain_as_published, x.retain_handling, x.subscription_id \
             FROM mqtt_session_subscriptions x JOIN mqtt_sessions s ON s.id = x.session_id \
             WHERE s.tenant_id = $1 AND ($2 IS NULL OR s.client_id = $2) \
             ORDER BY x.session_id, x.filter";
        const INCOMING: &str = "SELECT i.session_id, i.packet_id FROM mqtt_session_incoming i \
             JOIN mqtt_sessions s ON s.id = i.session_id WHERE s.tenant_id = $1 \
             AND ($2 IS NULL OR s.client_id = $2) ORDER BY i.session_id, i.packet_id";
        const COMPLETED: &str = "SELECT c.session_id, c.routed_id FROM mqtt_session_completed c \
             JOIN mqtt_sessions s ON s.id = c.session_id WHERE s.tenant_id = $1 \
             AND ($2 IS NULL OR s.client_id = $2) ORDER BY c.session_id, c.created_at DESC";
        let sessions = sql!(self, fetch_all as SessionRow => SESSIONS, tenant_id, client_id)?;
        let subscriptions =
            sql!(self, fetch_all as SubscriptionRow => SUBSCRIPTIONS, tenant_id, client_id)?;
        let incoming = sql!(self, fetch_all as (i64, i32) => INCOMING, tenant_id, client_id)?;
        let completed = sql!(self, fetch_all as (i64, Vec<u8>) => COMPLETED, tenant_id, client_id)?;
        let mut done: HashMap<i64, Vec<[u8; 16]>> = HashMap::new();
        for (session, routed_id) in completed {
            let routed_id = routed_id.try_into().map_err(|_| invalid("routed id"))?;
            let ids = done.entry(session).or_default();
            if ids.len() < COMPLETED_LOADED {
                ids.push(routed_id);
            }
        }
        let mut subs: HashMap<i64, Vec<SessionSubscription>> = HashMap::new();
        for row in subscriptions {
            let id = row.session_id;
            subs.entry(id).or_default().push(row.try_into()?);
        }
        let mut ids: HashMap<i64, Vec<u16>> = HashMap::new();
        for (session, packet_id) in incoming {
            let packet_id = u16::try_from(packet_id).map_err(|_| invalid("packet id"))?;
            ids.entry(session).or_default().push(packet_id);
        }
        sessions
            .into_iter()
            .map(|row| {
                let (id, generation, queued, record) = row.into_record()?;
                Ok(StoredSession {
                    record,
                    generation,
                    subscriptions: subs.remove(&id).unwrap_or_default(),
                    incoming_qos2: ids.remove(&id).unwrap_or_default(),
                    completed: done.remove(&id).unwrap_or_default(),
                    queued,
                })
            })
            .collect()
    }

    /// A tenant's sessions for the operator, in client id order. `NotFound`
    /// (tenant) when the tenant does not exist.
    pub async fn list_sessions(
        &self,
        tenant_id: &str,
        page: &Page,
    ) -> Result<Paged<SessionSummary>, Error> {
        let after = page.after_key(CursorKind::Sessions)?;
        let rows = self
            .session_summaries(tenant_id, after.as_deref(), None, page.fetch_limit())
            .await?;
        if rows.is_empty() && !self.tenant_exists(tenant_id).await? {
            return Err(Error::not_found("tenant", tenant_id.to_owned()));
        }
        Ok(Paged::from_rows(rows, page, CursorKind::Sessions, |s| {
            s.client_id.clone()
        }))
    }

    /// One session's line of the operator's view, or `NotFound`.
    pub async fn session_summary(
        &self,
        tenant_id: &str,
        client_id: &str,
    ) -> Result<SessionSummary, Error> {
        let mut rows = self
            .session_summaries(tenant_id, None, Some(client_id), 1)
            .await?;
        rows.pop()
            .ok_or_else(|| Error::not_found("session", client_id.to_owned()))
    }

    async fn session_summaries(
        &self,
        tenant_id: &str,
        after: Option<&str>,
        only: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SessionSummary>, Error> {
        let rows = on_pool!(self, pool => {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT s.client_id, s.owner, s.protocol, s.connected, s.node_id, s.expires_at, \
                 s.connected_at, s.disconnected_at, \
                 (SELECT COUNT(*) FROM mqtt_session_subscriptions x WHERE x.session_id = s.id) \
                 AS subscriptions, \
                 (SELECT COUNT(*) FROM mqtt_session_queue q WHERE q.session_id = s.id \
                 AND q.state = 'queued') AS queued, \
                 (SELECT COUNT(*) FROM mqtt_session_queue q WHERE q.session_id = s.id \
                 AND q.state <> 'queued') AS in_flight \
                 FROM mqtt_sessions s WHERE s.tenant_id = ",
            );
            q.push_bind(tenant_id);
            if let Some(after) = after {
                q.push(" AND s.client_id > ").push_bind(after);
            }
            if let Some(only) = only {
                q.push(" AND s.client_id = ").push_bind(only);
            }
            q.push(" ORDER BY s.client_id LIMIT ").push_bind(limit);
            q.build_query_as::<SessionSummary>().fetch_all(pool).await?
        });
        Ok(rows)
    }

    /// Ends a session (`DELETE /v1/tenants/{t}/sessions/{client_id}`) with
    /// its subscriptions, queue and message bodies no other queue holds.
    /// Returns whether it existed.
    pub async fn delete_session(&self, tenant_id: &str, client_id: &str) -> Result<bool, Error> {
        let writes = SessionWrites {
            deleted: vec![SessionKey::new(tenant_id, client_id)],
            ..SessionWrites::default()
        };
        Ok(self.write_sessions(&writes).await?.sessions_deleted > 0)
    }

    /// Ends every session `owner` created in a tenant (a device or a
    /// credential deleted). Returns how many. Deleting the tenant deletes
    /// its sessions by itself (cascade).
    pub async fn delete_sessions_of_owner(
        &self,
        tenant_id: &str,
        owner: &str,
    ) -> Result<u64, Error> {
        const SQL: &str = "SELECT client_id FROM mqtt_sessions WHERE tenant_id = $1 AND owner = $2";
        let clients: Vec<String> = sql!(self, fetch_all scalar => SQL, tenant_id, owner)?;
        if clients.is_empty() {
            return Ok(0);
        }
        let writes = SessionWrites {
            deleted: clients
                .into_iter()
                .map(|c| SessionKey::new(tenant_id, c))
                .collect(),
            ..SessionWrites::default()
        };
        Ok(self.write_sessions(&writes).await?.sessions_deleted)
    }

    /// Sessions whose will is due by `before` (oldest first, at most
    /// `limit`): their tenants must be brought into memory so that the
    /// will goes out, even if no client of the tenant comes back.
    pub async fn due_session_wills(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<SessionKey>, Error> {
        const SQL: &str = "SELECT tenant_id, client_id FROM mqtt_sessions \
             WHERE will_due_at <= $1 ORDER BY will_due_at LIMIT $2";
        let rows: Vec<(String, String)> = sql!(self, fetch_all as _ => SQL, Ts(before),
            i64::from(limit))?;
        Ok(rows
            .into_iter()
            .map(|(t, c)| SessionKey::new(t, c))
            .collect())
    }

    /// After a crash: the sessions `node_id` had connected are offline
    /// as of `at` (their deadlines start then, and their wills become due),
    /// as if their connections had been lost at that moment. Returns how
    /// many.
    pub async fn release_node_sessions(
        &self,
        node_id: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, Error> {
        let released = self.move_node_sessions(node_id, node_id, at, false).await?;
        Ok(released.len() as u64)
    }

    /// A dead node's sessions become `to`'s (issue 15): those it had
    /// connected are released as by [`Store::release_node_sessions`] (as
    /// of `at`, its last sign of life), and every session it held, those
    /// offline too, now names `to`. Returns the sessions taken.
    ///
    /// Each row is taken by one caller only: every statement is guarded
    /// by `node_id = dead`, and on Postgres a concurrent caller's UPDATE
    /// waits for the first's row locks, then finds the rows no longer
    /// naming the dead node and skips them. So survivors racing for the
    /// same dead node (or the node itself restarting and releasing its
    /// own) never both take a session.
    pub async fn adopt_node_sessions(
        &self,
        dead: &str,
        to: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<SessionKey>, Error> {
        self.move_node_sessions(dead, to, at, true).await
    }

    /// The sessions `from` had connected, released as of `at` and given to
    /// `to` (`to` = `from` at a restart); with `offline_too`, `from`'s
    /// offline sessions are given to `to` as well. One transaction.
    async fn move_node_sessions(
        &self,
        from: &str,
        to: &str,
        at: DateTime<Utc>,
        offline_too: bool,
    ) -> Result<Vec<SessionKey>, Error> {
        const GROUPS: &str = "SELECT DISTINCT expiry_interval, will_delay FROM mqtt_sessions \
             WHERE connected AND node_id = $1";
        const UPDATE: &str = "UPDATE mqtt_sessions SET connected = FALSE, node_id = $1, \
             disconnected_at = $2, updated_at = $2, expires_at = $3, will_due_at = $4 \
             WHERE connected AND node_id = $5 AND expiry_interval = $6 AND will_delay = $7 \
             RETURNING tenant_id, client_id";
        const UPDATE_NO_WILL: &str = "UPDATE mqtt_sessions SET connected = FALSE, \
             node_id = $1, disconnected_at = $2, updated_at = $2, expires_at = $3, \
             will_due_at = $4 WHERE connected AND node_id = $5 AND expiry_interval = $6 \
             AND will_delay IS NULL RETURNING tenant_id, client_id";
        const OFFLINE: &str = "UPDATE mqtt_sessions SET node_id = $1, updated_at = $2 \
             WHERE node_id = $3 AND NOT connected RETURNING tenant_id, client_id";
        // u32::MAX seconds: the session never expires (MQTT 3.1.2.11.2).
        let deadline =
            |secs: i64| (secs < i64::from(u32::MAX)).then(|| at + chrono::Duration::seconds(secs));
        let mut moved: Vec<(String, String)> = Vec::new();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let groups: Vec<(i64, Option<i64>)> = sqlx::query_as(GROUPS)
                .bind(from)
                .fetch_all(&mut *tx)
                .await?;
            for (interval, delay) in groups {
                // 3.1.3.2.2: the will goes at the earlier of its delay and
                // the session's end.
                let due = delay.map(|d| Ts(at + chrono::Duration::seconds(d.min(interval))));
                let query = sqlx::query_as(if delay.is_some() { UPDATE } else { UPDATE_NO_WILL })
                    .bind(to)
                    .bind(Ts(at))
                    .bind(deadline(interval).map(Ts))
                    .bind(due)
                    .bind(from)
                    .bind(interval);
                let query = match delay {
                    Some(d) => query.bind(d),
                    None => query,
                };
                moved.extend(query.fetch_all(&mut *tx).await?);
            }
            if offline_too {
                let offline: Vec<(String, String)> =
                    sql!(in &mut *tx, fetch_all as _ => OFFLINE, to, Ts(at), from)?;
                moved.extend(offline);
            }
            tx.commit().await?;
        });
        Ok(moved
            .into_iter()
            .map(|(t, c)| SessionKey::new(t, c))
            .collect())
    }

    /// The nodes that rows name as serving something now: sessions
    /// (connected, or held offline with their subscriptions) and online
    /// devices. A cluster member that names another one whose lease is
    /// gone has found a dead node (issue 15); a node holding only offline
    /// sessions counts, since routing reaches them through it alone. A
    /// walk over two indexes, one step per distinct node, so the cost
    /// grows with the nodes, not the rows.
    pub async fn nodes_in_use(&self) -> Result<Vec<String>, Error> {
        const SQL: &str = "WITH RECURSIVE \
             s(node_id) AS ( \
               SELECT (SELECT MIN(node_id) FROM mqtt_sessions) \
               UNION ALL \
               SELECT (SELECT MIN(x.node_id) FROM mqtt_sessions x \
                       WHERE x.node_id > s.node_id) \
               FROM s WHERE s.node_id IS NOT NULL), \
             p(node_id) AS ( \
               SELECT (SELECT MIN(node_id) FROM device_presence WHERE status = 'online') \
               UNION ALL \
               SELECT (SELECT MIN(y.node_id) FROM device_presence y \
                       WHERE y.status = 'online' AND y.node_id > p.node_id) \
               FROM p WHERE p.node_id IS NOT NULL) \
             SELECT node_id FROM s WHERE node_id IS NOT NULL \
             UNION SELECT node_id FROM p WHERE node_id IS NOT NULL";
        let mut nodes: Vec<String> = sql!(self, fetch_all scalar => SQL)?;
        nodes.sort_unstable();
        Ok(nodes)
    }
}
