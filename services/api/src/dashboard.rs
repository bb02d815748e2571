//! The web dashboard (web/ at the repository root), compiled into the
//! binary so `fleetmq serve` needs no files beside it. The app is plain
//! HTML, CSS and ES modules with no build step: what is in web/ is what is
//! served.

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};

use crate::AppState;

/// Every file of web/ the page loads: path, media type, contents.
const ASSETS: &[(&str, &str, &str)] = &[
    ("/", HTML, include_str!("../../../web/index.html")),
    ("/app.css", CSS, include_str!("../../../web/app.css")),
    ("/app.js", JS, include_str!("../../../web/app.js")),
    ("/lib.js", JS, include_str!("../../../web/lib.js")),
    ("/chart.js", JS, include_str!("../../../web/chart.js")),
    ("/overview.js", JS, include_str!("../../../web/overview.js")),
    ("/devices.js", JS, include_str!("../../../web/devices.js")),
    ("/device.js", JS, include_str!("../../../web/device.js")),
    ("/admin.js", JS, include_str!("../../../web/admin.js")),
];
const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

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

/// `/` and the page's styles and ES modules.
pub(crate) fn routes() -> Router<AppState> {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(path, get(move || async move { asset(content_type, body) }))
        })
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
            ("/chart.js", "text/javascript", "export function lineChart"),
            (
                "/device.js",
                "text/javascript",
                "export async function pageDevice",
            ),
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

    /// A module imported but not served would break the page with no
    /// server-side error: every `from "./x.js"` must be in [`super::ASSETS`].
    #[test]
    fn every_imported_module_is_served() {
        for (path, _, body) in super::ASSETS {
            for import in body.split("from \"./").skip(1) {
                let file = import.split('"').next().unwrap();
                let served = format!("/{file}");
                assert!(
                    super::ASSETS.iter().any(|(p, _, _)| *p == served),
                    "{path} imports {file}, which is not served"
                );
            }
        }
    }
}
