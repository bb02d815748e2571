//! [`EventHub`]: the one in-process stream of platform events (device
//! lifecycle, presence, state) that the SSE endpoint and the webhooks
//! outbox consume.
//!
//! Producers call [`EventHub::publish`] (or [`EventHub::publish_device`],
//! which numbers the device's events from the store); it never blocks: SSE
//! clients read a `tokio::sync::broadcast` of their tenant's own (one
//! tenant's event rate never makes another tenant's streams lag), a slow
//! one loses the oldest events (and is told so), and each [`EventListener`]
//! is called inline, so it must not block either. Events of a tenant
//! dropped before they reached the hub (its share of the platform event
//! queue was full) are reported to that tenant's streams with
//! [`EventHub::report_missed`]. The binary attaches the webhooks
//! [`OutboxWriter`](webhooks::OutboxWriter), which implements
//! [`EventListener`] here: a bounded, batching, non-blocking way into the
//! durable outbox.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use store::{NewOutboxEvent, Store};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

/// Events an SSE client may fall behind by before it loses some.
pub const DEFAULT_EVENT_BUFFER: usize = 1024;

/// One platform event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlatformEvent {
    /// Unique (UUIDv7, so ordered by creation).
    pub id: String,
    pub tenant: String,
    pub device: Option<String>,
    /// E.g. `device.connected`, `state.desired`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The device's event sequence number (1, 2, 3, …) where there is a
    /// device and the store could number it.
    pub seq: Option<i64>,
    pub timestamp: DateTime<Utc>,
    pub data: Value,
}

impl PlatformEvent {
    /// An event of `tenant` at the current time, with a fresh id.
    pub fn new(tenant: impl Into<String>, event_type: impl Into<String>, data: Value) -> Self {
        PlatformEvent {
            id: Uuid::now_v7().to_string(),
            tenant: tenant.into(),
            device: None,
            event_type: event_type.into(),
            seq: None,
            timestamp: Utc::now(),
            data,
        }
    }

    /// Sets `device` and `seq`, and puts them in `data` as `device_id` and
    /// `seq` too (when it is an object): webhook bodies carry only `data`,
    /// and a consumer receiving retries out of order needs `seq` to tell
    /// which event is the latest.
    #[must_use]
    pub fn for_device(mut self, device: impl Into<String>, seq: Option<i64>) -> Self {
        let device = device.into();
        if let Value::Object(data) = &mut self.data {
            data.insert("device_id".to_owned(), Value::String(device.clone()));
            if let Some(seq) = seq {
                data.insert("seq".to_owned(), Value::from(seq));
            }
        }
        self.device = Some(device);
        self.seq = seq;
        self
    }
}

/// Something told of every published event, inline: must not block.
pub trait EventListener: Send + Sync {
    fn on_event(&self, event: &PlatformEvent);
}

/// The webhooks outbox as a listener: events go in with their device and
/// sequence number; a full writer drops (and counts) rather than blocks.
impl EventListener for webhooks::OutboxWriter {
    fn on_event(&self, event: &PlatformEvent) {
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

/// What an SSE stream of one tenant receives.
#[derive(Debug, Clone)]
pub enum StreamItem {
    Event(Arc<PlatformEvent>),
    /// This many of the tenant's events were dropped before the hub.
    Missed(u64),
}

type Streams = HashMap<String, broadcast::Sender<StreamItem>>;

/// The hub: cheap to clone (handles only).
#[derive(Clone)]
pub struct EventHub {
    /// Each tenant's stream channel, while someone listens.
    streams: Arc<RwLock<Streams>>,
    buffer: usize,
    listeners: Arc<RwLock<Vec<Arc<dyn EventListener>>>>,
    /// True once [`EventHub::close_streams`] was called.
    closing: Arc<watch::Sender<bool>>,
}

impl EventHub {
    /// A hub whose subscribers may lag by up to `buffer` events.
    pub fn new(buffer: usize) -> Self {
        EventHub {
            streams: Arc::new(RwLock::new(HashMap::new())),
            buffer: buffer.max(1),
            listeners: Arc::new(RwLock::new(Vec::new())),
            closing: Arc::new(watch::Sender::new(false)),
        }
    }

    /// End every SSE stream (at shutdown: an open stream would otherwise
    /// keep the HTTP server draining until its deadline). Streams opened
    /// later end at once.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }

    /// Becomes true when streams are to end.
    pub(crate) fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Call `listener` for every event published from now on.
    pub fn add_listener(&self, listener: Arc<dyn EventListener>) {
        match self.listeners.write() {
            Ok(mut listeners) => listeners.push(listener),
            Err(poisoned) => poisoned.into_inner().push(listener),
        }
    }

    /// Every event of `tenant` published from now on.
    pub fn subscribe(&self, tenant: &str) -> broadcast::Receiver<StreamItem> {
        let mut streams = self.streams.write().unwrap_or_else(PoisonError::into_inner);
        // Channels nobody listens to any more go when a stream opens.
        streams.retain(|_, sender| sender.receiver_count() > 0);
        match streams.get(tenant) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = broadcast::channel(self.buffer);
                streams.insert(tenant.to_owned(), sender);
                receiver
            }
        }
    }

    /// Tell `tenant`'s streams that `missed` of its events were dropped
    /// before they reached the hub (they get a `lagged` event).
    pub fn report_missed(&self, tenant: &str, missed: u64) {
        self.send(tenant, StreamItem::Missed(missed));
    }

    fn send(&self, tenant: &str, item: StreamItem) {
        let streams = self.streams.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = streams.get(tenant) {
            // No subscriber is not an error: nobody is watching.
            let _ = sender.send(item);
        }
    }

    /// Hand `event` to the listeners and the subscribers. Never blocks.
    pub fn publish(&self, event: PlatformEvent) {
        {
            let listeners = match self.listeners.read() {
                Ok(l) => l,
                Err(poisoned) => poisoned.into_inner(),
            };
            for listener in listeners.iter() {
                listener.on_event(&event);
            }
        }
        let tenant = event.tenant.clone();
        self.send(&tenant, StreamItem::Event(Arc::new(event)));
    }

    /// Publish a device event numbered by `store.next_event_seq`. If the
    /// store cannot number it (the device was just deleted, the database is
    /// down), it goes out without a number rather than not at all.
    pub async fn publish_device(
        &self,
        store: &Store,
        tenant: &str,
        device: &str,
        event_type: &str,
        data: Value,
    ) {
        let seq = match store.next_event_seq(tenant, device).await {
            Ok(seq) => Some(seq),
            Err(e) => {
                tracing::debug!(tenant, device, error = %e, "event not numbered");
                None
            }
        };
        self.publish(PlatformEvent::new(tenant, event_type, data).for_device(device, seq));
    }
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::new(DEFAULT_EVENT_BUFFER)
    }
}

impl fmt::Debug for EventHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventHub")
            .field(
                "streams",
                &self
                    .streams
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .len(),
            )
            .finish_non_exhaustive()
    }
}

/// Whether an event type matches a comma-separated filter element: exact,
/// `prefix.*`, or `*`.
pub(crate) fn type_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) if prefix.ends_with('.') => event_type.starts_with(prefix),
        _ => pattern == event_type,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);

    impl EventListener for Collect {
        fn on_event(&self, event: &PlatformEvent) {
            self.0.lock().unwrap().push(event.event_type.clone());
        }
    }

    #[tokio::test]
    async fn listeners_and_subscribers_get_every_event() {
        let hub = EventHub::new(8);
        let seen = Arc::new(Collect::default());
        hub.add_listener(seen.clone());
        let mut rx = hub.subscribe("acme");
        hub.publish(PlatformEvent::new("acme", "device.created", json!({})));
        hub.publish(
            PlatformEvent::new("acme", "device.deleted", json!({})).for_device("d1", Some(2)),
        );
        assert_eq!(
            *seen.0.lock().unwrap(),
            ["device.created", "device.deleted"]
        );
        assert_eq!(event(rx.recv().await.unwrap()).event_type, "device.created");
        let second = event(rx.recv().await.unwrap());
        assert_eq!(second.device.as_deref(), Some("d1"));
        assert_eq!(second.seq, Some(2));
        assert_eq!(second.data, json!({"device_id": "d1", "seq": 2}));
    }

    #[tokio::test]
    async fn publish_without_subscribers_does_not_block_and_lag_is_reported() {
        let hub = EventHub::new(2);
        for _ in 0..10 {
            hub.publish(PlatformEvent::new("acme", "x", json!(null)));
        }
        let mut rx = hub.subscribe("acme");
        for _ in 0..5 {
            hub.publish(PlatformEvent::new("acme", "y", json!(null)));
        }
        assert!(matches!(
            rx.recv().await,
            Err(broadcast::error::RecvError::Lagged(3))
        ));
        assert_eq!(event(rx.recv().await.unwrap()).event_type, "y");
    }

    fn event(item: StreamItem) -> Arc<PlatformEvent> {
        match item {
            StreamItem::Event(event) => event,
            StreamItem::Missed(n) => panic!("missed {n}"),
        }
    }

    #[tokio::test]
    async fn one_tenants_rate_never_makes_anothers_stream_lag() {
        let hub = EventHub::new(4);
        let mut a = hub.subscribe("acme");
        let mut b = hub.subscribe("beta");
        hub.publish(PlatformEvent::new("beta", "before", json!(null)));
        for _ in 0..1000 {
            hub.publish(PlatformEvent::new("acme", "flood", json!(null)));
        }
        hub.publish(PlatformEvent::new("beta", "after", json!(null)));
        hub.report_missed("beta", 7);
        assert_eq!(event(b.recv().await.unwrap()).event_type, "before");
        assert_eq!(event(b.recv().await.unwrap()).event_type, "after");
        assert!(matches!(b.recv().await, Ok(StreamItem::Missed(7))));
        assert!(matches!(
            a.recv().await,
            Err(broadcast::error::RecvError::Lagged(996))
        ));
    }

    #[test]
    fn type_patterns() {
        assert!(type_matches("device.*", "device.connected"));
        assert!(!type_matches("device.*", "devices.x"));
        assert!(!type_matches("device.*", "state.reported"));
        assert!(type_matches("*", "state.reported"));
        assert!(type_matches("state.desired", "state.desired"));
        assert!(!type_matches("state.desired", "state.desired2"));
        assert!(!type_matches("dev*", "device.created"));
    }
}
