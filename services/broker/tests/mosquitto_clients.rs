//! Interop with the Debian `mosquitto_pub` / `mosquitto_sub` clients. When
//! they are not installed the tests say so and pass (CI installs them:
//! `apt-get install -y mosquitto-clients`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Stdio;

use common::*;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

fn have_clients() -> bool {
    let ok = std::process::Command::new("mosquitto_pub")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        eprintln!("mosquitto_pub/mosquitto_sub not installed; skipping");
    }
    ok
}

async fn pub_(port: u16, args: &[&str]) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .status()
        .await
        .unwrap();
    assert!(status.success(), "mosquitto_pub {args:?}");
}

/// Runs `mosquitto_sub` and returns its first `count` lines.
async fn sub_lines(
    port: u16,
    args: &[&str],
    count: usize,
    after_ready: impl AsyncFnOnce(),
) -> Vec<String> {
    let mut child = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-C",
            &count.to_string(),
        ])
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    let done = tokio::time::timeout(WAIT, async {
        // The first line (a retained message) shows the subscription is in.
        out.push(next_line(&mut lines).await);
        after_ready().await;
        while out.len() < count {
            out.push(next_line(&mut lines).await);
        }
    })
    .await;
    assert!(done.is_ok(), "mosquitto_sub got too little: {out:?}");
    out
}

/// The next line `mosquitto_sub` printed.
async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    lines
        .next_line()
        .await
        .unwrap()
        .expect("mosquitto_sub ended")
}

#[tokio::test]
async fn mosquitto_pub_to_mosquitto_sub_v311_and_v5() {
    if !have_clients() {
        return;
    }
    let b = TestBroker::start().await;
    let port = b.port();
    for version in ["mqttv311", "mqttv5"] {
        // A retained message first, so the subscriber's arrival is observable
        // without sleeping: it gets the retained one, then the live ones.
        pub_(
            port,
            &[
                "-V", version, "-t", "m/ready", "-m", "ready", "-r", "-q", "1",
            ],
        )
        .await;
        let got = sub_lines(
            port,
            &["-V", version, "-t", "m/#", "-q", "2", "-v"],
            3,
            async || {
                for qos in ["1", "2"] {
                    pub_(
                        port,
                        &[
                            "-V",
                            version,
                            "-t",
                            &format!("m/q{qos}"),
                            "-m",
                            qos,
                            "-q",
                            qos,
                        ],
                    )
                    .await;
                }
            },
        )
        .await;
        assert_eq!(
            got.first().map(String::as_str),
            Some("m/ready ready"),
            "{version}: {got:?}"
        );
        // QoS 1 so the delete is done before the next round's set (two
        // connections are not ordered with each other).
        pub_(
            port,
            &["-V", version, "-t", "m/ready", "-r", "-n", "-q", "1"],
        )
        .await;
    }
    b.stop().await;
}
