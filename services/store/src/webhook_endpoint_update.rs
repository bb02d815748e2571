//! Changing where an endpoint points, what it receives and whether it is on.

use sqlx::types::Json;

use crate::audit::audited_tx;
use crate::codec::{Ts, now};
use crate::webhook_endpoints::endpoint_columns;
use crate::{Error, NewAuditEntry, Store, WebhookEndpoint};

/// What to change in an endpoint; `None` keeps the stored value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookEndpointChange {
    /// Checked by the caller (URL policy).
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// `Some(None)` removes the filter.
    pub topic_filter: Option<Option<String>>,
    /// Enable or disable it by hand; enabling also clears the failure run
    /// and the reason the platform disabled it for.
    pub enabled: Option<bool>,
}

impl Store {
    /// Apply `change` to the endpoint (an empty change leaves it untouched,
    /// `updated_at` included); `NotFound` if the tenant has no endpoint
    /// `id`. Deliveries already queued keep their target. With `audit`, the
    /// entry is written in the same transaction.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, webhook_id = %id))]
    pub async fn update_webhook_endpoint(
        &self,
        tenant_id: &str,
        id: &str,
        change: &WebhookEndpointChange,
        audit: Option<&NewAuditEntry>,
    ) -> Result<WebhookEndpoint, Error> {
        const GET: &str = concat!(
            "SELECT ",
            endpoint_columns!(),
            " FROM webhook_endpoints WHERE tenant_id = $1 AND id = $2"
        );
        // `CASE WHEN NULL` takes the ELSE branch: no `enabled`, no change.
        const SQL: &str = concat!(
            "UPDATE webhook_endpoints SET url = COALESCE($3, url), ",
            "event_types = COALESCE($4, event_types), ",
            "topic_filter = CASE WHEN $5 THEN $6 ELSE topic_filter END, ",
            "enabled = COALESCE($8, enabled), ",
            "consecutive_failures = CASE WHEN $8 THEN 0 ELSE consecutive_failures END, ",
            "disabled_reason = CASE WHEN $8 THEN NULL ELSE disabled_reason END, ",
            "updated_at = $7 WHERE tenant_id = $1 AND id = $2 RETURNING ",
            endpoint_columns!()
        );
        let unchanged = *change == WebhookEndpointChange::default();
        let row = audited_tx!(self, audit, Option::is_some, tx => if unchanged {
            sql!(in tx, fetch_optional as WebhookEndpoint => GET, tenant_id, id)?
        } else {
            sql!(in tx, fetch_optional as WebhookEndpoint => SQL, tenant_id, id,
                change.url.as_deref(), change.event_types.as_ref().map(Json),
                change.topic_filter.is_some(), change.topic_filter.clone().flatten(), Ts(now()),
                change.enabled)?
        });
        row.ok_or_else(|| Error::not_found("webhook", id.to_owned()))
    }
}
