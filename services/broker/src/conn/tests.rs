//! Timer behaviour of a connection over an in-memory pipe with paused time:
//! the runtime jumps to the next timer whenever everything is idle, so
//! these run instantly and assert virtual durations exactly.

use std::num::NonZeroU16;

use bytes::BytesMut;
use mqtt::{
    Connect, Packet, ProtocolVersion, QoS, ReasonCode, Subscribe, SubscriptionOptions, TopicFilter,
    TopicName, decode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::{Peer, serve};
use crate::{Broker, Config, TenantId};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn broker() -> Broker {
    Broker::allow_anonymous(TenantId::parse("dev").unwrap(), Config::default())
}

pub(super) struct Client {
    io: DuplexStream,
    buf: BytesMut,
    version: ProtocolVersion,
}

impl Client {
    fn open(broker: &Broker) -> Self {
        Self::open_as(broker, V5)
    }

    pub(super) fn open_as(broker: &Broker, version: ProtocolVersion) -> Self {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let peer = Peer {
            addr: "127.0.0.1:9".parse().unwrap(),
            proto: "test",
            certificates: None,
        };
        tokio::spawn(serve(
            theirs,
            peer,
            broker.clone(),
            CancellationToken::new(),
            super::Admission::unlimited(),
        ));
        Self {
            io: ours,
            buf: BytesMut::new(),
            version,
        }
    }

    pub(super) async fn send(&mut self, p: impl Into<Packet>) {
        let mut b = BytesMut::new();
        p.into().encode(self.version, &mut b).unwrap();
        self.io.write_all(&b).await.unwrap();
    }

    pub(super) async fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = decode(&mut self.buf, self.version, mqtt::MAX_PACKET_SIZE).unwrap() {
                return Some(p);
            }
            if self.io.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    }

    pub(super) async fn connect(broker: &Broker, c: Connect) -> Self {
        let mut client = Self::open_as(broker, c.protocol);
        client.send(c).await;
        assert!(
            matches!(client.recv().await, Some(Packet::ConnAck(a)) if a.reason_code == ReasonCode::Success)
        );
        client
    }
}

/// Client `id` connected with a keep alive of 10 s.
async fn keeping_alive(b: &Broker, id: &str) -> Client {
    let mut c = Connect::new(V5, id);
    c.keep_alive = 10;
    Client::connect(b, c).await
}

#[tokio::test(start_paused = true)]
async fn keep_alive_expires_at_one_and_a_half_times() {
    let b = broker();
    let mut client = keeping_alive(&b, "ka").await;
    let start = Instant::now();
    let got = client.recv().await;
    assert!(
        matches!(got, Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::KeepAliveTimeout)
    );
    assert_eq!(start.elapsed().as_secs(), 15, "MQTT-3.1.2-22");
    assert_eq!(client.recv().await, None);
}

#[tokio::test(start_paused = true)]
async fn pings_keep_the_connection_alive() {
    let b = broker();
    let mut client = keeping_alive(&b, "pinger").await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(9)).await;
        client.send(Packet::PingReq).await;
        assert_eq!(client.recv().await, Some(Packet::PingResp));
    }
}

#[tokio::test(start_paused = true)]
async fn no_connect_within_the_timeout_closes() {
    let b = broker();
    let mut client = Client::open(&b);
    let start = Instant::now();
    assert_eq!(client.recv().await, None);
    assert_eq!(start.elapsed(), b.config().connect_timeout);
}

pub(super) async fn watcher(b: &Broker) -> Client {
    let mut c = Connect::new(V5, "watcher");
    c.keep_alive = 0;
    let mut watcher = Client::connect(b, c).await;
    suback(&mut watcher, "will", QoS::AtMostOnce).await;
    watcher
}

fn leaver() -> Connect {
    let mut c = Connect::new(V5, "leaver");
    c.clean_start = false;
    c.keep_alive = 0;
    c.properties.session_expiry_interval = Some(100);
    let mut will = crate::testing::will("will", "late", QoS::AtMostOnce, false);
    will.properties.will_delay_interval = Some(30);
    c.will = Some(will);
    c
}

#[tokio::test(start_paused = true)]
async fn will_waits_for_its_delay() {
    let b = broker();
    let mut watcher = watcher(&b).await;
    let leaver = Client::connect(&b, leaver()).await;
    drop(leaver); // ungraceful: the pipe closes
    let start = Instant::now();
    let got = watcher.recv().await;
    assert!(
        matches!(&got, Some(Packet::Publish(p)) if &p.payload[..] == b"late"),
        "{got:?}"
    );
    assert_eq!(start.elapsed().as_secs(), 30);
}

#[tokio::test(start_paused = true)]
async fn a_reconnect_within_the_delay_cancels_the_will() {
    let b = broker();
    let mut watcher = watcher(&b).await;
    drop(Client::connect(&b, leaver()).await);
    tokio::time::sleep(Duration::from_secs(29)).await;
    let mut back = Client::connect(&b, leaver()).await;
    // Long past the delay and the first session's timer: only the ping.
    tokio::time::sleep(Duration::from_secs(200)).await;
    watcher.send(Packet::PingReq).await;
    assert_eq!(watcher.recv().await, Some(Packet::PingResp));
    back.send(Packet::PingReq).await;
    assert_eq!(back.recv().await, Some(Packet::PingResp));
}

#[tokio::test(start_paused = true)]
async fn a_will_delay_longer_than_the_session_fires_when_it_ends() {
    let b = broker();
    let mut watcher = watcher(&b).await;
    let mut c = leaver();
    c.properties.session_expiry_interval = Some(5);
    drop(Client::connect(&b, c).await);
    let start = Instant::now();
    assert!(matches!(watcher.recv().await, Some(Packet::Publish(_))));
    assert_eq!(start.elapsed().as_secs(), 5);
}

fn platform_broker() -> Broker {
    use crate::auth::{Identity, MemoryAuthenticator};
    let auth = MemoryAuthenticator::new()
        .with_user(
            "platform:ops",
            "pw",
            Identity {
                tenant: TenantId::platform(),
                principal: "platform:ops".into(),
                limits: None,
            },
        )
        .with_user(
            "d1@tenant-a",
            "pw",
            Identity {
                tenant: TenantId::parse("tenant-a").unwrap(),
                principal: "d1".into(),
                limits: None,
            },
        );
    Broker::builder(std::sync::Arc::new(auth)).build()
}

fn login(client_id: &str, user: &str) -> Connect {
    let mut c = Connect::new(V5, client_id);
    c.keep_alive = 0;
    c.username = Some(user.into());
    c.password = Some("pw".into());
    c
}

/// Subscribes `client` to `filter` at QoS 1, which must be granted.
pub(super) async fn subscribe(client: &mut Client, filter: &str) {
    let a = suback(client, filter, QoS::AtLeastOnce).await;
    assert!(!a.reason_codes[0].is_error(), "{a:?}");
}

fn publish(topic: &str, id: u16) -> mqtt::Publish {
    let mut p = mqtt::Publish::new(TopicName::parse(topic).unwrap(), "x");
    p.qos = QoS::AtLeastOnce;
    p.packet_id = NonZeroU16::new(id);
    p
}

#[tokio::test]
async fn platform_clients_see_tenants_mounted_and_publish_into_them() {
    let b = platform_broker();
    let mut device = Client::connect(&b, login("d1", "d1@tenant-a")).await;
    subscribe(&mut device, "commands/d1/#").await;
    let mut ops = Client::connect(&b, login("ops", "platform:ops")).await;
    subscribe(&mut ops, "+/devices/+/status").await;

    device.send(publish("devices/d1/status", 1)).await;
    assert!(
        matches!(device.recv().await, Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::Success)
    );
    let got = ops.recv().await;
    assert!(
        matches!(&got, Some(Packet::Publish(p)) if p.topic.as_ref().map(TopicName::as_str) == Some("tenant-a/devices/d1/status")),
        "{got:?}"
    );

    // No tenant of that name: 0x90 with a reason string.
    ops.send(publish("tenant-z/commands/d1/x", 2)).await;
    let got = ops.recv().await;
    let Some(Packet::PubAck(ack)) = &got else {
        panic!("{got:?}")
    };
    assert_eq!(ack.reason_code, ReasonCode::TopicNameInvalid);
    assert!(
        ack.properties
            .reason_string
            .as_deref()
            .is_some_and(|r| r.contains("tenant-z")),
        "{ack:?}"
    );

    ops.send(publish("tenant-a/commands/d1/reboot", 3)).await;
    let got = device.recv().await;
    assert!(
        matches!(&got, Some(Packet::Publish(p)) if p.topic.as_ref().map(TopicName::as_str) == Some("commands/d1/reboot")),
        "{got:?}"
    );
}

#[tokio::test]
async fn deleting_a_credential_ends_the_sessions_it_opened() {
    let b = platform_broker();
    let mut ops = Client::connect(&b, login("ops-1", "platform:ops")).await;
    let _device = Client::connect(&b, login("d1", "d1@tenant-a")).await;
    assert_eq!(b.disconnect_principal(&TenantId::platform(), "d1"), 0);
    assert_eq!(
        b.disconnect_principal(&TenantId::platform(), "platform:ops"),
        1
    );
    let got = ops.recv().await;
    assert!(
        matches!(&got, Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::AdministrativeAction),
        "{got:?}"
    );
}

/// What the broker answers to `client` subscribing to `filter` at `qos`.
pub(super) async fn suback(client: &mut Client, filter: &str, qos: QoS) -> mqtt::SubAck {
    client
        .send(Subscribe::new(
            NonZeroU16::new(1).unwrap(),
            TopicFilter::parse(filter).unwrap(),
            SubscriptionOptions::new(qos),
        ))
        .await;
    match client.recv().await {
        Some(Packet::SubAck(a)) => a,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn topic_rules_refuse_with_reason_codes_and_strings_at_once() {
    let b = platform_broker();
    let tenant = TenantId::parse("tenant-a").unwrap();
    // Set before the tenant is in memory: it starts with them.
    b.set_topic_rules(
        &tenant,
        crate::TopicRules {
            max_depth: Some(3),
            forbid_leading_slash: true,
            forbid_spaces: true,
            max_catch_all_subscriptions: Some(1),
        },
    );
    let mut d = Client::connect(&b, login("d1", "d1@tenant-a")).await;
    let mut other = Client::connect(&b, login("d2", "d1@tenant-a")).await;
    let a = suback(&mut d, "#", QoS::AtMostOnce).await;
    assert_eq!(a.reason_codes, [ReasonCode::GRANTED_QOS_0]);
    // Re-subscribing to the same catch-all is a replacement, not another.
    assert_eq!(
        suback(&mut d, "#", QoS::AtMostOnce).await.reason_codes,
        [ReasonCode::GRANTED_QOS_0]
    );
    let a = suback(&mut other, "+/#", QoS::AtMostOnce).await;
    assert_eq!(a.reason_codes, [ReasonCode::QuotaExceeded]);
    assert!(a.properties.reason_string.unwrap().contains("catch-all"));
    for (filter, reason) in [("a/b c", "space"), ("/a", "'/'"), ("a/b/c/d", "levels")] {
        let a = suback(&mut other, filter, QoS::AtMostOnce).await;
        assert_eq!(a.reason_codes, [ReasonCode::TopicFilterInvalid], "{filter}");
        assert!(
            a.properties.reason_string.unwrap().contains(reason),
            "{filter}"
        );
    }
    assert_eq!(
        suback(&mut other, "a/+/c", QoS::AtMostOnce)
            .await
            .reason_codes,
        [ReasonCode::GRANTED_QOS_0]
    );

    other.send(publish("a/b c", 9)).await;
    let got = other.recv().await;
    assert!(
        matches!(&got, Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::TopicNameInvalid
            && a.properties.reason_string.as_deref().is_some_and(|r| r.contains("space"))),
        "{got:?}"
    );
    // Rules off again: the same publish goes through, to `#`.
    b.set_topic_rules(&tenant, crate::TopicRules::default());
    other.send(publish("a/b c", 10)).await;
    assert!(
        matches!(other.recv().await, Some(Packet::PubAck(a)) if a.reason_code == ReasonCode::Success)
    );
    assert!(
        matches!(d.recv().await, Some(Packet::Publish(p)) if p.topic.as_ref().map(TopicName::as_str) == Some("a/b c"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_broker_not_accepting_refuses_connects_and_sends_its_clients_elsewhere() {
    let b = broker();
    let mut persistent = Client::connect(&b, leaver()).await;
    let mut other = Client::connect(&b, Connect::new(V5, "other")).await;
    b.set_accepting(false);
    let mut late = Client::open(&b);
    late.send(Connect::new(V5, "late")).await;
    let got = late.recv().await;
    assert!(
        matches!(&got, Some(Packet::ConnAck(a)) if a.reason_code == ReasonCode::ServerUnavailable),
        "{got:?}"
    );
    // Live connections are left alone until they are sent away.
    other.send(Packet::PingReq).await;
    assert_eq!(other.recv().await, Some(Packet::PingResp));
    let (closed, open) = b
        .disconnect_all(ReasonCode::UseAnotherServer, Duration::from_secs(2))
        .await;
    assert_eq!((closed, open), (2, 0));
    for client in [&mut persistent, &mut other] {
        let got = client.recv().await;
        assert!(
            matches!(&got, Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::UseAnotherServer),
            "{got:?}"
        );
    }
    // Accepting again, the persistent session is still there.
    b.set_accepting(true);
    let mut back = Client::open(&b);
    back.send(leaver()).await;
    let got = back.recv().await;
    assert!(
        matches!(&got, Some(Packet::ConnAck(a)) if a.reason_code == ReasonCode::Success && a.session_present),
        "{got:?}"
    );
}

/// Log lines, as the fmt layer writes them.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// How many `conn` spans exist.
struct ConnSpans(std::sync::Arc<std::sync::atomic::AtomicIsize>);

impl<S> tracing_subscriber::Layer<S> for ConnSpans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() == "conn" {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        if ctx.metadata(&id).is_some_and(|m| m.name() == "conn") {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// A waiting connection holds no span (issue 16: 440 bytes each), yet
/// what it logs while handling packets, and when it ends, still names
/// its tenant and client id.
#[tokio::test]
async fn an_idle_connection_holds_no_span_and_its_logs_still_name_it() {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = std::sync::Arc::new(std::sync::atomic::AtomicIsize::new(0));
    let logs = Captured::default();
    let subscriber = tracing_subscriber::registry()
        .with(ConnSpans(spans.clone()))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(logs.clone())
                .with_ansi(false),
        );
    // Current-thread runtime: every task logs through this subscriber.
    let _default = tracing::subscriber::set_default(subscriber);
    let open = || spans.load(std::sync::atomic::Ordering::SeqCst);

    let b = broker();
    let mut client = Client::connect(&b, Connect::new(V5, "quiet-one")).await;
    client.send(Packet::PingReq).await;
    assert_eq!(client.recv().await, Some(Packet::PingResp));
    assert_eq!(open(), 0, "a waiting connection holds no span");

    // Refused by the topic limits (128 levels), logged while handling it.
    let deep = vec!["a"; 200].join("/");
    client.send(publish(&deep, 1)).await;
    let got = client.recv().await;
    assert!(
        matches!(&got, Some(Packet::PubAck(a)) if a.reason_code.is_error()),
        "{got:?}"
    );
    assert_eq!(open(), 0);
    // A second CONNECT is a protocol error: the connection is closed.
    client.send(Connect::new(V5, "quiet-one")).await;
    let got = client.recv().await;
    assert!(
        matches!(&got, Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::ProtocolError),
        "{got:?}"
    );
    assert_eq!(client.recv().await, None);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(open(), 0, "every span made was closed");

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for what in [
        "publish refused by the topic limits",
        "closing connection",
        "disconnected",
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("no {what:?} in:\n{text}"));
        assert!(
            line.contains("tenant=\"dev\"") && line.contains("client_id=\"quiet-one\""),
            "{line}"
        );
    }
}
