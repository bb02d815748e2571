//! Routes, one file per resource; each file has `router()`, and they are
//! merged here, in one place.

use axum::Router;

use crate::AppState;

mod health;
mod metrics;

/// Operational endpoints: `/healthz`, `/readyz`, `/metrics`. Not subject
/// to the concurrency limit, so probes and scrapes still get through when
/// the API is saturated.
pub(crate) fn ops() -> Router<AppState> {
    Router::new()
        .merge(health::router())
        .merge(metrics::router())
}

/// The resource API (`/v1/…`), behind the concurrency limit. Resources are
/// merged here as they are written.
pub(crate) fn api() -> Router<AppState> {
    Router::new()
}
