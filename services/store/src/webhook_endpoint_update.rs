//! Changing where an endpoint points and what it receives.

use sqlx::types::Json;

use crate::codec::{Ts, now};
use crate::webhook_endpoints::{EndpointRow, endpoint_columns};
use crate::{Error, Store, WebhookEndpoint};

/// What to change in an endpoint; `None` keeps the stored value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookEndpointChange {
    /// Checked by the caller (URL policy).
    pub url: Option<String>,
    pub event_types: Option<Vec<String>>,
    /// `Some(None)` removes the filter.
    pub topic_filter: Option<Option<String>>,
}

impl Store {
    /// Apply `change` to the endpoint; `NotFound` if the tenant has no
    /// endpoint `id`. Deliveries already queued keep their target.
    #[tracing::instrument(skip_all, fields(tenant = %tenant_id, webhook_id = %id))]
    pub async fn update_webhook_endpoint(
        &self,
        tenant_id: &str,
        id: &str,
        change: &WebhookEndpointChange,
    ) -> Result<WebhookEndpoint, Error> {
        const SQL: &str = concat!(
            "UPDATE webhook_endpoints SET url = COALESCE($3, url), ",
            "event_types = COALESCE($4, event_types), ",
            "topic_filter = CASE WHEN $5 THEN $6 ELSE topic_filter END, updated_at = $7 ",
            "WHERE tenant_id = $1 AND id = $2 RETURNING ",
            endpoint_columns!()
        );
        let row = on_pool!(self, pool => sqlx::query_as::<_, EndpointRow>(SQL)
            .bind(tenant_id)
            .bind(id)
            .bind(change.url.as_deref())
            .bind(change.event_types.as_ref().map(Json))
            .bind(change.topic_filter.is_some())
            .bind(change.topic_filter.clone().flatten())
            .bind(Ts(now()))
            .fetch_optional(pool)
            .await?);
        row.map(WebhookEndpoint::from)
            .ok_or_else(|| Error::NotFound {
                kind: "webhook",
                id: id.to_owned(),
            })
    }
}
