use std::sync::Arc;

use api::{EventListener as _, FleetStats, PlatformEvent, Role};
use serde_json::json;
use store::testing::TestDb;

use crate::TestApp;

async fn series_lifecycle_and_presence(db: &TestDb) {
    let stats = Arc::new(FleetStats::new());
    let t = TestApp::with(db, |s| s.with_fleet_stats(stats.clone())).await;
    t.tenant("acme").await;
    t.tenant("beta").await;
    t.device("acme", "d1").await;
    stats.on_event(
        &PlatformEvent::named(
            "acme",
            "device.connected",
            json!({"remote_addr": "127.0.0.1:5"}),
        )
        .for_device("d1", Some(1)),
    );
    stats.message_at("acme", "d1", chrono::Utc::now());
    let viewer = t.token(Role::Viewer, "acme");

    let series = t.fetch("/v1/tenants/acme/metrics/series", &viewer).await;
    assert_eq!(series["bucket_seconds"], 10);
    let buckets = series["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 360);
    assert_eq!(
        buckets
            .iter()
            .map(|b| b["messages"].as_u64().unwrap())
            .sum::<u64>(),
        1
    );
    assert_eq!(series["connections"], 1);
    assert_eq!(
        series["top_talkers"],
        json!([{"device_id": "d1", "messages": 1}])
    );

    let history = t
        .fetch("/v1/tenants/acme/devices/d1/presence", &viewer)
        .await;
    assert_eq!(history["items"][0]["type"], "device.connected");
    assert_eq!(history["items"][0]["remote_addr"], "127.0.0.1:5");
    let recent = t.fetch("/v1/tenants/acme/lifecycle", &viewer).await;
    assert_eq!(recent["items"][0]["device_id"], "d1");

    // Nothing of acme is seen from beta, and beta's own series is empty.
    let beta = t.token(Role::Viewer, "beta");
    let empty = t.fetch("/v1/tenants/beta/metrics/series", &beta).await;
    assert_eq!(empty["connections"], 0);
    assert_eq!(empty["top_talkers"], json!([]));
    for (uri, token) in [
        ("/v1/tenants/acme/metrics/series", &beta),
        ("/v1/tenants/nope/lifecycle", &t.admin),
        ("/v1/tenants/acme/devices/nope/presence", &viewer),
    ] {
        t.get(uri, token).await.problem(404, "not-found");
    }
}

store::backend_tests!(series_lifecycle_and_presence);
