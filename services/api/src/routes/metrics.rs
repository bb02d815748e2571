//! `GET /metrics`: the Prometheus text exposition of every metric recorded
//! in the process.

use axum::extract::State;
use axum::response::IntoResponse;
use http::HeaderValue;
use http::header::CONTENT_TYPE;

use crate::AppState;

/// Content type of the Prometheus text format.
pub(crate) const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) fn router() -> super::Routes {
    super::Routes::new().routes(utoipa_axum::routes!(metrics))
}

/// Every metric of the process in the Prometheus text format (HTTP requests
/// by method, matched route and status, and the broker's). No token needed:
/// keep the port away from the public, or filter `/metrics` at the proxy.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "operations",
    security(()),
    responses((status = 200, description = "Prometheus text exposition format 0.0.4",
        body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, HeaderValue::from_static(PROMETHEUS_TEXT))],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use http::header::CONTENT_TYPE;

    use crate::test_support::{self, body_bytes, get, send};

    #[tokio::test]
    async fn metrics_count_requests_by_matched_route() {
        let (app, _s) = test_support::app().await;
        send(&app, get("/healthz")).await;
        send(&app, get("/healthz")).await;
        send(&app, get("/raw/path/7f3a9")).await;

        let response = send(&app, get("/metrics")).await;
        assert_eq!(response.status(), 200);
        let content_type = response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = String::from_utf8(body_bytes(response).await).unwrap();

        let has = |route: &str, status: &str| {
            text.lines().any(|l| {
                l.starts_with("http_requests_total{")
                    && l.contains(r#"method="GET""#)
                    && l.contains(&format!(r#"route="{route}""#))
                    && l.contains(&format!(r#"status="{status}""#))
            })
        };
        assert!(has("/healthz", "200"), "{text}");
        assert!(has("unmatched", "404"), "{text}");
        assert!(
            text.contains("http_request_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(!text.contains("7f3a9"), "raw paths must not become labels");
    }
}
