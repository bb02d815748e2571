//! `GET /healthz` (the process is up) and `GET /readyz` (it can serve: the
//! database answers and its migrations are current, and every
//! [`crate::ReadinessCheck`] the binary added passes, such as a cluster
//! member's NATS connection).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa_axum::routes;

use crate::AppState;
use crate::error::ApiError;

/// How long `/readyz` waits for the database. Shorter than the request
/// timeout so a hung database reads as "unreachable", not as a timeout.
const READY_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn router() -> super::Routes {
    super::Routes::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// The process is up.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    status: &'static str,
}

/// The process can serve requests.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Ready {
    /// Always `ready`.
    #[schema(example = "ready")]
    status: &'static str,
    /// `sqlite` or `postgres`.
    #[schema(example = "sqlite")]
    database: String,
}

/// Liveness: answers as long as the process serves HTTP; checks nothing
/// else, so a database outage does not get the process restarted. No token
/// needed.
#[utoipa::path(get, path = "/healthz", operation_id = "healthz", tag = "operations",
    security(()),
    responses((status = 200, description = "The process is up", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: 200 with the database backend, or 503 naming what is wrong
/// (the store's errors map to client-safe details in `error.rs`; whatever
/// else fails the check is still "not ready", so 503 too). No token needed.
#[utoipa::path(get, path = "/readyz", operation_id = "readyz", tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Ready to serve", body = Ready),
        (status = 503, description = "Not ready: the database is unreachable, or its migrations are not this server's, or (a cluster member) NATS is unreachable",
         body = crate::Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    for check in &state.readiness {
        check.check().map_err(ApiError::unavailable)?;
    }
    match tokio::time::timeout(READY_CHECK_TIMEOUT, state.store.check_ready()).await {
        Ok(Ok(())) => Ok(Json(Ready {
            status: "ready",
            database: state.store.backend().to_string(),
        })),
        Ok(Err(e)) => Err(match ApiError::from(e) {
            ApiError::Internal(source) => ApiError::Unavailable {
                detail: "database check failed".to_owned(),
                source: Some(source),
            },
            other => other,
        }),
        Err(_elapsed) => Err(ApiError::unavailable(format!(
            "database did not answer within {READY_CHECK_TIMEOUT:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use store::Backend;

    use crate::test_support::{self, TestState, body_json, get, problem, send};
    use crate::{HttpLimits, router};

    const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

    #[tokio::test]
    async fn healthz_is_ok() {
        let (app, _s) = test_support::app().await;
        let response = send(&app, get("/healthz")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            body_json(response).await,
            serde_json::json!({"status": "ok"})
        );
    }

    /// The router on a fresh database (`migrated` or not) of each backend
    /// this machine has, with the state behind it to clean up.
    async fn apps(migrated: bool) -> Vec<(Backend, Router, TestState)> {
        let mut apps = Vec::new();
        for backend in BACKENDS {
            if let Some(s) = TestState::new(backend, migrated).await {
                apps.push((backend, router(s.state.clone(), &HttpLimits::default()), s));
            }
        }
        apps
    }

    #[tokio::test]
    async fn readyz_is_ready_on_a_migrated_store() {
        for (backend, app, s) in apps(true).await {
            let response = send(&app, get("/readyz")).await;
            assert_eq!(response.status(), 200, "{backend}");
            assert_eq!(
                body_json(response).await,
                serde_json::json!({"status": "ready", "database": backend.to_string()})
            );
            s.db.cleanup().await;
        }
    }

    #[tokio::test]
    async fn readyz_names_pending_migrations() {
        for (backend, app, s) in apps(false).await {
            let body = problem(send(&app, get("/readyz")).await, 503).await;
            assert_eq!(body["type"], "https://fleetmq.dev/problems/unavailable");
            let detail = body["detail"].as_str().unwrap();
            assert!(detail.contains("migrations pending"), "{backend}: {detail}");
            // Liveness does not depend on the database.
            assert_eq!(send(&app, get("/healthz")).await.status(), 200);
            s.db.cleanup().await;
        }
    }

    /// A readiness input the binary adds (a cluster member's NATS link).
    struct Switch(std::sync::atomic::AtomicBool);

    impl crate::ReadinessCheck for Switch {
        fn check(&self) -> Result<(), String> {
            match self.0.load(std::sync::atomic::Ordering::Relaxed) {
                true => Ok(()),
                false => Err("the NATS connection is down".to_owned()),
            }
        }
    }

    #[tokio::test]
    async fn readyz_follows_an_added_check() {
        let s = test_support::state().await;
        let switch = std::sync::Arc::new(Switch(false.into()));
        let state = s.state.clone().with_readiness_check(switch.clone());
        let app = router(state, &HttpLimits::default());
        let body = problem(send(&app, get("/readyz")).await, 503).await;
        assert_eq!(body["detail"], "the NATS connection is down");
        assert_eq!(send(&app, get("/healthz")).await.status(), 200);
        switch.0.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(send(&app, get("/readyz")).await.status(), 200);
    }

    #[tokio::test]
    async fn readyz_names_an_unreachable_database() {
        let s = test_support::state().await;
        s.state.store().close().await;
        let app = router(s.state.clone(), &HttpLimits::default());
        let body = problem(send(&app, get("/readyz")).await, 503).await;
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("unreachable"), "{detail}");
    }
}
