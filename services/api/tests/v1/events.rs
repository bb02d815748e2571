use std::time::Duration;

use api::{EventHub, PlatformEvent, Role};
use http::Method;
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use store::testing::TestDb;
use tower::ServiceExt as _;

use crate::{TestApp, request};

/// Reads SSE frames from `body` until one has `event: {wanted}`; returns
/// its `id` and parsed `data`.
async fn next_event(body: &mut axum::body::Body, wanted: &str) -> (String, Value) {
    let mut text = String::new();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .expect("no event within 30 s")
            .expect("stream ended")
            .unwrap();
        if let Some(data) = frame.data_ref() {
            text.push_str(std::str::from_utf8(data).unwrap());
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:")))
                    .map(|v| v.trim_start().to_owned())
            };
            if field("event").as_deref() == Some(wanted) {
                let data = serde_json::from_str(&field("data").unwrap()).unwrap();
                return (field("id").unwrap_or_default(), data);
            }
        }
    }
}

async fn sse_gets_events_published_after_connecting(db: &TestDb) {
    let t = TestApp::new(db).await;
    t.tenant("acme").await;
    t.tenant("other").await;
    let viewer = t.token(Role::Viewer, "acme");
    let response = t
        .app
        .clone()
        .oneshot(request(
            Method::GET,
            "/v1/tenants/acme/events/stream?type=device.*",
            Some(&viewer),
            None,
            &[],
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();

    // Another tenant's device is never seen; ours is, with its sequence.
    t.device("other", "x1").await;
    t.device("acme", "d1").await;
    let (id, created) = next_event(&mut body, "device.created").await;
    assert!(!id.is_empty());
    assert_eq!(created["type"], "device.created");
    assert_eq!(created["device"], "d1");
    assert_eq!(created["data"]["id"], "d1");
    assert_eq!(created["seq"], 1);
    assert!(created["timestamp"].is_string());

    t.patch(
        "/v1/tenants/acme/devices/d1",
        &t.admin,
        json!({"enabled": false}),
    )
    .await
    .expect(200);
    let (_, updated) = next_event(&mut body, "device.updated").await;
    assert_eq!(updated["device"], "d1");
    assert_eq!(updated["seq"], 2);
    assert_eq!(updated["data"]["enabled"], false);
    t.delete("/v1/tenants/acme/devices/d1", &t.admin)
        .await
        .expect(204);
    let (_, deleted) = next_event(&mut body, "device.deleted").await;
    assert_eq!(deleted["seq"], 3);
}

async fn sse_is_tenant_scoped_and_filters_are_checked(db: &TestDb) {
    let t = TestApp::new(db).await;
    t.tenant("acme").await;
    t.tenant("other").await;
    let stranger = t.token(Role::Viewer, "other");
    t.get("/v1/tenants/acme/events/stream", &stranger)
        .await
        .problem(404, "not-found");
    t.get("/v1/tenants/nope/events/stream", &t.admin)
        .await
        .problem(404, "not-found");
    t.get("/v1/tenants/acme/events/stream?device=a%20b", &t.admin)
        .await
        .problem(400, "bad-request");
    t.call(Method::GET, "/v1/tenants/acme/events/stream", None, None)
        .await
        .problem(401, "unauthorized");
}

async fn a_lagging_client_is_told_what_it_missed(db: &TestDb) {
    let hub = EventHub::new(4);
    let t = TestApp::with(db, |s| s.with_event_hub(hub.clone())).await;
    t.tenant("acme").await;
    let response = t
        .app
        .clone()
        .oneshot(request(
            Method::GET,
            "/v1/tenants/acme/events/stream",
            Some(&t.admin),
            None,
            &[],
        ))
        .await
        .unwrap();
    let mut body = response.into_body();
    // Nobody reads while ten events go by: the buffer keeps the last four.
    for i in 0..10 {
        hub.publish(PlatformEvent::named("acme", "test.tick", json!({ "i": i })));
    }
    let (_, lagged) = next_event(&mut body, "lagged").await;
    assert_eq!(lagged["missed"], 6);
    let (_, tick) = next_event(&mut body, "test.tick").await;
    assert_eq!(tick["data"]["i"], 6);

    // At shutdown the stream ends, so the server can finish draining.
    hub.close_streams();
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    })
    .await;
    assert!(end.is_ok(), "stream still open after close_streams");
}

store::backend_tests!(
    a_lagging_client_is_told_what_it_missed,
    sse_gets_events_published_after_connecting,
    sse_is_tenant_scoped_and_filters_are_checked
);
