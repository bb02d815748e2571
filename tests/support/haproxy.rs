//! [`Haproxy`]: the real HAProxy running deploy/haproxy.cfg in front of
//! three nodes started by a test, on free loopback ports. The config reads
//! every address from the environment (see its header); this sets them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::process::{Child, Command};

use crate::{API_WAIT, START_TIMEOUT, Server, poll_until};

/// deploy/haproxy.cfg in this checkout.
pub fn config_path() -> PathBuf {
    repo_root().join("deploy/haproxy.cfg")
}

/// The repository root (tests/ is one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// One backend node's four listeners, as HAProxy's NODEn_* variables name them.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    pub mqtt: SocketAddr,
    pub mqtts: SocketAddr,
    pub ws: SocketAddr,
    pub http: SocketAddr,
}

impl Node {
    pub fn of(server: &Server) -> Node {
        Node {
            mqtt: server.mqtt(),
            mqtts: server.mqtts(),
            ws: server.ws(),
            http: server.http,
        }
    }

    /// The first three of `servers`, as node1..node3.
    pub fn three(servers: &[Server]) -> [Node; 3] {
        [
            Node::of(&servers[0]),
            Node::of(&servers[1]),
            Node::of(&servers[2]),
        ]
    }
}

/// Where HAProxy listens (its LB_*_BIND variables).
#[derive(Debug, Clone, Copy)]
pub struct Frontends {
    pub mqtt: SocketAddr,
    pub mqtts: SocketAddr,
    pub ws: SocketAddr,
    pub http: SocketAddr,
}

/// Every variable deploy/haproxy.cfg reads, for these frontends and nodes.
pub fn env(front: &Frontends, nodes: &[Node; 3]) -> Vec<(String, String)> {
    let mut vars = vec![
        ("LB_MQTT_BIND".to_owned(), front.mqtt.to_string()),
        ("LB_MQTTS_BIND".to_owned(), front.mqtts.to_string()),
        ("LB_WS_BIND".to_owned(), front.ws.to_string()),
        ("LB_HTTP_BIND".to_owned(), front.http.to_string()),
    ];
    for (i, node) in nodes.iter().enumerate() {
        let n = i + 1;
        vars.push((format!("NODE{n}_MQTT"), node.mqtt.to_string()));
        vars.push((format!("NODE{n}_MQTTS"), node.mqtts.to_string()));
        vars.push((format!("NODE{n}_WS"), node.ws.to_string()));
        vars.push((format!("NODE{n}_HTTP"), node.http.to_string()));
    }
    vars
}

/// Four loopback ports nobody listens on right now. Another process may
/// take one before HAProxy binds it: [`Haproxy::start`] then tries again.
fn free_frontends() -> Result<Frontends> {
    let listeners = (0..4)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let addr = |i: usize| listeners[i].local_addr();
    Ok(Frontends {
        mqtt: addr(0)?,
        mqtts: addr(1)?,
        ws: addr(2)?,
        http: addr(3)?,
    })
}

/// A running `haproxy -f deploy/haproxy.cfg`, killed when dropped.
pub struct Haproxy {
    child: Child,
    pub front: Frontends,
    /// Holds stderr.log: HAProxy's alerts and server state changes.
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts HAProxy in front of `nodes` (the same node may stand for
    /// several) and waits until its HTTP frontend answers `/readyz` with 200
    /// through a node.
    pub async fn start(nodes: &[Node; 3]) -> Result<Haproxy> {
        let mut last_error = None;
        for _attempt in 0..5 {
            let front = free_frontends()?;
            let dir = tempfile::tempdir()?;
            let stderr = std::fs::File::create(dir.path().join("stderr.log"))?;
            let mut cmd = Command::new("haproxy");
            // -db: foreground, no daemon; logs go to stdout (global "log stdout").
            cmd.arg("-db")
                .arg("-f")
                .arg(config_path())
                .envs(env(&front, nodes))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .kill_on_drop(true);
            let child = cmd
                .spawn()
                .context("spawn haproxy (Debian package haproxy; .ci/deps installs it)")?;
            let mut proxy = Haproxy { child, front, dir };
            match proxy.wait_ready().await {
                Ok(()) => return Ok(proxy),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("haproxy did not start")))
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let http = reqwest::Client::new();
        let url = self.url("/readyz");
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("haproxy exited ({status}):\n{}", self.stderr());
            }
            let answer = http.get(&url).timeout(Duration::from_secs(5)).send().await;
            if answer.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("haproxy did not answer {url} with 200 within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What HAProxy printed on stderr so far (alerts, servers going down/up).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Waits (within [`API_WAIT`]) until HAProxy's stderr has `line`
    /// (e.g. "http_nodes/node1 is DOWN": its health check changed its mind)
    /// after its first `since` bytes (see [`Haproxy::stderr`]).
    pub async fn wait_log(&self, line: &str, since: usize) {
        poll_until(API_WAIT, &format!("haproxy logs {line:?}"), async || {
            let log = self.stderr();
            match log.get(since..).is_some_and(|s| s.contains(line)) {
                true => Ok(()),
                false => Err(format!("its log:\n{log}")),
            }
        })
        .await
    }

    /// A URL on HAProxy's HTTP frontend.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.front.http, path)
    }
}
