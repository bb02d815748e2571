//! Where the broker and the REST API meet, in the one place that knows
//! both: the API's hooks implemented on the broker, and the broker's events
//! turned into platform events (SSE, webhooks) and recent messages.

use std::sync::Arc;

use api::device_io::{CommandError, DeviceCommands, RecentMessage, RecentMessages};
use api::events::EventHub;
use broker::{Broker, Event, EventSink};
use bytes::Bytes;
use futures::future::BoxFuture;
use mqtt::{Properties, QoS, TopicName};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::message_events::{MessageWebhooks, Numbering};

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

/// Revocations, disabled devices and policy changes reach live sessions.
pub struct Sessions {
    pub revocations: access::Revocations,
    pub cache: access::AccessCache,
    pub limits: access::LiveLimits,
}

#[async_trait::async_trait]
impl api::SessionControl for Sessions {
    fn certificate_revoked(&self, tenant: &str, device: &str, serial: &str) {
        self.revocations.certificate_revoked(tenant, device, serial);
    }
    fn device_changed(&self, tenant: &str, device: &str) {
        self.revocations.device_changed(tenant, device);
    }
    fn tenant_changed(&self, tenant: &str) {
        self.revocations.tenant_changed(tenant);
    }
    fn tenant_deleted(&self, tenant: &str) {
        self.revocations.tenant_deleted(tenant);
    }
    fn service_credential_deleted(&self, tenant: &str, name: &str) {
        self.revocations.service_credential_deleted(tenant, name);
    }
    async fn policies_changed(&self, tenant: &str) {
        if let Err(e) = self.cache.reload_policies(tenant).await {
            tracing::warn!(tenant, error = %e, "reloading ACL policies failed; sessions re-read them on their next check");
        }
    }
    async fn publish_limits_changed(&self, tenant: &str, device: Option<&str>) {
        let applied = match device {
            Some(device) => self
                .limits
                .device_changed(tenant, device)
                .await
                .map(usize::from),
            None => self.limits.tenant_changed(tenant).await,
        };
        if let Err(e) = applied {
            tracing::warn!(tenant, device, error = %e, "publish limits not applied to live sessions; they apply at the next connect");
        }
    }
    fn platform_credential_deleted(&self, name: &str) {
        self.revocations.platform_credential_deleted(name);
    }
    fn topic_rules_changed(&self, tenant: &str, rules: &store::TopicRules) {
        self.revocations.topic_rules_changed(tenant, rules);
    }
}

/// `device.created` for devices the broker registered just in time, like
/// the REST API's (numbered per device; off the connect path).
pub fn jit_device_created(store: store::Store, hub: EventHub) -> access::DeviceCreated {
    access::DeviceCreated(Arc::new(move |device: &store::Device| {
        let (store, hub) = (store.clone(), hub.clone());
        let (tenant, id) = (device.tenant_id.clone(), device.id.clone());
        let data = json!({
            "id": device.id,
            "labels": device.labels,
            "attributes": device.attributes,
            "enabled": device.enabled,
            "created_at": device.created_at,
            "registered_by": access::JIT_ACTOR,
        });
        tokio::spawn(async move {
            hub.publish_device(&store, &tenant, &id, "device.created", data)
                .await;
        });
    }))
}

/// Lifecycle events waiting to be numbered and published.
const EVENT_QUEUE: usize = 10_000;

/// The broker's events as platform events: `device.connected`,
/// `device.disconnected` and `state.reported` on the event hub (and so to
/// SSE clients and the webhook outbox), and every message a device
/// publishes under `devices/{d}/` into the recent-messages ring.
///
/// `emit` runs on the broker's hot path: numbering an event needs the
/// database, so events queue for a background task and are dropped (and
/// counted) if it falls far behind, never blocking a connection.
pub struct PlatformEvents {
    queue: mpsc::Sender<Event>,
    recent: Arc<dyn RecentMessages>,
    /// MQTT messages as webhook events, when some endpoint wants them.
    messages: Option<MessageWebhooks>,
    closing: CancellationToken,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
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
        let (queue, rx) = mpsc::channel(EVENT_QUEUE);
        let closing = CancellationToken::new();
        let task = tokio::spawn(number_and_publish(
            store,
            hub,
            messages.clone(),
            rx,
            closing.clone(),
        ));
        Arc::new(PlatformEvents {
            queue,
            recent,
            messages,
            closing,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    /// At shutdown, after the listeners: stop taking events and publish the
    /// ones queued (the last disconnects among them).
    pub async fn close(&self) {
        self.closing.cancel();
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
        if let Event::Published {
            tenant,
            client_id,
            topic,
            payload,
            qos,
            retain,
            ..
        } = &event
        {
            let watched = self
                .messages
                .as_ref()
                .is_some_and(|m| m.routes.wants(tenant.as_str(), topic.as_str()));
            // The broker's own messages (presence on devices/{d}/status)
            // are not the device's traffic: not in its recent messages.
            let device = device_of(topic).filter(|_| client_id != broker::SERVER_CLIENT_ID);
            let Some(device) = device else {
                if watched {
                    self.queue_or_count(event);
                }
                return;
            };
            self.recent.record(
                tenant.as_str(),
                device,
                RecentMessage {
                    topic: topic.as_str().to_owned(),
                    // A copy on purpose: the payload may be a slice of the
                    // connection's read buffer, and keeping it would pin that
                    // whole buffer for as long as the message is recent.
                    payload: payload.to_vec(),
                    truncated: false,
                    qos: qos.to_u8(),
                    retain: *retain,
                    received_at: chrono::Utc::now(),
                },
            );
            if !watched && !is_reported_state(topic, device) {
                return;
            }
        }
        self.queue_or_count(event);
    }
}

impl PlatformEvents {
    /// Queue without waiting; a full queue drops and counts (a watched
    /// message also in the webhook drop counter and event).
    fn queue_or_count(&self, event: Event) {
        if let Err(e) = self.queue.try_send(event) {
            metrics::counter!("fleetmq_platform_events_dropped_total").increment(1);
            if let (Some(messages), Event::Published { tenant, .. }) =
                (&self.messages, e.into_inner())
            {
                messages.outbox.count_dropped(tenant.as_str(), 1);
            }
        }
    }
}

/// `devices/{d}/…` → `d`.
fn device_of(topic: &TopicName) -> Option<&str> {
    let mut levels = topic.as_str().split('/');
    match (levels.next(), levels.next(), levels.next()) {
        (Some("devices"), Some(device), Some(_)) if !device.is_empty() => Some(device),
        _ => None,
    }
}

/// Is `topic` some device's `devices/{d}/state/reported`?
pub(crate) fn is_reported_state_topic(topic: &str) -> bool {
    TopicName::parse(topic).is_ok_and(|t| device_of(&t).is_some_and(|d| is_reported_state(&t, d)))
}

fn is_reported_state(topic: &TopicName, device: &str) -> bool {
    topic.as_str().len() == "devices/".len() + device.len() + "/state/reported".len()
        && topic.as_str().ends_with("/state/reported")
}

/// Events handled per round (message numbers are reserved per round).
const ROUND: usize = 256;

async fn number_and_publish(
    store: store::Store,
    hub: EventHub,
    messages: Option<MessageWebhooks>,
    mut rx: mpsc::Receiver<Event>,
    closing: CancellationToken,
) {
    let mut batch = Vec::with_capacity(ROUND);
    while webhooks::recv_until_closed(&mut rx, &mut batch, ROUND, &closing).await > 0 {
        let mut numbering = Numbering::default();
        for at in 0..batch.len() {
            if let Some(messages) = &messages {
                messages.append(&store, &mut numbering, &batch, at).await;
            }
            if let Some(event) = batch.get(at) {
                publish_platform_event(&store, &hub, event.clone()).await;
            }
        }
        batch.clear();
    }
}

/// A lifecycle event or a reported state, numbered, on the hub.
async fn publish_platform_event(store: &store::Store, hub: &EventHub, event: Event) {
    {
        let (tenant, device, kind, data) = match event {
            Event::Connected {
                tenant,
                client_id,
                principal,
                peer,
                protocol,
                credential,
                ..
            } => {
                // Service credentials and anonymous clients are not devices.
                if principal.contains(':') {
                    return;
                }
                let data = json!({
                    "client_id": client_id,
                    "remote_addr": peer.to_string(),
                    "protocol": format!("{protocol:?}"),
                    "credential": state::credential_text(&credential),
                });
                (tenant, client_id, "device.connected", data)
            }
            Event::Disconnected {
                tenant,
                client_id,
                graceful,
                reason,
                ..
            } => {
                let data = json!({
                    "client_id": client_id,
                    "graceful": graceful,
                    "reason_code": reason.to_u8(),
                    "reason": format!("{reason:?}"),
                });
                (tenant, client_id, "device.disconnected", data)
            }
            Event::Published {
                tenant,
                topic,
                payload,
                ..
            } => {
                let Some(device) = device_of(&topic)
                    .filter(|d| is_reported_state(&topic, d))
                    .map(str::to_owned)
                else {
                    return;
                };
                let reported = serde_json::from_slice::<serde_json::Value>(&payload)
                    .unwrap_or_else(|_| json!({ "error": "payload is not JSON" }));
                (
                    tenant,
                    device,
                    "state.reported",
                    json!({ "reported": reported }),
                )
            }
            _ => return,
        };
        // A client id that is no device of the tenant (anonymous clients,
        // service credentials without a prefix) is not a device event.
        match store.get_device(tenant.as_str(), &device).await {
            Ok(_) => {}
            Err(store::Error::NotFound { .. }) => return,
            Err(e) => {
                tracing::debug!(tenant = %tenant, device, error = %e, "device event not published");
                return;
            }
        }
        hub.publish_device(store, tenant.as_str(), &device, kind, data)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_topics() {
        let t = |s: &str| TopicName::parse(s).unwrap();
        assert_eq!(device_of(&t("devices/d1/state/reported")), Some("d1"));
        assert_eq!(device_of(&t("devices/d1")), None);
        assert_eq!(device_of(&t("commands/d1/x")), None);
        assert!(is_reported_state(&t("devices/d1/state/reported"), "d1"));
        assert!(!is_reported_state(&t("devices/d1/x/state/reported"), "d1"));
    }
}
