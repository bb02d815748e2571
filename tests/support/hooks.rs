//! [`HookReceiver`]: a webhook receiver on 127.0.0.1 that records every
//! request body, and can go down (its port closed: connections refused)
//! and come back on the same port.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;

type Seen = Arc<Mutex<Vec<Value>>>;

/// See the module docs.
pub struct HookReceiver {
    addr: SocketAddr,
    seen: Seen,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

async fn record(State(seen): State<Seen>, body: Bytes) -> StatusCode {
    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    seen.lock().unwrap().push(value);
    StatusCode::NO_CONTENT
}

impl HookReceiver {
    /// Listening on a free port.
    pub async fn start() -> HookReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut receiver = HookReceiver {
            addr: listener.local_addr().unwrap(),
            seen: Seen::default(),
            stop: None,
            task: None,
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (stop, stopped) = oneshot::channel();
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(record))
            .with_state(self.seen.clone());
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        }));
    }

    /// The URL to register.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Close the port: from now on connections are refused.
    pub async fn down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Listen again on the same port.
    pub async fn up(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    /// Every request body received so far, in arrival order.
    pub fn received(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }

    /// The events received so far, batches unpacked: `(type, data)`.
    pub fn events(&self) -> Vec<(String, Value)> {
        let mut events = Vec::new();
        for body in self.received() {
            match body["data"]["messages"].as_array() {
                Some(batch) if body["type"] == "message.batch" => {
                    for m in batch {
                        events.push((
                            m["type"].as_str().unwrap_or("").to_owned(),
                            m["data"].clone(),
                        ));
                    }
                }
                _ => events.push((
                    body["type"].as_str().unwrap_or("").to_owned(),
                    body["data"].clone(),
                )),
            }
        }
        events
    }
}
