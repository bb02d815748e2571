//! The worker's metrics through a debugging recorder (a test binary of its
//! own: the recorder is process-global).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use metrics_util::debugging::DebuggingRecorder;
use store::testing::TestDb;
use store::{DeliveryStatus, Store};
use testkit::metric_values;
use webhooks::{Worker, WorkerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_latency_and_queue_depth() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let db = TestDb::sqlite().await;
    let (store, receiver, addr, server) = scene(&db).await;
    receiver.set("down", Behaviour::failing_first(usize::MAX));
    let ok = endpoint(store, addr, "ok", &["device.connected"], None).await;
    let down = endpoint(store, addr, "down", &["device.disconnected"], None).await;
    let events = [
        device_event("device.connected", "d1", 1),
        device_event("device.disconnected", "d1", 1),
        device_event("device.disconnected", "d2", 1),
    ];
    store.append_outbox_events(&events).await.unwrap();
    // The failing endpoint's next attempt is an hour away: its two
    // deliveries stay queued.
    let config = WorkerConfig {
        retry_schedule: vec![Duration::ZERO, Duration::from_secs(3600)],
        ..config()
    };
    let worker = Worker::spawn(Store::clone(store), config).unwrap();
    until_statuses(store, &ok, &[DeliveryStatus::Delivered]).await;
    until_statuses(store, &down, &[DeliveryStatus::Pending; 2]).await;
    worker.shutdown().await;

    let seen = metric_values(&snapshotter);
    let get = |n: &str| {
        seen.get(n)
            .copied()
            .unwrap_or_else(|| panic!("{n} missing: {seen:?}"))
    };
    assert_eq!(
        get("fleetmq_webhook_attempts_total{outcome=delivered}"),
        1.0
    );
    assert_eq!(get("fleetmq_webhook_attempts_total{outcome=retry}"), 2.0);
    assert_eq!(
        get("fleetmq_webhook_deliveries_total{status=delivered}"),
        1.0
    );
    assert!(
        !seen.contains_key("fleetmq_webhook_deliveries_total{status=retry}"),
        "a retry finishes no delivery"
    );
    assert_eq!(get("fleetmq_webhook_attempt_duration_seconds{}"), 3.0);
    let depth = format!(
        "fleetmq_webhook_queue_depth{{tenant=acme,webhook_id={}}}",
        down.id
    );
    assert!(get(&depth) >= 1.0, "the down endpoint has a queue");
    server.abort();
    db.cleanup().await;
}
