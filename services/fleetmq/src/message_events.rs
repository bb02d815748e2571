//! MQTT messages as `message.published` webhook events.
//!
//! The broker's hot path asks [`webhooks::MessageRoutes`] (memory only)
//! whether any endpoint wants a message; only those are queued, on the same
//! queue as the lifecycle events (see `bridge.rs`), so a device's
//! `device.connected`, its messages and its `device.disconnected` reach the
//! outbox — and so each endpoint — in the order they happened. Messages are
//! numbered in the device's event sequence like lifecycle events (the
//! bridge numbers a whole round of the queue in two statements) and handed
//! to the batching [`webhooks::OutboxWriter`].

use base64::Engine;
use broker::Event;
use events::payload::{MessagePublished, PayloadEncoding};
use store::NewOutboxEvent;

/// The webhook side of message events: what is wanted, and where it goes.
#[derive(Clone)]
pub struct MessageWebhooks {
    pub routes: webhooks::MessageRoutes,
    pub outbox: webhooks::OutboxWriter,
}

/// What one message event carries besides its number.
pub(crate) struct Message<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) topic: &'a str,
    pub(crate) payload: &'a [u8],
    pub(crate) qos: u8,
    pub(crate) retain: bool,
}

impl<'a> Message<'a> {
    /// The message an `Event::Published` is about; `None` for other events.
    pub(crate) fn of(event: &'a Event) -> Option<Self> {
        match event {
            Event::Published {
                tenant,
                client_id,
                topic,
                payload,
                qos,
                retain,
                ..
            } => Some(Message {
                tenant: tenant.as_str(),
                client_id,
                topic: topic.as_str(),
                payload,
                qos: qos.to_u8(),
                retain: *retain,
            }),
            _ => None,
        }
    }
}

impl MessageWebhooks {
    /// Does some endpoint want this message?
    pub fn watched(&self, event: &Event) -> bool {
        Message::of(event).is_some_and(|m| self.routes.wants(m.tenant, m.topic))
    }

    /// Hand a message numbered `seq` in its device's sequence to the
    /// outbox writer.
    pub fn send(&self, event: &Event, seq: i64) {
        let Some(message) = Message::of(event) else {
            return;
        };
        if !self.outbox.push(outbox_event(&message, Some(seq))) {
            tracing::debug!(
                tenant = message.tenant,
                device = message.client_id,
                "webhook outbox full: message event dropped"
            );
        }
    }
}

/// The event: `data` is `{device_id, seq, client_id, topic, qos, retain,
/// payload, payload_encoding}`, the payload as text when it is UTF-8 and
/// base64 otherwise.
fn outbox_event(m: &Message<'_>, seq: Option<i64>) -> NewOutboxEvent {
    let (payload, payload_encoding) = match std::str::from_utf8(m.payload) {
        Ok(text) => (text.to_owned(), PayloadEncoding::Utf8),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(m.payload),
            PayloadEncoding::Base64,
        ),
    };
    let event = events::Event::MessagePublished(MessagePublished {
        device_id: m.client_id.to_owned(),
        client_id: m.client_id.to_owned(),
        topic: m.topic.to_owned(),
        qos: m.qos,
        retain: m.retain,
        payload,
        payload_encoding,
        seq,
    });
    NewOutboxEvent {
        device_id: Some(m.client_id.to_owned()),
        device_seq: seq,
        topic: Some(m.topic.to_owned()),
        ..NewOutboxEvent::of(m.tenant, &event)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn payloads_are_text_or_base64() {
        let m = |payload: &'static [u8]| Message {
            tenant: "acme",
            client_id: "d1",
            topic: "devices/d1/temp",
            payload,
            qos: 1,
            retain: false,
        };
        let text = outbox_event(&m(b"21.5"), Some(7));
        assert_eq!(text.payload["payload"], "21.5");
        assert_eq!(text.payload["payload_encoding"], "utf8");
        assert_eq!(text.payload["seq"], 7);
        assert_eq!(text.device_seq, Some(7));
        assert_eq!(text.topic.as_deref(), Some("devices/d1/temp"));
        assert_eq!(text.event_type, "message.published");
        let binary = outbox_event(&m(&[0xff, 0x00]), None);
        assert_eq!(binary.payload["payload"], "/wA=");
        assert_eq!(binary.payload["payload_encoding"], "base64");
        assert!(binary.payload.get("seq").is_none());
    }

    /// The outbox's events, oldest first (read through a fan-out that
    /// routes nothing).
    async fn outbox(store: &store::Store) -> Vec<store::OutboxEvent> {
        let seen = std::sync::Mutex::new(Vec::new());
        let limits = store::BatchLimits {
            max_events: 1,
            max_wait: std::time::Duration::ZERO,
        };
        store
            .fan_out_outbox(1000, limits, |event, _| {
                let mut seen = seen.lock().unwrap();
                if seen
                    .last()
                    .is_none_or(|e: &store::OutboxEvent| e.id != event.id)
                {
                    seen.push(event.clone());
                }
                store::Route::Skip
            })
            .await
            .unwrap();
        seen.into_inner().unwrap()
    }

    #[tokio::test]
    async fn watched_messages_only_numbered_between_the_lifecycle_events() {
        use std::sync::Arc;

        use broker::{EventSink, TenantId};
        use mqtt::{ProtocolVersion, QoS, ReasonCode, TopicName};

        let db = store::testing::TestDb::sqlite().await;
        let store = db.store().clone();
        for tenant in ["acme", "beta"] {
            store
                .create_tenant(&store::NewTenant {
                    id: tenant.into(),
                    name: tenant.into(),
                })
                .await
                .unwrap();
            store
                .create_device(tenant, &store::NewDevice::new("d1"))
                .await
                .unwrap();
        }
        store
            .create_webhook_endpoint(
                &store::NewWebhookEndpoint {
                    tenant_id: "acme".into(),
                    url: "https://example.com/hook".into(),
                    event_types: vec!["device.*".into(), "message.published".into()],
                    topic_filter: Some("devices/+/temp".into()),
                    secret: "whsec_c2VjcmV0".into(),
                },
                None,
            )
            .await
            .unwrap();
        let routes = webhooks::MessageRoutes::load(store.clone()).await.unwrap();
        let (outbox_writer, outbox_task) =
            webhooks::OutboxWriter::spawn(store.clone(), Default::default(), None);
        let hub = events::hub::EventHub::default();
        hub.add_listener(Arc::new(outbox_writer.clone()));
        let recent = Arc::new(api::device_io::InMemoryRecentMessages::new(
            api::device_io::RecentMessagesLimits::default(),
        ));
        let events = crate::bridge::PlatformEvents::start_with_messages(
            store.clone(),
            hub,
            recent,
            Some(MessageWebhooks {
                routes,
                outbox: outbox_writer,
            }),
        );
        let acme = TenantId::parse("acme").unwrap();
        let publish = |tenant: &TenantId, topic: &str, payload: &'static str| Event::Published {
            tenant: tenant.clone(),
            client_id: "d1".into(),
            topic: TopicName::parse(topic).unwrap(),
            payload: payload.into(),
            qos: QoS::AtLeastOnce,
            retain: false,
        };
        events.emit(Event::Connected {
            tenant: acme.clone(),
            client_id: "d1".into(),
            principal: "d1".into(),
            peer: "127.0.0.1:5000".parse().unwrap(),
            protocol: ProtocolVersion::V5,
            credential: broker::Credential::Password,
        });
        events.emit(publish(&acme, "devices/d1/temp", "20"));
        events.emit(publish(&acme, "devices/d1/humidity", "unwatched"));
        events.emit(publish(
            &TenantId::parse("beta").unwrap(),
            "devices/d1/temp",
            "other tenant",
        ));
        events.emit(publish(&acme, "devices/d1/temp", "21"));
        events.emit(Event::Disconnected {
            tenant: acme,
            client_id: "d1".into(),
            principal: "d1".into(),
            graceful: true,
            reason: ReasonCode::Success,
        });
        events.close().await;
        outbox_task.close().await;

        // Nothing else was written (beta's message would not show below:
        // beta has no endpoint to route it to).
        assert_eq!(store.undispatched_outbox_len().await.unwrap(), 4);
        let written = outbox(&store).await;
        let seen: Vec<(&str, Option<i64>, &Value)> = written
            .iter()
            .map(|e| (e.event_type.as_str(), e.device_seq, &e.payload["payload"]))
            .collect();
        assert_eq!(
            seen,
            [
                ("device.connected", Some(1), &Value::Null),
                ("message.published", Some(2), &json!("20")),
                ("message.published", Some(3), &json!("21")),
                ("device.disconnected", Some(4), &Value::Null),
            ]
        );
        db.cleanup().await;
    }
}
