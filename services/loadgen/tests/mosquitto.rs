//! Runs the real `fleetmq-loadgen` binary against a Mosquitto it starts on
//! a free loopback port (never 1883: the machine's own broker lives there),
//! with a small load. Asserts counts only, never timings: the machine is
//! shared and noisy.

// Test code: `allow-unwrap-in-tests` covers `#[test]` functions only, not
// the helpers beside them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MOSQUITTO: &str = "/usr/sbin/mosquitto";

/// A Mosquitto child process, killed when dropped.
struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Self {
        assert!(
            Path::new(MOSQUITTO).exists(),
            "{MOSQUITTO} is missing: install the Debian `mosquitto` package"
        );
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
            ),
        )
        .unwrap();
        let child = Command::new(MOSQUITTO)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut broker = Mosquitto {
            child,
            port,
            _dir: dir,
        };
        broker.wait_listening();
        broker
    }

    fn wait_listening(&mut self) {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut log = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut log);
                }
                panic!("mosquitto exited with {status}:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("mosquitto did not listen on {} within 10 s", self.port);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port != 1883 {
            return port;
        }
    }
}

fn loadgen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fleetmq-loadgen"))
        .args(args)
        .output()
        .unwrap()
}

/// A run against a fresh mosquitto with the flags `extra`
/// (space-separated): its JSON report.
fn json_run(extra: &str) -> serde_json::Value {
    let broker = Mosquitto::start();
    let port = broker.port.to_string();
    let mut args = vec!["--port", port.as_str(), "--json", "--timeout", "60"];
    args.extend(extra.split_whitespace());
    let out = loadgen(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadgen failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[test]
fn every_qos1_message_arrives_through_mosquitto() {
    let r = json_run("--publishers 5 --messages 200 --payload 64 --qos 1");
    assert_eq!(r["qos"], 1, "{r}");
    assert_eq!(r["expected"], 1000, "{r}");
    assert_eq!(r["published"], 1000, "{r}");
    assert_eq!(r["delivered"], 1000, "{r}");
    assert_eq!(r["delivery_ratio"], 1.0, "{r}");
    assert_eq!(r["foreign"], 0, "{r}");
    assert_eq!(r["timed_out"], false, "{r}");
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert!(r["latency"]["p50_us"].is_u64(), "{r}");
}

#[test]
fn each_subscriber_gets_its_own_copy() {
    let r = json_run("--publishers 3 --messages 50 --subscribers 2 --qos 1");
    assert_eq!(r["expected"], 300, "{r}");
    assert_eq!(r["delivered"], 300, "{r}");
}

#[test]
fn the_binary_refuses_non_loopback_targets() {
    for host in ["10.1.2.3", "example.com", "0.0.0.0"] {
        let out = loadgen(&["--host", host, "--port", "18830"]);
        assert!(!out.status.success(), "{host}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("only loopback"), "{host}: {stderr}");
    }
}
