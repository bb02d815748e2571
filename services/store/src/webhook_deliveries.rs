//! Webhook deliveries (one per HTTP request) and their attempt log: what
//! the API lists and redelivers, and what the worker records. Claiming is
//! in `webhook_claims.rs`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::{append_audit_in, audited_tx};
use crate::codec::{Ts, now};
use crate::pki::text_enum;
use crate::webhook_claims::prefixed_outbox_columns;
use crate::webhook_outbox::{ADD_EVENT, COUNT_EVENT, DISPATCHED, NEW_DELIVERY};
use crate::{AuditOf, Error, NewAuditEntry, NewOutboxEvent, OutboxEvent, Store};

const KIND: &str = "webhook delivery";

text_enum!(
    /// Where a delivery stands.
    #[derive(Serialize)]
    #[serde(rename_all = "lowercase")]
    DeliveryStatus, "delivery status" {
        Pending = "pending",
        Delivering = "delivering",
        Delivered = "delivered",
        Failed = "failed",
    }
);

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryStatus {
    type Err = Error;

    /// A status a caller names (a list filter): an unknown one is the
    /// caller's mistake, not a corrupt row.
    fn from_str(s: &str) -> Result<Self, Error> {
        DeliveryStatus::parse(s).map_err(|_| Error::InvalidId {
            kind: "delivery status",
            id: s.chars().take(32).collect(),
            expected: "pending, delivering, delivered or failed",
        })
    }
}

/// One delivery: one request's worth of events to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct WebhookDelivery {
    pub id: i64,
    pub tenant_id: String,
    pub endpoint_id: String,
    /// The body's `type`.
    pub event_type: String,
    pub ordering_key: Option<String>,
    pub status: DeliveryStatus,
    pub event_count: i32,
    pub attempts: i32,
    /// Pending: when it is due. Delivering: when the claim's lease ends.
    pub next_attempt_at: DateTime<Utc>,
    pub last_status: Option<i32>,
    pub last_latency_ms: Option<i64>,
    pub last_error: Option<String>,
    pub last_response: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! delivery_columns {
    () => {
        "id, tenant_id, endpoint_id, event_type, ordering_key, status, event_count, attempts, \
         next_attempt_at, last_status, last_latency_ms, last_error, last_response, created_at, \
         updated_at"
    };
}
pub(crate) use delivery_columns;

/// A tenant's delivery: `$1` tenant, `$2` id.
const GET_DELIVERY: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    " FROM webhook_deliveries WHERE tenant_id = $1 AND id = $2"
);

/// One logged attempt.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct WebhookAttempt {
    pub id: i64,
    pub delivery_id: i64,
    pub attempted_at: DateTime<Utc>,
    /// The HTTP status, if a response came.
    pub status_code: Option<i32>,
    pub latency_ms: i64,
    /// At most 1 KiB of the response body.
    pub response: Option<String>,
    pub error: Option<String>,
}

/// What happened on one attempt, to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub status_code: Option<u16>,
    pub latency: Duration,
    pub response: Option<String>,
    pub error: Option<String>,
}

/// What to do with the delivery after an attempt (the worker decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Try again at this time.
    Retry {
        at: DateTime<Utc>,
    },
    /// No more attempts.
    Failed,
    /// No more attempts, and disable the endpoint at once (410 Gone).
    FailedAndDisable {
        reason: String,
    },
}

/// What recording an attempt did to the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecorded {
    pub status: DeliveryStatus,
    /// Set when this attempt disabled the endpoint (and an event said so).
    pub endpoint_disabled: Option<String>,
}

/// Pending deliveries of one endpoint, for the queue-depth gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    pub tenant_id: String,
    pub endpoint_id: String,
    pub pending: i64,
}

impl Store {
    /// The events a delivery carries, in order.
    pub async fn delivery_events(&self, delivery_id: i64) -> Result<Vec<OutboxEvent>, Error> {
        let sql = format!(
            "SELECT {} FROM webhook_outbox o JOIN webhook_delivery_events de \
             ON de.event_id = o.id WHERE de.delivery_id = $1 ORDER BY de.position",
            prefixed_outbox_columns()
        );
        Ok(
            sql!(self, fetch_all as OutboxEvent => sqlx::AssertSqlSafe(sql.as_str()),
            delivery_id)?,
        )
    }

    /// Log an attempt and move the delivery on as `outcome` says.
    /// Deliveries given up (their schedule exhausted) count towards the
    /// endpoint's run of failures, attempts to be retried do not; the run
    /// reaching `disable_after`
    /// (or `FailedAndDisable`) disables the endpoint and appends a
    /// `webhook.endpoint_disabled` event, in the same transaction.
    #[tracing::instrument(skip_all, fields(delivery_id = delivery_id))]
    pub async fn record_webhook_attempt(
        &self,
        delivery_id: i64,
        record: &AttemptRecord,
        outcome: &AttemptOutcome,
        disable_after: u32,
    ) -> Result<AttemptRecorded, Error> {
        const LOG: &str = concat!(
            "INSERT INTO webhook_attempts (delivery_id, attempted_at, status_code, latency_ms, ",
            "response, error) VALUES ($1, $2, $3, $4, $5, $6)"
        );
        const UPDATE: &str = concat!(
            "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, ",
            "next_attempt_at = $3, last_status = $4, last_latency_ms = $5, last_error = $6, ",
            "last_response = $7, updated_at = $8 WHERE id = $1 RETURNING endpoint_id, tenant_id"
        );
        const SUCCESS: &str = "UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE id = $1";
        const FAILURE: &str = concat!(
            "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1 ",
            "WHERE id = $1 RETURNING consecutive_failures, enabled"
        );
        const DISABLE: &str = concat!(
            "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $2, updated_at = $3 ",
            "WHERE id = $1 AND enabled"
        );
        let at = now();
        let (status, next_at) = match outcome {
            AttemptOutcome::Delivered => (DeliveryStatus::Delivered, at),
            AttemptOutcome::Retry { at: retry_at } => (DeliveryStatus::Pending, *retry_at),
            AttemptOutcome::Failed | AttemptOutcome::FailedAndDisable { .. } => {
                (DeliveryStatus::Failed, at)
            }
        };
        let latency_ms = i64::try_from(record.latency.as_millis()).unwrap_or(i64::MAX);
        let status_code = record.status_code.map(i32::from);
        let mut tx = self.begin().await?;
        let mut disabled = None;
        macro_rules! body {
            ($conn:expr) => {{
                sql!(in &mut *$conn, execute => LOG, delivery_id, Ts(at), status_code, latency_ms,
                    record.response.as_deref(), record.error.as_deref())?;
                let updated: Option<(String, String)> = sql!(in &mut *$conn,
                    fetch_optional as _ => UPDATE, delivery_id, status.as_str(), Ts(next_at),
                    status_code, latency_ms, record.error.as_deref(), record.response.as_deref(),
                    Ts(at))?;
                let (endpoint_id, tenant_id) = updated.ok_or_else(|| not_found(delivery_id))?;
                if status == DeliveryStatus::Delivered {
                    sql!(in &mut *$conn, execute => SUCCESS, &endpoint_id)?;
                    None
                } else if status == DeliveryStatus::Pending {
                    // A retry to come is no failure of the endpoint yet:
                    // counting every attempt would disable an endpoint
                    // whose receiver is down for ten minutes as soon as a
                    // few dozen devices each had a delivery retried, and
                    // their events would wait for a person to re-enable it.
                    None
                } else {
                    let (failures, enabled): (i32, bool) =
                        sql!(in &mut *$conn, fetch_one as _ => FAILURE, &endpoint_id)?;
                    let reason = match outcome {
                        AttemptOutcome::FailedAndDisable { reason } => Some(reason.clone()),
                        _ if i64::from(failures) >= i64::from(disable_after.max(1)) => {
                            Some(format!("{failures} consecutive failed attempts"))
                        }
                        _ => None,
                    };
                    if let Some(reason) = reason.filter(|_| enabled) {
                        sql!(in &mut *$conn, execute => DISABLE, &endpoint_id, &reason, Ts(at))?;
                        tracing::warn!(tenant = %tenant_id, webhook_id = %endpoint_id,
                            %reason, "webhook endpoint disabled");
                        let event = NewOutboxEvent::of(
                            tenant_id.clone(),
                            &events::Event::WebhookEndpointDisabled(
                                events::payload::EndpointDisabled {
                                    webhook_id: endpoint_id.clone(),
                                    reason: reason.clone(),
                                },
                            ),
                        );
                        disabled = Some(reason);
                        Some(event)
                    } else {
                        None
                    }
                }
            }};
        }
        let event = on_tx!(&mut tx, conn => body!(conn));
        if let Some(event) = event {
            tx.append_outbox_events(&[event]).await?;
        }
        tx.commit().await?;
        Ok(AttemptRecorded {
            status,
            endpoint_disabled: disabled,
        })
    }

    /// One delivery of a tenant, or `NotFound`.
    pub async fn get_webhook_delivery(
        &self,
        tenant_id: &str,
        id: i64,
    ) -> Result<WebhookDelivery, Error> {
        let row = sql!(self, fetch_optional as WebhookDelivery => GET_DELIVERY, tenant_id, id)?;
        row.ok_or_else(|| not_found(id))
    }

    /// An endpoint's deliveries, newest first, optionally of one status:
    /// up to `limit` with ids below `before` (a keyset page: pass the last
    /// id of the previous page).
    pub async fn list_webhook_deliveries(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        status: Option<DeliveryStatus>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, Error> {
        const SQL: &str = concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM webhook_deliveries WHERE tenant_id = $1 AND endpoint_id = $2 ",
            "AND ($3 IS NULL OR status = $3) AND id < $4 ORDER BY id DESC LIMIT $5"
        );
        let rows = sql!(self, fetch_all as WebhookDelivery => SQL, tenant_id, endpoint_id,
            status.map(DeliveryStatus::as_str), before.unwrap_or(i64::MAX),
            i64::from(limit.clamp(1, 1000)))?;
        Ok(rows)
    }

    /// A delivery's attempts, oldest first.
    pub async fn list_webhook_attempts(
        &self,
        tenant_id: &str,
        delivery_id: i64,
    ) -> Result<Vec<WebhookAttempt>, Error> {
        const SQL: &str = concat!(
            "SELECT a.id, a.delivery_id, a.attempted_at, a.status_code, a.latency_ms, ",
            "a.response, a.error FROM webhook_attempts a JOIN webhook_deliveries d ",
            "ON d.id = a.delivery_id WHERE d.tenant_id = $1 AND a.delivery_id = $2 ORDER BY a.id"
        );
        Ok(sql!(self, fetch_all as WebhookAttempt => SQL, tenant_id, delivery_id)?)
    }

    /// Send a delivery again from the start of the schedule (a finished one
    /// as well as a pending one, which becomes due now). One being sent
    /// right now is left alone. With `audit`, the entry is written in the
    /// same transaction (when the delivery exists).
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, delivery_id = id))]
    pub async fn redeliver_webhook_delivery(
        &self,
        tenant_id: &str,
        id: i64,
        audit: Option<&NewAuditEntry>,
    ) -> Result<WebhookDelivery, Error> {
        const SQL: &str = concat!(
            "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, batch_open = FALSE, ",
            "next_attempt_at = $3, updated_at = $3 WHERE tenant_id = $1 AND id = $2 ",
            "AND status <> 'delivering'"
        );
        let row = audited_tx!(self, audit, Option::is_some, tx => {
            sql!(in &mut *tx, execute => SQL, tenant_id, id, Ts(now()))?;
            sql!(in &mut *tx, fetch_optional as WebhookDelivery => GET_DELIVERY, tenant_id, id)?
        });
        row.ok_or_else(|| not_found(id))
    }

    /// Queue a delivery of one event to one endpoint only, bypassing the
    /// fan-out (a test ping). The event is stored as already dispatched.
    /// With `audit`, the entry it makes of the new delivery (whose id is
    /// made here) is written in the same transaction.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, webhook_id = %endpoint_id))]
    pub async fn enqueue_direct_delivery(
        &self,
        tenant_id: &str,
        endpoint_id: &str,
        event_type: &str,
        payload: serde_json::Value,
        audit: Option<AuditOf<'_, WebhookDelivery>>,
    ) -> Result<WebhookDelivery, Error> {
        // Checks the endpoint is the tenant's.
        self.get_webhook_endpoint(tenant_id, endpoint_id).await?;
        let mut tx = self.begin().await?;
        let event = NewOutboxEvent::new(tenant_id, event_type, payload);
        let event_id = tx
            .append_outbox_events(&[event])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| not_found(0))?;
        const GET: &str = concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM webhook_deliveries WHERE id = $1"
        );
        let at = Ts(now());
        macro_rules! body {
            ($conn:expr) => {{
                sql!(in &mut *$conn, execute => DISPATCHED, event_id, at)?;
                // The statements of the fan-out's own deliveries: a delivery
                // of one event, not a batch, with no ordering key, due now.
                let id: i64 = sql!(in &mut *$conn, fetch_one scalar => NEW_DELIVERY, tenant_id,
                    endpoint_id, event_type, None::<&str>, false, at, at)?;
                sql!(in &mut *$conn, execute => ADD_EVENT, id, event_id)?;
                sql!(in &mut *$conn, execute => COUNT_EVENT, id, 1_i64, at)?;
                let delivery = sql!(in &mut *$conn, fetch_one as WebhookDelivery => GET, id)?;
                if let Some(audit) = audit {
                    append_audit_in!(&mut *$conn, &audit(&delivery))?;
                }
                delivery
            }};
        }
        let delivery = on_tx!(&mut tx, conn => body!(conn));
        tx.commit().await?;
        Ok(delivery)
    }

    /// Delete finished deliveries (delivered or failed) last touched before
    /// `before`, with their attempts, and dispatched outbox events older
    /// than `before` that no remaining delivery carries. Returns how many
    /// deliveries and events went. Run it periodically to keep the log
    /// bounded.
    #[tracing::instrument(skip_all)]
    pub async fn prune_webhook_history(&self, before: DateTime<Utc>) -> Result<(u64, u64), Error> {
        const DELIVERIES: &str = concat!(
            "DELETE FROM webhook_deliveries WHERE status IN ('delivered', 'failed') ",
            "AND updated_at < $1"
        );
        const EVENTS: &str = concat!(
            "DELETE FROM webhook_outbox WHERE dispatched_at IS NOT NULL AND dispatched_at < $1 ",
            "AND NOT EXISTS (SELECT 1 FROM webhook_delivery_events de WHERE de.event_id = webhook_outbox.id)"
        );
        let deliveries = sql!(self, execute => DELIVERIES, Ts(before))?;
        let events = sql!(self, execute => EVENTS, Ts(before))?;
        tracing::info!(deliveries, events, "webhook history pruned");
        Ok((deliveries, events))
    }

    /// Pending and in-flight deliveries per endpoint (endpoints with none
    /// are left out).
    pub async fn webhook_queue_depths(&self) -> Result<Vec<QueueDepth>, Error> {
        const SQL: &str = concat!(
            "SELECT tenant_id, endpoint_id, COUNT(*) FROM webhook_deliveries ",
            "WHERE status IN ('pending', 'delivering') GROUP BY tenant_id, endpoint_id ",
            "ORDER BY endpoint_id"
        );
        let rows = sql!(self, fetch_all as (String, String, i64) => SQL)?;
        Ok(rows
            .into_iter()
            .map(|(tenant_id, endpoint_id, pending)| QueueDepth {
                tenant_id,
                endpoint_id,
                pending,
            })
            .collect())
    }
}

fn not_found(id: i64) -> Error {
    Error::not_found(KIND, id.to_string())
}
