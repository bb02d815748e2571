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
    async fn policies_changed(&self, tenant: &str) {
        if let Err(e) = self.cache.reload_policies(tenant).await {
            tracing::warn!(tenant, error = %e, "reloading ACL policies failed; sessions re-read them on their next check");
        }
    }
    fn platform_credential_deleted(&self, name: &str) {
        self.revocations.platform_credential_deleted(name);
    }
    fn topic_rules_changed(&self, tenant: &str, rules: &store::TopicRules) {
        self.revocations.topic_rules_changed(tenant, rules);
    }
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
}

impl PlatformEvents {
    pub fn start(
        store: store::Store,
        hub: EventHub,
        recent: Arc<dyn RecentMessages>,
    ) -> Arc<PlatformEvents> {
        let (queue, rx) = mpsc::channel(EVENT_QUEUE);
        tokio::spawn(number_and_publish(store, hub, rx));
        Arc::new(PlatformEvents { queue, recent })
    }
}

impl EventSink for PlatformEvents {
    fn emit(&self, event: Event) {
        if let Event::Published {
            tenant,
            topic,
            payload,
            qos,
            retain,
            ..
        } = &event
        {
            let Some(device) = device_of(topic) else {
                return;
            };
            self.recent.record(
                tenant.as_str(),
                device,
                RecentMessage {
                    topic: topic.as_str().to_owned(),
                    payload: payload.to_vec(),
                    truncated: false,
                    qos: qos.to_u8(),
                    retain: *retain,
                    received_at: chrono::Utc::now(),
                },
            );
            if !is_reported_state(topic, device) {
                return;
            }
        }
        if self.queue.try_send(event).is_err() {
            metrics::counter!("fleetmq_platform_events_dropped_total").increment(1);
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

fn is_reported_state(topic: &TopicName, device: &str) -> bool {
    topic.as_str().len() == "devices/".len() + device.len() + "/state/reported".len()
        && topic.as_str().ends_with("/state/reported")
}

async fn number_and_publish(store: store::Store, hub: EventHub, mut rx: mpsc::Receiver<Event>) {
    while let Some(event) = rx.recv().await {
        let (tenant, device, kind, data) = match event {
            Event::Connected {
                tenant,
                client_id,
                principal,
                peer,
                protocol,
            } => {
                // Service credentials and anonymous clients are not devices.
                if principal.contains(':') {
                    continue;
                }
                let data = json!({
                    "client_id": client_id,
                    "remote_addr": peer.to_string(),
                    "protocol": format!("{protocol:?}"),
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
                let Some(device) = device_of(&topic).map(str::to_owned) else {
                    continue;
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
            _ => continue,
        };
        // A client id that is no device of the tenant (anonymous clients,
        // service credentials without a prefix) is not a device event.
        match store.get_device(tenant.as_str(), &device).await {
            Ok(_) => {}
            Err(store::Error::NotFound { .. }) => continue,
            Err(e) => {
                tracing::debug!(tenant = %tenant, device, error = %e, "device event not published");
                continue;
            }
        }
        hub.publish_device(&store, tenant.as_str(), &device, kind, data)
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
