//! Listeners: accept loops that hand each connection to its own task.
//!
//! The shape of mini-redis's `server.rs`: a semaphore caps connections per
//! listener, accept errors back off instead of ending the listener, and
//! shutdown stops accepting, tells every connection (v5 clients get
//! DISCONNECT 0x8B) and waits for their tasks to end.
//!
//! A socket takes a connection place only once its CONNECT has arrived;
//! before that it is a *pending* socket ([`crate::admission`]: capped per
//! address and per listener, the oldest evicted), so sockets that never
//! speak cannot fill the places. A CONNECT that finds every place taken
//! is answered CONNACK "server busy" (0x89; 3.1.1: server unavailable)
//! and counted in `mqtt_connections_refused_total`. Leaving it in the
//! kernel's backlog instead would keep the client waiting with no answer
//! until its own timeout, and hide the overload from our metrics.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::Error;
use crate::admission::PendingConnects;
use crate::broker::Broker;
use crate::conn::{self, Admission, Peer};
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
        // The connection's future itself, not one that awaits it: that
        // would hold a second copy of its arguments (issue 16).
        |stream, peer, broker, shutdown, admission| {
            let peer = Peer {
                addr: peer,
                proto: "tcp",
                certificates: None,
            };
            conn::serve(stream, peer, broker, shutdown, admission)
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
    accept_loop(
        listener,
        broker,
        shutdown,
        "tls",
        move |stream, peer, broker, shutdown, admission| {
            // One box for what only the handshake needs: what an async
            // block captures keeps its room for the block's life, and the
            // block's locals too unless their scope ends before the
            // connection's own future is awaited (issue 16).
            let handshake = Box::new((config.clone(), stream, peer, admission));
            async move {
                let serving = {
                    let (config, stream, peer, admission) = {
                        let handshake = handshake;
                        *handshake
                    };
                    // Boxed, and the stream comes back boxed: the
                    // handshake's state is gone once it is done, and the
                    // connection's task holds a pointer rather than
                    // rustls's connection state inline (issue 16).
                    let accepted =
                        Box::pin(accept_tls(config, stream, peer, &broker, &admission)).await;
                    let Some((tls, certificates)) = accepted else {
                        return;
                    };
                    let peer = Peer {
                        addr: peer,
                        proto: "tls",
                        certificates,
                    };
                    conn::serve(tls, peer, broker, shutdown, admission)
                };
                serving.await;
            }
        },
    )
    .await
}

/// The TLS handshake of a pending socket, within the connect timeout;
/// `None` when it failed, timed out or the socket was evicted. Returns the
/// client's certificate chain (DER, leaf first), which the Authenticator
/// takes a device's identity from.
async fn accept_tls(
    config: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    peer: SocketAddr,
    broker: &Broker,
    admission: &Admission,
) -> Option<(
    Box<transport::tls::TlsStream<TcpStream>>,
    Option<Vec<Bytes>>,
)> {
    let limit = broker.config().connect_timeout;
    // The TLS handshake is before CONNECT too: evictable.
    let handshake = tokio::select! {
        done = tokio::time::timeout(limit, transport::tls::accept(config, stream)) => done,
        () = admission.pending.evicted.cancelled() => return None,
    };
    match handshake {
        Ok(Ok(tls)) => {
            let certificates = tls.peer_certificates();
            Some((Box::new(tls), certificates))
        }
        Ok(Err(e)) => {
            warn!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            warn!(%peer, "TLS handshake timed out");
            None
        }
    }
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
        |stream, peer, broker, shutdown, admission| {
            // As for TLS: the handshake's inputs in one box, its state
            // boxed, and the stream boxed, so the connection's task holds
            // none of them inline (issue 16).
            let handshake = Box::new((stream, peer, admission));
            async move {
                let serving = {
                    let (stream, peer, admission) = {
                        let handshake = handshake;
                        *handshake
                    };
                    let Some(ws) = Box::pin(accept_ws(stream, peer, &broker, &admission)).await
                    else {
                        return;
                    };
                    let peer = Peer {
                        addr: peer,
                        proto: "ws",
                        certificates: None,
                    };
                    conn::serve(ws, peer, broker, shutdown, admission)
                };
                serving.await;
            }
        },
    )
    .await
}

/// The WebSocket handshake of a pending socket, within the connect
/// timeout; `None` when it failed, timed out or the socket was evicted.
async fn accept_ws(
    stream: TcpStream,
    peer: SocketAddr,
    broker: &Broker,
    admission: &Admission,
) -> Option<Box<transport::ws::WsStream>> {
    let limit = broker.config().connect_timeout;
    let max = usize::try_from(broker.config().max_packet_size).unwrap_or(usize::MAX);
    // The WebSocket handshake is before CONNECT too: evictable.
    let handshake = tokio::select! {
        done = tokio::time::timeout(limit, transport::ws::accept(stream, max)) => done,
        () = admission.pending.evicted.cancelled() => return None,
    };
    match handshake {
        Ok(Ok(ws)) => Some(Box::new(ws)),
        Ok(Err(e)) => {
            warn!(%peer, error = %e, "WebSocket handshake failed");
            None
        }
        Err(_) => {
            warn!(%peer, "WebSocket handshake timed out");
            None
        }
    }
}

async fn accept_loop<F, Fut>(
    listener: TcpListener,
    broker: Broker,
    shutdown: CancellationToken,
    proto: &'static str,
    handle: F,
) -> Result<(), Error>
where
    F: Fn(TcpStream, SocketAddr, Broker, CancellationToken, Admission) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let config = broker.config();
    let max_connections = config.max_connections;
    let places = Arc::new(Semaphore::new(max_connections));
    let pending = PendingConnects::new(
        config.max_pending_connects,
        config.max_pending_connects_per_address,
    );
    let tracker = TaskTracker::new();
    info!(
        addr = ?listener.local_addr().ok(),
        proto,
        max_connections,
        max_pending_connects = config.max_pending_connects,
        max_pending_connects_per_address = config.max_pending_connects_per_address,
        "mqtt listening"
    );
    let mut backoff = Duration::from_millis(10);
    loop {
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
        let Ok(waiting) = pending.admit(peer.ip()) else {
            debug!(%peer, "too many sockets from this address without CONNECT; closed");
            drop(stream);
            continue;
        };
        // Small packets (acks, pings) should not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let admission = Admission {
            pending: waiting,
            places: places.clone(),
        };
        let task = handle(stream, peer, broker.clone(), shutdown.clone(), admission);
        tracker.spawn(task);
    }
    // Connections do not wait on `shutdown` themselves.
    broker.wake_connections();
    tracker.close();
    tracker.wait().await;
    info!(proto, "mqtt listener stopped");
    Ok(())
}
