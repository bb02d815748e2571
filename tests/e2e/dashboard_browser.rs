//! The dashboard in a real browser (issue 8): the built `fleetmq serve`,
//! headless Debian Chromium driven by Playwright (tests/browser, playwright-
//! core from npm) and the Debian mosquitto clients as the device. The steps
//! are in tests/browser/dashboard.mjs; this test starts the server, makes
//! the tenant and its API keys, runs the script and fails with its output.
//! A service credential's `mosquitto_pub` floods a stopped subscriber so
//! that the page shows a slow consumer's drops (issue 16).
//!
//! Screenshots go to `target/browser-screenshots/{sqlite,postgres}/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetmq_tests::{Server, TestDb, admin_token, fleetmq, fleetmq_bin};
use serde_json::{Value, json};
use tokio::process::Command;

/// The whole script: sign-ins, a certificate, MQTT sessions, a second and
/// third browser context. Generous: the machine is shared.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
const CHROMIUM: &str = "/usr/bin/chromium";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// `target/browser-screenshots/<name>`, beside the profile directory the
/// `fleetmq` binary was built in.
fn screenshot_dir(name: &str) -> PathBuf {
    let bin = fleetmq_bin();
    let target = bin
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/fleetmq");
    target.join("browser-screenshots").join(name)
}

async fn post(server: &Server, token: &str, path: &str, body: Value) -> Value {
    let res = reqwest::Client::new()
        .post(server.url(path))
        .bearer_auth(token)
        .json(&body)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert!(status.is_success(), "POST {path}: {status} {body}");
    body
}

async fn dashboard_in_chromium(name: &str, db_args: &[&str]) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: `apt-get install chromium` (.ci/run does)"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci` in tests/browser (.ci/run does)"
    );
    let cwd = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut cmd = fleetmq(cwd.path());
    // The script's webhook receiver listens on loopback over plain http.
    // Small queues and a short pause make a stopped subscriber a slow
    // consumer within a second of a flood (issue 16: its drops are shown).
    cmd.args([
        "serve",
        "--http-listen",
        "127.0.0.1:0",
        "--webhook-allow-private",
        "--mqtt-max-queued-messages",
        "16",
        "--mqtt-slow-consumer-timeout",
        "1",
    ])
    .args(db_args);
    let server = Server::start(cmd).await.unwrap();
    let admin = admin_token(
        cwd.path(),
        &[&["--role", "platform-admin"], db_args].concat(),
    )
    .await;
    post(
        &server,
        &admin,
        "/v1/tenants",
        json!({"id": "acme", "name": "Acme"}),
    )
    .await;
    let mut keys = Vec::new();
    for role in ["tenant-admin", "viewer"] {
        let key = post(
            &server,
            &admin,
            "/v1/tenants/acme/api-keys",
            json!({"name": format!("dashboard {role}"), "role": role}),
        )
        .await;
        keys.push(key["secret"].as_str().unwrap().to_owned());
    }

    let shots = screenshot_dir(name);
    // Only this run's pictures (a failure.png of an earlier run would mislead).
    let _ = std::fs::remove_dir_all(&shots);
    let mut node = Command::new("node");
    node.arg(browser_dir().join("dashboard.mjs"))
        .current_dir(browser_dir())
        .env("BASE_URL", server.url(""))
        .env("TENANT", "acme")
        .env("ADMIN_KEY", &keys[0])
        .env("VIEWER_KEY", &keys[1])
        .env("MQTTS_PORT", server.mqtts().port().to_string())
        .env("MQTT_PORT", server.mqtt().port().to_string())
        .env("CA_FILE", server.mqtts_ca_file())
        .env("SHOTS", &shots)
        .env("WORK", work.path())
        .kill_on_drop(true);
    let out = tokio::time::timeout(SCRIPT_TIMEOUT, node.output())
        .await
        .expect("the browser script did not finish in time")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the browser script failed ({}); screenshots in {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status,
        shots.display()
    );
    assert!(stdout.contains("all steps passed"), "{stdout}");
    for png in [
        "overview.png",
        "device.png",
        "device-session-drops.png",
        "device-viewer.png",
    ] {
        assert!(shots.join(png).exists(), "{png} in {}", shots.display());
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn dashboard_in_chromium_on_sqlite() {
    dashboard_in_chromium("sqlite", &[]).await;
}

#[tokio::test]
async fn dashboard_in_chromium_on_postgres() {
    // Skipped (TestDb prints why) when TEST_DATABASE_URL is not set.
    let Some(db) = TestDb::postgres_unmigrated().await else {
        return;
    };
    dashboard_in_chromium("postgres", &["--database-url", db.url()]).await;
    db.cleanup().await;
}
