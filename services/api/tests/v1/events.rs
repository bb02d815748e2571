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
    let t = TestApp::with_tenants(db, &["acme", "other"]).await;
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

    t.disable("acme", "d1").await;
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
    let t = TestApp::with_tenants(db, &["acme", "other"]).await;
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

/// A REST change's event is written in the change's transaction: the
/// outbox has one exactly for each change that committed, even when the
/// in-memory outbox writer takes nothing, and the stream hears of a change
/// only once it committed (and of none that failed).
async fn events_of_rest_changes_exist_exactly_when_their_change_committed(db: &TestDb) {
    let hub = EventHub::new(64);
    let t = TestApp::with(db, |s| s.with_event_hub(hub.clone())).await;
    // A writer that refuses every event it is handed.
    let (writer, writer_task) = webhooks::OutboxWriter::spawn(
        t.store.clone(),
        webhooks::OutboxWriterConfig {
            capacity: 1,
            max_batch: 1,
            max_undispatched: 0,
        },
        None,
    );
    hub.add_listener(std::sync::Arc::new(writer));
    t.tenant("acme").await;
    let mut stream = hub.subscribe("acme");
    let devices = "/v1/tenants/acme/devices";

    t.device("acme", "d1").await;
    // Refused changes: a taken id, a stale If-Match, a missing device.
    t.post(devices, &t.admin, json!({"id": "d1"}))
        .await
        .problem(409, "already-exists");
    t.send(request(
        Method::PATCH,
        "/v1/tenants/acme/devices/d1",
        Some(&t.admin),
        Some(json!({"enabled": false})),
        &[("if-match", "\"0000\"")],
    ))
    .await
    .expect(412);
    t.delete("/v1/tenants/acme/devices/ghost", &t.admin)
        .await
        .problem(404, "not-found");
    // Committed: five updates and the deletion.
    let mut changes: Vec<_> = (0..5)
        .map(|i| {
            (
                Method::PATCH,
                Some(json!({"labels": {"n": i.to_string()}})),
                200,
            )
        })
        .collect();
    changes.push((Method::DELETE, None, 204));
    for (method, body, status) in changes {
        t.send(request(
            method,
            "/v1/tenants/acme/devices/d1",
            Some(&t.admin),
            body,
            &[],
        ))
        .await
        .expect(status);
    }

    // Announced before the answer, each with the outbox row it is.
    let mut heard = Vec::new();
    while let Ok(item) = stream.try_recv() {
        let api::events::StreamItem::Event(e) = item else {
            panic!("events missed");
        };
        heard.push((e.event_type.clone(), e.seq, e.outbox_id));
    }
    let written: Vec<_> = db
        .outbox()
        .await
        .into_iter()
        .map(|e| (e.event_type, e.device_seq, Some(e.id)))
        .collect();
    let mut expected = vec![("device.created".to_owned(), Some(1))];
    expected.extend((2..7).map(|seq| ("device.updated".to_owned(), Some(seq))));
    expected.push(("device.deleted".to_owned(), Some(7)));
    let types = |events: &[(String, Option<i64>, Option<i64>)]| {
        events
            .iter()
            .map(|(ty, seq, _)| (ty.clone(), *seq))
            .collect::<Vec<_>>()
    };
    assert_eq!(types(&written), expected);
    assert_eq!(heard, written);
    drop(hub);
    drop(t);
    writer_task.closed().await;
}

store::backend_tests!(
    events_of_rest_changes_exist_exactly_when_their_change_committed,
    a_lagging_client_is_told_what_it_missed,
    sse_gets_events_published_after_connecting,
    sse_is_tenant_scoped_and_filters_are_checked
);
