//! Platform service credentials and topic hygiene through the real binary
//! (issue 5), on SQLite and on Postgres when TEST_DATABASE_URL is set: two
//! tenants with a password device each publishing retained and live
//! `devices/{d}/status`; a platform client made over REST and subscribed to
//! `+/devices/+/status` (rumqttc, MQTT 5) sees both tenants with the tenant
//! id as the first level, and commands a device through its mount; a device
//! of tenant A subscribed to `#` sees nothing of tenant B nor of the
//! platform client's traffic for B; a tenant's topic rules refuse on the
//! wire with reason codes (5.0 and 3.1.1) without a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use fleetmq_tests::{Api, Server, TestDb, admin_token, fleetmq};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAck, PubAckReason, SubAck, SubscribeReasonCode};
use serde_json::json;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// Generous: only for liveness, never for speed.
const WAIT: Duration = Duration::from_secs(20);

/// A message as a subscriber got it: topic, payload, RETAIN.
type Got = (String, String, bool);

/// An MQTT 5 client (rumqttc) with its packets in arrival order.
struct Mqtt {
    client: rumqttc::v5::AsyncClient,
    /// Packets, then how the connection ended (rumqttc reports the
    /// server's DISCONNECT as an error).
    incoming: UnboundedReceiver<Result<Packet, String>>,
    messages: VecDeque<Got>,
}

impl Mqtt {
    async fn connect(server: &Server, client_id: &str, username: &str, password: &str) -> Mqtt {
        let mut opts = rumqttc::v5::MqttOptions::new(client_id, "127.0.0.1", server.mqtt().port());
        opts.set_credentials(username, password);
        let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, 100);
        let (tx, incoming) = unbounded_channel();
        tokio::spawn(async move {
            loop {
                let event = el.poll().await;
                let end = event.is_err();
                let packet = match event {
                    Ok(rumqttc::v5::Event::Incoming(p)) => Ok(p),
                    Ok(_) => continue,
                    Err(e) => Err(format!("{e:?}")),
                };
                if tx.send(packet).is_err() || end {
                    return;
                }
            }
        });
        let mut mqtt = Mqtt {
            client,
            incoming,
            messages: VecDeque::new(),
        };
        match mqtt.next_packet().await {
            Packet::ConnAck(ack) => assert_eq!(
                ack.code,
                rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success,
                "{client_id}"
            ),
            other => panic!("{client_id}: {other:?}"),
        }
        mqtt
    }

    async fn next_packet(&mut self) -> Packet {
        self.next()
            .await
            .unwrap_or_else(|e| panic!("connection ended: {e}"))
    }

    async fn next(&mut self) -> Result<Packet, String> {
        tokio::time::timeout(WAIT, self.incoming.recv())
            .await
            .expect("no packet in time")
            .expect("client ended")
    }

    /// How the connection ended, skipping what came before.
    async fn ended(&mut self) -> String {
        loop {
            if let Err(e) = self.next().await {
                return e;
            }
        }
    }

    /// The next packet that is not a PUBLISH (those are kept for `message`).
    async fn next_ack(&mut self) -> Packet {
        loop {
            match self.next_packet().await {
                Packet::Publish(p) => self.messages.push_back(got(&p)),
                other => return other,
            }
        }
    }

    async fn subscribe(&mut self, filter: &str) -> SubAck {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .unwrap();
        match self.next_ack().await {
            Packet::SubAck(ack) => ack,
            other => panic!("SUBACK for {filter}: {other:?}"),
        }
    }

    async fn publish(&mut self, topic: &str, payload: &str, retain: bool) -> PubAck {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_owned())
            .await
            .unwrap();
        match self.next_ack().await {
            Packet::PubAck(ack) => ack,
            other => panic!("PUBACK for {topic}: {other:?}"),
        }
    }

    async fn message(&mut self) -> Got {
        if let Some(m) = self.messages.pop_front() {
            return m;
        }
        loop {
            if let Packet::Publish(p) = self.next_packet().await {
                return got(&p);
            }
        }
    }

    /// The next `n` messages, sorted (arrival order across tenants is free).
    async fn messages(&mut self, n: usize) -> Vec<Got> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(self.message().await);
        }
        v.sort();
        v
    }

    /// Everything that arrives within `quiet`, after a round trip (a PING
    /// is answered after every message routed to us before it).
    async fn drain(&mut self, quiet: Duration) -> Vec<Got> {
        let mut v: Vec<Got> = self.messages.drain(..).collect();
        while let Ok(Some(p)) = tokio::time::timeout(quiet, self.incoming.recv()).await {
            if let Ok(Packet::Publish(p)) = p {
                v.push(got(&p));
            }
        }
        v
    }
}

fn got(p: &rumqttc::v5::mqttbytes::v5::Publish) -> Got {
    (
        String::from_utf8_lossy(&p.topic).into_owned(),
        String::from_utf8_lossy(&p.payload).into_owned(),
        p.retain,
    )
}

fn msg(topic: &str, payload: &str, retain: bool) -> Got {
    (topic.to_owned(), payload.to_owned(), retain)
}

async fn start(cwd: &Path, extra: &[&str]) -> Server {
    let mut cmd = fleetmq(cwd);
    cmd.args(["serve", "--http-listen", "127.0.0.1:0"])
        .args(extra);
    Server::start(cmd).await.unwrap()
}

async fn mounting_and_topic_rules(extra: &[&str]) {
    let cwd = tempfile::tempdir().unwrap();
    let server = start(cwd.path(), extra).await;
    // The signing keys live in the database: the same one as serve's.
    let api = Api::new(
        &server,
        admin_token(cwd.path(), &[&["--role", "platform-admin"], extra].concat()).await,
    );
    for t in ["alpha", "bravo"] {
        api.post("/v1/tenants", json!({ "id": t, "name": t })).await;
        // The devices publish their own status here: the platform's
        // presence messages on the same topic are switched off.
        api.put(
            &format!("/v1/tenants/{t}/presence-settings"),
            json!({ "publish_status": false }),
        )
        .await;
    }
    // alpha's devices may subscribe to everything in alpha.
    api.put(
        "/v1/tenants/alpha/policies/wide",
        json!({ "rules": [
            { "effect": "allow", "action": "publish", "filters": ["devices/${device}/#"] },
            { "effect": "allow", "action": "subscribe", "filters": ["#"] },
        ]}),
    )
    .await;
    let (u1, p1) = api.password_device("alpha", "d1").await;
    let (u2, p2) = api.password_device("bravo", "d2").await;
    let (u3, p3) = api.password_device("alpha", "d3").await;

    let mut d1 = Mqtt::connect(&server, "d1", &u1, &p1).await;
    let mut d2 = Mqtt::connect(&server, "d2", &u2, &p2).await;
    assert!(matches!(
        d1.subscribe("#").await.return_codes[..],
        [SubscribeReasonCode::Success(_)]
    ));
    assert!(matches!(
        d2.subscribe("commands/d2/#").await.return_codes[..],
        [SubscribeReasonCode::Success(_)]
    ));
    d1.publish("devices/d1/status", "d1 retained", true).await;
    d2.publish("devices/d2/status", "d2 retained", true).await;

    // The platform credential, made over REST (shown once).
    let cred = api
        .post("/v1/service-credentials", json!({ "name": "ops" }))
        .await;
    assert_eq!(cred["username"], "platform:ops");
    let mut ops = Mqtt::connect(
        &server,
        "ops-1",
        "platform:ops",
        cred["password"].as_str().unwrap(),
    )
    .await;
    assert!(matches!(
        ops.subscribe("+/devices/+/status").await.return_codes[..],
        [SubscribeReasonCode::Success(_)]
    ));
    // Every tenant's retained state, mounted under the tenant id.
    assert_eq!(
        ops.messages(2).await,
        [
            msg("alpha/devices/d1/status", "d1 retained", true),
            msg("bravo/devices/d2/status", "d2 retained", true),
        ]
    );
    // Live messages of both tenants.
    d1.publish("devices/d1/status", "d1 live", false).await;
    d2.publish("devices/d2/status", "d2 live", false).await;
    assert_eq!(
        ops.messages(2).await,
        [
            msg("alpha/devices/d1/status", "d1 live", false),
            msg("bravo/devices/d2/status", "d2 live", false),
        ]
    );

    // A command through bravo's mount reaches d2 only.
    let ack = ops.publish("bravo/commands/d2/reboot", "now", false).await;
    assert_eq!(ack.reason, PubAckReason::Success);
    assert_eq!(d2.message().await, msg("commands/d2/reboot", "now", false));
    // A first level that is no tenant: 0x90 with a reason string.
    let ack = ops.publish("nobody/commands/x", "lost", false).await;
    assert_eq!(ack.reason, PubAckReason::TopicNameInvalid);
    let why = ack.properties.and_then(|p| p.reason_string).unwrap();
    assert!(why.contains("nobody"), "{why}");

    // d1 (alpha, `#`) saw its own messages and nothing of bravo or of the
    // platform client's traffic for bravo.
    assert_eq!(
        d1.drain(Duration::from_millis(500)).await,
        [
            msg("devices/d1/status", "d1 retained", false),
            msg("devices/d1/status", "d1 live", false),
        ]
    );

    // Topic hygiene for alpha, live: no spaces, no new catch-all.
    let rules = json!({ "forbid_spaces": true, "max_catch_all_subscriptions": 0 });
    assert_eq!(
        api.put("/v1/tenants/alpha/topic-rules", rules).await["max_catch_all_subscriptions"],
        0
    );
    let ack = d1.publish("devices/d1/has space", "x", false).await;
    assert_eq!(ack.reason, PubAckReason::TopicNameInvalid);
    let why = ack.properties.and_then(|p| p.reason_string).unwrap();
    assert!(why.contains("space"), "{why}");
    let sub = d1.subscribe("+/#").await;
    assert_eq!(sub.return_codes, [SubscribeReasonCode::QuotaExceeded]);
    let why = sub.properties.and_then(|p| p.reason_string).unwrap();
    assert!(why.contains("catch-all"), "{why}");
    // The platform client is held to alpha's rules inside alpha too.
    let ack = ops.publish("alpha/commands/d1/a b", "x", false).await;
    assert_eq!(ack.reason, PubAckReason::TopicNameInvalid);
    // bravo has no rules.
    let ack = d2.publish("devices/d2/has space", "ok", false).await;
    assert_ne!(ack.reason, PubAckReason::TopicNameInvalid);

    // MQTT 3.1.1 (rumqttc v4): a refused subscription is 0x80.
    let mut opts = rumqttc::MqttOptions::new("d3", "127.0.0.1", server.mqtt().port());
    opts.set_credentials(u3, p3);
    let (v4, mut el) = rumqttc::AsyncClient::new(opts, 10);
    v4.subscribe("#", rumqttc::QoS::AtLeastOnce).await.unwrap();
    let suback = tokio::time::timeout(WAIT, async {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(a))) => return a,
                Ok(_) => {}
                Err(e) => panic!("3.1.1 client: {e}"),
            }
        }
    })
    .await
    .expect("no SUBACK in time");
    assert_eq!(
        suback.return_codes,
        [rumqttc::mqttbytes::v4::SubscribeReasonCode::Failure]
    );
    // Refused publishes are counted (QoS 0 has nothing else to show).
    let metrics = server.get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mqtt_publishes_refused_total{reason_code=\"0x90\"}")),
        "{metrics}"
    );
    // Deleting the credential ends its session (0x98) and refuses it.
    let id = cred["id"].as_str().unwrap();
    api.delete(&format!("/v1/service-credentials/{id}")).await;
    let ended = ops.ended().await;
    assert!(ended.contains("AdministrativeAction"), "{ended}");
    let mut opts = rumqttc::v5::MqttOptions::new("ops-2", "127.0.0.1", server.mqtt().port());
    opts.set_credentials("platform:ops", cred["password"].as_str().unwrap());
    let (_gone, mut el) = rumqttc::v5::AsyncClient::new(opts, 10);
    let refused = tokio::time::timeout(WAIT, el.poll())
        .await
        .expect("no CONNACK in time")
        .expect_err("a deleted credential is refused");
    assert!(
        format!("{refused:?}").contains("BadUserNamePassword"),
        "{refused:?}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn platform_mounting_and_topic_rules_on_sqlite() {
    mounting_and_topic_rules(&[]).await;
}

#[tokio::test]
async fn platform_mounting_and_topic_rules_on_postgres() {
    // Skipped (TestDb prints why) when TEST_DATABASE_URL is not set.
    let Some(db) = TestDb::postgres_unmigrated().await else {
        return;
    };
    mounting_and_topic_rules(&["--database-url", db.url()]).await;
    db.cleanup().await;
}
