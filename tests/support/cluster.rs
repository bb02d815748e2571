//! Nodes of the real binary as one cluster (issue 15): each node's working
//! directory with the first node's key-encryption key, on one Postgres
//! database and a private `nats-server` (`cluster::testing`).

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cluster::testing::NatsServer as Nats;
use tokio::process::Command;

use crate::proxy::TcpProxy;
use crate::{Server, TestDb, fleetmq};

/// One node's working directory; its data dir is `fleetmq-data` inside.
pub struct NodeDir(pub tempfile::TempDir);

impl Default for NodeDir {
    fn default() -> Self {
        NodeDir::new()
    }
}

impl NodeDir {
    pub fn new() -> NodeDir {
        NodeDir(tempfile::tempdir().expect("temp dir"))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    pub fn data(&self) -> PathBuf {
        self.0.path().join("fleetmq-data")
    }

    pub fn kek(&self) -> PathBuf {
        self.data().join("kek.hex")
    }

    /// `fleetmq serve` as a cluster member on `db` and `nats`.
    pub fn serve(&self, db: &TestDb, nats: &Nats, extra: &[&str]) -> Command {
        self.serve_on(db, &nats.url(), extra)
    }

    /// `fleetmq serve` as a cluster member on `db` and the NATS at
    /// `nats_url` (e.g. through a proxy the test can cut).
    pub fn serve_on(&self, db: &TestDb, nats_url: &str, extra: &[&str]) -> Command {
        let mut cmd = fleetmq(self.0.path());
        cmd.args(["serve", "--http-listen", "127.0.0.1:0"])
            .args(["--database-url", db.url(), "--nats-url", nats_url])
            .args(extra);
        cmd
    }

    /// Puts a copy of `kek` (a key file) into this node's data dir, 0600.
    pub fn copy_kek_from(&self, kek: &Path) {
        std::fs::create_dir_all(self.data()).expect("data dir");
        std::fs::set_permissions(self.data(), std::fs::Permissions::from_mode(0o700))
            .expect("data dir mode");
        write_private(&self.kek(), &std::fs::read(kek).expect("kek"));
    }
}

/// Writes `contents` to `path`, readable by the owner only.
pub fn write_private(path: &Path, contents: &[u8]) {
    std::fs::write(path, contents).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("mode");
}

/// The host:port of `nats` (to put a [`TcpProxy`] in front of it).
pub fn nats_addr(nats: &Nats) -> SocketAddr {
    nats.url()
        .trim_start_matches("nats://")
        .parse()
        .expect("nats address")
}

/// `n` nodes started one after the other (the first makes the key the
/// others copy), each with `extra` flags, on a fresh Postgres database and
/// a private NATS; `None` (the test is skipped, saying so) without a
/// Postgres to test on.
pub struct Nodes {
    pub nodes: Vec<Server>,
    pub dirs: Vec<NodeDir>,
    pub nats: Nats,
    pub db: TestDb,
}

impl Nodes {
    pub async fn start(n: usize, extra: &[&str]) -> Option<Nodes> {
        Some(Nodes::launch(n, extra, false).await?.0)
    }

    /// As [`Nodes::start`], but node 1 reaches NATS through a [`TcpProxy`]
    /// the test can cut (a node partitioned from the cluster).
    pub async fn start_first_cuttable(n: usize, extra: &[&str]) -> Option<(Nodes, TcpProxy)> {
        let (nodes, proxy) = Nodes::launch(n, extra, true).await?;
        Some((nodes, proxy.expect("proxy started")))
    }

    async fn launch(
        n: usize,
        extra: &[&str],
        cut_first: bool,
    ) -> Option<(Nodes, Option<TcpProxy>)> {
        let db = TestDb::postgres_unmigrated().await?;
        let nats = Nats::start().await;
        let proxy = match cut_first {
            true => Some(TcpProxy::start(nats_addr(&nats)).await),
            false => None,
        };
        let mut nodes = Vec::with_capacity(n);
        let mut dirs: Vec<NodeDir> = Vec::with_capacity(n);
        for i in 0..n {
            let dir = NodeDir::new();
            if let Some(first) = dirs.first() {
                dir.copy_kek_from(&first.kek());
            }
            let nats_url = match (&proxy, i) {
                (Some(proxy), 0) => format!("nats://{}", proxy.addr()),
                _ => nats.url(),
            };
            let name = format!("node-{}", i + 1);
            let server = Server::start(dir.serve_on(
                &db,
                &nats_url,
                &[&["--node-name", &name], extra].concat(),
            ))
            .await
            .expect("node starts");
            nodes.push(server);
            dirs.push(dir);
        }
        let nodes = Nodes {
            nodes,
            dirs,
            nats,
            db,
        };
        Some((nodes, proxy))
    }

    /// Node `i` (0-based).
    pub fn node(&self, i: usize) -> &Server {
        &self.nodes[i]
    }

    /// Node `i`'s `/metrics` text.
    pub async fn metrics(&self, i: usize) -> String {
        self.nodes[i]
            .get("/metrics")
            .await
            .expect("/metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// `kill -9` of node `i` (0-based); the others keep their numbers.
    pub async fn kill_9(&mut self, i: usize) {
        self.nodes[i].kill_9().await.expect("kill -9");
    }

    /// Stops every node still running and drops the database.
    pub async fn stop(self) {
        for mut server in self.nodes {
            if server.running() {
                server.stop().await.expect("clean stop");
            }
        }
        self.db.cleanup().await;
    }
}
