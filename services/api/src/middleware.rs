//! The router's own middleware: request ids, problem bodies for errors made
//! outside handlers, the request timeout, the concurrency limit, the panic
//! response and the request span. `crate::router` puts them in order.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::sync::Semaphore;
use tower_http::request_id::{MakeRequestId, RequestId};
use tracing::Span;

use crate::error::{ApiError, PROBLEM_JSON, Problem};
use crate::telemetry::UNMATCHED_ROUTE;

/// Header carrying the request id, in and out.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest incoming request id that is honoured.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// How much of a framework's plain-text error body becomes the problem's
/// `detail`; longer bodies are dropped, not truncated.
const MAX_DETAIL_BYTES: usize = 1024;

/// Whether an incoming request id is kept: 1 to [`MAX_REQUEST_ID_LEN`]
/// visible ASCII characters. Anything else is replaced, so ids are safe to
/// log and to echo.
pub fn is_valid_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    (1..=MAX_REQUEST_ID_LEN).contains(&bytes.len()) && bytes.iter().all(u8::is_ascii_graphic)
}

/// Drops an `x-request-id` that is not [valid](is_valid_request_id) (or is
/// repeated), so that `SetRequestId` generates a fresh one.
pub(crate) fn drop_unusable_request_id(mut req: Request) -> Request {
    let mut values = req.headers().get_all(X_REQUEST_ID).iter();
    let keep = match (values.next(), values.next()) {
        (None, _) => true,
        (Some(value), None) => is_valid_request_id(value),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        req.headers_mut().remove(X_REQUEST_ID);
    }
    req
}

/// Generates UUIDv7 request ids: unique, and sortable by time in the logs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MakeRequestUuidV7;

impl MakeRequestId for MakeRequestUuidV7 {
    fn make_request_id<B>(&mut self, _request: &http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
            .ok()
            .map(RequestId::new)
    }
}

fn request_id(headers: &HeaderMap) -> Option<&str> {
    headers.get(X_REQUEST_ID).and_then(|v| v.to_str().ok())
}

/// The span every request runs in: `method`, `route` (the matched route
/// template, `unmatched` if none) and `request_id`.
pub(crate) fn make_request_span(req: &Request) -> Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    let request_id = request_id(req.headers()).unwrap_or("-");
    tracing::info_span!("http_request", method = %req.method(), route, request_id)
}

/// Makes every error response a problem:
///
/// - a [`Problem`] made by a handler or by our layers gets this request's
///   `request_id` and `instance` (the path);
/// - an error status that some other layer or extractor answered with a
///   bare body (axum's 405, tower-http's 413, a `Path` rejection, …) is
///   replaced by the generic problem for its status, keeping its headers
///   (`Allow`, …) and, for a 4xx with a short plain-text body, that text as
///   `detail`. 5xx bodies are never copied.
pub(crate) async fn render_problems(req: Request, next: Next) -> Response {
    let request_id = request_id(req.headers()).map(str::to_owned);
    let path = req.uri().path().to_owned();
    let response = next.run(req).await;

    let (parts, body) = response.into_parts();
    let problem = match parts.extensions.get::<Problem>() {
        Some(problem) => problem.clone(),
        None => {
            let status = parts.status;
            let is_problem = parts
                .headers
                .get(CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
            if !(status.is_client_error() || status.is_server_error()) || is_problem {
                return Response::from_parts(parts, body);
            }
            let is_text = parts
                .headers
                .get(CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/plain"));
            let mut problem = Problem::from_status(status);
            if status.is_client_error() && is_text {
                let text = axum::body::to_bytes(body, MAX_DETAIL_BYTES)
                    .await
                    .ok()
                    .and_then(|b| String::from_utf8(b.to_vec()).ok());
                problem.detail = text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
            }
            problem
        }
    };
    let problem = Problem {
        request_id: problem.request_id.or(request_id),
        instance: problem.instance.or(Some(path)),
        ..problem
    };
    problem.render_into(parts)
}

/// Bounds the whole exchange up to the response head, including time spent
/// queued for a concurrency permit; see [`ApiError::Timeout`] for why 503.
pub(crate) async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_elapsed) => ApiError::Timeout(limit).into_response(),
    }
}

/// At most as many requests in handlers as the semaphore has permits; the
/// rest wait (bounded by [`timeout`], which runs outside this).
pub(crate) async fn limit_concurrency(
    State(permits): State<Arc<Semaphore>>,
    req: Request,
    next: Next,
) -> Response {
    let Ok(_permit) = permits.acquire().await else {
        // Only if the semaphore was closed, which nothing does.
        return ApiError::unavailable("server is shutting down").into_response();
    };
    next.run(req).await
}

/// The response for a panicking handler: a bare 500 problem. The panic
/// message goes to the log only.
pub(crate) fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)");
    tracing::error!(error = message, "handler panicked");
    Problem::from_status(StatusCode::INTERNAL_SERVER_ERROR).into_response()
}

/// Fallback for paths no route matches.
pub(crate) async fn no_route() -> Problem {
    Problem::from_status(StatusCode::NOT_FOUND).with_detail("no route matches this path")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_rules() {
        let ok = [
            "a",
            "0190f5c2-7d0e-7cc4-9a3b-1f2e3d4c5b6a",
            &"x".repeat(64),
            "trace:abc/123_~!",
        ];
        let bad = [
            String::new(),
            "x".repeat(65),
            "has space".into(),
            "tab\there".into(),
        ];
        for v in ok {
            assert!(
                is_valid_request_id(&HeaderValue::from_str(v).unwrap()),
                "{v}"
            );
        }
        for v in bad {
            assert!(
                !is_valid_request_id(&HeaderValue::from_str(&v).unwrap()),
                "{v:?}"
            );
        }
        let non_ascii = HeaderValue::from_bytes("é".as_bytes()).unwrap();
        assert!(!is_valid_request_id(&non_ascii));
    }
}
