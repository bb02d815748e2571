//! [`OutboxWriter`]: how high-rate producers (the broker's message events)
//! hand events to the outbox without ever waiting on the database.
//!
//! `push` puts the event on a bounded in-memory queue and returns at once; a
//! task appends what has queued up in batches (one transaction each). The
//! queue is shared fairly by the tenants ([`fair::FairQueue`]: a share of
//! `capacity` each, batches taken round-robin), so one tenant's flood
//! neither crowds out nor delays another's events by more than a batch.
//! When a tenant's share is full, or the database already holds
//! `max_undispatched` of its events not yet fanned out, its events are
//! dropped: counted in `fleetmq_webhook_events_dropped_total{tenant}` and
//! reported to that tenant (only) as a `webhook.events_dropped` event
//! (`{count}`) with the next batch. Events of REST changes never pass
//! here: the store writes them in their change's transaction.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use events::Event;
use events::payload::EventsDropped;
use store::{NewOutboxEvent, Store};
use tokio::sync::Notify;

/// Bounds of an [`OutboxWriter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxWriterConfig {
    /// Events of one tenant waiting in memory (all tenants together: ten
    /// times that, before a tenant over its fair share is refused).
    pub capacity: usize,
    /// Events per append.
    pub max_batch: usize,
    /// Undispatched events of one tenant in the database beyond which its
    /// new events are dropped.
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

/// All tenants' events in memory together, in tenant shares.
const TENANTS_SHARING: usize = 10;

/// Wait after a failed append before trying the same batch again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

type Queue = fair::FairQueue<NewOutboxEvent>;

/// The producer's handle. Cheap to clone; when the last clone is dropped
/// the queue closes, and the task appends what is left and ends.
#[derive(Clone)]
pub struct OutboxWriter {
    queue: Arc<Queue>,
    dropped: Arc<Mutex<HashMap<String, u64>>>,
    /// Told of events already in the outbox (REST changes' own).
    wake: Option<Arc<Notify>>,
    _producers: Arc<CloseOnDrop>,
}

struct CloseOnDrop(Arc<Queue>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The writer's task; `close` flushes what is queued.
pub struct OutboxWriterTask {
    task: tokio::task::JoinHandle<()>,
    queue: Arc<Queue>,
}

impl OutboxWriterTask {
    /// Stop taking events (later pushes are dropped and counted), append
    /// every one already queued, and wait until that is done: at shutdown,
    /// while producers may still hold [`OutboxWriter`] clones.
    pub async fn close(self) {
        self.queue.close();
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
        let queue = Arc::new(fair::FairQueue::new(fair::Bounds {
            per_key: config.capacity.max(1),
            total: config.capacity.max(1).saturating_mul(TENANTS_SHARING),
        }));
        let dropped = Arc::new(Mutex::new(HashMap::new()));
        let task = tokio::spawn(write(
            store,
            config,
            queue.clone(),
            dropped.clone(),
            wake.clone(),
        ));
        (
            OutboxWriter {
                queue: queue.clone(),
                dropped,
                wake,
                _producers: Arc::new(CloseOnDrop(queue.clone())),
            },
            OutboxWriterTask { task, queue },
        )
    }

    /// Count `n` events of `tenant` that a producer had to drop before they
    /// reached this writer (its own queue was full): they are reported
    /// like the writer's own drops, in the counter and a
    /// `webhook.events_dropped` event.
    pub fn count_dropped(&self, tenant_id: &str, n: u64) {
        count_dropped(&self.dropped, tenant_id, n);
    }

    /// Queue an event; false if it was dropped (its tenant's share full,
    /// or the writer closed).
    pub fn push(&self, event: NewOutboxEvent) -> bool {
        let tenant = event.tenant_id.clone();
        match self.queue.push(&tenant, event) {
            Ok(()) => true,
            Err(_) => {
                count_dropped(&self.dropped, &tenant, 1);
                false
            }
        }
    }
}

fn count_dropped(dropped: &Mutex<HashMap<String, u64>>, tenant_id: &str, n: u64) {
    metrics::counter!("fleetmq_webhook_events_dropped_total", "tenant" => tenant_id.to_owned())
        .increment(n);
    // A poisoned lock only means another producer panicked mid-increment.
    let mut dropped = dropped
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *dropped.entry(tenant_id.to_owned()).or_default() += n;
}

async fn write(
    store: Store,
    config: OutboxWriterConfig,
    queue: Arc<Queue>,
    dropped: Arc<Mutex<HashMap<String, u64>>>,
    wake: Option<Arc<Notify>>,
) {
    let max_batch = config.max_batch.max(1);
    let mut taken = Vec::with_capacity(max_batch);
    while queue.next_batch(&mut taken, max_batch).await > 0 {
        let mut batch: Vec<NewOutboxEvent> = taken.drain(..).map(|(_, event)| event).collect();
        drop_over_bound(&store, &config, &mut batch, &dropped).await;
        let reports: Vec<NewOutboxEvent> = {
            let mut dropped = dropped
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            dropped
                .drain()
                .map(|(tenant_id, count)| {
                    NewOutboxEvent::of(
                        tenant_id,
                        &Event::WebhookEventsDropped(EventsDropped { count }),
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

/// Drop (and count) the events of tenants that already have
/// `max_undispatched` events waiting in the database.
async fn drop_over_bound(
    store: &Store,
    config: &OutboxWriterConfig,
    batch: &mut Vec<NewOutboxEvent>,
    dropped: &Mutex<HashMap<String, u64>>,
) {
    let mut per_tenant: HashMap<String, i64> = HashMap::new();
    for event in batch.iter() {
        *per_tenant.entry(event.tenant_id.clone()).or_default() += 1;
    }
    let tenants: Vec<&str> = per_tenant.keys().map(String::as_str).collect();
    let waiting = match store.undispatched_outbox_len_of(&tenants).await {
        Ok(waiting) => waiting,
        // The append will fail too, and be retried.
        Err(_) => return,
    };
    let over: Vec<(String, i64)> = per_tenant
        .into_iter()
        .filter(|(tenant, n)| {
            waiting.get(tenant).copied().unwrap_or(0).saturating_add(*n) > config.max_undispatched
        })
        .collect();
    for (tenant_id, n) in &over {
        count_dropped(dropped, tenant_id, u64::try_from(*n).unwrap_or(0));
        tracing::warn!(tenant = %tenant_id, count = n, "webhook outbox full for this tenant: events dropped");
    }
    if !over.is_empty() {
        batch.retain(|e| !over.iter().any(|(tenant, _)| *tenant == e.tenant_id));
    }
}

/// The outbox as a listener of the event hub: events go in with their
/// device and sequence number; a full writer drops (and counts) rather
/// than blocks. Events of REST changes are already in the outbox, written
/// with their change, and announced only once it committed: the worker is
/// woken for them, nothing is queued.
impl events::hub::EventListener for OutboxWriter {
    fn on_event(&self, event: &events::hub::PlatformEvent) {
        if event.outbox_id.is_some() {
            if let Some(wake) = &self.wake {
                wake.notify_one();
            }
            return;
        }
        let outbox_event = NewOutboxEvent {
            tenant_id: event.tenant.clone(),
            event_type: event.event_type.clone(),
            payload: event.data.clone(),
            device_id: event.device.clone(),
            device_seq: event.seq,
            topic: None,
        };
        // A drop is counted and reported to the tenant by the writer; one
        // log line per event would flood the log exactly when it hurts.
        if !self.push(outbox_event) {
            tracing::debug!(tenant = %event.tenant, event_type = %event.event_type,
                "webhook outbox full: event not queued for webhooks");
        }
    }
}
