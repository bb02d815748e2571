//! Issue 15, webhooks in a cluster: three nodes of the real binary on one
//! Postgres database and a private `nats-server`, every node running its
//! delivery worker on the shared outbox. REST changes made through all
//! three nodes reach the receiver once each (one `webhook-id`, one 2xx),
//! in order per device. Then the receiver holds a delivery without
//! answering, the test finds which node's socket it is (`ss`) and kills
//! that node with SIGKILL: a surviving node delivers the event once the
//! dead node's claim has run out (request timeout plus the worker's lease
//! margin), with the same `webhook-id`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use fleetmq_tests::cluster::Nodes;
use fleetmq_tests::{Api, admin_token, poll_until};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// Devices made (and deleted) in the first part.
const DEVICES: usize = 30;
/// A dead node's claim runs out after the request timeout (2 s here) plus
/// the worker's 30 s lease margin; the rest is slack for a shared machine.
const TAKEOVER_WAIT: Duration = Duration::from_secs(75);
const WAIT: Duration = Duration::from_secs(30);

/// One request the receiver answered.
#[derive(Debug, Clone)]
struct Hit {
    webhook_id: String,
    body: Value,
}

impl Hit {
    fn event(&self) -> (&str, &str) {
        (
            self.body["type"].as_str().unwrap_or_default(),
            self.body["data"]["device_id"].as_str().unwrap_or_default(),
        )
    }
}

/// Answers 200 and records, or (while `stall` is set) records the caller's
/// address and never answers.
#[derive(Default)]
struct Receiver {
    stall: AtomicBool,
    answered: Mutex<Vec<Hit>>,
    stalled: Mutex<Vec<(SocketAddr, Hit)>>,
    never: Notify,
}

async fn hook(
    State(rx): State<Arc<Receiver>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let hit = Hit {
        webhook_id: headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    if rx.stall.load(Ordering::SeqCst) {
        rx.stalled.lock().unwrap().push((peer, hit));
        rx.never.notified().await;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    rx.answered.lock().unwrap().push(hit);
    StatusCode::OK
}

async fn receiver() -> (String, Arc<Receiver>) {
    let state = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    (url, state)
}

/// The pid of the process whose TCP socket has local port `port` (ours:
/// `ss` shows the owner of the current user's sockets).
async fn pid_with_local_port(port: u16) -> Option<u32> {
    let out = tokio::process::Command::new("ss")
        .args(["-Htnp", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .await
        .expect("ss runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find("pid=")? + 4;
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[tokio::test]
async fn each_event_is_delivered_once_by_the_cluster_and_a_killed_nodes_delivery_is_taken_over() {
    let Some(mut nodes) = Nodes::start(
        3,
        &["--webhook-allow-private", "--webhook-request-timeout", "2s"],
    )
    .await
    else {
        return;
    };
    let token = admin_token(
        nodes.dirs[0].path(),
        &["--role", "platform-admin", "--database-url", nodes.db.url()],
    )
    .await;
    let apis: Vec<Api> = nodes.nodes.iter().map(|n| Api::new(n, &token)).collect();
    apis[0]
        .post("/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    let (url, rx) = receiver().await;
    apis[0]
        .post(
            "/v1/tenants/acme/webhooks",
            json!({"url": url, "events": ["device.created", "device.deleted"]}),
        )
        .await;

    // Changes through every node: each device made on one and deleted on
    // the next.
    for i in 0..DEVICES {
        apis[i % 3]
            .post("/v1/tenants/acme/devices", json!({"id": format!("d{i}")}))
            .await;
    }
    for i in 0..DEVICES {
        apis[(i + 1) % 3]
            .delete(&format!("/v1/tenants/acme/devices/d{i}"))
            .await;
    }
    poll_until(WAIT, "every event delivered", async || {
        match rx.answered.lock().unwrap().len() {
            n if n >= 2 * DEVICES => Ok(()),
            n => Err(format!("{n} of {} delivered", 2 * DEVICES)),
        }
    })
    .await;
    // Let a second delivery of any event, if the cluster made one, arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hits = rx.answered.lock().unwrap().clone();
    assert_eq!(
        hits.len(),
        2 * DEVICES,
        "an event delivered twice: {hits:#?}"
    );
    let ids: HashSet<&str> = hits.iter().map(|h| h.webhook_id.as_str()).collect();
    assert_eq!(ids.len(), 2 * DEVICES, "a webhook-id seen twice");
    let mut order: HashMap<&str, Vec<&str>> = HashMap::new();
    for hit in &hits {
        let (kind, device) = hit.event();
        order.entry(device).or_default().push(kind);
    }
    for i in 0..DEVICES {
        assert_eq!(
            order.get(format!("d{i}").as_str()),
            Some(&vec!["device.created", "device.deleted"]),
            "d{i}'s events out of order or missing"
        );
    }
    println!(
        "{} events made through 3 nodes: each delivered once, in order per device",
        2 * DEVICES
    );

    // A node dies holding a delivery.
    rx.stall.store(true, Ordering::SeqCst);
    apis[1]
        .post("/v1/tenants/acme/devices", json!({"id": "late"}))
        .await;
    let (peer, held) = poll_until(WAIT, "a node holding the delivery", async || {
        rx.stalled
            .lock()
            .unwrap()
            .first()
            .cloned()
            .ok_or("nothing held yet".to_owned())
    })
    .await;
    assert_eq!(held.event(), ("device.created", "late"));
    let pid = pid_with_local_port(peer.port())
        .await
        .expect("the holding node's socket");
    let holder = nodes
        .nodes
        .iter()
        .position(|n| n.pid() == pid)
        .expect("the holder is one of the nodes");
    rx.stall.store(false, Ordering::SeqCst);
    let killed = Instant::now();
    nodes.nodes[holder].signal("KILL").await.unwrap();
    let mut dead = nodes.nodes.remove(holder);
    dead.wait(WAIT).await.expect("the killed node exits");
    println!("node-{} held the delivery and was killed", holder + 1);

    let delivered = poll_until(TAKEOVER_WAIT, "the held delivery taken over", async || {
        rx.answered
            .lock()
            .unwrap()
            .iter()
            .find(|h| h.event() == ("device.created", "late"))
            .cloned()
            .ok_or("not yet".to_owned())
    })
    .await;
    println!(
        "delivered by a surviving node {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(delivered.webhook_id, held.webhook_id, "same delivery id");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let late = rx
        .answered
        .lock()
        .unwrap()
        .iter()
        .filter(|h| h.event().1 == "late")
        .count();
    assert_eq!(late, 1, "the taken-over delivery answered once");
    rx.never.notify_waiters();
    drop(dead);
    nodes.stop().await;
}
