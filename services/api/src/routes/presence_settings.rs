//! A tenant's presence settings: `GET|PUT /v1/tenants/{t}/presence-settings`.
//! With `publish_status` on (the default) the broker publishes a retained
//! JSON message on `devices/{d}/status` when a device connects or
//! disconnects, and refuses the device's own publishes to that topic (so it
//! cannot forge its presence). Reading needs any role of the tenant,
//! changing needs tenant-admin; a change is audited and takes effect at
//! once for new connects, disconnects and publishes.

use ::events::change::Change;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::Routes;
use super::scope::{Admin, InTenant, Read, TenantPath};
use crate::{ApiError, ApiJson};

pub(crate) fn router() -> Routes {
    Routes::new().routes(routes!(read, put))
}

/// How the tenant's presence is published over MQTT.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PresenceSettingsView {
    /// Whether the broker publishes `{"status": "online"|"offline",
    /// "reason", "at", …}` retained on `devices/{d}/status` (and refuses
    /// devices' own publishes there).
    publish_status: bool,
    /// The topic, with `{d}` for the device id.
    #[schema(example = "devices/{d}/status")]
    status_topic: &'static str,
    /// When the settings were last changed; absent while they are the
    /// defaults.
    updated_at: Option<DateTime<Utc>>,
}

impl From<store::PresenceSettings> for PresenceSettingsView {
    fn from(s: store::PresenceSettings) -> Self {
        PresenceSettingsView {
            publish_status: s.publish_status,
            status_topic: "devices/{d}/status",
            updated_at: s.updated_at,
        }
    }
}

/// New presence settings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutPresenceSettings {
    /// Publish retained presence on `devices/{d}/status`.
    publish_status: bool,
}

/// The tenant's presence settings (any role of the tenant).
#[utoipa::path(get, path = "/v1/tenants/{t}/presence-settings", operation_id = "get_presence_settings", tag = "state",
    params(TenantPath),
    responses((status = 200, description = "The settings", body = PresenceSettingsView)))]
pub(crate) async fn read(scope: InTenant<Read>) -> Result<ApiJson<PresenceSettingsView>, ApiError> {
    let t = scope.existing().await?;
    Ok(ApiJson(
        scope.store().get_presence_settings(t).await?.into(),
    ))
}

/// Set the tenant's presence settings (tenant-admin).
#[utoipa::path(put, path = "/v1/tenants/{t}/presence-settings", operation_id = "put_presence_settings", tag = "state",
    params(TenantPath),
    request_body = PutPresenceSettings,
    responses(
        (status = 200, description = "The stored settings", body = PresenceSettingsView),
    ))]
pub(crate) async fn put(
    scope: InTenant<Admin>,
    ApiJson(body): ApiJson<PutPresenceSettings>,
) -> Result<ApiJson<PresenceSettingsView>, ApiError> {
    let t = scope.t();
    let audit = scope.audit(
        "presence_settings.put",
        format!("tenants/{t}/presence-settings"),
        json!({ "publish_status": body.publish_status }),
    );
    let stored = scope
        .store()
        .put_presence_settings(t, body.publish_status, Some(&audit))
        .await?;
    scope
        .changed(Change::PresenceSettingsChanged {
            tenant: t.to_owned(),
            publish_status: stored.publish_status,
        })
        .await;
    Ok(ApiJson(stored.into()))
}
