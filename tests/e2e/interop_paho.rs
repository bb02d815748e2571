//! MQTT 5 interop with the Eclipse Paho Python client (paho-mqtt 2.x,
//! installed by `.ci/run`): each test starts the real binary and runs one
//! scenario of tests/interop/paho_v5.py against it, over TCP, TLS (trusting
//! the CA the server printed) or WebSocket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fleetmq_tests::{Server, anonymous_server, interop_dir, run_to_exit, start_anonymous};
use tokio::process::Command;

#[derive(Clone, Copy)]
enum Transport {
    Tcp,
    Tls,
    Ws,
}

async fn paho(server: &Server, scenario: &str, transport: Transport) {
    let mut cmd = Command::new("python3");
    cmd.arg(interop_dir().join("paho_v5.py"))
        .arg(scenario)
        .kill_on_drop(true);
    match transport {
        Transport::Tcp => {
            cmd.args(["--port", &server.mqtt().port().to_string()]);
        }
        // The certificate names localhost, not the loopback address.
        Transport::Tls => {
            cmd.args(["--transport", "tls", "--host", "localhost", "--port"])
                .arg(server.mqtts().port().to_string())
                .arg("--cafile")
                .arg(server.mqtts_ca_file());
        }
        Transport::Ws => {
            cmd.args(["--transport", "ws", "--port"])
                .arg(server.ws().port().to_string());
        }
    }
    let out = tokio::time::timeout(Duration::from_secs(120), run_to_exit(cmd))
        .await
        .expect("paho scenario hung")
        .unwrap();
    assert!(
        out.status.success() && out.stdout.contains(&format!("ok {scenario}")),
        "paho {scenario} failed ({}):\n{}\n{}\n(is paho-mqtt 2.x installed? .ci/run installs it)",
        out.status,
        out.stdout,
        out.stderr
    );
}

async fn scenario(name: &str, transport: Transport) {
    let (_cwd, server) = anonymous_server().await;
    paho(&server, name, transport).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn qos_0_1_2_both_ways_with_downgrade() {
    scenario("qos", Transport::Tcp).await;
}

#[tokio::test]
async fn retained_set_replace_delete_handling_and_as_published() {
    scenario("retained", Transport::Tcp).await;
}

#[tokio::test]
async fn wills_immediate_delayed_cancelled_and_at_session_end() {
    scenario("will", Transport::Tcp).await;
}

#[tokio::test]
async fn persistent_sessions_queue_while_offline_and_expire() {
    scenario("session", Transport::Tcp).await;
}

#[tokio::test]
async fn takeover_closes_the_old_connection_with_0x8e() {
    scenario("takeover", Transport::Tcp).await;
}

#[tokio::test]
async fn shared_subscriptions_deliver_each_message_once() {
    scenario("shared", Transport::Tcp).await;
}

#[tokio::test]
async fn topic_aliases_both_ways() {
    scenario("aliases", Transport::Tcp).await;
}

#[tokio::test]
async fn message_expiry_drops_stale_and_forwards_the_remainder() {
    scenario("expiry", Transport::Tcp).await;
}

#[tokio::test]
async fn properties_pass_through_with_subscription_ids_and_no_local() {
    scenario("properties", Transport::Tcp).await;
}

#[tokio::test]
async fn tls_with_the_generated_certificate() {
    let (_cwd, server) = anonymous_server().await;
    paho(&server, "basic", Transport::Tls).await;
    paho(&server, "retained", Transport::Tls).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn websocket_transport() {
    let (_cwd, server) = anonymous_server().await;
    paho(&server, "basic", Transport::Ws).await;
    paho(&server, "qos", Transport::Ws).await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn limits_from_flags_keep_alive_packet_size_client_id_and_auth() {
    let cwd = tempfile::tempdir().unwrap();
    let server = start_anonymous(
        cwd.path(),
        &[
            "--mqtt-max-packet-size",
            "2048",
            "--mqtt-max-keep-alive",
            "5",
        ],
    )
    .await
    .unwrap();
    paho(&server, "limits", Transport::Tcp).await;
    server.stop().await.unwrap();
}
