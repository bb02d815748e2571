//! Helpers for tests (feature `testing`, and this crate's own tests): the
//! app served on a real socket, and raw HTTP/1.1 requests to it.
//!
//! Enable it from other crates' [dev-dependencies]:
//! `api = { workspace = true, features = ["testing"] }`.

#![allow(clippy::unwrap_used)]

use std::io;
use std::net::SocketAddr;

use axum::Router;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// An app served by [`crate::serve`] on 127.0.0.1, port 0, until `stop`.
pub struct Served {
    pub addr: SocketAddr,
    /// Send to shut the server down (it drains first).
    pub stop: oneshot::Sender<()>,
    /// The server: returns once it has drained after `stop`.
    pub server: JoinHandle<io::Result<()>>,
}

impl Served {
    pub async fn start(app: Router) -> Served {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(crate::serve(listener, app, async {
            let _ = stopped.await;
        }));
        Served { addr, stop, server }
    }
}

/// `GET path` to `addr` on a new connection that the request closes, with
/// `headers` (each ending in `\r\n`); the whole response as sent.
pub async fn http_get(addr: SocketAddr, path: &str, headers: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}
