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

/// A connect storm's freed memory is given back once it is over (issue
/// 16, `fleetmq::memory_upkeep`): 300 clients connect and leave, and
/// within a few seconds of the last the allocator has been trimmed.
#[tokio::test]
async fn a_connect_burst_is_followed_by_an_allocator_trim() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (_cwd, server) = fleetmq_tests::anonymous_server().await;
    let trims = || async {
        let text = server.get("/metrics").await.unwrap().text().await.unwrap();
        fleetmq_tests::metric(&text, "allocator_trims_total", &[])
    };
    assert_eq!(trims().await, 0.0, "no burst yet");

    let port = server.mqtt().port();
    let clients = (0..300u16).map(|n| async move {
        let id = format!("burst-{n}");
        // MQTT 3.1.1 CONNECT, clean session, keep alive 60 s.
        let mut packet = vec![0x10, (12 + id.len()) as u8];
        packet.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60]);
        packet.extend_from_slice(&(id.len() as u16).to_be_bytes());
        packet.extend_from_slice(id.as_bytes());
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        stream.write_all(&packet).await.unwrap();
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).await.unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0], "{id}");
    });
    // 30 at a time; each closes once it has its CONNACK.
    use futures::StreamExt;
    futures::stream::iter(clients)
        .buffer_unordered(30)
        .collect::<Vec<()>>()
        .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while trims().await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no allocator trim 20 s after the burst"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop().await.unwrap();
}
