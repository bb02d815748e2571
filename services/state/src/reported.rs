//! [`ReportedState`]: what devices publish on `devices/{d}/state/reported`
//! merged (JSON merge patch) into their state document.
//!
//! `emit` hands the report to a bounded queue shared fairly by the tenants
//! ([`fair::FairQueue`]: `capacity` per tenant, taken round-robin) and
//! returns; one task applies reports in arrival order per tenant, so a
//! device's patches apply in the order it sent them, and one tenant's flood
//! delays another's reports by at most a round. When a tenant has more than
//! its share waiting (the database is slow or down), its further reports
//! are dropped and counted ([`ReportedState::dropped`],
//! `fleetmq_write_behind_dropped_total{buffer="reported",tenant}`): the
//! device's retained message still holds its latest payload. A payload that is not a JSON object is recorded as
//! the document's `reported_error` instead of being merged.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use broker::{Event, EventSink, TenantId};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::Value;
use store::Store;
use tracing::{debug, info, warn};

use crate::writer::WriterTask;

struct Report {
    tenant: TenantId,
    device: String,
    payload: Bytes,
    at: DateTime<Utc>,
}

/// The reported-state [`EventSink`]; see the module docs.
pub struct ReportedState {
    queue: Arc<fair::FairQueue<Report>>,
    dropped: AtomicU64,
    writer: WriterTask,
}

impl std::fmt::Debug for ReportedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportedState")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl ReportedState {
    /// Starts the task applying reports; at most `capacity` of one tenant
    /// wait (ten times that of all tenants together).
    pub fn start(store: Store, capacity: usize) -> Arc<Self> {
        let queue = Arc::new(fair::FairQueue::new(fair::Bounds {
            per_key: capacity.max(1),
            total: capacity.max(1).saturating_mul(10),
        }));
        Arc::new(Self {
            queue: queue.clone(),
            dropped: AtomicU64::new(0),
            writer: WriterTask::spawn(apply_reports(store, queue)),
        })
    }

    /// Reports dropped because the queue was full (or after shutdown).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Applies the reports already queued, then stops.
    pub async fn shutdown(&self) {
        self.queue.close();
        self.writer.join().await;
    }
}

impl EventSink for ReportedState {
    fn emit(&self, event: Event) {
        let Event::Published {
            tenant,
            topic,
            payload,
            ..
        } = event
        else {
            return;
        };
        let Some(device) = ids::topics::reporting_device(topic.as_str()) else {
            return;
        };
        // An empty payload on a retained topic deletes the retained
        // message; it is not a report.
        if payload.is_empty() {
            return;
        }
        let report = Report {
            tenant,
            device: device.to_owned(),
            payload,
            at: Utc::now(),
        };
        let tenant = report.tenant.as_str().to_owned();
        if self.queue.push(&tenant, report).is_err() {
            count_dropped(tenant, 1);
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                warn!(dropped, "reported state dropped: queue full or stopped");
            }
        }
    }
}

/// Reports applied per round (one tenant's run of them is not a round).
const ROUND: usize = 64;

/// The pause before a report is tried again while the database is
/// unreachable.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// How long shutdown goes on applying queued reports; the rest are
/// dropped and counted, so a backlog of a flooding tenant cannot hold the
/// process (and the service manager's stop) for minutes.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn count_dropped(tenant: String, n: u64) {
    metrics::counter!("fleetmq_write_behind_dropped_total",
        "buffer" => "reported", "tenant" => tenant)
    .increment(n);
}

/// Drops what `batch` and `queue` hold, counted per tenant.
fn drop_all(batch: &mut Vec<(String, Report)>, queue: &fair::FairQueue<Report>) -> u64 {
    let mut left = 0;
    loop {
        for (tenant, _) in batch.drain(..) {
            count_dropped(tenant, 1);
            left += 1;
        }
        if queue.take_batch(batch, ROUND) == 0 {
            return left;
        }
    }
}

async fn apply_reports(store: Store, queue: Arc<fair::FairQueue<Report>>) {
    let mut batch = Vec::with_capacity(ROUND);
    let mut failing_since: Option<Instant> = None;
    let mut closed_at: Option<Instant> = None;
    while queue.next_batch(&mut batch, ROUND).await > 0 {
        if queue.is_closed()
            && closed_at.get_or_insert_with(Instant::now).elapsed() > SHUTDOWN_GRACE
        {
            let left = drop_all(&mut batch, &queue);
            warn!(
                left,
                "reported state not applied within the shutdown grace; dropped"
            );
            return;
        }
        for (_, r) in batch.drain(..) {
            // While the database is down the report is retried, in order:
            // the queue behind it fills, and what overflows is dropped and
            // counted (see the module docs), rather than every report
            // being lost. After shutdown has begun it is given up.
            while let Err(e) = apply(&store, &r).await {
                if queue.is_closed() {
                    warn!(error = %e, queued = queue.len(),
                        "reported state not stored: database unreachable at shutdown");
                    return;
                }
                if failing_since.is_none() {
                    warn!(error = %e, "database unreachable: reported state waits");
                    failing_since = Some(Instant::now());
                }
                tokio::time::sleep(RETRY_DELAY).await;
            }
            if let Some(since) = failing_since.take() {
                info!(after = ?since.elapsed(), "database back: reported state catching up");
            }
        }
    }
}

/// Applies one report; only an unreachable database is an error (worth
/// retrying), anything else is logged here.
async fn apply(store: &Store, r: &Report) -> Result<(), store::Error> {
    let tenant = r.tenant.as_str();
    let result = match serde_json::from_slice::<Value>(&r.payload) {
        Ok(patch @ Value::Object(_)) => store.merge_reported(tenant, &r.device, &patch, r.at).await,
        _ => {
            let why = "payload is not a JSON object";
            store.set_reported_error(tenant, &r.device, why, r.at).await
        }
    };
    match result {
        Ok(_) => {}
        // A client id that is no registered device.
        Err(store::Error::NotFound { .. }) => {
            debug!(tenant, device = %r.device, "report from an unknown device ignored");
        }
        Err(e) if e.is_unavailable() => return Err(e),
        Err(e) => warn!(tenant, device = %r.device, error = %e, "reported state not stored"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(device: &str, topic_suffix: &str, payload: &'static [u8]) -> Event {
        Event::Published {
            tenant: TenantId::parse("acme").unwrap(),
            client_id: device.into(),
            topic: mqtt::TopicName::parse(format!("devices/{device}/{topic_suffix}")).unwrap(),
            payload: Bytes::from_static(payload),
            qos: mqtt::QoS::AtLeastOnce,
            retain: true,
        }
    }

    #[tokio::test]
    async fn reports_merge_in_order_and_bad_ones_are_errors() {
        let db = crate::test_support::acme(&["d1"]).await;
        let store = db.store().clone();
        let sink = ReportedState::start(store.clone(), 100);
        sink.emit(report("d1", "state/reported", br#"{"led":true,"temp":20}"#));
        sink.emit(report("d1", "state/reported", br#"{"temp":null,"fan":1}"#));
        sink.emit(report("d1", "telemetry", br#"{"ignored":true}"#));
        sink.emit(report("ghost", "state/reported", br#"{"a":1}"#));
        sink.shutdown().await;
        let s = store.get_device_state("acme", "d1").await.unwrap();
        assert_eq!(s.reported, json!({"led": true, "fan": 1}));
        assert_eq!(s.reported_version, 2);

        let sink = ReportedState::start(store.clone(), 100);
        sink.emit(report("d1", "state/reported", b"not json"));
        sink.shutdown().await;
        let s = store.get_device_state("acme", "d1").await.unwrap();
        assert_eq!(
            s.reported_error.as_deref(),
            Some("payload is not a JSON object")
        );
        assert_eq!(s.reported, json!({"led": true, "fan": 1}));
        // After shutdown, reports are counted as dropped.
        sink.emit(report("d1", "state/reported", b"{}"));
        assert_eq!(sink.dropped(), 1);
        db.cleanup().await;
    }

    #[tokio::test]
    async fn an_unreachable_database_holds_reports_and_shutdown_gives_up() {
        let db = crate::test_support::acme(&["d1"]).await;
        let store = db.store().clone();
        let sink = ReportedState::start(store.clone(), 2);
        // Every call on a closed store fails `Unavailable`, as an
        // unreachable database does.
        store.close().await;
        for n in 0..5 {
            sink.emit(report(
                "d1",
                "state/reported",
                if n % 2 == 0 {
                    br#"{"a":1}"#
                } else {
                    br#"{"a":2}"#
                },
            ));
        }
        // At most one report is being retried and two wait: the rest
        // overflowed and were counted, not lost silently.
        assert!(sink.dropped() >= 2, "{}", sink.dropped());
        // Shutdown does not wait for a database that is not coming back.
        sink.shutdown().await;
        db.cleanup().await;
    }
}
