//! The wired platform through the real binary and the Debian mosquitto
//! clients over TLS (issues 5 and 6): device certificates and passwords from
//! REST, policy decisions on the wire (v5 reason codes), presence, reported
//! and desired state, revocation of a live session, and retained messages and
//! state surviving a graceful restart and a `kill -9` (SQLite, and Postgres when TEST_DATABASE_URL is set).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fleetmq_tests::{Api, Server, TestDb, admin_token, fleetmq, run_to_exit};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(20);

/// Client files for one identity: certificate chain and key, or a password.
struct Identity {
    client_id: String,
    args: Vec<String>,
}

impl Identity {
    fn certificate(dir: &Path, client_id: &str, cert_pem: &str, key_pem: &str) -> Identity {
        let cert = dir.join(format!("{client_id}-{}.crt", unique()));
        let key = cert.with_extension("key");
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        Identity {
            client_id: client_id.to_owned(),
            args: vec!["--cert".into(), path(&cert), "--key".into(), path(&key)],
        }
    }

    fn password(client_id: &str, username: &str, password: &str) -> Identity {
        Identity {
            client_id: client_id.to_owned(),
            args: vec!["-u".into(), username.into(), "-P".into(), password.into()],
        }
    }

    /// A mosquitto client over TLS as this identity, MQTT 5.
    fn command(&self, server: &Server, tool: &str) -> Command {
        let mut cmd = Command::new(tool);
        cmd.args(["-h", "localhost", "-V", "mqttv5", "-d"])
            .args(["-p", &server.mqtts().port().to_string()])
            .arg("--cafile")
            .arg(server.mqtts_ca_file())
            .args(["-i", &self.client_id])
            .args(&self.args)
            .kill_on_drop(true);
        cmd
    }

    /// Publishes once with QoS 1 and returns the client's debug output.
    async fn publish(&self, server: &Server, topic: &str, payload: &str, retain: bool) -> Outcome {
        let mut cmd = self.command(server, "mosquitto_pub");
        cmd.args(["-q", "1", "-t", topic, "-m", payload]);
        if retain {
            cmd.arg("-r");
        }
        run(cmd).await
    }
}

struct Outcome {
    success: bool,
    output: String,
}

async fn run(cmd: Command) -> Outcome {
    let out = tokio::time::timeout(WAIT * 2, run_to_exit(cmd))
        .await
        .expect("mosquitto client hung")
        .unwrap();
    Outcome {
        success: out.status.success(),
        output: format!("{}{}", out.stdout, out.stderr),
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// A subscriber that stays connected and hands over `topic payload` lines.
struct Subscriber {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Subscriber {
    fn start(server: &Server, who: &Identity, filter: &str) -> Subscriber {
        let mut cmd = who.command(server, "mosquitto_sub");
        cmd.args(["-q", "1", "-t", filter, "-F", "%t %p"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                // -d debug lines are interleaved with the `topic payload` lines.
                let debug = line.starts_with("Client ") || line.starts_with("Subscribed ");
                if !debug && tx.send(line).is_err() {
                    break;
                }
            }
        });
        Subscriber { child, lines }
    }

    async fn next_message(&mut self) -> String {
        tokio::time::timeout(WAIT, self.lines.recv())
            .await
            .expect("no message in time")
            .expect("subscriber ended")
    }
}

async fn start(cwd: &Path, extra: &[&str]) -> Server {
    let mut cmd = fleetmq(cwd);
    cmd.args(["serve", "--http-listen", "127.0.0.1:0"])
        .args(extra);
    Server::start(cmd).await.unwrap()
}

async fn issue_certificate(
    api: &Api,
    dir: &Path,
    tenant: &str,
    device: &str,
) -> (Identity, String) {
    let issued = api
        .post(
            &format!("/v1/tenants/{tenant}/devices/{device}/certificates"),
            json!({}),
        )
        .await;
    let chain = format!(
        "{}{}",
        issued["certificate_pem"].as_str().unwrap(),
        issued["chain_pem"].as_str().unwrap()
    );
    let key = issued["private_key_pem"].as_str().expect("server-made key");
    let serial = issued["serial"].as_str().unwrap().to_owned();
    (Identity::certificate(dir, device, &chain, key), serial)
}

/// A self-signed certificate from a root the platform never saw.
async fn foreign_identity(dir: &Path, client_id: &str) -> Identity {
    let key = dir.join("foreign.key");
    let cert = dir.join("foreign.crt");
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
    ])
    .args([
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={client_id}/O=acme"),
    ])
    .arg("-keyout")
    .arg(&key)
    .arg("-out")
    .arg(&cert);
    let made = run(cmd).await;
    assert!(made.success, "{}", made.output);
    Identity {
        client_id: client_id.to_owned(),
        args: vec!["--cert".into(), path(&cert), "--key".into(), path(&key)],
    }
}

#[tokio::test]
async fn identity_policy_state_revocation_and_restarts_on_sqlite() {
    // The embedded database in the data dir, kept across the restarts.
    identity_policy_state_revocation_and_restarts(&[]).await;
}

#[tokio::test]
async fn identity_policy_state_revocation_and_restarts_on_postgres() {
    // Skipped (TestDb prints why) when TEST_DATABASE_URL is not set.
    let Some(db) = TestDb::postgres_unmigrated().await else {
        return;
    };
    identity_policy_state_revocation_and_restarts(&["--database-url", db.url()]).await;
    db.cleanup().await;
}

async fn identity_policy_state_revocation_and_restarts(db_args: &[&str]) {
    let cwd = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let dir = files.path();
    let mut server = start(cwd.path(), db_args).await;
    let token = admin_token(
        cwd.path(),
        &[&["--role", "platform-admin"], db_args].concat(),
    )
    .await;
    let api = Api::new(&server, token.clone());
    for tenant in ["acme", "beta"] {
        api.post("/v1/tenants", json!({"id": tenant, "name": tenant}))
            .await;
    }
    for device in ["sensor-1", "pw-1", "off-1"] {
        api.post("/v1/tenants/acme/devices", json!({"id": device}))
            .await;
    }
    api.post("/v1/tenants/beta/devices", json!({"id": "sensor-1"}))
        .await;
    let state = "/v1/tenants/acme/devices/sensor-1/state";

    // Desired state set while the device has never connected: kept retained.
    let (status, view) = api
        .call(
            reqwest::Method::PUT,
            &format!("{state}/desired"),
            Some(json!({"led": "on"})),
        )
        .await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "offline", "{view}");

    let (sensor, serial) = issue_certificate(&api, dir, "acme", "sensor-1").await;
    let mut live = Subscriber::start(&server, &sensor, "commands/sensor-1/#");
    let got = live.next_message().await;
    assert!(got.starts_with("commands/sensor-1/state/desired "), "{got}");
    let desired: Value = serde_json::from_str(got.split_once(' ').unwrap().1).unwrap();
    assert_eq!(desired["led"], "on", "{got}");
    api.wait_for("/v1/tenants/acme/devices/sensor-1", "online", |d| {
        d["status"] == "online"
    })
    .await;

    // One client id per device: its next connection would take this one
    // over, so the device leaves and its presence follows.
    live.child.kill().await.unwrap();
    api.wait_for("/v1/tenants/acme/devices/sensor-1", "offline", |d| {
        d["status"] == "offline"
    })
    .await;

    // Reported state merges; the device's own topics pass.
    for report in [r#"{"temp":21}"#, r#"{"hum":40}"#] {
        let out = sensor
            .publish(&server, "devices/sensor-1/state/reported", report, false)
            .await;
        assert!(
            out.success && !out.output.contains("RC:135"),
            "{}",
            out.output
        );
    }
    api.wait_for(state, "merged reported state", |s| {
        s["reported"] == json!({"temp": 21, "hum": 40})
    })
    .await;

    // Policy on the wire: another device's topics are refused with 0x87.
    let denied = sensor
        .publish(&server, "devices/other/x", "hi", false)
        .await;
    assert!(
        denied.output.contains("received PUBACK (Mid: 1, RC:135)"),
        "{}",
        denied.output
    );
    let mut sub = sensor.command(&server, "mosquitto_sub");
    sub.args(["-q", "1", "-t", "devices/other/#", "-C", "1", "-W", "3"]);
    let denied = run(sub).await;
    assert!(
        denied.output.contains("Subscribed (mid: 1): 135"),
        "{}",
        denied.output
    );

    // The certificate is bound to its device: another client id is refused,
    // and so is a certificate from a root the platform never issued.
    let impostor = Identity {
        client_id: "sensor-2".into(),
        args: sensor.args.clone(),
    };
    let out = impostor
        .publish(&server, "devices/sensor-2/x", "hi", false)
        .await;
    assert!(!out.success, "{}", out.output);
    let foreign = foreign_identity(dir, "sensor-1").await;
    let out = foreign
        .publish(&server, "devices/sensor-1/x", "hi", false)
        .await;
    assert!(!out.success, "{}", out.output);

    // Password devices: `{d}@{t}` with the password shown once.
    let creds = api
        .post("/v1/tenants/acme/devices/pw-1/password", json!({}))
        .await;
    let username = creds["username"].as_str().unwrap();
    assert_eq!(username, "pw-1@acme");
    let pw = Identity::password("pw-1", username, creds["password"].as_str().unwrap());
    let out = pw
        .publish(
            &server,
            "devices/pw-1/state/reported",
            r#"{"ok":true}"#,
            false,
        )
        .await;
    assert!(
        out.success && !out.output.contains("RC:135"),
        "{}",
        out.output
    );
    let wrong = Identity::password("pw-1", username, "not-the-password");
    assert!(
        !wrong
            .publish(&server, "devices/pw-1/x", "hi", false)
            .await
            .success
    );

    // A disabled device is refused even with a valid certificate.
    let (off, _) = issue_certificate(&api, dir, "acme", "off-1").await;
    let patched = api
        .http
        .patch(server.url("/v1/tenants/acme/devices/off-1"))
        .bearer_auth(&token)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"enabled":false}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200, "{}", patched.text().await.unwrap());
    let out = off.publish(&server, "devices/off-1/x", "hi", false).await;
    assert!(!out.success, "{}", out.output);

    // Tenant isolation: beta's sensor-1 (same device id) never sees acme's
    // messages, even on the same topic names.
    let (beta, _) = issue_certificate(&api, dir, "beta", "sensor-1").await;
    let mut beta_sub = beta.command(&server, "mosquitto_sub");
    beta_sub.args([
        "-q",
        "1",
        "-t",
        "devices/sensor-1/#",
        "-W",
        "3",
        "-F",
        "%t %p",
    ]);
    let beta_sub = tokio::spawn(run(beta_sub));
    tokio::time::sleep(Duration::from_secs(1)).await;
    sensor
        .publish(
            &server,
            "devices/sensor-1/state/reported",
            r#"{"acme":1}"#,
            false,
        )
        .await;
    let beta_out = beta_sub.await.unwrap();
    // Granted, so the silence below is isolation and not a refusal.
    assert!(
        beta_out.output.contains("Subscribed (mid: 1): 1"),
        "{}",
        beta_out.output
    );
    assert!(
        !beta_out.output.contains(r#"{"acme":1}"#),
        "{}",
        beta_out.output
    );

    // A retained QoS 1 message of the device, acknowledged before the restarts.
    let out = sensor
        .publish(&server, "devices/sensor-1/telemetry", "kept-1", true)
        .await;
    assert!(
        out.success && out.output.contains("received PUBACK") && !out.output.contains("RC:135"),
        "{}",
        out.output
    );

    // Back online: the retained desired document is there again.
    let mut live = Subscriber::start(&server, &sensor, "commands/sensor-1/#");
    assert!(live.next_message().await.contains(r#""led":"on""#));

    // A change while online reaches the live session; a stale If-Match does not.
    let current = api.get(state).await["versions"]["desired"]
        .as_i64()
        .unwrap();
    let (status, _) = api
        .call(
            reqwest::Method::PUT,
            &format!("{state}/desired"),
            Some(json!({"fan": 2})),
        )
        .await;
    assert_eq!(status, 200);
    let got = live.next_message().await;
    assert!(
        got.contains(r#""fan":2"#) && got.contains(r#""led":"on""#),
        "{got}"
    );
    let stale = api
        .http
        .put(server.url(&format!("{state}/desired")))
        .bearer_auth(&token)
        .header("if-match", format!("\"{current}\""))
        .json(&json!({"fan": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412, "{}", stale.text().await.unwrap());

    // Revocation ends the live session and refuses the next connect.
    let revoked_at = Instant::now();
    api.post(
        &format!("/v1/tenants/acme/devices/sensor-1/certificates/{serial}/revoke"),
        json!({}),
    )
    .await;
    tokio::time::timeout(WAIT, live.child.wait())
        .await
        .expect("session outlived revocation")
        .unwrap();
    let took = revoked_at.elapsed();
    // Measured from the start of the REST call to the client's exit.
    println!("revocation: live session ended {took:?} after the revoke request");
    assert!(took < Duration::from_secs(1), "revocation took {took:?}");
    let out = sensor
        .publish(&server, "devices/sensor-1/x", "hi", false)
        .await;
    assert!(!out.success, "{}", out.output);
    api.wait_for("/v1/tenants/acme/devices/sensor-1", "offline", |d| {
        d["status"] == "offline"
    })
    .await;
    drop(api);

    // Graceful restart: state, desired and retained are all still there.
    server.signal("INT").await.unwrap();
    server.wait(WAIT).await.unwrap();
    let server = start(cwd.path(), db_args).await;
    let api = Api::new(&server, token.clone());
    let kept = api.get(state).await;
    assert_eq!(kept["reported"]["hum"], 40, "{kept}");
    assert_eq!(kept["desired"]["fan"], 2, "{kept}");
    assert_eq!(
        retained(&kept, "devices/sensor-1/telemetry"),
        "kept-1",
        "{kept}"
    );
    let (sensor, _) = issue_certificate(&api, dir, "acme", "sensor-1").await;
    let out = sensor
        .publish(&server, "devices/sensor-1/telemetry", "kept-2", true)
        .await;
    assert!(
        out.success && out.output.contains("received PUBACK") && !out.output.contains("RC:135"),
        "{}",
        out.output
    );
    // Connected when the node dies: its presence and retained status say
    // online until the next start corrects them.
    let mut holder = Subscriber::start(&server, &sensor, "commands/sensor-1/#");
    assert!(holder.next_message().await.contains(r#""fan":2"#));
    api.wait_for(state, "online with its status retained", |s| {
        s["status"] == "online"
            && retained_or_empty(s, "devices/sensor-1/status").contains("online")
    })
    .await;
    drop(api);

    // kill -9 right after the acknowledged retained publish.
    let mut server = server;
    server.signal("KILL").await.unwrap();
    server.wait(WAIT).await.unwrap();
    drop(holder);
    let server = start(cwd.path(), db_args).await;
    let api = Api::new(&server, token);
    let after_crash = api
        .wait_for(state, "offline after the crash", |s| {
            retained_or_empty(s, "devices/sensor-1/status").contains("node_restarted")
        })
        .await;
    assert_eq!(after_crash["status"], "offline", "{after_crash}");
    assert_eq!(
        after_crash["disconnect_reason"], "node restarted",
        "{after_crash}"
    );
    let mut replay = Subscriber::start(&server, &sensor, "commands/sensor-1/#");
    assert!(replay.next_message().await.contains(r#""fan":2"#));
    let kept = api.get(state).await;
    assert_eq!(
        retained(&kept, "devices/sensor-1/telemetry"),
        "kept-2",
        "{kept}"
    );
    drop(replay);
    drop(api);
    server.stop().await.unwrap();
}

/// The payload retained on `topic`, or "" while there is none.
fn retained_or_empty(view: &Value, topic: &str) -> String {
    view["retained"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["topic"] == topic))
        .and_then(|r| r["payload"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// The payload retained on `topic`, from a device state view.
fn retained(view: &Value, topic: &str) -> String {
    let entry = view["retained"]
        .as_array()
        .and_then(|all| all.iter().find(|r| r["topic"] == topic))
        .unwrap_or_else(|| panic!("nothing retained on {topic}: {view}"));
    entry["payload"].as_str().unwrap_or_default().to_owned()
}
