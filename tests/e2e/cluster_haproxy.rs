//! Issue 15, a cluster as devices see it: three nodes of the real binary on
//! one Postgres database and a private nats-server, behind the real HAProxy
//! running deploy/haproxy.cfg. Every client (rumqttc, MQTT 5) connects to
//! HAProxy's MQTT frontend only, so which node it lands on is leastconn's
//! choice; the nodes' own metrics say where the clients went.
//!
//! 1. Subscribers spread over the nodes receive every QoS 1 message that
//!    publishers behind the same load balancer send, none lost, in order
//!    per publisher.
//! 2. Node 1 cut off from NATS: its clients get DISCONNECT 0x9C, its
//!    /readyz turns 503 and HAProxy takes it out; the clients reconnect
//!    through HAProxy, land on the other nodes with their sessions
//!    (Session Present 1) and keep receiving. With NATS back, node 1 is
//!    ready again and HAProxy sends it new clients.
//! 3. The REST API through HAProxy's HTTP frontend (round robin per
//!    request): one token from `fleetmq admin token` works on every node,
//!    devices made and deleted through it are listed the same by every
//!    node, and each node served its share of the writes.
//!
//! Skipped, saying so, without TEST_DATABASE_URL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use fleetmq_tests::cluster::Nodes;
use fleetmq_tests::haproxy::{Haproxy, Node};
use fleetmq_tests::rumqtt::{V5Incoming, v5_connected, v5_payloads, v5_publish_acked, v5_suback};
use fleetmq_tests::wait_connections;
use fleetmq_tests::{Api, Server, admin_token};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet};
use rumqttc::v5::{AsyncClient, MqttOptions};

const ANONYMOUS: &[&str] = &["--allow-anonymous", "dev"];
/// The lease TTL: a fenced node lets its clients go well before it ends.
const LEASE_TTL: Duration = Duration::from_secs(15);

/// Options for a client of HAProxy's MQTT frontend; `persistent`: Clean
/// Start 0 and a session that outlives the connection.
fn through(lb: &Haproxy, id: &str, persistent: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", lb.front.mqtt.port());
    o.set_keep_alive(Duration::from_secs(30));
    if persistent {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(3600));
    }
    o
}

/// A client through `lb` subscribed to `filter` at QoS 1; with the
/// CONNACK's Session Present.
async fn subscriber(
    lb: &Haproxy,
    id: &str,
    filter: &str,
    persistent: bool,
) -> (AsyncClient, V5Incoming, bool) {
    let (client, mut rx, present) = v5_connected(through(lb, id, persistent)).await;
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    v5_suback(&mut rx).await;
    (client, rx, present)
}

fn numbered(prefix: &str, from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("{prefix}-{i}")).collect()
}

fn servers(c: &Nodes) -> Vec<&Server> {
    c.nodes.iter().collect()
}

/// HAProxy logged, after the first `since` bytes of its stderr, that
/// node1 is `up_or_down` ("UP", "DOWN") in every backend: the MQTT
/// backends follow the HTTP check.
async fn haproxy_marks_node1(lb: &Haproxy, up_or_down: &str, since: usize) {
    for backend in ["http_nodes", "mqtt_nodes", "mqtts_nodes", "ws_nodes"] {
        lb.wait_log(&format!("{backend}/node1 is {up_or_down}"), since)
            .await;
    }
}

#[tokio::test]
async fn subscribers_spread_by_haproxy_receive_every_qos1_message_in_order() {
    const SUBSCRIBERS: usize = 4;
    const PER_PUBLISHER: usize = 150;
    let Some(c) = Nodes::start(3, ANONYMOUS).await else {
        return;
    };
    let lb = Haproxy::start(&Node::three(&c.nodes)).await.unwrap();
    let started = Instant::now();

    let mut subs = Vec::new();
    for i in 0..SUBSCRIBERS {
        subs.push(subscriber(&lb, &format!("sub-{i}"), "lb/#", false).await);
    }
    let counts = wait_connections(
        &servers(&c),
        |n| n.iter().sum::<f64>() == SUBSCRIBERS as f64,
        "every subscriber connected",
    )
    .await;
    let holding = counts.iter().filter(|&&n| n >= 1.0).count();
    println!("subscribers per node (leastconn through HAProxy): {counts:?}");
    assert!(holding >= 2, "subscribers on one node only: {counts:?}");

    // Two publishers through HAProxy (other nodes than some subscribers),
    // publishing at the same time.
    let (p0, mut r0, _) = v5_connected(through(&lb, "pub-0", false)).await;
    let (p1, mut r1, _) = v5_connected(through(&lb, "pub-1", false)).await;
    let (sent0, sent1) = (
        numbered("p0", 0, PER_PUBLISHER),
        numbered("p1", 0, PER_PUBLISHER),
    );
    let publish = Instant::now();
    tokio::join!(
        v5_publish_acked(&p0, &mut r0, "lb/p0", &sent0),
        v5_publish_acked(&p1, &mut r1, "lb/p1", &sent1),
    );
    println!(
        "{} QoS 1 messages acknowledged in {:?}",
        2 * PER_PUBLISHER,
        publish.elapsed()
    );

    for (i, (_client, rx, _)) in subs.iter_mut().enumerate() {
        let got = v5_payloads(rx, 2 * PER_PUBLISHER).await;
        let from = |p: &str| -> Vec<String> {
            got.iter()
                .filter(|m| m.starts_with(&format!("{p}-")))
                .cloned()
                .collect()
        };
        assert_eq!(from("p0"), sent0, "subscriber {i}: publisher 0's messages");
        assert_eq!(from("p1"), sent1, "subscriber {i}: publisher 1's messages");
    }
    println!(
        "{SUBSCRIBERS} subscribers got all {} messages each, in order per publisher; {:?} from the first connect",
        2 * PER_PUBLISHER,
        started.elapsed()
    );
    drop(subs);
    drop(lb);
    c.stop().await;
}

/// How the connection of `rx` ended, if it did (without waiting).
fn ended(rx: &mut V5Incoming) -> Option<String> {
    while let Ok(p) = rx.try_recv() {
        match p {
            Ok(Packet::Disconnect(d)) => return Some(format!("{:?}", d.reason_code)),
            Err(e) => return Some(e),
            Ok(_) => {}
        }
    }
    None
}

#[tokio::test]
async fn clients_of_a_node_cut_off_from_nats_move_through_haproxy_with_their_sessions() {
    const DEVICES: usize = 6;
    let Some((c, proxy)) = Nodes::start_first_cuttable(3, ANONYMOUS).await else {
        return;
    };
    let lb = Haproxy::start(&Node::three(&c.nodes)).await.unwrap();

    // Persistent subscribers through HAProxy, one after the other:
    // leastconn puts some on node 1.
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        let id = format!("dev-{i}");
        let (client, rx, present) = subscriber(&lb, &id, "fleet/#", true).await;
        assert!(!present, "{id}: a new session");
        devices.push((id, client, rx));
    }
    let counts = wait_connections(
        &servers(&c),
        |n| n.iter().sum::<f64>() == DEVICES as f64 && n[0] >= 1.0,
        "devices on every node, node 1 included",
    )
    .await;
    println!("devices per node before the cut: {counts:?}");
    let on_node1 = counts[0] as usize;

    // Node 1 loses NATS: the devices on it, and only those, are sent away.
    let cut = Instant::now();
    proxy.cut();
    let mut moved = Vec::new();
    while moved.len() < on_node1 {
        assert!(
            cut.elapsed() < LEASE_TTL,
            "after {:?} only {moved:?} of node 1's {on_node1} devices were sent away",
            cut.elapsed()
        );
        for (i, (id, _, rx)) in devices.iter_mut().enumerate() {
            if moved.iter().any(|&(m, _)| m == i) {
                continue;
            }
            if let Some(how) = ended(rx) {
                let expected = format!("{:?}", DisconnectReasonCode::UseAnotherServer);
                assert!(
                    how.contains(&expected) && !how.contains("Io("),
                    "{id}: expected DISCONNECT {expected}, got {how}"
                );
                moved.push((i, cut.elapsed()));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("node 1's devices got DISCONNECT 0x9C at {moved:?} after the cut");
    assert_eq!(c.node(0).readyz().await, 503, "node 1 fenced: not ready");
    assert_eq!(c.node(1).readyz().await, 200);
    assert_eq!(c.node(2).readyz().await, 200);

    // HAProxy's /readyz check takes node 1 out of every backend.
    haproxy_marks_node1(&lb, "DOWN", 0).await;
    println!("HAProxy took node 1 out {:?} after the cut", cut.elapsed());

    // The sent-away devices reconnect through HAProxy: other nodes, same
    // sessions (their subscriptions came with them).
    for &(i, _) in &moved {
        let (id, client, rx) = &mut devices[i];
        let (again, new_rx, present) = v5_connected(through(&lb, id, true)).await;
        assert!(
            present,
            "{id}: the session did not come along (Session Present 0)"
        );
        (*client, *rx) = (again, new_rx);
    }
    println!(
        "{} devices resumed their sessions {:?} after the cut",
        moved.len(),
        cut.elapsed()
    );
    let counts = wait_connections(
        &servers(&c),
        |n| n[0] == 0.0 && n.iter().sum::<f64>() == DEVICES as f64,
        "every device back, none on node 1",
    )
    .await;
    println!("devices per node after the move: {counts:?}");
    // None of the others was disconnected.
    for (id, _, rx) in &mut devices {
        assert_eq!(ended(rx), None, "{id} lost its connection");
    }

    // Everybody keeps receiving what a publisher through HAProxy sends.
    let (publisher, mut pr, _) = v5_connected(through(&lb, "pub", false)).await;
    let sent = numbered("after-cut", 0, 50);
    v5_publish_acked(&publisher, &mut pr, "fleet/a", &sent).await;
    for (id, _, rx) in &mut devices {
        assert_eq!(v5_payloads(rx, sent.len()).await, sent, "{id}");
    }

    // NATS back: node 1 is ready again, HAProxy puts it back and (fewest
    // connections) gives it the next device, which receives too.
    let since = lb.stderr().len();
    proxy.restore();
    let back = c.node(0).readyz_becomes(200).await;
    println!("node 1 ready again {back:?} after the proxy was restored");
    haproxy_marks_node1(&lb, "UP", since).await;
    let (_late, mut late_rx, _) = subscriber(&lb, "late", "fleet/#", false).await;
    wait_connections(
        &servers(&c),
        |n| n[0] == 1.0,
        "the next device lands on node 1",
    )
    .await;
    let last = numbered("back", 0, 5);
    v5_publish_acked(&publisher, &mut pr, "fleet/b", &last).await;
    assert_eq!(v5_payloads(&mut late_rx, last.len()).await, last, "late");
    for (id, _, rx) in &mut devices {
        assert_eq!(v5_payloads(rx, last.len()).await, last, "{id}");
    }

    drop(devices);
    drop(lb);
    c.stop().await;
}

/// POST requests a node answered with `route` (its `http_requests_total`).
fn posts_to(metrics: &str, route: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .filter(|l| l.contains("method=\"POST\"") && l.contains(&format!("route=\"{route}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_rest_api_through_haproxy_is_one_api_whichever_node_answers() {
    const DEVICES: usize = 30;
    const DEVICES_ROUTE: &str = "/v1/tenants/{t}/devices";
    let Some(c) = Nodes::start(3, ANONYMOUS).await else {
        return;
    };
    let lb = Haproxy::start(&Node::three(&c.nodes)).await.unwrap();
    let token = admin_token(
        c.dirs[0].path(),
        &["--role", "platform-admin", "--database-url", c.db.url()],
    )
    .await;
    let api = Api {
        base: lb.url(""),
        token,
        http: reqwest::Client::new(),
    };
    api.post(
        "/v1/tenants",
        serde_json::json!({"id": "acme", "name": "Acme"}),
    )
    .await;
    for i in 0..DEVICES {
        api.post(
            "/v1/tenants/acme/devices",
            serde_json::json!({"id": format!("lb-{i}")}),
        )
        .await;
    }
    for i in (0..DEVICES).step_by(3) {
        api.delete(&format!("/v1/tenants/acme/devices/lb-{i}"))
            .await;
    }
    // Round robin: consecutive reads come from different nodes, and each
    // lists the same devices.
    let mut listed = Vec::new();
    for _ in 0..3 {
        let page = api.get("/v1/tenants/acme/devices?limit=100").await;
        let mut ids: Vec<String> = page["items"]
            .as_array()
            .expect("a device page")
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        listed.push(ids);
    }
    let mut expected: Vec<String> = (0..DEVICES)
        .filter(|i| i % 3 != 0)
        .map(|i| format!("lb-{i}"))
        .collect();
    expected.sort();
    for ids in &listed {
        assert_eq!(ids, &expected);
    }
    let mut writes = Vec::new();
    for i in 0..3 {
        writes.push(posts_to(&c.metrics(i).await, DEVICES_ROUTE));
    }
    println!("device creations served per node through HAProxy: {writes:?}");
    assert_eq!(writes.iter().sum::<f64>(), DEVICES as f64);
    assert!(
        writes.iter().all(|&n| n >= 1.0),
        "a node served no write: {writes:?}"
    );
    drop(lb);
    c.stop().await;
}
