//! Hostile authentication through the real binary (issue 13, items 2, 9,
//! 10, 11 and 12): floods of wrong passwords, another tenant's CA with the
//! same subject, a deleted and re-created tenant, wrong API key guesses
//! from another address, and what the database keeps of signing keys and
//! webhook ids. SQLite, and Postgres when TEST_DATABASE_URL is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr};

use fleetmq_tests::{API_WAIT, Api, Server, admin_token, platform_server};
use serde_json::{Value, json};

/// POST `/v1/auth/token` with `secret`, from the loopback address `from`.
async fn exchange(server: &Server, from: Ipv4Addr, secret: &str) -> (u16, Value) {
    let http = reqwest::Client::builder()
        .local_address(IpAddr::V4(from))
        .timeout(API_WAIT)
        .build()
        .unwrap();
    let res = http
        .post(server.url("/v1/auth/token"))
        .json(&json!({ "api_key": secret }))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn tenant(api: &Api, id: &str) {
    api.post("/v1/tenants", json!({ "id": id, "name": id }))
        .await;
}

/// Item 11: ten wrong guesses at an API key from another address (the key
/// id is the secret's visible prefix) do not lock its owner out; the
/// guessing address is the one that backs off.
async fn api_key_guesses_do_not_lock_out_the_owner(db: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (server, token) = platform_server(dir.path(), db, &[]).await;
    let api = Api::new(&server, token);
    tenant(&api, "acme").await;
    let key = api
        .post(
            "/v1/tenants/acme/api-keys",
            json!({ "name": "backend", "role": "operator" }),
        )
        .await;
    let secret = key["secret"].as_str().unwrap().to_owned();
    let (prefix, _) = secret.rsplit_once('_').unwrap();
    let wrong = format!("{prefix}_{}", "0".repeat(64));
    let owner = Ipv4Addr::new(127, 0, 0, 1);
    let guesser = Ipv4Addr::new(127, 0, 0, 2);
    for _ in 0..10 {
        let (status, body) = exchange(&server, guesser, &wrong).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, body) = exchange(&server, guesser, &wrong).await;
    assert_eq!(status, 429, "the guessing address backs off: {body}");
    let (status, body) = exchange(&server, owner, &secret).await;
    assert_eq!(status, 200, "the owner still gets a token: {body}");
    assert!(body["access_token"].as_str().is_some(), "{body}");
    server.stop().await.unwrap();
}

/// One MQTT session of `(user, password)` as client `id`: mosquitto_pub
/// connects, publishes one QoS 1 message on `devices/{id}/hello` and
/// disconnects.
async fn mosquitto_pub_once(server: &Server, id: &str, (user, password): &(String, String)) {
    let port = server.mqtt().port().to_string();
    let topic = format!("devices/{id}/hello");
    let out = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv311", "-q", "1"])
        .args([
            "-i", id, "-u", user, "-P", password, "-t", &topic, "-m", "hi",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Item 10: a tenant deleted and created again under the same id inherits
/// nothing: the old tenant's tokens (minted by the CLI or exchanged for an
/// API key) are refused, and neither its audit entries nor its lifecycle
/// events are visible.
async fn recreated_tenant_inherits_nothing(db: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (server, token) = platform_server(dir.path(), db, &[]).await;
    let platform = Api::new(&server, token);
    tenant(&platform, "phoenix").await;
    let cli_token = admin_token(
        dir.path(),
        &[&["--role", "tenant-admin", "--tenant", "phoenix"], db].concat(),
    )
    .await;
    let old = platform.with_token(cli_token);
    let credentials = old.password_device("phoenix", "sensor-1").await;
    mosquitto_pub_once(&server, "sensor-1", &credentials).await;
    old.wait_for(
        "/v1/tenants/phoenix/lifecycle",
        "sensor-1's connect",
        |body| {
            body["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())
        },
    )
    .await;
    let key = old
        .post(
            "/v1/tenants/phoenix/api-keys",
            json!({ "name": "backend", "role": "tenant-admin" }),
        )
        .await;
    let (status, exchanged) = exchange(
        &server,
        Ipv4Addr::LOCALHOST,
        key["secret"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{exchanged}");
    let old_key = platform.with_token(exchanged["access_token"].as_str().unwrap());
    let audit = old.get("/v1/tenants/phoenix/audit").await;
    assert!(audit["items"].as_array().unwrap().len() >= 3, "{audit}");

    let (status, body) = platform
        .call(reqwest::Method::DELETE, "/v1/tenants/phoenix", None)
        .await;
    assert_eq!(status, 204, "{body}");
    tenant(&platform, "phoenix").await;

    for (what, api) in [("CLI token", &old), ("API key token", &old_key)] {
        let (status, body) = api
            .call(reqwest::Method::GET, "/v1/tenants/phoenix", None)
            .await;
        assert_eq!(status, 401, "the old tenant's {what} is refused: {body}");
        assert!(
            body["detail"].as_str().unwrap_or("").contains("deleted"),
            "{body}"
        );
    }
    let new = platform.with_token(
        admin_token(
            dir.path(),
            &[&["--role", "tenant-admin", "--tenant", "phoenix"], db].concat(),
        )
        .await,
    );
    let audit = new.get("/v1/tenants/phoenix/audit").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["tenant.create"],
        "only the new tenant's trail: {audit}"
    );
    let lifecycle = new.get("/v1/tenants/phoenix/lifecycle").await;
    assert_eq!(
        lifecycle["items"],
        json!([]),
        "no old lifecycle events: {lifecycle}"
    );
    // The platform keeps the whole trail, the deletion included.
    let all = platform.get("/v1/audit?limit=100").await;
    let deleted = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "tenant.delete" && e["tenant_id"] == "phoenix");
    assert!(deleted, "{all}");
    server.stop().await.unwrap();
}

/// mosquitto_pub (MQTT 5) from loopback address `from` as `id` with
/// `(user, password)`: `Ok` if it published, else its error output.
async fn mosquitto_pub_from(
    server: &Server,
    from: Ipv4Addr,
    id: &str,
    (user, password): (&str, &str),
) -> Result<(), String> {
    let port = server.mqtt().port().to_string();
    let topic = format!("devices/{id}/hello");
    let out = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-q", "1"])
        .args([
            "-A",
            &from.to_string(),
            "-i",
            id,
            "-u",
            user,
            "-P",
            password,
        ])
        .args(["-t", &topic, "-m", "hi"])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// Resident and peak memory of process `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A counter's value in `/metrics` (0 when absent).
async fn metric(server: &Server, series: &str) -> f64 {
    let text = server.get("/metrics").await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Item 2: 200 parallel CONNECTs with wrong passwords (each from its own
/// address, so the per-address budget does not stop them: the bounded,
/// per-tenant fair queue must) leave memory nearly flat, and a device of
/// another tenant connects meanwhile; an address that keeps failing is
/// refused without a check, others are not.
async fn wrong_password_flood_is_bounded_and_fair(db: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (server, token) =
        platform_server(dir.path(), db, &["--password-check-concurrency", "2"]).await;
    let api = Api::new(&server, token);
    tenant(&api, "flooded").await;
    tenant(&api, "bystander").await;
    let (target, _) = api.password_device("flooded", "target").await;
    let (good_user, good_password) = api.password_device("bystander", "good").await;
    let good = (good_user.as_str(), good_password.as_str());
    let bystander = Ipv4Addr::new(127, 0, 0, 2);
    mosquitto_pub_from(&server, bystander, "good", good)
        .await
        .unwrap();
    let (rss_before, _) = memory_kib(server.pid());

    let mut flood = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let from = Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, (i % 250 + 1) as u8);
        let (server_mqtt, target) = (server.mqtt(), target.clone());
        let port = server_mqtt.port().to_string();
        flood.spawn(async move {
            let out = tokio::process::Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-q", "1"])
                .args(["-A", &from.to_string(), "-i", "target", "-u", &target])
                .args(["-P", "wrong-password", "-t", "devices/target/x", "-m", "x"])
                .kill_on_drop(true)
                .output()
                .await
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        });
    }
    // While the flood is queued: the other tenant's device gets its turn.
    mosquitto_pub_from(&server, bystander, "good", good)
        .await
        .expect("a device of another tenant connects during the flood");
    let (mut refused_bad, mut refused_busy) = (0, 0);
    while let Some(done) = flood.join_next().await {
        let (ok, stderr) = done.unwrap();
        assert!(!ok, "a wrong password was accepted");
        let lower = stderr.to_lowercase();
        if lower.contains("busy") {
            refused_busy += 1;
        } else if lower.contains("bad user name or password") {
            refused_bad += 1;
        } else {
            panic!("unexpected refusal: {stderr}");
        }
    }
    let (rss_after, peak) = memory_kib(server.pid());
    let growth_mib = rss_after.saturating_sub(rss_before) / 1024;
    println!(
        "200 wrong CONNECTs: {refused_bad} refused 0x86 after a check, {refused_busy} refused \
         0x89 busy; RSS {} MiB -> {} MiB (+{growth_mib} MiB), peak {} MiB",
        rss_before / 1024,
        rss_after / 1024,
        peak / 1024
    );
    assert_eq!(refused_bad + refused_busy, 200);
    // Two checks at once of 19 MiB each; before the bound: 4 GB.
    assert!(growth_mib < 100, "RSS grew {growth_mib} MiB");

    // One address failing again and again is refused without a check once
    // over its budget (20); the bystander is not.
    let guesser = Ipv4Addr::new(127, 0, 0, 3);
    for _ in 0..25 {
        let refused = mosquitto_pub_from(&server, guesser, "target", (&target, "nope"))
            .await
            .unwrap_err();
        assert!(
            refused.to_lowercase().contains("bad user name or password"),
            "{refused}"
        );
    }
    let over = metric(
        &server,
        "fleetmq_password_checks_total{outcome=\"over_budget\"}",
    )
    .await;
    assert!(over >= 5.0, "over-budget refusals counted: {over}");
    mosquitto_pub_from(&server, bystander, "good", good)
        .await
        .unwrap();
    let cached = metric(&server, "fleetmq_password_checks_total{outcome=\"cached\"}").await;
    assert!(cached >= 1.0, "a repeat success costs no argon2: {cached}");
    server.stop().await.unwrap();
}

fleetmq_tests::binary_backend_tests!(
    wrong_password_flood_is_bounded_and_fair,
    api_key_guesses_do_not_lock_out_the_owner,
    recreated_tenant_inherits_nothing,
);
