//! Interop with the Debian `mosquitto_pub` / `mosquitto_sub` clients (MQTT
//! 3.1.1 and 5.0) against the real binary: QoS 0/1/2 both ways, offline
//! queueing, retained set/replace/delete, wills (delayed in v5) after a
//! SIGKILL, v5 properties, and TLS with `--cafile` as the server printed it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use fleetmq_tests::{anonymous_server, run_to_exit};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const VERSIONS: [&str; 2] = ["mqttv311", "mqttv5"];
const WAIT: Duration = Duration::from_secs(20);

fn mosquitto(tool: &str, version: &str, port: u16) -> Command {
    let mut cmd = Command::new(tool);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
        .kill_on_drop(true);
    cmd
}

/// Runs a client to its end and returns its stdout; it must succeed.
async fn output(cmd: Command) -> String {
    let out = tokio::time::timeout(WAIT * 2, run_to_exit(cmd))
        .await
        .expect("mosquitto client hung")
        .unwrap();
    assert!(out.status.success(), "{}: {}", out.status, out.stderr);
    out.stdout
}

#[tokio::test]
async fn qos_1_and_2_both_ways_queued_for_an_offline_session() {
    let (_cwd, server) = anonymous_server().await;
    let port = server.mqtt().port();
    for v in VERSIONS {
        let id = format!("offline-{v}");
        // A persistent session (v5: 300 s expiry) that subscribes, then leaves.
        let session = |extra: &[&str]| {
            let mut cmd = mosquitto("mosquitto_sub", v, port);
            cmd.args(["-c", "-i", &id, "-q", "2", "-t", "q/#"])
                .args(if v == "mqttv5" {
                    &["-x", "300"][..]
                } else {
                    &[]
                })
                .args(extra);
            cmd
        };
        output(session(&["-E"])).await;
        for qos in ["1", "2"] {
            let mut publish = mosquitto("mosquitto_pub", v, port);
            publish.args([
                "-q",
                qos,
                "-t",
                &format!("q/{qos}"),
                "-m",
                &format!("qos{qos}"),
            ]);
            output(publish).await;
        }
        let got = output(session(&["-C", "2", "-W", "15", "-F", "%t %q %p"])).await;
        assert_eq!(got.trim(), "q/1 1 qos1\nq/2 2 qos2", "{v}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn qos_0_is_delivered_live() {
    let (_cwd, server) = anonymous_server().await;
    let port = server.mqtt().port();
    for v in VERSIONS {
        let mut subscribe = mosquitto("mosquitto_sub", v, port);
        subscribe.args(["-t", "zero", "-C", "1", "-F", "%q %p"]);
        let sub = tokio::spawn(output(subscribe));
        // QoS 0 is not kept for anyone: publish until the subscriber is there.
        tokio::time::timeout(WAIT, async {
            while !sub.is_finished() {
                let mut publish = mosquitto("mosquitto_pub", v, port);
                publish.args(["-q", "0", "-t", "zero", "-m", "z"]);
                output(publish).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await
        .expect("QoS 0 never arrived");
        assert_eq!(sub.await.unwrap().trim(), "0 z", "{v}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn retained_set_replace_and_delete() {
    let (_cwd, server) = anonymous_server().await;
    let port = server.mqtt().port();
    for v in VERSIONS {
        let topic = format!("ret/{v}");
        for payload in ["first", "second"] {
            let mut publish = mosquitto("mosquitto_pub", v, port);
            publish.args(["-r", "-q", "1", "-t", &topic, "-m", payload]);
            output(publish).await;
        }
        let mut subscribe = mosquitto("mosquitto_sub", v, port);
        subscribe.args(["-t", &topic, "-C", "1", "-W", "15", "-F", "%r %p"]);
        assert_eq!(output(subscribe).await.trim(), "1 second", "{v}");

        let mut delete = mosquitto("mosquitto_pub", v, port);
        delete.args(["-r", "-q", "1", "-t", &topic, "-n"]);
        output(delete).await;
        // Nothing retained is left: the subscriber times out empty (exit 27).
        let mut subscribe = mosquitto("mosquitto_sub", v, port);
        subscribe.args(["-t", &topic, "-W", "1"]);
        let out = run_to_exit(subscribe).await.unwrap();
        assert_eq!(out.status.code(), Some(27), "{v}: {}", out.stdout);
        assert!(out.stdout.is_empty(), "{v}: {}", out.stdout);
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_killed_client_s_will_is_published_and_delayed_in_v5() {
    let (_cwd, server) = anonymous_server().await;
    let port = server.mqtt().port();
    for v in VERSIONS {
        let id = format!("will-{v}");
        let will_topic = format!("wills/{v}");
        let ready = format!("ready/{v}");
        let mut doomed = mosquitto("mosquitto_sub", v, port);
        doomed
            .args(["-i", &id, "-t", &ready, "--will-topic", &will_topic])
            .args(["--will-payload", "gone", "--will-qos", "1", "--will-retain"]);
        if v == "mqttv5" {
            doomed.args(["-x", "30", "-D", "will", "will-delay-interval", "1"]);
        }
        let mut doomed = doomed.stdout(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(doomed.stdout.take().unwrap()).lines();
        // Connected and subscribed once it prints what it hears.
        tokio::time::timeout(WAIT, async {
            loop {
                let mut ping = mosquitto("mosquitto_pub", v, port);
                ping.args(["-t", &ready, "-m", "ping"]);
                output(ping).await;
                if let Ok(Ok(Some(_))) =
                    tokio::time::timeout(Duration::from_millis(300), lines.next_line()).await
                {
                    return;
                }
            }
        })
        .await
        .expect("the doomed client never subscribed");
        // No DISCONNECT: the will is due.
        doomed.start_kill().unwrap();
        doomed.wait().await.unwrap();
        let mut watch = mosquitto("mosquitto_sub", v, port);
        watch.args(["-t", &will_topic, "-C", "1", "-W", "15", "-F", "%r %p"]);
        // Retained if it went out before the watcher subscribed (3.1.1: at
        // once), live (RETAIN 0) if the v5 delay was still running.
        let got = output(watch).await;
        assert!(matches!(got.trim(), "1 gone" | "0 gone"), "{v}: {got}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn v5_properties_pass_through_with_a_subscription_identifier() {
    let (_cwd, server) = anonymous_server().await;
    let port = server.mqtt().port();
    let mut publish = mosquitto("mosquitto_pub", "mqttv5", port);
    publish.args(["-r", "-q", "1", "-t", "props/a", "-m", "{}"]);
    for (name, value) in [
        ("content-type", "application/json"),
        ("response-topic", "props/reply"),
        ("correlation-data", "req-7"),
    ] {
        publish.args(["-D", "publish", name, value]);
    }
    publish.args(["-D", "publish", "user-property", "site", "north"]);
    output(publish).await;
    let mut subscribe = mosquitto("mosquitto_sub", "mqttv5", port);
    subscribe
        .args(["-t", "props/#", "-C", "1", "-W", "15"])
        .args(["-D", "subscribe", "subscription-identifier", "42"])
        .args(["-F", "%t|%C|%R|%D|%P|%S|%p"]);
    assert_eq!(
        output(subscribe).await.trim(),
        "props/a|application/json|props/reply|req-7|site:north|42|{}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn tls_with_the_printed_cafile() {
    let (_cwd, server) = anonymous_server().await;
    let port = server.mqtts().port();
    let ca = server.mqtts_ca_file();
    for v in VERSIONS {
        let tls = |tool: &str| {
            let mut cmd = Command::new(tool);
            // The certificate names localhost; --cafile is what the server printed.
            cmd.args(["-h", "localhost", "-p", &port.to_string(), "-V", v])
                .arg("--cafile")
                .arg(&ca)
                .kill_on_drop(true);
            cmd
        };
        let topic = format!("secure/{v}");
        let mut publish = tls("mosquitto_pub");
        publish.args(["-r", "-q", "2", "-t", &topic, "-m", "sealed"]);
        output(publish).await;
        let mut subscribe = tls("mosquitto_sub");
        subscribe.args([
            "-t", &topic, "-q", "2", "-C", "1", "-W", "15", "-F", "%q %p",
        ]);
        assert_eq!(output(subscribe).await.trim(), "2 sealed", "{v}");
    }
    server.stop().await.unwrap();
}
