//! What the REST API calls: create an endpoint (URL checked, secret made),
//! rotate its secret, send a test ping, redeliver.

use chrono::{DateTime, Utc};
use store::{
    AuditOf, NewAuditEntry, NewWebhookEndpoint, Store, WebhookDelivery, WebhookEndpoint,
    WebhookEndpointChange,
};

use crate::Error;
use crate::routing::validate_topic_filter;
use crate::signing::generate_secret;
use crate::ssrf::UrlPolicy;
use events::payload::WebhookRef;
use events::{Event, EventType};

/// Most event types an endpoint may list.
const MAX_EVENT_TYPES: usize = 64;

/// What a tenant asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRequest {
    pub url: String,
    pub event_types: Vec<String>,
    pub topic_filter: Option<String>,
}

/// Check the request (URL against `policy`, after DNS; topic filter; event
/// types), make a secret and store the endpoint. The secret is in the
/// returned endpoint: show it to the tenant once. With `audit`, the entry it
/// makes of the new endpoint commits with it.
pub async fn create_endpoint(
    store: &Store,
    policy: &UrlPolicy,
    tenant_id: &str,
    request: &EndpointRequest,
    audit: Option<AuditOf<'_, WebhookEndpoint>>,
) -> Result<WebhookEndpoint, Error> {
    let url = policy.check(&request.url).await?;
    if let Some(filter) = &request.topic_filter {
        validate_topic_filter(filter)?;
    }
    validate_event_types(&request.event_types)?;
    let endpoint = store
        .create_webhook_endpoint(
            &NewWebhookEndpoint {
                tenant_id: tenant_id.to_owned(),
                url: url.to_string(),
                event_types: request.event_types.clone(),
                topic_filter: request.topic_filter.clone(),
                secret: generate_secret()?,
            },
            audit,
        )
        .await?;
    Ok(endpoint)
}

fn validate_event_types(event_types: &[String]) -> Result<(), Error> {
    if event_types.is_empty()
        || event_types.len() > MAX_EVENT_TYPES
        || event_types
            .iter()
            .any(|t| t.is_empty() || t.len() > 128 || t.chars().any(char::is_whitespace))
    {
        return Err(Error::InvalidEventTypes);
    }
    Ok(())
}

/// Check `change` as [`create_endpoint`] checks a new endpoint (a new URL
/// against `policy`, after DNS) and apply it, with `audit` in the same
/// transaction.
pub async fn update_endpoint(
    store: &Store,
    policy: &UrlPolicy,
    tenant_id: &str,
    endpoint_id: &str,
    change: &WebhookEndpointChange,
    audit: Option<&NewAuditEntry>,
) -> Result<WebhookEndpoint, Error> {
    let mut checked = change.clone();
    if let Some(url) = &change.url {
        checked.url = Some(policy.check(url).await?.to_string());
    }
    if let Some(Some(filter)) = &change.topic_filter {
        validate_topic_filter(filter)?;
    }
    if let Some(event_types) = &change.event_types {
        validate_event_types(event_types)?;
    }
    Ok(store
        .update_webhook_endpoint(tenant_id, endpoint_id, &checked, audit)
        .await?)
}

/// Give the endpoint a new secret; the old one keeps signing (a second
/// signature) until `overlap_until`. With `audit`, the entry commits with it.
pub async fn rotate_secret(
    store: &Store,
    tenant_id: &str,
    endpoint_id: &str,
    overlap_until: DateTime<Utc>,
    audit: Option<&NewAuditEntry>,
) -> Result<WebhookEndpoint, Error> {
    let secret = generate_secret()?;
    Ok(store
        .rotate_webhook_secret(tenant_id, endpoint_id, &secret, overlap_until, audit)
        .await?)
}

/// Queue a `webhook.ping` to this endpoint only. With `audit`, the entry it
/// makes of the queued delivery commits with it.
pub async fn send_test_ping(
    store: &Store,
    tenant_id: &str,
    endpoint_id: &str,
    audit: Option<AuditOf<'_, WebhookDelivery>>,
) -> Result<WebhookDelivery, Error> {
    Ok(store
        .enqueue_direct_delivery(
            tenant_id,
            endpoint_id,
            EventType::WebhookPing.as_str(),
            Event::WebhookPing(WebhookRef {
                webhook_id: endpoint_id.to_owned(),
            })
            .data(),
            audit,
        )
        .await?)
}

/// Send a delivery again, from the start of the retry schedule. With
/// `audit`, the entry commits with it.
pub async fn redeliver(
    store: &Store,
    tenant_id: &str,
    delivery_id: i64,
    audit: Option<&NewAuditEntry>,
) -> Result<WebhookDelivery, Error> {
    Ok(store
        .redeliver_webhook_delivery(tenant_id, delivery_id, audit)
        .await?)
}
