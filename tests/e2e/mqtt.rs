//! MQTT through the real binary with clients we did not write (the Debian
//! mosquitto_pub / mosquitto_sub): anonymous mode delivers, and without it
//! a client with no credentials is refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fleetmq_tests::{Server, fleetmq, run_to_exit};
use tokio::process::Command;

fn mosquitto(tool: &str, port: u16) -> Command {
    let mut cmd = Command::new(tool);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv5"])
        .kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn anonymous_mode_delivers_between_mosquitto_clients_and_stops_cleanly() {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = fleetmq(cwd.path());
    cmd.args([
        "serve",
        "--http-listen",
        "127.0.0.1:0",
        "--allow-anonymous",
        "dev-fleet",
    ]);
    let server = Server::start(cmd).await.unwrap();
    let port = server.mqtt().port();

    // A retained QoS 1 message, then a subscriber that must receive it.
    let mut publish = mosquitto("mosquitto_pub", port);
    publish.args([
        "-t",
        "devices/pump-1/state",
        "-m",
        "{\"on\":true}",
        "-q",
        "1",
        "-r",
    ]);
    let out = run_to_exit(publish).await.unwrap();
    assert!(out.status.success(), "mosquitto_pub: {}", out.stderr);

    let mut subscribe = mosquitto("mosquitto_sub", port);
    subscribe.args([
        "-t",
        "devices/+/state",
        "-q",
        "1",
        "-C",
        "1",
        "-v",
        "-W",
        "10",
    ]);
    let out = run_to_exit(subscribe).await.unwrap();
    assert!(out.status.success(), "mosquitto_sub: {}", out.stderr);
    assert_eq!(out.stdout.trim(), "devices/pump-1/state {\"on\":true}");

    // The anonymous tenant was created in the store.
    assert_eq!(server.get("/readyz").await.unwrap().status(), 200);
    let stderr = server.stop().await.unwrap().join("\n");
    assert!(stderr.contains("ANONYMOUS MQTT ACCESS IS ON"), "{stderr}");
}

#[tokio::test]
async fn without_credentials_a_client_is_refused() {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = fleetmq(cwd.path());
    cmd.args(["serve", "--http-listen", "127.0.0.1:0"]);
    let server = Server::start(cmd).await.unwrap();
    let mut publish = mosquitto("mosquitto_pub", server.mqtt().port());
    publish.args(["-t", "devices/x/state", "-m", "hi"]);
    let out = tokio::time::timeout(Duration::from_secs(30), run_to_exit(publish))
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        out.stderr
            .to_lowercase()
            .contains("bad user name or password"),
        "{}",
        out.stderr
    );
    server.stop().await.unwrap();
}
