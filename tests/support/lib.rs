//! Helpers for end-to-end tests: start the real `fleetmq` binary on port 0,
//! wait until it says where it listens, talk to it over HTTP, stop it with a
//! real signal, and give each Postgres test a database of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod haproxy;
pub mod hooks;
pub mod proxy;
pub mod rumqtt;
pub mod sse;
pub mod tls_client;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long a freshly built binary may take to answer (the bound).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
const READY_LINE: &str = "fleetmq: http listening on ";
const MQTT_LINE: &str = "fleetmq: mqtt listening on ";
const MQTTS_LINE: &str = "fleetmq: mqtts listening on ";
const MQTTS_CA_LINE: &str = "fleetmq: mqtts ca-file ";
const WS_LINE: &str = "fleetmq: mqtt-ws listening on ";

/// The `fleetmq` binary cargo built beside this test (override: FLEETMQ_BIN).
pub fn fleetmq_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("FLEETMQ_BIN") {
        return PathBuf::from(bin);
    }
    // Test binaries live in target/<profile>/deps/; the binary one level up.
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("fleetmq");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p fleetmq` (nextest --workspace does)",
        bin.display()
    );
    bin
}

/// A `fleetmq` command with a clean environment: no FLEETMQ_* from the caller.
pub fn fleetmq(cwd: &Path) -> Command {
    let mut cmd = Command::new(fleetmq_bin());
    cmd.current_dir(cwd).kill_on_drop(true).stdin(Stdio::null());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FLEETMQ_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    // Never the real MQTT ports: this machine runs a reference Mosquitto on
    // 1883, and tests run in parallel. A test's own flag or env still wins.
    for key in [
        "FLEETMQ_MQTT_LISTEN",
        "FLEETMQ_MQTTS_LISTEN",
        "FLEETMQ_WS_LISTEN",
    ] {
        cmd.env(key, "127.0.0.1:0");
    }
    cmd
}

/// Runs a command that is expected to exit by itself.
pub async fn run_to_exit(mut cmd: Command) -> Result<Finished> {
    let output = tokio::time::timeout(
        START_TIMEOUT,
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output(),
    )
    .await
    .context("command did not exit in time")??;
    Ok(Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The one error line the binary prints on failure (log lines may precede
/// it); panics unless there is exactly one and nothing panicked.
pub fn error_line(stderr: &str) -> &str {
    assert!(!stderr.contains("panicked"), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("fleetmq: error: "))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one error line expected in:\n{stderr}"
    );
    lines[0]
}

#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A running server.
pub struct Server {
    child: Child,
    pub http: SocketAddr,
    pub stdout: Vec<String>,
    stderr: mpsc::UnboundedReceiver<String>,
}

impl Server {
    /// Starts `fleetmq serve <args>` in `cwd` and waits for its ready line.
    pub async fn start(mut cmd: Command) -> Result<Server> {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().context("spawn fleetmq")?;
        let (stderr_tx, stderr) = mpsc::unbounded_channel();
        let mut err_lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err_lines.next_line().await {
                if stderr_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut out_lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut stdout = Vec::new();
        let http = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = out_lines.next_line().await? {
                stdout.push(line.clone());
                if let Some(addr) = line.strip_prefix(READY_LINE) {
                    return Ok::<_, anyhow::Error>(Some(addr.trim().parse::<SocketAddr>()?));
                }
            }
            Ok(None)
        })
        .await
        .context("no ready line within 60 s")??;
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = out_lines.next_line().await {} });
        let mut server = Server {
            child,
            http: SocketAddr::from(([0, 0, 0, 0], 0)),
            stdout,
            stderr,
        };
        match http {
            Some(addr) => {
                server.http = loopback(addr);
                Ok(server)
            }
            None => {
                let status = server.child.wait().await?;
                bail!(
                    "fleetmq exited ({status}) before listening:\n{}",
                    server.drain_stderr().join("\n")
                )
            }
        }
    }

    /// What the server printed after `prefix` on a line of its own.
    fn printed(&self, prefix: &str) -> &str {
        self.stdout
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no '{prefix}' line in {:?}", self.stdout))
            .trim()
    }

    /// The MQTT (TCP) address the server printed.
    pub fn mqtt(&self) -> SocketAddr {
        loopback(self.printed(MQTT_LINE).parse().expect("mqtt address"))
    }

    /// The MQTT over TLS address the server printed.
    pub fn mqtts(&self) -> SocketAddr {
        loopback(self.printed(MQTTS_LINE).parse().expect("mqtts address"))
    }

    /// The certificate an MQTT/TLS client should trust, as printed.
    pub fn mqtts_ca_file(&self) -> PathBuf {
        PathBuf::from(self.printed(MQTTS_CA_LINE))
    }

    /// The MQTT over WebSocket address the server printed (path /mqtt).
    pub fn ws(&self) -> SocketAddr {
        loopback(self.printed(WS_LINE).parse().expect("mqtt-ws address"))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub async fn get(&self, path: &str) -> Result<reqwest::Response> {
        Ok(reqwest::Client::new()
            .get(self.url(path))
            .timeout(Duration::from_secs(10))
            .send()
            .await?)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// The status `/readyz` answers with.
    pub async fn readyz(&self) -> u16 {
        self.get("/readyz")
            .await
            .expect("/readyz")
            .status()
            .as_u16()
    }

    /// Polls `/readyz` until it answers `status` (within [`START_TIMEOUT`]);
    /// returns the wait.
    pub async fn readyz_becomes(&self, status: u16) -> Duration {
        let start = tokio::time::Instant::now();
        poll_until(
            START_TIMEOUT,
            &format!("/readyz {status}"),
            async || match self.readyz().await {
                answer if answer == status => Ok(()),
                answer => Err(format!("/readyz answered {answer}")),
            },
        )
        .await;
        start.elapsed()
    }

    /// The node's `mqtt_connections` gauge: MQTT clients it holds now.
    pub async fn mqtt_connections(&self) -> f64 {
        let text = self.get("/metrics").await.unwrap().text().await.unwrap();
        metric(&text, "mqtt_connections", &[])
    }

    /// Sends a real signal, as Ctrl-C or a service manager would.
    pub async fn signal(&self, name: &str) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .await?;
        if !status.success() {
            bail!("kill -{name} failed");
        }
        Ok(())
    }

    /// `kill -9`: nothing is flushed, nothing is said to the clients.
    pub async fn kill_9(&mut self) -> Result<()> {
        self.signal("KILL").await?;
        let status = self.wait(Duration::from_secs(20)).await?;
        if status.success() {
            bail!("killed, yet it exited cleanly: {status}");
        }
        Ok(())
    }

    /// Whether the process is still running (not killed, not exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit by itself.
    pub async fn wait(&mut self, within: Duration) -> Result<ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .map_err(|_| anyhow!("fleetmq did not exit within {within:?}"))?
            .map_err(Into::into)
    }

    /// Stops with SIGINT and asserts a clean exit.
    pub async fn stop(mut self) -> Result<Vec<String>> {
        self.signal("INT").await?;
        let status = self.wait(Duration::from_secs(20)).await?;
        let stderr = self.drain_stderr();
        if !status.success() {
            bail!("fleetmq exited with {status}:\n{}", stderr.join("\n"));
        }
        Ok(stderr)
    }

    /// Everything the server wrote to stderr so far.
    pub fn drain_stderr(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.stderr.try_recv() {
            lines.push(line);
        }
        lines
    }
}

/// Starts `fleetmq serve --allow-anonymous interop` in `cwd` on port 0
/// everywhere, with `extra` flags.
pub async fn start_anonymous(cwd: &Path, extra: &[&str]) -> Result<Server> {
    let mut cmd = fleetmq(cwd);
    cmd.args([
        "serve",
        "--http-listen",
        "127.0.0.1:0",
        "--allow-anonymous",
        "interop",
    ])
    .args(extra);
    Server::start(cmd).await
}

/// [`start_anonymous`] in a fresh temporary directory, kept alive with it.
pub async fn anonymous_server() -> (tempfile::TempDir, Server) {
    let cwd = tempfile::tempdir().expect("temp dir");
    let server = start_anonymous(cwd.path(), &[])
        .await
        .expect("fleetmq starts");
    (cwd, server)
}

/// tests/interop: the scripts driving clients we did not write.
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr.ip().is_unspecified() {
        true => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        false => addr,
    }
}

/// The resident set size of process `pid` in bytes (VmRSS in
/// /proc/PID/status), to state what an attack cost the server.
pub fn vm_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .expect("VmRSS line")
}

/// The value of the series `name` with all of `labels` (0 if absent;
/// no labels also finds a series without any).
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits (within [`API_WAIT`]) until the servers' MQTT connection counts
/// satisfy `want`; returns them.
pub async fn wait_connections(
    servers: &[&Server],
    want: impl Fn(&[f64]) -> bool,
    what: &str,
) -> Vec<f64> {
    poll_until(API_WAIT, what, async || {
        let mut counts = Vec::new();
        for s in servers {
            counts.push(s.mqtt_connections().await);
        }
        match want(&counts) {
            true => Ok(counts),
            false => Err(format!("connections per node {counts:?}")),
        }
    })
    .await
}

/// Runs `probe` every 100 ms until it is `Ok` (returned), at most for
/// `bound`; then panics with `what` and the last `Err` (what was seen).
pub async fn poll_until<T>(
    bound: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> std::result::Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match probe().await {
            Ok(done) => return done,
            Err(seen) => assert!(
                tokio::time::Instant::now() < deadline,
                "{what} within {bound:?}: {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fresh databases per test, shared with the store's own conformance suite.
pub use store::testing::TestDb;

/// A JWT minted by `fleetmq admin token <args>` in `cwd` (next to a running
/// server: admin does not need the data dir's lock).
pub async fn admin_token(cwd: &Path, args: &[&str]) -> String {
    let mut cmd = fleetmq(cwd);
    cmd.args(["admin", "token"]).args(args);
    let out = run_to_exit(cmd).await.unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let token = out.stdout.trim().to_owned();
    assert_eq!(
        token.split('.').count(),
        3,
        "a JWT alone on stdout: {token}"
    );
    token
}

/// `fleetmq serve` in `cwd` on ephemeral ports, on the database `db_args`
/// name (none: the embedded SQLite in `cwd`), plus `extra` flags, and a
/// platform-admin token for it.
pub async fn platform_server(cwd: &Path, db_args: &[&str], extra: &[&str]) -> (Server, String) {
    let mut cmd = fleetmq(cwd);
    cmd.args(["serve", "--http-listen", "127.0.0.1:0"])
        .args(db_args)
        .args(extra);
    let server = Server::start(cmd).await.unwrap();
    let token = admin_token(cwd, &[&["--role", "platform-admin"], db_args].concat()).await;
    (server, token)
}

/// Runs each `async fn name(db_args: &[&str])` twice, as `name::sqlite`
/// (the embedded default: no database flag) and `name::postgres` (a fresh
/// database of its own; skipped, saying why, without TEST_DATABASE_URL).
#[macro_export]
macro_rules! binary_backend_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[::tokio::test]
                async fn sqlite() {
                    super::$name(&[]).await;
                }

                #[::tokio::test]
                async fn postgres() {
                    let Some(db) = $crate::TestDb::postgres_unmigrated().await else {
                        return;
                    };
                    super::$name(&["--database-url", db.url()]).await;
                    db.cleanup().await;
                }
            }
        )+
    };
}

/// How long one REST call or a polled condition may take in these tests.
pub const API_WAIT: Duration = Duration::from_secs(20);

/// The REST API as one caller (a bearer token) sees it.
pub struct Api {
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    /// `server`'s API with `token`.
    pub fn new(server: &Server, token: impl Into<String>) -> Api {
        Api {
            base: server.url(""),
            token: token.into(),
            http: reqwest::Client::new(),
        }
    }

    /// The same API with another token.
    pub fn with_token(&self, token: impl Into<String>) -> Api {
        Api {
            base: self.base.clone(),
            token: token.into(),
            http: self.http.clone(),
        }
    }

    /// Any call: the status and the body (JSON, else the text as a JSON
    /// string, `null` when empty).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let (status, _, body) = self.call_typed(method, path, body).await;
        (status, body)
    }

    /// [`Api::call`] with the response's content type in the middle.
    pub async fn call_typed(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, String, serde_json::Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .timeout(API_WAIT);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = res.text().await.unwrap();
        let body = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        (status, content_type, body)
    }

    /// A call that must succeed (2xx); its body.
    pub async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let (status, got) = self.call(method.clone(), path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {got}"
        );
        got
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        self.ok(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        self.ok(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        self.ok(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> serde_json::Value {
        self.ok(reqwest::Method::DELETE, path, None).await
    }

    /// Polls `path` until `done` holds for its body; `what` says what was
    /// awaited when it never does.
    pub async fn wait_for(
        &self,
        path: &str,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        poll_until(API_WAIT, what, async || {
            let body = self.get(path).await;
            match done(&body) {
                true => Ok(body),
                false => Err(format!("at {path}: {body}")),
            }
        })
        .await
    }

    /// Creates device `device` in `tenant` with a password; returns its
    /// MQTT user name and password.
    pub async fn password_device(&self, tenant: &str, device: &str) -> (String, String) {
        self.post(
            &format!("/v1/tenants/{tenant}/devices"),
            serde_json::json!({ "id": device }),
        )
        .await;
        let pw = self
            .post(
                &format!("/v1/tenants/{tenant}/devices/{device}/password"),
                serde_json::json!({}),
            )
            .await;
        let username = pw["username"].as_str().unwrap().to_owned();
        assert_eq!(username, format!("{device}@{tenant}"));
        (username, pw["password"].as_str().unwrap().to_owned())
    }
}

/// The default device policy, plus (`alerts`) a subscription to
/// `alerts/#`: the policy the narrowing tests put and then take back.
pub fn alerts_policy(alerts: bool) -> serde_json::Value {
    let mut subscribe = vec!["commands/${device}/#"];
    if alerts {
        subscribe.push("alerts/#");
    }
    serde_json::json!({ "rules": [
        { "effect": "allow", "action": "publish", "filters": ["devices/${device}/#"] },
        { "effect": "allow", "action": "subscribe", "filters": subscribe },
    ]})
}
