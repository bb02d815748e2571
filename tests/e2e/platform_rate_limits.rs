//! Per-device publish rate limits through the real binary (issue 5), set by
//! REST and enforced on the wire with rumqttc: a device over its limit
//! (MQTT 5) gets PUBACK 0x97 and then DISCONNECT 0x96 while another device
//! of the same tenant, publishing at the same time, has every message
//! acknowledged and delivered; an MQTT 5 QoS 0 excess is dropped; an MQTT
//! 3.1.1 device over its limit is slowed, never refused, and loses
//! nothing; `/metrics` counts it all per tenant. SQLite, and Postgres when
//! TEST_DATABASE_URL is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use fleetmq_tests::{Api, Server, TestDb, admin_token, fleetmq, metric};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(30);

/// An MQTT 5 client and what it receives, until its connection ends.
struct V5 {
    client: rumqttc::v5::AsyncClient,
    incoming: UnboundedReceiver<Result<Packet, String>>,
}

impl V5 {
    fn connect(server: &Server, client_id: &str, (user, password): &(String, String)) -> V5 {
        let mut opts = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", server.mqtt().port());
        opts.set_credentials(user, password);
        // No reconnecting: the test wants to see the end.
        let (client, incoming, _task) = fleetmq_tests::rumqtt::v5(opts);
        V5 { client, incoming }
    }

    async fn next(&mut self) -> Option<Result<Packet, String>> {
        tokio::time::timeout(WAIT, self.incoming.recv())
            .await
            .expect("nothing from the broker in time")
    }

    async fn connected(&mut self) {
        match self.next().await {
            Some(Ok(Packet::ConnAck(_))) => {}
            other => panic!("not connected: {other:?}"),
        }
    }

    /// The PUBACK reasons until `n` arrived, or the connection ended (with
    /// why: rumqttc reports the server's DISCONNECT as its error, and may
    /// drop PUBACKs read in the same batch).
    async fn pubacks(&mut self, n: usize) -> (Vec<PubAckReason>, Option<String>) {
        let mut acks = Vec::new();
        while acks.len() < n {
            match self.next().await {
                Some(Ok(Packet::PubAck(a))) => acks.push(a.reason),
                Some(Ok(Packet::Disconnect(d))) => return (acks, Some(format!("{d:?}"))),
                Some(Ok(_)) => {}
                Some(Err(e)) => return (acks, Some(e)),
                None => return (acks, Some("event loop gone".to_owned())),
            }
        }
        (acks, None)
    }
}

/// Publishes `n` QoS 1 messages as fast as the client goes.
async fn flood(client: &rumqttc::v5::AsyncClient, topic: &str, n: usize) {
    for i in 0..n {
        client
            .publish(topic, QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .unwrap();
    }
}

async fn start(cwd: &Path, extra: &[&str]) -> Server {
    let mut cmd = fleetmq(cwd);
    cmd.args([
        "serve",
        "--http-listen",
        "127.0.0.1:0",
        "--mqtt-listen",
        "127.0.0.1:0",
    ])
    .args(extra);
    Server::start(cmd).await.unwrap()
}

async fn rate_limits(extra: &[&str]) {
    let cwd = tempfile::tempdir().unwrap();
    let server = start(cwd.path(), extra).await;
    let api = Api::new(
        &server,
        admin_token(cwd.path(), &[&["--role", "platform-admin"], extra].concat()).await,
    );
    api.post("/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    let a = api.password_device("acme", "dev-a").await;
    let b = api.password_device("acme", "dev-b").await;
    let c = api.password_device("acme", "dev-c").await;
    let d = api.password_device("acme", "dev-d").await;
    // dev-a: 2 messages a second, burst 2. dev-c (MQTT 3.1.1): 5, burst 5.
    // dev-d: 100 payload bytes at once, then 1 byte a second.
    api.put(
        "/v1/tenants/acme/devices/dev-a/publish-limits",
        json!({"messages_per_second": 2, "messages_burst": 2}),
    )
    .await;
    api.put(
        "/v1/tenants/acme/devices/dev-c/publish-limits",
        json!({"messages_per_second": 5, "messages_burst": 5}),
    )
    .await;
    api.put(
        "/v1/tenants/acme/devices/dev-d/publish-limits",
        json!({"bytes_per_second": 1, "bytes_burst": 100}),
    )
    .await;
    // A backend that sees every device's messages (the platform default
    // applies to it: unlimited).
    let watcher_cred = api
        .post(
            "/v1/tenants/acme/service-credentials",
            json!({"name": "watcher", "subscribe": ["devices/#"]}),
        )
        .await;
    let watcher_login = (
        watcher_cred["username"].as_str().unwrap().to_owned(),
        watcher_cred["password"].as_str().unwrap().to_owned(),
    );
    let mut watcher = V5::connect(&server, "watcher", &watcher_login);
    watcher.connected().await;
    watcher
        .client
        .subscribe("devices/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    match watcher.next().await {
        Some(Ok(Packet::SubAck(_))) => {}
        other => panic!("no SUBACK: {other:?}"),
    }

    // dev-a floods while dev-b publishes at the same time.
    let mut dev_a = V5::connect(&server, "dev-a", &a);
    let mut dev_b = V5::connect(&server, "dev-b", &b);
    dev_a.connected().await;
    dev_b.connected().await;
    const FLOOD: usize = 60;
    const STEADY: usize = 30;
    let ((acks_a, end_a), (acks_b, end_b)) = tokio::join!(
        async {
            flood(&dev_a.client, "devices/dev-a/t", FLOOD).await;
            dev_a.pubacks(FLOOD).await
        },
        async {
            flood(&dev_b.client, "devices/dev-b/t", STEADY).await;
            dev_b.pubacks(STEADY).await
        }
    );
    assert_eq!(end_b, None, "dev-b was disconnected");
    assert_eq!(acks_b, vec![PubAckReason::Success; STEADY], "dev-b");
    let refused = acks_a
        .iter()
        .filter(|r| **r == PubAckReason::QuotaExceeded)
        .count();
    assert!(refused >= 1, "dev-a never refused: {acks_a:?}");
    assert!(
        acks_a
            .iter()
            .all(|r| matches!(r, PubAckReason::Success | PubAckReason::QuotaExceeded)),
        "{acks_a:?}"
    );
    // Disconnected with 0x96, which rumqttc decodes (the broker writes the
    // DISCONNECT's property length even when there are no properties).
    let end_a = end_a.expect("dev-a kept on and was not disconnected");
    assert!(end_a.contains("MessageRateTooHigh"), "{end_a}");
    let admitted_a = acks_a
        .iter()
        .filter(|r| **r == PubAckReason::Success)
        .count();

    // The watcher got all of dev-b's and the admitted ones of dev-a.
    let (mut from_a, mut from_b) = (0, 0);
    while from_b < STEADY || from_a < admitted_a {
        match watcher.next().await {
            Some(Ok(Packet::Publish(p))) if p.topic.starts_with(b"devices/dev-a/") => from_a += 1,
            Some(Ok(Packet::Publish(p))) if p.topic.starts_with(b"devices/dev-b/") => from_b += 1,
            Some(Ok(_)) => {}
            other => panic!("watcher ended: {other:?}"),
        }
    }

    // dev-d: QoS 0 over the byte limit is dropped; an empty QoS 1 message
    // after them (it costs no bytes) shows they were all handled.
    let mut dev_d = V5::connect(&server, "dev-d", &d);
    dev_d.connected().await;
    let hundred = "x".repeat(100);
    for _ in 0..5 {
        dev_d
            .client
            .publish("devices/dev-d/t", QoS::AtMostOnce, false, hundred.clone())
            .await
            .unwrap();
    }
    dev_d
        .client
        .publish("devices/dev-d/t", QoS::AtLeastOnce, false, "")
        .await
        .unwrap();
    assert_eq!(dev_d.pubacks(1).await, (vec![PubAckReason::Success], None));

    // dev-c, MQTT 3.1.1: slowed down, never refused; everything arrives.
    const SLOW: usize = 20;
    let mut opts = rumqttc::MqttOptions::new("dev-c", "127.0.0.1", server.mqtt().port());
    opts.set_credentials(&c.0, &c.1);
    let (client_c, mut el_c) = rumqttc::AsyncClient::new(opts, 100);
    let started = Instant::now();
    for i in 0..SLOW {
        client_c
            .publish(
                "devices/dev-c/t",
                rumqttc::QoS::AtLeastOnce,
                false,
                format!("{i}"),
            )
            .await
            .unwrap();
    }
    let mut acked = 0;
    while acked < SLOW {
        let event = tokio::time::timeout(WAIT, el_c.poll())
            .await
            .expect("dev-c stalled for good")
            .expect("dev-c lost its connection");
        if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = event {
            acked += 1;
        }
    }
    // Burst 5, then 5 a second: 20 messages take at least 3 s. A lower
    // bound only: it shows throttling; the machine may be slower.
    let took = started.elapsed();
    let floor = Duration::from_secs_f64((SLOW - 5) as f64 / 5.0);
    assert!(took >= floor, "20 messages in {took:?}, under {floor:?}");
    let mut from_c = 0;
    let mut from_d = 0;
    while from_c < SLOW {
        match watcher.next().await {
            // The platform's presence messages on devices/{d}/status are
            // not the devices' publishes.
            Some(Ok(Packet::Publish(p))) if p.topic.ends_with(b"/status") => {}
            Some(Ok(Packet::Publish(p))) if p.topic.starts_with(b"devices/dev-c/") => from_c += 1,
            Some(Ok(Packet::Publish(p))) if p.topic.starts_with(b"devices/dev-d/") => from_d += 1,
            Some(Ok(_)) => {}
            other => panic!("watcher ended: {other:?}"),
        }
    }
    // One 100-byte message and the empty one from dev-d.
    assert_eq!(from_d, 2);

    // Counted per tenant.
    let metrics = server.get("/metrics").await.unwrap().text().await.unwrap();
    let throttled = |outcome: &str| {
        metric(
            &metrics,
            "mqtt_messages_throttled_total",
            &[r#"tenant="acme""#, &format!(r#"outcome="{outcome}""#)],
        )
    };
    // At least the default 20 refusals in a row that ended dev-a's
    // connection (the client may not surface every 0x97 it was sent).
    assert!(throttled("refused") >= 20.0, "{metrics}");
    assert!(throttled("refused") as usize > refused, "{metrics}");
    assert_eq!(throttled("dropped"), 4.0, "{metrics}");
    assert!(throttled("delayed") >= 1.0, "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "mqtt_rate_limit_disconnects_total",
            &[r#"tenant="acme""#]
        ),
        1.0,
        "{metrics}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn rate_limits_on_sqlite() {
    rate_limits(&[]).await;
}

#[tokio::test]
async fn rate_limits_on_postgres() {
    // Skipped (TestDb prints why) when TEST_DATABASE_URL is not set.
    let Some(db) = TestDb::postgres_unmigrated().await else {
        return;
    };
    rate_limits(&["--database-url", db.url()]).await;
    db.cleanup().await;
}
