//! The REST API through the real binary: an operator mints tokens with
//! `fleetmq admin token` next to a running server and manages the fleet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fleetmq_tests::{Server, admin_token, error_line, fleetmq, run_to_exit};
use serde_json::{Value, json};

#[tokio::test]
async fn tokens_from_the_cli_manage_tenants_and_devices() {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = fleetmq(cwd.path());
    cmd.args(["serve", "--http-listen", "127.0.0.1:0"]);
    let server = Server::start(cmd).await.unwrap();
    let http = reqwest::Client::new();

    // Minted while the server holds the data dir: admin does not need the lock.
    let platform = admin_token(cwd.path(), &["--role", "platform-admin"]).await;
    let created = http
        .post(server.url("/v1/tenants"))
        .bearer_auth(&platform)
        .json(&json!({"id": "acme", "name": "Acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().await.unwrap());

    let operator = admin_token(
        cwd.path(),
        &["--role", "operator", "--tenant", "acme", "--ttl", "15m"],
    )
    .await;
    let device = http
        .post(server.url("/v1/tenants/acme/devices"))
        .bearer_auth(&operator)
        .json(&json!({"id": "pump-1", "labels": {"site": "north"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(device.status(), 201, "{}", device.text().await.unwrap());

    let viewer = admin_token(cwd.path(), &["--role", "viewer", "--tenant", "acme"]).await;
    let list: Value = http
        .get(server.url("/v1/tenants/acme/devices?label=site=north"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"][0]["id"], "pump-1", "{list}");
    assert_eq!(list["next_cursor"], Value::Null);
    let denied = http
        .delete(server.url("/v1/tenants/acme/devices/pump-1"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    assert_eq!(denied.headers()["content-type"], "application/problem+json");

    let spec: Value = server
        .get("/openapi.json")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(spec["openapi"], "3.1.0");

    // A token for a tenant that does not exist is refused with what to do.
    let mut cmd = fleetmq(cwd.path());
    cmd.args(["admin", "token", "--role", "viewer", "--tenant", "nope-co"]);
    let out = run_to_exit(cmd).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        error_line(&out.stderr).contains("tenant 'nope-co' does not exist"),
        "{}",
        out.stderr
    );

    let mut cmd = fleetmq(cwd.path());
    cmd.args(["admin", "token", "--role", "operator"]);
    let out = run_to_exit(cmd).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        error_line(&out.stderr).contains("--tenant"),
        "{}",
        out.stderr
    );

    server.stop().await.unwrap();
}
