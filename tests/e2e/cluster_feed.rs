//! Issue 15, the change feed between nodes: two nodes of the real binary
//! on one Postgres database and a private `nats-server`. A change made
//! through one node's REST API reaches a session on the other: a revoked
//! certificate and a deleted device end it (DISCONNECT 0x98, timed: the
//! bound is 1 s, asserted loosely here and printed for the record), and a
//! narrowed policy removes its live subscription (DISCONNECT 0x87). A
//! tenant CA made on one node is trusted on the other at once (the device
//! gets its certificate from node 1 and connects to node 2).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use fleetmq_tests::cluster::Nodes;
use fleetmq_tests::{Api, Server, admin_token, alerts_policy, tls_client};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use serde_json::json;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// How long anything awaited here may take; the figures that matter are
/// printed.
const WAIT: Duration = Duration::from_secs(20);
/// The loose bound asserted on a change reaching another node (the
/// target is 1 s; CI machines are shared).
const LOOSE_BOUND: Duration = Duration::from_secs(5);

/// One node: its working directory (data dir `fleetmq-data` inside).
/// Two nodes, tenant `acme` made through node 1, and a platform-admin API
/// on node 1; `None` (skipped, saying so) without a Postgres to test on.
async fn two_nodes_with_acme() -> Option<(Nodes, Api)> {
    let nodes = Nodes::start(2, &[]).await?;
    let token = admin_token(
        nodes.dirs[0].path(),
        &["--role", "platform-admin", "--database-url", nodes.db.url()],
    )
    .await;
    let api = Api::new(nodes.node(0), &token);
    api.post("/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    Some((nodes, api))
}

/// An MQTT 5 client (rumqttc) and what its connection saw, as lines:
/// `connack Success true`, `suback`, `publish TOPIC`, `disconnect REASON`,
/// `closed ERROR`.
struct Client {
    client: AsyncClient,
    seen: UnboundedReceiver<String>,
}

impl Client {
    fn start(opts: MqttOptions) -> Client {
        let (client, mut el) = AsyncClient::new(opts, 100);
        let (tx, seen) = unbounded_channel();
        tokio::spawn(async move {
            loop {
                let line = match el.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(a))) => {
                        format!("connack {:?} {}", a.code, a.session_present)
                    }
                    Ok(Event::Incoming(Packet::SubAck(a))) => {
                        format!("suback {:?}", a.return_codes)
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        format!("publish {}", String::from_utf8_lossy(&p.topic))
                    }
                    Ok(Event::Incoming(Packet::Disconnect(d))) => {
                        format!("disconnect {:?}", d.reason_code)
                    }
                    Ok(_) => continue,
                    // rumqttc hands a server's DISCONNECT over as an error.
                    Err(ConnectionError::MqttState(StateError::ServerDisconnect {
                        reason_code,
                        ..
                    })) => {
                        let _ = tx.send(format!("disconnect {reason_code:?}"));
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(format!("closed {e}"));
                        return;
                    }
                };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Client { client, seen }
    }

    /// The next line starting with `prefix`, skipping others.
    async fn until(&mut self, prefix: &str) -> String {
        tokio::time::timeout(WAIT, async {
            loop {
                let line = self.seen.recv().await.expect("the event loop ended");
                if line.starts_with(prefix) {
                    return line;
                }
                assert!(!line.starts_with("closed"), "waiting for {prefix}: {line}");
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {prefix} in time"))
    }
}

fn password_options(server: &Server, client_id: &str, user: &str, password: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", server.mqtt().port());
    opts.set_credentials(user, password);
    opts.set_keep_alive(Duration::from_secs(30));
    opts
}

/// The time from `start` until `client` hears DISCONNECT, with its reason.
async fn time_to_disconnect(client: &mut Client, start: Instant) -> (Duration, String) {
    let line = client.until("disconnect").await;
    (start.elapsed(), line)
}

#[tokio::test]
async fn a_revocation_or_deletion_through_one_node_ends_the_session_on_another() {
    let Some((nodes, api)) = two_nodes_with_acme().await else {
        return;
    };
    let two = nodes.node(1);
    api.post("/v1/tenants/acme/devices", json!({"id": "d1"}))
        .await;
    // The tenant's CA is made on node 1 (first certificate); node 2 trusts
    // it through the feed.
    let issued = api
        .post("/v1/tenants/acme/devices/d1/certificates", json!({}))
        .await;
    let cert =
        CertificateDer::from_pem_slice(issued["certificate_pem"].as_str().unwrap().as_bytes())
            .unwrap();
    let key =
        PrivatePkcs8KeyDer::from_pem_slice(issued["private_key_pem"].as_str().unwrap().as_bytes())
            .unwrap()
            .secret_pkcs8_der()
            .to_vec();
    let serial = issued["serial"].as_str().unwrap();

    let mut opts = MqttOptions::new("d1", "localhost", two.mqtts().port());
    opts.set_transport(tls_client::transport(two, cert, key));
    let mut device = Client::start(opts);
    assert_eq!(device.until("connack").await, "connack Success false");

    let start = Instant::now();
    api.post(
        &format!("/v1/tenants/acme/devices/d1/certificates/{serial}/revoke"),
        json!({}),
    )
    .await;
    let rest = start.elapsed();
    let (took, why) = time_to_disconnect(&mut device, start).await;
    println!(
        "certificate revoked on node 1 -> session on node 2 ended: {} ms (REST answered in {} ms)",
        took.as_millis(),
        rest.as_millis()
    );
    assert_eq!(why, "disconnect AdministrativeAction");
    assert!(took < LOOSE_BOUND, "{took:?}");

    // A password device on node 2, deleted through node 1.
    let (user, password) = api.password_device("acme", "d2").await;
    let mut device = Client::start(password_options(two, "d2", &user, &password));
    assert_eq!(device.until("connack").await, "connack Success false");
    let start = Instant::now();
    api.delete("/v1/tenants/acme/devices/d2").await;
    let (took, why) = time_to_disconnect(&mut device, start).await;
    println!(
        "device deleted on node 1 -> session on node 2 ended: {} ms",
        took.as_millis()
    );
    assert_eq!(why, "disconnect AdministrativeAction");
    assert!(took < LOOSE_BOUND, "{took:?}");
    // And it is refused there from now on.
    let mut again = Client::start(password_options(two, "d2", &user, &password));
    let refused = again.until("c").await;
    assert!(
        refused.contains("NotAuthorized") || refused.contains("BadUserNamePassword"),
        "{refused}"
    );

    nodes.stop().await;
}

#[tokio::test]
async fn a_policy_narrowed_through_one_node_removes_subscriptions_on_another() {
    let Some((nodes, api)) = two_nodes_with_acme().await else {
        return;
    };
    let two = nodes.node(1);
    api.put("/v1/tenants/acme/policies/devices", alerts_policy(true))
        .await;
    let (user, password) = api.password_device("acme", "d3").await;
    let mut device = Client::start(password_options(two, "d3", &user, &password));
    assert_eq!(device.until("connack").await, "connack Success false");
    device
        .client
        .subscribe("alerts/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(
        device.until("suback").await,
        "suback [Success(AtLeastOnce)]"
    );

    let start = Instant::now();
    api.put("/v1/tenants/acme/policies/devices", alerts_policy(false))
        .await;
    let (took, why) = time_to_disconnect(&mut device, start).await;
    println!(
        "policy narrowed on node 1 -> subscription on node 2 removed: {} ms",
        took.as_millis()
    );
    assert_eq!(why, "disconnect NotAuthorized");
    assert!(took < LOOSE_BOUND, "{took:?}");

    nodes.stop().await;
}
