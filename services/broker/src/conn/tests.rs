//! Timer behaviour of a connection over an in-memory pipe with paused time:
//! the runtime jumps to the next timer whenever everything is idle, so
//! these run instantly and assert virtual durations exactly.

use std::num::NonZeroU16;

use bytes::BytesMut;
use mqtt::{
    Connect, LastWill, Packet, ProtocolVersion, QoS, ReasonCode, Subscribe, Subscription,
    SubscriptionOptions, TopicFilter, TopicName, decode,
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
            super::Admission::Admitted,
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

#[tokio::test(start_paused = true)]
async fn keep_alive_expires_at_one_and_a_half_times() {
    let b = broker();
    let mut c = Connect::new(V5, "ka");
    c.keep_alive = 10;
    let mut client = Client::connect(&b, c).await;
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
    let mut c = Connect::new(V5, "pinger");
    c.keep_alive = 10;
    let mut client = Client::connect(&b, c).await;
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
    watcher
        .send(Subscribe {
            packet_id: NonZeroU16::new(1).unwrap(),
            subscriptions: vec![Subscription {
                filter: TopicFilter::parse("will").unwrap(),
                options: SubscriptionOptions::new(QoS::AtMostOnce),
            }],
            properties: Default::default(),
        })
        .await;
    assert!(matches!(watcher.recv().await, Some(Packet::SubAck(_))));
    watcher
}

fn leaver() -> Connect {
    let mut c = Connect::new(V5, "leaver");
    c.clean_start = false;
    c.keep_alive = 0;
    c.properties.session_expiry_interval = Some(100);
    let mut will = LastWill {
        topic: TopicName::parse("will").unwrap(),
        payload: "late".into(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    };
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
