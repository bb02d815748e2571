//! Test harness: a broker on 127.0.0.1:0, rumqttc helpers, and a raw
//! packet client for what real clients will not send.
// Each test binary uses a part of it.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use broker::testing::{Served, WAIT, next_matching, v5_client, will};
use broker::{Broker, Config, TenantId};
use bytes::BytesMut;
use mqtt::{Connect, Packet, ProtocolVersion, decode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use testkit::metric_values;

/// Polls `cond` until it holds; panics after [`WAIT`].
pub async fn eventually(mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("condition not reached");
}

pub fn init_tracing() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("broker=debug")
            .with_test_writer()
            .try_init();
    }
}

pub struct TestBroker {
    pub addr: SocketAddr,
    pub broker: Broker,
    served: Served,
}

pub fn tenant(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

impl TestBroker {
    pub async fn start() -> Self {
        Self::with_config(Config::default()).await
    }

    pub async fn with_config(config: Config) -> Self {
        Self::with_broker(Broker::allow_anonymous(tenant("dev"), config)).await
    }

    pub async fn with_broker(broker: Broker) -> Self {
        init_tracing();
        let served = Served::tcp(broker.clone()).await;
        Self {
            addr: served.addr,
            broker,
            served,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub async fn stop(self) {
        self.served.stop().await;
    }
}

/// A rumqttc v4 client, the channel its incoming packets arrive on, and its
/// event loop's task.
pub type V4Client = (
    rumqttc::AsyncClient,
    mpsc::UnboundedReceiver<rumqttc::Packet>,
    JoinHandle<()>,
);

/// Runs a rumqttc v4 event loop; incoming packets arrive on the channel.
pub fn v4_client(port: u16, id: &str, clean: bool) -> V4Client {
    let mut opts = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
    opts.set_clean_session(clean);
    opts.set_keep_alive(Duration::from_secs(30));
    v4_with(opts)
}

/// A clean-session v4 client `id` subscribed to `filter` (its SUBACK seen).
pub async fn v4_subscriber(port: u16, id: &str, filter: &str, qos: rumqttc::QoS) -> V4Client {
    let (client, mut rx, task) = v4_client(port, id, true);
    client.subscribe(filter, qos).await.unwrap();
    v4_suback(&mut rx).await;
    (client, rx, task)
}

/// Publishes `payload` on `topic` through the v4 client `client`.
pub async fn v4_send(
    client: &rumqttc::AsyncClient,
    topic: &str,
    qos: rumqttc::QoS,
    retain: bool,
    payload: impl Into<Vec<u8>>,
) {
    client.publish(topic, qos, retain, payload).await.unwrap();
}

pub fn v4_with(opts: rumqttc::MqttOptions) -> V4Client {
    let (client, mut el) = rumqttc::AsyncClient::new(opts, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(p)) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    (client, rx, task)
}

pub type V5Packet = rumqttc::v5::mqttbytes::v5::Packet;

pub fn v5_opts(port: u16, id: &str) -> rumqttc::v5::MqttOptions {
    let mut opts = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts
}

pub async fn v4_publish(rx: &mut mpsc::UnboundedReceiver<rumqttc::Packet>) -> rumqttc::Publish {
    next_matching(rx, |p| match p {
        rumqttc::Packet::Publish(p) => Some(p),
        _ => None,
    })
    .await
}

pub async fn v4_suback(rx: &mut mpsc::UnboundedReceiver<rumqttc::Packet>) {
    next_matching(rx, |p| {
        matches!(p, rumqttc::Packet::SubAck(_)).then_some(())
    })
    .await;
}

/// Waits for the next v5 packet matching `pick`; panics if the client
/// failed first.
pub async fn v5_next<T>(
    rx: &mut mpsc::UnboundedReceiver<Result<V5Packet, String>>,
    mut pick: impl FnMut(V5Packet) -> Option<T>,
) -> T {
    next_matching(rx, |p| match p {
        Ok(p) => pick(p),
        Err(e) => panic!("client failed: {e}"),
    })
    .await
}

pub async fn v5_publish(
    rx: &mut mpsc::UnboundedReceiver<Result<V5Packet, String>>,
) -> rumqttc::v5::mqttbytes::v5::Publish {
    v5_next(rx, |p| match p {
        V5Packet::Publish(p) => Some(p),
        _ => None,
    })
    .await
}

pub async fn v5_suback(rx: &mut mpsc::UnboundedReceiver<Result<V5Packet, String>>) {
    v5_next(rx, |p| matches!(p, V5Packet::SubAck(_)).then_some(())).await;
}

/// Asserts nothing matching `pick` arrives within `quiet` (used only to
/// check something is *not* delivered, after a positive control).
pub async fn assert_quiet<P: std::fmt::Debug>(
    rx: &mut mpsc::UnboundedReceiver<P>,
    quiet: Duration,
    is_bad: impl Fn(&P) -> bool,
) {
    let _ = tokio::time::timeout(quiet, async {
        while let Some(p) = rx.recv().await {
            assert!(!is_bad(&p), "unexpected {p:?}");
        }
    })
    .await;
}

/// A client that speaks raw packets through our codec, to send what real
/// clients never would.
pub struct Raw {
    pub stream: TcpStream,
    pub buf: BytesMut,
    pub version: ProtocolVersion,
}

impl Raw {
    pub async fn open(port: u16, version: ProtocolVersion) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        Self {
            stream,
            buf: BytesMut::new(),
            version,
        }
    }

    /// Opens and completes CONNECT/CONNACK.
    pub async fn connect(
        port: u16,
        version: ProtocolVersion,
        connect: Connect,
    ) -> (Self, mqtt::ConnAck) {
        let mut raw = Self::open(port, version).await;
        raw.send(connect).await;
        match raw.recv().await {
            Some(Packet::ConnAck(ack)) => (raw, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: impl Into<Packet>) {
        let mut b = BytesMut::new();
        packet.into().encode(self.version, &mut b).unwrap();
        self.stream.write_all(&b).await.unwrap();
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next packet, or `None` once the server closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(p) = decode(&mut self.buf, self.version, mqtt::MAX_PACKET_SIZE).unwrap()
                {
                    return Some(p);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("timed out waiting for the server")
    }

    /// Reads until the server closes; returns what it sent last.
    pub async fn until_closed(&mut self) -> Vec<Packet> {
        let mut got = Vec::new();
        while let Some(p) = self.recv().await {
            got.push(p);
        }
        got
    }

    /// Reads until the server closes and asserts its last word was one
    /// CONNACK with `want`.
    pub async fn assert_refused(&mut self, want: mqtt::ReasonCode) {
        let got = self.until_closed().await;
        assert!(
            matches!(got.as_slice(), [Packet::ConnAck(a)] if a.reason_code == want),
            "{got:?}"
        );
    }

    /// Reads until the server closes and asserts its last word was one
    /// DISCONNECT with `want`.
    pub async fn assert_disconnected(&mut self, want: mqtt::ReasonCode) {
        let got = self.until_closed().await;
        assert!(
            matches!(got.as_slice(), [Packet::Disconnect(d)] if d.reason_code == want),
            "{got:?}"
        );
    }
}

pub fn connect(version: ProtocolVersion, id: &str) -> Connect {
    Connect::new(version, id)
}

/// A v5 CONNECT for a persistent session of `expiry` seconds.
pub fn persistent(id: &str, expiry: u32) -> Connect {
    let mut c = Connect::new(ProtocolVersion::V5, id);
    c.clean_start = false;
    c.properties.session_expiry_interval = Some(expiry);
    c
}

pub fn arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}
