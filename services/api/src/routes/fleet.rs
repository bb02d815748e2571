//! What the dashboard charts (any role of the tenant), from this node's
//! [`FleetStats`](crate::fleet_stats::FleetStats): `GET
//! /v1/tenants/{t}/metrics/series` (the last hour in ten-second buckets, the
//! top talkers and, from the broker, the messages dropped for the tenant),
//! `GET /v1/tenants/{t}/lifecycle` (recent device
//! lifecycle events) and `GET /v1/tenants/{t}/devices/{d}/presence` (a
//! device's connects and disconnects). Memory only: empty after a restart.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::routes;

use super::Routes;
use super::openapi::{NoSuchDevice, NoSuchTenant};
use super::scope::{DevicePath, InDevice, InTenant, Read, TenantPath};
use crate::device_io::TenantDrops;
use crate::fleet_stats::{self, BUCKET_SECONDS, LifecycleEntry};
use crate::model::item_list;
use crate::{ApiError, ApiJson};

/// Top talkers listed.
const TOP_TALKERS: usize = 10;

pub(crate) fn router() -> Routes {
    Routes::new()
        .routes(routes!(series))
        .routes(routes!(lifecycle))
        .routes(routes!(presence))
}

/// One ten-second bucket.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BucketView {
    /// Start of the bucket.
    pub start: DateTime<Utc>,
    /// Messages devices published in it.
    pub messages: u64,
    pub connects: u64,
    pub disconnects: u64,
    /// The most device connections open at once in it.
    pub connections: u64,
}

/// A device by messages published in the window.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TalkerView {
    pub device_id: String,
    pub messages: u64,
}

/// A tenant's last hour.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SeriesView {
    /// Seconds per bucket (10).
    #[schema(example = 10)]
    pub bucket_seconds: i64,
    /// The last hour, oldest first; the last bucket is the current one.
    pub buckets: Vec<BucketView>,
    /// Device connections open now.
    pub connections: u64,
    /// Up to 10 devices by messages in the last hour, most first.
    pub top_talkers: Vec<TalkerView>,
    /// Messages the broker dropped for the tenant's subscribers since
    /// this node started. Each node counts the sessions it holds: in a
    /// cluster this is the answering node's share. `null` when this
    /// server runs no broker.
    pub drops: Option<TenantDrops>,
}

/// A device lifecycle event.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LifecycleView {
    pub at: DateTime<Utc>,
    /// E.g. `device.connected`, `device.disconnected`, `device.created`.
    #[serde(rename = "type")]
    #[schema(example = "device.connected")]
    pub event_type: String,
    pub device_id: String,
    /// Why a session ended (the MQTT reason).
    pub reason: Option<String>,
    /// Whether the client said goodbye (DISCONNECT) before it went.
    pub graceful: Option<bool>,
    /// The client's address, on connect.
    pub remote_addr: Option<String>,
}

impl From<LifecycleEntry> for LifecycleView {
    fn from(e: LifecycleEntry) -> Self {
        LifecycleView {
            at: e.at,
            event_type: e.event_type,
            device_id: e.device_id,
            reason: e.reason,
            graceful: e.graceful,
            remote_addr: e.remote_addr,
        }
    }
}

item_list!(pub(crate) LifecycleList, LifecycleView, "Lifecycle events, newest first.");

/// The tenant's connections and messages over the last hour, in
/// ten-second buckets, its top talkers and the messages dropped for its
/// subscribers (any role of the tenant). Kept in memory by this node:
/// empty after a restart.
#[utoipa::path(get, path = "/v1/tenants/{t}/metrics/series", operation_id = "get_tenant_series", tag = "fleet",
    params(TenantPath),
    responses(
        (status = 200, description = "The last hour", body = SeriesView),
        NoSuchTenant,
    ))]
pub(crate) async fn series(scope: InTenant<Read>) -> Result<ApiJson<SeriesView>, ApiError> {
    let t = scope.existing().await?;
    let now = Utc::now();
    let (buckets, connections) = scope.state().fleet_stats.series_at(t, now);
    let top_talkers = scope
        .state()
        .fleet_stats
        .top_talkers_at(t, now, TOP_TALKERS)
        .into_iter()
        .map(|(device_id, messages)| TalkerView {
            device_id,
            messages,
        })
        .collect();
    Ok(ApiJson(SeriesView {
        bucket_seconds: BUCKET_SECONDS,
        buckets: buckets
            .into_iter()
            .map(|b| BucketView {
                start: fleet_stats::at_secs(b.start),
                messages: b.messages,
                connects: b.connects,
                disconnects: b.disconnects,
                connections: b.connections,
            })
            .collect(),
        connections,
        top_talkers,
        drops: scope.state().drops.as_ref().map(|d| d.tenant(t)),
    }))
}

/// The tenant's last 100 device lifecycle events (connects, disconnects,
/// creations, changes, deletions), newest first (any role of the tenant).
/// Kept in memory by this node: empty after a restart.
#[utoipa::path(get, path = "/v1/tenants/{t}/lifecycle", operation_id = "list_tenant_lifecycle", tag = "fleet",
    params(TenantPath),
    responses(
        (status = 200, description = "The events", body = LifecycleList),
        NoSuchTenant,
    ))]
pub(crate) async fn lifecycle(scope: InTenant<Read>) -> Result<ApiJson<LifecycleList>, ApiError> {
    let t = scope.existing().await?;
    Ok(ApiJson(
        scope.state().fleet_stats.recent_lifecycle(t).into(),
    ))
}

/// The device's last 50 connects and disconnects with their times and
/// reasons, newest first (any role of the tenant). Kept in memory by this
/// node: empty after a restart.
#[utoipa::path(get, path = "/v1/tenants/{t}/devices/{d}/presence", operation_id = "list_device_presence", tag = "fleet",
    params(DevicePath),
    responses(
        (status = 200, description = "The history", body = LifecycleList),
        NoSuchDevice,
    ))]
pub(crate) async fn presence(at: InDevice<Read>) -> Result<ApiJson<LifecycleList>, ApiError> {
    let (t, d) = at.existing().await?;
    Ok(ApiJson(at.state().fleet_stats.presence(t, d).into()))
}
