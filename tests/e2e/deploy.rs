//! deploy/ as an operator would use it, checked without Docker or a
//! cluster: the compose file, the Kubernetes manifests and the Dockerfile
//! against their schemas and linters and against each other
//! (tests/deploy/check.py), the systemd unit with systemd-analyze, the
//! settings they name against `fleetmq serve --help`, and deploy/haproxy.cfg
//! both with `haproxy -c` and for real, in front of three running nodes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use fleetmq_tests::haproxy::{self, Frontends, Haproxy, Node};
use fleetmq_tests::tls_client;
use fleetmq_tests::{
    API_WAIT, Api, Server, fleetmq, fleetmq_bin, platform_server, run_to_exit, start_anonymous,
    wait_connections,
};
use rumqttc::{Packet, QoS, Transport};
use serde_json::json;
use tokio::process::Command;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

fn deploy_dir() -> PathBuf {
    haproxy::repo_root().join("deploy")
}

/// `python3 tests/deploy/check.py <group>`: passes with its "ok" lines.
async fn check(group: &str) {
    let mut cmd = Command::new("python3");
    cmd.arg(haproxy::repo_root().join("tests/deploy/check.py"))
        .arg(group)
        .kill_on_drop(true);
    let out = succeeds(
        cmd,
        &format!(
            "check.py {group} (its checkers: tests/deploy/requirements.txt, installed by .ci/deps)"
        ),
    )
    .await;
    assert!(out.stdout.contains("ok "), "{}", out.stdout);
    println!("{}", out.stdout);
}

/// Runs `cmd` to its exit, which must be a success; `what` it was.
async fn succeeds(cmd: Command, what: &str) -> fleetmq_tests::Finished {
    let out = run_to_exit(cmd).await.unwrap();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out
}

#[tokio::test]
async fn compose_file_matches_the_compose_spec_and_the_haproxy_config() {
    check("compose").await;
}

#[tokio::test]
async fn kubernetes_manifests_match_their_schemas_and_each_other() {
    check("k8s").await;
}

#[tokio::test]
async fn dockerfile_lints_clean_and_is_multi_stage_non_root_with_a_health_check() {
    check("dockerfile").await;
}

#[tokio::test]
async fn haproxy_mqtt_idle_timeout_outlasts_every_keep_alive_cap() {
    check("keepalive").await;
}

/// Every `FLEETMQ_*` variable the deploy files set, and every key
/// fleetmq.toml names (also the commented ones), is one `serve` documents:
/// a renamed flag cannot leave a deploy file setting nothing.
#[tokio::test]
async fn deploy_files_name_only_settings_fleetmq_has() {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = fleetmq(cwd.path());
    cmd.args(["serve", "--help"]);
    let help = run_to_exit(cmd).await.unwrap();
    assert!(help.status.success(), "{}", help.stderr);
    let mut named = 0;
    for file in ["docker-compose.yml", "k8s/fleetmq.yaml", "Dockerfile"] {
        let text = std::fs::read_to_string(deploy_dir().join(file)).unwrap();
        for var in env_names(&text) {
            // "[env: NAME=...]", though wrapping may split it after "env:".
            assert!(
                help.stdout.contains(&format!("{var}=")),
                "{file} sets {var}, which `fleetmq serve --help` does not list"
            );
            named += 1;
        }
    }
    let toml = std::fs::read_to_string(deploy_dir().join("fleetmq.toml")).unwrap();
    for line in toml.lines() {
        let line = line.trim_start_matches(['#', ' ']);
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            let flag = format!("--{}", key.replace('_', "-"));
            assert!(
                help.stdout.match_indices(&flag).any(|(at, _)| {
                    !help.stdout[at + flag.len()..]
                        .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
                }),
                "fleetmq.toml names {key}, but `fleetmq serve --help` has no {flag}"
            );
            named += 1;
        }
    }
    assert!(named > 20, "only {named} settings found in deploy/");
}

/// The `FLEETMQ_[A-Z0-9_]+` words of `text`.
fn env_names(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("FLEETMQ_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        // A bare prefix is prose ("every setting is a FLEETMQ_* variable").
        if end > "FLEETMQ_".len() {
            names.push(&tail[..end]);
        }
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn systemd_unit_verifies_and_is_sandboxed() {
    let unit = std::fs::read_to_string(deploy_dir().join("fleetmq.service")).unwrap();
    // One descriptor per connection: the default caps need far more than
    // the usual 1024.
    let nofile: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .expect("LimitNOFILE= set")
        .parse()
        .unwrap();
    assert!(nofile >= 65536, "LimitNOFILE={nofile}");
    // verify checks that ExecStart's binary exists: the one this suite built.
    const INSTALLED: &str = "/usr/local/bin/fleetmq ";
    assert!(
        unit.contains(&format!("ExecStart={INSTALLED}serve")),
        "{unit}"
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("fleetmq.service");
    let bin = format!("{} ", fleetmq_bin().display());
    std::fs::write(&copy, unit.replace(INSTALLED, &bin)).unwrap();

    let mut verify = Command::new("systemd-analyze");
    verify.arg("verify").arg(&copy);
    let out = run_to_exit(verify).await.unwrap();
    // verify exits 0 on an unknown key too, and only says so: silence is
    // the pass.
    assert!(
        out.status.success() && out.stdout.trim().is_empty() && out.stderr.trim().is_empty(),
        "systemd-analyze verify ({}):\n{}{}",
        out.status,
        out.stdout,
        out.stderr
    );

    // Exposure 0 (locked down) to 10 (unprotected); 2.0 is the bound.
    let mut security = Command::new("systemd-analyze");
    security
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(&copy);
    let out = succeeds(security, "systemd-analyze security at most 2.0").await;
    println!(
        "{}",
        out.stdout
            .lines()
            .chain(out.stderr.lines())
            .filter(|l| l.contains("Overall exposure"))
            .collect::<String>()
    );
}

/// Frontends and nodes on fixed loopback ports: `haproxy -c` binds nothing.
fn check_env() -> Vec<(String, String)> {
    let addr = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let front = Frontends {
        mqtt: addr(41883),
        mqtts: addr(48883),
        ws: addr(48083),
        http: addr(48080),
    };
    let node = |i: u16| Node {
        mqtt: addr(42000 + i),
        mqtts: addr(43000 + i),
        ws: addr(44000 + i),
        http: addr(45000 + i),
    };
    haproxy::env(&front, &[node(1), node(2), node(3)])
}

async fn haproxy_check(env: &[(String, String)]) -> fleetmq_tests::Finished {
    let mut cmd = Command::new("haproxy");
    cmd.arg("-c")
        .arg("-f")
        .arg(haproxy::config_path())
        .envs(env.iter().cloned())
        .kill_on_drop(true);
    run_to_exit(cmd).await.unwrap()
}

#[tokio::test]
async fn haproxy_config_is_valid_with_its_variables_and_refused_without_one() {
    let env = check_env();
    let out = haproxy_check(&env).await;
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        out.status.success() && said.contains("Configuration file is valid"),
        "haproxy -c ({}):\n{said}",
        out.status
    );
    assert!(
        !said.contains("[WARNING]") && !said.contains("[ALERT]"),
        "{said}"
    );
    // Each variable is needed: without it the address is empty, and
    // HAProxy refuses the file rather than listening or forwarding nowhere.
    for (i, (name, _)) in env.iter().enumerate() {
        let mut less = env.clone();
        less.remove(i);
        let out = haproxy_check(&less).await;
        assert!(
            !out.status.success(),
            "haproxy -c accepted the config without {name}"
        );
    }
}

/// A v3.1.1 client whose event loop feeds incoming packets to a channel.
fn client(opts: rumqttc::MqttOptions) -> (rumqttc::AsyncClient, UnboundedReceiver<Packet>) {
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 100);
    let (tx, rx) = unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = el.poll().await {
            if let rumqttc::Event::Incoming(p) = event
                && tx.send(p).is_err()
            {
                return;
            }
        }
    });
    (client, rx)
}

async fn next(rx: &mut UnboundedReceiver<Packet>, what: &str, want: impl Fn(&Packet) -> bool) {
    tokio::time::timeout(API_WAIT, async {
        while let Some(p) = rx.recv().await {
            if want(&p) {
                return;
            }
        }
        panic!("connection closed before {what}");
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} in time"));
}

/// Connects through the load balancer, then subscribes to a topic of its
/// own and gets back what it publishes there: the path works both ways.
async fn round_trip(opts: rumqttc::MqttOptions) -> rumqttc::AsyncClient {
    let topic = format!("lb/{}", opts.client_id());
    let (c, mut rx) = client(opts);
    next(&mut rx, "CONNACK", |p| matches!(p, Packet::ConnAck(_))).await;
    c.subscribe(&topic, QoS::AtLeastOnce).await.unwrap();
    next(&mut rx, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
    c.publish(&topic, QoS::AtLeastOnce, false, "through haproxy")
        .await
        .unwrap();
    next(&mut rx, "its own message back", |p| {
        matches!(p, Packet::Publish(m) if m.topic == topic && &m.payload[..] == b"through haproxy")
    })
    .await;
    c
}

struct Three {
    _dirs: Vec<tempfile::TempDir>,
    servers: Vec<Server>,
}

async fn three_nodes() -> Three {
    let mut dirs = Vec::new();
    let mut servers = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        servers.push(start_anonymous(dir.path(), &[]).await.unwrap());
        dirs.push(dir);
    }
    Three {
        _dirs: dirs,
        servers,
    }
}

impl Three {
    async fn stop(self) {
        for server in self.servers {
            server.stop().await.unwrap();
        }
    }
}

/// `/readyz` through HAProxy answers 200 `times` times in a row.
async fn ready_through(lb: &Haproxy, times: usize) {
    let http = reqwest::Client::new();
    for _ in 0..times {
        let res = http.get(lb.url("/readyz")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["status"], "ready", "{body}");
    }
}

fn mqtt_options(id: &str, lb: &Haproxy) -> rumqttc::MqttOptions {
    rumqttc::MqttOptions::new(id, "127.0.0.1", lb.front.mqtt.port())
}

#[tokio::test]
async fn haproxy_spreads_devices_over_three_nodes_on_mqtt_tls_websocket_and_http() {
    let three = three_nodes().await;
    let s = &three.servers;
    let lb = Haproxy::start(&Node::three(s)).await.unwrap();

    // HTTP: the API through HAProxy, nodes answering /readyz.
    ready_through(&lb, 6).await;

    // MQTT: leastconn gives three long-lived connections one node each.
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(round_trip(mqtt_options(&format!("tcp-{i}"), &lb)).await);
    }
    wait_connections(
        &[&s[0], &s[1], &s[2]],
        |c| c == [1.0, 1.0, 1.0].as_slice(),
        "leastconn: one connection per node",
    )
    .await;

    // MQTT over TLS, passed through: the client checks the node's own
    // certificate (each node here has its own root CA, so trust all three;
    // they name "localhost").
    let cas: Vec<PathBuf> = s.iter().map(Server::mqtts_ca_file).collect();
    let mut opts = rumqttc::MqttOptions::new("tls-0", "localhost", lb.front.mqtts.port());
    opts.set_transport(tls_client::trusting(&cas));
    held.push(round_trip(opts).await);

    // MQTT over WebSocket.
    let ws_port = lb.front.ws.port();
    let mut opts =
        rumqttc::MqttOptions::new("ws-0", format!("ws://127.0.0.1:{ws_port}/mqtt"), ws_port);
    opts.set_transport(Transport::Ws);
    held.push(round_trip(opts).await);

    wait_connections(
        &[&s[0], &s[1], &s[2]],
        |c| c.iter().sum::<f64>() == 5.0 && c.iter().all(|&n| n >= 1.0),
        "five connections over three nodes",
    )
    .await;
    drop(held);
    drop(lb);
    three.stop().await;
}

#[tokio::test]
async fn haproxy_passes_a_stopped_node_over() {
    let mut three = three_nodes().await;
    let lb = Haproxy::start(&Node::three(&three.servers)).await.unwrap();
    let first = three.servers.remove(0);
    first.stop().await.unwrap();

    // Before the health check notices, a connection sent to the stopped
    // node is refused and redispatched: no device sees the failure.
    let mut held = Vec::new();
    for i in 0..6 {
        held.push(round_trip(mqtt_options(&format!("after-stop-{i}"), &lb)).await);
    }
    let rest = [&three.servers[0], &three.servers[1]];
    wait_connections(
        &rest,
        |c| c.iter().sum::<f64>() == 6.0,
        "six connections on the two running nodes",
    )
    .await;

    // The /readyz check takes it out of every backend (the MQTT ones track it).
    lb.wait_log("http_nodes/node1 is DOWN", 0).await;
    let log = lb.stderr();
    for backend in ["mqtt_nodes", "mqtts_nodes", "ws_nodes"] {
        assert!(log.contains(&format!("{backend}/node1 is DOWN")), "{log}");
    }
    ready_through(&lb, 6).await;
    drop(held);
    drop(lb);
    three.stop().await;
}

/// A device's certificate reaches the node through HAProxy (TLS is not
/// terminated there), and the REST API works through it: one platform node
/// stands for all three backends.
#[tokio::test]
async fn haproxy_passes_device_certificates_through() {
    let cwd = tempfile::tempdir().unwrap();
    let (server, token) = platform_server(cwd.path(), &[], &[]).await;
    let node = Node::of(&server);
    let lb = Haproxy::start(&[node, node, node]).await.unwrap();
    let api = Api {
        base: lb.url(""),
        token,
        http: reqwest::Client::new(),
    };
    api.post("/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    api.post("/v1/tenants/acme/devices", json!({"id": "sensor-1"}))
        .await;
    let issued = api
        .post("/v1/tenants/acme/devices/sensor-1/certificates", json!({}))
        .await;
    let chain = format!(
        "{}{}",
        issued["certificate_pem"].as_str().unwrap(),
        issued["chain_pem"].as_str().unwrap()
    );
    let cert = cwd.path().join("sensor-1.crt");
    let key = cwd.path().join("sensor-1.key");
    std::fs::write(&cert, chain).unwrap();
    std::fs::write(&key, issued["private_key_pem"].as_str().unwrap()).unwrap();

    let mut publish = Command::new("mosquitto_pub");
    publish
        .args(["-h", "localhost", "-p"])
        .arg(lb.front.mqtts.port().to_string())
        .arg("--cafile")
        .arg(server.mqtts_ca_file())
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["-i", "sensor-1", "-V", "mqttv5", "-q", "1"])
        .args([
            "-t",
            "devices/sensor-1/state/reported",
            "-m",
            r#"{"temp":7}"#,
        ])
        .kill_on_drop(true);
    succeeds(
        publish,
        "mosquitto_pub with the device certificate through HAProxy",
    )
    .await;
    api.wait_for(
        "/v1/tenants/acme/devices/sensor-1/state",
        "the reported temperature",
        |s| s["reported"]["temp"] == 7,
    )
    .await;
    drop(lb);
    server.stop().await.unwrap();
}
