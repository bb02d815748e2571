//! The web dashboard (web/ at the repository root), compiled into the
//! binary so `fleetmq serve` needs no files beside it. The app is plain
//! HTML, CSS and ES modules with no build step: what is in web/ is what is
//! served.

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};

use crate::AppState;

const INDEX_HTML: &str = include_str!("../../../web/index.html");
const APP_JS: &str = include_str!("../../../web/app.js");
const APP_CSS: &str = include_str!("../../../web/app.css");

/// Everything comes from this origin: no CDN, no inline script, and the
/// page cannot be framed (clickjacking).
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            // Small files; revalidate so an upgraded binary is seen at once.
            (CACHE_CONTROL, "no-cache"),
            (CONTENT_SECURITY_POLICY, CSP),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `/`, `/app.js` and `/app.css`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use crate::test_support::{self, body_bytes, get, send};

    #[tokio::test]
    async fn the_dashboard_is_served_from_the_binary() {
        let (app, _s) = test_support::app().await;
        for (path, kind, needle) in [
            ("/", "text/html", "<main id=\"main\""),
            ("/app.js", "text/javascript", "function route()"),
            ("/app.css", "text/css", "prefers-color-scheme: dark"),
        ] {
            let response = send(&app, get(path)).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let headers = response.headers().clone();
            assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
            assert!(
                headers["content-security-policy"]
                    .to_str()
                    .unwrap()
                    .contains("default-src 'self'")
            );
            let body = String::from_utf8(body_bytes(response).await).unwrap();
            assert!(body.contains(needle), "{path}");
        }
    }
}
