//! Presence through the real binary (issue 6), on SQLite and on Postgres
//! when TEST_DATABASE_URL is set: a device's presence row (`GET …/state`)
//! and the retained `devices/{d}/status` message the broker publishes, seen
//! by a tenant service credential, after connect, clean disconnect,
//! keep-alive loss (a raw TCP client that goes silent), takeover and a
//! platform kick (device disabled); the
//! device cannot forge its status; the per-tenant switch turns it off.
//! Deleting a service credential ends its sessions (and no device's);
//! deleting the tenant ends every session of it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fleetmq_tests::{Api, Server, platform_server};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    Disconnect, DisconnectProperties, DisconnectReasonCode, Packet, PubAckReason,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

const WAIT: Duration = Duration::from_secs(20);

/// An MQTT 5 client (rumqttc) and the packets it receives.
struct Client {
    client: AsyncClient,
    incoming: UnboundedReceiver<Packet>,
}

impl Client {
    async fn connect(addr: SocketAddr, client_id: &str, user: &str, password: &str) -> Client {
        let mut opts = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        opts.set_credentials(user, password);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut el) = AsyncClient::new(opts, 100);
        let (tx, incoming) = unbounded_channel();
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(p)) => {
                        if tx.send(p).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    // rumqttc reports the server's DISCONNECT as an error;
                    // passed on as the packet it was.
                    Err(ConnectionError::MqttState(StateError::ServerDisconnect {
                        reason_code,
                        reason_string,
                    })) => {
                        let mut d = Disconnect::new(reason_code);
                        d.properties = reason_string.map(|reason| DisconnectProperties {
                            session_expiry_interval: None,
                            reason_string: Some(reason),
                            user_properties: Vec::new(),
                            server_reference: None,
                        });
                        let _ = tx.send(Packet::Disconnect(d));
                        return;
                    }
                    // A test client never reconnects.
                    Err(_) => return,
                }
            }
        });
        let mut c = Client { client, incoming };
        match c.next().await {
            Packet::ConnAck(ack) => assert_eq!(
                ack.code,
                rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success,
                "{client_id}"
            ),
            other => panic!("{client_id}: expected CONNACK, got {other:?}"),
        }
        c
    }

    async fn next(&mut self) -> Packet {
        tokio::time::timeout(WAIT, self.incoming.recv())
            .await
            .expect("no packet in time")
            .expect("client ended")
    }

    /// The reason of the server's DISCONNECT, skipping other packets.
    async fn disconnected(&mut self) -> DisconnectReasonCode {
        loop {
            if let Packet::Disconnect(d) = self.next().await {
                return d.reason_code;
            }
        }
    }

    /// The next status message of `device`, as JSON.
    async fn status_of(&mut self, device: &str) -> Value {
        let topic = format!("devices/{device}/status");
        loop {
            if let Packet::Publish(p) = self.next().await
                && p.topic == topic.as_bytes()
            {
                assert!(p.retain || p.qos == QoS::AtLeastOnce, "{p:?}");
                return serde_json::from_slice(&p.payload).unwrap();
            }
        }
    }
}

/// A 3.1.1 CONNECT with user name and password, clean session, keep-alive
/// `keep_alive` seconds.
fn connect_packet(client_id: &str, user: &str, password: &str, keep_alive: u16) -> Vec<u8> {
    let field = |s: &str| {
        let mut v = (s.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    };
    let mut body = field("MQTT");
    body.push(4);
    body.push(0xC2);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    for s in [client_id, user, password] {
        body.extend(field(s));
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend(body);
    packet
}

async fn presence_and_status_messages(db_args: &[&str]) {
    let cwd = tempfile::tempdir().unwrap();
    let (server, api) = acme(cwd.path(), db_args).await;
    let backend = api
        .post(
            "/v1/tenants/acme/service-credentials",
            json!({"name": "presence-watcher", "subscribe": ["devices/+/status"]}),
        )
        .await;
    let (user, password) = api.password_device("acme", "pres-1").await;
    let (ka_user, ka_password) = api.password_device("acme", "ka-1").await;
    let mqtt = server.mqtt();

    let mut watcher = Client::connect(
        mqtt,
        "watcher",
        backend["username"].as_str().unwrap(),
        backend["password"].as_str().unwrap(),
    )
    .await;
    watcher
        .client
        .subscribe("devices/+/status", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert!(matches!(watcher.next().await, Packet::SubAck(_)));

    // Online after connect.
    let mut device = Client::connect(mqtt, "pres-1", &user, &password).await;
    let online = watcher.status_of("pres-1").await;
    assert_eq!(online["status"], "online", "{online}");
    assert_eq!(online["reason"], "connected", "{online}");
    assert_eq!(online["credential"], "password", "{online}");
    assert!(
        chrono_like(online["at"].as_str().unwrap()),
        "RFC 3339: {online}"
    );
    let state = api
        .wait_for(&state_of("pres-1"), "online", |s| s["status"] == "online")
        .await;
    assert_eq!(state["credential"], "password", "{state}");
    assert_eq!(state["protocol"], "5.0", "{state}");

    // The device cannot forge its status (the default policy would allow
    // devices/pres-1/#), but its other topics still pass.
    device
        .client
        .publish(
            "devices/pres-1/status",
            QoS::AtLeastOnce,
            true,
            r#"{"status":"offline"}"#,
        )
        .await
        .unwrap();
    device
        .client
        .publish("devices/pres-1/telemetry", QoS::AtLeastOnce, false, "21")
        .await
        .unwrap();
    let mut acks = Vec::new();
    while acks.len() < 2 {
        if let Packet::PubAck(ack) = device.next().await {
            acks.push(ack.reason);
        }
    }
    assert_eq!(acks[0], PubAckReason::NotAuthorized);
    // Nobody subscribes to telemetry here: 0x10 is an accepted publish.
    assert!(
        matches!(
            acks[1],
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers
        ),
        "{acks:?}"
    );

    // Takeover: a second connection with the same client id; the device
    // stays online, and the status says why.
    let second = Client::connect(mqtt, "pres-1", &user, &password).await;
    let taken = watcher.status_of("pres-1").await;
    assert_eq!(taken["status"], "online", "{taken}");
    assert_eq!(taken["reason"], "takeover", "{taken}");
    let state = api
        .wait_for(&state_of("pres-1"), "online after takeover", |s| {
            s["status"] == "online"
        })
        .await;
    assert!(state["disconnect_reason"].is_null(), "{state}");
    // No offline status follows for the connection taken over: the next
    // status is the one of the clean disconnect below.
    drop(device);

    // Offline after a clean disconnect.
    second.client.disconnect().await.unwrap();
    let offline = watcher.status_of("pres-1").await;
    assert_eq!(offline["status"], "offline", "{offline}");
    assert_eq!(offline["reason"], "disconnected", "{offline}");
    assert_eq!(offline["reason_code"], 0, "{offline}");
    api.wait_for(&state_of("pres-1"), "offline", |s| s["status"] == "offline")
        .await;
    // Retained: a subscriber arriving later sees the last status at once.
    let mut late = Client::connect(
        mqtt,
        "watcher-late",
        backend["username"].as_str().unwrap(),
        backend["password"].as_str().unwrap(),
    )
    .await;
    late.client
        .subscribe("devices/pres-1/status", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(late.status_of("pres-1").await["reason"], "disconnected");

    // Keep-alive loss: CONNECT with keep-alive 1 s, then silence. The
    // broker closes after 1.5 × keep-alive.
    let mut raw = TcpStream::connect(mqtt).await.unwrap();
    raw.write_all(&connect_packet("ka-1", &ka_user, &ka_password, 1))
        .await
        .unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(WAIT, raw.read_exact(&mut connack))
        .await
        .expect("CONNACK in time")
        .unwrap();
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    assert_eq!(watcher.status_of("ka-1").await["status"], "online");
    let silent_since = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, raw.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the broker never closed a silent client");
    // 1.5 s by the spec; generous on a loaded machine, but never before 1 s.
    assert!(
        silent_since.elapsed() >= Duration::from_millis(1000),
        "closed too early: {:?}",
        silent_since.elapsed()
    );
    let lost = watcher.status_of("ka-1").await;
    assert_eq!(lost["status"], "offline", "{lost}");
    assert_eq!(lost["reason"], "keep_alive_timeout", "{lost}");
    assert_eq!(lost["reason_code"], 0x8D, "{lost}");
    let state = api
        .wait_for(&state_of("ka-1"), "offline after keep-alive loss", |s| {
            s["status"] == "offline"
        })
        .await;
    assert_eq!(
        state["disconnect_reason"], "KeepAliveTimeout (0x8D)",
        "{state}"
    );

    // Kicked by the platform (the device is disabled; revocation ends
    // sessions the same way): offline with the administrative reason.
    let _kicked = Client::connect(mqtt, "pres-1", &user, &password).await;
    assert_eq!(watcher.status_of("pres-1").await["reason"], "connected");
    api.ok(
        reqwest::Method::PATCH,
        "/v1/tenants/acme/devices/pres-1",
        Some(json!({"enabled": false})),
    )
    .await;
    let kicked = watcher.status_of("pres-1").await;
    assert_eq!(kicked["status"], "offline", "{kicked}");
    assert_eq!(kicked["reason"], "administrative_action", "{kicked}");
    assert_eq!(kicked["reason_code"], 0x98, "{kicked}");
    api.ok(
        reqwest::Method::PATCH,
        "/v1/tenants/acme/devices/pres-1",
        Some(json!({"enabled": true})),
    )
    .await;

    // Off for the tenant: no status on connect, and the device may use
    // the topic itself (its Last Will, say).
    api.ok(
        reqwest::Method::PUT,
        "/v1/tenants/acme/presence-settings",
        Some(json!({"publish_status": false})),
    )
    .await;
    let mut quiet = Client::connect(mqtt, "pres-1", &user, &password).await;
    quiet
        .client
        .publish(
            "devices/pres-1/status",
            QoS::AtLeastOnce,
            false,
            r#"{"mine":true}"#,
        )
        .await
        .unwrap();
    loop {
        if let Packet::PubAck(ack) = quiet.next().await {
            assert_eq!(ack.reason, PubAckReason::Success, "the watcher subscribes");
            break;
        }
    }
    // The first status the watcher sees now is the device's own message.
    let own = watcher.status_of("pres-1").await;
    assert_eq!(own, json!({"mine": true}));
    api.wait_for(&state_of("pres-1"), "online with the switch off", |s| {
        s["status"] == "online"
    })
    .await;
    server.stop().await.unwrap();
}

fleetmq_tests::binary_backend_tests!(presence_and_status_messages, deletions_end_their_sessions);

/// The platform on `db_args` with tenant `acme`, and an admin client.
async fn acme(cwd: &std::path::Path, db_args: &[&str]) -> (Server, Api) {
    let (server, token) = platform_server(cwd, db_args, &[]).await;
    let api = Api::new(&server, token);
    api.post("/v1/tenants", json!({"id": "acme", "name": "Acme"}))
        .await;
    (server, api)
}

/// The state document of `device` in acme.
fn state_of(device: &str) -> String {
    format!("/v1/tenants/acme/devices/{device}/state")
}

/// `2026-11-25T20:30:00.123Z`-like: a date, a `T`, and a zone.
fn chrono_like(at: &str) -> bool {
    at.len() >= 20 && at.as_bytes()[10] == b'T' && (at.ends_with('Z') || at.contains('+'))
}

async fn deletions_end_their_sessions(db_args: &[&str]) {
    let cwd = tempfile::tempdir().unwrap();
    let (server, api) = acme(cwd.path(), db_args).await;
    let ops = api
        .post(
            "/v1/tenants/acme/service-credentials",
            json!({"name": "ops", "subscribe": ["devices/#"]}),
        )
        .await;
    let (user, password) = api.password_device("acme", "del-1").await;
    let mqtt = server.mqtt();
    let ops_user = ops["username"].as_str().unwrap();
    let ops_password = ops["password"].as_str().unwrap();
    let mut backend = Client::connect(mqtt, "ops-1", ops_user, ops_password).await;
    let mut device = Client::connect(mqtt, "del-1", &user, &password).await;

    // The credential goes: its session ends with 0x98, the device's stays.
    api.ok(
        reqwest::Method::DELETE,
        &format!(
            "/v1/tenants/acme/service-credentials/{}",
            ops["id"].as_str().unwrap()
        ),
        None,
    )
    .await;
    assert_eq!(
        backend.disconnected().await,
        DisconnectReasonCode::AdministrativeAction
    );
    device
        .client
        .publish("devices/del-1/t", QoS::AtLeastOnce, false, "still here")
        .await
        .unwrap();
    loop {
        match device.next().await {
            Packet::PubAck(ack) => {
                // Nobody listens any more: accepted, with no subscriber.
                assert_eq!(ack.reason, PubAckReason::NoMatchingSubscribers);
                break;
            }
            Packet::Disconnect(d) => panic!("device ended with the credential: {d:?}"),
            _ => {}
        }
    }
    let mut opts = MqttOptions::new("ops-2", mqtt.ip().to_string(), mqtt.port());
    opts.set_credentials(ops_user, ops_password);
    let (_gone, mut el) = AsyncClient::new(opts, 10);
    let refused = tokio::time::timeout(WAIT, el.poll())
        .await
        .expect("no CONNACK in time");
    assert!(
        refused.is_err(),
        "a deleted credential connected: {refused:?}"
    );

    // The tenant goes: every session of it ends, and the device is refused.
    api.ok(reqwest::Method::DELETE, "/v1/tenants/acme", None)
        .await;
    assert_eq!(
        device.disconnected().await,
        DisconnectReasonCode::AdministrativeAction
    );
    let mut opts = MqttOptions::new("del-1", mqtt.ip().to_string(), mqtt.port());
    opts.set_credentials(user, password);
    let (_gone, mut el) = AsyncClient::new(opts, 10);
    let refused = tokio::time::timeout(WAIT, el.poll())
        .await
        .expect("no CONNACK in time");
    assert!(
        refused.is_err(),
        "a deleted tenant's device connected: {refused:?}"
    );
    server.stop().await.unwrap();
}
