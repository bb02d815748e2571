//! The outbox writer: non-blocking pushes, batched appends, a bound that
//! drops (and says so) instead of growing without limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use store::testing::TestDb;
use store::{BatchLimits, NewOutboxEvent, Route};
use webhooks::{MessageRoutes, OutboxWriter, OutboxWriterConfig, Worker};

fn message(n: i64) -> NewOutboxEvent {
    NewOutboxEvent {
        device_id: Some("d1".into()),
        device_seq: Some(n),
        topic: Some("devices/d1/temp".into()),
        ..NewOutboxEvent::new("acme", "message.published", json!({"n": n}))
    }
}

/// Fan out everything (no batching) and read back the events of `hook`'s
/// deliveries, in order.
async fn fan_out_to(
    store: &store::Store,
    hook: &store::WebhookEndpoint,
) -> Vec<store::OutboxEvent> {
    let batch = BatchLimits {
        max_events: 1,
        max_wait: Duration::ZERO,
    };
    store
        .fan_out_outbox(1000, batch, |_, _| Route::Single)
        .await
        .unwrap();
    let mut events = Vec::new();
    for delivery in store
        .list_webhook_deliveries("acme", &hook.id, None, None, 1000)
        .await
        .unwrap()
    {
        events.extend(store.delivery_events(delivery.id).await.unwrap());
    }
    events
}

async fn pushed_events_are_delivered_in_order(db: &TestDb) {
    let (store, receiver, addr, server) = scene(db).await;
    endpoint(store, addr, "w", &["message.published"], None).await;
    let worker = Worker::spawn(store.clone(), config()).unwrap();
    let (writer, task) = OutboxWriter::spawn(
        store.clone(),
        OutboxWriterConfig::default(),
        Some(worker.waker()),
    );
    for n in 0..20 {
        assert!(writer.push(message(n)));
    }
    drop(writer);
    task.closed().await;
    until("all delivered", || receiver.delivered("w").len() == 20).await;
    let ns: Vec<i64> = receiver
        .delivered("w")
        .iter()
        .map(|r| r.json()["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (0..20).collect::<Vec<_>>());
    worker.shutdown().await;
    server.abort();
}

async fn a_full_outbox_drops_and_reports(db: &TestDb) {
    let (store, _receiver, addr, server) = scene(db).await;
    let hook = endpoint(store, addr, "all", &["*"], None).await;
    // No worker: nothing is fanned out, so the database side fills up.
    let (writer, task) = OutboxWriter::spawn(
        store.clone(),
        OutboxWriterConfig {
            capacity: 1000,
            max_batch: 4,
            max_undispatched: 5,
        },
        None,
    );
    for n in 0..20 {
        writer.push(message(n));
    }
    drop(writer);
    task.closed().await;

    let mut messages = 0;
    let mut reported = 0;
    for event in fan_out_to(store, &hook).await {
        if event.event_type == events::EventType::WebhookEventsDropped.as_str() {
            reported += event.payload["count"].as_i64().unwrap();
        } else {
            messages += 1;
        }
    }
    assert!(messages <= 5, "the bound held: {messages}");
    assert!(reported >= 15);
    assert_eq!(
        messages + reported,
        20,
        "every event appended or reported dropped"
    );
    server.abort();
}

async fn close_flushes_while_producers_still_hold_the_writer(db: &TestDb) {
    let (store, _receiver, addr, server) = scene(db).await;
    let hook = endpoint(store, addr, "all", &["*"], None).await;
    let (writer, task) = OutboxWriter::spawn(store.clone(), OutboxWriterConfig::default(), None);
    for n in 0..50 {
        assert!(writer.push(message(n)));
    }
    // A producer dropped one before it reached the writer.
    writer.count_dropped("acme", 1);
    // `writer` stays alive: close must not wait for it.
    tokio::time::timeout(Duration::from_secs(30), task.close())
        .await
        .expect("close returns with a producer still holding the writer");
    assert!(
        !writer.push(message(99)),
        "closed: later events are refused"
    );
    let types: Vec<String> = fan_out_to(store, &hook)
        .await
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types.iter().filter(|t| *t == "message.published").count(),
        50
    );
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == events::EventType::WebhookEventsDropped.as_str())
            .count(),
        1,
        "{types:?}"
    );
    server.abort();
}

async fn message_routes_follow_the_endpoints(db: &TestDb) {
    let (store, _receiver, addr, server) = scene(db).await;
    let routes = MessageRoutes::load(store.clone()).await.unwrap();
    assert!(!routes.wants("acme", "devices/d1/temp"), "no endpoint yet");
    let lifecycle = endpoint(store, addr, "life", &["device.*"], None).await;
    routes.reload(Some("acme")).await.unwrap();
    assert!(
        !routes.wants("acme", "devices/d1/temp"),
        "not a message type"
    );
    let temps = endpoint(store, addr, "t", &["message.*"], Some("devices/+/temp")).await;
    routes.reload(Some("acme")).await.unwrap();
    assert!(routes.wants("acme", "devices/d1/temp"));
    assert!(!routes.wants("acme", "devices/d1/humidity"));
    assert!(!routes.wants("other", "devices/d1/temp"), "tenants apart");
    store
        .set_webhook_endpoint_enabled("acme", &temps.id, false)
        .await
        .unwrap();
    // A fresh load sees what a reload sees.
    routes.reload(None).await.unwrap();
    assert!(!routes.wants("acme", "devices/d1/temp"), "disabled");
    store
        .delete_webhook_endpoint("acme", &lifecycle.id, None)
        .await
        .unwrap();
    endpoint(store, addr, "all", &["*"], None).await;
    routes.invalidate("acme");
    until("the invalidated tenant reloaded", || {
        routes.wants("acme", "anything/at/all")
    })
    .await;
    server.abort();
}

store::backend_tests!(
    pushed_events_are_delivered_in_order,
    a_full_outbox_drops_and_reports,
    close_flushes_while_producers_still_hold_the_writer,
    message_routes_follow_the_endpoints,
);
