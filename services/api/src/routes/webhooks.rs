//! `/v1/tenants/{t}/webhooks`: endpoints (create with a secret shown once,
//! list, read, enable/disable, delete, rotate the secret), their delivery
//! log, redelivery and a test ping. Reading needs any role of the tenant;
//! the rest needs tenant-admin (or platform-admin). URLs are checked with
//! the server's [`webhooks::UrlPolicy`].

use ::events::change::Change;
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookEndpointChange};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use super::openapi::{NoSuchEndpoint, NoSuchTenant};
use super::scope::{Admin, InTenant, Read, TenantPath};
use super::{Routes, query};
use crate::model::page;
use crate::{ApiError, ApiJson};

/// How long the previous secret keeps signing after a rotation.
const ROTATION_OVERLAP_HOURS: i64 = 24;

pub(crate) fn router() -> Routes {
    Routes::new()
        .routes(routes!(list, create))
        .routes(routes!(read, update, remove))
        .routes(routes!(rotate))
        .routes(routes!(test_ping))
        .routes(routes!(deliveries))
        .routes(routes!(redeliver))
}

/// The `{w}` of an endpoint's path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct WebhookPath {
    /// Webhook id
    w: String,
}

/// The `{w}` and `{id}` of a delivery's path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct DeliveryPath {
    /// Webhook id
    w: String,
    /// Delivery id
    id: i64,
}

/// The one mapping from the webhooks crate's errors.
impl From<webhooks::Error> for ApiError {
    fn from(e: webhooks::Error) -> Self {
        use webhooks::Error as E;
        match e {
            E::InvalidUrl { .. } | E::UrlRefused { .. } | E::Unresolvable { .. } => {
                ApiError::invalid_field("/url", e.to_string())
            }
            E::InvalidTopicFilter { .. } => ApiError::invalid_field("/topic_filter", e.to_string()),
            E::InvalidEventTypes => ApiError::invalid_field("/events", e.to_string()),
            E::Store(e) => ApiError::from(e),
            other => ApiError::internal(other),
        }
    }
}

/// A webhook endpoint (its secret is shown only when made).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Webhook {
    pub id: String,
    pub tenant_id: String,
    pub url: String,
    /// Event types or `prefix.*` patterns, e.g. `device.*`.
    pub events: Vec<String>,
    /// For message events: an MQTT topic filter.
    pub topic_filter: Option<String>,
    pub enabled: bool,
    /// Why the platform disabled it (repeated failures, 410 Gone).
    pub disabled_reason: Option<String>,
    pub consecutive_failures: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<WebhookEndpoint> for Webhook {
    fn from(e: WebhookEndpoint) -> Self {
        Webhook {
            id: e.id,
            tenant_id: e.tenant_id,
            url: e.url,
            events: e.event_types,
            topic_filter: e.topic_filter,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            consecutive_failures: e.consecutive_failures,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// An endpoint with its signing secret: shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WebhookWithSecret {
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_` + base64 (Standard Webhooks). Keep it secret.
    pub secret: String,
}

impl From<WebhookEndpoint> for WebhookWithSecret {
    fn from(mut e: WebhookEndpoint) -> Self {
        let secret = std::mem::take(&mut e.secret);
        WebhookWithSecret {
            webhook: e.into(),
            secret,
        }
    }
}

/// A tenant's endpoints (not paged: a handful each).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct WebhookPage {
    pub items: Vec<Webhook>,
    /// Always `null`.
    pub next_cursor: Option<String>,
}

/// One delivery: a request's worth of events to one endpoint.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Delivery {
    pub id: i64,
    pub webhook_id: String,
    pub event_type: String,
    /// `pending`, `delivering`, `delivered` or `failed`.
    pub status: String,
    pub event_count: i32,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status: Option<i32>,
    pub last_latency_ms: Option<i64>,
    pub last_error: Option<String>,
    /// The start of the last response body.
    pub last_response: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<WebhookDelivery> for Delivery {
    fn from(d: WebhookDelivery) -> Self {
        Delivery {
            id: d.id,
            webhook_id: d.endpoint_id,
            event_type: d.event_type,
            status: d.status.as_str().to_owned(),
            event_count: d.event_count,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            last_status: d.last_status,
            last_latency_ms: d.last_latency_ms,
            last_error: d.last_error,
            last_response: d.last_response,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

page!(DeliveryPage, Delivery, "Deliveries, newest first.");

/// A new endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateWebhook {
    /// https (plain http and internal addresses only where the server allows them).
    #[schema(example = "https://example.com/hooks/fleetmq")]
    url: String,
    /// 1 to 64 event types or `prefix.*` patterns.
    #[schema(example = json!(["device.*"]))]
    events: Vec<String>,
    /// For message events: an MQTT topic filter.
    #[serde(default)]
    topic_filter: Option<String>,
}

/// Changes to an endpoint (JSON merge patch: absent members are kept).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchWebhook {
    /// Enabling also clears the failure run.
    #[serde(default)]
    enabled: Option<bool>,
    /// Checked as when creating.
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    events: Option<Vec<String>>,
    /// `null` removes the filter.
    #[serde(default, deserialize_with = "super::nullable")]
    #[schema(value_type = Option<String>)]
    topic_filter: Option<Option<String>>,
}

fn target(t: &str, w: &str) -> String {
    format!("tenants/{t}/webhooks/{w}")
}

/// Register an endpoint (tenant-admin). The secret is in this response only.
#[utoipa::path(post, path = "/v1/tenants/{t}/webhooks", operation_id = "create_webhook", tag = "webhooks",
    params(TenantPath),
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "The endpoint, with its secret", body = WebhookWithSecret),
        (status = 403, description = "Not tenant-admin", body = crate::Problem, content_type = "application/problem+json"),
        NoSuchTenant,
        (status = 422, description = "URL refused (scheme, private address), bad events or topic filter", body = crate::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn create(
    scope: InTenant<Admin>,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<(StatusCode, ApiJson<WebhookWithSecret>), ApiError> {
    let t = scope.existing().await?;
    let request = webhooks::EndpointRequest {
        url: body.url,
        event_types: body.events,
        topic_filter: body.topic_filter,
    };
    // The entry names the endpoint, whose id the store makes.
    let created = |endpoint: &WebhookEndpoint| {
        scope.audit(
            "webhook.create",
            target(t, &endpoint.id),
            json!({ "url": endpoint.url, "events": endpoint.event_types }),
        )
    };
    let endpoint = webhooks::create_endpoint(
        scope.store(),
        &scope.state().webhook_url_policy,
        t,
        &request,
        Some(&created),
    )
    .await?;
    scope
        .tenant_changed(|tenant| Change::WebhooksChanged { tenant })
        .await;
    Ok((StatusCode::CREATED, ApiJson(endpoint.into())))
}

/// List the tenant's endpoints (any role of the tenant).
#[utoipa::path(get, path = "/v1/tenants/{t}/webhooks", operation_id = "list_webhooks", tag = "webhooks",
    params(TenantPath),
    responses((status = 200, description = "The endpoints", body = WebhookPage)))]
pub(crate) async fn list(scope: InTenant<Read>) -> Result<ApiJson<WebhookPage>, ApiError> {
    let t = scope.existing().await?;
    let items = scope.store().list_webhook_endpoints(t).await?;
    Ok(ApiJson(WebhookPage {
        items: items.into_iter().map(Webhook::from).collect(),
        next_cursor: None,
    }))
}

/// Read an endpoint (any role of the tenant).
#[utoipa::path(get, path = "/v1/tenants/{t}/webhooks/{w}", operation_id = "get_webhook", tag = "webhooks",
    params(TenantPath, WebhookPath),
    responses((status = 200, description = "The endpoint", body = Webhook),
        NoSuchEndpoint))]
pub(crate) async fn read(
    scope: InTenant<Read>,
    Path(WebhookPath { w }): Path<WebhookPath>,
) -> Result<ApiJson<Webhook>, ApiError> {
    let t = scope.t();
    Ok(ApiJson(
        scope.store().get_webhook_endpoint(t, &w).await?.into(),
    ))
}

/// Change an endpoint: enable or disable it, its URL, events or topic
/// filter (tenant-admin).
#[utoipa::path(patch, path = "/v1/tenants/{t}/webhooks/{w}", operation_id = "update_webhook", tag = "webhooks",
    params(TenantPath, WebhookPath),
    request_body(content = PatchWebhook, content_type = "application/merge-patch+json"),
    responses((status = 200, description = "The endpoint", body = Webhook),
        NoSuchEndpoint))]
pub(crate) async fn update(
    scope: InTenant<Admin>,
    Path(WebhookPath { w }): Path<WebhookPath>,
    ApiJson(body): ApiJson<PatchWebhook>,
) -> Result<ApiJson<Webhook>, ApiError> {
    let t = scope.t();
    let change = WebhookEndpointChange {
        url: body.url,
        event_types: body.events,
        topic_filter: body.topic_filter,
        enabled: body.enabled,
    };
    let details = json!({
        "enabled": change.enabled,
        "url": change.url,
        "events": change.event_types,
        "topic_filter": change.topic_filter.is_some(),
    });
    let entry = scope.audit("webhook.update", target(t, &w), details);
    // The change, the enabled flag and the entry commit together.
    let endpoint = webhooks::update_endpoint(
        scope.store(),
        &scope.state().webhook_url_policy,
        t,
        &w,
        &change,
        Some(&entry),
    )
    .await?;
    scope
        .tenant_changed(|tenant| Change::WebhooksChanged { tenant })
        .await;
    Ok(ApiJson(endpoint.into()))
}

/// Delete an endpoint with its delivery log (tenant-admin).
#[utoipa::path(delete, path = "/v1/tenants/{t}/webhooks/{w}", operation_id = "delete_webhook", tag = "webhooks",
    params(TenantPath, WebhookPath),
    responses((status = 204, description = "Deleted"),
        NoSuchEndpoint))]
pub(crate) async fn remove(
    scope: InTenant<Admin>,
    Path(WebhookPath { w }): Path<WebhookPath>,
) -> Result<StatusCode, ApiError> {
    let t = scope.t();
    let entry = scope.audit("webhook.delete", target(t, &w), json!({}));
    scope
        .store()
        .delete_webhook_endpoint(t, &w, Some(&entry))
        .await?;
    scope
        .tenant_changed(|tenant| Change::WebhooksChanged { tenant })
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Give an endpoint a new secret (tenant-admin); the old one keeps signing
/// (a second signature) for 24 hours. The new secret is shown once.
#[utoipa::path(post, path = "/v1/tenants/{t}/webhooks/{w}/rotate-secret", operation_id = "rotate_webhook_secret", tag = "webhooks",
    params(TenantPath, WebhookPath),
    responses((status = 200, description = "The endpoint, with its new secret", body = WebhookWithSecret),
        NoSuchEndpoint))]
pub(crate) async fn rotate(
    scope: InTenant<Admin>,
    Path(WebhookPath { w }): Path<WebhookPath>,
) -> Result<ApiJson<WebhookWithSecret>, ApiError> {
    let t = scope.t();
    let overlap_until = Utc::now() + ChronoDuration::hours(ROTATION_OVERLAP_HOURS);
    let entry = scope.audit(
        "webhook.rotate_secret",
        target(t, &w),
        json!({ "previous_valid_until": overlap_until }),
    );
    let endpoint =
        webhooks::rotate_secret(scope.store(), t, &w, overlap_until, Some(&entry)).await?;
    Ok(ApiJson(endpoint.into()))
}

/// Queue a `webhook.ping` to this endpoint only (tenant-admin).
#[utoipa::path(post, path = "/v1/tenants/{t}/webhooks/{w}/test", operation_id = "test_webhook", tag = "webhooks",
    params(TenantPath, WebhookPath),
    responses((status = 202, description = "The queued delivery", body = Delivery),
        NoSuchEndpoint))]
pub(crate) async fn test_ping(
    scope: InTenant<Admin>,
    Path(WebhookPath { w }): Path<WebhookPath>,
) -> Result<(StatusCode, ApiJson<Delivery>), ApiError> {
    let t = scope.t();
    scope.store().get_webhook_endpoint(t, &w).await?;
    // The entry names the delivery, whose id the store makes.
    let queued = |delivery: &WebhookDelivery| {
        scope.audit(
            "webhook.test",
            target(t, &w),
            json!({ "delivery_id": delivery.id }),
        )
    };
    let delivery = webhooks::send_test_ping(scope.store(), t, &w, Some(&queued)).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(delivery.into())))
}

/// An endpoint's deliveries, newest first (any role of the tenant).
/// `?status=pending|delivering|delivered|failed`, `?limit=` (1 to 1000,
/// default 100), `?cursor=`.
#[utoipa::path(get, path = "/v1/tenants/{t}/webhooks/{w}/deliveries", operation_id = "list_webhook_deliveries", tag = "webhooks",
    params(TenantPath, WebhookPath,
        ("status" = Option<String>, Query, description = "pending, delivering, delivered or failed"),
        ("limit" = Option<u32>, Query, description = "1 to 1000; default 100", minimum = 1, maximum = 1000),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page")),
    responses((status = 200, description = "A page of deliveries", body = DeliveryPage),
        (status = 400, description = "Bad query", body = crate::Problem, content_type = "application/problem+json"),
        NoSuchEndpoint))]
pub(crate) async fn deliveries(
    scope: InTenant<Read>,
    Path(WebhookPath { w }): Path<WebhookPath>,
    RawQuery(raw): RawQuery,
) -> Result<ApiJson<DeliveryPage>, ApiError> {
    let t = scope.t();
    let q = query::parse(raw.as_deref(), &["status"], &[])?;
    // `status` is the one filter, given at most once.
    let status = q
        .filters
        .first()
        .map(|(_, value)| value.parse::<DeliveryStatus>())
        .transpose()
        .map_err(|_| {
            ApiError::BadRequest(
                "`status` must be pending, delivering, delivered or failed".to_owned(),
            )
        })?;
    let before = q
        .page
        .cursor
        .map(|cursor| cursor.parse::<i64>())
        .transpose()
        .map_err(|_| store::Error::InvalidCursor)?;
    let limit = q.page.limit;
    scope.store().get_webhook_endpoint(t, &w).await?;
    let mut items = scope
        .store()
        .list_webhook_deliveries(t, &w, status, before, limit + 1)
        .await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|d| d.id.to_string())
    } else {
        None
    };
    Ok(ApiJson(DeliveryPage {
        items: items.into_iter().map(Delivery::from).collect(),
        next_cursor,
    }))
}

/// Send a delivery again from the start of the retry schedule
/// (tenant-admin).
#[utoipa::path(post, path = "/v1/tenants/{t}/webhooks/{w}/deliveries/{id}/redeliver", operation_id = "redeliver_webhook_delivery", tag = "webhooks",
    params(TenantPath, DeliveryPath),
    responses((status = 202, description = "The delivery, pending again", body = Delivery),
        (status = 404, description = "No such delivery of this endpoint", body = crate::Problem, content_type = "application/problem+json")))]
pub(crate) async fn redeliver(
    scope: InTenant<Admin>,
    Path(DeliveryPath { w, id }): Path<DeliveryPath>,
) -> Result<(StatusCode, ApiJson<Delivery>), ApiError> {
    let t = scope.t();
    let existing = scope.store().get_webhook_delivery(t, id).await?;
    if existing.endpoint_id != w {
        return Err(ApiError::NotFound {
            resource: "delivery".to_owned(),
            id: id.to_string(),
        });
    }
    let entry = scope.audit(
        "webhook.redeliver",
        format!("{}/deliveries/{id}", target(t, &w)),
        json!({}),
    );
    let delivery = webhooks::redeliver(scope.store(), t, id, Some(&entry)).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(delivery.into())))
}
