//! A real `nats-server -js` for tests (feature `testing`): Debian's
//! `/usr/sbin/nats-server` (.ci/deps installs it) on a free loopback port,
//! its JetStream store in a temporary directory that outlives restarts, so
//! a test can kill it and start it again on the same port.

// Test support: a failed setup must fail the test, loudly.
#![allow(clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Debian's nats-server.
pub const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// How long the server may take to say it is ready.
const READY_BOUND: Duration = Duration::from_secs(60);

pub struct NatsServer {
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts one on a free port and waits until it is ready.
    pub async fn start() -> NatsServer {
        assert!(
            Path::new(NATS_SERVER).exists(),
            "{NATS_SERVER} is missing: `source .ci/deps` installs it (Debian package nats-server)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = NatsServer {
            port,
            store: tempfile::tempdir().expect("a temporary directory"),
            child: None,
        };
        server.restart().await;
        server
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port and store; waits until ready.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let mut child = Command::new(NATS_SERVER)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let mut seen = Vec::new();
        let ready = tokio::time::timeout(READY_BOUND, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let ready = line.contains("Server is ready");
                seen.push(line);
                if ready {
                    return true;
                }
            }
            false
        })
        .await;
        if !matches!(ready, Ok(true)) {
            panic!("nats-server did not get ready:\n{}", seen.join("\n"));
        }
        // Its log keeps being read so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.child = Some(child);
    }

    /// Kills it outright, as a crash would.
    pub async fn kill(&mut self) {
        let mut child = self.child.take().expect("nats-server is running");
        child.kill().await.expect("nats-server is killed");
    }
}
