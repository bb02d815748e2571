//! [`router()`]: the whole app, routes and layers, for the binary and tests.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::{Extension, Router};
use http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION, SET_COOKIE};
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::LatencyUnit;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::{
    SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer,
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::auth::{RateLimiter, TokenRateLimiter};
use crate::middleware::{
    MakeRequestUuidV7, X_REQUEST_ID, drop_unusable_request_id, limit_concurrency,
    make_request_span, no_route, panic_response, render_problems, timeout,
};
use crate::telemetry::record_http_metrics;
use crate::tenant_limit::{TenantPermits, limit_tenant_concurrency};
use crate::{AppState, HttpLimits, routes};

/// The fleetmq HTTP app.
///
/// Layers, outermost first (each sees what the ones below it produce):
///
/// 1. drop an unusable incoming `x-request-id` (see
///    [`is_valid_request_id`](crate::is_valid_request_id)), then set one
///    (UUIDv7) if missing, and echo it on the response;
/// 2. mark `Authorization`, `Proxy-Authorization` and `Cookie` sensitive, so
///    they never reach the logs;
/// 3. the request span (`method`, `route`, `request_id`) and an info event
///    per response with status and latency;
/// 4. HTTP metrics by method, matched route and status;
/// 5. problem bodies: `request_id`/`instance` added to handlers' problems,
///    bare error responses from layers and extractors turned into problems;
/// 6. panics → 500 problem (message logged only);
/// 7. request timeout → 503 problem;
/// 8. body limit → 413 (by `Content-Length`, or while reading);
/// 9. for `/v1` routes only: the per-tenant concurrency limit (see
///    `tenant_limit`), the concurrency limit, and the per-caller
///    rate limit (checked once the caller is authenticated); the token
///    exchange has its own, per API key and per client address.
pub fn router(state: AppState, limits: &HttpLimits) -> Router {
    let api = routes::api(&state);
    with_api(state, limits, api)
}

/// [`router()`] with `api` in place of the resource routes; tests add
/// routes this way.
pub(crate) fn with_api(state: AppState, limits: &HttpLimits, api: Router<AppState>) -> Router {
    let api = match limits.concurrency_limit {
        Some(max) => {
            let permits = Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS)));
            api.layer(from_fn_with_state(permits, limit_concurrency))
        }
        None => api,
    };
    // Outside the global limit: a tenant's requests waiting their turn
    // hold none of its permits.
    let api = match limits.tenant_concurrency {
        Some(max) => api.layer(from_fn_with_state(
            Arc::new(TenantPermits::new(max)),
            limit_tenant_concurrency,
        )),
        None => api,
    };
    let api = match limits.rate_limit {
        Some(limit) => api.layer(Extension(Arc::new(RateLimiter::new(limit)))),
        None => api,
    };
    let api = match limits.token_rate_limit {
        Some(limit) => api.layer(Extension(Arc::new(TokenRateLimiter(RateLimiter::new(
            limit,
        ))))),
        None => api,
    };
    let layers = ServiceBuilder::new()
        .map_request(drop_unusable_request_id)
        .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuidV7))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .layer(SetSensitiveRequestHeadersLayer::new([
            AUTHORIZATION,
            PROXY_AUTHORIZATION,
            COOKIE,
        ]))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_request_span)
                .on_response(
                    DefaultOnResponse::new()
                        .level(Level::INFO)
                        .latency_unit(LatencyUnit::Millis),
                )
                // 5xx are logged where they arise (ApiError, panic handler),
                // with their cause; a second, cause-less error line is noise.
                .on_failure(()),
        )
        .layer(SetSensitiveResponseHeadersLayer::new([SET_COOKIE]))
        .layer(from_fn(record_http_metrics))
        .layer(from_fn(render_problems))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(from_fn_with_state(limits.request_timeout, timeout))
        .layer(RequestBodyLimitLayer::new(limits.body_limit_bytes))
        .layer(DefaultBodyLimit::max(limits.body_limit_bytes));
    Router::new()
        .merge(routes::ops())
        .merge(crate::dashboard::routes())
        .merge(api)
        .fallback(no_route)
        .layer(layers)
        .with_state(state)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::extract::Path;
    use axum::routing::{get, post};
    use http::header::{ALLOW, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
    use http::{HeaderMap, Request, StatusCode};
    use serde::{Deserialize, Serialize};
    use tokio::sync::Notify;

    use super::with_api;
    use crate::test_support::{self, body_bytes, body_json, get as get_req, problem, send};
    use crate::{ApiJson, AppState, HttpLimits};

    #[derive(Debug, Serialize, Deserialize)]
    struct Echo {
        name: String,
        tags: Vec<u32>,
    }

    /// A handler that signals `entered`, then waits for `release`.
    #[derive(Clone, Default)]
    pub(crate) struct Gate {
        pub entered: Arc<Notify>,
        pub release: Arc<Notify>,
    }

    async fn boom() -> &'static str {
        panic!("secret panic text")
    }

    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_secs(60)).await;
        "late"
    }

    /// Routes that exercise the layers; mounted where `/v1` routes go.
    pub(crate) fn test_routes(gate: Gate) -> Router<AppState> {
        Router::new()
            .route(
                "/test/echo",
                post(|ApiJson(e): ApiJson<Echo>| async move { ApiJson(e) }),
            )
            .route("/test/panic", get(boom))
            .route("/test/slow", get(slow))
            .route(
                "/test/auth-is-sensitive",
                get(|headers: HeaderMap| async move {
                    headers[AUTHORIZATION].is_sensitive().to_string()
                }),
            )
            .route(
                "/test/items/{id}",
                get(|Path(id): Path<u32>| async move { id.to_string() }),
            )
            .route(
                "/test/gate",
                get(move || async move {
                    gate.entered.notify_one();
                    gate.release.notified().await;
                    "released"
                }),
            )
    }

    async fn test_app(limits: HttpLimits) -> (Router, Gate, test_support::TestState) {
        let s = test_support::state().await;
        let gate = Gate::default();
        let app = with_api(s.state.clone(), &limits, test_routes(gate.clone()));
        (app, gate, s)
    }

    fn post_json(uri: &str, body: &str) -> Request<Body> {
        Request::post(uri)
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_owned()))
            .unwrap()
    }

    #[tokio::test]
    async fn unknown_route_is_404_problem_with_request_id() {
        let (app, _s) = test_support::app().await;
        let response = send(&app, get_req("/no/such/thing")).await;
        let header_id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = problem(response, 404).await;
        assert_eq!(body["type"], "https://fleetmq.dev/problems/not-found");
        assert_eq!(body["request_id"], header_id.as_str());
        assert_eq!(body["instance"], "/no/such/thing");
    }

    #[tokio::test]
    async fn wrong_method_is_405_problem_keeping_allow() {
        let (app, _s) = test_support::app().await;
        let response = send(
            &app,
            Request::delete("/healthz").body(Body::empty()).unwrap(),
        )
        .await;
        let allow = response.headers()[ALLOW].to_str().unwrap().to_owned();
        assert!(allow.contains("GET"), "{allow}");
        let body = problem(response, 405).await;
        assert_eq!(
            body["type"],
            "https://fleetmq.dev/problems/method-not-allowed"
        );
        assert!(body["request_id"].is_string());
    }

    #[tokio::test]
    async fn request_id_is_generated_when_missing() {
        let (app, _s) = test_support::app().await;
        let response = send(&app, get_req("/healthz")).await;
        let id = response.headers()["x-request-id"].to_str().unwrap();
        let uuid = uuid::Uuid::parse_str(id).unwrap();
        assert_eq!(uuid.get_version_num(), 7);
    }

    #[tokio::test]
    async fn sane_request_id_is_echoed_and_others_replaced() {
        let (app, _s) = test_support::app().await;
        let sane = "req-42:abc/DEF_~";
        let too_long = "x".repeat(65);
        for (sent, kept) in [
            (sane, true),
            (too_long.as_str(), false),
            ("has space", false),
        ] {
            let req = Request::get("/healthz")
                .header("x-request-id", sent)
                .body(Body::empty())
                .unwrap();
            let response = send(&app, req).await;
            let echoed = response.headers()["x-request-id"].to_str().unwrap();
            if kept {
                assert_eq!(echoed, sent);
            } else {
                assert!(
                    uuid::Uuid::parse_str(echoed).is_ok(),
                    "{sent:?} -> {echoed:?}"
                );
            }
        }
        // Two ids in one request: neither is trusted.
        let req = Request::get("/healthz")
            .header("x-request-id", "a")
            .header("x-request-id", "b")
            .body(Body::empty())
            .unwrap();
        let response = send(&app, req).await;
        assert!(
            uuid::Uuid::parse_str(response.headers()["x-request-id"].to_str().unwrap()).is_ok()
        );
    }

    #[tokio::test]
    async fn body_over_limit_is_413_by_content_length_and_while_reading() {
        let limits = HttpLimits {
            body_limit_bytes: 32,
            ..HttpLimits::default()
        };
        let (app, _gate, _s) = test_app(limits).await;
        let big = format!(r#"{{"name":"{}","tags":[]}}"#, "x".repeat(100));

        // Declared length: refused before the handler runs.
        let mut req = post_json("/test/echo", &big);
        req.headers_mut().insert(CONTENT_LENGTH, big.len().into());
        let body = problem(send(&app, req).await, 413).await;
        assert_eq!(
            body["type"],
            "https://fleetmq.dev/problems/payload-too-large"
        );
        assert!(body["request_id"].is_string());

        // No declared length: the extractor hits the limit while reading.
        let body = problem(send(&app, post_json("/test/echo", &big)).await, 413).await;
        assert_eq!(
            body["type"],
            "https://fleetmq.dev/problems/payload-too-large"
        );

        // Under the limit: fine.
        let response = send(&app, post_json("/test/echo", r#"{"name":"a","tags":[1]}"#)).await;
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn api_json_rejections_are_problems_with_pointers() {
        let (app, _gate, _s) = test_app(HttpLimits::default()).await;

        let response = send(
            &app,
            post_json("/test/echo", r#"{"name":"a","tags":[1,"two"]}"#),
        )
        .await;
        let body = problem(response, 422).await;
        assert_eq!(body["type"], "https://fleetmq.dev/problems/validation");
        assert_eq!(body["errors"][0]["pointer"], "/tags/1");

        let response = send(&app, post_json("/test/echo", r#"{"tags":[]}"#)).await;
        assert_eq!(
            problem(response, 422).await["errors"][0]["pointer"],
            "/name"
        );

        let response = send(&app, post_json("/test/echo", r#"{"name":"#)).await;
        problem(response, 400).await;

        let req = Request::post("/test/echo").body(Body::from("{}")).unwrap();
        problem(send(&app, req).await, 415).await;
    }

    #[tokio::test]
    async fn other_extractor_rejections_become_problems() {
        let (app, _gate, _s) = test_app(HttpLimits::default()).await;
        let body = problem(send(&app, get_req("/test/items/abc")).await, 400).await;
        assert_eq!(body["type"], "https://fleetmq.dev/problems/bad-request");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("parse"), "{detail}");
    }

    #[tokio::test]
    async fn panic_is_500_problem_without_the_message() {
        let (app, _gate, _s) = test_app(HttpLimits::default()).await;
        let response = send(&app, get_req("/test/panic")).await;
        assert!(response.headers().contains_key("x-request-id"));
        let body = problem(response, 500).await;
        assert_eq!(body["type"], "https://fleetmq.dev/problems/internal");
        assert!(body["request_id"].is_string());
        assert!(!body.to_string().contains("secret"), "{body}");
    }

    #[tokio::test]
    async fn slow_request_times_out_as_503_problem() {
        let limits = HttpLimits {
            request_timeout: Duration::from_millis(50),
            ..HttpLimits::default()
        };
        let (app, _gate, _s) = test_app(limits).await;
        let body = problem(send(&app, get_req("/test/slow")).await, 503).await;
        assert_eq!(body["type"], "https://fleetmq.dev/problems/timeout");
    }

    #[tokio::test]
    async fn concurrency_limit_queues_api_requests_but_not_probes() {
        let limits = HttpLimits {
            concurrency_limit: Some(1),
            ..HttpLimits::default()
        };
        let (app, gate, _s) = test_app(limits).await;
        let first = tokio::spawn({
            let app = app.clone();
            async move { send(&app, get_req("/test/gate")).await }
        });
        gate.entered.notified().await;

        // The only permit is taken: an API request waits for it.
        let second = tokio::spawn({
            let app = app.clone();
            async move { send(&app, get_req("/test/items/7")).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!second.is_finished());
        // Probes and unmatched paths are outside the limit.
        assert_eq!(
            send(&app, get_req("/healthz")).await.status(),
            StatusCode::OK
        );
        problem(send(&app, get_req("/not-an-api-route")).await, 404).await;

        gate.release.notify_one();
        assert_eq!(body_bytes(first.await.unwrap()).await, b"released");
        assert_eq!(body_bytes(second.await.unwrap()).await, b"7");
    }

    #[tokio::test]
    async fn credentials_are_marked_sensitive() {
        let (app, _gate, _s) = test_app(HttpLimits::default()).await;
        let req = Request::get("/test/auth-is-sensitive")
            .header(AUTHORIZATION, "Bearer not-for-logs")
            .body(Body::empty())
            .unwrap();
        let response = send(&app, req).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_bytes(response).await, b"true");
    }

    #[tokio::test]
    async fn success_bodies_are_left_alone() {
        let (app, _gate, _s) = test_app(HttpLimits::default()).await;
        let response = send(
            &app,
            post_json("/test/echo", r#"{"name":"a","tags":[1,2]}"#),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body = body_json(response).await;
        assert_eq!(body["tags"][1], 2);
    }
}
