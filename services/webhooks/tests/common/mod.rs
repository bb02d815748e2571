//! Shared by the test binaries: a receiver on port 0 that verifies every
//! signature independently, and helpers to set up endpoints and wait.

// Each test binary uses a different part of this module.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

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
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use store::testing::TestDb;
use store::{BatchLimits, DeliveryStatus, NewOutboxEvent, Store, WebhookDelivery, WebhookEndpoint};
use webhooks::{EndpointRequest, UrlPolicy, WorkerConfig};

/// Long enough for a loaded, shared machine; tests wait for events, never
/// for a fixed time.
pub const PATIENCE: Duration = Duration::from_secs(30);

pub const DEV: UrlPolicy = UrlPolicy {
    allow_private: true,
    allow_http: true,
};

/// What a receiver path does with requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    /// Answer 500 to the first this many requests.
    pub fail_first: usize,
    /// Answer 500 to every request whose number (from 1) is a multiple.
    pub fail_every: Option<usize>,
    /// Answer with this status instead of 200.
    pub status: Option<u16>,
    /// Never answer (within any test).
    pub hang: bool,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub id: String,
    pub timestamp: String,
    pub signatures: Vec<String>,
    pub body: Vec<u8>,
    pub answered: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
pub struct Receiver {
    behaviours: Mutex<HashMap<String, Behaviour>>,
    counts: Mutex<HashMap<String, usize>>,
    received: Mutex<Vec<Received>>,
}

impl Behaviour {
    pub fn failing_first(n: usize) -> Behaviour {
        Behaviour {
            fail_first: n,
            ..Behaviour::default()
        }
    }

    pub fn failing_every(n: usize) -> Behaviour {
        Behaviour {
            fail_every: Some(n),
            ..Behaviour::default()
        }
    }

    pub fn answering(status: u16) -> Behaviour {
        Behaviour {
            status: Some(status),
            ..Behaviour::default()
        }
    }

    pub fn hanging() -> Behaviour {
        Behaviour {
            hang: true,
            ..Behaviour::default()
        }
    }
}

impl Receiver {
    pub async fn start() -> (Arc<Receiver>, SocketAddr, tokio::task::JoinHandle<()>) {
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

    pub fn set(&self, path: &str, behaviour: Behaviour) {
        self.behaviours
            .lock()
            .unwrap()
            .insert(path.to_owned(), behaviour);
    }

    /// Requests to `path` answered with 2xx.
    pub fn delivered(&self, path: &str) -> Vec<Received> {
        self.all(path)
            .into_iter()
            .filter(|r| (200..300).contains(&r.answered))
            .collect()
    }

    pub fn all(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }
}

pub async fn receive(
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
pub fn verifies(secret: &str, r: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", r.id, r.timestamp).as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    r.signatures.contains(&expected)
}

pub fn config() -> WorkerConfig {
    WorkerConfig {
        retry_schedule: vec![Duration::ZERO; 1]
            .into_iter()
            .chain(std::iter::repeat_n(Duration::from_millis(50), 5))
            .collect(),
        jitter: 0.0,
        request_timeout: Duration::from_secs(30),
        per_endpoint_concurrency: 2,
        max_in_flight: 64,
        per_tenant_in_flight: 64,
        poll_interval: Duration::from_millis(20),
        disable_after_failures: 1000,
        batch: BatchLimits {
            max_events: 1,
            max_wait: Duration::ZERO,
        },
        url_policy: DEV,
        message_ids: webhooks::MessageIdKey::random(),
    }
}

pub async fn endpoint(
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
    webhooks::create_endpoint(store, &DEV, "acme", &request, None)
        .await
        .unwrap()
}

/// The test's store with tenant `acme`, and a receiver.
pub async fn scene(
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

pub async fn tenant(store: &Store) {
    store
        .create_tenant(&store::NewTenant {
            id: "acme".into(),
            name: "Acme".into(),
        })
        .await
        .unwrap();
}

pub fn device_event(event_type: &str, device: &str, seq: i64) -> NewOutboxEvent {
    NewOutboxEvent {
        device_id: Some(device.into()),
        device_seq: Some(seq),
        ..NewOutboxEvent::new("acme", event_type, json!({"device": device, "seq": seq}))
    }
}

/// A [`scene`] whose receiver answers `path` with `behaviour`, an endpoint
/// there for `device.connected`, and one such event in the outbox for a
/// worker the test starts.
pub async fn one_event_for<'db>(
    db: &'db TestDb,
    path: &str,
    behaviour: Behaviour,
) -> (
    &'db Store,
    Arc<Receiver>,
    WebhookEndpoint,
    tokio::task::JoinHandle<()>,
) {
    let (store, receiver, addr, server) = scene(db).await;
    receiver.set(path, behaviour);
    let hook = endpoint(store, addr, path, &["device.connected"], None).await;
    append_device_event(store, "device.connected", "d1", 1).await;
    (store, receiver, hook, server)
}

/// The newest delivery to `hook`.
pub async fn latest_delivery(store: &Store, hook: &WebhookEndpoint) -> WebhookDelivery {
    store
        .list_webhook_deliveries("acme", &hook.id, None, None, 1)
        .await
        .unwrap()
        .remove(0)
}

/// Append [`device_event`] to the outbox.
pub async fn append_device_event(store: &Store, event_type: &str, device: &str, seq: i64) {
    store
        .append_outbox_events(&[device_event(event_type, device, seq)])
        .await
        .unwrap();
}

/// Wait until `done` holds, failing the test after [`PATIENCE`].
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    until_async(what, || std::future::ready(done())).await;
}

/// Wait until the endpoint's deliveries have these statuses (newest first).
pub async fn until_statuses(
    store: &Store,
    endpoint: &WebhookEndpoint,
    expected: &[DeliveryStatus],
) {
    let what = format!("deliveries {expected:?}");
    until_async(&what, || async move {
        delivery_status(store, endpoint).await == expected
    })
    .await;
}

/// [`until`] for a condition that takes a query to know.
async fn until_async<F: Future<Output = bool>>(what: &str, mut done: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn delivery_status(store: &Store, endpoint: &WebhookEndpoint) -> Vec<DeliveryStatus> {
    store
        .list_webhook_deliveries("acme", &endpoint.id, None, None, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.status)
        .collect()
}
