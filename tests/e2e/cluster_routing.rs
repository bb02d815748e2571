//! Issue 15, routing between nodes: three nodes of the real binary on one
//! Postgres database and a private nats-server, driven by clients we did
//! not write (rumqttc, mosquitto_pub/sub). A PUBLISH on one node reaches
//! the matching subscriptions on the others with its MQTT semantics, in
//! order, from the moment their SUBACK arrived (no warm-up); only nodes with a matching subscription receive the traffic, and
//! the interest goes with the subscription; tenants stay apart; retained
//! messages set or deleted on one node are what a new subscriber on
//! another gets at once. Skipped, saying so, without TEST_DATABASE_URL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use fleetmq_tests::cluster::Nodes;
use fleetmq_tests::rumqtt::{V5Incoming, next, v5, v5_suback};
use fleetmq_tests::{Api, Server, admin_token, metric};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    Filter, Packet, PublishProperties, RetainForwardRule, SubscribeProperties,
};
use rumqttc::v5::{AsyncClient, MqttOptions};
use serde_json::json;
use tokio::process::Command;

/// A bound on anything polled here (a hang guard on a shared machine).
const POLL_BOUND: Duration = Duration::from_secs(60);
const PROBE: &[u8] = b"probe";

fn opts(node: &Server, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", node.mqtt().port());
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// A connected rumqttc v5 client on `node`.
async fn connect(
    node: &Server,
    id: &str,
    login: Option<(&str, &str)>,
) -> (AsyncClient, V5Incoming) {
    let mut o = opts(node, id);
    if let Some((user, password)) = login {
        o.set_credentials(user, password);
    }
    let (client, mut rx, _task) = v5(o);
    next(&mut rx, |p| match p {
        Ok(Packet::ConnAck(_)) => Some(()),
        Err(e) => panic!("connect failed: {e}"),
        _ => None,
    })
    .await;
    (client, rx)
}

async fn subscribe(client: &AsyncClient, rx: &mut V5Incoming, filter: Filter, id: Option<usize>) {
    let props = SubscribeProperties {
        id,
        user_properties: Vec::new(),
    };
    client
        .subscribe_many_with_properties([filter], props)
        .await
        .unwrap();
    v5_suback(rx).await;
}

fn filter(path: &str, qos: QoS) -> Filter {
    Filter::new(path, qos)
}

/// The next application message that is not a probe.
async fn message(rx: &mut V5Incoming) -> rumqttc::v5::mqttbytes::v5::Publish {
    next(rx, |p| match p {
        Ok(Packet::Publish(p)) if p.payload != PROBE => Some(p),
        Err(e) => panic!("client failed: {e}"),
        _ => None,
    })
    .await
}

/// Whether a non-probe message arrives within `within`.
async fn nothing_within(rx: &mut V5Incoming, within: Duration) -> bool {
    tokio::time::timeout(within, message(rx)).await.is_err()
}

/// Polls node `i`'s metric `name` until `ok` holds; returns the value.
async fn metric_becomes(c: &Nodes, i: usize, name: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = tokio::time::Instant::now() + POLL_BOUND;
    loop {
        let value = metric(&c.metrics(i).await, name, &[]);
        if ok(value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} on node {i} stayed {value}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn anonymous_nodes() -> Option<Nodes> {
    Nodes::start(3, &["--allow-anonymous", "dev"]).await
}

#[tokio::test]
async fn a_publish_reaches_the_other_nodes_with_its_mqtt_semantics() {
    let Some(c) = anonymous_nodes().await else {
        return;
    };
    let (publisher, mut own) = connect(c.node(0), "pub-1", None).await;
    // The publisher's own No Local subscription: its message must not
    // come back to it through another node.
    let mut no_local = filter("sem/#", QoS::AtLeastOnce);
    no_local.nolocal = true;
    subscribe(&publisher, &mut own, no_local, None).await;
    // Node 2: QoS 0 (a downgrade), Retain As Published, identifier 5.
    let (s2, mut r2) = connect(c.node(1), "sub-2", None).await;
    let mut rap = filter("sem/+", QoS::AtMostOnce);
    rap.preserve_retain = true;
    rap.retain_forward_rule = RetainForwardRule::Never;
    subscribe(&s2, &mut r2, rap, Some(5)).await;
    // Node 3: QoS 1 without Retain As Published, identifier 9.
    let (s3, mut r3) = connect(c.node(2), "sub-3", None).await;
    let mut plain = filter("sem/#", QoS::AtLeastOnce);
    plain.retain_forward_rule = RetainForwardRule::Never;
    subscribe(&s3, &mut r3, plain, Some(9)).await;

    let props = PublishProperties {
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
        content_type: Some("text/plain".into()),
        response_topic: Some("sem/reply".into()),
        correlation_data: Some(b"corr".to_vec().into()),
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(300),
        ..PublishProperties::default()
    };
    publisher
        .publish_with_properties("sem/x", QoS::ExactlyOnce, true, b"hello".to_vec(), props)
        .await
        .unwrap();
    for (rx, qos, retain, id) in [
        (&mut r2, QoS::AtMostOnce, true, 5),
        (&mut r3, QoS::AtLeastOnce, false, 9),
    ] {
        let m = message(rx).await;
        assert_eq!(
            (&m.topic[..], &m.payload[..]),
            (&b"sem/x"[..], &b"hello"[..])
        );
        assert_eq!((m.qos, m.retain), (qos, retain));
        let p = m.properties.expect("properties");
        assert_eq!(p.subscription_identifiers, [id]);
        assert_eq!(
            p.user_properties,
            [
                ("k".to_owned(), "v".to_owned()),
                ("k".to_owned(), "w".to_owned())
            ]
        );
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
        assert_eq!(p.response_topic.as_deref(), Some("sem/reply"));
        assert_eq!(p.correlation_data.as_deref(), Some(&b"corr"[..]));
        assert_eq!(p.payload_format_indicator, Some(1));
        let left = p.message_expiry_interval.expect("expiry forwarded");
        assert!((1..=300).contains(&left), "{left}");
    }
    assert!(
        nothing_within(&mut own, Duration::from_millis(500)).await,
        "No Local broken"
    );
    c.stop().await;
}

#[tokio::test]
async fn one_publisher_s_thousand_qos_1_messages_arrive_in_order_on_other_nodes() {
    let Some(c) = anonymous_nodes().await else {
        return;
    };
    let (publisher, _own) = connect(c.node(0), "orderly", None).await;
    let mut subs = Vec::new();
    for (i, id) in [(1, "order-2"), (2, "order-3")] {
        let (s, mut rx) = connect(c.node(i), id, None).await;
        subscribe(&s, &mut rx, filter("order/+", QoS::AtLeastOnce), None).await;
        subs.push((s, rx));
    }
    const N: u32 = 1000;
    for i in 0..N {
        publisher
            .publish(
                "order/seq",
                QoS::AtLeastOnce,
                false,
                i.to_be_bytes().to_vec(),
            )
            .await
            .unwrap();
    }
    for (_, rx) in &mut subs {
        for want in 0..N {
            let m = message(rx).await;
            let got = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
            assert_eq!(got, want);
        }
    }
    c.stop().await;
}

#[tokio::test]
async fn only_nodes_with_interest_receive_and_the_interest_goes_with_the_subscription() {
    let Some(c) = anonymous_nodes().await else {
        return;
    };
    const RECEIVED: &str = "cluster_messages_received_total";
    const INTEREST: &str = "cluster_interest_subjects";
    let (publisher, _own) = connect(c.node(0), "talker", None).await;
    let (s2, mut r2) = connect(c.node(1), "listener", None).await;
    // `w/#` is two subjects, `w` and `w.>`.
    subscribe(&s2, &mut r2, filter("w/#", QoS::AtMostOnce), None).await;
    assert_eq!(metric_becomes(&c, 1, INTEREST, |v| v >= 2.0).await, 2.0);
    for _ in 0..20 {
        publisher
            .publish("w/x", QoS::AtLeastOnce, false, b"m".to_vec())
            .await
            .unwrap();
    }
    for _ in 0..20 {
        message(&mut r2).await;
    }
    // Node 3 has no subscription: NATS sent it nothing.
    assert!(metric(&c.metrics(1).await, RECEIVED, &[]) >= 20.0);
    assert_eq!(metric(&c.metrics(2).await, RECEIVED, &[]), 0.0);
    assert_eq!(metric(&c.metrics(2).await, INTEREST, &[]), 0.0);
    assert!(metric(&c.metrics(0).await, "cluster_messages_forwarded_total", &[]) >= 20.0);

    // Unsubscribed: the interest is withdrawn.
    s2.unsubscribe("w/#").await.unwrap();
    metric_becomes(&c, 1, INTEREST, |v| v == 0.0).await;
    // A second subscription of one filter adds no subject; disconnecting
    // both withdraws it.
    subscribe(&s2, &mut r2, filter("w/+", QoS::AtMostOnce), None).await;
    let (again, mut ra) = connect(c.node(1), "listener-2", None).await;
    subscribe(&again, &mut ra, filter("w/+", QoS::AtMostOnce), None).await;
    assert_eq!(metric_becomes(&c, 1, INTEREST, |v| v >= 1.0).await, 1.0);
    s2.disconnect().await.unwrap();
    again.disconnect().await.unwrap();
    metric_becomes(&c, 1, INTEREST, |v| v == 0.0).await;
    let before = metric(&c.metrics(1).await, RECEIVED, &[]);
    for _ in 0..20 {
        publisher
            .publish("w/x", QoS::AtLeastOnce, false, b"m".to_vec())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(metric(&c.metrics(1).await, RECEIVED, &[]), before);
    c.stop().await;
}

#[tokio::test]
async fn tenants_stay_apart_across_nodes() {
    let Some(c) = anonymous_nodes().await else {
        return;
    };
    let db_args = ["--role", "platform-admin", "--database-url", c.db.url()];
    let token = admin_token(c.dirs[0].path(), &db_args).await;
    let api = Api::new(c.node(0), token);
    api.post("/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    let cred = api
        .post(
            "/v1/tenants/acme/service-credentials",
            json!({"name": "backend"}),
        )
        .await;
    let login = (
        cred["username"].as_str().unwrap(),
        cred["password"].as_str().unwrap(),
    );

    // The same topic in `dev` (anonymous) and `acme`, subscribers on
    // nodes 2 and 3, publishers on node 1.
    let (acme_sub, mut acme_rx) = connect(c.node(1), "acme-sub", Some(login)).await;
    subscribe(
        &acme_sub,
        &mut acme_rx,
        filter("iso/#", QoS::AtLeastOnce),
        None,
    )
    .await;
    let (dev_sub, mut dev_rx) = connect(c.node(2), "dev-sub", None).await;
    subscribe(
        &dev_sub,
        &mut dev_rx,
        filter("iso/#", QoS::AtLeastOnce),
        None,
    )
    .await;
    let (dev_pub, _d) = connect(c.node(0), "dev-pub", None).await;
    let (acme_pub, _a) = connect(c.node(0), "acme-pub", Some(login)).await;

    dev_pub
        .publish("iso/t", QoS::AtLeastOnce, false, b"dev".to_vec())
        .await
        .unwrap();
    acme_pub
        .publish("iso/t", QoS::AtLeastOnce, false, b"acme".to_vec())
        .await
        .unwrap();
    assert_eq!(&message(&mut dev_rx).await.payload[..], b"dev");
    assert_eq!(&message(&mut acme_rx).await.payload[..], b"acme");
    assert!(nothing_within(&mut dev_rx, Duration::from_millis(500)).await);
    assert!(nothing_within(&mut acme_rx, Duration::from_millis(100)).await);
    c.stop().await;
}

/// `mosquitto_pub` / `mosquitto_sub` (MQTT 5) against `node`.
fn mosquitto(tool: &str, node: &Server) -> Command {
    let mut cmd = Command::new(tool);
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &node.mqtt().port().to_string(),
        "-V",
        "mqttv5",
    ]);
    cmd
}

/// What a new `mosquitto_sub` on `node` gets for `topic` within 5 s (the
/// retained message, at once, or nothing).
async fn retained_on(node: &Server, topic: &str) -> String {
    let out = mosquitto("mosquitto_sub", node)
        .args(["-t", topic, "-C", "1", "-W", "5", "-v"])
        .output()
        .await
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn mosquitto_pub(node: &Server, args: &[&str]) {
    let out = mosquitto("mosquitto_pub", node)
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn a_retained_message_set_or_deleted_on_one_node_is_what_others_serve_at_once() {
    let Some(c) = anonymous_nodes().await else {
        return;
    };
    // Node 2 has the tenant in memory (its cache is what must follow);
    // node 3 loads it when its subscriber comes.
    let (_warm, _w) = connect(c.node(1), "warm", None).await;
    // QoS 1: acknowledged once stored.
    mosquitto_pub(c.node(0), &["-q", "1", "-r", "-t", "ret/a", "-m", "hello"]).await;
    let started = std::time::Instant::now();
    assert_eq!(retained_on(c.node(1), "ret/a").await, "ret/a hello");
    assert!(started.elapsed() < Duration::from_secs(4), "not at once");
    assert_eq!(retained_on(c.node(2), "ret/#").await, "ret/a hello");

    // Replaced, then deleted (an empty retained payload), on node 1.
    mosquitto_pub(c.node(0), &["-q", "1", "-r", "-t", "ret/a", "-m", "again"]).await;
    assert_eq!(retained_on(c.node(1), "ret/+").await, "ret/a again");
    mosquitto_pub(c.node(0), &["-q", "1", "-r", "-t", "ret/a", "-n"]).await;
    assert_eq!(retained_on(c.node(1), "ret/a").await, "");
    assert_eq!(retained_on(c.node(2), "ret/a").await, "");
    let received = metric(
        &c.metrics(1).await,
        "cluster_retained_changes_total",
        &["received"],
    );
    assert!(received >= 3.0, "{received}");
    c.stop().await;
}

#[tokio::test]
async fn a_shared_group_gets_each_message_once_cluster_wide() {
    let Some(c) = anonymous_nodes().await else {
        return;
    };
    let (publisher, _own) = connect(c.node(0), "feeder", None).await;
    let mut members = Vec::new();
    for (i, id) in [(0, "worker-1"), (1, "worker-2"), (2, "worker-3")] {
        let (m, mut rx) = connect(c.node(i), id, None).await;
        subscribe(&m, &mut rx, filter("$share/g/sh/#", QoS::AtLeastOnce), None).await;
        members.push((m, rx, false));
    }
    // Each member's interest is in NATS once a probe has reached it (NATS
    // gives each probe to one of them).
    let deadline = tokio::time::Instant::now() + POLL_BOUND;
    while !members.iter().all(|(_, _, probed)| *probed) {
        if tokio::time::Instant::now() >= deadline {
            let probed: Vec<bool> = members.iter().map(|m| m.2).collect();
            let mut seen = Vec::new();
            for i in 0..3 {
                let text = c.metrics(i).await;
                seen.push(
                    text.lines()
                        .filter(|l| l.starts_with("cluster_"))
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                );
            }
            panic!("a member never got a probe: {probed:?} {seen:#?}");
        }
        publisher
            .publish("sh/probe", QoS::AtMostOnce, false, PROBE.to_vec())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        for (_, rx, probed) in &mut members {
            while let Ok(p) = rx.try_recv() {
                *probed |= matches!(p, Ok(Packet::Publish(p)) if p.payload == PROBE);
            }
        }
    }
    const N: usize = 60;
    for i in 0..N {
        publisher
            .publish(format!("sh/{i}"), QoS::AtLeastOnce, false, i.to_string())
            .await
            .unwrap();
    }
    let mut got: Vec<Vec<String>> = vec![Vec::new(); members.len()];
    let mut total = 0;
    let deadline = tokio::time::Instant::now() + POLL_BOUND;
    while total < N {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {total} of {N} arrived"
        );
        for (k, (_, rx, _)) in members.iter_mut().enumerate() {
            if let Ok(m) = tokio::time::timeout(Duration::from_millis(50), message(rx)).await {
                got[k].push(String::from_utf8(m.payload.to_vec()).unwrap());
                total += 1;
            }
        }
    }
    for (_, rx, _) in &mut members {
        assert!(
            nothing_within(rx, Duration::from_millis(300)).await,
            "a copy too many"
        );
    }
    let mut all: Vec<String> = got.concat();
    all.sort();
    let mut want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    want.sort();
    assert_eq!(all, want, "each message once");
    let busy = got.iter().filter(|g| !g.is_empty()).count();
    assert!(
        busy >= 2,
        "balanced across nodes: {:?}",
        got.iter().map(Vec::len).collect::<Vec<_>>()
    );
    c.stop().await;
}
