//! The worker against a real HTTP receiver on port 0, which checks every
//! signature with its own HMAC (the `hmac` and `sha2` crates, not the code
//! under test). Each test runs on SQLite and, when configured, Postgres.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use serde_json::{Value, json};
use store::testing::TestDb;
use store::{BatchLimits, DeliveryStatus, NewOutboxEvent, Store};
use webhooks::{EndpointRequest, UrlPolicy, Worker, WorkerConfig};

async fn signatures_verify_during_rotation(db: &TestDb) {
    let (store, receiver, addr, server) = scene(db).await;
    let hook = endpoint(store, addr, "a", &["device.*"], None).await;
    let worker = Worker::spawn(store.clone(), config()).unwrap();

    append_device_event(store, "device.connected", "d1", 1).await;
    worker.wake();
    until("first delivery", || receiver.delivered("a").len() == 1).await;
    let first = &receiver.delivered("a")[0];
    assert_eq!(first.signatures.len(), 1);
    assert!(verifies(&hook.secret, first));
    let body = first.json();
    assert_eq!(body["type"], "device.connected");
    assert_eq!(body["data"], json!({"device": "d1", "seq": 1}));
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(!verifies(
        &webhooks::signing::generate_secret().unwrap(),
        first
    ));

    let rotated = webhooks::rotate_secret(
        store,
        "acme",
        &hook.id,
        Utc::now() + chrono::Duration::hours(1),
        None,
    )
    .await
    .unwrap();
    assert_ne!(rotated.secret, hook.secret);
    append_device_event(store, "device.disconnected", "d1", 2).await;
    worker.wake();
    until("second delivery", || receiver.delivered("a").len() == 2).await;
    let second = &receiver.delivered("a")[1];
    assert_eq!(
        second.signatures.len(),
        2,
        "both secrets sign during the overlap"
    );
    assert!(verifies(&rotated.secret, second));
    assert!(verifies(&hook.secret, second));
    worker.shutdown().await;
    server.abort();
}

async fn retries_until_the_fourth_attempt(db: &TestDb) {
    let (store, receiver, hook, server) =
        one_event_for(db, "flaky", Behaviour::failing_first(3)).await;
    let worker = Worker::spawn(store.clone(), config()).unwrap();
    until("delivered on the 4th attempt", || {
        receiver.delivered("flaky").len() == 1
    })
    .await;
    let all = receiver.all("flaky");
    assert_eq!(all.len(), 4);
    assert!(all.iter().all(|r| verifies(&hook.secret, r)));
    assert!(
        all.iter().all(|r| r.id == all[0].id),
        "one webhook-id across retries"
    );
    worker.shutdown().await;

    let deliveries = store
        .list_webhook_deliveries("acme", &hook.id, None, None, 10)
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].status, DeliveryStatus::Delivered);
    assert_eq!(deliveries[0].attempts, 4);
    let attempts = store
        .list_webhook_attempts("acme", deliveries[0].id)
        .await
        .unwrap();
    let codes: Vec<_> = attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(500), Some(500), Some(200)]);
    assert_eq!(attempts[0].error.as_deref(), Some("HTTP 500"));
    // Backoff: each retry waited for its step of the schedule (50 ms).
    for pair in attempts.windows(2) {
        assert!(pair[1].attempted_at - pair[0].attempted_at >= chrono::Duration::milliseconds(50));
    }
    server.abort();
}

async fn exhausted_schedule_fails_the_delivery(db: &TestDb) {
    let (store, receiver, hook, server) =
        one_event_for(db, "down", Behaviour::failing_first(usize::MAX)).await;
    let worker = Worker::spawn(store.clone(), config()).unwrap();
    until_statuses(store, &hook, &[DeliveryStatus::Failed]).await;
    // One attempt per step of the schedule, then no more.
    assert_eq!(receiver.all("down").len(), config().retry_schedule.len());
    worker.shutdown().await;
    server.abort();
}

async fn pending_deliveries_survive_a_restart(db: &TestDb) {
    let (store, receiver, hook, server) =
        one_event_for(db, "later", Behaviour::failing_first(1)).await;
    // The first attempt fails, and the retry is far off.
    let slow = WorkerConfig {
        retry_schedule: vec![Duration::ZERO, Duration::from_millis(500)],
        ..config()
    };
    let worker = Worker::spawn(store.clone(), slow.clone()).unwrap();
    until("first attempt", || receiver.all("later").len() == 1).await;
    until_statuses(store, &hook, &[DeliveryStatus::Pending]).await;
    drop(worker);

    // A new worker on a new connection pool to the same database.
    let reopened = Store::open(db.url()).await.unwrap();
    let worker = Worker::spawn(reopened.clone(), slow).unwrap();
    until("delivered after the restart", || {
        receiver.delivered("later").len() == 1
    })
    .await;
    worker.shutdown().await;
    assert_eq!(
        delivery_status(store, &hook).await,
        [DeliveryStatus::Delivered]
    );
    reopened.close().await;
    server.abort();
}

async fn redeliver_and_ping(db: &TestDb) {
    let (store, receiver, addr, server) = scene(db).await;
    let hook = endpoint(store, addr, "r", &["device.connected"], None).await;
    let worker = Worker::spawn(store.clone(), config()).unwrap();
    append_device_event(store, "device.connected", "d1", 1).await;
    until("first delivery", || receiver.delivered("r").len() == 1).await;
    until_statuses(store, &hook, &[DeliveryStatus::Delivered]).await;
    let delivery = latest_delivery(store, &hook).await;
    webhooks::redeliver(store, "acme", delivery.id, None)
        .await
        .unwrap();
    worker.wake();
    until("redelivered", || receiver.delivered("r").len() == 2).await;
    let got = receiver.delivered("r");
    assert_eq!(got[0].id, got[1].id, "the same message again");
    assert_eq!(got[0].body, got[1].body);
    assert!(verifies(&hook.secret, &got[1]));

    let ping = webhooks::send_test_ping(store, "acme", &hook.id, None)
        .await
        .unwrap();
    worker.wake();
    until("ping", || receiver.delivered("r").len() == 3).await;
    let body = receiver.delivered("r")[2].json();
    assert_eq!(body["type"], events::EventType::WebhookPing.as_str());
    assert_eq!(body["data"]["webhook_id"], json!(hook.id));
    assert!(ping.id > delivery.id);
    worker.shutdown().await;
    server.abort();
}

async fn private_urls_are_refused(db: &TestDb) {
    let store = db.store();
    tenant(store).await;
    let strict = UrlPolicy::default();
    for url in [
        "https://127.0.0.1/hook",
        "https://10.0.0.8/hook",
        "https://[::1]/hook",
        "https://[::ffff:192.168.0.1]/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://localhost/hook",
        "http://example.com/hook",
    ] {
        let request = EndpointRequest {
            url: url.into(),
            event_types: vec!["*".into()],
            topic_filter: None,
        };
        let err = webhooks::create_endpoint(store, &strict, "acme", &request, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, webhooks::Error::UrlRefused { .. }),
            "{url}: {err:?}"
        );
    }
    assert!(
        store
            .list_webhook_endpoints("acme")
            .await
            .unwrap()
            .is_empty()
    );

    // An endpoint stored while private addresses were allowed is still not
    // reached by a worker that forbids them.
    let (receiver, addr, server) = Receiver::start().await;
    let hook = endpoint(store, addr, "inside", &["*"], None).await;
    let strict_worker = WorkerConfig {
        url_policy: UrlPolicy {
            allow_private: false,
            allow_http: true,
        },
        retry_schedule: vec![Duration::ZERO],
        ..config()
    };
    let worker = Worker::spawn(store.clone(), strict_worker).unwrap();
    append_device_event(store, "device.connected", "d1", 1).await;
    until_statuses(store, &hook, &[DeliveryStatus::Failed]).await;
    let delivery = latest_delivery(store, &hook).await;
    let attempts = store
        .list_webhook_attempts("acme", delivery.id)
        .await
        .unwrap();
    let error = attempts[0].error.clone().unwrap();
    assert!(error.contains("not a public address"), "{error}");
    assert!(receiver.all("inside").is_empty(), "no request reached it");
    worker.shutdown().await;
    server.abort();
}

async fn a_dead_endpoint_does_not_delay_another(db: &TestDb) {
    let (store, receiver, addr, server) = scene(db).await;
    receiver.set("dead", Behaviour::hanging());
    endpoint(store, addr, "dead", &["device.connected"], None).await;
    endpoint(store, addr, "alive", &["device.disconnected"], None).await;
    // A backlog for the dead endpoint (distinct devices: no ordering wait),
    // queued before the live endpoint's events.
    let backlog: Vec<_> = (0..40)
        .map(|i| device_event("device.connected", &format!("d{i}"), 1))
        .collect();
    store.append_outbox_events(&backlog).await.unwrap();
    let live: Vec<_> = (0..5)
        .map(|i| device_event("device.disconnected", &format!("d{i}"), 2))
        .collect();
    store.append_outbox_events(&live).await.unwrap();
    let worker = Worker::spawn(store.clone(), config()).unwrap();
    until("the live endpoint got everything", || {
        receiver.delivered("alive").len() == 5
    })
    .await;
    // The dead endpoint has answered nothing (its requests hang for longer
    // than the test), yet the live one was not held up behind it.
    assert!(receiver.all("dead").is_empty());
    drop(worker);
    server.abort();
}

async fn order_per_device_is_kept(db: &TestDb) {
    let (store, receiver, addr, server) = scene(db).await;
    // Every third request fails and is retried.
    receiver.set("ordered", Behaviour::failing_every(3));
    endpoint(store, addr, "ordered", &["*"], None).await;
    let worker = Worker::spawn(
        store.clone(),
        WorkerConfig {
            per_endpoint_concurrency: 4,
            retry_schedule: vec![Duration::ZERO; 10],
            ..config()
        },
    )
    .unwrap();
    let mut events = Vec::new();
    for seq in 1..=8 {
        for device in ["d1", "d2", "d3"] {
            events.push(device_event("device.state", device, seq));
        }
    }
    store.append_outbox_events(&events).await.unwrap();
    until("all delivered", || {
        receiver.delivered("ordered").len() == 24
    })
    .await;
    let delivered = receiver.delivered("ordered");
    for device in ["d1", "d2", "d3"] {
        let seqs: Vec<i64> = delivered
            .iter()
            .map(Received::json)
            .filter(|b| b["data"]["device"] == device)
            .map(|b| b["data"]["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(
            seqs,
            (1..=8).collect::<Vec<_>>(),
            "{device}: in order, once each"
        );
    }
    worker.shutdown().await;
    server.abort();
}

async fn messages_are_batched(db: &TestDb) {
    let (store, receiver, addr, server) = scene(db).await;
    let hook = endpoint(
        store,
        addr,
        "batch",
        &["message.published"],
        Some("devices/+/temp"),
    )
    .await;
    let messages: Vec<_> = (0..10)
        .map(|n| NewOutboxEvent {
            topic: Some(format!("devices/d{}/temp", n % 2)),
            ..NewOutboxEvent::new("acme", "message.published", json!({"n": n}))
        })
        .chain(std::iter::once(NewOutboxEvent {
            topic: Some("devices/d1/humidity".into()),
            ..NewOutboxEvent::new("acme", "message.published", json!({"n": "other"}))
        }))
        .collect();
    store.append_outbox_events(&messages).await.unwrap();
    let worker = Worker::spawn(
        store.clone(),
        WorkerConfig {
            batch: BatchLimits {
                max_events: 4,
                max_wait: Duration::from_millis(100),
            },
            ..config()
        },
    )
    .unwrap();
    let count = |r: &Receiver| {
        r.delivered("batch")
            .iter()
            .map(|r| r.json()["data"]["messages"].as_array().unwrap().len())
            .sum::<usize>()
    };
    until("ten messages", || count(&receiver) == 10).await;
    let requests = receiver.delivered("batch");
    assert_eq!(requests.len(), 3, "4 + 4 + 2");
    let ns: Vec<Value> = requests
        .iter()
        .flat_map(|r| {
            assert!(verifies(&hook.secret, r));
            let body = r.json();
            assert_eq!(body["type"], "message.batch");
            body["data"]["messages"].as_array().unwrap().clone()
        })
        .map(|m| m["data"]["n"].clone())
        .collect();
    assert_eq!(ns, (0..10).map(|n| json!(n)).collect::<Vec<_>>());
    worker.shutdown().await;
    server.abort();
}

async fn gone_disables_the_endpoint(db: &TestDb) {
    let (store, receiver, addr, server) = scene(db).await;
    receiver.set("gone", Behaviour::answering(410));
    let gone = endpoint(store, addr, "gone", &["device.connected"], None).await;
    endpoint(store, addr, "watch", &["webhook.endpoint_disabled"], None).await;
    let worker = Worker::spawn(store.clone(), config()).unwrap();
    append_device_event(store, "device.connected", "d1", 1).await;
    until("told it was disabled", || {
        receiver.delivered("watch").len() == 1
    })
    .await;
    let body = receiver.delivered("watch")[0].json();
    assert_eq!(body["data"]["webhook_id"], json!(gone.id));
    assert_eq!(receiver.all("gone").len(), 1, "no retry after 410");
    let gone = store.get_webhook_endpoint("acme", &gone.id).await.unwrap();
    assert!(!gone.enabled);
    worker.shutdown().await;
    server.abort();
}

store::backend_tests!(
    signatures_verify_during_rotation,
    retries_until_the_fourth_attempt,
    exhausted_schedule_fails_the_delivery,
    pending_deliveries_survive_a_restart,
    redeliver_and_ping,
    private_urls_are_refused,
    a_dead_endpoint_does_not_delay_another,
    order_per_device_is_kept,
    messages_are_batched,
    gone_disables_the_endpoint,
);
