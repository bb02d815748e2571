//! Routes, one file per resource; each file has `router()`, and they are
//! merged here, in one place. `query`, `validate` and `idempotency` are
//! shared by the resources; `scope` gives handlers their typed, authorized
//! path ids.
//!
//! A resource's `router()` is an [`OpenApiRouter`] of `routes!(handler,
//! …)`: the path is written once, in the handler's `#[utoipa::path]`, which
//! both routes it and puts it in the OpenAPI document ([`documented`]).

use axum::Router;
use axum::middleware::from_fn_with_state;
use serde::{Deserialize, Deserializer};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

pub(crate) mod api_keys;
pub(crate) mod audit;
pub(crate) mod byo_ca;
pub(crate) mod ca;
pub(crate) mod certificates;
pub(crate) mod credentials;
mod device_csv;
pub(crate) mod device_import;
pub(crate) mod devices;
mod etag;
pub(crate) mod events;
pub(crate) mod fleet;
mod health;
mod idempotency;
mod metrics;
mod openapi;
pub(crate) mod platform_credentials;
pub(crate) mod policies;
pub(crate) mod presence_settings;
pub(crate) mod publish_limits;

pub use openapi::document as openapi_document;
mod query;
pub(crate) mod scope;
pub(crate) mod sessions;
pub(crate) mod state;
pub(crate) mod tenants;
pub(crate) mod topic_rules;
mod validate;
pub(crate) mod webhooks;

/// A resource's routes with their OpenAPI operations.
pub(crate) type Routes = OpenApiRouter<AppState>;

/// Operational endpoints: `/healthz`, `/readyz`, `/metrics`. Not subject
/// to the concurrency limit, so probes and scrapes still get through when
/// the API is saturated.
pub(crate) fn ops() -> Router<AppState> {
    documented_ops().into()
}

fn documented_ops() -> Routes {
    Routes::new()
        .merge(health::router())
        .merge(metrics::router())
        .merge(openapi::router())
}

/// The resource API (`/v1/…`), behind the concurrency limit. Creating
/// tenants and devices honours `Idempotency-Key` (see `idempotency`).
pub(crate) fn api(state: &AppState) -> Router<AppState> {
    Router::from(idempotent())
        .route_layer(from_fn_with_state(state.clone(), idempotency::layer))
        .merge(Router::from(resources()))
}

/// The OpenAPI operations of every route (`openapi` adds the rest of the
/// document).
pub(crate) fn documented() -> utoipa::openapi::OpenApi {
    documented_ops()
        .merge(idempotent())
        .merge(resources())
        .into_openapi()
}

/// Only these honour `Idempotency-Key`: API key and token responses carry
/// secrets, which must not be kept for replay.
fn idempotent() -> Routes {
    Routes::new()
        .merge(tenants::router())
        .merge(devices::router())
}

fn resources() -> Routes {
    Routes::new()
        .merge(audit::router())
        .merge(api_keys::router())
        .merge(state::router())
        .merge(events::router())
        .merge(fleet::router())
        .merge(webhooks::router())
        .merge(ca::router())
        .merge(byo_ca::router())
        .merge(certificates::router())
        .merge(credentials::router())
        .merge(policies::router())
        .merge(presence_settings::router())
        .merge(publish_limits::router())
        .merge(platform_credentials::router())
        .merge(topic_rules::router())
        .merge(sessions::router())
}

/// For merge-patch members: absent → `None`, `null` → `Some(None)`, a value
/// → `Some(Some(v))` (with `#[serde(default)]`).
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `?limit=&cursor=` of every list (documentation).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct PageParams {
    /// Items per page, 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page (opaque; a cursor from another
    /// list, or made up, is 400).
    #[param(min_length = 1, max_length = 262, pattern = "^([0-9a-f]{2})+$")]
    cursor: Option<String>,
}

/// The `Idempotency-Key` request header (documentation).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(crate) struct IdempotencyKeyHeader {
    /// 1 to 255 visible ASCII characters, unique per request you mean to
    /// make once. A retry with the same key and body gets the first
    /// response (`Idempotent-Replayed: true`) for 24 hours.
    #[param(rename = "Idempotency-Key", pattern = "^[!-~]{1,255}$")]
    idempotency_key: Option<String>,
}

/// The `If-Match` request header of updates (documentation).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub(crate) struct IfMatchHeader {
    /// The `ETag` of the version read (or `*`): the update applies only if
    /// the resource is still that version, else 412. Optional.
    #[param(
        rename = "If-Match",
        pattern = "^(\\*|(W/)?\"[!#-~]*\"(, *(W/)?\"[!#-~]*\")*)$"
    )]
    if_match: Option<String>,
}
