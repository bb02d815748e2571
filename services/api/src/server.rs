//! [`serve`]: the app on a bound listener, until a shutdown future completes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting and returns once the connections in flight have finished.
///
/// Draining is not bounded here: the caller (the binary) races this against
/// its drain deadline, and closes the store afterwards. Handlers can read
/// the peer address as `ConnectInfo<SocketAddr>` (not set under `oneshot`
/// in tests).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "HTTP server listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    tracing::info!(%addr, "HTTP server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::oneshot;

    use super::serve;
    use crate::HttpLimits;
    use crate::router::tests::{Gate, test_routes};
    use crate::router::with_api;
    use crate::test_support;

    async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_on_port_0_and_drains_on_shutdown() {
        let s = test_support::state().await;
        let gate = Gate::default();
        let app = with_api(
            s.state.clone(),
            &HttpLimits::default(),
            test_routes(gate.clone()),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, async {
            let _ = stopped.await;
        }));

        let response = http_get(addr, "/healthz").await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response.to_ascii_lowercase().contains("x-request-id: "),
            "{response}"
        );
        assert!(response.ends_with(r#"{"status":"ok"}"#), "{response}");

        // A request in flight when shutdown starts still gets its answer.
        let in_flight = tokio::spawn(http_get(addr, "/test/gate"));
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
}
