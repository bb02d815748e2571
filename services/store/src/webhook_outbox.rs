//! The webhook outbox: events appended by whoever caused them, and the
//! fan-out that turns each event into deliveries, exactly once. Events of
//! a change of ours (REST changes through `change_events.rs`, webhook
//! bookkeeping) are appended inside the change's transaction, so they
//! exist if and only if their change does; the broker's events, which have
//! no transaction of ours, come through the bounded `OutboxWriter` of the
//! webhooks crate ([`Store::append_outbox_events`]).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, Sqlite, SqliteConnection, Transaction};

use crate::codec::{Ts, now};
use crate::webhook_endpoints::endpoint_columns;
use crate::{Error, Store, WebhookEndpoint};

/// The `ordering_key` of an endpoint's batches: batches go out one at a time.
/// Device ids cannot contain `#`, so it never meets a device's key.
const BATCH_ORDERING_KEY: &str = "#batch";

/// The Postgres advisory lock the fan-out holds ("fleetwh" in ASCII): one
/// fan-out at a time, so deliveries are created in event order.
const POSTGRES_FAN_OUT_LOCK_KEY: i64 = 0x0066_6c65_6574_7768;

/// An event as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct OutboxEvent {
    /// Increasing with insertion order.
    pub id: i64,
    pub tenant_id: String,
    /// E.g. `device.connected`, `message.published`.
    pub event_type: String,
    /// The body's `data`.
    #[sqlx(json)]
    pub payload: Value,
    pub device_id: Option<String>,
    pub device_seq: Option<i64>,
    /// For message events: the MQTT topic (tenant-relative).
    pub topic: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewOutboxEvent {
    pub tenant_id: String,
    pub event_type: String,
    pub payload: Value,
    /// Events of one device are delivered to each endpoint in order.
    pub device_id: Option<String>,
    pub device_seq: Option<i64>,
    pub topic: Option<String>,
}

impl NewOutboxEvent {
    /// An event not about a device; set the other fields after.
    pub fn new(
        tenant_id: impl Into<String>,
        event_type: impl Into<String>,
        payload: Value,
    ) -> NewOutboxEvent {
        NewOutboxEvent {
            tenant_id: tenant_id.into(),
            event_type: event_type.into(),
            payload,
            device_id: None,
            device_seq: None,
            topic: None,
        }
    }

    /// `event` of `tenant_id`, not about a device; set the other fields
    /// after.
    pub fn of(tenant_id: impl Into<String>, event: &events::Event) -> NewOutboxEvent {
        NewOutboxEvent::new(tenant_id, event.event_type(), event.data())
    }
}

macro_rules! outbox_columns {
    () => {
        "id, tenant_id, event_type, payload, device_id, device_seq, topic, created_at"
    };
}
pub(crate) use outbox_columns;

/// A transaction on whichever backend the store has, for callers that write
/// their change and its events atomically: `store.begin()`, do the change
/// on the inner transaction, [`StoreTx::append_outbox_events`], `commit`.
pub enum StoreTx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl StoreTx {
    pub async fn commit(self) -> Result<(), Error> {
        match self {
            StoreTx::Sqlite(tx) => tx.commit().await?,
            StoreTx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), Error> {
        match self {
            StoreTx::Sqlite(tx) => tx.rollback().await?,
            StoreTx::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }

    /// Append events in this transaction, in order; their ids come back.
    pub async fn append_outbox_events(
        &mut self,
        events: &[NewOutboxEvent],
    ) -> Result<Vec<i64>, Error> {
        match self {
            StoreTx::Sqlite(tx) => append_sqlite(tx, events).await,
            StoreTx::Postgres(tx) => append_postgres(tx, events).await,
        }
    }
}

const APPEND_SQL: &str = concat!(
    "INSERT INTO webhook_outbox (tenant_id, event_type, payload, device_id, device_seq, topic, ",
    "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id"
);

/// Appends on one connection of either backend; one body, checked twice.
macro_rules! append_on {
    ($conn:expr, $events:expr) => {{
        let at = Ts(now());
        let mut ids = Vec::with_capacity($events.len());
        for event in $events {
            let id: i64 = sql!(in &mut *$conn, fetch_one scalar => APPEND_SQL, &event.tenant_id,
                &event.event_type, Json(&event.payload), event.device_id.as_deref(),
                event.device_seq, event.topic.as_deref(), at)
            .map_err(tenant_missing)?;
            ids.push(id);
        }
        Ok(ids)
    }};
}

/// Append events on a SQLite connection the caller holds (in its
/// transaction).
pub async fn append_sqlite(
    conn: &mut SqliteConnection,
    events: &[NewOutboxEvent],
) -> Result<Vec<i64>, Error> {
    append_on!(conn, events)
}

/// Append events on a Postgres connection the caller holds (in its
/// transaction).
pub async fn append_postgres(
    conn: &mut PgConnection,
    events: &[NewOutboxEvent],
) -> Result<Vec<i64>, Error> {
    append_on!(conn, events)
}

fn tenant_missing(e: sqlx::Error) -> Error {
    match crate::error::violation(&e) {
        Some(crate::error::Violation::ForeignKey) => Error::NotFound {
            kind: "tenant",
            id: "(outbox event)".to_owned(),
        },
        _ => e.into(),
    }
}

/// Where the fan-out sends one event for one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Not to this endpoint.
    Skip,
    /// A delivery of its own.
    Single,
    /// Into the endpoint's open batch.
    Batch,
}

/// How big and how old a batch may get before it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_events: u32,
    pub max_wait: Duration,
}

/// How many events one fan-out round takes.
#[derive(Debug, Clone, Copy)]
struct FanOutLimits {
    round: u32,
    per_tenant: u32,
}

/// What one fan-out round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOut {
    pub events: usize,
    pub deliveries_created: usize,
    pub batched: usize,
}

/// A batch being filled during one fan-out round.
struct OpenBatch {
    delivery_id: i64,
    event_count: i64,
}

/// A new pending delivery with no events yet: `$1` tenant, `$2` endpoint,
/// `$3` event type, `$4` ordering key, `$5` whether it is an open batch,
/// `$6` when it is due, `$7` now. Its id comes back.
pub(crate) const NEW_DELIVERY: &str = concat!(
    "INSERT INTO webhook_deliveries (tenant_id, endpoint_id, event_type, ordering_key, ",
    "status, batch_open, event_count, attempts, next_attempt_at, created_at, updated_at) ",
    "VALUES ($1, $2, $3, $4, 'pending', $5, 0, 0, $6, $7, $7) RETURNING id"
);

/// Event `$2` as the next of delivery `$1`; [`COUNT_EVENT`] then counts it.
pub(crate) const ADD_EVENT: &str = concat!(
    "INSERT INTO webhook_delivery_events (delivery_id, position, event_id) ",
    "VALUES ($1, (SELECT event_count FROM webhook_deliveries WHERE id = $1), $2)"
);

/// Counts an event added to delivery `$1` at `$3`: a batch that reaches its
/// size `$2` closes and is due at once.
pub(crate) const COUNT_EVENT: &str = concat!(
    "UPDATE webhook_deliveries SET event_count = event_count + 1, ",
    "batch_open = (batch_open AND event_count + 1 < $2), ",
    "next_attempt_at = CASE WHEN event_count + 1 >= $2 THEN $3 ELSE next_attempt_at END, ",
    "updated_at = $3 WHERE id = $1"
);

/// Outbox event `$1` has been turned into deliveries at `$2`.
pub(crate) const DISPATCHED: &str = "UPDATE webhook_outbox SET dispatched_at = $2 WHERE id = $1";

/// The fan-out body for one backend's connection type. `$lock_batch` is the
/// row-lock suffix for reading an open batch (Postgres locks it against a
/// concurrent claim; SQLite already holds the only write lock).
macro_rules! fan_out_on {
    ($conn:expr, $limit:expr, $batch:expr, $route:expr, $lock_batch:literal) => {{
        // Each tenant's oldest, at most $2 of them (the partial index on
        // (tenant_id, id) serves the window), oldest first overall.
        const EVENTS: &str = concat!(
            "SELECT ",
            outbox_columns!(),
            " FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY tenant_id ORDER BY id) AS turn ",
            "FROM webhook_outbox WHERE dispatched_at IS NULL) AS waiting ",
            "WHERE turn <= $2 ORDER BY id LIMIT $1"
        );
        const ENDPOINTS: &str = concat!(
            "SELECT ",
            endpoint_columns!(),
            " FROM webhook_endpoints WHERE tenant_id = $1 AND enabled ORDER BY id"
        );
        const OPEN_BATCH: &str = concat!(
            "SELECT id, event_count FROM webhook_deliveries WHERE endpoint_id = $1 ",
            "AND batch_open AND status = 'pending' ORDER BY id DESC LIMIT 1",
            $lock_batch
        );

        let limits: FanOutLimits = $limit;
        let max_events = i64::from($batch.max_events.max(1));
        let at = now();
        let batch_due =
            at + chrono::Duration::from_std($batch.max_wait).unwrap_or(chrono::Duration::zero());
        let events = sql!(in &mut *$conn, fetch_all as OutboxEvent => EVENTS,
            i64::from(limits.round), i64::from(limits.per_tenant))?;
        let mut endpoints: HashMap<String, Vec<WebhookEndpoint>> = HashMap::new();
        let mut batches: HashMap<String, OpenBatch> = HashMap::new();
        let mut done = FanOut {
            events: events.len(),
            ..FanOut::default()
        };
        for event in &events {
            if !endpoints.contains_key(&event.tenant_id) {
                let tenant_endpoints = sql!(in &mut *$conn,
                    fetch_all as WebhookEndpoint => ENDPOINTS, &event.tenant_id)?;
                endpoints.insert(event.tenant_id.clone(), tenant_endpoints);
            }
            let tenant_endpoints = endpoints
                .get(&event.tenant_id)
                .map_or(&[][..], Vec::as_slice);
            for endpoint in tenant_endpoints {
                let delivery_id: i64 = match $route(event, endpoint) {
                    Route::Skip => continue,
                    Route::Single => {
                        done.deliveries_created += 1;
                        sql!(in &mut *$conn, fetch_one scalar => NEW_DELIVERY, &event.tenant_id,
                            &endpoint.id, &event.event_type, event.device_id.as_deref(), false,
                            Ts(at), Ts(at))?
                    }
                    Route::Batch => {
                        done.batched += 1;
                        let open = match batches.remove(&endpoint.id) {
                            Some(open) => Some(open),
                            None => sql!(in &mut *$conn,
                                fetch_optional as (i64, i32) => OPEN_BATCH, &endpoint.id)?
                                .map(|(delivery_id, event_count)| OpenBatch {
                                    delivery_id,
                                    event_count: i64::from(event_count),
                                }),
                        };
                        let open = match open {
                            Some(open) if open.event_count < max_events => open,
                            _ => {
                                done.deliveries_created += 1;
                                let delivery_id = sql!(in &mut *$conn,
                                    fetch_one scalar => NEW_DELIVERY, &event.tenant_id,
                                    &endpoint.id, events::EventType::MessageBatch.as_str(),
                                    BATCH_ORDERING_KEY, true, Ts(batch_due), Ts(at))?;
                                OpenBatch {
                                    delivery_id,
                                    event_count: 0,
                                }
                            }
                        };
                        batches.insert(
                            endpoint.id.clone(),
                            OpenBatch {
                                delivery_id: open.delivery_id,
                                event_count: open.event_count + 1,
                            },
                        );
                        open.delivery_id
                    }
                };
                sql!(in &mut *$conn, execute => ADD_EVENT, delivery_id, event.id)?;
                sql!(in &mut *$conn, execute => COUNT_EVENT, delivery_id, max_events, Ts(at))?;
            }
            sql!(in &mut *$conn, execute => DISPATCHED, event.id, Ts(at))?;
        }
        Ok::<FanOut, Error>(done)
    }};
}

impl Store {
    /// Begin a transaction (on SQLite an IMMEDIATE one: it takes the write
    /// lock now rather than failing to upgrade later).
    pub async fn begin(&self) -> Result<StoreTx, Error> {
        Ok(match &self.pool {
            crate::store::Pool::Sqlite(pool) => {
                StoreTx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?)
            }
            crate::store::Pool::Postgres(pool) => StoreTx::Postgres(pool.begin().await?),
        })
    }

    /// Append events, in order, in one transaction of their own (for
    /// producers with no change of their own to commit, such as messages).
    #[tracing::instrument(skip_all, fields(count = events.len()))]
    pub async fn append_outbox_events(&self, events: &[NewOutboxEvent]) -> Result<Vec<i64>, Error> {
        let mut tx = self.begin().await?;
        let ids = tx.append_outbox_events(events).await?;
        tx.commit().await?;
        Ok(ids)
    }

    /// Every event in the outbox, oldest first, fanned out or not: for
    /// tests of what was written.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) async fn outbox_events(&self) -> Result<Vec<OutboxEvent>, Error> {
        const SQL: &str = concat!(
            "SELECT ",
            outbox_columns!(),
            " FROM webhook_outbox ORDER BY id"
        );
        Ok(sql!(self, fetch_all as OutboxEvent => SQL)?)
    }

    /// Events not yet fanned out.
    pub async fn undispatched_outbox_len(&self) -> Result<i64, Error> {
        const SQL: &str = "SELECT COUNT(*) FROM webhook_outbox WHERE dispatched_at IS NULL";
        Ok(on_pool!(self, pool => sqlx::query_scalar::<_, i64>(SQL).fetch_one(pool).await?))
    }

    /// Events not yet fanned out, of each of `tenants` that has any.
    pub async fn undispatched_outbox_len_of(
        &self,
        tenants: &[&str],
    ) -> Result<HashMap<String, i64>, Error> {
        if tenants.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(String, i64)> = on_pool!(self, pool => {
            let mut q = sqlx::QueryBuilder::new(
                "SELECT tenant_id, COUNT(*) FROM webhook_outbox \
                 WHERE dispatched_at IS NULL AND tenant_id IN (",
            );
            let mut ids = q.separated(", ");
            for tenant in tenants {
                ids.push_bind(*tenant);
            }
            q.push(") GROUP BY tenant_id");
            q.build_query_as().fetch_all(pool).await?
        });
        Ok(rows.into_iter().collect())
    }

    /// Turn up to `limit` undispatched events, oldest first, into deliveries
    /// for the enabled endpoints of their tenants, as `route` says, and
    /// mark them dispatched; all in one transaction, so each event fans out
    /// exactly once even if the process dies half-way.
    pub async fn fan_out_outbox(
        &self,
        limit: u32,
        batch: BatchLimits,
        route: impl Fn(&OutboxEvent, &WebhookEndpoint) -> Route,
    ) -> Result<FanOut, Error> {
        self.fan_out_outbox_fair(limit, limit, batch, route).await
    }

    /// [`Store::fan_out_outbox`] taking at most `per_tenant` events of any
    /// one tenant (its oldest), so a tenant's backlog delays another
    /// tenant's events by one round at most.
    pub async fn fan_out_outbox_fair(
        &self,
        limit: u32,
        per_tenant: u32,
        batch: BatchLimits,
        route: impl Fn(&OutboxEvent, &WebhookEndpoint) -> Route,
    ) -> Result<FanOut, Error> {
        let limit = FanOutLimits {
            round: limit,
            per_tenant: per_tenant.max(1),
        };
        match &self.pool {
            crate::store::Pool::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let done = fan_out_on!(tx, limit, batch, route, "")?;
                tx.commit().await?;
                Ok(done)
            }
            crate::store::Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                const LOCK: &str = "SELECT pg_advisory_xact_lock($1)";
                sql!(in &mut *tx, execute => LOCK, POSTGRES_FAN_OUT_LOCK_KEY)?;
                let done = fan_out_on!(tx, limit, batch, route, " FOR UPDATE")?;
                tx.commit().await?;
                Ok(done)
            }
        }
    }
}
