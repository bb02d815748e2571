//! [`EventHub`]: the one in-process stream of platform events (device
//! lifecycle, presence, state) that the SSE endpoint and the webhooks
//! outbox consume. It lives here, below both, so that producers (the
//! broker bridge, the REST API) and consumers (webhooks, SSE, fleet stats)
//! meet without one of them owning the other.
//!
//! Producers call [`EventHub::publish`] (or [`EventHub::publish_device`],
//! which numbers the device's events from the store). The events of REST
//! changes are published by the store itself, once the transaction that
//! wrote them to the outbox with their change has committed
//! ([`PlatformEvent::outbox_id`] set). Publishing never blocks: SSE
//! clients read a `tokio::sync::broadcast` of their tenant's own (one
//! tenant's event rate never makes another tenant's streams lag), a slow
//! one loses the oldest events (and is told so), and each [`EventListener`]
//! is called inline, so it must not block either. Events of a tenant
//! dropped before they reached the hub (its share of the platform event
//! queue was full) are reported to that tenant's streams with
//! [`EventHub::report_missed`]. The binary attaches the webhooks
//! `OutboxWriter`, which implements [`EventListener`] in the webhooks
//! crate: a bounded, batching, non-blocking way into the durable outbox.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::Event;

/// Events an SSE client may fall behind by before it loses some.
pub const DEFAULT_EVENT_BUFFER: usize = 1024;

/// One platform event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlatformEvent {
    /// Unique (UUIDv7, so ordered by creation).
    pub id: String,
    pub tenant: String,
    pub device: Option<String>,
    /// An [`EventType`](crate::EventType) name, e.g. `device.connected`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The device's event sequence number (1, 2, 3, …) where there is a
    /// device and the store could number it.
    pub seq: Option<i64>,
    pub timestamp: DateTime<Utc>,
    pub data: Value,
    /// The event's row in the webhook outbox, when it was written there in
    /// the transaction of the change that caused it (REST changes): it is
    /// announced only once that committed, and the outbox writer must not
    /// append it again.
    #[serde(skip)]
    pub outbox_id: Option<i64>,
}

impl PlatformEvent {
    /// `event` of `tenant` at the current time, with a fresh id.
    pub fn new(tenant: impl Into<String>, event: &Event) -> Self {
        PlatformEvent::named(tenant, event.event_type().as_str(), event.data())
    }

    /// An event known only by its type name and JSON data: for tests of
    /// the hub and its consumers, which need types and data the catalogue
    /// does not have. Producers use [`PlatformEvent::new`].
    #[doc(hidden)]
    pub fn named(tenant: impl Into<String>, event_type: impl Into<String>, data: Value) -> Self {
        PlatformEvent {
            id: Uuid::now_v7().to_string(),
            tenant: tenant.into(),
            device: None,
            event_type: event_type.into(),
            seq: None,
            timestamp: Utc::now(),
            data,
            outbox_id: None,
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

/// Where device events get their sequence numbers (the store, which
/// implements it): 1, 2, 3, … per device.
pub trait EventNumbers: Sync {
    /// Why a number could not be had.
    type Error: fmt::Display;

    /// The device's next event sequence number.
    fn next_event_seq(
        &self,
        tenant: &str,
        device: &str,
    ) -> impl Future<Output = Result<i64, Self::Error>> + Send;
}

/// Something told of every published event, inline: must not block.
pub trait EventListener: Send + Sync {
    fn on_event(&self, event: &PlatformEvent);
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
    pub fn closing(&self) -> watch::Receiver<bool> {
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

    /// Publish a device event numbered by `numbers` (the store). If it
    /// cannot number it (the device was just deleted, the database is
    /// down), it goes out without a number rather than not at all.
    pub async fn publish_device<N: EventNumbers>(
        &self,
        numbers: &N,
        tenant: &str,
        device: &str,
        event: &Event,
    ) {
        let seq = match numbers.next_event_seq(tenant, device).await {
            Ok(seq) => Some(seq),
            Err(e) => {
                tracing::debug!(tenant, device, error = %e, "event not numbered");
                None
            }
        };
        self.publish(PlatformEvent::new(tenant, event).for_device(device, seq));
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
        hub.publish(PlatformEvent::named("acme", "device.created", json!({})));
        hub.publish(
            PlatformEvent::named("acme", "device.deleted", json!({})).for_device("d1", Some(2)),
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
            hub.publish(PlatformEvent::named("acme", "x", json!(null)));
        }
        let mut rx = hub.subscribe("acme");
        for _ in 0..5 {
            hub.publish(PlatformEvent::named("acme", "y", json!(null)));
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
        hub.publish(PlatformEvent::named("beta", "before", json!(null)));
        for _ in 0..1000 {
            hub.publish(PlatformEvent::named("acme", "flood", json!(null)));
        }
        hub.publish(PlatformEvent::named("beta", "after", json!(null)));
        hub.report_missed("beta", 7);
        assert_eq!(event(b.recv().await.unwrap()).event_type, "before");
        assert_eq!(event(b.recv().await.unwrap()).event_type, "after");
        assert!(matches!(b.recv().await, Ok(StreamItem::Missed(7))));
        assert!(matches!(
            a.recv().await,
            Err(broadcast::error::RecvError::Lagged(996))
        ));
    }
}
