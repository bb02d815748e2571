//! `fleetmq serve` as a newcomer meets it: start with no setup, answer health
//! checks, stop cleanly on a signal, come back on the same data, and refuse to
//! share a data directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use fleetmq_tests::{Server, TestDb, error_line, fleetmq, run_to_exit};

async fn assert_healthy(server: &Server, backend: &str) {
    let health = server.get("/healthz").await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = server.get("/readyz").await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["database"], backend, "{body}");
}

#[tokio::test]
async fn sqlite_default_starts_answers_stops_and_restarts_on_the_same_data() {
    let cwd = tempfile::tempdir().unwrap();
    let start = || {
        let mut cmd = fleetmq(cwd.path());
        cmd.args(["serve", "--http-listen", "127.0.0.1:0"]);
        cmd
    };

    let server = Server::start(start()).await.unwrap();
    assert_healthy(&server, "sqlite").await;
    let data = cwd.path().join("fleetmq-data");
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let db = data.join("fleetmq.db");
    assert!(
        db.exists(),
        "the embedded database is in the default data dir"
    );
    let metrics = server.get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    server.stop().await.unwrap();

    // The same data comes back: nothing to migrate the second time.
    let inode = std::fs::metadata(&db)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    let server = Server::start(start()).await.unwrap();
    assert_healthy(&server, "sqlite").await;
    let stderr = server.stop().await.unwrap().join("\n");
    assert!(stderr.contains("newly_applied=0"), "{stderr}");
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&db).unwrap()),
        inode
    );
}

#[tokio::test]
async fn sigterm_is_a_clean_stop_too() {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = fleetmq(cwd.path());
    cmd.args([
        "serve",
        "--http-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]);
    let mut server = Server::start(cmd).await.unwrap();
    server.signal("TERM").await.unwrap();
    let status = server.wait(Duration::from_secs(20)).await.unwrap();
    assert!(status.success(), "{status}");
    let lines = server.drain_stderr();
    // --log-format json: every log line is a JSON object.
    assert!(!lines.is_empty());
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value.get("level").is_some(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("SIGTERM")), "{lines:?}");
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    let cwd = tempfile::tempdir().unwrap();
    let mut first = fleetmq(cwd.path());
    first.args(["serve", "--http-listen", "127.0.0.1:0"]);
    let server = Server::start(first).await.unwrap();

    let mut second = fleetmq(cwd.path());
    second.args(["serve", "--http-listen", "127.0.0.1:0"]);
    let out = run_to_exit(second).await.unwrap();
    assert!(!out.status.success());
    let line = error_line(&out.stderr);
    assert!(
        line.contains("already in use") && line.contains(&server.pid().to_string()),
        "{line}"
    );
    assert!(line.contains("--data-dir"), "{line}");

    // The first one is unharmed.
    assert_eq!(server.get("/readyz").await.unwrap().status(), 200);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_taken_port_names_the_port_and_how_to_change_it() {
    let cwd = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut cmd = fleetmq(cwd.path());
    cmd.args(["serve", "--http-listen", &addr.to_string()]);
    let out = run_to_exit(cmd).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let line = error_line(&out.stderr);
    assert!(
        line.contains(&format!("port {} is already in use", addr.port())),
        "{line}"
    );
    assert!(
        line.contains("--http-listen") && line.contains("FLEETMQ_HTTP_LISTEN"),
        "{line}"
    );
}

#[tokio::test]
async fn postgres_starts_answers_stops_and_restarts() {
    // An empty database of its own: the binary migrates it. Skipped (with a
    // printed line) when no Postgres is configured.
    let Some(db) = TestDb::postgres_unmigrated().await else {
        return;
    };
    let cwd = tempfile::tempdir().unwrap();
    let start = || {
        let mut cmd = fleetmq(cwd.path());
        cmd.args([
            "serve",
            "--http-listen",
            "127.0.0.1:0",
            "--database-url",
            db.url(),
        ]);
        cmd
    };
    let server = Server::start(start()).await.unwrap();
    assert_healthy(&server, "postgres").await;
    server.stop().await.unwrap();
    let server = Server::start(start()).await.unwrap();
    assert_healthy(&server, "postgres").await;
    let stderr = server.stop().await.unwrap().join("\n");
    assert!(stderr.contains("newly_applied=0"), "{stderr}");
    db.cleanup().await;
}

#[tokio::test]
async fn migrate_then_serve_and_refuse_a_newer_database() {
    let cwd = tempfile::tempdir().unwrap();
    let mut migrate = fleetmq(cwd.path());
    migrate.arg("migrate");
    let out = run_to_exit(migrate).await.unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("schema version"), "{}", out.stdout);

    // A database written by a future fleetmq.
    let db = cwd.path().join("fleetmq-data/fleetmq.db");
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}",
        db.display()
    ))
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99999999999999, 'from the future', 1, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::Connection::close(conn).await.unwrap();

    let mut serve = fleetmq(cwd.path());
    serve.args(["serve", "--http-listen", "127.0.0.1:0"]);
    let out = run_to_exit(serve).await.unwrap();
    assert!(!out.status.success());
    let line = error_line(&out.stderr);
    assert!(
        line.contains("99999999999999") && line.contains("upgrade"),
        "{line}"
    );
}
