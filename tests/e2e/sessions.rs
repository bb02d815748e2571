//! Persistent MQTT sessions across restarts and `kill -9` (issue 14),
//! through the real binary, on SQLite and Postgres, with clients we did
//! not write: Eclipse Paho (Python, MQTT 3.1.1 and 5) driven by
//! tests/interop/paho_sessions.py, and `mosquitto_sub -c`. Nothing the
//! broker acknowledged may be lost: every message a publisher got its
//! PUBACK for reaches the persistent subscriber after the restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use fleetmq_tests::{Api, Server, admin_token, binary_backend_tests, interop_dir, run_to_exit};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The anonymous tenant every client lands in.
const TENANT: &str = "interop";

async fn start(cwd: &Path, db: &[&str]) -> Server {
    fleetmq_tests::start_anonymous(cwd, db)
        .await
        .expect("fleetmq starts")
}

/// `kill -9`: nothing is flushed, nothing is said to the clients.
async fn kill_9(mut server: Server) {
    server.kill_9().await.unwrap();
}

fn paho_cmd(server: &Server, step: &str, client_id: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(interop_dir().join("paho_sessions.py"))
        .arg(step)
        .args(["--port", &server.mqtt().port().to_string()])
        .args(["--client-id", client_id])
        .args(args)
        .kill_on_drop(true);
    cmd
}

/// Runs one step of paho_sessions.py to its end; its stdout.
async fn paho(server: &Server, step: &str, client_id: &str, args: &[&str]) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        run_to_exit(paho_cmd(server, step, client_id, args)),
    )
    .await
    .expect("paho step hung")
    .unwrap();
    assert!(
        out.status.success() && out.stdout.contains(&format!("ok {step}")),
        "paho {step} {client_id} {args:?} failed ({}):\n{}\n{}\n(is paho-mqtt 2.x installed? .ci/test installs it)",
        out.status,
        out.stdout,
        out.stderr
    );
    out.stdout
}

fn payloads(n: usize) -> Vec<String> {
    let mut want: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    want.sort();
    want
}

/// An offline MQTT 3.1.1 session holding 300 acknowledged QoS 1 messages
/// survives `kill -9`: `mosquitto_sub -c` gets every one after the restart.
async fn offline_queue_survives_kill_9(db: &[&str]) {
    let cwd = tempfile::tempdir().unwrap();
    let server = start(cwd.path(), db).await;
    let topic = ["--topic", "sessions/q/#"];
    paho(
        &server,
        "subscribe",
        "q300",
        &[&["--protocol", "3"][..], &topic].concat(),
    )
    .await;
    paho(
        &server,
        "publish",
        "q300-pub",
        &["--count", "300", "--topic", "sessions/q/x"],
    )
    .await;
    kill_9(server).await;

    let server = start(cwd.path(), db).await;
    let mut sub = Command::new("mosquitto_sub");
    sub.args(["-h", "127.0.0.1", "-p", &server.mqtt().port().to_string()])
        .args(["-V", "mqttv311", "-c", "-i", "q300", "-q", "1"])
        .args(["-t", "sessions/q/#", "-C", "300", "-W", "120"])
        .kill_on_drop(true);
    let out = run_to_exit(sub).await.unwrap();
    assert!(
        out.status.success(),
        "mosquitto_sub: {}\n{}",
        out.status,
        out.stderr
    );
    let mut got: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
    got.sort();
    assert_eq!(got, payloads(300), "every acknowledged message, once");
    server.stop().await.unwrap();
}

/// A persistent MQTT 5 subscriber that stopped acknowledging holds 20
/// messages in flight when the broker is killed: after the restart all 20
/// come again.
async fn in_flight_survives_kill_9(db: &[&str]) {
    let cwd = tempfile::tempdir().unwrap();
    let server = start(cwd.path(), db).await;
    let topic = ["--topic", "sessions/f/#"];
    paho(&server, "subscribe", "holder", &topic).await;
    let mut holder = paho_cmd(
        &server,
        "hold",
        "holder",
        &["--count", "20", "--present", "1"],
    );
    let mut holder = holder
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    paho(
        &server,
        "publish",
        "holder-pub",
        &["--count", "20", "--topic", "sessions/f/x"],
    )
    .await;
    let held = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("held ") {
                return line;
            }
        }
        panic!("the holder ended before holding its messages");
    })
    .await
    .expect("the holder never got its messages");
    assert_eq!(held, "held 20");
    kill_9(server).await;
    holder.kill().await.unwrap();

    let server = start(cwd.path(), db).await;
    paho(
        &server,
        "receive",
        "holder",
        &["--count", "20", "--present", "1"],
    )
    .await;
    server.stop().await.unwrap();
}

/// A graceful restart keeps the subscription: the client never
/// subscribes again and still gets what was published after the restart.
async fn graceful_restart_keeps_subscriptions(db: &[&str]) {
    let cwd = tempfile::tempdir().unwrap();
    let server = start(cwd.path(), db).await;
    paho(&server, "subscribe", "keeper", &["--topic", "sessions/g/#"]).await;
    server.stop().await.unwrap();

    let server = start(cwd.path(), db).await;
    paho(
        &server,
        "publish",
        "keeper-pub",
        &["--count", "5", "--topic", "sessions/g/x"],
    )
    .await;
    paho(
        &server,
        "receive",
        "keeper",
        &["--count", "5", "--present", "1"],
    )
    .await;
    server.stop().await.unwrap();
}

/// A session whose expiry passed while the broker was down is gone.
async fn expired_while_down_is_gone(db: &[&str]) {
    let cwd = tempfile::tempdir().unwrap();
    let server = start(cwd.path(), db).await;
    let short = ["--topic", "sessions/e/#", "--expiry", "5"];
    paho(&server, "subscribe", "brief", &short).await;
    server.stop().await.unwrap();
    // Down for longer than the session's 5 s (wall-clock deadlines).
    tokio::time::sleep(Duration::from_secs(6)).await;

    let server = start(cwd.path(), db).await;
    paho(
        &server,
        "subscribe",
        "brief",
        &[&short[..], &["--present", "0"]].concat(),
    )
    .await;
    server.stop().await.unwrap();
}

/// Takeover after a restart: the session comes back, and a second
/// connection with its client id takes it from the first (0x8E).
async fn takeover_after_restart(db: &[&str]) {
    let cwd = tempfile::tempdir().unwrap();
    let server = start(cwd.path(), db).await;
    paho(&server, "subscribe", "taken", &["--topic", "sessions/t/#"]).await;
    kill_9(server).await;

    let server = start(cwd.path(), db).await;
    paho(&server, "takeover", "taken", &["--present", "1"]).await;
    server.stop().await.unwrap();
}

/// The operator's view: the stored session with its counts, and DELETE
/// ending it with its queue.
async fn rest_lists_and_deletes(db: &[&str]) {
    let cwd = tempfile::tempdir().unwrap();
    let server = start(cwd.path(), db).await;
    let token = admin_token(
        cwd.path(),
        &[&["--role", "platform-admin"][..], db].concat(),
    )
    .await;
    let api = Api::new(&server, token);
    paho(&server, "subscribe", "listed", &["--topic", "sessions/r/#"]).await;
    paho(
        &server,
        "publish",
        "listed-pub",
        &["--count", "4", "--topic", "sessions/r/x"],
    )
    .await;
    let one = format!("/v1/tenants/{TENANT}/sessions/listed");
    // The disconnect is written behind; the queue was durable before the
    // PUBACKs.
    let session = api
        .wait_for(&one, "the session offline", |s| s["connected"] == false)
        .await;
    assert_eq!(session["queued"], 4, "{session}");
    assert_eq!(session["subscriptions"], 1, "{session}");
    assert_eq!(session["protocol"], "5.0", "{session}");
    assert!(session["expires_at"].is_string(), "{session}");
    let page = api
        .get(&format!("/v1/tenants/{TENANT}/sessions?limit=10"))
        .await;
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["client_id"].as_str())
        .collect();
    assert_eq!(ids, ["listed"], "clean sessions are not stored: {page}");

    api.delete(&one).await;
    let (status, _) = api.call(reqwest::Method::GET, &one, None).await;
    assert_eq!(status, 404);
    let (status, _) = api.call(reqwest::Method::DELETE, &one, None).await;
    assert_eq!(status, 404);
    let audit = api.get(&format!("/v1/tenants/{TENANT}/audit")).await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "session.delete"),
        "{audit}"
    );
    // Gone in the broker as well: the client starts afresh.
    paho(
        &server,
        "subscribe",
        "listed",
        &["--topic", "sessions/r/#", "--present", "0"],
    )
    .await;
    server.stop().await.unwrap();
}

/// Deleting a device deletes the sessions it created, and deleting a
/// tenant deletes every session of it.
async fn deletions_take_their_sessions(db: &[&str]) {
    let cwd = tempfile::tempdir().unwrap();
    let (server, token) = fleetmq_tests::platform_server(cwd.path(), db, &[]).await;
    let api = Api::new(&server, token);
    api.post(
        "/v1/tenants",
        serde_json::json!({ "id": "acme", "name": "Acme" }),
    )
    .await;
    for device in ["d1", "d2"] {
        let (user, password) = api.password_device("acme", device).await;
        let topic = format!("commands/{device}/#");
        // `--password=` keeps a generated secret that starts with '-' from
        // being read by argparse as an option.
        let password = format!("--password={password}");
        let login = ["--username", &user, &password, "--topic", &topic];
        paho(&server, "subscribe", device, &login).await;
    }
    let sessions = "/v1/tenants/acme/sessions";
    let listed = |body: &serde_json::Value| body["items"].as_array().map_or(0, Vec::len);
    api.wait_for(sessions, "both sessions", |b| listed(b) == 2)
        .await;

    api.delete("/v1/tenants/acme/devices/d1").await;
    let (status, _) = api
        .call(reqwest::Method::GET, &format!("{sessions}/d1"), None)
        .await;
    assert_eq!(status, 404, "the deleted device's session is gone");
    api.get(&format!("{sessions}/d2")).await;

    api.delete("/v1/tenants/acme").await;
    let (status, body) = api.call(reqwest::Method::GET, sessions, None).await;
    assert_eq!(status, 404, "the tenant and its sessions are gone: {body}");
    server.stop().await.unwrap();
}

binary_backend_tests!(
    deletions_take_their_sessions,
    offline_queue_survives_kill_9,
    in_flight_survives_kill_9,
    graceful_restart_keeps_subscriptions,
    expired_while_down_is_gone,
    takeover_after_restart,
    rest_lists_and_deletes,
);
