//! Issue 15, client ids unique per tenant across the cluster: three nodes
//! of the real binary on one Postgres database and a private nats-server,
//! driven by rumqttc (a client we did not write). A CONNECT on node 2
//! takes the client id over from node 1: node 1's connection ends with
//! DISCONNECT 0x8E, the persistent session moves with its subscriptions
//! and the QoS 1 messages queued for it (Session Present 1), and what is
//! published on node 3 afterwards reaches it on node 2. Skipped, saying
//! so, without TEST_DATABASE_URL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fleetmq_tests::Server;
use fleetmq_tests::cluster::Nodes;
use fleetmq_tests::rumqtt::{
    V5Incoming, next, v5, v5_connected, v5_payloads, v5_publish_acked, v5_suback,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, MqttOptions};

const EXPIRY: u32 = 300;

/// A rumqttc v5 client on `node` with a persistent session (Clean Start
/// 0, expiry [`EXPIRY`]); returns the CONNACK's Session Present.
async fn persistent(node: &Server, id: &str) -> (AsyncClient, V5Incoming, bool) {
    let mut o = MqttOptions::new(id, "127.0.0.1", node.mqtt().port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(EXPIRY));
    v5_connected(o).await
}

/// Waits for the connection of `rx` to end with DISCONNECT 0x8E Session
/// taken over (rumqttc ends its event loop with it as the error).
async fn taken_over(rx: &mut V5Incoming) {
    let ended = next(rx, |p| match p {
        Ok(Packet::Disconnect(d)) => Some(format!("{:?}", d.reason_code)),
        Err(e) => Some(e),
        _ => None,
    })
    .await;
    assert!(
        ended.contains("SessionTakenOver"),
        "the connection ended otherwise: {ended}"
    );
}

fn numbered(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("m{i}")).collect()
}

async fn anonymous_nodes() -> Option<Nodes> {
    Nodes::start(3, &["--allow-anonymous", "dev"]).await
}

#[tokio::test]
async fn a_connect_on_another_node_takes_the_session_over_and_it_moves() {
    let Some(c) = anonymous_nodes().await else {
        return;
    };
    let (x1, mut r1, present) = persistent(c.node(0), "mover").await;
    assert!(!present, "a new session");
    x1.subscribe("take/#", QoS::AtLeastOnce).await.unwrap();
    v5_suback(&mut r1).await;

    let mut p = MqttOptions::new("pub-3", "127.0.0.1", c.node(2).mqtt().port());
    p.set_keep_alive(Duration::from_secs(30));
    let (publisher, mut pr, _task) = v5(p);
    v5_publish_acked(&publisher, &mut pr, "take/a", &numbered(0, 1)).await;
    assert_eq!(
        v5_payloads(&mut r1, 1).await,
        numbered(0, 1),
        "routed to node 1"
    );

    // The same client id on node 2: node 1's connection is taken over.
    let (_x2, mut r2, present) = persistent(c.node(1), "mover").await;
    assert!(present, "the session moved: Session Present 1");
    taken_over(&mut r1).await;

    // Its subscription came with it: node 3's messages arrive on node 2.
    v5_publish_acked(&publisher, &mut pr, "take/b", &numbered(1, 21)).await;
    assert_eq!(v5_payloads(&mut r2, 20).await, numbered(1, 21));
    c.stop().await;
}

#[tokio::test]
async fn qos_1_messages_queued_while_offline_on_one_node_arrive_on_another() {
    let Some(c) = anonymous_nodes().await else {
        return;
    };
    let (x1, mut r1, _) = persistent(c.node(0), "wanderer").await;
    x1.subscribe("queue/#", QoS::AtLeastOnce).await.unwrap();
    v5_suback(&mut r1).await;
    x1.disconnect().await.unwrap();
    // The event loop ends once the connection is closed.
    next(&mut r1, |p| p.err()).await;

    let mut p = MqttOptions::new("pub-3", "127.0.0.1", c.node(2).mqtt().port());
    p.set_keep_alive(Duration::from_secs(30));
    let (publisher, mut pr, _task) = v5(p);
    let sent = numbered(0, 50);
    v5_publish_acked(&publisher, &mut pr, "queue/x", &sent).await;

    let (x2, mut r2, present) = persistent(c.node(1), "wanderer").await;
    assert!(present, "the session moved: Session Present 1");
    assert_eq!(
        v5_payloads(&mut r2, sent.len()).await,
        sent,
        "none lost, in order"
    );
    // And it keeps receiving on node 2.
    v5_publish_acked(&publisher, &mut pr, "queue/y", &numbered(50, 51)).await;
    assert_eq!(v5_payloads(&mut r2, 1).await, numbered(50, 51));

    // Back to node 1, offline in between: node 1 let go of its copy, so
    // what it gets there is what was queued since, once each.
    x2.disconnect().await.unwrap();
    next(&mut r2, |p| p.err()).await;
    let more = numbered(51, 61);
    v5_publish_acked(&publisher, &mut pr, "queue/z", &more).await;
    let (_x3, mut r3, present) = persistent(c.node(0), "wanderer").await;
    assert!(present);
    assert_eq!(v5_payloads(&mut r3, more.len()).await, more);
    let extra = tokio::time::timeout(Duration::from_millis(700), v5_payloads(&mut r3, 1)).await;
    assert!(extra.is_err(), "a message came twice: {extra:?}");
    c.stop().await;
}

#[tokio::test]
async fn a_clean_start_on_another_node_ends_the_old_connection_too() {
    let Some(c) = anonymous_nodes().await else {
        return;
    };
    let (x1, mut r1, _) = persistent(c.node(0), "fresh").await;
    x1.subscribe("clean/#", QoS::AtLeastOnce).await.unwrap();
    v5_suback(&mut r1).await;

    let mut o = MqttOptions::new("fresh", "127.0.0.1", c.node(1).mqtt().port());
    o.set_keep_alive(Duration::from_secs(30));
    let (_x2, mut r2, _task) = v5(o);
    let present = next(&mut r2, |p| match p {
        Ok(Packet::ConnAck(ack)) => Some(ack.session_present),
        Err(e) => panic!("connect failed: {e}"),
        _ => None,
    })
    .await;
    assert!(!present, "Clean Start discards the session");
    taken_over(&mut r1).await;
    c.stop().await;
}
