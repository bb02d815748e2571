//! [`OutboxWriter`]: how high-rate producers (the broker's message events)
//! hand events to the outbox without ever waiting on the database.
//!
//! `push` puts the event on a bounded in-memory queue and returns at once; a
//! task appends what has queued up in batches (one transaction each). When
//! the queue is full, or the database already holds `max_undispatched`
//! events not yet fanned out, events are dropped: counted in
//! `fleetmq_webhook_events_dropped_total` and reported to the tenant as a
//! `webhook.events_dropped` event (`{count}`) with the next batch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use store::{NewOutboxEvent, Store};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// The event type that reports dropped events.
pub const EVENTS_DROPPED_EVENT_TYPE: &str = "webhook.events_dropped";

/// Bounds of an [`OutboxWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxWriterConfig {
    /// Events waiting in memory.
    pub capacity: usize,
    /// Events per append.
    pub max_batch: usize,
    /// Undispatched events in the database beyond which batches are dropped.
    pub max_undispatched: i64,
}

impl Default for OutboxWriterConfig {
    fn default() -> Self {
        OutboxWriterConfig {
            capacity: 10_000,
            max_batch: 500,
            max_undispatched: 1_000_000,
        }
    }
}

/// Wait after a failed append before trying the same batch again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// The producer's handle. Cheap to clone.
#[derive(Clone)]
pub struct OutboxWriter {
    queue: mpsc::Sender<NewOutboxEvent>,
    dropped: Arc<Mutex<HashMap<String, u64>>>,
}

/// The writer's task; `close` flushes what is queued.
pub struct OutboxWriterTask {
    task: tokio::task::JoinHandle<()>,
    closing: CancellationToken,
}

impl OutboxWriterTask {
    /// Stop taking events (later pushes are dropped and counted), append
    /// every one already queued, and wait until that is done: at shutdown,
    /// while producers may still hold [`OutboxWriter`] clones.
    pub async fn close(self) {
        self.closing.cancel();
        self.closed().await;
    }

    /// Wait until every queued event is appended (call after dropping all
    /// [`OutboxWriter`] clones).
    pub async fn closed(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "outbox writer task failed");
        }
    }
}

impl OutboxWriter {
    /// Start the writer on the current runtime. `wake` (for example
    /// [`crate::Worker::waker`]) is notified after each append.
    pub fn spawn(
        store: Store,
        config: OutboxWriterConfig,
        wake: Option<Arc<Notify>>,
    ) -> (OutboxWriter, OutboxWriterTask) {
        let (queue, rx) = mpsc::channel(config.capacity.max(1));
        let dropped = Arc::new(Mutex::new(HashMap::new()));
        let closing = CancellationToken::new();
        let task = tokio::spawn(write(
            store,
            config,
            rx,
            dropped.clone(),
            wake,
            closing.clone(),
        ));
        (
            OutboxWriter { queue, dropped },
            OutboxWriterTask { task, closing },
        )
    }

    /// Count `n` events of `tenant` that a producer had to drop before they
    /// reached this writer (its own queue was full): they are reported
    /// like the writer's own drops, in the counter and a
    /// `webhook.events_dropped` event.
    pub fn count_dropped(&self, tenant_id: &str, n: u64) {
        count_dropped(&self.dropped, tenant_id, n);
    }

    /// Queue an event; false if it was dropped (queue full or closed).
    pub fn push(&self, event: NewOutboxEvent) -> bool {
        match self.queue.try_send(event) {
            Ok(()) => true,
            Err(
                mpsc::error::TrySendError::Full(event) | mpsc::error::TrySendError::Closed(event),
            ) => {
                count_dropped(&self.dropped, &event.tenant_id, 1);
                false
            }
        }
    }
}

/// `recv_many` for a consumer that is told to stop by `closing`: from then
/// on the channel takes nothing new, what is already queued still comes
/// out, and 0 means everything has.
pub async fn recv_until_closed<T>(
    rx: &mut mpsc::Receiver<T>,
    batch: &mut Vec<T>,
    max: usize,
    closing: &CancellationToken,
) -> usize {
    if !closing.is_cancelled() {
        tokio::select! {
            n = rx.recv_many(batch, max) => return n,
            () = closing.cancelled() => {}
        }
    }
    // Idempotent; after it recv_many drains the queue, then answers 0.
    rx.close();
    rx.recv_many(batch, max).await
}

fn count_dropped(dropped: &Mutex<HashMap<String, u64>>, tenant_id: &str, n: u64) {
    metrics::counter!("fleetmq_webhook_events_dropped_total").increment(n);
    // A poisoned lock only means another producer panicked mid-increment.
    let mut dropped = dropped
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *dropped.entry(tenant_id.to_owned()).or_default() += n;
}

async fn write(
    store: Store,
    config: OutboxWriterConfig,
    mut rx: mpsc::Receiver<NewOutboxEvent>,
    dropped: Arc<Mutex<HashMap<String, u64>>>,
    wake: Option<Arc<Notify>>,
    closing: CancellationToken,
) {
    let max_batch = config.max_batch.max(1);
    let mut batch = Vec::with_capacity(max_batch);
    while recv_until_closed(&mut rx, &mut batch, max_batch, &closing).await > 0 {
        let within_bound = match store.undispatched_outbox_len().await {
            Ok(waiting) => {
                waiting.saturating_add(i64::try_from(batch.len()).unwrap_or(i64::MAX))
                    <= config.max_undispatched
            }
            // The append below will fail too, and be retried.
            Err(_) => true,
        };
        if !within_bound {
            let mut per_tenant: HashMap<&str, u64> = HashMap::new();
            for event in &batch {
                *per_tenant.entry(event.tenant_id.as_str()).or_default() += 1;
            }
            for (tenant_id, n) in per_tenant {
                count_dropped(&dropped, tenant_id, n);
            }
            tracing::warn!(count = batch.len(), "webhook outbox full: events dropped");
            batch.clear();
        }
        let reports: Vec<NewOutboxEvent> = {
            let mut dropped = dropped
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            dropped
                .drain()
                .map(|(tenant_id, count)| {
                    NewOutboxEvent::new(
                        tenant_id,
                        EVENTS_DROPPED_EVENT_TYPE,
                        json!({"count": count}),
                    )
                })
                .collect()
        };
        batch.extend(reports);
        while !batch.is_empty() {
            match store.append_outbox_events(&batch).await {
                Ok(_) => batch.clear(),
                Err(e) => {
                    tracing::error!(error = %e, count = batch.len(), "appending to the webhook outbox failed");
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
        }
        if let Some(wake) = &wake {
            wake.notify_one();
        }
    }
}
