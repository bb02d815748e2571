//! README.md's "A device, end to end" section, run exactly as written: the
//! shell commands between its walkthrough markers, against the real binary
//! (SQLite, and Postgres when TEST_DATABASE_URL is set), with the Debian
//! mosquitto clients, curl, jq and openssl. The only inputs are the three
//! variables the README lets a reader override: where the API, the MQTT/TLS
//! listener and the CA file are.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use fleetmq_tests::{Server, TestDb, fleetmq, fleetmq_bin, run_to_exit};
use tokio::process::Command;

const BEGIN: &str = "<!-- walkthrough:begin -->";
const END: &str = "<!-- walkthrough:end -->";

/// The shell commands of the README's walkthrough, without the code fence.
fn walkthrough() -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme).unwrap();
    let start = text
        .find(BEGIN)
        .expect("README has the walkthrough begin marker")
        + BEGIN.len();
    let len = text[start..]
        .find(END)
        .expect("README has the walkthrough end marker");
    let block = text[start..start + len].trim();
    let body = block
        .strip_prefix("```sh")
        .and_then(|b| b.strip_suffix("```"))
        .expect("the walkthrough is one ```sh block");
    body.to_owned()
}

#[test]
fn the_walkthrough_block_is_found() {
    let script = walkthrough();
    assert!(script.contains("fleetmq admin token"), "{script}");
    assert!(!script.contains("```"), "{script}");
}

#[tokio::test]
async fn readme_walkthrough_runs_as_written_on_sqlite() {
    run_walkthrough(None).await;
}

#[tokio::test]
async fn readme_walkthrough_runs_as_written_on_postgres() {
    // Skipped (TestDb prints why) when TEST_DATABASE_URL is not set.
    let Some(db) = TestDb::postgres_unmigrated().await else {
        return;
    };
    run_walkthrough(Some(db.url())).await;
    db.cleanup().await;
}

async fn run_walkthrough(database_url: Option<&str>) {
    let cwd = tempfile::tempdir().unwrap();
    let mut serve = fleetmq(cwd.path());
    serve.args(["serve", "--http-listen", "127.0.0.1:0"]);
    if let Some(url) = database_url {
        serve.args(["--database-url", url]);
    }
    let server = Server::start(serve).await.unwrap();

    // `fleetmq` on the PATH, as the README asks of its reader.
    let bin_dir = fleetmq_bin().parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut shell = Command::new("bash");
    shell
        .args(["-euo", "pipefail", "-c", &walkthrough()])
        .current_dir(cwd.path())
        .kill_on_drop(true);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FLEETMQ_") {
            shell.env_remove(key);
        }
    }
    shell
        .env("PATH", path)
        .env("API", server.url(""))
        .env("MQTTS_PORT", server.mqtts().port().to_string())
        .env("CA", server.mqtts_ca_file());
    if let Some(url) = database_url {
        // What a reader on Postgres has set for both commands.
        shell.env("FLEETMQ_DATABASE_URL", url);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), run_to_exit(shell))
        .await
        .expect("the walkthrough finished within 120 s")
        .unwrap();
    let log = format!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    println!("{log}");
    assert!(out.status.success(), "walkthrough failed: {log}");

    // What the reader is told they will see, in the order they see it.
    let expected = [
        r#""id":"acme""#,
        r#""id":"sensor-1""#,
        "21.5",
        r#"{"interval_s":30}"#,
        r#"commands/sensor-1/state/desired {"interval_s":30}"#,
        "Publish 1 failed: Not authorized",
        r#""id":"sensor-2""#,
        "19",
        r#""revocation_reason":"key_compromise""#,
        "Received DISCONNECT (152)",
        "refused: certificate revoked",
        "Serial Number",
    ];
    let mut rest = out.stdout.as_str();
    for want in expected {
        let at = rest.find(want).unwrap_or_else(|| {
            panic!("{want:?} not in the walkthrough's output (in order): {log}")
        });
        rest = &rest[at + want.len()..];
    }
    let revoked_serial = std::fs::read_to_string(cwd.path().join("sensor-1.json")).unwrap();
    let serial: serde_json::Value = serde_json::from_str(&revoked_serial).unwrap();
    // openssl prints the serial in upper-case hex without leading zeros.
    let serial = serial["serial"]
        .as_str()
        .unwrap()
        .to_ascii_uppercase()
        .trim_start_matches('0')
        .to_owned();
    assert!(
        out.stdout.lines().any(|l| l
            .trim()
            .strip_prefix("Serial Number: ")
            .is_some_and(|s| s.trim_start_matches('0') == serial)),
        "the CRL lists serial {serial}: {log}"
    );
    server.stop().await.unwrap();
}
