//! [`Message`]: one application message as routed, shared by every
//! subscriber it goes to (`Arc`, payload `Bytes`), and [`Delivery`], one
//! copy of it queued for one session.

use std::sync::{Arc, LazyLock};
use std::time::SystemTime;

use bytes::Bytes;
use mqtt::{Properties, Publish, QoS, TopicName};
use tokio::time::{Duration, Instant};

/// An application message inside the broker.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) topic: TopicName,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
    /// Pass-through properties only: payload format, content type,
    /// response topic, correlation data, user properties (MQTT-3.3.2-17,
    /// MQTT-3.3.2-18, MQTT-3.3.2-20). Alias, subscription ids and expiry are
    /// per delivery. `None` when there are none, as for most device
    /// messages: an empty `Properties` is about 300 bytes that every
    /// retained and queued message would carry (issue 16). Read through
    /// [`Message::properties`].
    properties: Option<Box<Properties>>,
    /// When the Message Expiry Interval runs out (3.3.2.3.3).
    pub(crate) expires_at: Option<Instant>,
    /// The publishing client, for No Local (MQTT-3.8.3-3).
    pub(crate) origin: Option<Arc<str>>,
    /// Whether `origin` names a client of the platform namespace rather
    /// than of the tenant: client ids are unique per namespace only, so No
    /// Local compares them only inside the namespace they came from.
    pub(crate) platform_origin: bool,
    /// Its id across a cluster (the origin node's run and order), so that
    /// a session that gets it twice (a takeover, a replay) keeps one copy.
    /// `None` on a single node.
    pub(crate) id: Option<crate::interconnect::MessageId>,
    /// What holding it costs, see [`Message::cost`]; computed once.
    cost: usize,
}

/// Bytes a message holds: its wire-size parts (everything variable is a
/// shared `Bytes` or one string) plus the struct and its `Arc`.
fn cost_of(topic: &TopicName, payload: &Bytes, p: &Properties) -> usize {
    let strings = p.content_type.as_ref().map_or(0, String::len)
        + p.response_topic.as_ref().map_or(0, |t| t.as_str().len())
        + p.correlation_data.as_ref().map_or(0, Bytes::len);
    std::mem::size_of::<Message>()
        + 2 * std::mem::size_of::<usize>()
        + topic.as_str().len()
        + payload.len()
        + strings
        + p.user_properties.wire_len()
}

impl Message {
    /// A message from a PUBLISH whose topic has been resolved.
    pub(crate) fn from_publish(
        publish: Publish,
        topic: TopicName,
        origin: Option<Arc<str>>,
        now: Instant,
    ) -> Self {
        Self::new(
            topic,
            publish.payload,
            publish.qos,
            publish.retain,
            publish.properties,
            origin,
            now,
        )
    }

    pub(crate) fn new(
        topic: TopicName,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        mut properties: Properties,
        origin: Option<Arc<str>>,
        now: Instant,
    ) -> Self {
        let expires_at = properties
            .message_expiry_interval
            .take()
            .map(|s| now + Duration::from_secs(u64::from(s)));
        properties.topic_alias = None;
        properties.subscription_identifiers.clear();
        Self {
            cost: cost_of(&topic, &payload, &properties),
            topic,
            payload,
            qos,
            retain,
            properties: (!properties.is_empty()).then(|| Box::new(properties)),
            expires_at,
            origin,
            platform_origin: false,
            id: None,
        }
    }

    /// Its pass-through properties (none: all unset).
    pub(crate) fn properties(&self) -> &Properties {
        static NONE: LazyLock<Properties> = LazyLock::new(Properties::default);
        self.properties.as_deref().unwrap_or(&NONE)
    }

    /// About the bytes this message holds in memory: its wire size plus a
    /// fixed overhead. Queue bounds count every queued copy at this cost,
    /// although copies share one `Message`: a session's bound is then what
    /// it could hold on its own, whoever else holds the message too.
    pub(crate) fn cost(&self) -> usize {
        self.cost
    }

    /// The same message under `topic` (a tenant's message as the platform
    /// namespace sees it, mounted under the tenant id): payload and
    /// properties are shared or cloned, the expiry instant is kept.
    pub(crate) fn with_topic(&self, topic: TopicName) -> Self {
        Self {
            cost: cost_of(&topic, &self.payload, self.properties()),
            topic,
            payload: self.payload.clone(),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.clone(),
            expires_at: self.expires_at,
            origin: self.origin.clone(),
            platform_origin: self.platform_origin,
            id: self.id,
        }
    }

    /// A retained message reloaded from the store: its expiry stays where
    /// it was (absolute), so a restart does not extend it. `None` if it has
    /// expired by `wall`.
    pub(crate) fn from_stored(
        stored: crate::store::StoredRetained,
        now: Instant,
        wall: SystemTime,
    ) -> Option<Self> {
        let expires_at = match stored.expires_at {
            None => None,
            Some(at) => {
                let left = at.duration_since(wall).ok().filter(|d| !d.is_zero())?;
                Some(now + left)
            }
        };
        let mut message = Self::new(
            stored.topic,
            stored.payload,
            stored.qos,
            true,
            stored.properties,
            None,
            now,
        );
        message.expires_at = expires_at;
        Some(message)
    }

    /// The expiry on the wall clock, for the store (`now` and `wall` are
    /// the same moment on both clocks).
    pub(crate) fn expires_at_wall(&self, now: Instant, wall: SystemTime) -> Option<SystemTime> {
        self.expires_at
            .map(|at| wall + at.saturating_duration_since(now))
    }

    /// The message as a persistent session's queue stores it (absolute
    /// expiry on the wall clock; `now` and `wall` are the same moment).
    pub(crate) fn to_session_store(
        &self,
        now: Instant,
        wall: SystemTime,
    ) -> crate::session_store::StoredMessage {
        crate::session_store::StoredMessage {
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            qos: self.qos,
            properties: self.properties().clone(),
            expires_at: self.expires_at_wall(now, wall),
            id: self.id,
        }
    }

    /// A persistent session's queued message reloaded after a restart: the
    /// time the broker was down counts against its expiry. One past its
    /// expiry keeps an instant in the past (so it is not sent if queued; an
    /// in-flight one still completes, 3.3.2.3.3).
    pub(crate) fn from_session_store(
        stored: &crate::session_store::StoredMessage,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        let mut message = Self::new(
            stored.topic.clone(),
            stored.payload.clone(),
            stored.qos,
            false,
            stored.properties.clone(),
            None,
            now,
        );
        message.expires_at = stored.expires_at.map(|at| match at.duration_since(wall) {
            Ok(left) => now + left,
            Err(_) => now.checked_sub(Duration::from_secs(1)).unwrap_or(now),
        });
        message.id = stored.id;
        message
    }

    /// Whether the message has outlived its expiry interval.
    pub(crate) fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The expiry interval left, for the forwarded PUBLISH (MQTT-3.3.2-6).
    pub(crate) fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now).as_secs();
            u32::try_from(left).unwrap_or(u32::MAX).max(1)
        })
    }
}

/// One copy of a message for one session.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) message: Arc<Message>,
    /// min(published QoS, granted QoS) (MQTT-3.8.4-8 downgrade).
    pub(crate) qos: QoS,
    /// RETAIN flag on the outgoing PUBLISH.
    pub(crate) retain: bool,
    /// Matching subscription identifiers (MQTT-3.3.4-3).
    pub(crate) subscription_ids: Vec<u32>,
    /// The `$share/` filter it was routed through, so it can be given to
    /// another member if this one leaves before acknowledging it.
    pub(crate) shared: Option<mqtt::TopicFilter>,
    /// Its place in a persistent session's stored queue; `None`: not
    /// stored (QoS 0, a clean session, retained messages on subscribe).
    pub(crate) seq: Option<u64>,
}

impl Delivery {
    /// The PUBLISH to send (no packet id, alias or DUP yet).
    pub(crate) fn to_publish(&self, now: Instant) -> Publish {
        let m = &self.message;
        let mut properties = m.properties().clone();
        properties.message_expiry_interval = m.remaining_expiry(now);
        properties
            .subscription_identifiers
            .clone_from(&self.subscription_ids);
        Publish {
            dup: false,
            qos: self.qos,
            retain: self.retain,
            topic: Some(m.topic.clone()),
            packet_id: None,
            payload: m.payload.clone(),
            properties,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expiry_counts_down_and_never_forwards_zero() {
        let mut p = Publish::new(TopicName::parse("t").unwrap(), "x");
        p.properties.message_expiry_interval = Some(10);
        p.properties.topic_alias = std::num::NonZeroU16::new(3);
        let now = Instant::now();
        let m = Message::from_publish(p, TopicName::parse("t").unwrap(), None, now);
        assert_eq!(m.properties().topic_alias, None);
        assert_eq!(m.remaining_expiry(now), Some(10));
        tokio::time::advance(Duration::from_millis(9_500)).await;
        assert_eq!(m.remaining_expiry(Instant::now()), Some(1));
        assert!(!m.expired(Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(m.expired(Instant::now()));
    }

    /// Retained statuses and queued telemetry rarely carry properties:
    /// such a message holds none (issue 16: the struct was 440 bytes with
    /// an empty `Properties` inline). Printed so a change shows its cost.
    #[test]
    fn a_message_without_properties_holds_none() {
        let now = Instant::now();
        let topic = TopicName::parse("t").unwrap();
        let plain = Message::from_publish(
            Publish::new(topic.clone(), &b"x"[..]),
            topic.clone(),
            None,
            now,
        );
        assert!(plain.properties.is_none());
        let size = std::mem::size_of::<Message>();
        eprintln!("Message: {size} bytes");
        assert!(size <= 192, "{size} bytes");
        let mut publish = Publish::new(topic.clone(), &b"x"[..]);
        publish.properties.content_type = Some("application/json".into());
        let with = Message::from_publish(publish, topic, None, now);
        assert_eq!(
            with.properties().content_type.as_deref(),
            Some("application/json")
        );
        assert!(plain.cost() < with.cost());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reloaded_message_keeps_its_absolute_expiry() {
        let wall = SystemTime::now();
        let stored = |expires_at| crate::store::StoredRetained {
            topic: TopicName::parse("t").unwrap(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::AtLeastOnce,
            properties: Properties::default(),
            expires_at,
            owner: None,
        };
        let now = Instant::now();
        // Published with 60 s, 55 s ago: 5 s are left, not 60.
        let m =
            Message::from_stored(stored(Some(wall + Duration::from_secs(5))), now, wall).unwrap();
        assert_eq!(m.remaining_expiry(now), Some(5));
        assert_eq!(
            m.expires_at_wall(now, wall),
            Some(wall + Duration::from_secs(5))
        );
        assert!(Message::from_stored(stored(Some(wall)), now, wall).is_none());
        assert!(
            Message::from_stored(stored(Some(wall - Duration::from_secs(1))), now, wall).is_none()
        );
        let forever = Message::from_stored(stored(None), now, wall).unwrap();
        assert_eq!(forever.remaining_expiry(now), None);
        assert!(forever.retain);
    }
}
