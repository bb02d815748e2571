//! [`SseStream`]: a tenant's event stream (`GET …/events/stream`) read as
//! a client would, frame by frame, each with the time it arrived.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::mpsc;

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseFrame {
    /// `event:` (the event type, or `lagged`).
    pub event: String,
    /// `data:` parsed as JSON.
    pub data: Value,
    pub arrived: Instant,
}

/// See the module docs.
pub struct SseStream {
    frames: mpsc::UnboundedReceiver<SseFrame>,
    task: tokio::task::JoinHandle<()>,
}

impl SseStream {
    /// Open `path` on `base` with `token`; answers once the stream is open.
    pub async fn open(base: &str, token: &str, path: &str) -> SseStream {
        let mut response = reqwest::Client::new()
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let (tx, frames) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut text = String::new();
            while let Ok(Some(chunk)) = response.chunk().await {
                text.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = text.find("\n\n") {
                    let block: String = text.drain(..end + 2).collect();
                    if let Some(frame) = parse(&block)
                        && tx.send(frame).is_err()
                    {
                        return;
                    }
                }
            }
        });
        SseStream { frames, task }
    }

    /// The next frame, waiting at most `within`.
    pub async fn next(&mut self, within: Duration) -> Option<SseFrame> {
        tokio::time::timeout(within, self.frames.recv())
            .await
            .ok()
            .flatten()
    }

    /// Frames until none came for `quiet`, or `until` holds for what was
    /// read, or `within` passed.
    pub async fn collect(
        &mut self,
        within: Duration,
        until: impl Fn(&[SseFrame]) -> bool,
    ) -> Vec<SseFrame> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while !until(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(frame) => got.push(frame),
                None => break,
            }
        }
        got
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn parse(block: &str) -> Option<SseFrame> {
    let mut event = None;
    let mut data = String::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    Some(SseFrame {
        event: event?,
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
        arrived: Instant::now(),
    })
}
