//! [`TcpProxy`]: a TCP forwarder on 127.0.0.1 that a test owns, to take a
//! dependency (the database) away and give it back: [`TcpProxy::cut`]
//! closes every connection through it and refuses new ones until
//! [`TcpProxy::restore`].

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// See the module docs.
pub struct TcpProxy {
    addr: SocketAddr,
    /// True while the proxy forwards.
    open: Arc<watch::Sender<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    /// Forward 127.0.0.1:<free port> to `target`.
    pub async fn start(target: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(watch::Sender::new(true));
        let task = tokio::spawn(accept(listener, target, open.clone()));
        TcpProxy { addr, open, task }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Close every forwarded connection; refuse new ones (accepted and
    /// closed at once, as a dead host behind a load balancer looks).
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Forward again.
    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, open: Arc<watch::Sender<bool>>) {
    while let Ok((client, _)) = listener.accept().await {
        if !*open.borrow() {
            drop(client);
            continue;
        }
        let mut closed = open.subscribe();
        tokio::spawn(async move {
            let Ok(mut upstream) = TcpStream::connect(target).await else {
                return;
            };
            let mut client = client;
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                _ = closed.wait_for(|open| !*open) => {}
            }
        });
    }
}
