//! Where the broker and the REST API meet, in the one place that knows
//! both: the API's device commands and drop counts implemented on the
//! broker, and the broker's events turned into platform events (SSE,
//! webhooks) and recent messages.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use api::device_io::{
    BrokerDrops, CommandError, DeviceCommands, RecentMessage, RecentMessages, SessionDrops,
    TenantDrops,
};
use broker::{Broker, Event, EventSink};
use bytes::Bytes;
use events::EventType;
use events::hub::EventHub;
use events::payload::{DeviceConnected, DeviceDisconnected, DeviceSnapshot, StateReported};
use futures::future::BoxFuture;
use ids::topics;
use mqtt::{Properties, QoS, TopicName};
use serde_json::json;

use crate::message_events::{Message, MessageWebhooks};

/// The API publishes desired state through the broker, retained at QoS 1.
pub struct BrokerCommands {
    pub broker: Broker,
}

impl DeviceCommands for BrokerCommands {
    fn publish_retained<'a>(
        &'a self,
        tenant: &'a str,
        topic: &'a str,
        payload: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), CommandError>> {
        Box::pin(async move {
            let tenant = broker::TenantId::parse(tenant)
                .map_err(|_| CommandError::Failed(format!("tenant id {tenant:?} is not valid")))?;
            let topic = TopicName::parse(topic)
                .map_err(|e| CommandError::Failed(format!("topic {topic:?}: {e}")))?;
            self.broker
                .publish(
                    &tenant,
                    topic,
                    Bytes::from(payload),
                    QoS::AtLeastOnce,
                    true,
                    Properties::default(),
                )
                .await
                .map(|_| ())
                .map_err(|e| CommandError::Failed(e.to_string()))
        })
    }
}

/// The API's sessions and series show what this node's broker dropped.
pub struct BrokerDropCounts {
    pub broker: Broker,
}

impl BrokerDrops for BrokerDropCounts {
    fn session(&self, tenant: &str, client_id: &str) -> Option<SessionDrops> {
        let tenant = broker::TenantId::parse(tenant).ok()?;
        let d = self.broker.session_drops(&tenant, client_id)?;
        Some(SessionDrops {
            queue_full: d.queue_full,
            queue_bytes: d.queue_bytes,
            slow_consumer: d.slow_consumer,
            tenant_queue_full: d.tenant_queue_full,
            offline_qos0: d.offline_qos0,
            expired: d.expired,
            too_large: d.too_large,
        })
    }

    fn tenant(&self, tenant: &str) -> TenantDrops {
        let stats = broker::TenantId::parse(tenant)
            .ok()
            .and_then(|t| self.broker.tenant_stats(&t));
        // A tenant the broker has not served since it started dropped
        // nothing here.
        stats.map_or_else(TenantDrops::default, |s| TenantDrops {
            slow_consumer: s.slow_consumer_dropped,
            tenant_queue_full: s.queue_dropped,
        })
    }
}

/// `device.created` for devices the broker registered just in time, like
/// the REST API's (numbered per device; off the connect path).
pub fn jit_device_created(store: store::Store, hub: EventHub) -> access::DeviceCreated {
    access::DeviceCreated(Arc::new(move |device: &store::Device| {
        let (store, hub) = (store.clone(), hub.clone());
        let (tenant, id) = (device.tenant_id.clone(), device.id.clone());
        // Fewer fields than the REST API's snapshot: no status or update
        // time, and who registered it.
        let event = events::Event::DeviceCreated(DeviceSnapshot {
            tenant_id: None,
            id: device.id.clone(),
            labels: device.labels.clone(),
            attributes: device.attributes.clone(),
            enabled: device.enabled,
            status: None,
            created_at: device.created_at,
            updated_at: None,
            registered_by: Some(access::JIT_ACTOR.to_owned()),
        });
        tokio::spawn(async move {
            hub.publish_device(&store, &tenant, &id, &event).await;
        });
    }))
}

/// Each tenant's share of the platform event queue: events waiting to be
/// numbered and published.
const EVENT_QUEUE_PER_TENANT: usize = 10_000;
/// All tenants together, before a tenant at or over its fair share of it
/// is refused (see [`fair::FairQueue`]).
const EVENT_QUEUE_TOTAL: usize = 100_000;
/// Events numbered and published per round: two database statements
/// number a whole round, whatever its size.
const ROUND: usize = 512;
/// Wait before numbering a round again when the database failed.
const RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// The broker's events as platform events: `device.connected`,
/// `device.disconnected` and `state.reported` on the event hub (and so to
/// SSE clients and the webhook outbox), and every message a device
/// publishes under `devices/{d}/` into the recent-messages ring.
///
/// `emit` runs on the broker's hot path: numbering an event needs the
/// database, so events wait in a queue shared fairly by the tenants
/// ([`fair::FairQueue`]: a share per tenant, drained round-robin in rounds
/// of [`ROUND`]), so one tenant's flood neither crowds out nor delays
/// another tenant's events by more than a round. When a tenant's share is
/// full its events are dropped, never blocking a connection, and the
/// tenant (only it) is told: a `lagged` event on its SSE streams, a
/// `webhook.events_dropped` event to its webhooks, and
/// `fleetmq_platform_events_dropped_total{tenant}`.
pub struct PlatformEvents {
    queue: Arc<fair::FairQueue<Event>>,
    /// Drops per tenant not yet reported.
    dropped: Arc<Drops>,
    recent: Arc<dyn RecentMessages>,
    /// MQTT messages as webhook events, when some endpoint wants them.
    messages: Option<MessageWebhooks>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Events dropped per tenant since the last report.
#[derive(Default)]
struct Drops(std::sync::Mutex<HashMap<String, u64>>);

impl Drops {
    fn count(&self, tenant: &str) {
        let mut drops = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *drops.entry(tenant.to_owned()).or_default() += 1;
    }

    /// Tell each tenant with drops: its SSE streams, its webhooks.
    fn report(&self, hub: &EventHub, messages: Option<&MessageWebhooks>) {
        let drops = std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for (tenant, n) in drops {
            tracing::warn!(
                tenant,
                dropped = n,
                "platform event queue full for this tenant: events dropped"
            );
            hub.report_missed(&tenant, n);
            if let Some(messages) = messages {
                messages.outbox.count_dropped(&tenant, n);
            }
        }
    }
}

impl PlatformEvents {
    pub fn start(
        store: store::Store,
        hub: EventHub,
        recent: Arc<dyn RecentMessages>,
    ) -> Arc<PlatformEvents> {
        Self::start_with_messages(store, hub, recent, None)
    }

    /// As [`PlatformEvents::start`], and messages that `messages.routes`
    /// says an endpoint wants become `message.published` events, queued in
    /// order with the device's lifecycle events.
    pub fn start_with_messages(
        store: store::Store,
        hub: EventHub,
        recent: Arc<dyn RecentMessages>,
        messages: Option<MessageWebhooks>,
    ) -> Arc<PlatformEvents> {
        let queue = Arc::new(fair::FairQueue::new(fair::Bounds {
            per_key: EVENT_QUEUE_PER_TENANT,
            total: EVENT_QUEUE_TOTAL,
        }));
        let dropped = Arc::new(Drops::default());
        let task = tokio::spawn(number_and_publish(Drain {
            store,
            hub,
            messages: messages.clone(),
            queue: queue.clone(),
            dropped: dropped.clone(),
        }));
        Arc::new(PlatformEvents {
            queue,
            dropped,
            recent,
            messages,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    /// At shutdown, after the listeners: stop taking events and publish the
    /// ones queued (the last disconnects among them).
    pub async fn close(&self) {
        self.queue.close();
        let task = match self.task.lock() {
            Ok(mut task) => task.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "platform event task failed");
        }
    }
}

impl EventSink for PlatformEvents {
    fn emit(&self, event: Event) {
        if let Some(m) = Message::of(&event) {
            let watched = self
                .messages
                .as_ref()
                .is_some_and(|w| w.routes.wants(m.tenant, m.topic));
            // The broker's own messages (presence on devices/{d}/status)
            // are not the device's traffic: not in its recent messages.
            let device =
                topics::device_of(m.topic).filter(|_| m.client_id != broker::SERVER_CLIENT_ID);
            let Some(device) = device else {
                if watched {
                    self.queue_or_count(event);
                }
                return;
            };
            self.recent.record(
                m.tenant,
                device,
                RecentMessage {
                    topic: m.topic.to_owned(),
                    // A copy on purpose: the payload may be a slice of the
                    // connection's read buffer, and keeping it would pin that
                    // whole buffer for as long as the message is recent.
                    payload: m.payload.to_vec(),
                    truncated: false,
                    qos: m.qos,
                    retain: m.retain,
                    received_at: chrono::Utc::now(),
                },
            );
            if !watched && topics::reporting_device(m.topic) != Some(device) {
                return;
            }
        }
        self.queue_or_count(event);
    }
}

impl PlatformEvents {
    /// Queue without waiting; over the tenant's share, drop and count it
    /// against that tenant (reported by the drain task).
    fn queue_or_count(&self, event: Event) {
        let Some(tenant) = tenant_of(&event).map(str::to_owned) else {
            return;
        };
        if self.queue.push(&tenant, event).is_err() {
            metrics::counter!("fleetmq_platform_events_dropped_total", "tenant" => tenant.clone())
                .increment(1);
            self.dropped.count(&tenant);
        }
    }
}

fn tenant_of(event: &Event) -> Option<&str> {
    match event {
        Event::Connected { tenant, .. }
        | Event::Disconnected { tenant, .. }
        | Event::Published { tenant, .. } => Some(tenant.as_str()),
        _ => None,
    }
}

/// What the drain task works with.
struct Drain {
    store: store::Store,
    hub: EventHub,
    messages: Option<MessageWebhooks>,
    queue: Arc<fair::FairQueue<Event>>,
    dropped: Arc<Drops>,
}

async fn number_and_publish(drain: Drain) {
    let mut batch = Vec::with_capacity(ROUND);
    while drain.queue.next_batch(&mut batch, ROUND).await > 0 {
        drain.dropped.report(&drain.hub, drain.messages.as_ref());
        let plan: Vec<Planned> = batch
            .drain(..)
            .map(|(_, event)| Planned::of(event, drain.messages.as_ref()))
            .collect();
        let mut numbers = loop {
            match Numbers::reserve(&drain.store, &plan).await {
                Ok(numbers) => break numbers,
                Err(e) => {
                    // The events wait (later ones queue behind them, within
                    // each tenant's share) until the database is back.
                    tracing::warn!(error = %e, events = plan.len(), "numbering platform events failed; retrying");
                    tokio::time::sleep(RETRY_DELAY).await;
                    drain.dropped.report(&drain.hub, drain.messages.as_ref());
                }
            }
        };
        for planned in plan {
            planned.publish(&drain, &mut numbers);
        }
    }
    drain.dropped.report(&drain.hub, drain.messages.as_ref());
}

/// One queued event and the numbered events it becomes.
struct Planned {
    event: Event,
    /// `message.published` for the webhooks.
    message: bool,
    /// `device.connected`, `device.disconnected` or `state.reported`.
    platform: Option<EventType>,
}

impl Planned {
    fn of(event: Event, messages: Option<&MessageWebhooks>) -> Planned {
        let message = messages.is_some_and(|m| m.watched(&event));
        let platform = match &event {
            // Service credentials and anonymous clients are not devices:
            // their comings and goings cost no lookup of the devices
            // table (a tenth of an anonymous connect storm's CPU went to
            // asking it about every disconnect, issue 16).
            Event::Connected { principal, .. } if !principal.contains(':') => {
                Some(EventType::DeviceConnected)
            }
            Event::Disconnected { principal, .. } if !principal.contains(':') => {
                Some(EventType::DeviceDisconnected)
            }
            Event::Published { topic, .. }
                if topics::reporting_device(topic.as_str()).is_some() =>
            {
                Some(EventType::StateReported)
            }
            _ => None,
        };
        Planned {
            event,
            message,
            platform,
        }
    }

    /// The client whose number the message event takes.
    fn message_client(&self) -> Option<(&str, &str)> {
        match &self.event {
            Event::Published {
                tenant, client_id, ..
            } if self.message => Some((tenant.as_str(), client_id.as_str())),
            _ => None,
        }
    }

    /// The device whose number the lifecycle or state event takes: the
    /// client, or for a reported state the device the topic names.
    fn platform_device(&self) -> Option<(&str, &str)> {
        self.platform?;
        match &self.event {
            Event::Published { tenant, topic, .. } => {
                Some((tenant.as_str(), topics::device_of(topic.as_str())?))
            }
            Event::Connected {
                tenant, client_id, ..
            }
            | Event::Disconnected {
                tenant, client_id, ..
            } => Some((tenant.as_str(), client_id.as_str())),
            _ => None,
        }
    }

    /// Number its events and hand them on: the message to the outbox
    /// writer, the lifecycle or state event to the hub.
    fn publish(self, drain: &Drain, numbers: &mut Numbers) {
        if let (Some(messages), Some((tenant, client))) = (&drain.messages, self.message_client())
            && let Some(seq) = numbers.next(tenant, client)
        {
            messages.send(&self.event, seq);
        }
        let Some((tenant, device)) = self.platform_device() else {
            return;
        };
        let Some(seq) = numbers.next(tenant, device) else {
            return;
        };
        let Some(platform) = platform_event(&self.event) else {
            return;
        };
        drain.hub.publish(
            events::hub::PlatformEvent::new(tenant, &platform).for_device(device, Some(seq)),
        );
    }
}

/// Sequence numbers reserved for one round, handed out in queue order:
/// per device, the next one and how many are left.
struct Numbers(HashMap<(String, String), (i64, u32)>);

impl Numbers {
    /// Two statements for the whole round: which clients are devices, and
    /// a block of numbers for each.
    async fn reserve(store: &store::Store, plan: &[Planned]) -> Result<Numbers, store::Error> {
        let mut counts: HashMap<(&str, &str), u32> = HashMap::new();
        for planned in plan {
            for device in [planned.message_client(), planned.platform_device()]
                .into_iter()
                .flatten()
            {
                *counts.entry(device).or_default() += 1;
            }
        }
        let counts: Vec<(String, String, u32)> = counts
            .into_iter()
            .map(|((t, d), n)| (t.to_owned(), d.to_owned(), n))
            .collect();
        let last = store.reserve_event_seqs_batch(&counts).await?;
        Ok(Numbers(
            counts
                .into_iter()
                .zip(last)
                .filter_map(|((t, d, n), last)| {
                    let last = last?;
                    Some(((t, d), (last - i64::from(n) + 1, n)))
                })
                .collect(),
        ))
    }

    /// The device's next number; `None` for a client that is no device.
    fn next(&mut self, tenant: &str, device: &str) -> Option<i64> {
        let (next, left) = self.0.get_mut(&(tenant.to_owned(), device.to_owned()))?;
        *left = left.checked_sub(1)?;
        let seq = *next;
        *next += 1;
        Some(seq)
    }
}

/// The `data` of a lifecycle or state event.
/// The platform event a broker event becomes, if [`Planned::of`] chose
/// one for it.
fn platform_event(event: &Event) -> Option<events::Event> {
    Some(match event {
        Event::Connected {
            client_id,
            peer,
            protocol,
            credential,
            ..
        } => events::Event::DeviceConnected(DeviceConnected {
            client_id: client_id.clone(),
            remote_addr: peer.to_string(),
            protocol: format!("{protocol:?}"),
            credential: state::credential_text(credential),
        }),
        Event::Disconnected {
            client_id,
            graceful,
            reason,
            ..
        } => events::Event::DeviceDisconnected(DeviceDisconnected {
            client_id: client_id.clone(),
            graceful: *graceful,
            reason_code: reason.to_u8(),
            reason: format!("{reason:?}"),
        }),
        Event::Published { payload, .. } => {
            let reported = serde_json::from_slice::<serde_json::Value>(payload)
                .unwrap_or_else(|_| json!({ "error": "payload is not JSON" }));
            events::Event::StateReported(StateReported { reported })
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn connected(principal: &str) -> Event {
        Event::Connected {
            tenant: broker::TenantId::parse("acme").unwrap(),
            client_id: "pump-1".into(),
            principal: principal.into(),
            peer: "127.0.0.1:9".parse().unwrap(),
            protocol: mqtt::ProtocolVersion::V5,
            credential: broker::Credential::Password,
        }
    }

    fn disconnected(principal: &str) -> Event {
        Event::Disconnected {
            tenant: broker::TenantId::parse("acme").unwrap(),
            client_id: "pump-1".into(),
            principal: principal.into(),
            graceful: true,
            reason: mqtt::ReasonCode::Success,
        }
    }

    /// A device's connect and disconnect are numbered as device events;
    /// an anonymous client's or a service credential's are not, even
    /// under a device's client id, so nothing asks the store about them.
    #[test]
    fn only_a_devices_comings_and_goings_are_device_events() {
        for (principal, device) in [
            ("pump-1", true),
            ("anonymous:pump-1", false),
            ("service:ingest", false),
        ] {
            for event in [connected(principal), disconnected(principal)] {
                let planned = Planned::of(event, None);
                assert_eq!(
                    planned.platform_device(),
                    device.then_some(("acme", "pump-1")),
                    "{principal}"
                );
            }
        }
    }
}
