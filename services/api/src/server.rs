//! [`serve`]: the app on a bound listener, until a shutdown future completes.
//!
//! Our own accept loop on hyper's HTTP/1.1 connection builder rather than
//! `axum::serve`, which has no timeouts and no connection cap: every
//! connection a client can make us hold is bounded ([`ConnLimits`]).
//! - Headers must arrive within `header_read_timeout`, counted from the
//!   connection's start and again after each response, so a connection
//!   idle between requests, or one trickling half a header (slowloris),
//!   is closed after it. Slow bodies and slow handlers are the router's
//!   request timeout's.
//! - At most `max_connections` open at once, and `max_per_address` from one
//!   client address; over either, the connection gets a 503
//!   problem+json and is closed, counted in
//!   `http_connections_refused_total{reason}`. Open ones are in the
//!   `http_connections_open` gauge.
//! - Accept errors (the file limit reached) back off instead of spinning.
//!
//! HTTP/2 is not offered: browsers use it only over TLS, and HTTP/2 has no
//! header read timeout to bound an idle connection with.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt as _;

/// Bounds on the connections of [`serve_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once. Default 1024.
    pub max_connections: usize,
    /// Connections open at once from one client address. Default 256.
    pub max_per_address: usize,
    /// How long a client has to send a request's headers, from the
    /// connection's start and after each response. Default 10 s.
    pub header_read_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 1024,
            max_per_address: 256,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// Refusals being written at once; past it a refused connection is just
/// closed (answering must not become a resource of its own).
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// The longest a refusal's write may take.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after a failed accept (out of file descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// [`serve_with`] and the default [`ConnLimits`].
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_with(listener, app, ConnLimits::default(), shutdown).await
}

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting and returns once the connections in flight have finished.
///
/// Draining is not bounded here: the caller (the binary) races this against
/// its drain deadline, and closes the store afterwards. Handlers can read
/// the peer address as `ConnectInfo<SocketAddr>` (not set under `oneshot`
/// in tests).
pub async fn serve_with(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, max_connections = limits.max_connections,
        max_per_address = limits.max_per_address,
        header_read_timeout_ms = limits.header_read_timeout.as_millis(), "HTTP server listening");
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let admission = Admission::new(limits);
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed; backing off");
                    metrics::counter!("http_accept_errors_total").increment(1);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match admission.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(reason) => {
                metrics::counter!("http_connections_refused_total", "reason" => reason)
                    .increment(1);
                tracing::debug!(%peer, reason, "HTTP connection refused");
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(refuse(stream, permit));
                }
                continue;
            }
        };
        let service = app
            .clone()
            .map_request(move |mut req: axum::extract::Request<_>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            });
        let conn = graceful.watch(
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)),
        );
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    tracing::info!(%addr, "HTTP server stopped");
    Ok(())
}

/// A 503 problem+json, then close.
async fn refuse(mut stream: TcpStream, _permit: OwnedSemaphorePermit) {
    const BODY: &str = r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"too many connections; try again later"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// The connection cap and the per-address cap.
struct Admission {
    slots: Arc<Semaphore>,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_address: usize,
}

/// An admitted connection's place; given back on drop.
struct Slot {
    _permit: OwnedSemaphorePermit,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .per_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
        metrics::gauge!("http_connections_open").decrement(1.0);
    }
}

impl Admission {
    fn new(limits: ConnLimits) -> Admission {
        Admission {
            slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            per_address: Arc::new(Mutex::new(HashMap::new())),
            max_per_address: limits.max_per_address.max(1),
        }
    }

    fn admit(&self, ip: IpAddr) -> Result<Slot, &'static str> {
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| "max_connections")?;
        {
            let mut open = self
                .per_address
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let n = open.entry(ip).or_default();
            if *n >= self.max_per_address {
                return Err("max_per_address");
            }
            *n += 1;
        }
        metrics::gauge!("http_connections_open").increment(1.0);
        Ok(Slot {
            _permit: permit,
            per_address: self.per_address.clone(),
            ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};

    use super::{ConnLimits, serve_with};
    use crate::HttpLimits;
    use crate::router::tests::{Gate, test_routes};
    use crate::router::with_api;
    use crate::test_support;
    use crate::testing::{Served, http_get};

    #[tokio::test]
    async fn serves_on_port_0_and_drains_on_shutdown() {
        let s = test_support::state().await;
        let gate = Gate::default();
        let app = with_api(
            s.state.clone(),
            &HttpLimits::default(),
            test_routes(gate.clone()),
        );
        let Served { addr, stop, server } = Served::start(app).await;

        let response = http_get(addr, "/healthz", "").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response.to_ascii_lowercase().contains("x-request-id: "),
            "{response}"
        );
        assert!(response.ends_with(r#"{"status":"ok"}"#), "{response}");

        // A request in flight when shutdown starts still gets its answer.
        let in_flight = tokio::spawn(http_get(addr, "/test/gate", ""));
        gate.entered.notified().await;
        stop.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!server.is_finished(), "returned before draining");
        gate.release.notify_one();
        let response = in_flight.await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("released"), "{response}");

        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve did not return after shutdown")
            .unwrap()
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    }

    async fn limited(limits: ConnLimits) -> std::net::SocketAddr {
        let s = test_support::state().await;
        let app = with_api(
            s.state.clone(),
            &HttpLimits::default(),
            test_routes(Gate::default()),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _s = s;
            serve_with(listener, app, limits, std::future::pending()).await
        });
        addr
    }

    /// Reads until the server closes; what it sent.
    async fn until_closed(stream: &mut TcpStream, within: Duration) -> String {
        let mut got = Vec::new();
        tokio::time::timeout(within, stream.read_to_end(&mut got))
            .await
            .expect("the server closed the connection in time")
            .unwrap();
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn half_sent_headers_and_idle_connections_are_closed() {
        let addr = limited(ConnLimits {
            header_read_timeout: Duration::from_millis(300),
            ..ConnLimits::default()
        })
        .await;
        // Slowloris: a request line and one header, then nothing.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        until_closed(&mut slow, Duration::from_secs(5)).await;
        // Idle after a response (keep-alive).
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answered = until_closed(&mut idle, Duration::from_secs(5)).await;
        assert!(answered.starts_with("HTTP/1.1 200 OK"), "{answered}");
    }

    #[tokio::test]
    async fn over_the_caps_connections_get_503_problem_json() {
        let addr = limited(ConnLimits {
            max_connections: 4,
            max_per_address: 2,
            header_read_timeout: Duration::from_secs(30),
        })
        .await;
        let held = [
            TcpStream::connect(addr).await.unwrap(),
            TcpStream::connect(addr).await.unwrap(),
        ];
        let mut third = TcpStream::connect(addr).await.unwrap();
        let refused = until_closed(&mut third, Duration::from_secs(5)).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.contains("application/problem+json"), "{refused}");
        drop(held);
        // Room again once they are gone.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let response = http_get(addr, "/healthz", "").await;
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    }
}
