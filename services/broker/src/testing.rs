//! For tests, this crate's and other crates' (feature `testing`): a broker
//! serving on 127.0.0.1 at a port the system picks, one way for every
//! transport, and a rumqttc v5 client to talk to it. Fixtures for session
//! stores are in [`session_store::testing`](crate::session_store::testing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::Packet;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Broker, Error};

/// How long a test waits for something that should happen: generous, only
/// for liveness, never for speed.
pub const WAIT: Duration = Duration::from_secs(15);

/// A broker's listener under test; it serves until [`Served::stop`] or
/// `shutdown` is cancelled.
pub struct Served {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    /// Cancelled: it stops accepting and ends every connection.
    pub shutdown: CancellationToken,
    task: JoinHandle<Result<(), Error>>,
}

impl Served {
    /// `broker` over plain TCP ([`crate::run_listener`]).
    pub async fn tcp(broker: Broker) -> Self {
        Self::start(|listener, shutdown| crate::run_listener(listener, broker, shutdown)).await
    }

    /// `broker` over TLS with `config` ([`crate::run_tls_listener`]).
    pub async fn tls(broker: Broker, config: Arc<rustls::ServerConfig>) -> Self {
        Self::start(|listener, shutdown| {
            crate::run_tls_listener(listener, broker, config, shutdown)
        })
        .await
    }

    /// `broker` over WebSocket ([`crate::run_ws_listener`]).
    pub async fn ws(broker: Broker) -> Self {
        Self::start(|listener, shutdown| crate::run_ws_listener(listener, broker, shutdown)).await
    }

    async fn start<F>(serve: impl FnOnce(TcpListener, CancellationToken) -> F) -> Self
    where
        F: Future<Output = Result<(), Error>> + Send + 'static,
    {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, shutdown.clone()));
        Self {
            addr,
            shutdown,
            task,
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops it and waits until every connection it accepted has ended;
    /// panics if the listener failed or that takes too long.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the listener did not stop")
            .unwrap()
            .unwrap();
    }
}

/// A Last Will on `topic` (a valid topic name) for a CONNECT under test.
pub fn will(topic: &str, payload: &'static str, qos: mqtt::QoS, retain: bool) -> mqtt::LastWill {
    mqtt::LastWill::new(mqtt::TopicName::parse(topic).unwrap(), payload, qos, retain)
}

/// A rumqttc v5 client, the channel its incoming packets arrive on (the
/// error that ends its event loop last), and its event loop's task.
pub type V5Client = (
    rumqttc::v5::AsyncClient,
    mpsc::UnboundedReceiver<Result<Packet, String>>,
    JoinHandle<()>,
);

/// A rumqttc v5 client connecting with `opts`, its event loop running.
pub fn v5_client(opts: rumqttc::v5::MqttOptions) -> V5Client {
    let (client, mut el) = rumqttc::v5::AsyncClient::new(opts, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(rumqttc::v5::Event::Incoming(p)) => {
                    if tx.send(Ok(p)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = tx.send(Err(format!("{e:?}")));
                    return;
                }
            }
        }
    });
    (client, rx, task)
}

/// Waits for the next packet `pick` takes; panics after [`WAIT`] or when
/// the client has ended.
pub async fn next_matching<P, T>(
    rx: &mut mpsc::UnboundedReceiver<P>,
    mut pick: impl FnMut(P) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let p = rx.recv().await.expect("client ended");
            if let Some(t) = pick(p) {
                return t;
            }
        }
    })
    .await
    .expect("timed out waiting for a packet")
}
