//! Issue 15, the cluster's foundation: nodes of the real binary on one
//! Postgres database with NATS between them, against a `nats-server` each
//! test starts on a free port. What is checked: a cluster needs Postgres;
//! node names are unique among live nodes; every node needs the first
//! node's key-encryption key (and never makes a second root CA); `/readyz`
//! follows the NATS connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use cluster::testing::NatsServer as Nats;
use fleetmq_tests::cluster::{NodeDir, write_private};
use fleetmq_tests::{Server, TestDb, error_line, fleetmq, run_to_exit};

/// A generous bound on anything polled here (NATS reconnects back off to 4 s).
const POLL_BOUND: Duration = Duration::from_secs(60);

/// A fresh Postgres database, or `None` (the test is skipped, saying so)
/// when none is configured: a cluster needs Postgres.
async fn postgres() -> Option<TestDb> {
    TestDb::postgres_unmigrated().await
}

/// Polls `/readyz` until it answers `status`; returns its body.
async fn readyz_becomes(server: &Server, status: u16) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + POLL_BOUND;
    loop {
        if let Ok(response) = server.get("/readyz").await
            && response.status().as_u16() == status
        {
            return response.json().await.unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_cluster_on_sqlite_is_refused_in_one_line() {
    let dir = NodeDir::new();
    let mut cmd = fleetmq(dir.path());
    // No NATS is needed to be refused: the settings are checked first.
    cmd.args([
        "serve",
        "--http-listen",
        "127.0.0.1:0",
        "--nats-url",
        "nats://127.0.0.1:4222",
    ]);
    let out = run_to_exit(cmd).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let line = error_line(&out.stderr);
    assert!(
        line.contains("--nats-url") && line.contains("PostgreSQL"),
        "{line}"
    );
    // The same through the environment, with an explicit SQLite URL.
    let mut cmd = fleetmq(dir.path());
    cmd.args(["serve", "--http-listen", "127.0.0.1:0"])
        .env("FLEETMQ_NATS_URL", "nats://127.0.0.1:4222")
        .env("FLEETMQ_DATABASE_URL", "sqlite://x.db");
    let out = run_to_exit(cmd).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(error_line(&out.stderr).contains("PostgreSQL"));
    assert!(!dir.data().exists(), "nothing was created");
}

#[tokio::test]
async fn a_node_name_in_use_is_refused_while_its_node_lives() {
    let Some(db) = postgres().await else { return };
    let nats = Nats::start().await;
    let (a, b) = (NodeDir::new(), NodeDir::new());
    let first = Server::start(a.serve(&db, &nats, &["--node-name", "edge-1"]))
        .await
        .unwrap();
    b.copy_kek_from(&a.kek());

    let out = run_to_exit(b.serve(&db, &nats, &["--node-name", "edge-1"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let line = error_line(&out.stderr);
    assert!(
        line.contains("'edge-1'") && line.contains("--node-name"),
        "{line}"
    );

    // Another name joins beside it.
    let second = Server::start(b.serve(&db, &nats, &["--node-name", "edge-2"]))
        .await
        .unwrap();
    readyz_becomes(&second, 200).await;
    second.stop().await.unwrap();

    // A clean stop frees the name at once.
    first.stop().await.unwrap();
    let again = Server::start(b.serve(&db, &nats, &["--node-name", "edge-1"]))
        .await
        .unwrap();
    readyz_becomes(&again, 200).await;
    again.stop().await.unwrap();
    db.cleanup().await;
}

#[tokio::test]
async fn every_node_needs_the_first_nodes_key_encryption_key() {
    let Some(db) = postgres().await else { return };
    let nats = Nats::start().await;
    let first_dir = NodeDir::new();
    let first = Server::start(first_dir.serve(&db, &nats, &[]))
        .await
        .unwrap();
    let root_pem = std::fs::read_to_string(first.mqtts_ca_file()).unwrap();

    // No key at all: refused, and no key of its own is made.
    let keyless = NodeDir::new();
    let out = run_to_exit(keyless.serve(&db, &nats, &[])).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let line = error_line(&out.stderr);
    assert!(
        line.contains("no key-encryption key") && line.contains("kek.hex"),
        "{line}"
    );
    assert!(!keyless.kek().exists(), "a refused node made a key");

    // Another key: refused.
    let other = NodeDir::new();
    let mut random = [0u8; 32];
    random
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = i as u8);
    std::fs::create_dir_all(other.data()).unwrap();
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&other.kek(), hex.as_bytes());
    let out = run_to_exit(other.serve(&db, &nats, &[])).await.unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let line = error_line(&out.stderr);
    assert!(
        line.contains("is not the one that sealed the platform root CA")
            && line.contains("--kek-file"),
        "{line}"
    );

    // The same key, copied into the data dir: joins, same root CA.
    let copied = NodeDir::new();
    copied.copy_kek_from(&first_dir.kek());
    let second = Server::start(copied.serve(&db, &nats, &[])).await.unwrap();
    readyz_becomes(&second, 200).await;
    assert_eq!(
        std::fs::read_to_string(second.mqtts_ca_file()).unwrap(),
        root_pem
    );

    // The same key given with --kek-file: joins too.
    let given = NodeDir::new();
    let kek_file = given.path().join("the-key");
    write_private(&kek_file, &std::fs::read(first_dir.kek()).unwrap());
    let third = Server::start(given.serve(&db, &nats, &["--kek-file", kek_file.to_str().unwrap()]))
        .await
        .unwrap();
    readyz_becomes(&third, 200).await;
    assert_eq!(
        std::fs::read_to_string(third.mqtts_ca_file()).unwrap(),
        root_pem
    );
    assert!(!given.kek().exists(), "--kek-file is used, not copied");

    for server in [first, second, third] {
        server.stop().await.unwrap();
    }
    db.cleanup().await;
}

#[tokio::test]
async fn readyz_follows_the_nats_connection() {
    let Some(db) = postgres().await else { return };
    let mut nats = Nats::start().await;
    let dir = NodeDir::new();
    let server = Server::start(dir.serve(&db, &nats, &[])).await.unwrap();
    let ready = readyz_becomes(&server, 200).await;
    assert_eq!(ready["database"], "postgres", "{ready}");

    nats.kill().await;
    let down = readyz_becomes(&server, 503).await;
    let detail = down["detail"].as_str().unwrap();
    assert!(detail.contains("NATS"), "{detail}");
    // Liveness does not depend on NATS.
    assert_eq!(server.get("/healthz").await.unwrap().status(), 200);

    nats.restart().await;
    readyz_becomes(&server, 200).await;
    server.stop().await.unwrap();
    db.cleanup().await;
}
