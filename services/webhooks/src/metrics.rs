//! The worker's metrics (`metrics` crate; exported by whoever installs a
//! recorder, e.g. the API's Prometheus endpoint).
//!
//! - `fleetmq_webhook_attempts_total{outcome}`: delivered, retry, failed.
//! - `fleetmq_webhook_deliveries_total{status}`: deliveries finished, by
//!   their final status (delivered, failed).
//! - `fleetmq_webhook_attempt_duration_seconds`: request latency.
//! - `fleetmq_webhook_queue_depth{tenant, webhook_id}`: pending deliveries.
//! - `fleetmq_webhook_endpoints_disabled_total`.

use std::time::Duration;

use store::AttemptOutcome;

pub(crate) fn record_attempt(outcome: &AttemptOutcome, latency: Duration) {
    let outcome = match outcome {
        AttemptOutcome::Delivered => "delivered",
        AttemptOutcome::Retry { .. } => "retry",
        AttemptOutcome::Failed | AttemptOutcome::FailedAndDisable { .. } => "failed",
    };
    metrics::counter!("fleetmq_webhook_attempts_total", "outcome" => outcome).increment(1);
    if outcome != "retry" {
        metrics::counter!("fleetmq_webhook_deliveries_total", "status" => outcome).increment(1);
    }
    metrics::histogram!("fleetmq_webhook_attempt_duration_seconds").record(latency.as_secs_f64());
}

pub(crate) fn endpoint_disabled() {
    metrics::counter!("fleetmq_webhook_endpoints_disabled_total").increment(1);
}

pub(crate) fn queue_depth(tenant: &str, webhook_id: &str, pending: i64) {
    // Gauges are f64; queue depths are far below 2^53.
    #[allow(clippy::cast_precision_loss)]
    let pending = pending as f64;
    metrics::gauge!("fleetmq_webhook_queue_depth",
        "tenant" => tenant.to_owned(), "webhook_id" => webhook_id.to_owned())
    .set(pending);
}
