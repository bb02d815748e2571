//! Listeners: accept loops that hand each connection to its own task.
//!
//! The shape of mini-redis's `server.rs`: a semaphore caps connections (an
//! accept waits for a permit), accept errors back off instead of ending the
//! listener, and shutdown stops accepting, tells every connection (v5
//! clients get DISCONNECT 0x8B) and waits for their tasks to end.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::Error;
use crate::broker::Broker;
use crate::conn::{self, Peer};
use crate::transport;

/// Serves MQTT over plain TCP on `listener` until `shutdown` is cancelled,
/// then waits for every connection it accepted to end.
pub async fn run_listener(
    listener: TcpListener,
    broker: Broker,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    accept_loop(
        listener,
        broker,
        shutdown,
        "tcp",
        |stream, peer, broker, shutdown| async move {
            let peer = Peer {
                addr: peer,
                proto: "tcp",
                certificates: None,
            };
            conn::serve(stream, peer, broker, shutdown).await;
        },
    )
    .await
}

/// Serves MQTT over TLS (rustls `config`, e.g. with client-certificate
/// verification) on `listener`.
pub async fn run_tls_listener(
    listener: TcpListener,
    broker: Broker,
    config: Arc<rustls::ServerConfig>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    accept_loop(
        listener,
        broker,
        shutdown,
        "tls",
        move |stream, peer, broker, shutdown| {
            let acceptor = acceptor.clone();
            async move {
                let limit = broker.config().connect_timeout;
                match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        // Handed to the Authenticator (DESIGN.md: device identity
                        // from the certificate chain).
                        let certificates = tls.get_ref().1.peer_certificates().map(|chain| {
                            chain
                                .iter()
                                .map(|c| Bytes::copy_from_slice(c.as_ref()))
                                .collect()
                        });
                        let peer = Peer {
                            addr: peer,
                            proto: "tls",
                            certificates,
                        };
                        conn::serve(tls, peer, broker, shutdown).await;
                    }
                    Ok(Err(e)) => warn!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => warn!(%peer, "TLS handshake timed out"),
                }
            }
        },
    )
    .await
}

/// Serves MQTT over WebSocket (path `/mqtt`, subprotocol `mqtt`) on
/// `listener`.
pub async fn run_ws_listener(
    listener: TcpListener,
    broker: Broker,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    accept_loop(
        listener,
        broker,
        shutdown,
        "ws",
        |stream, peer, broker, shutdown| async move {
            let limit = broker.config().connect_timeout;
            let max = usize::try_from(broker.config().max_packet_size).unwrap_or(usize::MAX);
            match tokio::time::timeout(limit, transport::ws::accept(stream, max)).await {
                Ok(Ok(ws)) => {
                    let peer = Peer {
                        addr: peer,
                        proto: "ws",
                        certificates: None,
                    };
                    conn::serve(ws, peer, broker, shutdown).await;
                }
                Ok(Err(e)) => warn!(%peer, error = %e, "WebSocket handshake failed"),
                Err(_) => warn!(%peer, "WebSocket handshake timed out"),
            }
        },
    )
    .await
}

async fn accept_loop<F, Fut>(
    listener: TcpListener,
    broker: Broker,
    shutdown: CancellationToken,
    proto: &'static str,
    handle: F,
) -> Result<(), Error>
where
    F: Fn(TcpStream, SocketAddr, Broker, CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(broker.config().max_connections));
    let tracker = TaskTracker::new();
    info!(addr = ?listener.local_addr().ok(), proto, "mqtt listening");
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = tokio::select! {
            () = shutdown.cancelled() => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: wait and retry rather than die.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(10);
        // Small packets (acks, pings) should not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let task = handle(stream, peer, broker.clone(), shutdown.clone());
        tracker.spawn(async move {
            task.await;
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
    info!(proto, "mqtt listener stopped");
    Ok(())
}
