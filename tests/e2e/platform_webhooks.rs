//! Webhooks from the wired platform (issue 7): a receiver in this test, the
//! real binary with `--webhook-allow-private`, a device connecting with the
//! Debian `mosquitto_pub`, and every request's Standard Webhooks signature
//! checked with an HMAC of our own. A delivery that failed is delivered by
//! the next run of the binary.
//!
//! Retries on a short `--webhook-retry-schedule`, message events, redeliver,
//! metrics and Postgres: `platform_webhook_messages.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fleetmq_tests::{Server, admin_token, fleetmq, run_to_exit};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);

/// One request as the receiver saw it, with the status it answered.
#[derive(Debug)]
struct Received {
    answered: u16,
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// Standard Webhooks: `v1,` + base64(HMAC-SHA256(key, id.timestamp.body))
    /// with the key base64-decoded from after `whsec_`.
    fn assert_signed_with(&self, secret: &str) {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").expect("whsec_ secret"))
            .unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}.", self.id, self.timestamp).as_bytes());
        mac.update(&self.body);
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        assert!(
            self.signature.split(' ').any(|s| s == expected),
            "signature {} is not {expected}",
            self.signature
        );
    }
}

struct Receiver {
    answer: AtomicU16,
    seen: mpsc::UnboundedSender<Received>,
}

async fn hook(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let answered = rx.answer.load(Ordering::SeqCst);
    let _ = rx.seen.send(Received {
        answered,
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: body.to_vec(),
    });
    StatusCode::from_u16(answered).unwrap()
}

/// A receiver on 127.0.0.1:0 answering `answer`'s status.
async fn receiver() -> (String, Arc<Receiver>, mpsc::UnboundedReceiver<Received>) {
    let (seen, requests) = mpsc::unbounded_channel();
    let state = Arc::new(Receiver {
        answer: AtomicU16::new(200),
        seen,
    });
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, state, requests)
}

/// Requests until `done` holds for the device events among them.
async fn collect(
    requests: &mut mpsc::UnboundedReceiver<Received>,
    done: impl Fn(&[Received]) -> bool,
) -> Vec<Received> {
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, async {
        while !done(&got) {
            got.push(requests.recv().await.expect("receiver alive"));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("webhooks not delivered in time; got {got:?}"));
    got
}

fn of_type<'a>(got: &'a [Received], event: &str, answered: u16) -> Vec<&'a Received> {
    got.iter()
        .filter(|r| r.answered == answered && r.json()["type"] == event)
        .collect()
}

async fn start(cwd: &Path) -> Server {
    let mut cmd = fleetmq(cwd);
    cmd.args([
        "serve",
        "--http-listen",
        "127.0.0.1:0",
        "--webhook-allow-private",
    ]);
    Server::start(cmd).await.unwrap()
}

/// Connects as the device, publishes once and leaves.
async fn connect_once(server: &Server, username: &str, password: &str) {
    let mut cmd = tokio::process::Command::new("mosquitto_pub");
    cmd.args(["-h", "localhost", "-V", "mqttv5", "-q", "1"])
        .args(["-p", &server.mqtts().port().to_string()])
        .arg("--cafile")
        .arg(server.mqtts_ca_file())
        .args(["-i", "hooked-1", "-u", username, "-P", password])
        .args([
            "-t",
            "devices/hooked-1/state/reported",
            "-m",
            r#"{"on":true}"#,
        ])
        .kill_on_drop(true);
    let out = run_to_exit(cmd).await.unwrap();
    assert!(out.status.success(), "{}", out.stderr);
}

#[tokio::test]
async fn device_events_are_signed_ordered_once_and_survive_a_restart() {
    let (url, receiver, mut requests) = receiver().await;
    let cwd = tempfile::tempdir().unwrap();
    let mut server = start(cwd.path()).await;
    let token = admin_token(cwd.path(), &["--role", "platform-admin"]).await;
    let http = reqwest::Client::new();
    let post = |server: &Server, path: &str, body: Value| {
        http.post(server.url(path))
            .bearer_auth(&token)
            .timeout(WAIT)
            .json(&body)
            .send()
    };
    for (path, body) in [
        ("/v1/tenants", json!({"id": "acme", "name": "Acme"})),
        ("/v1/tenants/acme/devices", json!({"id": "hooked-1"})),
    ] {
        let res = post(&server, path, body).await.unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    }
    let creds: Value = post(
        &server,
        "/v1/tenants/acme/devices/hooked-1/password",
        json!({}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let (username, password) = (
        creds["username"].as_str().unwrap().to_owned(),
        creds["password"].as_str().unwrap().to_owned(),
    );
    let res = post(
        &server,
        "/v1/tenants/acme/webhooks",
        json!({"url": url, "events": ["device.*"]}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    let webhook: Value = res.json().await.unwrap();
    let secret = webhook["secret"]
        .as_str()
        .expect("secret shown once")
        .to_owned();

    // Connect, publish, leave: connected then disconnected, each once.
    connect_once(&server, &username, &password).await;
    let mut got = collect(&mut requests, |got| {
        !of_type(got, "device.disconnected", 200).is_empty()
    })
    .await;
    // Anything sent twice would arrive within a few poll intervals.
    tokio::time::sleep(Duration::from_secs(3)).await;
    while let Ok(more) = requests.try_recv() {
        got.push(more);
    }
    let connected = of_type(&got, "device.connected", 200);
    let disconnected = of_type(&got, "device.disconnected", 200);
    assert_eq!((connected.len(), disconnected.len()), (1, 1), "{got:?}");
    let (on, off) = (connected[0].json(), disconnected[0].json());
    assert_eq!(on["data"]["device_id"], "hooked-1", "{on}");
    assert_eq!(off["data"]["device_id"], "hooked-1", "{off}");
    let (on_seq, off_seq) = (on["data"]["seq"].as_i64(), off["data"]["seq"].as_i64());
    assert!(on_seq.is_some() && on_seq < off_seq, "{on} {off}");
    for request in &got {
        request.assert_signed_with(&secret);
    }

    // The receiver fails; the binary stops with the delivery still pending
    // and delivers it when it runs again.
    receiver.answer.store(503, Ordering::SeqCst);
    connect_once(&server, &username, &password).await;
    let failed = collect(&mut requests, |got| {
        !of_type(got, "device.connected", 503).is_empty()
    })
    .await;
    let pending = of_type(&failed, "device.connected", 503)[0].json();
    assert!(pending["data"]["seq"].as_i64() > off_seq, "{pending}");
    server.signal("INT").await.unwrap();
    server.wait(WAIT).await.unwrap();
    receiver.answer.store(200, Ordering::SeqCst);
    let server = start(cwd.path()).await;
    let got = collect(&mut requests, |got| {
        of_type(got, "device.connected", 200)
            .iter()
            .any(|r| r.json()["data"]["seq"] == pending["data"]["seq"])
    })
    .await;
    for request in &got {
        request.assert_signed_with(&secret);
    }
    server.stop().await.unwrap();
}
