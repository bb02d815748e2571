//! Configuration as a user meets it: help that documents everything, bad
//! values that say what to fix in one line, and the precedence
//! flags > environment > file > defaults.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fleetmq_tests::{Server, error_line, fleetmq, run_to_exit};

fn assert_one_clear_line(stderr: &str, needles: &[&str]) {
    let line = error_line(stderr);
    assert!(!stderr.contains("backtrace"), "{stderr}");
    for needle in needles {
        assert!(line.contains(needle), "missing {needle:?} in: {line}");
    }
}

#[tokio::test]
async fn serve_help_documents_every_option() {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = fleetmq(cwd.path());
    cmd.args(["serve", "--help"]);
    let out = run_to_exit(cmd).await.unwrap();
    assert!(out.status.success());
    for (flag, env) in [
        ("--config", "FLEETMQ_CONFIG"),
        ("--data-dir", "FLEETMQ_DATA_DIR"),
        ("--database-url", "FLEETMQ_DATABASE_URL"),
        ("--log-format", "FLEETMQ_LOG_FORMAT"),
        ("--mqtt-listen", "FLEETMQ_MQTT_LISTEN"),
        ("--mqtts-listen", "FLEETMQ_MQTTS_LISTEN"),
        ("--ws-listen", "FLEETMQ_WS_LISTEN"),
        ("--http-listen", "FLEETMQ_HTTP_LISTEN"),
        ("--webhook-allow-private", "FLEETMQ_WEBHOOK_ALLOW_PRIVATE"),
        ("--allow-anonymous", "FLEETMQ_ALLOW_ANONYMOUS"),
        ("--shutdown-timeout", "FLEETMQ_SHUTDOWN_TIMEOUT"),
        ("--tls-cert", "FLEETMQ_TLS_CERT"),
        ("--tls-key", "FLEETMQ_TLS_KEY"),
        ("--mqtt-max-connections", "FLEETMQ_MQTT_MAX_CONNECTIONS"),
        ("--mqtt-max-packet-size", "FLEETMQ_MQTT_MAX_PACKET_SIZE"),
        ("--mqtt-receive-maximum", "FLEETMQ_MQTT_RECEIVE_MAXIMUM"),
        ("--mqtt-max-keep-alive", "FLEETMQ_MQTT_MAX_KEEP_ALIVE"),
        (
            "--mqtt-max-session-expiry",
            "FLEETMQ_MQTT_MAX_SESSION_EXPIRY",
        ),
        (
            "--mqtt-max-queued-messages",
            "FLEETMQ_MQTT_MAX_QUEUED_MESSAGES",
        ),
        ("--mqtt-max-queued-bytes", "FLEETMQ_MQTT_MAX_QUEUED_BYTES"),
        (
            "--mqtt-max-tenant-queued-messages",
            "FLEETMQ_MQTT_MAX_TENANT_QUEUED_MESSAGES",
        ),
        (
            "--mqtt-max-tenant-queued-bytes",
            "FLEETMQ_MQTT_MAX_TENANT_QUEUED_BYTES",
        ),
        (
            "--mqtt-max-inflight-messages",
            "FLEETMQ_MQTT_MAX_INFLIGHT_MESSAGES",
        ),
        (
            "--mqtt-max-retained-per-subscribe",
            "FLEETMQ_MQTT_MAX_RETAINED_PER_SUBSCRIBE",
        ),
        (
            "--mqtt-topic-alias-maximum",
            "FLEETMQ_MQTT_TOPIC_ALIAS_MAXIMUM",
        ),
        ("--mqtt-connect-timeout", "FLEETMQ_MQTT_CONNECT_TIMEOUT"),
    ] {
        assert!(out.stdout.contains(flag), "{flag} undocumented");
        assert!(out.stdout.contains(env), "{env} undocumented");
    }
}

#[tokio::test]
async fn a_bad_flag_value_is_one_clear_line() {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = fleetmq(cwd.path());
    cmd.args(["serve", "--http-listen", "not-an-address"]);
    let out = run_to_exit(cmd).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_one_clear_line(
        &out.stderr,
        &["'not-an-address'", "--http-listen", "HOST:PORT"],
    );
    assert_eq!(out.stderr.trim().lines().count(), 1);
    assert!(
        !cwd.path().join("fleetmq-data").exists(),
        "nothing is created for a bad config"
    );
}

#[tokio::test]
async fn an_out_of_range_mqtt_limit_is_one_clear_line() {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = fleetmq(cwd.path());
    cmd.arg("serve").env("FLEETMQ_MQTT_RECEIVE_MAXIMUM", "0");
    let out = run_to_exit(cmd).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_one_clear_line(
        &out.stderr,
        &["FLEETMQ_MQTT_RECEIVE_MAXIMUM", "'0'", "1 to 65535"],
    );
    let mut cmd = fleetmq(cwd.path());
    cmd.args(["serve", "--tls-cert", "server.pem"]);
    let out = run_to_exit(cmd).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_one_clear_line(&out.stderr, &["--tls-cert", "--tls-key"]);
}

#[tokio::test]
async fn a_bad_environment_value_names_the_variable() {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = fleetmq(cwd.path());
    cmd.arg("serve").env("FLEETMQ_MQTT_LISTEN", "localhost");
    let out = run_to_exit(cmd).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_one_clear_line(&out.stderr, &["FLEETMQ_MQTT_LISTEN", "'localhost'"]);
}

#[tokio::test]
async fn an_unknown_config_key_is_refused_with_its_line() {
    let cwd = tempfile::tempdir().unwrap();
    let file = cwd.path().join("fleetmq.toml");
    std::fs::write(&file, "data_dir = \"d\"\nhttp_listn = \"127.0.0.1:0\"\n").unwrap();
    let mut cmd = fleetmq(cwd.path());
    cmd.args(["serve", "--config", file.to_str().unwrap()]);
    let out = run_to_exit(cmd).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_one_clear_line(&out.stderr, &["fleetmq.toml", "line 2", "http_listn"]);
    assert_eq!(out.stderr.trim().lines().count(), 1);
}

#[tokio::test]
async fn a_data_dir_that_is_a_file_is_refused() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("plain-file"), b"x").unwrap();
    let mut cmd = fleetmq(cwd.path());
    cmd.args([
        "serve",
        "--http-listen",
        "127.0.0.1:0",
        "--data-dir",
        "plain-file",
    ]);
    let out = run_to_exit(cmd).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_one_clear_line(
        &out.stderr,
        &["plain-file", "not a directory", "--data-dir"],
    );
}

#[tokio::test]
async fn flags_beat_environment_beat_file_beat_defaults() {
    let cwd = tempfile::tempdir().unwrap();
    let file = cwd.path().join("fleetmq.toml");
    // Different loopback addresses show which layer won.
    std::fs::write(
        &file,
        "http_listen = \"127.0.0.2:0\"\ndata_dir = \"from-file\"\n",
    )
    .unwrap();

    let start = |env: Option<&str>, flag: Option<&str>| {
        let mut cmd = fleetmq(cwd.path());
        cmd.args(["serve", "--config", file.to_str().unwrap()]);
        if let Some(env) = env {
            cmd.env("FLEETMQ_HTTP_LISTEN", env);
        }
        if let Some(flag) = flag {
            cmd.args(["--http-listen", flag]);
        }
        cmd
    };
    for (env, flag, expect) in [
        (None, None, "127.0.0.2"),
        (Some("127.0.0.3:0"), None, "127.0.0.3"),
        (Some("127.0.0.3:0"), Some("127.0.0.4:0"), "127.0.0.4"),
    ] {
        let server = Server::start(start(env, flag)).await.unwrap();
        assert_eq!(server.http.ip().to_string(), expect);
        assert_eq!(server.get("/healthz").await.unwrap().status(), 200);
        server.stop().await.unwrap();
    }
    assert!(
        cwd.path().join("from-file/fleetmq.db").exists(),
        "data_dir came from the file"
    );
}
