//! [`Config`]: limits and timers, with defaults suitable for a small fleet.

use std::time::Duration;

use crate::PublishLimits;
use crate::backpressure::SlowConsumerPolicy;
use crate::hygiene::TopicLimits;

/// A cap on retained messages: how many, and how many bytes of topic and
/// payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetainedLimit {
    /// Messages.
    pub messages: usize,
    /// Bytes (topic + payload).
    pub bytes: usize,
}

/// Broker limits. Every field has a default ([`Config::default`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Connections served at once per listener; further ones are answered
    /// "server busy" and closed (counted in `mqtt_connections_refused_total`).
    pub max_connections: usize,
    /// Time a new connection has to send CONNECT.
    pub connect_timeout: Duration,
    /// Sockets per listener that have not sent CONNECT yet (they hold no
    /// connection place); past it the oldest of them is closed.
    pub max_pending_connects: usize,
    /// Sockets per peer address that have not sent CONNECT yet; more are
    /// closed at once.
    pub max_pending_connects_per_address: usize,
    /// Largest Last Will accepted, bytes as held (topic, payload and
    /// properties, each user property with its bookkeeping, see
    /// `conn::handshake::will_size`); a larger will is refused at
    /// CONNECT (0x95 Packet too large; 3.1.1: server unavailable). A
    /// delayed will is held for up to the session's expiry, so this bounds
    /// what each offline session can make us keep.
    pub max_will_size: usize,
    /// If set, the largest keep alive we accept; larger (or 0) values are
    /// replaced and announced as Server Keep Alive in MQTT 5 (3.2.2.3.14).
    pub max_keep_alive: Option<u16>,
    /// Our Receive Maximum: QoS 1/2 PUBLISHes a client may have
    /// unacknowledged towards us (3.2.2.3.3); exceeding it is 0x93.
    pub receive_maximum: u16,
    /// Largest packet we accept (fixed header included), announced as
    /// Maximum Packet Size in MQTT 5.
    pub max_packet_size: u32,
    /// Topic Alias Maximum we announce (client → server aliases).
    pub topic_alias_maximum: u16,
    /// Messages queued per session (online or offline) before new ones are
    /// dropped and counted. Retained messages for a new subscription may
    /// use `max_retained_per_subscribe` more on top.
    pub max_queued_messages: usize,
    /// Bytes (about the wire size of each message) queued per session
    /// before new messages are dropped and counted; a message larger than
    /// this is never queued.
    pub max_queued_bytes: usize,
    /// Messages queued in all sessions of one tenant together; past it,
    /// new messages for any of them are dropped and counted for the tenant.
    pub max_tenant_queued_messages: usize,
    /// Bytes queued in all sessions of one tenant together.
    pub max_tenant_queued_bytes: usize,
    /// Unacknowledged QoS 1/2 messages we send one client at most; a smaller
    /// Receive Maximum from the client wins. Without it a client that
    /// announces none (every 3.1.1 client) could hold 65,535 (3.3.4).
    pub max_inflight_messages: u16,
    /// Retained messages one SUBSCRIBE may deliver; the rest are skipped,
    /// counted and logged.
    pub max_retained_per_subscribe: usize,
    /// Topic names and filters longer or deeper are refused (0x90 in a
    /// PUBACK, 0x8F in a SUBACK); a tenant's `max_depth` rule replaces
    /// the depth for it.
    pub topic_limits: TopicLimits,
    /// Subscriptions one session may hold; further new filters are refused
    /// with 0x97 (0x80 in 3.1.1).
    pub max_subscriptions_per_session: usize,
    /// Total bytes of the filters one session may hold (same refusal).
    pub max_subscription_bytes_per_session: usize,
    /// Retained messages and bytes (topic + payload) one client identity
    /// (device or credential) may keep in a tenant; over it a retained
    /// PUBLISH is refused with 0x97 (3.1.1: the connection is closed).
    pub retained_per_client: RetainedLimit,
    /// The same for a whole tenant.
    pub retained_per_tenant: RetainedLimit,
    /// How long a socket may refuse our writes before the client is
    /// disconnected as a slow consumer.
    pub write_timeout: Duration,
    /// Cap on the Session Expiry Interval a client may ask for, seconds.
    pub max_session_expiry: u32,
    /// How long a new connection waits for the one it takes over to end.
    pub takeover_timeout: Duration,
    /// Publish rate limits of a client whose identity brings none (the
    /// platform-wide default). Default: unlimited.
    pub publish_limits: PublishLimits,
    /// PUBLISHes refused (or, QoS 0, dropped) in a row for being over the
    /// rate limit after which an MQTT 5 client is disconnected with 0x96;
    /// any admitted PUBLISH starts the count again.
    pub rate_limit_strikes: u32,
    /// How long a subscriber's queue may stay above its high-water mark
    /// (7/8 of its bound) while publishers adding to it stop reading their
    /// sockets; past it the subscriber is a slow consumer
    /// (`slow_consumer_policy`) and publishers go on without waiting for it
    /// until it has drained to half its bound. Zero: no back-pressure,
    /// messages past the bound are dropped at once.
    pub slow_consumer_timeout: Duration,
    /// What becomes of a slow consumer.
    pub slow_consumer_policy: SlowConsumerPolicy,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            connect_timeout: Duration::from_secs(10),
            max_pending_connects: 4096,
            max_pending_connects_per_address: 64,
            max_will_size: 64 * 1024,
            max_keep_alive: None,
            receive_maximum: 64,
            max_packet_size: 1024 * 1024,
            topic_alias_maximum: 64,
            max_queued_messages: 10_000,
            max_queued_bytes: 16 * 1024 * 1024,
            max_tenant_queued_messages: 1_000_000,
            max_tenant_queued_bytes: 512 * 1024 * 1024,
            // EMQX's default too. At 1 ms round trip that is 32,000
            // messages/s to one client, at 100 ms still 320/s (a device
            // rarely takes more); with 1 MB packets 32 MB is the most one
            // non-acknowledging client holds in flight.
            max_inflight_messages: 32,
            max_retained_per_subscribe: 10_000,
            topic_limits: TopicLimits::default(),
            // A backend with a thousand filters is plausible, a device with
            // more is not; 64 KiB of filters is at most about 32,000 trie
            // nodes (two bytes a level) per session.
            max_subscriptions_per_session: 1_000,
            max_subscription_bytes_per_session: 64 * 1024,
            retained_per_client: RetainedLimit {
                messages: 1_000,
                bytes: 16 * 1024 * 1024,
            },
            retained_per_tenant: RetainedLimit {
                messages: 100_000,
                bytes: 256 * 1024 * 1024,
            },
            write_timeout: Duration::from_secs(30),
            max_session_expiry: 7 * 24 * 3600,
            takeover_timeout: Duration::from_secs(5),
            publish_limits: PublishLimits::default(),
            rate_limit_strikes: 20,
            // Long enough for a reading subscriber to catch up with a
            // burst (a 10,000-message queue drains in well under a second),
            // short enough that a stuck one costs its tenant's publishers
            // little.
            slow_consumer_timeout: Duration::from_secs(5),
            slow_consumer_policy: SlowConsumerPolicy::Drop,
        }
    }
}
