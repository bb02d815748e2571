//! Prometheus metrics: the process-wide recorder and the HTTP request
//! metrics recorded by the router's middleware.
//!
//! `metrics` has one global recorder per process, so
//! [`install_metrics_recorder`] installs it once and hands every later caller
//! (another test app, the binary) the same handle.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::Method;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::Error;

/// Counter: HTTP requests answered, by `method`, `route`, `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "http_requests_total";
/// Histogram: time to the response head in seconds, by `method`, `route`,
/// `status`.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "http_request_duration_seconds";
/// The `route` label of requests that matched no route. Routes start with
/// `/`, so it cannot clash with one.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Histogram buckets (seconds) for every histogram in the process: true
/// Prometheus histograms aggregate across nodes, summaries do not.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How often histogram samples are drained into buckets even when nobody
/// scrapes, so memory stays bounded.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Installs the Prometheus recorder as the process's global `metrics`
/// recorder, or returns the handle of the one this function installed
/// before. Starts a `metrics-upkeep` thread on first install.
///
/// Fails if a different recorder was installed first, or the upkeep thread
/// cannot be started.
pub fn install_metrics_recorder() -> Result<PrometheusHandle, Error> {
    // A std Mutex because nothing awaits under it; it also makes two
    // concurrent first calls install once.
    let mut slot = HANDLE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(BUCKETS)
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(Error::MetricsRecorder)?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        })
        .map_err(Error::MetricsUpkeep)?;
    metrics::describe_counter!(HTTP_REQUESTS_TOTAL, "HTTP requests answered.");
    metrics::describe_histogram!(
        HTTP_REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Time from receiving an HTTP request to sending the response head."
    );
    *slot = Some(handle.clone());
    Ok(handle)
}

/// Middleware: counts each request and times it, labelled by method, the
/// matched route template (never the raw path, to bound cardinality) and
/// status.
pub(crate) async fn record_http_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED_ROUTE.to_owned(), |p| p.as_str().to_owned());
    let response = next.run(req).await;
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", response.status().as_str().to_owned()),
    ];
    metrics::counter!(HTTP_REQUESTS_TOTAL, &labels).increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION_SECONDS, &labels)
        .record(start.elapsed().as_secs_f64());
    response
}

/// Extension methods are client-chosen strings: fold them into `OTHER`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_is_idempotent() {
        let a = install_metrics_recorder().unwrap();
        let b = install_metrics_recorder().unwrap();
        metrics::counter!("idempotence_probe_total").increment(1);
        assert!(a.render().contains("idempotence_probe_total"));
        assert!(b.render().contains("idempotence_probe_total"));
    }

    #[test]
    fn unknown_methods_are_folded() {
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
    }
}
