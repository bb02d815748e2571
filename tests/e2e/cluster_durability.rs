//! Issue 15, acknowledged means durable across nodes: nodes of the real
//! binary on one Postgres database and a private nats-server (node 1
//! reaching it through a TCP proxy where a test cuts it), driven by
//! rumqttc (a client we did not write).
//!
//! - A persistent session hops between the three nodes (a clean
//!   DISCONNECT then CONNECT elsewhere, or a CONNECT elsewhere taking the
//!   live connection over) while two publishers on node 3 send QoS 1
//!   without pause: every message whose PUBACK was a success arrives, in
//!   each publisher's order; duplicates are counted and reported.
//! - A QoS 1 publish on a node cut off from NATS is never acknowledged as
//!   a success: v5 gets a PUBACK with an error reason code, v3.1.1 its
//!   connection closed (the journal cannot ack).
//! - Messages published on node 2 while node 1's connection to NATS is
//!   down (shorter than the fence's grace) reach node 1's subscriber once
//!   NATS is back: node 1 replays the journal since the gap began.
//!
//! Skipped, saying so, without TEST_DATABASE_URL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fleetmq_tests::Server;
use fleetmq_tests::cluster::Nodes;
use fleetmq_tests::rumqtt::{V5Incoming, next, v5, v5_connected, v5_publish_acked, v5_suback};
use rumqttc::v5::MqttOptions;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};

const ANONYMOUS: [&str; 2] = ["--allow-anonymous", "dev"];

fn opts(node: &Server, id: &str, persistent: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", node.mqtt().port());
    o.set_keep_alive(Duration::from_secs(30));
    if persistent {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(600));
    }
    o
}

/// Whether a v5 PUBACK says the message was taken.
fn taken(reason: &PubAckReason) -> bool {
    matches!(
        reason,
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers
    )
}

/// Publishes `{name}-{i}` on `load/{name}` at QoS 1 from `node` until
/// `stop`, at most `window` unacknowledged; returns the payloads whose
/// PUBACK was a success, in order, and how many were refused.
async fn load(
    node: &Server,
    name: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<String>, usize)> {
    let (client, mut rx, _) = v5_connected(opts(node, name, false)).await;
    tokio::spawn(async move {
        let window = 20;
        let mut sent = std::collections::VecDeque::new();
        let (mut acked, mut refused) = (Vec::new(), 0);
        let mut i = 0u32;
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            if !stopping {
                let payload = format!("{name}-{i:06}");
                i += 1;
                client
                    .publish(
                        format!("load/{name}"),
                        QoS::AtLeastOnce,
                        false,
                        payload.clone(),
                    )
                    .await
                    .unwrap();
                sent.push_back(payload);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            if sent.is_empty() {
                break;
            }
            if sent.len() < window && !stopping {
                continue;
            }
            // PUBACKs come in publish order on one connection.
            let reason = next(&mut rx, |p| match p {
                Ok(Packet::PubAck(a)) => Some(a.reason),
                Err(e) => panic!("publisher {name} failed: {e}"),
                _ => None,
            })
            .await;
            let payload = sent.pop_front().unwrap();
            match taken(&reason) {
                true => acked.push(payload),
                false => refused += 1,
            }
        }
        (acked, refused)
    })
}

/// Application messages `rx` brings within `dwell`, into `got`; whether
/// the connection ended.
async fn drain(rx: &mut V5Incoming, dwell: Duration, got: &mut Vec<String>) -> bool {
    let deadline = tokio::time::Instant::now() + dwell;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => return false,
            Ok(None) | Ok(Some(Err(_))) => return true,
            Ok(Some(Ok(Packet::Publish(p)))) => {
                got.push(String::from_utf8(p.payload.to_vec()).unwrap());
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

#[tokio::test]
async fn a_session_hopping_between_nodes_under_qos_1_load_misses_nothing() {
    let Some(c) = Nodes::start(3, &ANONYMOUS).await else {
        return;
    };
    let (mut client, mut rx, _) = v5_connected(opts(c.node(0), "hopper", true)).await;
    client.subscribe("load/#", QoS::AtLeastOnce).await.unwrap();
    v5_suback(&mut rx).await;

    let stop = Arc::new(AtomicBool::new(false));
    let publishers = [
        load(c.node(2), "alpha", stop.clone()).await,
        load(c.node(2), "beta", stop.clone()).await,
    ];
    let mut got = Vec::new();
    // (to node, live takeover rather than disconnect first)
    let hops = [(1, false), (0, true), (2, false), (1, true), (0, false)];
    let dwell = Duration::from_millis(800);
    for (to, live) in hops {
        assert!(!drain(&mut rx, dwell, &mut got).await, "connection ended");
        let began = Instant::now();
        if !live {
            client.disconnect().await.unwrap();
            let ended = drain(&mut rx, Duration::from_secs(10), &mut got).await;
            assert!(ended, "the connection did not end after DISCONNECT");
        }
        let (next_client, next_rx, present) = v5_connected(opts(c.node(to), "hopper", true)).await;
        assert!(present, "the session moved to node {}", to + 1);
        if live {
            let ended = drain(&mut rx, Duration::from_secs(10), &mut got).await;
            assert!(ended, "the old connection was not taken over");
        }
        println!(
            "hop to node {} ({}) in {:?}; {} messages so far",
            to + 1,
            if live {
                "takeover"
            } else {
                "disconnect, connect"
            },
            began.elapsed(),
            got.len()
        );
        (client, rx) = (next_client, next_rx);
    }
    assert!(!drain(&mut rx, dwell, &mut got).await);
    stop.store(true, Ordering::Relaxed);
    let mut acked: Vec<String> = Vec::new();
    let mut refused = 0;
    for p in publishers {
        let (a, r) = p.await.unwrap();
        acked.extend(a);
        refused += r;
    }
    // Everything acknowledged arrives (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(30);
    let wanted: HashSet<&String> = acked.iter().collect();
    while Instant::now() < deadline {
        let have: HashSet<&String> = got.iter().collect();
        if wanted.is_subset(&have) {
            break;
        }
        drain(&mut rx, Duration::from_millis(500), &mut got).await;
    }
    drain(&mut rx, Duration::from_millis(500), &mut got).await;

    // Per publisher: first copies in publish order; the rest duplicates.
    let mut last: HashMap<&str, &str> = HashMap::new();
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    for m in &got {
        if !seen.insert(m.as_str()) {
            duplicates += 1;
            continue;
        }
        let (publisher, _) = m.split_once('-').unwrap();
        if let Some(before) = last.insert(publisher, m.as_str()) {
            assert!(before < m.as_str(), "{m} arrived after {before}");
        }
    }
    let missing: Vec<&&String> = wanted
        .iter()
        .filter(|m| !seen.contains(m.as_str()))
        .collect();
    println!(
        "{} acknowledged ({} refused), {} received, {} duplicates, {} missing",
        acked.len(),
        refused,
        got.len(),
        duplicates,
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged but never delivered: {missing:?}"
    );
    assert_eq!(refused, 0, "publishes refused with NATS up");
    assert!(acked.len() > 500, "too little load: {}", acked.len());
    c.stop().await;
}

/// A rumqttc 3.1.1 client on `node`, once its CONNACK came.
async fn v3_connected(node: &Server, id: &str) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let mut o = rumqttc::MqttOptions::new(id, "127.0.0.1", node.mqtt().port());
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut el) = rumqttc::AsyncClient::new(o, 10);
    loop {
        match tokio::time::timeout(Duration::from_secs(20), el.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("3.1.1 connect failed: {other:?}"),
        }
    }
    (client, el)
}

/// Whether a QoS 1 publish from a 3.1.1 client gets a PUBACK
/// (`Some(true)`) or its connection closes first (`Some(false)`) within
/// `wait`.
async fn v3_publish_acked(
    client: &rumqttc::AsyncClient,
    el: &mut rumqttc::EventLoop,
    wait: Duration,
) -> Option<bool> {
    client
        .publish("cut/v3", rumqttc::QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    tokio::time::timeout(wait, async {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .ok()
}

#[tokio::test]
async fn a_qos_1_publish_the_journal_cannot_ack_is_not_a_success() {
    let Some((c, proxy)) = Nodes::start_first_cuttable(2, &ANONYMOUS).await else {
        return;
    };
    let (publisher, mut rx, _) = v5_connected(opts(c.node(0), "cut-pub", false)).await;
    // Journaled while NATS is there.
    v5_publish_acked(&publisher, &mut rx, "cut/a", &["before".to_owned()]).await;
    let (v3, mut v3_loop) = v3_connected(c.node(0), "cut-v3").await;
    assert_eq!(
        v3_publish_acked(&v3, &mut v3_loop, Duration::from_secs(10)).await,
        Some(true),
        "3.1.1 publish with NATS up"
    );

    proxy.cut();
    let cut = Instant::now();
    publisher
        .publish("cut/a", QoS::AtLeastOnce, false, "during")
        .await
        .unwrap();
    // 3.1.1 cannot say no in a PUBACK: its connection closes instead.
    let v3_outcome = tokio::spawn(async move {
        let outcome = v3_publish_acked(&v3, &mut v3_loop, Duration::from_secs(15)).await;
        (outcome, cut.elapsed())
    });
    let outcome = next(&mut rx, |p| match p {
        Ok(Packet::PubAck(a)) => Some(format!("PUBACK {:?}", a.reason)),
        Ok(Packet::Disconnect(d)) => Some(format!("DISCONNECT {:?}", d.reason_code)),
        Err(e) => Some(format!("closed: {e}")),
        _ => None,
    })
    .await;
    println!(
        "v5 QoS 1 publish with NATS cut: {outcome} after {:?}",
        cut.elapsed()
    );
    assert!(
        !outcome.contains("Success") && !outcome.contains("NoMatchingSubscribers"),
        "acknowledged as a success without the journal: {outcome}"
    );
    assert!(
        outcome.contains("ImplementationSpecificError"),
        "expected PUBACK 0x83 within the ack bound, before the fence: {outcome}"
    );
    let (v3_outcome, after) = v3_outcome.await.unwrap();
    println!(
        "v3.1.1 QoS 1 publish with NATS cut: {v3_outcome:?} (Some(false): closed) after {after:?}"
    );
    assert_eq!(
        v3_outcome,
        Some(false),
        "3.1.1 publish acknowledged, or left hanging, without the journal"
    );

    proxy.restore();
    c.node(0).readyz_becomes(200).await;
    c.stop().await;
}

#[tokio::test]
async fn what_a_node_missed_while_cut_off_from_nats_is_replayed_to_its_sessions() {
    let Some((c, proxy)) = Nodes::start_first_cuttable(2, &ANONYMOUS).await else {
        return;
    };
    let (sub, mut srx, _) = v5_connected(opts(c.node(0), "listener", true)).await;
    sub.subscribe("gap/#", QoS::AtLeastOnce).await.unwrap();
    v5_suback(&mut srx).await;
    let (_plain, mut prx, _) = v5_connected(opts(c.node(0), "plain", false)).await;
    _plain.subscribe("gap/#", QoS::AtLeastOnce).await.unwrap();
    v5_suback(&mut prx).await;

    let (publisher, mut rx, _task) = v5(opts(c.node(1), "gap-pub", false));
    v5_publish_acked(&publisher, &mut rx, "gap/a", &["before".to_owned()]).await;
    let mut got = Vec::new();
    drain(&mut srx, Duration::from_millis(300), &mut got).await;
    assert_eq!(got, ["before"]);
    // Past the replay's margin before the gap.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Node 1 loses NATS for less than the fence's grace: its clients stay.
    proxy.cut();
    let cut = Instant::now();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let missed: Vec<String> = (0..20).map(|i| format!("m{i:02}")).collect();
    v5_publish_acked(&publisher, &mut rx, "gap/b", &missed).await;
    proxy.restore();
    println!(
        "published {} during a gap of {:?}",
        missed.len(),
        cut.elapsed()
    );

    for (name, rx) in [("persistent", &mut srx), ("clean", &mut prx)] {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < missed.len() && Instant::now() < deadline {
            assert!(
                !drain(rx, Duration::from_millis(250), &mut got).await,
                "the {name} subscriber's connection ended"
            );
        }
        drain(rx, Duration::from_millis(500), &mut got).await;
        got.retain(|m| m != "before");
        println!(
            "{name} subscriber on node 1: {} of {} replayed after NATS came back ({:?} after the cut)",
            got.len(),
            missed.len(),
            cut.elapsed()
        );
        assert_eq!(got, missed, "replayed in order, once each");
    }
    let replayed =
        fleetmq_tests::metric(&c.metrics(0).await, "cluster_journal_replayed_total", &[]);
    assert_eq!(replayed, 40.0, "cluster_journal_replayed_total on node 1");
    c.stop().await;
}
