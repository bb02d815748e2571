//! Claiming webhook deliveries: the worker's side of the queue.
//!
//! Claiming is fair and ordered. Each round takes due deliveries round-robin
//! over tenants and, within a tenant, over its endpoints, at most
//! `per_endpoint` in flight for any endpoint and `per_tenant` for any
//! tenant (counting those other workers hold), so one endpoint's backlog
//! never starves another's, and a tenant with many slow endpoints holds at
//! most `per_tenant` of a worker's slots: another tenant's due delivery is
//! claimed in the next round whatever the first tenant has queued. Deliveries with the same `ordering_key` (the device) go out one
//! at a time, in id order. A claim is a lease: `next_attempt_at` becomes its
//! end, and a delivery whose worker died is claimed again after it.
//! Postgres claims with `FOR UPDATE SKIP LOCKED`, so several workers (nodes)
//! share the queue; SQLite has one writer, and claims in one UPDATE …
//! RETURNING inside an IMMEDIATE transaction.

use std::collections::HashMap;
use std::time::Duration;

use crate::codec::{Ts, now};
use crate::webhook_deliveries::delivery_columns;
use crate::webhook_endpoints::endpoint_columns;
use crate::webhook_outbox::outbox_columns;
use crate::{Error, OutboxEvent, Store, WebhookDelivery, WebhookEndpoint};

/// A claimed delivery with everything needed to send it.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery: WebhookDelivery,
    pub endpoint: WebhookEndpoint,
    /// The events it carries, in order.
    pub events: Vec<OutboxEvent>,
}

/// The due deliveries a round may take: fair over tenants, then over each
/// tenant's endpoints, ordered per key, within each endpoint's and each
/// tenant's in-flight limit. Binds: $1 now, $2 per endpoint limit, $3 round
/// size, $5 per tenant limit.
const CANDIDATES: &str = "\
    WITH ranked AS ( \
        SELECT d.id, d.tenant_id, d.endpoint_id, ROW_NUMBER() OVER ( \
            PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at, d.id) AS rn \
        FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
        WHERE e.enabled AND d.status IN ('pending', 'delivering') AND d.next_attempt_at <= $1 \
        AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p \
            WHERE p.endpoint_id = d.endpoint_id AND p.ordering_key = d.ordering_key \
            AND p.id < d.id AND p.status IN ('pending', 'delivering'))), \
    busy AS ( \
        SELECT endpoint_id, COUNT(*) AS n FROM webhook_deliveries \
        WHERE status = 'delivering' AND next_attempt_at > $1 GROUP BY endpoint_id), \
    tenant_busy AS ( \
        SELECT tenant_id, COUNT(*) AS n FROM webhook_deliveries \
        WHERE status = 'delivering' AND next_attempt_at > $1 GROUP BY tenant_id), \
    eligible AS ( \
        SELECT r.id, r.tenant_id, r.rn, ROW_NUMBER() OVER ( \
            PARTITION BY r.tenant_id ORDER BY r.rn, r.id) AS trn \
        FROM ranked r LEFT JOIN busy b ON b.endpoint_id = r.endpoint_id \
        WHERE r.rn + COALESCE(b.n, 0) <= $2) \
    SELECT g.id FROM eligible g LEFT JOIN tenant_busy t ON t.tenant_id = g.tenant_id \
    WHERE g.trn + COALESCE(t.n, 0) <= $5 ORDER BY g.trn, g.rn, g.id LIMIT $3";

impl Store {
    /// Claim up to `limit` due deliveries for `lease` (see the module docs),
    /// at most `per_endpoint` in flight per endpoint, none per tenant.
    pub async fn claim_webhook_deliveries(
        &self,
        limit: u32,
        per_endpoint: u32,
        lease: Duration,
    ) -> Result<Vec<ClaimedDelivery>, Error> {
        self.claim_webhook_deliveries_fair(limit, per_endpoint, u32::MAX, lease)
            .await
    }

    /// [`Store::claim_webhook_deliveries`], and at most `per_tenant` in
    /// flight per tenant.
    pub async fn claim_webhook_deliveries_fair(
        &self,
        limit: u32,
        per_endpoint: u32,
        per_tenant: u32,
        lease: Duration,
    ) -> Result<Vec<ClaimedDelivery>, Error> {
        let at = now();
        let lease_end = at + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::zero());
        let deliveries: Vec<WebhookDelivery> = match &self.pool {
            crate::store::Pool::Sqlite(pool) => {
                let sql = format!(
                    "UPDATE webhook_deliveries SET status = 'delivering', batch_open = FALSE, \
                     next_attempt_at = $4, updated_at = $1 WHERE id IN ({CANDIDATES}) \
                     RETURNING {}",
                    delivery_columns!()
                );
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let deliveries = sql!(in &mut *tx, fetch_all as WebhookDelivery =>
                    sqlx::AssertSqlSafe(sql), Ts(at), i64::from(per_endpoint), i64::from(limit),
                    Ts(lease_end), i64::from(per_tenant))?;
                tx.commit().await?;
                deliveries
            }
            crate::store::Pool::Postgres(pool) => {
                // The inner SELECT re-checks status and due time on the row
                // it locks: another worker may have claimed it since our
                // snapshot.
                let sql = format!(
                    "UPDATE webhook_deliveries SET status = 'delivering', batch_open = FALSE, \
                     next_attempt_at = $4, updated_at = $1 WHERE id IN ( \
                     SELECT id FROM webhook_deliveries WHERE id IN ({CANDIDATES}) \
                     AND status IN ('pending', 'delivering') AND next_attempt_at <= $1 \
                     FOR UPDATE SKIP LOCKED) RETURNING {}",
                    delivery_columns!()
                );
                sql!(in pool, fetch_all as WebhookDelivery => sqlx::AssertSqlSafe(sql), Ts(at),
                    i64::from(per_endpoint), i64::from(limit), Ts(lease_end),
                    i64::from(per_tenant))?
            }
        };
        self.complete_claims(deliveries).await
    }

    /// After a delivery of `ordering_key` on `endpoint_id` went out, claim
    /// the next one of that key for `lease` if it is due and first in line
    /// (nothing earlier of the key pending or in flight), so that one
    /// device's events go out back to back rather than one per worker
    /// round: a round grows long while other tenants have backlogs, and a
    /// device's rate would shrink with it. The caller reuses the finished
    /// delivery's in-flight slot, so the endpoint's and the tenant's
    /// limits still hold.
    pub async fn claim_next_in_order(
        &self,
        endpoint_id: &str,
        ordering_key: &str,
        lease: Duration,
    ) -> Result<Option<ClaimedDelivery>, Error> {
        let sql = format!(
            "UPDATE webhook_deliveries SET status = 'delivering', batch_open = FALSE, \
             next_attempt_at = $3, updated_at = $4 WHERE id = ( \
             SELECT id FROM webhook_deliveries WHERE endpoint_id = $1 AND ordering_key = $2 \
             AND status IN ('pending', 'delivering') ORDER BY id LIMIT 1) \
             AND status = 'pending' AND next_attempt_at <= $4 \
             AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.id = $1 AND e.enabled) \
             RETURNING {}",
            delivery_columns!()
        );
        let at = now();
        let lease_end = at + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::zero());
        let row = sql!(self, fetch_optional as WebhookDelivery => sqlx::AssertSqlSafe(sql.as_str()),
            endpoint_id, ordering_key, Ts(lease_end), Ts(at))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let claimed = self.complete_claims(vec![row]).await?;
        Ok(claimed.into_iter().next())
    }

    /// Load the endpoints and events of claimed deliveries: two queries for
    /// the whole round, not two per delivery.
    async fn complete_claims(
        &self,
        mut deliveries: Vec<WebhookDelivery>,
    ) -> Result<Vec<ClaimedDelivery>, Error> {
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        deliveries.sort_by_key(|d| d.id);
        let mut endpoint_ids: Vec<&str> =
            deliveries.iter().map(|d| d.endpoint_id.as_str()).collect();
        endpoint_ids.sort_unstable();
        endpoint_ids.dedup();
        let endpoints: HashMap<String, WebhookEndpoint> = on_pool!(self, pool => {
            let mut q = sqlx::QueryBuilder::new(concat!(
                "SELECT ",
                endpoint_columns!(),
                " FROM webhook_endpoints WHERE id IN ("
            ));
            let mut ids = q.separated(", ");
            for id in &endpoint_ids {
                ids.push_bind(*id);
            }
            q.push(")");
            q.build_query_as::<WebhookEndpoint>().fetch_all(pool).await?
        })
        .into_iter()
        .map(|endpoint| (endpoint.id.clone(), endpoint))
        .collect();
        let mut events: HashMap<i64, Vec<OutboxEvent>> = HashMap::new();
        let rows = on_pool!(self, pool => {
            let mut q = sqlx::QueryBuilder::new(format!(
                "SELECT de.delivery_id, {} FROM webhook_outbox o JOIN webhook_delivery_events de \
                 ON de.event_id = o.id WHERE de.delivery_id IN (",
                prefixed_outbox_columns()
            ));
            let mut ids = q.separated(", ");
            for d in &deliveries {
                ids.push_bind(d.id);
            }
            q.push(") ORDER BY de.delivery_id, de.position");
            q.build_query_as::<DeliveryEventRow>().fetch_all(pool).await?
        });
        for row in rows {
            events.entry(row.delivery_id).or_default().push(row.event);
        }
        // An endpoint deleted since the claim took its deliveries with it
        // (ON DELETE CASCADE): nothing to send.
        Ok(deliveries
            .into_iter()
            .filter_map(|delivery| {
                let endpoint = endpoints.get(&delivery.endpoint_id)?.clone();
                let events = events.remove(&delivery.id).unwrap_or_default();
                Some(ClaimedDelivery {
                    delivery,
                    endpoint,
                    events,
                })
            })
            .collect())
    }
}

/// The outbox columns qualified with the alias `o`, for joins.
pub(crate) fn prefixed_outbox_columns() -> String {
    outbox_columns!()
        .split(", ")
        .map(|c| format!("o.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(sqlx::FromRow)]
struct DeliveryEventRow {
    delivery_id: i64,
    #[sqlx(flatten)]
    event: OutboxEvent,
}
