//! MQTT publish rate limits: a tenant's default for its devices
//! (`GET|PUT|DELETE /v1/tenants/{t}/publish-limits`, changed by
//! tenant-admin) and a device's override
//! (`GET|PUT|DELETE /v1/tenants/{t}/devices/{d}/publish-limits`, changed
//! by operator and up). Any role of the tenant reads them. The most
//! specific one applies as a whole: the device's, else the tenant's, else
//! the platform default of `fleetmq serve` (`--mqtt-publish-*`). A change
//! reaches the device's live session from its next PUBLISH.

use ::events::change::Change;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{NewAuditEntry, PublishLimitSettings, StoredPublishLimits};
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::Routes;
use super::openapi::InvalidPublishLimits;
use super::scope::{Admin, DevicePath, InDevice, InTenant, Read, TenantPath, Write};
use crate::{ApiError, ApiJson, AppState, FieldError};

/// The largest rate or burst accepted (a trillion per second is already
/// "unlimited"; the bound keeps values inside the database's integers).
const MAX_VALUE: u64 = 1_000_000_000_000;

pub(crate) fn router() -> Routes {
    Routes::new()
        .routes(routes!(read_tenant, put_tenant, delete_tenant))
        .routes(routes!(read_device, put_device, delete_device))
}

/// Publish rate limits. An absent (or null) rate is not limited; an absent
/// burst is one second's worth of its rate. Over the limit an MQTT 5 client
/// gets PUBACK/PUBREC 0x97 (QoS 0 is dropped) and, if it keeps on,
/// DISCONNECT 0x96; an MQTT 3.1.1 client is slowed down (its socket is
/// read later), never refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishLimits {
    /// PUBLISH packets per second.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    messages_per_second: Option<u64>,
    /// Messages that may be sent at once after a quiet spell.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    messages_burst: Option<u64>,
    /// Payload bytes per second.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    bytes_per_second: Option<u64>,
    /// Payload bytes that may be sent at once after a quiet spell.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    bytes_burst: Option<u64>,
}

/// Stored publish limits.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PublishLimitsView {
    messages_per_second: Option<u64>,
    messages_burst: Option<u64>,
    bytes_per_second: Option<u64>,
    bytes_burst: Option<u64>,
    updated_at: DateTime<Utc>,
}

impl From<StoredPublishLimits> for PublishLimitsView {
    fn from(s: StoredPublishLimits) -> Self {
        let l = s.settings;
        PublishLimitsView {
            messages_per_second: l.messages_per_second,
            messages_burst: l.messages_burst,
            bytes_per_second: l.bytes_per_second,
            bytes_burst: l.bytes_burst,
            updated_at: s.updated_at,
        }
    }
}

impl PublishLimits {
    /// The settings, or every field error at once.
    fn check(&self) -> Result<PublishLimitSettings, ApiError> {
        let mut errors = Vec::new();
        let fields = [
            ("/messages_per_second", self.messages_per_second),
            ("/messages_burst", self.messages_burst),
            ("/bytes_per_second", self.bytes_per_second),
            ("/bytes_burst", self.bytes_burst),
        ];
        for (pointer, value) in fields {
            if value.is_some_and(|v| v == 0 || v > MAX_VALUE) {
                errors.push(FieldError::new(
                    pointer,
                    format!("expected 1 to {MAX_VALUE}"),
                ));
            }
        }
        // A burst without its rate would look like a limit and be none.
        if self.messages_burst.is_some() && self.messages_per_second.is_none() {
            errors.push(FieldError::new(
                "/messages_burst",
                "a burst needs messages_per_second",
            ));
        }
        if self.bytes_burst.is_some() && self.bytes_per_second.is_none() {
            errors.push(FieldError::new(
                "/bytes_burst",
                "a burst needs bytes_per_second",
            ));
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        Ok(PublishLimitSettings {
            messages_per_second: self.messages_per_second,
            messages_burst: self.messages_burst,
            bytes_per_second: self.bytes_per_second,
            bytes_burst: self.bytes_burst,
        })
    }
}

/// The audit actions of setting and removing a tenant's and a device's
/// limits.
const PUT: [&str; 2] = ["publish_limits.put", "device.publish_limits.put"];
const DELETE: [&str; 2] = ["publish_limits.delete", "device.publish_limits.delete"];

async fn read(
    state: &AppState,
    t: &str,
    device: Option<&str>,
) -> Result<ApiJson<PublishLimitsView>, ApiError> {
    let stored = match device {
        None => state.store.get_tenant_publish_limits(t).await?,
        Some(d) => state.store.get_device_publish_limits(t, d).await?,
    };
    Ok(ApiJson(stored.into()))
}

/// The audit entry of a change to the limits of the tenant (`actions[0]`)
/// or of `device` (`actions[1]`).
fn entry<N>(
    scope: &InTenant<N>,
    device: Option<&str>,
    [tenant_action, device_action]: [&'static str; 2],
    details: serde_json::Value,
) -> NewAuditEntry {
    let t = scope.t();
    let (action, target) = match device {
        None => (tenant_action, format!("tenants/{t}/publish-limits")),
        Some(d) => (
            device_action,
            format!("tenants/{t}/devices/{d}/publish-limits"),
        ),
    };
    scope.audit(action, target, details)
}

/// Tell live sessions (the appliers log their own failures: the change is
/// stored either way, and the next connect reads it).
async fn tell_sessions(state: &AppState, t: &str, device: Option<&str>) {
    state
        .changed(Change::PublishLimitsChanged {
            tenant: t.to_owned(),
            device: device.map(str::to_owned),
        })
        .await;
}

/// Sets the limits of the tenant (its default) or of `device` (its
/// override).
async fn put<N>(
    state: &AppState,
    scope: &InTenant<N>,
    device: Option<&str>,
    body: PublishLimits,
) -> Result<ApiJson<PublishLimitsView>, ApiError> {
    let (t, s) = (scope.t(), body.check()?);
    let details = json!({
        "messages_per_second": s.messages_per_second,
        "messages_burst": s.messages_burst,
        "bytes_per_second": s.bytes_per_second,
        "bytes_burst": s.bytes_burst,
    });
    let audit = Some(entry(scope, device, PUT, details));
    let store = &state.store;
    let stored = match device {
        None => {
            store
                .put_tenant_publish_limits(t, &s, audit.as_ref())
                .await?
        }
        Some(d) => {
            store
                .put_device_publish_limits(t, d, &s, audit.as_ref())
                .await?
        }
    };
    tell_sessions(state, t, device).await;
    Ok(ApiJson(stored.into()))
}

async fn delete<N>(
    state: &AppState,
    scope: &InTenant<N>,
    device: Option<&str>,
) -> Result<StatusCode, ApiError> {
    let t = scope.t();
    let audit = Some(entry(scope, device, DELETE, json!({})));
    match device {
        None => {
            state
                .store
                .delete_tenant_publish_limits(t, audit.as_ref())
                .await?
        }
        Some(d) => {
            state
                .store
                .delete_device_publish_limits(t, d, audit.as_ref())
                .await?
        }
    }
    tell_sessions(state, t, device).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The tenant's default publish limits for its devices (any role of the
/// tenant); 404 when it has none (the platform default applies).
#[utoipa::path(get, path = "/v1/tenants/{t}/publish-limits", operation_id = "get_tenant_publish_limits", tag = "publish-limits",
    params(TenantPath),
    responses((status = 200, description = "The tenant's default", body = PublishLimitsView)))]
pub(crate) async fn read_tenant(
    scope: InTenant<Read>,
) -> Result<ApiJson<PublishLimitsView>, ApiError> {
    read(scope.state(), scope.t(), None).await
}

/// Set the tenant's default publish limits (tenant-admin).
#[utoipa::path(put, path = "/v1/tenants/{t}/publish-limits", operation_id = "put_tenant_publish_limits", tag = "publish-limits",
    params(TenantPath),
    request_body = PublishLimits,
    responses(
        (status = 200, description = "The stored default", body = PublishLimitsView),
        InvalidPublishLimits,
    ))]
pub(crate) async fn put_tenant(
    scope: InTenant<Admin>,
    ApiJson(body): ApiJson<PublishLimits>,
) -> Result<ApiJson<PublishLimitsView>, ApiError> {
    put(scope.state(), &scope, None, body).await
}

/// Remove the tenant's default (tenant-admin): the platform default
/// applies to devices without an override.
#[utoipa::path(delete, path = "/v1/tenants/{t}/publish-limits", operation_id = "delete_tenant_publish_limits", tag = "publish-limits",
    params(TenantPath),
    responses((status = 204, description = "Removed")))]
pub(crate) async fn delete_tenant(scope: InTenant<Admin>) -> Result<StatusCode, ApiError> {
    delete(scope.state(), &scope, None).await
}

/// A device's override (any role of the tenant); 404 when it has none.
#[utoipa::path(get, path = "/v1/tenants/{t}/devices/{d}/publish-limits", operation_id = "get_device_publish_limits", tag = "publish-limits",
    params(DevicePath),
    responses((status = 200, description = "The device's override", body = PublishLimitsView)))]
pub(crate) async fn read_device(
    at: InDevice<Read>,
) -> Result<ApiJson<PublishLimitsView>, ApiError> {
    read(at.state(), at.t(), Some(at.d())).await
}

/// Set a device's override (operator and up); its live session follows
/// from its next PUBLISH.
#[utoipa::path(put, path = "/v1/tenants/{t}/devices/{d}/publish-limits", operation_id = "put_device_publish_limits", tag = "publish-limits",
    params(DevicePath),
    request_body = PublishLimits,
    responses(
        (status = 200, description = "The stored override", body = PublishLimitsView),
        InvalidPublishLimits,
    ))]
pub(crate) async fn put_device(
    at: InDevice<Write>,
    ApiJson(body): ApiJson<PublishLimits>,
) -> Result<ApiJson<PublishLimitsView>, ApiError> {
    put(at.state(), &at.scope, Some(at.d()), body).await
}

/// Remove a device's override (operator and up): the tenant's default, or
/// the platform's, applies again.
#[utoipa::path(delete, path = "/v1/tenants/{t}/devices/{d}/publish-limits", operation_id = "delete_device_publish_limits", tag = "publish-limits",
    params(DevicePath),
    responses((status = 204, description = "Removed")))]
pub(crate) async fn delete_device(at: InDevice<Write>) -> Result<StatusCode, ApiError> {
    delete(at.state(), &at.scope, Some(at.d())).await
}
