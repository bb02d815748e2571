//! Webhooks through the real binary (issue 7), on SQLite and on Postgres
//! (when TEST_DATABASE_URL is set), with a receiver that is not ours:
//! tests/webhooks/receiver.py verifies every request with the
//! `standardwebhooks` package from PyPI.
//!
//! - A private-address URL is refused without `--webhook-allow-private`.
//! - A device (Debian's `mosquitto_pub`) connects, publishes and leaves:
//!   `device.connected`, each `message.published` and `device.disconnected`
//!   arrive in order, each once; a topic-filter endpoint gets the messages
//!   as one `message.batch`.
//! - The receiver fails 3 attempts: delivered on the 4th, the waits at least
//!   the `--webhook-retry-schedule` steps (less their ±10% jitter); the
//!   delivery log says so; redeliver sends it again.
//! - The receiver is down and the device still connected when the server
//!   stops: after the restart the pending `device.connected` and the
//!   `device.disconnected` of the shutdown (written to the outbox during the
//!   graceful stop) are delivered, in order.
//! - The payloads published in openapi.json (OpenAPI 3.1 `webhooks`) are
//!   what is delivered: a receiver whose models datamodel-code-generator
//!   generates from the committed document validates every delivery of
//!   every event type the test can cause.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use fleetmq_tests::{Api, Server, TestDb, admin_token, fleetmq};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(60);
const DEVICE: &str = "hooked-1";
/// Attempt waits given to the binary: at once, then 1 s, 2 s, 3 s, …
const SCHEDULE: &str = "0s,1s,2s,3s,1m";
const JITTER: f64 = 0.1;

/// The Python receiver and the requests it reported.
struct Receiver {
    _child: Child,
    port: u16,
    lines: mpsc::UnboundedReceiver<Value>,
    seen: Vec<Value>,
}

impl Receiver {
    async fn start() -> Receiver {
        Receiver::start_with(None).await
    }

    /// With `models`, a module generated from openapi.json's webhooks that
    /// the receiver validates every verified body against.
    async fn start_with(models: Option<&Path>) -> Receiver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("webhooks/receiver.py");
        let mut command = Command::new("python3");
        command.arg(script);
        if let Some(models) = models {
            command.arg("--models").arg(models);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs tests/webhooks/receiver.py");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(WAIT, out.next_line())
            .await
            .expect("receiver starts")
            .unwrap()
            .expect("receiver prints its port (is standardwebhooks installed? see tests/webhooks/requirements.txt)");
        let port = serde_json::from_str::<Value>(&first).unwrap()["listening"]
            .as_u64()
            .unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                    break;
                }
            }
        });
        Receiver {
            _child: child,
            port: u16::try_from(port).unwrap(),
            lines,
            seen: Vec::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn control(&self, body: Value) {
        let res = reqwest::Client::new()
            .post(self.url("/_control"))
            .json(&body)
            .timeout(WAIT)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }

    /// Wait until `done` holds for everything seen so far.
    async fn until(&mut self, what: &str, done: impl Fn(&[Value]) -> bool) {
        let waited = tokio::time::timeout(WAIT, async {
            while !done(&self.seen) {
                let line = self.lines.recv().await.expect("receiver alive");
                self.seen.push(line);
            }
        })
        .await;
        assert!(waited.is_ok(), "{what}: not in time; seen {:#?}", self.seen);
    }

    /// Take in what arrives within `quiet` (duplicates would).
    async fn settle(&mut self, quiet: Duration) {
        tokio::time::sleep(quiet).await;
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    fn on<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.seen.iter().filter(move |r| r["path"] == path)
    }
}

fn body_type(r: &Value) -> &str {
    r["body"]["type"].as_str().unwrap_or_default()
}

async fn start(cwd: &Path, db_args: &[&str], allow_private: bool) -> Server {
    let mut cmd = fleetmq(cwd);
    cmd.args(["serve", "--http-listen", "127.0.0.1:0"])
        .args(["--webhook-retry-schedule", SCHEDULE])
        .args(["--webhook-batch-max-messages", "3"])
        .args(["--webhook-batch-max-wait", "3s"])
        .args(db_args);
    if allow_private {
        cmd.arg("--webhook-allow-private");
    }
    Server::start(cmd).await.unwrap()
}

/// Creates a webhook to `path` on `rx` and tells the receiver its secret.
async fn webhook(api: &Api, rx: &Receiver, path: &str, body: Value, fail_first: u32) -> String {
    let mut body = body;
    body["url"] = Value::from(rx.url(path));
    let created = api.post("/v1/tenants/acme/webhooks", body).await;
    let secret = created["secret"].as_str().expect("secret shown once");
    rx.control(json!({"path": path, "secret": secret, "fail_first": fail_first}))
        .await;
    created["id"].as_str().unwrap().to_owned()
}

/// An endpoint that gets the device's telemetry as `message.batch`.
async fn batched_webhook(api: &Api, rx: &Receiver) -> String {
    let body = json!({"events": ["message.published"], "topic_filter": "devices/+/telemetry"});
    webhook(api, rx, "/batched", body, 0).await
}

fn mqtt_args(server: &Server, creds: &(String, String)) -> Vec<String> {
    let mut args: Vec<String> = ["-h", "localhost", "-V", "mqttv5", "-q", "1", "-i", DEVICE]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    args.extend(["-p".to_owned(), server.mqtts().port().to_string()]);
    args.extend([
        "--cafile".to_owned(),
        server.mqtts_ca_file().display().to_string(),
    ]);
    args.extend([
        "-u".to_owned(),
        creds.0.clone(),
        "-P".to_owned(),
        creds.1.clone(),
    ]);
    args
}

/// The device connects, publishes `lines` on its telemetry topic (one
/// connection) and leaves.
async fn publish_lines(server: &Server, creds: &(String, String), lines: &[&str]) {
    publish_lines_on(server, creds, "telemetry", lines).await;
}

/// [`publish_lines`] on `devices/{DEVICE}/{suffix}`.
async fn publish_lines_on(server: &Server, creds: &(String, String), suffix: &str, lines: &[&str]) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(mqtt_args(server, creds))
        .args(["-t", &format!("devices/{DEVICE}/{suffix}"), "-l"])
        .stdin(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(format!("{}\n", lines.join("\n")).as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("mosquitto_pub finishes")
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn message_events_retries_restart_and_redeliver_on_sqlite() {
    scenario(&[]).await;
}

#[tokio::test]
async fn message_events_retries_restart_and_redeliver_on_postgres() {
    // Skipped (TestDb prints why) when TEST_DATABASE_URL is not set.
    let Some(db) = TestDb::postgres_unmigrated().await else {
        return;
    };
    scenario(&["--database-url", db.url()]).await;
    db.cleanup().await;
}

async fn scenario(db_args: &[&str]) {
    let mut rx = Receiver::start().await;
    let cwd = tempfile::tempdir().unwrap();

    // Without --webhook-allow-private, a private address is refused.
    let server = start(cwd.path(), db_args, false).await;
    let token = admin_token(
        cwd.path(),
        &[&["--role", "platform-admin"], db_args].concat(),
    )
    .await;
    let mut api = Api::new(&server, token);
    api.post("/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    api.post("/v1/tenants/acme/devices", json!({"id": DEVICE}))
        .await;
    let password = api
        .post(
            &format!("/v1/tenants/acme/devices/{DEVICE}/password"),
            json!({}),
        )
        .await;
    let creds = (
        password["username"].as_str().unwrap().to_owned(),
        password["password"].as_str().unwrap().to_owned(),
    );
    for url in [rx.url("/ordered"), "https://10.1.2.3/hook".to_owned()] {
        let (status, content_type, problem) = api
            .call_typed(
                reqwest::Method::POST,
                "/v1/tenants/acme/webhooks",
                Some(json!({"url": url, "events": ["device.*"]})),
            )
            .await;
        assert_eq!(status, 422, "{url}: {problem}");
        assert_eq!(content_type, "application/problem+json", "{problem}");
    }
    server.stop().await.unwrap();

    // Connect, publish three messages, leave.
    let mut server = start(cwd.path(), db_args, true).await;
    api.base = server.url("");
    let ordered = webhook(
        &api,
        &rx,
        "/ordered",
        json!({"events": ["device.*", "message.published"]}),
        0,
    )
    .await;
    batched_webhook(&api, &rx).await;
    publish_lines(&server, &creds, &["t0", "t1", "t2"]).await;
    rx.until("lifecycle, messages and a batch", |seen| {
        let r = seen.iter().filter(|r| r["answered"] == 200);
        let batched: usize = r
            .clone()
            .filter(|r| r["path"] == "/batched")
            .map(|r| r["body"]["data"]["messages"].as_array().map_or(0, Vec::len))
            .sum();
        batched == 3
            && r.filter(|r| r["path"] == "/ordered")
                .any(|r| body_type(r) == "device.disconnected")
    })
    .await;
    // Anything sent twice would arrive within a few poll intervals.
    rx.settle(Duration::from_secs(3)).await;
    for r in &rx.seen {
        assert_eq!(r["verified"], true, "standardwebhooks verifies: {r}");
    }
    let on_ordered: Vec<&Value> = rx.on("/ordered").collect();
    let types: Vec<&str> = on_ordered.iter().map(|r| body_type(r)).collect();
    assert_eq!(
        types,
        [
            "device.connected",
            "message.published",
            "message.published",
            "message.published",
            "device.disconnected"
        ],
        "in order, each once: {on_ordered:#?}"
    );
    let seqs: Vec<i64> = on_ordered
        .iter()
        .map(|r| r["body"]["data"]["seq"].as_i64().expect("numbered"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let payloads: Vec<&Value> = on_ordered[1..4]
        .iter()
        .map(|r| &r["body"]["data"]["payload"])
        .collect();
    assert_eq!(payloads, [&json!("t0"), &json!("t1"), &json!("t2")]);
    let message = &on_ordered[1]["body"]["data"];
    assert_eq!(message["device_id"], DEVICE, "{message}");
    assert_eq!(message["topic"], format!("devices/{DEVICE}/telemetry"));
    let batches: Vec<&Value> = rx.on("/batched").collect();
    assert_eq!(batches.len(), 1, "one request for the three: {batches:#?}");
    assert_eq!(body_type(batches[0]), "message.batch");
    let batch_payloads: Vec<&Value> = batches[0]["body"]["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["data"]["payload"])
        .collect();
    assert_eq!(batch_payloads, [&json!("t0"), &json!("t1"), &json!("t2")]);

    // Three failures, then delivered, on the schedule; then redelivered.
    let flaky = webhook(
        &api,
        &rx,
        "/flaky",
        json!({"events": ["device.connected"]}),
        3,
    )
    .await;
    publish_lines(&server, &creds, &["again"]).await;
    rx.until("delivered on the 4th attempt", |seen| {
        seen.iter()
            .any(|r| r["path"] == "/flaky" && r["answered"] == 200)
    })
    .await;
    let attempts: Vec<Value> = rx.on("/flaky").cloned().collect();
    let answered: Vec<i64> = attempts
        .iter()
        .map(|r| r["answered"].as_i64().unwrap())
        .collect();
    assert_eq!(answered, [503, 503, 503, 200], "{attempts:#?}");
    assert!(
        attempts
            .iter()
            .all(|r| r["webhook_id"] == attempts[0]["webhook_id"])
    );
    for (i, pair) in attempts.windows(2).enumerate() {
        let gap = pair[1]["at"].as_f64().unwrap() - pair[0]["at"].as_f64().unwrap();
        #[allow(clippy::cast_precision_loss)]
        let step = (i + 1) as f64;
        assert!(
            gap >= step * (1.0 - JITTER),
            "attempt {} after {gap:.2} s, before its {step} s step",
            i + 2
        );
    }
    // The attempt is recorded just after the receiver answers.
    let deliveries = format!("/v1/tenants/acme/webhooks/{flaky}/deliveries");
    let mut log = Value::Null;
    let recorded = tokio::time::timeout(WAIT, async {
        loop {
            let (status, _, answer) = api
                .call_typed(reqwest::Method::GET, &deliveries, None)
                .await;
            assert_eq!(status, 200, "{answer}");
            log = answer;
            if log["items"][0]["status"] == "delivered" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(recorded.is_ok(), "not recorded as delivered: {log}");
    let item = &log["items"][0];
    assert_eq!(item["attempts"], 4, "{log}");
    let delivery = item["id"].as_i64().unwrap();
    let (status, _, again) = api
        .call_typed(
            reqwest::Method::POST,
            &format!("/v1/tenants/acme/webhooks/{flaky}/deliveries/{delivery}/redeliver"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{again}");
    rx.until("redelivered", |seen| {
        seen.iter().filter(|r| r["path"] == "/flaky").count() == 5
    })
    .await;
    let last = rx.on("/flaky").last().unwrap();
    assert_eq!(
        (last["answered"].as_i64(), &last["webhook_id"]),
        (Some(200), &attempts[0]["webhook_id"])
    );

    // The receiver is down; the device stays connected while the server
    // stops. Both its events are delivered by the next run.
    rx.control(json!({"path": "/ordered", "down": true})).await;
    let mut session = Command::new("mosquitto_sub");
    session
        .args(mqtt_args(&server, &creds))
        .args(["-t", &format!("commands/{DEVICE}/#")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let session = session.spawn().unwrap();
    rx.until("a connect that fails", |seen| {
        seen.iter().any(|r| {
            r["path"] == "/ordered" && r["answered"] == 503 && body_type(r) == "device.connected"
        })
    })
    .await;
    let pending = rx
        .on("/ordered")
        .find(|r| r["answered"] == 503)
        .unwrap()
        .clone();
    server.signal("INT").await.unwrap();
    assert!(server.wait(WAIT).await.unwrap().success());
    drop(session);
    rx.control(json!({"path": "/ordered", "down": false})).await;
    let server = start(cwd.path(), db_args, true).await;
    rx.until(
        "the pending connect and the shutdown's disconnect",
        |seen| {
            let ok = |t: &str| {
                seen.iter().any(|r| {
                    r["path"] == "/ordered"
                        && r["answered"] == 200
                        && body_type(r) == t
                        && r["body"]["data"]["seq"].as_i64()
                            >= pending["body"]["data"]["seq"].as_i64()
                })
            };
            ok("device.connected") && ok("device.disconnected")
        },
    )
    .await;
    let after: Vec<&Value> = rx
        .on("/ordered")
        .filter(|r| {
            r["answered"] == 200
                && r["body"]["data"]["seq"].as_i64() >= pending["body"]["data"]["seq"].as_i64()
        })
        .collect();
    assert_eq!(after[0]["webhook_id"], pending["webhook_id"], "{after:#?}");
    assert_eq!(body_type(after[0]), "device.connected");
    assert_eq!(body_type(after[1]), "device.disconnected");
    assert!(after[0]["body"]["data"]["seq"].as_i64() < after[1]["body"]["data"]["seq"].as_i64());
    for r in &rx.seen {
        assert_eq!(r["verified"], true, "standardwebhooks verifies: {r}");
    }
    // Deliveries by status, latency and queue depth are exposed (the
    // gauges are refreshed every few seconds).
    let names = [
        "fleetmq_webhook_deliveries_total{status=\"delivered\"}".to_owned(),
        "fleetmq_webhook_attempts_total{outcome=\"retry\"}".to_owned(),
        "fleetmq_webhook_attempt_duration_seconds_bucket".to_owned(),
        format!("fleetmq_webhook_queue_depth{{tenant=\"acme\",webhook_id=\"{ordered}\"}}"),
    ];
    let mut metrics = String::new();
    let exposed = tokio::time::timeout(WAIT, async {
        while !names.iter().all(|n| metrics.contains(n.as_str())) {
            metrics = server.get("/metrics").await.unwrap().text().await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(exposed.is_ok(), "{names:?} not all in /metrics:\n{metrics}");
    server.stop().await.unwrap();
}

/// Models for a receiver, generated from the committed openapi.json's
/// OpenAPI 3.1 `webhooks` by datamodel-code-generator, as a customer would.
async fn generated_receiver_models(dir: &Path) -> std::path::PathBuf {
    let document = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json");
    let models = dir.join("fleetmq_webhooks.py");
    let out = Command::new("python3")
        .args(["-m", "datamodel_code_generator", "--input"])
        .arg(&document)
        .args(["--input-file-type", "openapi"])
        .args(["--openapi-scopes", "schemas", "webhooks"])
        .args(["--output-model-type", "pydantic_v2.BaseModel"])
        .args(["--formatters", "builtin", "--disable-warnings"])
        .arg("--output")
        .arg(&models)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "datamodel-code-generator (tests/webhooks/requirements.txt) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    models
}

#[tokio::test]
async fn deliveries_match_a_receiver_generated_from_openapi() {
    let scratch = tempfile::tempdir().unwrap();
    let models = generated_receiver_models(scratch.path()).await;
    let mut rx = Receiver::start_with(Some(&models)).await;
    let cwd = tempfile::tempdir().unwrap();
    let server = start(cwd.path(), &[], true).await;
    let token = admin_token(cwd.path(), &["--role", "platform-admin"]).await;
    let api = Api::new(&server, token);
    api.post("/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    let every = webhook(&api, &rx, "/every", json!({"events": ["*"]}), 0).await;
    batched_webhook(&api, &rx).await;

    // Every event type something here can cause, each at least once.
    let device = format!("/v1/tenants/acme/devices/{DEVICE}");
    api.post(
        "/v1/tenants/acme/devices",
        json!({"id": DEVICE, "labels": {"site": "berlin"}}),
    )
    .await;
    let password = api.post(&format!("{device}/password"), json!({})).await;
    let creds = (
        password["username"].as_str().unwrap().to_owned(),
        password["password"].as_str().unwrap().to_owned(),
    );
    api.ok(
        reqwest::Method::PATCH,
        &device,
        Some(json!({"labels": {"site": "paris"}})),
    )
    .await;
    api.put(
        &format!("{device}/state/desired"),
        json!({"fan": {"speed": 3}}),
    )
    .await;
    publish_lines(&server, &creds, &["t0", "t1", "t2"]).await;
    let reported = r#"{"fan":{"speed":3},"temp":21.5}"#;
    publish_lines_on(&server, &creds, "state/reported", &[reported]).await;
    let issued = api.post(&format!("{device}/certificates"), json!({})).await;
    let serial = issued["serial"].as_str().expect("a serial").to_owned();
    api.post(
        &format!("{device}/certificates/{serial}/revoke"),
        json!({"reason": "superseded"}),
    )
    .await;
    api.post(
        &format!("/v1/tenants/acme/webhooks/{every}/test"),
        json!({}),
    )
    .await;
    api.delete(&device).await;

    let wanted = [
        "device.created",
        "device.updated",
        "device.deleted",
        "device.connected",
        "device.disconnected",
        "state.reported",
        "state.desired",
        "certificate.issued",
        "certificate.revoked",
        "message.published",
        "message.batch",
        "webhook.ping",
    ];
    rx.until("every event type", |seen| {
        wanted.iter().all(|t| {
            seen.iter()
                .any(|r| r["answered"] == 200 && body_type(r) == *t)
        })
    })
    .await;
    rx.settle(Duration::from_secs(1)).await;
    for r in &rx.seen {
        assert_eq!(r["verified"], true, "standardwebhooks verifies: {r}");
        assert_eq!(
            r["schema"], "ok",
            "the delivered body matches the model generated from openapi.json: {r:#}"
        );
    }
    server.stop().await.unwrap();
}
