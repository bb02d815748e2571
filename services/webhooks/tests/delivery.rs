//! The worker against a real HTTP receiver on port 0, which checks every
//! signature with its own HMAC (the `hmac` and `sha2` crates, not the code
//! under test). Each test runs on SQLite and, when configured, Postgres.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use store::testing::TestDb;
use store::{BatchLimits, DeliveryStatus, NewOutboxEvent, Store, WebhookEndpoint};
use webhooks::{EndpointRequest, UrlPolicy, Worker, WorkerConfig};

/// Long enough for a loaded, shared machine; tests wait for events, never
/// for a fixed time.
const PATIENCE: Duration = Duration::from_secs(30);

const DEV: UrlPolicy = UrlPolicy {
    allow_private: true,
    allow_http: true,
};

/// What a receiver path does with requests.
#[derive(Debug, Clone, Copy, Default)]
struct Behaviour {
    /// Answer 500 to the first this many requests.
    fail_first: usize,
    /// Answer 500 to every request whose number (from 1) is a multiple.
    fail_every: Option<usize>,
    /// Answer with this status instead of 200.
    status: Option<u16>,
    /// Never answer (within any test).
    hang: bool,
}

#[derive(Debug, Clone)]
struct Received {
    path: String,
    id: String,
    timestamp: String,
    signatures: Vec<String>,
    body: Vec<u8>,
    answered: u16,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Receiver {
    behaviours: Mutex<HashMap<String, Behaviour>>,
    counts: Mutex<HashMap<String, usize>>,
    received: Mutex<Vec<Received>>,
}

impl Behaviour {
    fn failing_first(n: usize) -> Behaviour {
        Behaviour {
            fail_first: n,
            ..Behaviour::default()
        }
    }

    fn failing_every(n: usize) -> Behaviour {
        Behaviour {
            fail_every: Some(n),
            ..Behaviour::default()
        }
    }

    fn answering(status: u16) -> Behaviour {
        Behaviour {
            status: Some(status),
            ..Behaviour::default()
        }
    }

    fn hanging() -> Behaviour {
        Behaviour {
            hang: true,
            ..Behaviour::default()
        }
    }
}

impl Receiver {
    async fn start() -> (Arc<Receiver>, SocketAddr, tokio::task::JoinHandle<()>) {
        let receiver = Arc::new(Receiver::default());
        let app = Router::new()
            .route("/{name}", post(receive))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        (receiver, addr, server)
    }

    fn set(&self, path: &str, behaviour: Behaviour) {
        self.behaviours
            .lock()
            .unwrap()
            .insert(path.to_owned(), behaviour);
    }

    /// Requests to `path` answered with 2xx.
    fn delivered(&self, path: &str) -> Vec<Received> {
        self.all(path)
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .collect()
    }

    fn all(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let behaviour = receiver
        .behaviours
        .lock()
        .unwrap()
        .get(&name)
        .copied()
        .unwrap_or_default();
    if behaviour.hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let n = {
        let mut counts = receiver.counts.lock().unwrap();
        let n = counts.entry(name.clone()).or_default();
        *n += 1;
        *n
    };
    let fail = n <= behaviour.fail_first || behaviour.fail_every.is_some_and(|k| n % k == 0);
    let answered = if fail {
        500
    } else {
        behaviour.status.unwrap_or(200)
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    receiver.received.lock().unwrap().push(Received {
        path: name,
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signatures: header("webhook-signature")
            .split(' ')
            .map(str::to_owned)
            .collect(),
        body: body.to_vec(),
        answered,
    });
    StatusCode::from_u16(answered).unwrap()
}

/// Does one of the request's signatures verify with `secret`? Written from
/// the Standard Webhooks spec, with another HMAC implementation.
fn verifies(secret: &str, r: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", r.id, r.timestamp).as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    r.signatures.contains(&expected)
}

fn config() -> WorkerConfig {
    WorkerConfig {
        retry_schedule: vec![Duration::ZERO; 1]
            .into_iter()
            .chain(std::iter::repeat_n(Duration::from_millis(50), 5))
            .collect(),
        jitter: 0.0,
        request_timeout: Duration::from_secs(30),
        per_endpoint_concurrency: 2,
        max_in_flight: 64,
        poll_interval: Duration::from_millis(20),
        disable_after_failures: 1000,
        batch: BatchLimits {
            max_events: 1,
            max_wait: Duration::ZERO,
        },
        url_policy: DEV,
    }
}

async fn endpoint(
    store: &Store,
    addr: SocketAddr,
    path: &str,
    event_types: &[&str],
    topic_filter: Option<&str>,
) -> WebhookEndpoint {
    let request = EndpointRequest {
        url: format!("http://{addr}/{path}"),
        event_types: event_types.iter().map(|t| t.to_string()).collect(),
        topic_filter: topic_filter.map(str::to_owned),
    };
    webhooks::create_endpoint(store, &DEV, "acme", &request)
        .await
        .unwrap()
}

/// The test's store with tenant `acme`, and a receiver.
async fn scene(
    db: &TestDb,
) -> (
    &Store,
    Arc<Receiver>,
    SocketAddr,
    tokio::task::JoinHandle<()>,
) {
    let store = db.store();
    tenant(store).await;
    let (receiver, addr, server) = Receiver::start().await;
    (store, receiver, addr, server)
}

async fn tenant(store: &Store) {
    store
        .create_tenant(&store::NewTenant {
            id: "acme".into(),
            name: "Acme".into(),
        })
        .await
        .unwrap();
}

fn device_event(event_type: &str, device: &str, seq: i64) -> NewOutboxEvent {
    NewOutboxEvent {
        device_id: Some(device.into()),
        device_seq: Some(seq),
        ..NewOutboxEvent::new("acme", event_type, json!({"device": device, "seq": seq}))
    }
}

/// Wait until `done` holds, failing the test after [`PATIENCE`].
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until the endpoint's deliveries have these statuses (newest first).
async fn until_statuses(store: &Store, endpoint: &WebhookEndpoint, expected: &[DeliveryStatus]) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while delivery_status(store, endpoint).await != expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn delivery_status(store: &Store, endpoint: &WebhookEndpoint) -> Vec<DeliveryStatus> {
    store
        .list_webhook_deliveries("acme", &endpoint.id, None, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.status)
        .collect()
}

async fn signatures_verify_during_rotation(db: &TestDb) {
    let (store, receiver, addr, server) = scene(db).await;
    let hook = endpoint(store, addr, "a", &["device.*"], None).await;
    let worker = Worker::spawn(store.clone(), config()).unwrap();

    store
        .append_outbox_events(&[device_event("device.connected", "d1", 1)])
        .await
        .unwrap();
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
    )
    .await
    .unwrap();
    assert_ne!(rotated.secret, hook.secret);
    store
        .append_outbox_events(&[device_event("device.disconnected", "d1", 2)])
        .await
        .unwrap();
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
    let (store, receiver, addr, server) = scene(db).await;
    receiver.set("flaky", Behaviour::failing_first(3));
    let hook = endpoint(store, addr, "flaky", &["device.connected"], None).await;
    let worker = Worker::spawn(store.clone(), config()).unwrap();
    store
        .append_outbox_events(&[device_event("device.connected", "d1", 1)])
        .await
        .unwrap();
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
    let (store, receiver, addr, server) = scene(db).await;
    receiver.set("down", Behaviour::failing_first(usize::MAX));
    let hook = endpoint(store, addr, "down", &["device.connected"], None).await;
    let worker = Worker::spawn(store.clone(), config()).unwrap();
    store
        .append_outbox_events(&[device_event("device.connected", "d1", 1)])
        .await
        .unwrap();
    until_statuses(store, &hook, &[DeliveryStatus::Failed]).await;
    // One attempt per step of the schedule, then no more.
    assert_eq!(receiver.all("down").len(), config().retry_schedule.len());
    worker.shutdown().await;
    server.abort();
}

async fn pending_deliveries_survive_a_restart(db: &TestDb) {
    let (store, receiver, addr, server) = scene(db).await;
    receiver.set("later", Behaviour::failing_first(1));
    let hook = endpoint(store, addr, "later", &["device.connected"], None).await;
    // The first attempt fails, and the retry is far off.
    let slow = WorkerConfig {
        retry_schedule: vec![Duration::ZERO, Duration::from_millis(500)],
        ..config()
    };
    let worker = Worker::spawn(store.clone(), slow.clone()).unwrap();
    store
        .append_outbox_events(&[device_event("device.connected", "d1", 1)])
        .await
        .unwrap();
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
    store
        .append_outbox_events(&[device_event("device.connected", "d1", 1)])
        .await
        .unwrap();
    until("first delivery", || receiver.delivered("r").len() == 1).await;
    until_statuses(store, &hook, &[DeliveryStatus::Delivered]).await;
    let delivery = store
        .list_webhook_deliveries("acme", &hook.id, None, None, 1)
        .await
        .unwrap()
        .remove(0);
    webhooks::redeliver(store, "acme", delivery.id)
        .await
        .unwrap();
    worker.wake();
    until("redelivered", || receiver.delivered("r").len() == 2).await;
    let got = receiver.delivered("r");
    assert_eq!(got[0].id, got[1].id, "the same message again");
    assert_eq!(got[0].body, got[1].body);
    assert!(verifies(&hook.secret, &got[1]));

    let ping = webhooks::send_test_ping(store, "acme", &hook.id)
        .await
        .unwrap();
    worker.wake();
    until("ping", || receiver.delivered("r").len() == 3).await;
    let body = receiver.delivered("r")[2].json();
    assert_eq!(body["type"], webhooks::PING_EVENT_TYPE);
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
        let err = webhooks::create_endpoint(store, &strict, "acme", &request)
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
    store
        .append_outbox_events(&[device_event("device.connected", "d1", 1)])
        .await
        .unwrap();
    until_statuses(store, &hook, &[DeliveryStatus::Failed]).await;
    let delivery = store
        .list_webhook_deliveries("acme", &hook.id, None, None, 1)
        .await
        .unwrap()
        .remove(0);
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
    store
        .append_outbox_events(&[device_event("device.connected", "d1", 1)])
        .await
        .unwrap();
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
