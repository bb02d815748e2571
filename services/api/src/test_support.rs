//! Helpers for this crate's tests: apps on fresh test databases, requests
//! through `oneshot`, bodies as JSON.

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use http::Request;
use http_body_util::BodyExt as _;
use store::Backend;
use store::testing::TestDb;
use tower::ServiceExt as _;

use crate::{AppState, HttpLimits, install_metrics_recorder};

/// An [`AppState`] and the test database behind it (deleted on drop).
pub(crate) struct TestState {
    pub state: AppState,
    pub db: TestDb,
}

impl TestState {
    /// State on a fresh database on `backend`, migrated or not; `None` for
    /// Postgres when no test database URL is configured.
    pub async fn new(backend: Backend, migrated: bool) -> Option<Self> {
        let db = TestDb::new(backend, migrated).await?;
        let metrics = install_metrics_recorder().unwrap();
        Some(Self {
            state: AppState::new(db.store().clone(), metrics),
            db,
        })
    }
}

/// State on a migrated SQLite database.
pub(crate) async fn state() -> TestState {
    TestState::new(Backend::Sqlite, true).await.unwrap()
}

/// The production router on a migrated SQLite database, default limits.
pub(crate) async fn app() -> (Router, TestState) {
    let s = state().await;
    (crate::router(s.state.clone(), &HttpLimits::default()), s)
}

pub(crate) fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub(crate) async fn send(app: &Router, req: Request<Body>) -> Response {
    app.clone().oneshot(req).await.unwrap()
}

pub(crate) async fn body_bytes(response: Response) -> Vec<u8> {
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec()
}

pub(crate) async fn body_json(response: Response) -> serde_json::Value {
    let bytes = body_bytes(response).await;
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// Asserts `response` is a problem with `status`, and returns its body.
pub(crate) async fn problem(response: Response, status: u16) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()[http::header::CONTENT_TYPE],
        crate::PROBLEM_JSON
    );
    let body = body_json(response).await;
    assert_eq!(body["status"], status, "{body}");
    body
}
