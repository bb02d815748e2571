use std::time::Duration;

use std::sync::Arc;

use api::{EventHub, Role};
use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use serde_json::{Value, json};
use sha2::Sha256;
use store::testing::TestDb;
use tokio::sync::mpsc;
use webhooks::{OutboxWriter, OutboxWriterConfig, UrlPolicy, Worker, WorkerConfig};

use crate::TestApp;

/// A request the receiver got.
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

/// A real HTTP receiver on a port-0 loopback listener; answers 200.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(Received { headers, body });
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), rx)
}

/// Standard Webhooks verification, written here from the spec.
fn verifies(secret: &str, r: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    let header = |n: &str| r.headers[n].to_str().unwrap().to_owned();
    mac.update(format!("{}.{}.", header("webhook-id"), header("webhook-timestamp")).as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    header("webhook-signature")
        .split(' ')
        .any(|s| s == expected)
}

const DEV_POLICY: UrlPolicy = UrlPolicy {
    allow_private: true,
    allow_http: true,
};

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("nothing delivered within 30 s")
        .unwrap()
}

async fn webhook_crud_roles_and_url_policy(db: &TestDb) {
    let strict = TestApp::with_tenants(db, &["acme"]).await;
    let base = "/v1/tenants/acme/webhooks";
    // The default policy refuses loopback (and plain http).
    let loopback = json!({"url": "https://127.0.0.1/x", "events": ["device.*"]});
    strict
        .post(base, &strict.admin, loopback)
        .await
        .invalid_at("/url");

    let t = TestApp::with(db, |s| s.with_webhook_url_policy(DEV_POLICY)).await;
    t.tenant("other").await;
    let admin = t.token(Role::TenantAdmin, "acme");
    let viewer = t.token(Role::Viewer, "acme");
    let operator = t.token(Role::Operator, "acme");
    let body = json!({"url": "http://127.0.0.1:9/hook", "events": ["device.*"]});
    t.post(base, &operator, body.clone())
        .await
        .problem(403, "forbidden");
    t.post(base, &t.token(Role::TenantAdmin, "other"), body.clone())
        .await
        .problem(404, "not-found");
    t.post(
        base,
        &admin,
        json!({"url": "http://127.0.0.1:9/hook", "events": []}),
    )
    .await
    .problem(422, "validation");
    t.post(
        base,
        &admin,
        json!({"url": "http://127.0.0.1:9/hook", "events": ["x"], "topic_filter": "a/#/b"}),
    )
    .await
    .problem(422, "validation");
    let created = t.post(base, &admin, body).await.expect(201).body;
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(created["events"], json!(["device.*"]));
    assert_eq!(created["enabled"], true);

    let one = format!("{base}/{id}");
    let read = t.fetch(&one, &viewer).await;
    assert!(read.get("secret").is_none(), "secret shown again: {read}");
    let listed = t.fetch(base, &viewer).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert!(listed["next_cursor"].is_null());
    t.get(&one, &t.token(Role::Viewer, "other"))
        .await
        .problem(404, "not-found");

    t.patch(&one, &viewer, json!({"enabled": false}))
        .await
        .problem(403, "forbidden");
    let disabled = t
        .patch(&one, &admin, json!({"enabled": false}))
        .await
        .expect(200)
        .body;
    assert_eq!(disabled["enabled"], false);
    let changed = t
        .patch(
            &one,
            &admin,
            json!({"events": ["state.*", "device.connected"], "topic_filter": "devices/+/telemetry", "enabled": true}),
        )
        .await
        .expect(200)
        .body;
    assert_eq!(changed["events"], json!(["state.*", "device.connected"]));
    assert_eq!(changed["topic_filter"], "devices/+/telemetry");
    assert_eq!(changed["enabled"], true);
    assert_eq!(changed["url"], "http://127.0.0.1:9/hook");
    let cleared = t
        .patch(
            &one,
            &admin,
            json!({"topic_filter": null, "url": "http://127.0.0.1:10/h"}),
        )
        .await
        .expect(200)
        .body;
    assert!(cleared["topic_filter"].is_null());
    assert_eq!(cleared["url"], "http://127.0.0.1:10/h");
    assert_eq!(cleared["events"], json!(["state.*", "device.connected"]));
    for bad in [json!({"events": []}), json!({"url": "ftp://x"})] {
        t.patch(&one, &admin, bad).await.problem(422, "validation");
    }
    t.patch(&format!("{base}/wh_nope"), &admin, json!({"events": ["x"]}))
        .await
        .problem(404, "not-found");
    let rotated = t
        .post(&format!("{one}/rotate-secret"), &admin, json!({}))
        .await
        .expect(200)
        .body;
    assert_ne!(rotated["secret"], created["secret"]);
    t.get(&format!("{one}/deliveries?status=bogus"), &viewer)
        .await
        .problem(400, "bad-request");
    t.delete(&one, &admin).await.expect(204);
    t.get(&one, &viewer).await.problem(404, "not-found");

    t.assert_audited(
        "/v1/tenants/acme/audit",
        &[
            "webhook.create",
            "webhook.update",
            "webhook.rotate_secret",
            "webhook.delete",
        ],
    )
    .await;
}

/// A `device.*` webhook of tenant acme to a fresh receiver, and a worker.
struct Hooked {
    id: String,
    secret: String,
    received: mpsc::UnboundedReceiver<Received>,
    worker: Worker,
}

async fn hooked(t: &TestApp, admin: &str) -> Hooked {
    let (url, received) = receiver().await;
    let created = t
        .post(
            "/v1/tenants/acme/webhooks",
            admin,
            json!({"url": url, "events": ["device.*"]}),
        )
        .await
        .expect(201)
        .body;
    let worker = Worker::spawn(
        t.store.clone(),
        WorkerConfig {
            url_policy: DEV_POLICY,
            poll_interval: Duration::from_millis(20),
            ..WorkerConfig::default()
        },
    )
    .unwrap();
    Hooked {
        id: created["id"].as_str().unwrap().to_owned(),
        secret: created["secret"].as_str().unwrap().to_owned(),
        received,
        worker,
    }
}

async fn test_ping_and_redeliver_reach_a_real_receiver(db: &TestDb) {
    let t = TestApp::with(db, |s| s.with_webhook_url_policy(DEV_POLICY)).await;
    t.tenant("acme").await;
    let admin = t.token(Role::TenantAdmin, "acme");
    let Hooked {
        id,
        secret,
        mut received,
        worker,
    } = hooked(&t, &admin).await;

    let queued = t
        .post(
            &format!("/v1/tenants/acme/webhooks/{id}/test"),
            &admin,
            json!({}),
        )
        .await
        .expect(202)
        .body;
    worker.wake();
    let ping = next(&mut received).await;
    assert!(verifies(&secret, &ping), "signature does not verify");
    let body: Value = serde_json::from_slice(&ping.body).unwrap();
    assert_eq!(body["type"], "webhook.ping");

    // The log shows it delivered; redeliver sends it again.
    let deliveries = format!("/v1/tenants/acme/webhooks/{id}/deliveries");
    let delivery_id = queued["id"].as_i64().unwrap();
    let mut status = Value::Null;
    for _ in 0..300 {
        let page = t
            .fetch(&format!("{deliveries}?status=delivered"), &admin)
            .await;
        if let Some(d) = page["items"].as_array().unwrap().first() {
            status = d["status"].clone();
            assert_eq!(d["id"], delivery_id);
            assert_eq!(d["last_status"], 200);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, "delivered");
    t.post(
        &format!("{deliveries}/{delivery_id}/redeliver"),
        &t.token(Role::Viewer, "acme"),
        json!({}),
    )
    .await
    .problem(403, "forbidden");
    t.post(&format!("{deliveries}/999999/redeliver"), &admin, json!({}))
        .await
        .problem(404, "not-found");
    t.post(
        &format!("{deliveries}/{delivery_id}/redeliver"),
        &admin,
        json!({}),
    )
    .await
    .expect(202);
    worker.wake();
    let again = next(&mut received).await;
    assert_eq!(again.body, ping.body);
    assert!(verifies(&secret, &again));
    worker.shutdown().await;
}

/// Device events of REST changes are in the outbox with their change; the
/// hub's outbox writer only wakes the worker for them.
async fn device_events_of_rest_changes_reach_webhooks(db: &TestDb) {
    let hub = EventHub::default();
    let t = TestApp::with(db, |s| {
        s.with_webhook_url_policy(DEV_POLICY)
            .with_event_hub(hub.clone())
    })
    .await;
    t.tenant("acme").await;
    let admin = t.token(Role::TenantAdmin, "acme");
    let Hooked {
        id: _,
        secret,
        mut received,
        worker,
    } = hooked(&t, &admin).await;
    let (writer, writer_task) = OutboxWriter::spawn(
        t.store.clone(),
        OutboxWriterConfig::default(),
        Some(worker.waker()),
    );
    hub.add_listener(Arc::new(writer));

    t.device("acme", "d1").await;
    t.disable("acme", "d1").await;
    t.delete("/v1/tenants/acme/devices/d1", &t.admin)
        .await
        .expect(204);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = next(&mut received).await;
        assert!(verifies(&secret, &r));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["data"]["device_id"], "d1");
        seen.push((
            body["type"].as_str().unwrap().to_owned(),
            body["data"]["seq"].clone(),
        ));
    }
    assert_eq!(
        seen,
        [
            ("device.created".to_owned(), json!(1)),
            ("device.updated".to_owned(), json!(2)),
            ("device.deleted".to_owned(), json!(3)),
        ]
    );
    drop(hub);
    drop(t);
    writer_task.closed().await;
    worker.shutdown().await;
}

store::backend_tests!(
    webhook_crud_roles_and_url_policy,
    test_ping_and_redeliver_reach_a_real_receiver,
    device_events_of_rest_changes_reach_webhooks
);
